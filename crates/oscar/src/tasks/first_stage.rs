//! The learned first stage of two-stage retrieval: image and caption embeddings whose dot
//! product shortlists the pairs the cross-encoder then re-ranks.
//!
//! Oscar itself has no first stage (`run_retrieval.py` scores every pair); this is the dual
//! encoder of CLIP/ALIGN placed in front of it, built from the retrieval model itself so that no
//! second network has to be trained or shipped. Each side is a single-modality pass of the
//! frozen retrieval checkpoint — an image as `[CLS] [SEP] tags [SEP] regions`, a caption as
//! `[CLS] caption [SEP]` — pooled three ways over its real positions: the mean of the last layer,
//! BERT's pooled `[CLS]`, and the mean of the embedding layer (a bag of the word pieces and
//! region embeddings, which on the world lifted the first stage's held-out R@1 from about 32 to
//! 57 % both ways: a caption-only pass of a cross-encoder was never trained to summarise the
//! caption in its last layer). A light projection per side (LayerNorm, an optional GELU hidden
//! layer, a linear map, L2 normalisation) is then fitted with CLIP's symmetric in-batch
//! contrastive loss on the training split's (image, caption) pairs. The pooled features are
//! computed once, so fitting costs one pass per training image and caption plus a few seconds
//! of small products; the cross-encoder's weights and scores are untouched.
//!
//! Files, next to the retrieval checkpoint: `first_stage.safetensors` (keys `image.*`,
//! `text.*`) and `first_stage.json` (the settings and the fit's report).

use super::retrieval::{RetrievalSet, RetrievalTrainConfig, Retriever};
use crate::data::tensorize::{collate_dynamic, Encoded, Layout, Truncation};
use crate::error::{Error, Result};
use crate::nn::{ops, Ctx, LayerNorm, Linear, ParamBuilder, Params};
use crate::tokenizer::BertTokenizer;
use crate::train::optim::{AdamW, AdamWConfig};
use candle_core::{DType, Device, Tensor, D};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// Weights and settings file names inside a retrieval checkpoint directory.
pub const WEIGHTS: &str = "first_stage.safetensors";
pub const SETTINGS: &str = "first_stage.json";

/// How the projections are shaped and fitted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FirstStageConfig {
    /// Width of the shared embedding space.
    pub dim: usize,
    /// Width of the GELU hidden layer of each projection; 0: a single linear map.
    pub hidden: usize,
    pub steps: u64,
    /// Images per in-batch contrastive step (each with one of its captions).
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// CLIP's logit temperature (fixed here; CLIP learns it and settles near 0.01–0.07).
    pub temperature: f64,
    pub seed: u64,
}

impl Default for FirstStageConfig {
    fn default() -> Self {
        FirstStageConfig {
            dim: 128,
            hidden: 512,
            steps: 1500,
            batch_size: 128,
            lr: 2e-3,
            weight_decay: 0.01,
            temperature: 0.05,
            seed: 0,
        }
    }
}

/// What fitting did: the in-batch loss and accuracy at the end, and the first stage's own
/// recall on a held-out split when one was given.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FitReport {
    pub train_images: usize,
    pub train_captions: usize,
    /// Single-modality encoder passes spent on features (one per image and per caption).
    pub single_passes: usize,
    pub feature_seconds: f64,
    pub fit_seconds: f64,
    /// Mean symmetric contrastive loss and in-batch top-1 accuracy over the last 50 steps.
    pub final_loss: f64,
    pub final_batch_accuracy: f64,
    /// Recall@1/5/10 (×100) of the first stage alone on `held_out_split`.
    pub held_out_split: Option<String>,
    pub held_out_recall: Option<std::collections::BTreeMap<String, f64>>,
}

/// What `first_stage.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    pub config: FirstStageConfig,
    /// Width of the pooled single-modality features (3 × the model's hidden size).
    pub feature_dim: usize,
    pub report: Option<FitReport>,
}

/// One side's projection: `normalize(out(gelu(hidden(norm(x)))))`.
struct Projection {
    norm: LayerNorm,
    hidden: Option<Linear>,
    out: Linear,
}

impl Projection {
    fn new(pb: &ParamBuilder, feature_dim: usize, cfg: &FirstStageConfig) -> Result<Self> {
        let norm = LayerNorm::new(&pb.pp("norm"), feature_dim, 1e-5)?;
        let (hidden, width) = match cfg.hidden {
            0 => (None, feature_dim),
            h => (
                Some(Linear::new(
                    &pb.pp("hidden"),
                    feature_dim,
                    h,
                    (1.0 / feature_dim as f64).sqrt(),
                )?),
                h,
            ),
        };
        let out = Linear::new(&pb.pp("out"), width, cfg.dim, (1.0 / width as f64).sqrt())?;
        Ok(Projection { norm, hidden, out })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.norm.forward(x)?;
        if let Some(l) = &self.hidden {
            h = ops::activation(&l.forward(&h)?, "gelu")?;
        }
        let y = self.out.forward(&h)?;
        let norm = y
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .affine(1.0, 1e-12)?;
        Ok(y.broadcast_div(&norm)?)
    }
}

/// The fitted first stage: one projection per modality over the pooled features.
pub struct FirstStage {
    image: Projection,
    text: Projection,
    pub params: Params,
    pub saved: Saved,
}

impl FirstStage {
    fn build(
        pb: ParamBuilder,
        feature_dim: usize,
        cfg: &FirstStageConfig,
    ) -> Result<(Self, crate::nn::LoadReport)> {
        let image = Projection::new(&pb.pp("image"), feature_dim, cfg)?;
        let text = Projection::new(&pb.pp("text"), feature_dim, cfg)?;
        let (params, report) = pb.finish();
        let saved = Saved {
            config: cfg.clone(),
            feature_dim,
            report: None,
        };
        Ok((
            FirstStage {
                image,
                text,
                params,
                saved,
            },
            report,
        ))
    }

    /// Whether `dir` (a retrieval checkpoint) holds a fitted first stage.
    pub fn exists(dir: &Path) -> bool {
        dir.join(WEIGHTS).is_file() && dir.join(SETTINGS).is_file()
    }

    /// Reads the first stage fitted for the retrieval checkpoint in `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let (w, s) = (dir.join(WEIGHTS), dir.join(SETTINGS));
        if !Self::exists(dir) {
            return Err(Error::Invalid(format!(
                "{} holds no learned first stage ({WEIGHTS} and {SETTINGS}): fit one with \
                 `oscar train first-stage --checkpoint {} --data DIR`",
                dir.display(),
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&s).map_err(|e| Error::io(&s, e))?;
        let saved: Saved = serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(&s, format!("not first-stage settings: {e}")))?;
        let tensors = candle_core::safetensors::load(&w, &Device::Cpu)
            .map_err(|e| Error::bad_file(&w, format!("not a safetensors file: {e}")))?;
        let pb =
            ParamBuilder::from_tensors(tensors, crate::nn::params::FreshPolicy::None, 0, device);
        let (mut fs, report) = Self::build(pb, saved.feature_dim, &saved.config)?;
        if !report.is_ok() || !report.unexpected.is_empty() {
            return Err(Error::bad_file(
                &w,
                format!(
                    "does not match {SETTINGS}: {}{}",
                    report.problems(),
                    if report.unexpected.is_empty() {
                        String::new()
                    } else {
                        format!("unexpected keys: {}", report.unexpected.join(", "))
                    }
                ),
            ));
        }
        fs.saved = saved;
        Ok(fs)
    }

    /// Writes `first_stage.safetensors` and `first_stage.json` into `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tensors = self.params.tensors();
        let bytes = safetensors::tensor::serialize(
            tensors.iter().map(|(k, v)| (k.as_str(), v)),
            Some([("format".to_string(), "pt".to_string())].into()),
        )
        .map_err(|e| Error::Invalid(format!("cannot serialize the first stage: {e}")))?;
        crate::checkpoint::write_atomic(&dir.join(WEIGHTS), &bytes)?;
        let body =
            serde_json::to_string_pretty(&self.saved).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::checkpoint::write_atomic(&dir.join(SETTINGS), body.as_bytes())
    }

    /// `[n, dim]` unit-length image embeddings from pooled image features.
    pub fn embed_images(&self, features: &Tensor) -> Result<Tensor> {
        self.image.forward(features)
    }

    /// `[n, dim]` unit-length caption embeddings from pooled caption features.
    pub fn embed_texts(&self, features: &Tensor) -> Result<Tensor> {
        self.text.forward(features)
    }

    /// Image × caption cosine similarities of a set, each side embedded from one
    /// single-modality pass per item (`ni + nc` passes in all).
    pub fn similarities(
        &self,
        r: &Retriever,
        tok: &BertTokenizer,
        set: &RetrievalSet,
        cfg: &RetrievalTrainConfig,
    ) -> Result<Vec<Vec<f32>>> {
        let _no_grad = crate::nn::NoGrad::new();
        let images = pooled_images(r, tok, set, cfg, |_| {})?;
        let captions: Vec<&str> = set.captions.iter().map(|(_, c)| c.as_str()).collect();
        let texts = pooled_texts(r, tok, &captions, cfg, |_| {})?;
        let (i, t) = (self.embed_images(&images)?, self.embed_texts(&texts)?);
        Ok(i.matmul(&t.t()?)?.to_vec2::<f32>()?)
    }

    /// Symmetric InfoNCE (CLIP): cross-entropy of each image over the batch's captions and of
    /// each caption over the batch's images, the matching pair on the diagonal; with the
    /// in-batch top-1 accuracy of both directions.
    fn contrastive_loss(&self, images: &Tensor, texts: &Tensor) -> Result<(Tensor, f64)> {
        let (i, t) = (self.embed_images(images)?, self.embed_texts(texts)?);
        let logits = i
            .matmul(&t.t()?)?
            .affine(1.0 / self.saved.config.temperature, 0.0)?;
        let n = logits.dim(0)?;
        let diag: Vec<i64> = (0..n as i64).collect();
        let missing = || Error::Invalid("an empty contrastive batch".into());
        let l_i = ops::cross_entropy(&logits, &diag, -100)?.ok_or_else(missing)?;
        let l_t =
            ops::cross_entropy(&logits.t()?.contiguous()?, &diag, -100)?.ok_or_else(missing)?;
        let hits = |m: &Tensor| -> Result<usize> {
            let am: Vec<u32> = m.argmax(1)?.to_vec1()?;
            Ok(am
                .iter()
                .enumerate()
                .filter(|(k, a)| **a as usize == *k)
                .count())
        };
        let acc = (hits(&logits)? + hits(&logits.t()?.contiguous()?)?) as f64 / (2 * n) as f64;
        Ok(((l_i + l_t)?.affine(0.5, 0.0)?, acc))
    }
}

/// An image alone in the retrieval model's layout: `[CLS] [SEP] tags [SEP]` and its regions
/// (no tags when the model was fine-tuned without them).
fn image_alone(
    tok: &BertTokenizer,
    set: &RetrievalSet,
    cfg: &RetrievalTrainConfig,
    img: usize,
) -> Result<Encoded> {
    let key = &set.images[img];
    let r = &set.features[key];
    let tags = Some(set.tags[key].as_str()).filter(|t| cfg.use_tags && !t.is_empty());
    layout(cfg).encode(tok, "", tags, &r.data, r.dim)
}

/// A caption alone: `[CLS] caption [SEP]`, no regions.
fn text_alone(tok: &BertTokenizer, caption: &str, cfg: &RetrievalTrainConfig) -> Result<Encoded> {
    layout(cfg).encode(tok, caption, None, &[], 1)
}

fn layout(cfg: &RetrievalTrainConfig) -> Layout {
    Layout {
        max_seq_length: cfg.max_seq_length,
        max_img_seq_length: cfg.max_img_seq_length,
        truncation: Truncation::TextFirst,
    }
}

/// `[n, 3·hidden]` pooled features of laid-out single-modality items: the mean of the last
/// layer over each item's real positions, the pooled `[CLS]`, and the mean of the embedding
/// layer's outputs. Items of similar length are batched together (dynamic padding); rows come
/// back in `items`' order.
fn pooled(
    r: &Retriever,
    items: &[Encoded],
    dim: usize,
    mut progress: impl FnMut(usize),
) -> Result<Tensor> {
    const BATCH: usize = 64;
    let _no_grad = crate::nn::NoGrad::new();
    let device = r.params.device();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&k| items[k].len());
    let h = r.config.hidden_size;
    let mut out = vec![0f32; items.len() * 3 * h];
    for chunk in order.chunks(BATCH) {
        let batch: Vec<Encoded> = chunk.iter().map(|&k| items[k].clone()).collect();
        let x = collate_dynamic(&batch, dim, &device)?;
        let bert = r.model.backbone();
        let o = bert.forward(&x, &Ctx::eval())?;
        let mask = x.mask_or_ones()?.unsqueeze(2)?;
        let count = mask.sum(1)?;
        let mean = |t: &Tensor| -> Result<Tensor> {
            Ok(t.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&count)?)
        };
        let text = bert.embed_text(&x.input_ids, x.token_type_ids.as_ref(), None, &Ctx::eval())?;
        let emb = match &x.img_feats {
            Some(f) => Tensor::cat(&[text, bert.embed_regions(f, &Ctx::eval())?], 1)?,
            None => text,
        };
        let rows: Vec<Vec<f32>> =
            Tensor::cat(&[mean(&o.sequence)?, o.pooled, mean(&emb)?], 1)?.to_vec2()?;
        for (&k, row) in chunk.iter().zip(rows) {
            out[k * 3 * h..(k + 1) * 3 * h].copy_from_slice(&row);
        }
        progress(chunk.len());
    }
    Ok(Tensor::from_vec(out, (items.len(), 3 * h), &device)?)
}

/// Pooled single-modality features of every image of `set`.
pub fn pooled_images(
    r: &Retriever,
    tok: &BertTokenizer,
    set: &RetrievalSet,
    cfg: &RetrievalTrainConfig,
    progress: impl FnMut(usize),
) -> Result<Tensor> {
    let items = (0..set.images.len())
        .map(|i| image_alone(tok, set, cfg, i))
        .collect::<Result<Vec<_>>>()?;
    pooled(r, &items, r.config.img_feature_dim, progress)
}

/// Pooled single-modality features of `captions`.
pub fn pooled_texts(
    r: &Retriever,
    tok: &BertTokenizer,
    captions: &[&str],
    cfg: &RetrievalTrainConfig,
    progress: impl FnMut(usize),
) -> Result<Tensor> {
    let items = captions
        .iter()
        .map(|c| text_alone(tok, c, cfg))
        .collect::<Result<Vec<_>>>()?;
    pooled(r, &items, r.config.img_feature_dim, progress)
}

/// Where fitting reports progress: `Features(done, total)` while the frozen model encodes the
/// training split, `Step(step, loss, accuracy)` while the projections are fitted.
pub enum FitProgress {
    Features(usize, usize),
    Step(u64, f64, f64),
}

/// Fits a first stage for retriever `r` on `train` (pairs of each image with its captions);
/// with `held_out`, reports the first stage's own recall on it (`held_out.0` names the split).
pub fn fit(
    r: &Retriever,
    tok: &BertTokenizer,
    settings: &RetrievalTrainConfig,
    train: &RetrievalSet,
    held_out: Option<(&str, &RetrievalSet)>,
    cfg: &FirstStageConfig,
    mut progress: impl FnMut(FitProgress),
) -> Result<FirstStage> {
    if cfg.batch_size < 2 || cfg.dim == 0 || cfg.steps == 0 {
        return Err(Error::Invalid(format!(
            "first stage: batch_size {} (at least 2), dim {} and steps {} must be positive",
            cfg.batch_size, cfg.dim, cfg.steps
        )));
    }
    if cfg.temperature.is_nan() || cfg.temperature <= 0.0 {
        return Err(Error::Invalid(format!(
            "first stage: temperature {} must be positive",
            cfg.temperature
        )));
    }
    if train.images.len() < 2 {
        return Err(Error::Invalid(
            "first stage: the training split needs at least two images".into(),
        ));
    }
    let t0 = std::time::Instant::now();
    let (ni, nc) = (train.images.len(), train.captions.len());
    let total = ni + nc;
    let images = pooled_images(r, tok, train, settings, |n| {
        progress(FitProgress::Features(n, total))
    })?;
    let captions: Vec<&str> = train.captions.iter().map(|(_, c)| c.as_str()).collect();
    let texts = pooled_texts(r, tok, &captions, settings, |n| {
        progress(FitProgress::Features(n, total))
    })?;
    let feature_seconds = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let (mut fs, _) = FirstStage::build(
        ParamBuilder::fresh(cfg.seed, &r.params.device()),
        images.dim(1)?,
        cfg,
    )?;
    let tail = train_projections(&mut fs, &images, &texts, train, cfg, &mut progress)?;
    let mean = |f: fn(&(f64, f64)) -> f64| tail.iter().map(f).sum::<f64>() / tail.len() as f64;
    let held_out_recall = match held_out {
        Some((_, set)) => Some(first_stage_recall(&fs, r, tok, set, settings)?),
        None => None,
    };
    fs.saved.report = Some(FitReport {
        train_images: ni,
        train_captions: nc,
        single_passes: total,
        feature_seconds,
        fit_seconds: t1.elapsed().as_secs_f64(),
        final_loss: mean(|x| x.0),
        final_batch_accuracy: mean(|x| x.1),
        held_out_split: held_out.map(|(s, _)| s.to_string()),
        held_out_recall,
    });
    Ok(fs)
}

/// The contrastive fit of the projections on pooled features (`images` `[ni, f]`, `texts`
/// `[nc, f]`, rows in `train`'s order): `cfg.steps` AdamW steps with warm-up and cosine decay.
/// Returns the last 50 steps' (loss, in-batch accuracy).
fn train_projections(
    fs: &mut FirstStage,
    images: &Tensor,
    texts: &Tensor,
    train: &RetrievalSet,
    cfg: &FirstStageConfig,
    progress: &mut impl FnMut(FitProgress),
) -> Result<Vec<(f64, f64)>> {
    let (ni, device) = (train.images.len(), images.device().clone());
    let mut by_image: Vec<Vec<u32>> = vec![Vec::new(); ni];
    for (c, (i, _)) in train.captions.iter().enumerate() {
        by_image[*i].push(c as u32);
    }
    let with_captions: Vec<u32> = (0..ni as u32)
        .filter(|&i| !by_image[i as usize].is_empty())
        .collect();
    let mut opt = AdamW::new(
        &fs.params,
        AdamWConfig {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
        &[],
    );
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let b = cfg.batch_size.min(with_captions.len());
    let mut pool = Vec::new();
    let mut tail = Vec::new();
    for step in 1..=cfg.steps {
        // Distinct images per batch (a repeated image would be its own negative), drawn from a
        // reshuffled pass over the images; each with one of its captions at random.
        if pool.len() < b {
            pool = with_captions.clone();
            pool.shuffle(&mut rng);
        }
        let imgs: Vec<u32> = pool.split_off(pool.len() - b);
        let caps: Vec<u32> = imgs
            .iter()
            .map(|&i| {
                let c = &by_image[i as usize];
                c[rng.random_range(0..c.len())]
            })
            .collect();
        let xi = images.index_select(&Tensor::new(imgs.as_slice(), &device)?, 0)?;
        let xt = texts.index_select(&Tensor::new(caps.as_slice(), &device)?, 0)?;
        let (loss, acc) = fs.contrastive_loss(&xi, &xt)?;
        let grads = loss.backward()?;
        // Cosine warm-down from lr to 0 after a 5 % warm-up.
        let frac = step as f64 / cfg.steps as f64;
        let lr = if frac < 0.05 {
            cfg.lr * frac / 0.05
        } else {
            cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * (frac - 0.05) / 0.95).cos())
        };
        opt.step(&fs.params, &grads, lr, 1.0)?;
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        tail.push((l, acc));
        if tail.len() > 50 {
            tail.remove(0);
        }
        progress(FitProgress::Step(step, l, acc));
    }
    Ok(tail)
}

/// Recall@1/5/10 both ways (×100) of the first stage alone on `set`.
fn first_stage_recall(
    fs: &FirstStage,
    r: &Retriever,
    tok: &BertTokenizer,
    set: &RetrievalSet,
    settings: &RetrievalTrainConfig,
) -> Result<std::collections::BTreeMap<String, f64>> {
    let sims = fs.similarities(r, tok, set, settings)?;
    let cap_img: Vec<usize> = set.captions.iter().map(|(i, _)| *i).collect();
    let rec = oscar_eval::retrieval::recall_at_k(&sims, &cap_img)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(super::retrieval::summary(&rec)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
}

/// Which first stage shortlists the pairs of a two-stage search.
#[derive(Clone, Copy)]
pub enum FirstStageKind<'a> {
    /// Distinct tag words found in the caption ([`super::retrieval::tag_overlap`]).
    Tags,
    /// Dot products of the learned embeddings.
    Learned(&'a FirstStage),
}

impl FirstStageKind<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            FirstStageKind::Tags => "tags",
            FirstStageKind::Learned(_) => "learned",
        }
    }
}

/// The `--first-stage` choice of the command line, before a model is at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstStageChoice {
    Tags,
    Learned,
}

impl std::str::FromStr for FirstStageChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tags" => Ok(FirstStageChoice::Tags),
            "learned" => Ok(FirstStageChoice::Learned),
            _ => Err(format!(
                "`{s}` is not a first stage: `tags` (tag–word overlap) or `learned` (embeddings \
                 fitted by `oscar train first-stage`)"
            )),
        }
    }
}

/// The directory's first stage for `choice`: nothing for tags, the fitted one for learned.
pub fn load_choice(
    choice: FirstStageChoice,
    dir: &Path,
    device: &Device,
) -> Result<Option<FirstStage>> {
    match choice {
        FirstStageChoice::Tags => Ok(None),
        FirstStageChoice::Learned => FirstStage::load(dir, device).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(hidden: usize) -> FirstStage {
        let cfg = FirstStageConfig {
            dim: 6,
            hidden,
            temperature: 0.1,
            ..FirstStageConfig::default()
        };
        FirstStage::build(ParamBuilder::fresh(3, &Device::Cpu), 10, &cfg)
            .unwrap()
            .0
    }

    fn features(n: usize, seed: u64) -> Tensor {
        let mut rng = StdRng::seed_from_u64(seed);
        let v: Vec<f32> = (0..n * 10).map(|_| rng.random_range(-2.0..2.0)).collect();
        Tensor::from_vec(v, (n, 10), &Device::Cpu).unwrap()
    }

    /// The loss is CLIP's: the mean of both directions' cross-entropy with the pair on the
    /// diagonal, over unit embeddings' dot products divided by the temperature (computed here in
    /// f64 from the embeddings).
    #[test]
    fn contrastive_loss_is_clips_symmetric_cross_entropy() {
        for hidden in [0, 8] {
            let fs = stage(hidden);
            let (xi, xt) = (features(5, 1), features(5, 2));
            let (loss, acc) = fs.contrastive_loss(&xi, &xt).unwrap();
            let ei: Vec<Vec<f32>> = fs.embed_images(&xi).unwrap().to_vec2().unwrap();
            let et: Vec<Vec<f32>> = fs.embed_texts(&xt).unwrap().to_vec2().unwrap();
            for e in ei.iter().chain(&et) {
                let n: f64 = e.iter().map(|x| (*x as f64).powi(2)).sum();
                assert!((n - 1.0).abs() < 1e-5, "unit length, got {n}");
            }
            let logit = |i: usize, t: usize| {
                ei[i]
                    .iter()
                    .zip(&et[t])
                    .map(|(a, b)| (a * b) as f64)
                    .sum::<f64>()
                    / 0.1
            };
            let ce = |row: &dyn Fn(usize) -> f64, k: usize| {
                let lse = (0..5).map(row).map(f64::exp).sum::<f64>().ln();
                lse - row(k)
            };
            let (mut want, mut hits) = (0.0, 0);
            for k in 0..5 {
                want += ce(&|t| logit(k, t), k) + ce(&|i| logit(i, k), k);
                let best = |f: &dyn Fn(usize) -> f64| {
                    (0..5).max_by(|a, b| f(*a).total_cmp(&f(*b))).unwrap()
                };
                hits += (best(&|t| logit(k, t)) == k) as usize;
                hits += (best(&|i| logit(i, k)) == k) as usize;
            }
            want /= 10.0;
            let got = loss.to_scalar::<f32>().unwrap() as f64;
            assert!((got - want).abs() < 1e-4, "loss {got}, by hand {want}");
            assert_eq!(acc, hits as f64 / 10.0);
        }
    }

    #[test]
    fn every_projection_parameter_gets_a_gradient() {
        for hidden in [0, 8] {
            let fs = stage(hidden);
            let (loss, _) = fs
                .contrastive_loss(&features(4, 5), &features(4, 6))
                .unwrap();
            let grads = loss.backward().unwrap();
            assert_eq!(fs.params.entries.len(), if hidden > 0 { 12 } else { 8 });
            for (k, v) in &fs.params.entries {
                let g = grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("{k} has no gradient"));
                let n = g
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(n > 0.0, "{k}: zero gradient");
            }
        }
    }

    #[test]
    fn save_and_load_give_the_same_embeddings_and_bad_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let fs = stage(8);
        fs.save(d.path()).unwrap();
        let back = FirstStage::load(d.path(), &Device::Cpu).unwrap();
        let x = features(3, 9);
        let (a, b) = (fs.embed_texts(&x).unwrap(), back.embed_texts(&x).unwrap());
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        // Settings that do not match the weights: the weights file is named, with the key.
        let mut saved = fs.saved.clone();
        saved.config.hidden = 4;
        std::fs::write(
            d.path().join(SETTINGS),
            serde_json::to_string(&saved).unwrap(),
        )
        .unwrap();
        let e = FirstStage::load(d.path(), &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(WEIGHTS) && e.contains("image.hidden.weight"),
            "{e}"
        );
        std::fs::write(d.path().join(SETTINGS), "{").unwrap();
        let e = FirstStage::load(d.path(), &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(SETTINGS), "{e}");
        std::fs::remove_file(d.path().join(WEIGHTS)).unwrap();
        let e = FirstStage::load(d.path(), &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("oscar train first-stage"), "{e}");
        assert_eq!(
            "learned".parse::<FirstStageChoice>(),
            Ok(FirstStageChoice::Learned)
        );
        assert!("bm25"
            .parse::<FirstStageChoice>()
            .unwrap_err()
            .contains("tags"));
    }
}
