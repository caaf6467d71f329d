//! `import oscar_rs`: Oscar's task models and metrics from Python, on the library's inference
//! layer (`oscar::infer`) and `oscar-eval` — what `tokenizers` and `safetensors` are to their
//! Rust crates. Arrays are numpy; the GIL is released while a model or a metric computes, so
//! Python threads run in parallel; errors are Python exceptions with the CLI's messages.

use candle_core::{DType, Device, Tensor};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use oscar::infer::{self, CaptionOptions, ImageInput};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The library's errors as Python's: a missing file → FileNotFoundError, other I/O → OSError,
/// bad inputs and files → ValueError, a failed tensor operation → RuntimeError.
fn py_err(e: oscar::Error) -> PyErr {
    let msg = e.to_string();
    match e {
        oscar::Error::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        oscar::Error::Io { .. } => PyOSError::new_err(msg),
        oscar::Error::Candle(_) => PyRuntimeError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

fn eval_err(e: oscar_eval::EvalError) -> PyErr {
    let msg = e.to_string();
    match e {
        oscar_eval::EvalError::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        oscar_eval::EvalError::Io { .. } => PyOSError::new_err(msg),
        oscar_eval::EvalError::Tool(_) => PyRuntimeError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

fn device(name: &str) -> PyResult<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        other => Err(PyValueError::new_err(format!(
            "device {other:?}: this build of oscar_rs computes on the CPU only (\"cpu\")"
        ))),
    }
}

/// JSON to Python objects (dicts, lists, numbers, strings) through the standard library.
fn to_py(py: Python<'_>, v: &serde_json::Value) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(v).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// Python objects to JSON through the standard library.
fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let text: String = obj
        .py()
        .import("json")?
        .call_method1("dumps", (obj,))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A tensor as a numpy array of its shape (int64 ids stay int64, everything else float32).
fn tensor_to_numpy(py: Python<'_>, t: &Tensor) -> PyResult<Py<PyAny>> {
    let dims = t.dims().to_vec();
    let e = |e: candle_core::Error| PyRuntimeError::new_err(e.to_string());
    let flat = t.flatten_all().map_err(e)?;
    Ok(match t.dtype() {
        DType::I64 | DType::U32 | DType::U8 => {
            let v: Vec<i64> = flat.to_dtype(DType::I64).map_err(e)?.to_vec1().map_err(e)?;
            PyArray1::from_vec(py, v).reshape(dims)?.into_any().unbind()
        }
        _ => {
            let v: Vec<f32> = flat.to_dtype(DType::F32).map_err(e)?.to_vec1().map_err(e)?;
            PyArray1::from_vec(py, v).reshape(dims)?.into_any().unbind()
        }
    })
}

/// An image as the models read it: region features `[regions, width]` (a detector's features,
/// with `boxes` and `image_size` to append VinVL's 6 box dimensions) and the detector's tags.
#[pyclass(frozen, module = "oscar_rs")]
struct Image {
    inner: ImageInput,
    width: usize,
}

#[pymethods]
impl Image {
    #[new]
    #[pyo3(signature = (features, tags=None, boxes=None, image_size=None))]
    fn new(
        features: PyReadonlyArray2<'_, f32>,
        tags: Option<Vec<String>>,
        boxes: Option<PyReadonlyArray2<'_, f32>>,
        image_size: Option<(f32, f32)>,
    ) -> PyResult<Self> {
        let (n, d) = (features.shape()[0], features.shape()[1]);
        let flat: Vec<f32> = features.as_array().iter().copied().collect();
        if n == 0 || d == 0 {
            return Err(PyValueError::new_err(format!(
                "features of shape ({n}, {d}): expected at least one region row"
            )));
        }
        if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "features[{}, {}] is not finite",
                i / d,
                i % d
            )));
        }
        let tags = tags.unwrap_or_default();
        match (boxes, image_size) {
            (None, None) => Ok(Image {
                inner: ImageInput::new(flat, tags),
                width: d,
            }),
            (Some(b), Some(size)) => {
                if b.shape() != [n, 4] {
                    return Err(PyValueError::new_err(format!(
                        "boxes of shape {:?}: expected ({n}, 4), one [x1, y1, x2, y2] per region",
                        b.shape()
                    )));
                }
                let bv: Vec<[f32; 4]> = b
                    .as_array()
                    .rows()
                    .into_iter()
                    .map(|r| [r[0], r[1], r[2], r[3]])
                    .collect();
                let inner = ImageInput::with_boxes(&flat, d, &bv, size, tags).map_err(py_err)?;
                Ok(Image {
                    inner,
                    width: d + 6,
                })
            }
            _ => Err(PyValueError::new_err(
                "boxes and image_size go together: give both or neither",
            )),
        }
    }

    /// The rows the models read, `[regions, width]` (box dimensions included).
    #[getter]
    fn features<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let n = self.inner.features.len() / self.width;
        Ok(PyArray1::from_vec(py, self.inner.features.clone())
            .reshape([n, self.width])?
            .into_any())
    }

    #[getter]
    fn tags(&self) -> Vec<String> {
        self.inner.tags.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Image({} regions × {}, tags={:?})",
            self.inner.features.len() / self.width,
            self.width,
            self.inner.tags
        )
    }
}

fn inputs(images: &[PyRef<'_, Image>]) -> Vec<ImageInput> {
    images.iter().map(|i| i.inner.clone()).collect()
}

/// A ranking's shortlist from Python's `first_stage_k` and `first_stage` arguments.
fn shortlist(k: Option<usize>, by: &str) -> PyResult<Option<oscar::infer::Shortlist>> {
    let by: oscar::tasks::first_stage::FirstStageChoice =
        by.parse().map_err(PyValueError::new_err)?;
    Ok(k.map(|k| oscar::infer::Shortlist { k, by }))
}

/// Region features by image id from a feature file (`features.tsv`, `*.feature.tsv`, a torch
/// feature dict), with tags from a detector label file (`predictions.tsv`, `*.label.tsv`).
#[pyclass(frozen, module = "oscar_rs")]
struct FeatureStore {
    store: std::sync::Mutex<oscar::data::features::FeatureStore>,
    tags: HashMap<String, Vec<String>>,
    dim: usize,
}

#[pymethods]
impl FeatureStore {
    #[new]
    #[pyo3(signature = (path, dim, labels=None))]
    fn new(path: PathBuf, dim: usize, labels: Option<PathBuf>) -> PyResult<Self> {
        let store = oscar::data::features::FeatureStore::open(&path, dim).map_err(py_err)?;
        let mut tags = HashMap::new();
        if let Some(l) = labels {
            let t = oscar::data::tsv::TsvFile::open(&l).map_err(py_err)?;
            for r in 0..t.num_rows() {
                let row = t.row(r).map_err(py_err)?;
                let at = format!("{}: row {}", l.display(), r + 1);
                let d = oscar::data::features::parse_detections(
                    row.get(1).map(String::as_str).unwrap_or(""),
                    &at,
                )
                .map_err(PyValueError::new_err)?;
                tags.insert(
                    row.first().cloned().unwrap_or_default(),
                    d.tags(0.0, false)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect(),
                );
            }
        }
        Ok(FeatureStore {
            store: std::sync::Mutex::new(store),
            tags,
            dim,
        })
    }

    fn __getitem__(&self, image_id: &str) -> PyResult<Image> {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if !store.contains(image_id) {
            return Err(pyo3::exceptions::PyKeyError::new_err(format!(
                "no features for image {image_id}"
            )));
        }
        let tags = self.tags.get(image_id).cloned().unwrap_or_default();
        let im = ImageInput::from_store(&store, image_id, tags).map_err(py_err)?;
        Ok(Image {
            inner: im,
            width: self.dim,
        })
    }

    fn __len__(&self) -> usize {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn keys(&self) -> Vec<String> {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).keys()
    }
}

/// A captioning model (`oscar train caption --out`).
#[pyclass(frozen, module = "oscar_rs")]
struct Captioner {
    m: infer::Captioning,
}

#[pymethods]
impl Captioner {
    /// Captions of each image, best first: a list of `{"text", "score", "ended"}` per image
    /// (`num_return_sequences` of them; beam search only for more than one).
    #[pyo3(signature = (images, num_beams=5, max_length=20, num_return_sequences=1, mode="beam", temperature=1.0, top_k=0, top_p=1.0, seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn caption(
        &self,
        py: Python<'_>,
        images: Vec<PyRef<'_, Image>>,
        num_beams: usize,
        max_length: usize,
        num_return_sequences: usize,
        mode: &str,
        temperature: f64,
        top_k: usize,
        top_p: f64,
        seed: u64,
    ) -> PyResult<Py<PyAny>> {
        let opts = CaptionOptions {
            mode: mode.parse().map_err(PyValueError::new_err)?,
            num_beams,
            max_length,
            temperature,
            top_k,
            top_p,
            seed,
            num_return_sequences,
            use_cache: true,
        };
        let ims = inputs(&images);
        let out = py
            .detach(|| self.m.caption_n(&ims, &opts, |_| {}))
            .map_err(py_err)?;
        to_py(
            py,
            &serde_json::to_value(out).map_err(|e| PyRuntimeError::new_err(e.to_string()))?,
        )
    }

    #[getter]
    fn feature_dim(&self) -> usize {
        self.m.feature_dim()
    }
}

/// A VQA / GQA model (`oscar train vqa|gqa --out`).
#[pyclass(frozen, module = "oscar_rs")]
struct Answerer {
    m: infer::Answering,
}

#[pymethods]
impl Answerer {
    /// The `top_k` answers to each (image, question), as `(answer, probability)` pairs.
    #[pyo3(signature = (images, questions, top_k=5))]
    fn answer(
        &self,
        py: Python<'_>,
        images: Vec<PyRef<'_, Image>>,
        questions: Vec<String>,
        top_k: usize,
    ) -> PyResult<Vec<Vec<(String, f32)>>> {
        let ims = inputs(&images);
        let q: Vec<&str> = questions.iter().map(String::as_str).collect();
        let out = py
            .detach(|| self.m.answer(&ims, &q, top_k))
            .map_err(py_err)?;
        Ok(out
            .into_iter()
            .map(|a| a.into_iter().map(|x| (x.answer, x.score)).collect())
            .collect())
    }

    #[getter]
    fn feature_dim(&self) -> usize {
        self.m.feature_dim()
    }
}

/// An image-text matching model (`oscar train retrieval --out`).
#[pyclass(frozen, module = "oscar_rs")]
struct Matcher {
    m: infer::Matching,
}

#[pymethods]
impl Matcher {
    /// Match probabilities of the pairs `(images[i], texts[i])`, as a float32 array.
    fn score<'py>(
        &self,
        py: Python<'py>,
        images: Vec<PyRef<'py, Image>>,
        texts: Vec<String>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        if images.len() != texts.len() {
            return Err(PyValueError::new_err(format!(
                "{} images for {} texts: give one text per image",
                images.len(),
                texts.len()
            )));
        }
        let ims = inputs(&images);
        let pairs: Vec<(&ImageInput, &str)> = ims
            .iter()
            .zip(&texts)
            .map(|(i, t)| (i, t.as_str()))
            .collect();
        let s = py.detach(|| self.m.score(&pairs)).map_err(py_err)?;
        Ok(PyArray1::from_vec(py, s))
    }

    /// `texts` ranked for `image`, best first, as `(index, probability)`; with `first_stage_k`
    /// only the k best texts by the first stage are scored: `first_stage="tags"` (sharing most
    /// words with the tags) or `"learned"` (nearest in the embedding space `oscar train
    /// first-stage` fitted).
    #[pyo3(signature = (image, texts, first_stage_k=None, first_stage="tags"))]
    fn rank(
        &self,
        py: Python<'_>,
        image: PyRef<'_, Image>,
        texts: Vec<String>,
        first_stage_k: Option<usize>,
        first_stage: &str,
    ) -> PyResult<Vec<(usize, f32)>> {
        let im = image.inner.clone();
        let t: Vec<&str> = texts.iter().map(String::as_str).collect();
        let sl = shortlist(first_stage_k, first_stage)?;
        let r = py
            .detach(|| self.m.rank_texts(&im, &t, sl))
            .map_err(py_err)?;
        Ok(r.into_iter().map(|x| (x.index, x.score)).collect())
    }

    /// `images` ranked for `text`, best first, as `(index, probability)`; `first_stage_k` and
    /// `first_stage` as in `rank`.
    #[pyo3(signature = (text, images, first_stage_k=None, first_stage="tags"))]
    fn rank_images(
        &self,
        py: Python<'_>,
        text: String,
        images: Vec<PyRef<'_, Image>>,
        first_stage_k: Option<usize>,
        first_stage: &str,
    ) -> PyResult<Vec<(usize, f32)>> {
        let ims = inputs(&images);
        let sl = shortlist(first_stage_k, first_stage)?;
        let r = py
            .detach(|| self.m.rank_images(&text, &ims, sl))
            .map_err(py_err)?;
        Ok(r.into_iter().map(|x| (x.index, x.score)).collect())
    }

    #[getter]
    fn feature_dim(&self) -> usize {
        self.m.feature_dim()
    }
}

/// Any checkpoint's model: every output for free-form items (`oscar encode`).
#[pyclass(frozen, module = "oscar_rs")]
struct Encoder {
    m: infer::Encoder,
}

#[pymethods]
impl Encoder {
    #[new]
    #[pyo3(signature = (path, vocab=None, device="cpu", quantize="f32"))]
    fn new(path: PathBuf, vocab: Option<PathBuf>, device: &str, quantize: &str) -> PyResult<Self> {
        Ok(Encoder {
            m: infer::Encoder::load_at(
                &path,
                vocab.as_deref(),
                &self::device(device)?,
                precision(quantize)?,
            )
            .map_err(py_err)?,
        })
    }

    /// Tensorizes `texts` (with `images[i]`'s regions and tags when given) with a task's layout
    /// (`retrieval`, `caption`, `vqa`, `gqa`, `nlvr2`, `pretrain`) and returns every output as
    /// numpy arrays: the inputs, `sequence`, `pooled` and each head's logits.
    #[pyo3(signature = (texts, images=None, layout="retrieval", batch_size=16))]
    fn encode(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        images: Option<Vec<PyRef<'_, Image>>>,
        layout: &str,
        batch_size: usize,
    ) -> PyResult<Py<PyDict>> {
        let ims = images.map(|v| inputs(&v));
        if let Some(i) = &ims {
            if i.len() != texts.len() {
                return Err(PyValueError::new_err(format!(
                    "{} images for {} texts",
                    i.len(),
                    texts.len()
                )));
            }
        }
        let layout: oscar::data::items::TaskLayout =
            layout.parse().map_err(PyValueError::new_err)?;
        let items: Vec<oscar::data::items::Item> = texts
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let im = ims.as_ref().map(|v| &v[k]);
                oscar::data::items::Item {
                    id: k.to_string(),
                    text: t.clone(),
                    tags: im.map(|i| i.tag_text()).filter(|t| !t.is_empty()),
                    features: im.map(|i| i.features.clone()).unwrap_or_default(),
                }
            })
            .collect();
        let l = layout.layout();
        let outs = py
            .detach(|| self.m.encode(&items, &l, batch_size, |_| {}))
            .map_err(py_err)?;
        let d = PyDict::new(py);
        for (k, t) in outs {
            d.set_item(k, tensor_to_numpy(py, &t)?)?;
        }
        Ok(d.unbind())
    }
}

fn detect_err(e: oscar_detect::Error) -> PyErr {
    let msg = e.to_string();
    match e {
        oscar_detect::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        oscar_detect::Error::Io { .. } => PyOSError::new_err(msg),
        oscar_detect::Error::Candle(_) => PyRuntimeError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// VinVL's object detector (`oscar detect`): a folder with the weights (`.pth` or
/// `model.safetensors`), the label map and optionally `detector.json`.
#[pyclass(frozen, module = "oscar_rs")]
struct Detector {
    det: oscar_detect::Detector,
}

impl Detector {
    /// Decodes a path or the bytes of a JPEG/PNG file and detects, without the GIL.
    fn run(&self, py: Python<'_>, image: &Bound<'_, PyAny>) -> PyResult<oscar_detect::Detections> {
        let max = self.det.config.max_image_pixels;
        if let Ok(bytes) = image.extract::<Vec<u8>>() {
            if !image.is_instance_of::<pyo3::types::PyBytes>() {
                return Err(PyValueError::new_err(
                    "image: a path or the bytes of a JPEG/PNG file",
                ));
            }
            return py
                .detach(|| {
                    let rgb = oscar_detect::decode_image(&bytes, max)
                        .map_err(oscar_detect::Error::Invalid)?;
                    self.det.detect(&rgb)
                })
                .map_err(detect_err);
        }
        let path: PathBuf = image.extract()?;
        py.detach(|| self.det.detect_file(&path))
            .map_err(detect_err)
    }
}

#[pymethods]
impl Detector {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let det = py
            .detach(|| oscar_detect::Detector::load(&path))
            .map_err(detect_err)?;
        Ok(Detector { det })
    }

    /// `{"image_size": (w, h), "objects": [{"rect", "label", "class", "conf", "attributes":
    /// [(name, p)]}], "features": ndarray [objects, 2048]}`, best first.
    fn detect(&self, py: Python<'_>, image: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let d = self.run(py, image)?;
        let names = &self.det.labels.attributes;
        let objects: Vec<serde_json::Value> = d
            .objects
            .iter()
            .map(|o| {
                let attrs: Vec<(String, f32)> =
                    o.attributes.iter().map(|&(a, p)| (names.get(a).cloned().unwrap_or_default(), p)).collect();
                serde_json::json!({"rect": o.rect, "label": o.label, "class": o.class, "conf": o.conf, "attributes": attrs})
            })
            .collect();
        let out = to_py(
            py,
            &serde_json::json!({"image_size": [d.image_size.0, d.image_size.1], "objects": objects}),
        )?;
        let dim = d
            .objects
            .first()
            .map_or(self.det.config.feature_dim(), |o| o.feature.len());
        let flat: Vec<f32> = d
            .objects
            .iter()
            .flat_map(|o| o.feature.iter().copied())
            .collect();
        let feats = PyArray1::from_vec(py, flat).reshape([d.objects.len(), dim])?;
        out.bind(py).set_item("features", feats)?;
        Ok(out)
    }

    /// The photo as a model input: the regions with VinVL's 6 box dimensions, the classes as tags.
    fn image(&self, py: Python<'_>, image: &Bound<'_, PyAny>) -> PyResult<Image> {
        let d = self.run(py, image)?;
        let inner = ImageInput::from_detections(&d).map_err(py_err)?;
        Ok(Image {
            inner,
            width: self.det.config.feature_dim() + 6,
        })
    }

    #[getter]
    fn classes(&self) -> Vec<String> {
        self.det.labels.classes.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Detector({} classes, {} attributes, {}-d features)",
            self.det.config.num_classes,
            self.det.config.num_attributes,
            self.det.config.feature_dim()
        )
    }
}

/// `quantize="int8"|"f32"` → the precision of the `Linear` layers.
fn precision(quantize: &str) -> PyResult<infer::Precision> {
    quantize.parse().map_err(PyValueError::new_err)
}

/// Loads the task model a directory holds (told by the settings file its training wrote):
/// a `Captioner`, an `Answerer` or a `Matcher`; any other checkpoint as an `Encoder`.
/// `quantize="int8"`: the `Linear` layers in dynamic int8.
#[pyfunction]
#[pyo3(signature = (path, device="cpu", quantize="f32"))]
fn load(py: Python<'_>, path: PathBuf, device: &str, quantize: &str) -> PyResult<Py<PyAny>> {
    let dev = self::device(device)?;
    let precision = precision(quantize)?;
    let task = ["caption.json", "qa.json", "retrieval.json"]
        .iter()
        .any(|f| path.join(f).exists());
    if !task {
        if !path.exists() {
            return Err(PyFileNotFoundError::new_err(format!(
                "{}: no such file or directory",
                path.display()
            )));
        }
        let m = py
            .detach(|| infer::Encoder::load_at(&path, None, &dev, precision))
            .map_err(py_err)?;
        return Ok(Py::new(py, Encoder { m })?.into_any());
    }
    let m = py
        .detach(|| infer::TaskModel::load_at(&path, &dev, precision))
        .map_err(py_err)?;
    Ok(match m {
        infer::TaskModel::Captioning(m) => Py::new(py, Captioner { m })?.into_any(),
        infer::TaskModel::Answering(m) => Py::new(py, Answerer { m })?.into_any(),
        infer::TaskModel::Matching(m) => Py::new(py, Matcher { m })?.into_any(),
    })
}

/// COCO caption metrics (BLEU-1..4, METEOR when its jar is found, ROUGE-L, CIDEr; CIDEr-D with
/// `train_refs`' document frequencies) of `preds` (image id → caption) against `refs` (image
/// id → captions): the numbers of `oscar eval caption` and pycocoevalcap.
#[pyfunction]
#[pyo3(signature = (refs, preds, train_refs=None, meteor_jar=None))]
fn caption_scores(
    py: Python<'_>,
    refs: BTreeMap<String, Vec<String>>,
    preds: BTreeMap<String, String>,
    train_refs: Option<BTreeMap<String, Vec<String>>>,
    meteor_jar: Option<PathBuf>,
) -> PyResult<Py<PyAny>> {
    let preds: BTreeMap<String, Vec<String>> =
        preds.into_iter().map(|(k, v)| (k, vec![v])).collect();
    let s = py
        .detach(|| {
            let opt = oscar_eval::captions::CaptionOptions {
                cider_df: train_refs
                    .as_ref()
                    .map(|t| oscar_eval::captions::build_doc_freq(t, false)),
                meteor_jar: oscar_eval::meteor::find_runnable(meteor_jar.as_deref()).ok(),
                ..Default::default()
            };
            oscar_eval::captions::evaluate_captions(&refs, &preds, &opt)
        })
        .map_err(eval_err)?;
    let v = serde_json::json!({
        "images": s.images, "bleu": s.bleu, "meteor": s.meteor, "rouge_l": s.rouge_l, "cider": s.cider, "cider_d": s.cider_d,
    });
    to_py(py, &v)
}

/// The official VQA accuracy (GT-Vision-Lab's `vqaEval.py`; `rules="pre-2021"` for the file before
/// its 2021 change) of `results` (`[{"question_id", "answer"}]`) against `annotations` (the
/// official file's object, or its `annotations` list).
#[pyfunction]
#[pyo3(signature = (annotations, results, rules="official"))]
fn vqa_accuracy(
    py: Python<'_>,
    annotations: &Bound<'_, PyAny>,
    results: &Bound<'_, PyAny>,
    rules: &str,
) -> PyResult<Py<PyAny>> {
    let rules: oscar_eval::vqa::VqaRules = rules.parse().map_err(PyValueError::new_err)?;
    let mut a = from_py(annotations)?;
    if a.is_array() {
        a = serde_json::json!({ "annotations": a });
    }
    let anns =
        oscar_eval::vqa::parse_annotations(&a, Path::new("<annotations>")).map_err(eval_err)?;
    let res = oscar_eval::vqa::parse_results(&from_py(results)?, Path::new("<results>"))
        .map_err(eval_err)?;
    let s = py
        .detach(|| oscar_eval::vqa::evaluate_vqa_rules(&anns, &res, false, rules))
        .map_err(eval_err)?;
    let v = serde_json::json!({
        "overall": s.overall, "per_question_type": s.per_question_type, "per_answer_type": s.per_answer_type, "questions": s.questions,
    });
    to_py(py, &v)
}

/// Recall@1/5/10 both ways from `scores[image, caption]` and each caption's image index, as
/// Oscar's `run_retrieval.py` evaluates.
#[pyfunction]
fn recall_at_k(
    py: Python<'_>,
    scores: PyReadonlyArray2<'_, f32>,
    caption_image: Vec<usize>,
) -> PyResult<Py<PyAny>> {
    let rows: Vec<Vec<f32>> = scores
        .as_array()
        .rows()
        .into_iter()
        .map(|r| r.to_vec())
        .collect();
    let r = py
        .detach(|| oscar_eval::retrieval::recall_at_k(&rows, &caption_image))
        .map_err(eval_err)?;
    to_py(
        py,
        &serde_json::to_value(r).map_err(|e| PyRuntimeError::new_err(e.to_string()))?,
    )
}

#[pymodule]
fn oscar_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Image>()?;
    m.add_class::<FeatureStore>()?;
    m.add_class::<Captioner>()?;
    m.add_class::<Answerer>()?;
    m.add_class::<Matcher>()?;
    m.add_class::<Encoder>()?;
    m.add_class::<Detector>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    let eval = PyModule::new(py, "eval")?;
    eval.add_function(wrap_pyfunction!(caption_scores, &eval)?)?;
    eval.add_function(wrap_pyfunction!(vqa_accuracy, &eval)?)?;
    eval.add_function(wrap_pyfunction!(recall_at_k, &eval)?)?;
    m.add_submodule(&eval)?;
    // `import oscar_rs.eval` as well as `oscar_rs.eval.…`.
    py.import("sys")?
        .getattr("modules")?
        .set_item("oscar_rs.eval", &eval)?;
    Ok(())
}
