//! The inference API that the CLI, a server and Python bindings all call: a task model loaded
//! from the directory training wrote (weights, `config.json`, `vocab.txt`, the task's settings),
//! typed image inputs, plain outputs. It mirrors what the reference's `run_*.py --do_test`
//! scripts do for one batch, without their dataset classes: [`Captioning::caption`],
//! [`Answering::answer`], [`Matching::score`] / [`Matching::rank_texts`] /
//! [`Matching::rank_images`], and [`Encoder::encode`] (every output of any checkpoint).

use crate::checkpoint::{read_checkpoint, AnyModel, Fresh, HeadKind};
use crate::config::OscarConfig;
use crate::data::features::Detection;
use crate::data::features::{box_dims, regions_from, FeatureStore, Regions};
use crate::data::items::Item;
use crate::data::tensorize::{collate, Encoded, Layout};
use crate::error::{Error, Result};
pub use crate::nn::int8::Precision;
use crate::tasks::caption::cbs::{constrained_beam_search, select_constraints, ConstraintConfig};
use crate::tasks::caption::decode::{DecodeSettings, Generated, ImageContext};
use crate::tasks::caption::{Captioner, Mode};
use crate::tasks::first_stage::{FirstStage, FirstStageChoice};
use crate::tasks::qa::{Answerer, QaSet};
use crate::tasks::retrieval::{
    saved_settings, tag_overlap, RetrievalSet, RetrievalTrainConfig, Retriever,
};
use crate::tokenizer::BertTokenizer;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One image as the models read it: region features (rows of the model's region width — a
/// detector's features plus the 6 box dimensions) and the detector's object tags.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    /// Row-major `[regions, width]`.
    pub features: Vec<f32>,
    pub tags: Vec<String>,
}

impl ImageInput {
    pub fn new(features: Vec<f32>, tags: Vec<String>) -> Self {
        ImageInput { features, tags }
    }

    /// From a detector's output: `det_dim`-wide features per box, the boxes `[x1, y1, x2, y2]`
    /// in pixels of an image of `(width, height)`; the 6 box dimensions VinVL appends
    /// (`[x1/W, y1/H, x2/W, y2/H, w/W, h/H]`) are added to each row.
    pub fn with_boxes(
        features: &[f32],
        det_dim: usize,
        boxes: &[[f32; 4]],
        image_size: (f32, f32),
        tags: Vec<String>,
    ) -> Result<Self> {
        let (w, h) = image_size;
        if !(w > 0.0 && h > 0.0) {
            return Err(Error::Invalid(format!(
                "image size {w} × {h}: expected positive width and height"
            )));
        }
        if det_dim == 0 || features.len() != boxes.len() * det_dim {
            return Err(Error::Invalid(format!(
                "{} feature values for {} boxes of width {det_dim}",
                features.len(),
                boxes.len()
            )));
        }
        let mut out = Vec::with_capacity(boxes.len() * (det_dim + 6));
        for (row, b) in features.chunks(det_dim).zip(boxes) {
            out.extend_from_slice(row);
            out.extend_from_slice(&box_dims(*b, w, h));
        }
        Ok(ImageInput {
            features: out,
            tags,
        })
    }

    /// From VinVL's detector run on a photo: its 2048-d region features with the 6 box
    /// dimensions, and its class names as tags, best first (`run_captioning.py`'s
    /// `get_od_labels` joins every object's class).
    pub fn from_detections(d: &oscar_detect::Detections) -> Result<Self> {
        let det_dim = d.objects.first().map_or(1, |o| o.feature.len());
        let features: Vec<f32> = d
            .objects
            .iter()
            .flat_map(|o| o.feature.iter().copied())
            .collect();
        let boxes: Vec<[f32; 4]> = d.objects.iter().map(|o| o.rect).collect();
        let tags = d.objects.iter().map(|o| o.class.clone()).collect();
        let (w, h) = d.image_size;
        Self::with_boxes(&features, det_dim, &boxes, (w as f32, h as f32), tags)
    }

    /// An image of a feature file (`features.tsv`, `*.feature.tsv`, a torch feature dict).
    pub fn from_store(store: &FeatureStore, image_id: &str, tags: Vec<String>) -> Result<Self> {
        Ok(ImageInput {
            features: store.get(image_id)?.data,
            tags,
        })
    }

    /// The regions at the model's width (an error naming both widths otherwise).
    fn regions(&self, dim: usize, which: usize) -> Result<Regions> {
        regions_from(self.features.clone(), None, dim, &format!("image {which}"))
            .map_err(Error::Invalid)
    }

    /// The tags as the models read them: space-separated.
    pub fn tag_text(&self) -> String {
        self.tags.join(" ")
    }
}

/// How to caption (the reference's test-time defaults: beam 5, 20 tokens).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CaptionOptions {
    pub mode: Mode,
    pub num_beams: usize,
    /// Tokens including `[CLS]`.
    pub max_length: usize,
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    /// Sampling seed.
    pub seed: u64,
    /// Captions per image for [`Captioning::caption_n`] (beam search: at most `num_beams`).
    pub num_return_sequences: usize,
    /// Decode with the KV cache (`false`: re-encode the whole prefix at every step, the
    /// reference's way; the same captions, slower).
    pub use_cache: bool,
}

impl Default for CaptionOptions {
    fn default() -> Self {
        let d = DecodeSettings::default();
        CaptionOptions {
            mode: Mode::Beam,
            num_beams: d.num_beams,
            max_length: d.max_gen_length,
            temperature: d.temperature,
            top_k: d.top_k,
            top_p: d.top_p,
            seed: 0,
            num_return_sequences: 1,
            use_cache: true,
        }
    }
}

/// A generated caption.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CaptionOutput {
    pub text: String,
    /// Beam: sum of log-probabilities / length^penalty; greedy and sampling: the sum.
    pub score: f64,
    /// Whether the caption ended with `[SEP]` rather than at the length limit.
    pub ended: bool,
}

/// A captioning model (`oscar train caption --out`).
pub struct Captioning {
    model: Captioner,
    tok: BertTokenizer,
}

impl Captioning {
    /// Loads the model onto `device` (`Device::Cpu`, or a CUDA / Metal device in such a build).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_at(dir, device, Precision::F32)
    }

    /// [`Self::load`] with the `Linear` layers at `precision` (`Precision::Int8`: dynamic int8).
    pub fn load_at(dir: &Path, device: &Device, precision: Precision) -> Result<Self> {
        Ok(Captioning {
            model: Captioner::load_at(dir, device, precision)?,
            tok: BertTokenizer::from_vocab(&dir.join("vocab.txt"))?,
        })
    }

    /// The region width the model reads.
    pub fn feature_dim(&self) -> usize {
        self.model.config.img_feature_dim
    }

    /// The longest caption the model can write, in tokens with `[CLS]`: its caption slots
    /// (`max_seq_a_length`; the tags' positions start after them).
    pub fn max_caption_length(&self) -> usize {
        self.model.settings.max_seq_a_length
    }

    /// One caption per image, 16 images at a time.
    pub fn caption(
        &self,
        images: &[ImageInput],
        opts: &CaptionOptions,
    ) -> Result<Vec<CaptionOutput>> {
        self.caption_with_progress(images, opts, |_| {})
    }

    /// [`Self::caption`], with `progress` told the images done after each batch.
    pub fn caption_with_progress(
        &self,
        images: &[ImageInput],
        opts: &CaptionOptions,
        progress: impl FnMut(usize),
    ) -> Result<Vec<CaptionOutput>> {
        let one = CaptionOptions {
            num_return_sequences: 1,
            ..opts.clone()
        };
        Ok(self
            .caption_n(images, &one, progress)?
            .into_iter()
            .flatten()
            .collect())
    }

    /// The `opts.num_return_sequences` best captions of each image, best first.
    pub fn caption_n(
        &self,
        images: &[ImageInput],
        opts: &CaptionOptions,
        progress: impl FnMut(usize),
    ) -> Result<Vec<Vec<CaptionOutput>>> {
        let ctxs = self.contexts(images)?;
        let gens = self.model.generate_n(
            &self.tok,
            &ctxs,
            opts.mode,
            &self.settings(opts),
            16,
            opts.use_cache,
            opts.seed,
            progress,
        )?;
        Ok(gens
            .iter()
            .map(|g| g.iter().map(|g| self.output(g)).collect())
            .collect())
    }

    /// Constrained beam search (NoCaps' CBS, oscar-spec §3.5): each image's constraints are
    /// chosen from its detections (`detections[i]`, class and confidence) by `constraints`, and
    /// its caption is the best beam that satisfies enough of them (or the best beam overall
    /// when none does). `opts.mode` is ignored: this is always beam search.
    pub fn caption_constrained(
        &self,
        images: &[ImageInput],
        detections: &[Vec<Detection>],
        opts: &CaptionOptions,
        constraints: &ConstraintConfig,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<ConstrainedCaption>> {
        if images.len() != detections.len() {
            return Err(Error::Invalid(format!(
                "{} images with {} detection lists: give one list per image",
                images.len(),
                detections.len()
            )));
        }
        let st = self.settings(opts);
        let dec = self.model.decoder(&self.tok);
        let ctxs = self.contexts(images)?;
        let mut out = Vec::with_capacity(images.len());
        for (ctx, dets) in ctxs.iter().zip(detections) {
            let cs = select_constraints(dets, &self.tok, constraints)?;
            let r = constrained_beam_search(&dec, ctx, &cs, &st, constraints.min_satisfied)?;
            out.push(ConstrainedCaption {
                caption: self.output(&r.caption),
                constraints: r.constraints,
                satisfied: r.satisfied,
            });
            progress(1);
        }
        Ok(out)
    }

    fn contexts(&self, images: &[ImageInput]) -> Result<Vec<ImageContext>> {
        let dim = self.feature_dim();
        images
            .iter()
            .enumerate()
            .map(|(i, im)| {
                self.model
                    .context(&self.tok, &im.tag_text(), &im.regions(dim, i)?)
            })
            .collect()
    }

    fn settings(&self, opts: &CaptionOptions) -> DecodeSettings {
        DecodeSettings {
            max_gen_length: opts.max_length,
            num_beams: opts.num_beams.max(1),
            temperature: opts.temperature,
            top_k: opts.top_k,
            top_p: opts.top_p,
            num_return_sequences: opts.num_return_sequences.max(1),
            ..self.model.settings.decode.clone()
        }
    }

    fn output(&self, g: &Generated) -> CaptionOutput {
        CaptionOutput {
            text: self.tok.decode(&g.tokens),
            score: g.score,
            ended: g.ended,
        }
    }
}

/// A caption from constrained beam search.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConstrainedCaption {
    #[serde(flatten)]
    pub caption: CaptionOutput,
    /// The constraint words chosen from the detections, and which of them the caption satisfies.
    pub constraints: Vec<String>,
    pub satisfied: Vec<bool>,
}

/// A ranked answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    pub answer: String,
    /// Sigmoid probability (VQA's independent answers) or softmax probability (GQA).
    pub score: f32,
}

/// A VQA / GQA model (`oscar train vqa|gqa --out`).
pub struct Answering {
    model: Answerer,
    tok: BertTokenizer,
}

impl Answering {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_at(dir, device, Precision::F32)
    }

    /// [`Self::load`] with the `Linear` layers at `precision` (`Precision::Int8`: dynamic int8).
    pub fn load_at(dir: &Path, device: &Device, precision: Precision) -> Result<Self> {
        Ok(Answering {
            model: Answerer::load_at(dir, device, precision)?,
            tok: BertTokenizer::from_vocab(&dir.join("vocab.txt"))?,
        })
    }

    pub fn feature_dim(&self) -> usize {
        self.model.config.img_feature_dim
    }

    /// The `top_k` answers to each (image, question) pair, batched.
    pub fn answer(
        &self,
        images: &[ImageInput],
        questions: &[&str],
        top_k: usize,
    ) -> Result<Vec<Vec<Answer>>> {
        if images.len() != questions.len() {
            return Err(Error::Invalid(format!(
                "{} images for {} questions: give one image per question",
                images.len(),
                questions.len()
            )));
        }
        let dim = self.feature_dim();
        let mut set = QaSet {
            examples: Vec::with_capacity(images.len()),
            features: HashMap::with_capacity(images.len()),
        };
        for (i, (im, q)) in images.iter().zip(questions).enumerate() {
            let id = i.to_string();
            set.features.insert(id.clone(), im.regions(dim, i)?);
            set.examples.push(crate::data::text::QaExample {
                q_id: id.clone(),
                img_id: id,
                question: q.to_string(),
                tags: im.tag_text(),
                answers: Vec::new(),
            });
        }
        let preds = self
            .model
            .predict(&self.tok, &set, 64, top_k.max(1), |_| {})?;
        Ok(preds
            .into_iter()
            .map(|p| {
                p.top
                    .into_iter()
                    .map(|(answer, score)| Answer { answer, score })
                    .collect()
            })
            .collect())
    }
}

/// A candidate's place in a ranking.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ranked {
    /// Index into the candidates given.
    pub index: usize,
    /// Match probability.
    pub score: f32,
}

/// An image–text matching model (`oscar train retrieval --out`), with the learned first stage
/// fitted next to it (`oscar train first-stage`) when there is one.
pub struct Matching {
    model: Retriever,
    settings: RetrievalTrainConfig,
    tok: BertTokenizer,
    first_stage: Option<Box<FirstStage>>,
}

/// Which candidates a ranking scores with the cross-encoder: the `k` best by the first stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortlist {
    pub k: usize,
    pub by: FirstStageChoice,
}

impl Shortlist {
    /// The `k` candidates sharing most words with the image's tags.
    pub fn tags(k: usize) -> Self {
        Shortlist {
            k,
            by: FirstStageChoice::Tags,
        }
    }

    /// The `k` candidates nearest in the learned embedding space.
    pub fn learned(k: usize) -> Self {
        Shortlist {
            k,
            by: FirstStageChoice::Learned,
        }
    }
}

impl Matching {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_at(dir, device, Precision::F32)
    }

    /// [`Self::load`] with the `Linear` layers at `precision` (`Precision::Int8`: dynamic int8).
    pub fn load_at(dir: &Path, device: &Device, precision: Precision) -> Result<Self> {
        let first_stage = match FirstStage::exists(dir) {
            true => Some(Box::new(FirstStage::load(dir, device)?)),
            false => None,
        };
        Ok(Matching {
            model: Retriever::load_at(dir, device, precision)?,
            settings: saved_settings(dir)?,
            tok: BertTokenizer::from_vocab(&dir.join("vocab.txt"))?,
            first_stage,
        })
    }

    pub fn feature_dim(&self) -> usize {
        self.model.config.img_feature_dim
    }

    /// Whether a learned first stage was found next to the model.
    pub fn has_learned_first_stage(&self) -> bool {
        self.first_stage.is_some()
    }

    /// Images and texts as a retrieval set (image `i` is named `i`; text `c` is paired with
    /// image `pair_of(c)`, which only the cross-encoder's batching looks at).
    fn as_set(
        &self,
        images: &[&ImageInput],
        texts: &[&str],
        pair_of: impl Fn(usize) -> usize,
    ) -> Result<RetrievalSet> {
        let dim = self.feature_dim();
        let mut set = RetrievalSet {
            images: Vec::new(),
            captions: Vec::new(),
            features: HashMap::new(),
            tags: HashMap::new(),
        };
        for (i, im) in images.iter().enumerate() {
            let id = i.to_string();
            set.features.insert(id.clone(), im.regions(dim, i)?);
            set.tags.insert(id.clone(), im.tag_text());
            set.images.push(id);
        }
        for (c, text) in texts.iter().enumerate() {
            set.captions.push((pair_of(c), text.to_string()));
        }
        Ok(set)
    }

    /// The match probability of each (image, text) pair, batched by length.
    pub fn score(&self, pairs: &[(&ImageInput, &str)]) -> Result<Vec<f32>> {
        let images: Vec<&ImageInput> = pairs.iter().map(|p| p.0).collect();
        let texts: Vec<&str> = pairs.iter().map(|p| p.1).collect();
        let set = self.as_set(&images, &texts, |c| c)?;
        let idx: Vec<(usize, usize)> = (0..pairs.len()).map(|i| (i, i)).collect();
        self.model
            .score_pairs(&self.tok, &set, &idx, &self.settings, 64, |_| {})
    }

    /// Cosine similarities of `images` × `texts` in the learned embedding space (one
    /// single-modality pass per image and per text).
    pub fn similarities(&self, images: &[&ImageInput], texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let fs = self.first_stage.as_ref().ok_or_else(|| {
            Error::Invalid(
                "this matching model has no learned first stage: fit one with `oscar train \
                 first-stage --checkpoint DIR --data DIR`"
                    .into(),
            )
        })?;
        let set = self.as_set(images, texts, |_| 0)?;
        fs.similarities(&self.model, &self.tok, &set, &self.settings)
    }

    /// `texts` ranked for one image, best first. With a shortlist, only its `k` best texts by
    /// the first stage (tag–word overlap, or the learned embeddings) are scored by the model,
    /// and only they are returned.
    pub fn rank_texts(
        &self,
        image: &ImageInput,
        texts: &[&str],
        first_stage: Option<Shortlist>,
    ) -> Result<Vec<Ranked>> {
        let cand = match first_stage {
            Some(Shortlist {
                k,
                by: FirstStageChoice::Learned,
            }) => {
                let sims = self.similarities(&[image], texts)?.remove(0);
                top_k(&sims, k)
            }
            other => text_candidates(image, texts, other.map(|s| s.k)),
        };
        let pairs: Vec<(&ImageInput, &str)> = cand.iter().map(|&i| (image, texts[i])).collect();
        Ok(ranked(&cand, self.score(&pairs)?))
    }

    /// `images` ranked for one text, best first; `first_stage` as in [`Self::rank_texts`].
    pub fn rank_images(
        &self,
        text: &str,
        images: &[ImageInput],
        first_stage: Option<Shortlist>,
    ) -> Result<Vec<Ranked>> {
        let cand = match first_stage {
            Some(Shortlist {
                k,
                by: FirstStageChoice::Learned,
            }) => {
                let refs: Vec<&ImageInput> = images.iter().collect();
                let sims = self.similarities(&refs, &[text])?;
                shortlist(images.len(), Some(k), |i| sims[i][0])
            }
            other => image_candidates(text, images, other.map(|s| s.k)),
        };
        let pairs: Vec<(&ImageInput, &str)> = cand.iter().map(|&i| (&images[i], text)).collect();
        Ok(ranked(&cand, self.score(&pairs)?))
    }
}

/// The texts a ranking for `image` scores (indices into `texts`): all, or with `first_stage:
/// Some(k)` the `k` sharing most words with the image's tags (ties by index).
pub fn text_candidates(
    image: &ImageInput,
    texts: &[&str],
    first_stage: Option<usize>,
) -> Vec<usize> {
    let tags = image.tag_text();
    shortlist(texts.len(), first_stage, |i| tag_overlap(&tags, texts[i]))
}

/// The images a ranking for `text` scores; `first_stage` as in [`text_candidates`].
pub fn image_candidates(
    text: &str,
    images: &[ImageInput],
    first_stage: Option<usize>,
) -> Vec<usize> {
    shortlist(images.len(), first_stage, |i| {
        tag_overlap(&images[i].tag_text(), text)
    })
}

/// The indices of the `k` highest `scores` (ties by index), best first: a shortlist from
/// first-stage scores computed elsewhere (the server's model thread).
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    shortlist(scores.len(), Some(k), |i| scores[i])
}

/// The candidates the model scores: all of `n`, or the `k` with the highest first-stage score
/// (ties by index).
fn shortlist(n: usize, k: Option<usize>, first: impl Fn(usize) -> f32) -> Vec<usize> {
    let mut cand: Vec<usize> = (0..n).collect();
    if let Some(k) = k {
        let s: Vec<f32> = cand.iter().map(|&i| first(i)).collect();
        cand.sort_by(|&x, &y| s[y].total_cmp(&s[x]).then(x.cmp(&y)));
        cand.truncate(k);
    }
    cand
}

/// `candidates` with their match probabilities `scores`, best first (ties by index).
pub fn ranked(candidates: &[usize], scores: Vec<f32>) -> Vec<Ranked> {
    let mut r: Vec<Ranked> = candidates
        .iter()
        .zip(scores)
        .map(|(&index, score)| Ranked { index, score })
        .collect();
    r.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    r
}

/// Whichever task model a directory holds, told by the settings file its training wrote.
pub enum TaskModel {
    Captioning(Captioning),
    Answering(Answering),
    Matching(Matching),
}

impl TaskModel {
    /// Loads `dir` onto `device`: `caption.json` → captioning, `qa.json` → VQA/GQA, `retrieval.json` →
    /// image–text matching.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_at(dir, device, Precision::F32)
    }

    /// [`Self::load`] with the `Linear` layers at `precision` (`Precision::Int8`: dynamic int8).
    pub fn load_at(dir: &Path, device: &Device, precision: Precision) -> Result<Self> {
        if dir.join("caption.json").exists() {
            Ok(TaskModel::Captioning(Captioning::load_at(
                dir, device, precision,
            )?))
        } else if dir.join("qa.json").exists() {
            Ok(TaskModel::Answering(Answering::load_at(
                dir, device, precision,
            )?))
        } else if dir.join("retrieval.json").exists() {
            Ok(TaskModel::Matching(Matching::load_at(
                dir, device, precision,
            )?))
        } else {
            Err(Error::Invalid(format!("{}: not a task model directory (no caption.json, qa.json or retrieval.json beside the weights)", dir.display())))
        }
    }

    pub fn task(&self) -> &'static str {
        match self {
            TaskModel::Captioning(_) => "captioning",
            TaskModel::Answering(_) => "question answering",
            TaskModel::Matching(_) => "image-text matching",
        }
    }
}

/// Every output of any checkpoint's model for free-form items (`oscar encode`): the tensorized
/// inputs, the sequence and pooled states and each head's logits, as named tensors in item order.
/// What a user needs for embeddings, and for checking numerics against another implementation.
pub struct Encoder {
    model: AnyModel,
    head: HeadKind,
    config: OscarConfig,
    tok: BertTokenizer,
    device: Device,
}

impl Encoder {
    /// Loads a checkpoint (directory or weights file) with the model its keys describe; `vocab`
    /// when no `vocab.txt` sits beside it.
    pub fn load(checkpoint: &Path, vocab: Option<&Path>, device: &Device) -> Result<Self> {
        Self::load_at(checkpoint, vocab, device, Precision::F32)
    }

    /// [`Self::load`] with the `Linear` layers at `precision` (`Precision::Int8`: dynamic int8).
    pub fn load_at(
        checkpoint: &Path,
        vocab: Option<&Path>,
        device: &Device,
        precision: Precision,
    ) -> Result<Self> {
        let ckpt = read_checkpoint(checkpoint)?;
        let vocab = vocab
            .map(Path::to_path_buf)
            .or_else(|| ckpt.vocab.clone())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: no vocab.txt next to the checkpoint: give one",
                    checkpoint.display()
                ))
            })?;
        let tok = BertTokenizer::from_vocab(&vocab)?;
        let (head, mut model, mut params, config, _report) =
            AnyModel::load(ckpt, None, Fresh::Nothing, device)?;
        if precision == Precision::Int8 {
            crate::checkpoint::quantize_linears(model.linears(), &mut params)?;
        }
        if tok.vocab_size() > config.vocab_size {
            return Err(Error::Invalid(format!(
                "{} has {} tokens but the model's vocab_size is {}",
                vocab.display(),
                tok.vocab_size(),
                config.vocab_size
            )));
        }
        Ok(Encoder {
            model,
            head,
            config,
            tok,
            device: device.clone(),
        })
    }

    /// The head the checkpoint's keys describe.
    pub fn head(&self) -> HeadKind {
        self.head
    }

    pub fn feature_dim(&self) -> usize {
        self.config.img_feature_dim
    }

    /// Tensorizes `items` with `layout` (fixed padding to its lengths) and runs the model,
    /// `batch_size` items at a time; `progress` gets the items done per batch.
    pub fn encode(
        &self,
        items: &[Item],
        layout: &Layout,
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<(String, Tensor)>> {
        if batch_size == 0 {
            return Err(Error::Invalid("the batch size must be positive".into()));
        }
        let dim = self.feature_dim();
        let (t, r) = (layout.max_seq_length, layout.max_img_seq_length);
        let encoded: Vec<Encoded> = items
            .iter()
            .map(|it| layout.encode(&self.tok, &it.text, it.tags.as_deref(), &it.features, dim))
            .collect::<Result<_>>()?;
        let mut outs: BTreeMap<&'static str, Vec<Tensor>> = BTreeMap::new();
        let _no_grad = crate::nn::NoGrad::new();
        for chunk in encoded.chunks(batch_size) {
            let x = collate(chunk, t, r, dim, &self.device)?;
            let out = self.model.bert().forward(&x, &crate::nn::Ctx::eval())?;
            let heads = self.model.head_outputs(&out)?;
            let b = chunk.len();
            let pos = Tensor::arange(0u32, t as u32, &self.device)?
                .unsqueeze(0)?
                .repeat((b, 1))?;
            let mut push = |k: &'static str, v: Tensor| outs.entry(k).or_default().push(v);
            // Ids as int64, what torch and numpy users index with.
            push("input_ids", x.input_ids.to_dtype(DType::I64)?);
            if let Some(types) = &x.token_type_ids {
                push("token_type_ids", types.to_dtype(DType::I64)?);
            }
            push("position_ids", pos.to_dtype(DType::I64)?);
            if let Some(mask) = &x.attention_mask {
                push("attention_mask", mask.clone());
            }
            push("sequence", out.sequence);
            push("pooled", out.pooled);
            for (k, v) in heads {
                push(k, v);
            }
            progress(b);
        }
        outs.into_iter()
            .map(|(k, parts)| Ok((k.to_string(), Tensor::cat(&parts, 0)?)))
            .collect()
    }
}
