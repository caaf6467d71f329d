"""Oscar's task models and metrics from Python, without PyTorch (oscar-rs, built with PyO3).

    import numpy as np, oscar_rs
    store = oscar_rs.FeatureStore("world/features/features.tsv", 14, labels="world/labels/predictions.tsv")
    cap = oscar_rs.load("runs/caption")
    cap.caption([store["img000012"]], num_beams=5)
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class Image:
    """An image as the models read it: region features ``[regions, width]`` and the detector's tags.

    With ``boxes`` (``[regions, 4]``, ``x1, y1, x2, y2`` in pixels) and ``image_size`` (``(width,
    height)``), ``features`` are a detector's rows and VinVL's 6 box dimensions are appended.
    """

    def __init__(
        self,
        features: npt.NDArray[np.float32],
        tags: Optional[Sequence[str]] = None,
        boxes: Optional[npt.NDArray[np.float32]] = None,
        image_size: Optional[Tuple[float, float]] = None,
    ) -> None: ...
    @property
    def features(self) -> npt.NDArray[np.float32]:
        """The rows the models read, ``[regions, width]`` (box dimensions included)."""
    @property
    def tags(self) -> List[str]: ...

class FeatureStore:
    """Region features by image id (``features.tsv``, ``*.feature.tsv``, a torch feature dict);
    tags from a detector label file (``predictions.tsv``, ``*.label.tsv``)."""

    def __init__(self, path: str, dim: int, labels: Optional[str] = None) -> None: ...
    def __getitem__(self, image_id: str) -> Image: ...
    def __len__(self) -> int: ...
    def keys(self) -> List[str]: ...

class Captioner:
    """A captioning model (``oscar train caption --out``)."""

    feature_dim: int
    def caption(
        self,
        images: Sequence[Image],
        num_beams: int = 5,
        max_length: int = 20,
        num_return_sequences: int = 1,
        mode: str = "beam",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> List[List[Dict[str, Any]]]:
        """For each image, its ``num_return_sequences`` best captions as ``{"text", "score", "ended"}``.
        ``max_length`` counts ``[CLS]`` (the reference's ``max_gen_length``); ``mode`` is
        ``beam``, ``greedy`` or ``sample``."""

class Answerer:
    """A VQA / GQA model (``oscar train vqa|gqa --out``)."""

    feature_dim: int
    def answer(self, images: Sequence[Image], questions: Sequence[str], top_k: int = 5) -> List[List[Tuple[str, float]]]:
        """The ``top_k`` answers to each (image, question) as ``(answer, probability)``."""

class Matcher:
    """An image-text matching model (``oscar train retrieval --out``)."""

    feature_dim: int
    def score(self, images: Sequence[Image], texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Match probabilities of the pairs ``(images[i], texts[i])``."""
    def rank(self, image: Image, texts: Sequence[str], first_stage_k: Optional[int] = None,
             first_stage: str = "tags") -> List[Tuple[int, float]]:
        """``texts`` ranked for ``image``, best first, as ``(index, probability)``; with
        ``first_stage_k`` only the first stage's k best are scored: ``first_stage="tags"`` (tag–word
        overlap) or ``"learned"`` (the embeddings ``oscar train first-stage`` fitted)."""
    def rank_images(self, text: str, images: Sequence[Image], first_stage_k: Optional[int] = None,
                    first_stage: str = "tags") -> List[Tuple[int, float]]:
        """``images`` ranked for ``text``, best first, as ``(index, probability)``; the first stage
        as in ``rank``."""

class Encoder:
    """Any checkpoint's model: every output for free-form items (``oscar encode``)."""

    def __init__(
        self, path: str, vocab: Optional[str] = None, device: str = "cpu", quantize: str = "f32"
    ) -> None: ...
    def encode(
        self,
        texts: Sequence[str],
        images: Optional[Sequence[Image]] = None,
        layout: str = "retrieval",
        batch_size: int = 16,
    ) -> Dict[str, np.ndarray]:
        """The inputs (``input_ids``, ``token_type_ids``, ``position_ids``, ``attention_mask``),
        ``sequence``, ``pooled`` and each head's logits, as numpy arrays in item order."""

class Detector:
    """VinVL's object detector (`oscar detect`) from a folder: the weights (.pth or
    model.safetensors), the label map, optionally detector.json."""
    def __init__(self, path: str) -> None: ...
    def detect(self, image: Union[str, bytes]) -> Dict[str, Any]:
        """{"image_size": (w, h), "objects": [{"rect", "label", "class", "conf",
        "attributes": [(name, p)]}], "features": ndarray [objects, 2048]}, best first."""
    def image(self, image: Union[str, bytes]) -> Image:
        """The photo as a model input: regions with VinVL's 6 box dimensions, classes as tags."""
    @property
    def classes(self) -> List[str]: ...

def load(
    path: str, device: str = "cpu", quantize: str = "f32"
) -> Union[Captioner, Answerer, Matcher, Encoder]:
    """The task model a directory holds (``caption.json`` → Captioner, ``qa.json`` → Answerer,
    ``retrieval.json`` → Matcher); any other checkpoint as an Encoder. ``quantize="int8"``: the
    Linear layers in dynamic int8 (CPU)."""

class eval:  # the submodule oscar_rs.eval
    @staticmethod
    def caption_scores(
        refs: Dict[str, List[str]],
        preds: Dict[str, str],
        train_refs: Optional[Dict[str, List[str]]] = None,
        meteor_jar: Optional[str] = None,
    ) -> Dict[str, Any]:
        """BLEU-1..4, METEOR (when the jar is found), ROUGE-L, CIDEr, and CIDEr-D with
        ``train_refs``' document frequencies: pycocoevalcap's numbers."""
    @staticmethod
    def vqa_accuracy(annotations: Any, results: List[Dict[str, Any]], rules: str = "official") -> Dict[str, Any]:
        """The official VQA accuracy (GT-Vision-Lab's vqaEval.py; ``rules="pre-2021"`` for the old file)."""
    @staticmethod
    def recall_at_k(scores: npt.NDArray[np.float32], caption_image: Sequence[int]) -> Dict[str, Any]:
        """Recall@1/5/10 image→text and text→image, as run_retrieval.py evaluates."""
