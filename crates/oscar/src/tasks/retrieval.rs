//! Image–text retrieval (oscar-spec §3.4; `oscar/run_retrieval.py`): binary matching fine-tuning
//! (each positive with one negative — a wrong caption or a wrong image, 50/50 — and 2-way
//! cross-entropy on [CLS]), the full cross-scoring evaluation (every image against every caption,
//! score = softmax(logits)[1]), and a two-stage search whose cheap first stage (tag–word overlap,
//! or the learned embeddings of [`super::first_stage`]) keeps the top-k candidates for the model
//! to re-rank.

use super::finetune::{run_task, start, Optim, RunFiles};
use crate::checkpoint::{load_model_at, read_checkpoint, save_pretrained, Fresh};
use crate::config::{LossType, OscarConfig};
use crate::data::features::{parse_detections, FeatureStore, Regions};
use crate::data::tensorize::{collate_dynamic, collate_rows, Encoded, Layout, Truncation};
use crate::data::tsv::TsvFile;
use crate::error::{Error, Result};
use crate::model::{ClassLabels, ImageBertForSequenceClassification};
use crate::nn::{ops, Ctx};
use crate::tokenizer::BertTokenizer;
use crate::train::collective::Replica;
use crate::train::trainer::{Metrics, StepLoss, TrainTask};
use candle_core::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Images (features + tags) and their captions for one split.
pub struct RetrievalSet {
    pub images: Vec<String>,
    /// (image index, caption).
    pub captions: Vec<(usize, String)>,
    pub features: HashMap<String, Regions>,
    pub tags: HashMap<String, String>,
}

impl RetrievalSet {
    /// Reads `captions` (`{image: [captions]}`, JSON or `.pt`), region features and detector
    /// tags (`predictions.tsv` / `*.label.tsv`); `keys` limits the images (test_img_keys.tsv).
    pub fn open(
        captions: &Path,
        features: &Path,
        labels: &Path,
        img_feature_dim: usize,
        keys: Option<&Path>,
    ) -> Result<Self> {
        let caps = crate::data::text::read_retrieval_captions(captions)?;
        let wanted: Option<Vec<String>> = keys.map(crate::data::text::read_keys).transpose()?;
        let images: Vec<String> = match wanted {
            Some(k) => {
                if let Some(missing) = k.iter().find(|i| !caps.contains_key(*i)) {
                    return Err(Error::bad_file(
                        captions,
                        format!("image {missing} of the key file has no captions"),
                    ));
                }
                k
            }
            None => caps.keys().cloned().collect(),
        };
        let store = FeatureStore::open(features, img_feature_dim)?;
        let lab = TsvFile::open(labels)?;
        let lab_idx = lab.key_index()?;
        let mut feats = HashMap::new();
        let mut tags = HashMap::new();
        let mut captions_out = Vec::new();
        for (i, img) in images.iter().enumerate() {
            feats.insert(img.clone(), store.get(img)?);
            let row = *lab_idx
                .get(img)
                .ok_or_else(|| Error::bad_file(labels, format!("no labels for image {img}")))?;
            let f = lab.row(row)?;
            let d = parse_detections(
                f.get(1).map(String::as_str).unwrap_or(""),
                &format!("row {}", row + 1),
            )
            .map_err(|e| Error::bad_file(labels, e))?;
            tags.insert(img.clone(), d.tags(0.0, false));
            for c in &caps[img] {
                captions_out.push((i, c.clone()));
            }
        }
        Ok(RetrievalSet {
            images,
            captions: captions_out,
            features: feats,
            tags,
        })
    }
}

pub use crate::data::attention_mask::AttMask;

/// Attaches `kind`'s block mask to a laid-out pair, over its own positions (none for CLR: full
/// attention is the 1-D padding mask); the collator places it in the batch.
pub fn with_att_mask(mut e: Encoded, kind: AttMask) -> Encoded {
    if kind != AttMask::CLR {
        let (a_len, t) = (e.text_a_len + 2, e.input_ids.len());
        e.mask = Some(crate::data::attention_mask::retrieval(
            e.len(),
            0..a_len,
            a_len..t,
            t..t + e.num_regions,
            kind,
        ));
    }
    e
}

/// Fine-tuning settings (defaults: the reference's layout, optimisation scaled for the world).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RetrievalTrainConfig {
    #[serde(flatten)]
    pub optim: Optim,
    pub max_seq_length: usize,
    pub max_img_seq_length: usize,
    pub use_tags: bool,
    pub att_mask: AttMask,
    /// Probability that a negative is "same-shape" instead of random: a caption with the same
    /// number of words as the positive (from another image), or an image with the same number
    /// of detections. 0 is the reference (random negatives only). Random negatives can be told
    /// apart by length and scene complexity alone; same-shape ones only by what they name.
    #[serde(default)]
    pub hard_negative_prob: f64,
}

impl Default for RetrievalTrainConfig {
    fn default() -> Self {
        RetrievalTrainConfig {
            optim: Optim::default(),
            max_seq_length: 70,
            max_img_seq_length: 50,
            use_tags: true,
            att_mask: AttMask::CLR,
            hard_negative_prob: 0.0,
        }
    }
}

fn encode(
    tok: &BertTokenizer,
    set: &RetrievalSet,
    img: usize,
    caption: &str,
    cfg: &RetrievalTrainConfig,
) -> Result<Encoded> {
    let key = &set.images[img];
    let r = &set.features[key];
    let tags = if cfg.use_tags {
        Some(set.tags[key].as_str()).filter(|t| !t.is_empty())
    } else {
        None
    };
    let e = Layout {
        max_seq_length: cfg.max_seq_length,
        max_img_seq_length: cfg.max_img_seq_length,
        truncation: Truncation::TextFirst,
    }
    .encode(tok, caption, tags, &r.data, r.dim)?;
    Ok(with_att_mask(e, cfg.att_mask))
}

/// A trained (or loaded) retrieval model.
pub struct Retriever {
    pub model: ImageBertForSequenceClassification,
    pub params: crate::nn::Params,
    pub config: OscarConfig,
}

/// Fine-tunes from `init` (a pre-training or BERT checkpoint; the classifier starts fresh) or
/// from scratch with `fresh_config`, on the one trainer (`files`: checkpoints, metrics,
/// resume). `on_step(step, loss, accuracy)`.
pub fn train(
    set: &RetrievalSet,
    tok: &BertTokenizer,
    init: Option<&Path>,
    fresh_config: &OscarConfig,
    cfg: &RetrievalTrainConfig,
    files: &RunFiles,
    on_step: impl FnMut(u64, f64, f64),
) -> Result<Retriever> {
    let loaded = start::<ImageBertForSequenceClassification>(
        files.resume.as_deref().or(init),
        fresh_config,
        &cfg.optim,
        &files.device,
        |c| {
            c.num_labels = 2;
            c.loss_type = LossType::Sfmx;
            c.classifier = crate::config::ClassifierKind::Linear;
        },
    )?;
    if set.images.len() < 2 {
        return Err(Error::Invalid(
            "retrieval training needs at least two images".into(),
        ));
    }
    if !(0.0..=1.0).contains(&cfg.hard_negative_prob) {
        return Err(Error::Invalid(format!(
            "hard_negative_prob {} is not a probability",
            cfg.hard_negative_prob
        )));
    }
    let model = Retriever {
        model: loaded.model,
        params: loaded.params,
        config: loaded.config,
    };
    let mut task = RetrievalTask {
        set,
        tok,
        cfg,
        shapes: NegativeShapes::new(set),
        model,
        vocab: files.vocab.clone(),
    };
    run_task(&mut task, &cfg.optim, files, "accuracy", on_step)?;
    Ok(task.model)
}

/// Binary image–text matching as a task of the one trainer.
struct RetrievalTask<'a> {
    set: &'a RetrievalSet,
    tok: &'a BertTokenizer,
    cfg: &'a RetrievalTrainConfig,
    shapes: NegativeShapes,
    model: Retriever,
    vocab: Option<std::path::PathBuf>,
}

impl TrainTask for RetrievalTask<'_> {
    fn what(&self) -> &str {
        "retrieval"
    }

    fn params(&self) -> &crate::nn::Params {
        &self.model.params
    }

    fn examples_per_step(&self) -> u64 {
        self.cfg.optim.batch_size as u64
    }

    /// Positives drawn with replacement, each with one negative. The step's draws come from a
    /// generator of its own seeded by (seed, step) as before the one trainer, so retrieval runs
    /// repeat the figures measured then; it is as resumable as the trainer's.
    fn loss(
        &mut self,
        k: u64,
        _examples_seen: u64,
        _rng: &mut StdRng,
        part: Replica<'_>,
    ) -> Result<StepLoss> {
        let (set, tok, cfg) = (self.set, self.tok, self.cfg);
        let o = &cfg.optim;
        let n_img = set.images.len();
        let mut rng = StdRng::seed_from_u64(o.seed.wrapping_mul(31).wrapping_add(k));
        let mut items = Vec::with_capacity(2 * o.batch_size);
        let mut labels = Vec::with_capacity(2 * o.batch_size);
        for _ in 0..o.batch_size {
            let (img, cap) = &set.captions[rng.random_range(0..set.captions.len())];
            items.push(encode(tok, set, *img, cap, cfg)?);
            labels.push(1i64);
            // The negative: a wrong caption with this image, or this caption with a wrong image.
            let mut other = rng.random_range(0..n_img - 1);
            if other >= *img {
                other += 1;
            }
            let hard = cfg.hard_negative_prob > 0.0 && rng.random_bool(cfg.hard_negative_prob);
            if rng.random_bool(0.5) {
                let c = match self.shapes.caption_like(set, cap, *img, hard, &mut rng) {
                    Some(c) => &set.captions[c].1,
                    None => {
                        let wrong: Vec<&(usize, String)> =
                            set.captions.iter().filter(|(i, _)| *i == other).collect();
                        &wrong[rng.random_range(0..wrong.len())].1
                    }
                };
                items.push(encode(tok, set, *img, c, cfg)?);
            } else {
                let other = self
                    .shapes
                    .image_like(set, *img, hard, &mut rng)
                    .unwrap_or(other);
                items.push(encode(tok, set, other, cap, cfg)?);
            }
            labels.push(0);
        }
        let dim = set.features.values().next().map(|r| r.dim).unwrap_or(1);
        let n = items.len();
        let rows = part.rows(n);
        let x = collate_rows(&items, rows.clone(), dim, &self.model.params.device())?;
        let logits = self.model.model.forward(&x, &part.ctx(rng.random(), n))?;
        let labels = &labels[rows];
        let loss = self.model.model.loss(&logits, ClassLabels::Index(labels))?;
        let loss = part.share(Some(loss), labels.len(), n, &logits)?;
        let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
        let acc = pred
            .iter()
            .zip(labels)
            .filter(|(p, l)| **p as i64 == **l)
            .count() as f64
            / n as f64;
        Ok(StepLoss {
            loss,
            metrics: Metrics::from([("accuracy".to_string(), acc)]),
        })
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.model
            .save_with_settings(dir, self.vocab.as_deref(), self.cfg)
    }
}

/// Captions grouped by word count and images by number of detections, for same-shape negatives.
struct NegativeShapes {
    captions_by_words: HashMap<usize, Vec<usize>>,
    images_by_tags: HashMap<usize, Vec<usize>>,
}

impl NegativeShapes {
    fn new(set: &RetrievalSet) -> Self {
        let mut captions_by_words: HashMap<usize, Vec<usize>> = HashMap::new();
        for (c, (_, text)) in set.captions.iter().enumerate() {
            captions_by_words
                .entry(text.split_whitespace().count())
                .or_default()
                .push(c);
        }
        let mut images_by_tags: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, key) in set.images.iter().enumerate() {
            images_by_tags
                .entry(Self::tag_count(set, key))
                .or_default()
                .push(i);
        }
        NegativeShapes {
            captions_by_words,
            images_by_tags,
        }
    }

    fn tag_count(set: &RetrievalSet, key: &str) -> usize {
        set.tags
            .get(key)
            .map_or(0, |t| t.split_whitespace().count())
    }

    /// With `hard`, a caption of another image with as many words as `cap` (None when there is
    /// none, or without `hard`: the caller draws a random one).
    fn caption_like(
        &self,
        set: &RetrievalSet,
        cap: &str,
        img: usize,
        hard: bool,
        rng: &mut StdRng,
    ) -> Option<usize> {
        let pool = self
            .captions_by_words
            .get(&cap.split_whitespace().count())
            .filter(|_| hard)?;
        // A few draws find another image's caption unless nearly all of the group are this image's.
        (0..8)
            .map(|_| pool[rng.random_range(0..pool.len())])
            .find(|&c| set.captions[c].0 != img)
    }

    /// With `hard`, another image with as many detections as `img`.
    fn image_like(
        &self,
        set: &RetrievalSet,
        img: usize,
        hard: bool,
        rng: &mut StdRng,
    ) -> Option<usize> {
        let pool = self
            .images_by_tags
            .get(&Self::tag_count(set, &set.images[img]))
            .filter(|_| hard)?;
        (0..8)
            .map(|_| pool[rng.random_range(0..pool.len())])
            .find(|&i| i != img)
    }
}

/// The input settings saved next to a retrieval checkpoint (`retrieval.json`), or the defaults.
pub fn saved_settings(dir: &Path) -> Result<RetrievalTrainConfig> {
    super::finetune::saved_settings(dir, "retrieval.json")
}

impl Retriever {
    /// Loads a model saved by `save` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_at(dir, device, crate::nn::int8::Precision::F32)
    }

    /// [`Self::load`], with the `Linear` layers at `precision` (int8: inference only).
    pub fn load_at(
        dir: &Path,
        device: &Device,
        precision: crate::nn::int8::Precision,
    ) -> Result<Self> {
        let l = load_model_at::<ImageBertForSequenceClassification>(
            read_checkpoint(dir)?,
            Fresh::Nothing,
            device,
            precision,
        )?;
        Ok(Retriever {
            model: l.model,
            params: l.params,
            config: l.config,
        })
    }

    pub fn save(&self, dir: &Path, vocab: Option<&Path>) -> Result<()> {
        save_pretrained(dir, &self.params, &self.config, vocab)
    }

    /// The model and the input settings it was trained with (`retrieval.json`): a directory
    /// that evaluation, search and [`crate::infer::Matching`] lay inputs out from the same way.
    pub fn save_with_settings(
        &self,
        dir: &Path,
        vocab: Option<&Path>,
        cfg: &RetrievalTrainConfig,
    ) -> Result<()> {
        self.save(dir, vocab)?;
        let body = serde_json::to_string_pretty(cfg).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::checkpoint::write_atomic(&dir.join("retrieval.json"), body.as_bytes())
    }

    /// Match probabilities `softmax(logits)[1]` of (image, caption) pairs, in batches.
    pub fn score_pairs(
        &self,
        tok: &BertTokenizer,
        set: &RetrievalSet,
        pairs: &[(usize, usize)],
        cfg: &RetrievalTrainConfig,
        batch: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<f32>> {
        let _no_grad = crate::nn::NoGrad::new();
        let dim = set.features.values().next().map(|r| r.dim).unwrap_or(1);
        // Pairs of similar length share a batch (dynamic padding then pads little); the order of
        // the returned scores is that of `pairs`. Length estimate: ~4 characters per word piece.
        let est = |&(i, c): &(usize, usize)| {
            let key = &set.images[i];
            (set.captions[c].1.len() + set.tags.get(key).map_or(0, |t| t.len())) / 4
                + set.features.get(key).map_or(0, |r| r.num_boxes)
        };
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_by_key(|&k| est(&pairs[k]));
        let mut out = vec![0f32; pairs.len()];
        for chunk in order.chunks(batch.max(1)) {
            let items = chunk
                .iter()
                .map(|&k| encode(tok, set, pairs[k].0, &set.captions[pairs[k].1].1, cfg))
                .collect::<Result<Vec<_>>>()?;
            let x = collate_dynamic(&items, dim, &self.params.device())?;
            let p = ops::softmax(&self.model.forward(&x, &Ctx::eval())?)?;
            for (&k, v) in chunk
                .iter()
                .zip(p.narrow(1, 1, 1)?.flatten_all()?.to_vec1::<f32>()?)
            {
                out[k] = v;
            }
            progress(chunk.len());
        }
        Ok(out)
    }
}

/// Scores every image × caption pair, resumable: with `partial`, progress is saved there (every
/// `save_every` batches, atomically) and an interrupted run continues where it stopped.
#[allow(clippy::too_many_arguments)]
pub fn score_all(
    r: &Retriever,
    tok: &BertTokenizer,
    set: &RetrievalSet,
    cfg: &RetrievalTrainConfig,
    batch: usize,
    partial: Option<&Path>,
    save_every: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<f32>> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Partial {
        images: usize,
        captions: usize,
        scores: Vec<f32>,
    }
    let (ni, nc) = (set.images.len(), set.captions.len());
    let mut scores: Vec<f32> = match partial.filter(|p| p.exists()) {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            let part: Partial = serde_json::from_str(&text)
                .map_err(|e| Error::bad_file(p, format!("not a partial score file: {e}")))?;
            if part.images != ni || part.captions != nc || part.scores.len() > ni * nc {
                return Err(Error::bad_file(p, format!("holds scores for {} × {} pairs, this evaluation is {ni} × {nc}: delete it to start over", part.images, part.captions)));
            }
            part.scores
        }
        None => Vec::with_capacity(ni * nc),
    };
    let all: Vec<(usize, usize)> = (0..ni).flat_map(|i| (0..nc).map(move |c| (i, c))).collect();
    let save = |scores: &Vec<f32>| -> Result<()> {
        if let Some(p) = partial {
            let body = serde_json::to_string(&Partial {
                images: ni,
                captions: nc,
                scores: scores.clone(),
            })
            .map_err(|e| Error::Invalid(e.to_string()))?;
            crate::checkpoint::write_atomic(p, body.as_bytes())?;
        }
        Ok(())
    };
    for (k, chunk) in all[scores.len()..]
        .chunks(batch.max(1) * save_every.max(1))
        .enumerate()
    {
        let s = r.score_pairs(tok, set, chunk, cfg, batch, |_| {})?;
        scores.extend(s);
        progress(scores.len(), all.len());
        let _ = k;
        save(&scores)?;
    }
    Ok(scores)
}

/// One shard of the full protocol: the images at this shard's positions (round-robin over the
/// set's image list), each scored against every caption, saved to the part file at `path` after
/// every block of images, so a rerun resumes. The part's context holds each caption's image
/// and a digest of the captions, which [`merge_scores`] needs and checks, and `job` (what else
/// every part must share, such as the checkpoint).
#[allow(clippy::too_many_arguments)]
pub fn score_shard(
    r: &Retriever,
    tok: &BertTokenizer,
    set: &RetrievalSet,
    cfg: &RetrievalTrainConfig,
    batch: usize,
    shard: crate::data::shard::Shard,
    path: &Path,
    job: serde_json::Value,
    mut progress: impl FnMut(usize, usize),
) -> Result<crate::data::shard::Part<Vec<f32>>> {
    use crate::data::shard::{digest, Part};
    let nc = set.captions.len();
    let texts: Vec<&str> = set.captions.iter().map(|(_, c)| c.as_str()).collect();
    let context = serde_json::json!({
        "caption_image": set.captions.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        "captions_digest": digest(&texts),
        "job": job,
    });
    let mut part = Part::resume(path, "retrieval-scores", shard, &set.images, context)?;
    let total = part.todo(shard).len() + part.results.len();
    let mut done = part.results.len();
    let rows_per_save = (batch.max(1) * 20).div_ceil(nc.max(1)).max(1);
    part.fill(
        path,
        shard,
        rows_per_save,
        |rows| -> Result<Vec<Vec<f32>>> {
            let pairs: Vec<(usize, usize)> = rows
                .iter()
                .flat_map(|&i| (0..nc).map(move |c| (i, c)))
                .collect();
            let scores = r.score_pairs(tok, set, &pairs, cfg, batch, |_| {})?;
            done += rows.len();
            progress(done, total);
            Ok(scores.chunks(nc.max(1)).map(<[f32]>::to_vec).collect())
        },
    )?;
    Ok(part)
}

/// The full protocol from the parts of a sharded run ([`score_shard`]): the images × captions
/// score matrix, each caption's image, and the recall.
pub struct MergedScores {
    pub scores: Vec<Vec<f32>>,
    pub caption_image: Vec<usize>,
    pub recall: oscar_eval::retrieval::RecallScores,
}

/// Joins [`score_shard`]'s part files (every shard of one run) and computes the recall.
pub fn merge_scores(parts: &[PathBuf]) -> Result<MergedScores> {
    let m = crate::data::shard::merge::<Vec<f32>>(parts)?;
    let caption_image: Vec<usize> = serde_json::from_value(m.context["caption_image"].clone())
        .map_err(|e| {
            Error::Invalid(format!("the parts' context has no caption_image list: {e}"))
        })?;
    if let Some(row) = m.results.iter().find(|r| r.len() != caption_image.len()) {
        return Err(Error::Invalid(format!(
            "a score row has {} values for {} captions",
            row.len(),
            caption_image.len()
        )));
    }
    let recall = oscar_eval::retrieval::recall_at_k(&m.results, &caption_image)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(MergedScores {
        scores: m.results,
        caption_image,
        recall,
    })
}

/// The cheap first stage: how many of an image's distinct tag words occur in a caption (as
/// written, or singular: "dogs" and "boxes" match "dog" and "box").
pub fn tag_overlap(tags: &str, caption: &str) -> f32 {
    let cap: std::collections::HashSet<String> = caption
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    let singular = |w: &str| {
        w.strip_suffix("es")
            .filter(|s| s.ends_with('s') || s.ends_with("ch"))
            .or_else(|| w.strip_suffix('s'))
            .unwrap_or(w)
            .to_string()
    };
    let cap_s: std::collections::HashSet<String> = cap.iter().map(|w| singular(w)).collect();
    tags.split_whitespace()
        .collect::<std::collections::HashSet<_>>()
        .iter()
        .filter(|t| cap.contains(**t) || cap_s.contains(**t))
        .count() as f32
}

/// [`tag_overlap`] of image `img` and caption `caption` of a set.
fn set_overlap(set: &RetrievalSet, img: usize, caption: usize) -> f32 {
    tag_overlap(&set.tags[&set.images[img]], &set.captions[caption].1)
}

/// Full-protocol and two-stage results.
#[derive(Debug, serde::Serialize)]
pub struct RetrievalEval {
    pub images: usize,
    pub captions: usize,
    pub full: Option<FullProtocol>,
    pub two_stage: Option<TwoStage>,
}

/// The reference protocol: every image × every caption scored by the cross-encoder.
#[derive(Debug, serde::Serialize)]
pub struct FullProtocol {
    pub recall: oscar_eval::retrieval::RecallScores,
    pub forwards: usize,
    pub seconds: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct TwoStage {
    /// `tags` or `learned`.
    pub first_stage: &'static str,
    pub k: usize,
    pub recall: oscar_eval::retrieval::RecallScores,
    /// Cross-encoder forwards of (image, caption) pairs.
    pub forwards: usize,
    /// Single-modality passes the learned first stage spent embedding both sides (0 for tags).
    pub single_passes: usize,
    pub seconds: f64,
    pub first_stage_seconds: f64,
    pub first_stage_only: oscar_eval::retrieval::RecallScores,
}

/// What an evaluation runs: the full protocol, a two-stage search, or both.
pub struct EvalPlan<'a> {
    /// Pairs per cross-encoder batch.
    pub batch: usize,
    /// Score every pair (the reference protocol).
    pub full: bool,
    /// The two-stage search: `k` candidates per image and per caption from this first stage.
    pub two_stage: Option<(usize, super::first_stage::FirstStageKind<'a>)>,
    /// Where the full protocol's partial scores are kept, so an interrupted run continues.
    pub partial: Option<&'a Path>,
}

/// The full protocol (every image × every caption) and/or the two-stage search: the first
/// stage keeps each image's top-k captions and each caption's top-k images; only those pairs
/// are scored by the model, the rest rank below them by first-stage score.
pub fn evaluate(
    r: &Retriever,
    tok: &BertTokenizer,
    set: &RetrievalSet,
    cfg: &RetrievalTrainConfig,
    plan: &EvalPlan,
    progress: impl FnMut(usize, usize),
) -> Result<RetrievalEval> {
    if !plan.full && plan.two_stage.is_none() {
        return Err(Error::Invalid(
            "nothing to evaluate: neither the full protocol nor a two-stage search".into(),
        ));
    }
    let (ni, nc) = (set.images.len(), set.captions.len());
    let cap_img: Vec<usize> = set.captions.iter().map(|(i, _)| *i).collect();
    let full = match plan.full {
        false => None,
        true => {
            let t = std::time::Instant::now();
            let flat = score_all(r, tok, set, cfg, plan.batch, plan.partial, 20, progress)?;
            let seconds = t.elapsed().as_secs_f64();
            let matrix: Vec<Vec<f32>> = flat.chunks(nc).map(|c| c.to_vec()).collect();
            Some(FullProtocol {
                recall: oscar_eval::retrieval::recall_at_k(&matrix, &cap_img)
                    .map_err(|e| Error::Invalid(e.to_string()))?,
                forwards: ni * nc,
                seconds,
            })
        }
    };
    let two_stage = match plan.two_stage {
        None => None,
        Some((k, first)) => Some(two_stage(r, tok, set, cfg, plan.batch, k, first)?),
    };
    Ok(RetrievalEval {
        images: ni,
        captions: nc,
        full,
        two_stage,
    })
}

/// The two-stage search of [`evaluate`].
fn two_stage(
    r: &Retriever,
    tok: &BertTokenizer,
    set: &RetrievalSet,
    cfg: &RetrievalTrainConfig,
    batch: usize,
    k: usize,
    kind: super::first_stage::FirstStageKind,
) -> Result<TwoStage> {
    use super::first_stage::FirstStageKind;
    let (ni, nc) = (set.images.len(), set.captions.len());
    let cap_img: Vec<usize> = set.captions.iter().map(|(i, _)| *i).collect();
    let t = std::time::Instant::now();
    let (first, single_passes) = match kind {
        // Ties (equal overlap) by caption order.
        FirstStageKind::Tags => (
            (0..ni)
                .map(|i| {
                    (0..nc)
                        .map(|c| set_overlap(set, i, c) + 1e-3 * (c as f32 / nc as f32))
                        .collect()
                })
                .collect::<Vec<Vec<f32>>>(),
            0,
        ),
        FirstStageKind::Learned(fs) => (fs.similarities(r, tok, set, cfg)?, ni + nc),
    };
    let first_stage_seconds = t.elapsed().as_secs_f64();
    let first_stage_only = oscar_eval::retrieval::recall_at_k(&first, &cap_img)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let pairs = shortlist_pairs(&first, k);
    let scores = r.score_pairs(tok, set, &pairs, cfg, batch, |_| {})?;
    // Re-ranked pairs score in [1, 2]; the others keep their first-stage order in [0, 1).
    let (lo, hi) = first
        .iter()
        .flatten()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), s| {
            (a.min(*s), b.max(*s))
        });
    let span = (hi - lo).max(f32::MIN_POSITIVE) * 1.001;
    let mut m: Vec<Vec<f32>> = first
        .iter()
        .map(|row| row.iter().map(|s| (s - lo) / span).collect())
        .collect();
    for ((i, c), s) in pairs.iter().zip(&scores) {
        m[*i][*c] = 1.0 + s;
    }
    let recall = oscar_eval::retrieval::recall_at_k(&m, &cap_img)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(TwoStage {
        first_stage: kind.name(),
        k,
        recall,
        forwards: pairs.len(),
        single_passes,
        seconds: t.elapsed().as_secs_f64(),
        first_stage_seconds,
        first_stage_only,
    })
}

/// The pairs a two-stage search scores: each image's top-`k` captions and each caption's
/// top-`k` images by first-stage score (ties by index), each pair once, in (image, caption)
/// order.
pub fn shortlist_pairs(first: &[Vec<f32>], k: usize) -> Vec<(usize, usize)> {
    let (ni, nc) = (first.len(), first.first().map_or(0, Vec::len));
    let mut keep: std::collections::BTreeSet<(usize, usize)> = Default::default();
    for (i, row) in first.iter().enumerate() {
        let mut idx: Vec<usize> = (0..nc).collect();
        idx.sort_by(|a, b| row[*b].total_cmp(&row[*a]).then(a.cmp(b)));
        keep.extend(idx.into_iter().take(k).map(|c| (i, c)));
    }
    #[allow(clippy::needless_range_loop)] // column c of every row
    for c in 0..nc {
        let mut idx: Vec<usize> = (0..ni).collect();
        idx.sort_by(|a, b| first[*b][c].total_cmp(&first[*a][c]).then(a.cmp(b)));
        keep.extend(idx.into_iter().take(k).map(|i| (i, c)));
    }
    keep.into_iter().collect()
}

/// Paths of a world-style dataset directory for one split.
pub fn world_paths(dir: &Path, split: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("retrieval/{split}_captions.json")),
        dir.join("features/features.tsv"),
        dir.join("labels/predictions.tsv"),
    )
}

/// A compact record of the recall, for logs.
pub fn summary(r: &oscar_eval::retrieval::RecallScores) -> BTreeMap<&'static str, f64> {
    [
        ("i2t_r1", r.i2t[0]),
        ("i2t_r5", r.i2t[1]),
        ("i2t_r10", r.i2t[2]),
        ("t2i_r1", r.t2i[0]),
        ("t2i_r5", r.t2i[1]),
        ("t2i_r10", r.t2i[2]),
    ]
    .into_iter()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortlist_is_each_rows_and_each_columns_top_k_once() {
        // 3 images × 4 captions. Row tops (k = 1): (0,3), (1,0), (2,0) — row 2 ties 0 and 2,
        // the lower index wins. Column tops: (1,0), (2,1), (0,2), (0,3).
        let first = vec![
            vec![0.1, 0.2, 0.9, 1.0],
            vec![0.8, 0.1, 0.0, 0.3],
            vec![0.5, 0.4, 0.5, 0.2],
        ];
        assert_eq!(
            shortlist_pairs(&first, 1),
            vec![(0, 2), (0, 3), (1, 0), (2, 0), (2, 1)]
        );
        assert_eq!(shortlist_pairs(&first, 4).len(), 12, "k ≥ n: every pair");
        assert!(shortlist_pairs(&first, 0).is_empty());
    }

    #[test]
    fn same_shape_negatives_match_word_and_detection_counts_of_another_image() {
        let images: Vec<String> = (0..4).map(|i| format!("img{i}")).collect();
        let tags: HashMap<String, String> = [
            ("img0", "dog"),
            ("img1", "cat"),
            ("img2", "dog cat bus"),
            ("img3", "car"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let captions = vec![
            (0, "a dog".to_string()),
            (0, "a brown dog on grass".to_string()),
            (1, "a cat".to_string()),
            (2, "a dog a cat and a bus".to_string()),
            (3, "one red car on grass".to_string()),
        ];
        let set = RetrievalSet {
            images,
            captions,
            features: HashMap::new(),
            tags,
        };
        let shapes = NegativeShapes::new(&set);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20 {
            assert_eq!(
                shapes.caption_like(&set, "a dog", 0, true, &mut rng),
                Some(2),
                "two words, another image"
            );
            assert_eq!(
                shapes.caption_like(&set, "a brown dog on grass", 0, true, &mut rng),
                Some(4)
            );
            let i = shapes
                .image_like(&set, 0, true, &mut rng)
                .expect("one-detection images exist");
            assert!(i == 1 || i == 3, "{i}");
        }
        assert_eq!(
            shapes.caption_like(&set, "a dog a cat and a bus", 2, true, &mut rng),
            None,
            "no other six-word caption"
        );
        assert_eq!(
            shapes.image_like(&set, 2, true, &mut rng),
            None,
            "no other three-detection image"
        );
        assert_eq!(
            shapes.caption_like(&set, "a dog", 0, false, &mut rng),
            None,
            "random negatives unless hard"
        );
    }
}
