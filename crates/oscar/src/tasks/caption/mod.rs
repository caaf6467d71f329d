//! Image captioning (`oscar/run_captioning.py`, oscar-spec §3.5): seq2seq fine-tuning with the
//! masked-caption objective, decoding (greedy, sampling, beam search with a key/value cache:
//! [`decode`]), constrained beam search for novel objects ([`cbs`]), CIDEr optimisation
//! ([`scst`]), and evaluation with the COCO caption metrics.

pub mod cbs;
pub mod decode;
pub mod scst;

use super::finetune::{run_task, start, Optim, RunFiles};
use crate::checkpoint::{load_model_at, read_checkpoint, save_pretrained, write_atomic, Fresh};
use crate::config::OscarConfig;
use crate::data::caption::{CaptionExample, CaptionLayout};
use crate::data::features::{parse_detections, Detection, FeatureStore, Regions};
use crate::data::tensorize::Encoded;
use crate::data::tsv::TsvFile;
use crate::error::{Error, Result};
use crate::model::{BertForImageCaptioning, Inputs};
use crate::tokenizer::BertTokenizer;
use crate::train::collective::Replica;
use crate::train::trainer::{EpochOrder, Metrics, StepLoss, TrainTask};
use candle_core::{Device, Tensor};
use decode::{
    beam_search_n, greedy, sample, DecodeSettings, Decoder, Generated, ImageContext, Sampling,
};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Settings of a captioning run (TOML: every key optional). Layout and masking are the
/// reference's (`max_seq_a_length 40`, `max_seq_length 70`, `max_img_seq_length 50`, ≤ 3 masked
/// tokens at p 0.15); label smoothing 0.1 (the script's default is 0); learning rate and steps
/// sized for the world's tiny models.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CaptionConfig {
    #[serde(flatten)]
    pub optim: Optim,
    pub max_seq_a_length: usize,
    pub max_seq_length: usize,
    pub max_img_seq_length: usize,
    pub max_masked_tokens: usize,
    pub mask_prob: f64,
    pub label_smoothing: f64,
    pub drop_worst_ratio: f64,
    pub drop_worst_after: usize,
    pub use_tags: bool,
    /// Tie the decoder to the word embeddings (VinVL's `--tie_weights`; the script's default is
    /// off). `None` keeps what the initial checkpoint's config says.
    pub tie_weights: Option<bool>,
    /// Decoding used for evaluation (and as the `oscar caption` default).
    pub decode: DecodeSettings,
    /// SCST: samples per image (`sc_train_sample_n`).
    pub scst_samples: usize,
    /// SCST: what a sample's reward is compared with (the reference: the greedy caption).
    pub scst_baseline: scst::ScstBaseline,
    /// SCST: sample from the k likeliest tokens only (0: the whole distribution, the reference).
    pub scst_top_k: usize,
}

impl Default for CaptionConfig {
    fn default() -> Self {
        CaptionConfig {
            optim: Optim::default(),
            max_seq_a_length: 40,
            max_seq_length: 70,
            max_img_seq_length: 50,
            max_masked_tokens: 3,
            mask_prob: 0.15,
            label_smoothing: 0.1,
            drop_worst_ratio: 0.0,
            drop_worst_after: 0,
            use_tags: true,
            tie_weights: None,
            decode: DecodeSettings::default(),
            scst_samples: 5,
            scst_baseline: scst::ScstBaseline::Greedy,
            scst_top_k: 0,
        }
    }
}

impl CaptionConfig {
    fn layout(&self) -> CaptionLayout {
        CaptionLayout {
            max_seq_a_len: self.max_seq_a_length,
            max_seq_len: self.max_seq_length,
            max_img_seq_len: self.max_img_seq_length,
            max_masked_tokens: self.max_masked_tokens,
            mask_prob: self.mask_prob,
        }
    }

    /// Position of the first tag at inference: `max(max_seq_a_length, max_gen_length)`.
    pub fn tag_start(&self) -> usize {
        self.max_seq_a_length.max(self.decode.max_gen_length)
    }
}

/// Images of one split: features, detections (tags), and reference captions when known.
#[derive(Default)]
pub struct CaptionSet {
    pub images: Vec<String>,
    pub regions: HashMap<String, Regions>,
    pub detections: HashMap<String, Vec<Detection>>,
    /// Reference captions by image (empty for unlabelled images).
    pub captions: BTreeMap<String, Vec<String>>,
}

impl CaptionSet {
    /// Reads captions (Oscar's `[{image_id, caption}]` or COCO format), features and detector
    /// labels. Every captioned image needs features; images without a labels row have no tags.
    pub fn open(
        captions: &Path,
        features: &Path,
        labels: Option<&Path>,
        img_feature_dim: usize,
    ) -> Result<Self> {
        let caps = oscar_eval::captions::read_captions(captions, false)
            .map_err(|e| Error::bad_file(captions, e.to_string()))?;
        let images: Vec<String> = caps.keys().cloned().collect();
        Self::for_images(images, caps, features, labels, img_feature_dim)
    }

    /// The given images (no references needed).
    pub fn for_images(
        images: Vec<String>,
        captions: BTreeMap<String, Vec<String>>,
        features: &Path,
        labels: Option<&Path>,
        img_feature_dim: usize,
    ) -> Result<Self> {
        let store = FeatureStore::open(features, img_feature_dim)?;
        let mut regions = HashMap::new();
        for img in &images {
            regions.insert(img.clone(), store.get(img)?);
        }
        let mut detections = HashMap::new();
        if let Some(l) = labels {
            let t = TsvFile::open(l)?;
            let idx = t.key_index()?;
            for img in &images {
                if let Some(&row) = idx.get(img) {
                    let f = t.row(row)?;
                    let d = parse_detections(
                        f.get(1).map(String::as_str).unwrap_or(""),
                        &format!("row {}", row + 1),
                    )
                    .map_err(|e| Error::bad_file(l, e))?;
                    detections.insert(img.clone(), d.objects);
                }
            }
        }
        Ok(CaptionSet {
            images,
            regions,
            detections,
            captions,
        })
    }

    /// The image's tags as the reference's `od_labels`: class names in detection order.
    pub fn tags(&self, img: &str) -> String {
        self.detections
            .get(img)
            .map(|d| {
                d.iter()
                    .map(|o| o.class.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }

    /// (image, caption) training pairs.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.captions
            .iter()
            .flat_map(|(i, cs)| cs.iter().map(move |c| (i.clone(), c.clone())))
            .collect()
    }
}

/// A training batch: the examples through the one collator (text at its fixed `t_len`, regions
/// padded to the batch's largest count — cropped positions are masked, so the numbers equal
/// padding to `max_img_seq_length`), the masked-position flags and the masked tokens' ids.
pub fn collate(
    examples: &[CaptionExample],
    t_len: usize,
    dim: usize,
    dev: &Device,
) -> Result<(Inputs, Tensor, Vec<u32>)> {
    collate_rows(examples, 0..examples.len(), t_len, dim, dev)
}

/// [`collate`] of `examples[rows]` alone, with the regions padded to the count of all
/// `examples`: one rank's rows of a data-parallel batch.
pub fn collate_rows(
    all: &[CaptionExample],
    rows: std::ops::Range<usize>,
    t_len: usize,
    dim: usize,
    dev: &Device,
) -> Result<(Inputs, Tensor, Vec<u32>)> {
    let r = all
        .iter()
        .map(|e| e.encoded.num_regions)
        .max()
        .unwrap_or(0)
        .max(1);
    let examples = &all[rows];
    let encoded: Vec<&Encoded> = examples.iter().map(|e| &e.encoded).collect();
    let x = crate::data::tensorize::collate(&encoded, t_len, r, dim, dev)?;
    let mut pos: Vec<u32> = Vec::with_capacity(examples.len() * t_len);
    let mut targets = Vec::new();
    for e in examples {
        pos.extend(&e.masked_pos);
        targets.extend(&e.masked_ids[..e.targets()]);
    }
    Ok((
        x,
        Tensor::from_vec(pos, (examples.len(), t_len), dev)?,
        targets,
    ))
}

/// A captioning model with its settings.
pub struct Captioner {
    pub model: BertForImageCaptioning,
    pub params: crate::nn::Params,
    pub config: OscarConfig,
    pub settings: CaptionConfig,
}

/// How to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Greedy,
    Beam,
    Sample,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "greedy" => Ok(Mode::Greedy),
            "beam" => Ok(Mode::Beam),
            "sample" => Ok(Mode::Sample),
            _ => Err(format!("decoding {s:?}: expected greedy, beam or sample")),
        }
    }
}

/// Fine-tunes with the masked-caption objective on the one trainer (`files`: checkpoints,
/// metrics, resume); `on_step(step, loss, masked-token accuracy)`.
pub fn train(
    set: &CaptionSet,
    tok: &BertTokenizer,
    init: Option<&Path>,
    fresh: &OscarConfig,
    cfg: &CaptionConfig,
    files: &RunFiles,
    on_step: impl FnMut(u64, f64, f64),
) -> Result<Captioner> {
    let loaded = start::<BertForImageCaptioning>(
        files.resume.as_deref().or(init),
        fresh,
        &cfg.optim,
        &files.device,
        |c| {
            c.label_smoothing = cfg.label_smoothing;
            c.drop_worst_ratio = cfg.drop_worst_ratio;
            c.drop_worst_after = cfg.drop_worst_after;
            if let Some(t) = cfg.tie_weights {
                c.tie_weights = t;
            }
        },
    )?;
    let cap = Captioner {
        model: loaded.model,
        params: loaded.params,
        config: loaded.config,
        settings: cfg.clone(),
    };
    let pairs = set.pairs();
    let mut task = CaptionTask {
        set,
        tok,
        order: EpochOrder::new(pairs.len(), cfg.optim.seed)?,
        pairs,
        cap,
        vocab: files.vocab.clone(),
    };
    run_task(&mut task, &cfg.optim, files, "accuracy", on_step)?;
    Ok(task.cap)
}

/// Masked-caption fine-tuning as a task of the one trainer.
struct CaptionTask<'a> {
    set: &'a CaptionSet,
    tok: &'a BertTokenizer,
    pairs: Vec<(String, String)>,
    order: EpochOrder,
    cap: Captioner,
    vocab: Option<std::path::PathBuf>,
}

impl TrainTask for CaptionTask<'_> {
    fn what(&self) -> &str {
        "captioning"
    }

    fn params(&self) -> &crate::nn::Params {
        &self.cap.params
    }

    fn examples_per_step(&self) -> u64 {
        self.cap.settings.optim.batch_size as u64
    }

    fn loss(
        &mut self,
        step: u64,
        examples_seen: u64,
        rng: &mut StdRng,
        part: Replica<'_>,
    ) -> Result<StepLoss> {
        let cfg = &self.cap.settings;
        part.check_batch(self.what(), cfg.optim.batch_size)?;
        let idx = self.order.rows(examples_seen, cfg.optim.batch_size);
        let ex = idx
            .iter()
            .map(|&i| {
                let (img, c) = &self.pairs[i];
                let r = &self.set.regions[img];
                let tags = if cfg.use_tags {
                    Some(self.set.tags(img))
                } else {
                    None
                };
                cfg.layout().tensorize(
                    self.tok,
                    Some(c),
                    tags.as_deref(),
                    &r.data,
                    r.dim,
                    Some(&mut *rng),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = part.rows(ex.len());
        let (x, masked_pos, targets) = collate_rows(
            &ex,
            rows,
            cfg.max_seq_length,
            self.cap.config.img_feature_dim,
            &self.cap.params.device(),
        )?;
        let logits = self
            .cap
            .model
            .forward(&x, &masked_pos, &part.ctx(rng.random(), ex.len()))?;
        // Each rank's number of masked tokens (the loss is a mean over the whole batch's).
        let counts: Vec<usize> = (0..part.size())
            .map(|r| {
                ex[part.rows_of(r, ex.len())]
                    .iter()
                    .map(CaptionExample::targets)
                    .sum()
            })
            .collect();
        let loss = self
            .cap
            .model
            .loss_share(&logits, &targets, step as usize, part, &counts)?;
        let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
        let acc = pred.iter().zip(&targets).filter(|(p, t)| p == t).count() as f64
            / counts.iter().sum::<usize>().max(1) as f64;
        Ok(StepLoss {
            loss,
            metrics: Metrics::from([("accuracy".to_string(), acc)]),
        })
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.cap.save(dir, self.vocab.as_deref())
    }
}

impl Captioner {
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
        let settings: CaptionConfig = super::finetune::saved_settings(dir, "caption.json")?;
        let l = load_model_at::<BertForImageCaptioning>(
            read_checkpoint(dir)?,
            Fresh::Nothing,
            device,
            precision,
        )?;
        Ok(Captioner {
            model: l.model,
            params: l.params,
            config: l.config,
            settings,
        })
    }

    pub fn save(&self, dir: &Path, vocab: Option<&Path>) -> Result<()> {
        save_pretrained(dir, &self.params, &self.config, vocab)?;
        let body = serde_json::to_string_pretty(&self.settings)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&dir.join("caption.json"), body.as_bytes())
    }

    pub fn decoder<'a>(&'a self, tok: &BertTokenizer) -> Decoder<'a> {
        Decoder {
            model: &self.model,
            special: tok.special,
            tag_start: self.settings.tag_start(),
        }
    }

    /// What decoding needs of one image: its tags (truncated as in training, `[SEP]`-closed) and
    /// its regions (at most `max_img_seq_length`).
    pub fn context(&self, tok: &BertTokenizer, tags: &str, r: &Regions) -> Result<ImageContext> {
        let s = &self.settings;
        if r.dim != self.config.img_feature_dim {
            return Err(Error::Invalid(format!(
                "{}-d region features, the model expects {}",
                r.dim, self.config.img_feature_dim
            )));
        }
        let mut tag_ids = if s.use_tags && !tags.trim().is_empty() {
            tok.tokenize(tags)?
        } else {
            vec![]
        };
        if !tag_ids.is_empty() {
            tag_ids.truncate(s.max_seq_length.saturating_sub(s.max_seq_a_length + 1));
            tag_ids.push(tok.special.sep);
        }
        let n = (r.data.len() / r.dim).min(s.max_img_seq_length);
        Ok(ImageContext {
            tag_ids,
            regions: r.data[..n * r.dim].to_vec(),
            num_regions: n,
        })
    }

    pub fn contexts(&self, tok: &BertTokenizer, set: &CaptionSet) -> Result<Vec<ImageContext>> {
        set.images
            .iter()
            .map(|i| self.context(tok, &set.tags(i), &set.regions[i]))
            .collect()
    }

    /// Captions for `ctxs`, `batch` images at a time, with the KV cache (or re-encoding): the
    /// best of each image.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &self,
        tok: &BertTokenizer,
        ctxs: &[ImageContext],
        mode: Mode,
        st: &DecodeSettings,
        batch: usize,
        use_cache: bool,
        seed: u64,
        progress: impl FnMut(usize),
    ) -> Result<Vec<Generated>> {
        let st = DecodeSettings {
            num_return_sequences: 1,
            ..st.clone()
        };
        let all = self.generate_n(tok, ctxs, mode, &st, batch, use_cache, seed, progress)?;
        Ok(all.into_iter().flatten().collect())
    }

    /// [`Self::generate`] with each image's `st.num_return_sequences` best captions, best first
    /// (more than one only for beam search, at most `num_beams`: an error otherwise).
    #[allow(clippy::too_many_arguments)]
    pub fn generate_n(
        &self,
        tok: &BertTokenizer,
        ctxs: &[ImageContext],
        mode: Mode,
        st: &DecodeSettings,
        batch: usize,
        use_cache: bool,
        seed: u64,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Vec<Generated>>> {
        let n = st.num_return_sequences.max(1);
        let most = if mode == Mode::Beam {
            st.num_beams.max(1)
        } else {
            1
        };
        if n > most {
            return Err(Error::Invalid(format!(
                "{n} captions per image: {mode:?} decoding gives at most {most} (beam search gives up to num_beams)"
            )));
        }
        let dec = self.decoder(tok);
        let mut out = Vec::with_capacity(ctxs.len());
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let idx: Vec<usize> = (0..ctxs.len()).collect();
        for chunk in idx.chunks(batch.max(1)) {
            let per = if mode == Mode::Beam {
                st.num_beams.max(1)
            } else {
                1
            };
            let rows: Vec<usize> = chunk
                .iter()
                .flat_map(|&i| std::iter::repeat_n(i, per))
                .collect();
            let mut cached;
            let mut reenc;
            let m: &mut dyn decode::StepModel = if use_cache {
                cached = dec.cached(ctxs, &rows)?;
                &mut cached
            } else {
                reenc = dec.reencode(ctxs, &rows)?;
                &mut reenc
            };
            let one = |g: Vec<Generated>| g.into_iter().map(|g| vec![g]).collect::<Vec<_>>();
            let g = match mode {
                Mode::Greedy => one(greedy(m, rows.len(), tok.special, st.max_gen_length)?),
                Mode::Beam => beam_search_n(m, chunk.len(), tok.special, st, n)?,
                Mode::Sample => one(sample(
                    m,
                    rows.len(),
                    tok.special,
                    st.max_gen_length,
                    Sampling {
                        temperature: st.temperature,
                        top_k: st.top_k,
                        top_p: st.top_p,
                        rng: &mut rng,
                    },
                )?),
            };
            out.extend(g);
            progress(chunk.len());
        }
        Ok(out)
    }
}

/// Captions as COCO results (`[{image_id, caption}]`).
pub fn results_json(images: &[String], captions: &[String]) -> serde_json::Value {
    images
        .iter()
        .zip(captions)
        .map(|(i, c)| serde_json::json!({"image_id": i, "caption": c}))
        .collect()
}

/// Captions as the reference's prediction TSV (`key \t [{"caption", "conf"}]`, conf = exp(score)).
pub fn results_tsv(images: &[String], captions: &[String], scores: &[f64]) -> String {
    images
        .iter()
        .zip(captions.iter().zip(scores))
        .map(|(i, (c, s))| {
            format!(
                "{i}\t{}\n",
                serde_json::json!([{"caption": c, "conf": s.exp()}])
            )
        })
        .collect()
}

/// The nearest-neighbour baseline: each test image gets the first caption of the training image
/// whose mean region feature is closest in cosine.
pub fn nearest_neighbour_captions(train: &CaptionSet, test: &CaptionSet) -> Vec<String> {
    let mean = |r: &Regions| -> Vec<f32> {
        let n = (r.data.len() / r.dim.max(1)).max(1);
        let mut m = vec![0f32; r.dim];
        for row in r.data.chunks(r.dim.max(1)) {
            m.iter_mut().zip(row).for_each(|(a, b)| *a += b / n as f32);
        }
        let norm = m.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        m.iter_mut().for_each(|x| *x /= norm);
        m
    };
    let train_imgs: Vec<&String> = train
        .images
        .iter()
        .filter(|i| train.captions.get(*i).is_some_and(|c| !c.is_empty()))
        .collect();
    let train_vecs: Vec<Vec<f32>> = train_imgs
        .iter()
        .map(|i| mean(&train.regions[*i]))
        .collect();
    test.images
        .iter()
        .map(|i| {
            let q = mean(&test.regions[i]);
            let best = train_vecs
                .iter()
                .enumerate()
                .map(|(j, v)| (j, v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>()))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(j, _)| j)
                .unwrap_or(0);
            train.captions[train_imgs[best]][0].clone()
        })
        .collect()
}

/// Captions for a split and, when it has references, their scores.
pub struct CaptionEval {
    pub captions: Vec<String>,
    pub generated: Vec<Generated>,
    pub scores: Option<oscar_eval::captions::CaptionScores>,
    pub seconds: f64,
}

/// Decodes every image of `set` (`mode`, the KV cache) and scores the captions against the
/// set's references with the COCO metrics (CIDEr-D too when `df` is given).
pub fn evaluate(
    cap: &Captioner,
    tok: &BertTokenizer,
    set: &CaptionSet,
    mode: Mode,
    st: &DecodeSettings,
    opt: &oscar_eval::captions::CaptionOptions,
    progress: impl FnMut(usize),
) -> Result<CaptionEval> {
    let t = std::time::Instant::now();
    let ctxs = cap.contexts(tok, set)?;
    let generated = cap.generate(
        tok,
        &ctxs,
        mode,
        st,
        16,
        true,
        cap.settings.optim.seed,
        progress,
    )?;
    let captions: Vec<String> = generated.iter().map(|g| tok.decode(&g.tokens)).collect();
    let scores = score_captions(set, &captions, opt)?;
    Ok(CaptionEval {
        captions,
        generated,
        scores,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The COCO metrics of `captions` (one per image of `set`) against the set's references, or
/// `None` when the set has none.
pub fn score_captions(
    set: &CaptionSet,
    captions: &[String],
    opt: &oscar_eval::captions::CaptionOptions,
) -> Result<Option<oscar_eval::captions::CaptionScores>> {
    if set.captions.values().all(|c| c.is_empty()) {
        return Ok(None);
    }
    let preds: BTreeMap<String, Vec<String>> = set
        .images
        .iter()
        .zip(captions)
        .map(|(i, c)| (i.clone(), vec![c.clone()]))
        .collect();
    oscar_eval::captions::evaluate_captions(&set.captions, &preds, opt)
        .map(Some)
        .map_err(|e| Error::Invalid(e.to_string()))
}
