//! `oscar pretrain`: Oscar's pre-training (paper §3.2; oscar-spec §2) on any corpus the dataset
//! yaml describes — masked token loss over caption *and* tag word pieces plus the contrastive loss
//! on polluted (image, caption, tags) triples, with gradient accumulation and an optional second
//! corpus — as a [`TrainTask`] of the one [`Trainer`] (schedule, clipping, held-out evaluation,
//! checkpoints, exact resume), plus the PNG of its curves.

use crate::checkpoint::{build_fresh, load_model, read_checkpoint, save_pretrained, Fresh, Loaded};
use crate::config::OscarConfig;
use crate::data::corpus::PretrainCorpus;
use crate::data::masking::{mask_words_and_tags, MaskIds};
use crate::data::tensorize::{collate_dynamic, collate_rows, Encoded, Layout, Truncation};
use crate::error::{Error, Result};
use crate::model::BertImgForPreTraining;
use crate::nn::Ctx;
use crate::nn::Params;
use crate::tokenizer::BertTokenizer;
use crate::train::collective::Replica;
use crate::train::schedule::Schedule;
use crate::train::trainer::{
    step_rng, training_device, EpochOrder, Metrics, StepLoss, TrainTask, Trainer, TrainerOptions,
};
use candle_core::{Tensor, D};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The model size to pre-train (when not initialising from a checkpoint).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelSpec {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub use_img_layernorm: bool,
    pub dropout: f64,
    /// σ of the weight init (BERT's `initializer_range`: 0.02, set for width 768; the default
    /// 0.1 is for the width-64 default, see `OscarConfig::small`).
    pub initializer_range: f64,
}

impl Default for ModelSpec {
    fn default() -> Self {
        // The demo-sized model of world-prototype.md: cheap enough for thousands of CPU steps.
        ModelSpec {
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 256,
            use_img_layernorm: true,
            dropout: 0.1,
            initializer_range: 0.1,
        }
    }
}

/// Everything `oscar pretrain` takes (TOML; command-line flags override).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// The dataset yaml (corpus, label and feature directories).
    pub dataset: PathBuf,
    /// An optional second corpus (the reference's `--extra_dataset_file`): each step also draws a
    /// batch from it and the loss is `(1 − w)·L_main + w·L_extra`.
    pub extra_dataset: Option<PathBuf>,
    /// `w` above (`--extra_loss_weight`).
    pub extra_loss_weight: f64,
    /// vocab.txt (default: the initial checkpoint's, else `vocab.txt` beside or above the yaml).
    pub vocab: Option<PathBuf>,
    pub output_dir: PathBuf,
    /// Initialise from a checkpoint (BERT, MiniLM or Oscar); missing parts (image embedding,
    /// heads) start fresh. Without it, `model` gives the size.
    pub init: Option<PathBuf>,
    pub model: ModelSpec,
    pub img_feature_dim: usize,
    pub max_seq_length: usize,
    pub max_img_seq_length: usize,
    /// Use the object tags as text_b (false: the no-tag ablation; pollution then replaces captions).
    pub use_tags: bool,
    /// 2 for Oscar, 3 for Oscar+.
    pub num_contrast_classes: usize,
    pub texta_false_prob: f64,
    /// Ours (0 = the reference): the share of polluting tag sequences drawn from an image with
    /// as many tags, so that a mismatch cannot be told from the tag count alone (the
    /// pre-training counterpart of retrieval's `--hard-negatives`).
    pub same_shape_pollution: f64,
    /// 0: a polluting text_b is a random line (caption or tags) of a random image; 1: its tags.
    pub textb_sample_mode: u8,
    pub mask_loss_for_unmatched: bool,
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub steps: u64,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    /// ≤ 0 disables clipping (the reference's pre-training default is off).
    pub max_grad_norm: f64,
    pub seed: u64,
    pub save_every: u64,
    pub keep_last: usize,
    pub eval_every: u64,
    /// Fraction of images held out for evaluation.
    pub eval_fraction: f64,
    pub eval_examples: usize,
    pub log_every: u64,
    /// Show a progress bar (off in tests).
    pub progress: bool,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            dataset: PathBuf::from("world/pretrain/dataset.yaml"),
            extra_dataset: None,
            extra_loss_weight: 0.5,
            vocab: None,
            output_dir: PathBuf::from("runs/pretrain"),
            init: None,
            model: ModelSpec::default(),
            img_feature_dim: 2054,
            max_seq_length: 35,
            max_img_seq_length: 50,
            use_tags: true,
            num_contrast_classes: 2,
            texta_false_prob: 0.0,
            same_shape_pollution: 0.0,
            textb_sample_mode: 0,
            mask_loss_for_unmatched: true,
            batch_size: 32,
            gradient_accumulation_steps: 1,
            steps: 1000,
            lr: 1e-3,
            weight_decay: 0.01,
            warmup_steps: 50,
            schedule: Schedule::WarmupLinear,
            max_grad_norm: 1.0,
            seed: 42,
            save_every: 500,
            keep_last: 2,
            eval_every: 250,
            eval_fraction: 0.05,
            eval_examples: 256,
            log_every: 10,
            progress: true,
        }
    }
}

impl PretrainConfig {
    pub fn from_toml(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text)
            .map_err(|e| Error::bad_file(path, format!("not a pre-training config: {e}")))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.batch_size == 0 || self.gradient_accumulation_steps == 0 || self.steps == 0 {
            return bad(
                "batch_size, gradient_accumulation_steps and steps must be positive".into(),
            );
        }
        if !(2..=3).contains(&self.num_contrast_classes) {
            return bad(format!(
                "num_contrast_classes {} must be 2 or 3",
                self.num_contrast_classes
            ));
        }
        if !(0.0..0.5).contains(&self.texta_false_prob) {
            return bad(format!(
                "texta_false_prob {} must be in [0, 0.5)",
                self.texta_false_prob
            ));
        }
        if !(0.0..=1.0).contains(&self.same_shape_pollution) {
            return bad(format!(
                "same_shape_pollution {} must be in [0, 1]",
                self.same_shape_pollution
            ));
        }
        if !(0.0..0.5).contains(&self.eval_fraction) {
            return bad(format!(
                "eval_fraction {} must be in [0, 0.5)",
                self.eval_fraction
            ));
        }
        if self.extra_dataset.is_some() && !(0.0..=1.0).contains(&self.extra_loss_weight) {
            return bad(format!(
                "extra_loss_weight {} must be in [0, 1]",
                self.extra_loss_weight
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr {} must be positive", self.lr));
        }
        Ok(())
    }
}

/// One step's metrics (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepLog {
    pub step: u64,
    pub loss: f64,
    pub mlm_loss: f64,
    pub contrastive_loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub examples_per_s: f64,
}

/// A held-out evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalLog {
    pub step: u64,
    pub mlm_accuracy: f64,
    pub contrastive_accuracy: f64,
    pub mlm_loss: f64,
    /// Chance levels, for the reader: 1/vocab and the majority contrastive class rate.
    pub mlm_chance: f64,
    pub contrastive_chance: f64,
    /// Masked caption-word accuracy on matched held-out pairs with the image's own tags and
    /// regions; with another image's tags (own regions); and with another image's tags and
    /// regions (same caption and masks). The gaps are how much the words lean on the tags, the
    /// anchors of paper §3.1, and on the image at all. Absent without tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption_accuracy_own_tags: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption_accuracy_other_tags: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption_accuracy_other_image: Option<f64>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainReport {
    pub steps: u64,
    pub logs: Vec<StepLog>,
    pub evals: Vec<EvalLog>,
    pub last_checkpoint: Option<PathBuf>,
    pub seconds: f64,
}

/// Training and evaluation rows: images are split by a hash of their key.
fn split_rows(c: &PretrainCorpus, eval_fraction: f64) -> (Vec<usize>, Vec<usize>) {
    let (mut tr, mut ev) = (Vec::new(), Vec::new());
    for (i, r) in c.rows.iter().enumerate() {
        let h = r.image.bytes().fold(1469598103934665603u64, |h, b| {
            (h ^ b as u64).wrapping_mul(1099511628211)
        });
        if ((h % 10_000) as f64) < eval_fraction * 10_000.0 {
            ev.push(i);
        } else {
            tr.push(i);
        }
    }
    (tr, ev)
}

struct Batch {
    items: Vec<Encoded>,
    mlm_labels: Vec<i64>,
    contrastive: Vec<i64>,
    text_len: usize,
    img_len: usize,
}

/// Builds one batch: contrastive pollution (paper §3.2, `random_sent`) then MTL masking.
/// Rows of `pool` by their number of tags (for `same_shape_pollution`).
fn rows_by_tag_count(c: &PretrainCorpus, pool: &[usize]) -> Result<HashMap<usize, Vec<usize>>> {
    let mut m: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in pool {
        m.entry(c.tags(i)?.split_whitespace().count())
            .or_default()
            .push(i);
    }
    Ok(m)
}

/// A polluting row for row `i`: any row of `pool`, or, when the row has tags, with p
/// `same_shape_pollution` one of another image with as many tags (when there is one).
fn polluting_row(
    cfg: &PretrainConfig,
    c: &PretrainCorpus,
    i: usize,
    n_tags: usize,
    pool: &[usize],
    by_count: &HashMap<usize, Vec<usize>>,
    rng: &mut StdRng,
) -> usize {
    let any = pool[rng.random_range(0..pool.len())];
    if n_tags > 0 && cfg.same_shape_pollution > 0.0 && rng.random_bool(cfg.same_shape_pollution) {
        if let Some(same) = by_count.get(&n_tags) {
            for _ in 0..8 {
                let o = same[rng.random_range(0..same.len())];
                if c.rows[o].image != c.rows[i].image {
                    return o;
                }
            }
        }
    }
    any
}

fn make_batch(
    cfg: &PretrainConfig,
    c: &PretrainCorpus,
    tok: &BertTokenizer,
    rows: &[usize],
    pool: &[usize],
    by_count: &HashMap<usize, Vec<usize>>,
    rng: &mut StdRng,
) -> Result<Batch> {
    let layout = Layout {
        max_seq_length: cfg.max_seq_length,
        max_img_seq_length: cfg.max_img_seq_length,
        truncation: Truncation::Pair,
    };
    let ids = MaskIds {
        mask: tok.special.mask,
        unk: tok.special.unk,
        vocab_size: tok.vocab_size(),
    };
    let mut items = Vec::with_capacity(rows.len());
    let mut labels_per = Vec::with_capacity(rows.len());
    let mut contrastive = Vec::with_capacity(rows.len());
    for &i in rows {
        let regions = c.regions(i)?;
        let mut text_a = c.rows[i].text.clone();
        let mut tags = if cfg.use_tags {
            c.tags(i)?
        } else {
            String::new()
        };
        let p: f64 = rng.random();
        let label = if p > 0.5 {
            0
        } else {
            let other = polluting_row(
                cfg,
                c,
                i,
                tags.split_whitespace().count(),
                pool,
                by_count,
                rng,
            );
            if p > cfg.texta_false_prob && !tags.is_empty() {
                tags = if cfg.textb_sample_mode == 0 && rng.random_bool(0.5) {
                    c.rows[other].text.clone()
                } else {
                    c.tags(other)?
                };
                1
            } else {
                text_a = c.rows[other].text.clone();
                cfg.num_contrast_classes as i64 - 1
            }
        };
        let mut e = layout.encode(
            tok,
            &text_a,
            (!tags.is_empty()).then_some(tags.as_str()),
            &regions.data,
            regions.dim,
        )?;
        let (t, r) = (e.input_ids.len(), e.num_regions);
        let mut lab = mask_words_and_tags(&mut e, ids, t, r, rng);
        if label != 0 && !cfg.mask_loss_for_unmatched {
            lab.iter_mut().for_each(|l| *l = -1);
        }
        items.push(e);
        labels_per.push(lab);
        contrastive.push(label);
    }
    let text_len = items.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
    let img_len = items.iter().map(|e| e.num_regions).max().unwrap_or(0);
    // Labels laid out as the dynamically padded batch: [text_len | img_len] per item.
    let mut mlm_labels = vec![-1i64; rows.len() * (text_len + img_len)];
    for (b, (e, lab)) in items.iter().zip(&labels_per).enumerate() {
        let t = e.input_ids.len();
        mlm_labels[b * (text_len + img_len)..b * (text_len + img_len) + t]
            .copy_from_slice(&lab[..t]);
    }
    Ok(Batch {
        items,
        mlm_labels,
        contrastive,
        text_len,
        img_len,
    })
}

/// Trains; `resume` continues from a checkpoint directory written by a previous run.
pub fn pretrain(cfg: &PretrainConfig, resume: Option<&Path>) -> Result<PretrainReport> {
    pretrain_on(cfg, resume, &training_device())
}

/// [`pretrain`] with the model on `device`.
pub fn pretrain_on(
    cfg: &PretrainConfig,
    resume: Option<&Path>,
    device: &candle_core::Device,
) -> Result<PretrainReport> {
    cfg.validate()?;
    let started = std::time::Instant::now();
    let corpus = PretrainCorpus::open(&cfg.dataset, cfg.img_feature_dim)?;
    let (train_rows, eval_rows) = split_rows(&corpus, cfg.eval_fraction);
    let extra = match &cfg.extra_dataset {
        Some(p) => {
            let c = PretrainCorpus::open(p, cfg.img_feature_dim)?;
            let rows: Vec<usize> = (0..c.rows.len()).collect();
            Some((c, rows))
        }
        None => None,
    };
    if train_rows.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no training rows left after holding out {} for evaluation",
            cfg.dataset.display(),
            cfg.eval_fraction
        )));
    }
    let vocab_path = match (&cfg.vocab, &cfg.init) {
        (Some(v), _) => v.clone(),
        (None, Some(init)) => read_checkpoint(init)?.vocab.ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no vocab.txt beside the initial checkpoint: set `vocab`",
                init.display()
            ))
        })?,
        (None, None) => {
            let base = cfg.dataset.parent().unwrap_or(Path::new("."));
            [base.join("vocab.txt"), base.join("../vocab.txt")]
                .into_iter()
                .find(|p| p.exists())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "no vocab.txt beside {}: set `vocab`",
                        cfg.dataset.display()
                    ))
                })?
        }
    };
    let tok = BertTokenizer::from_vocab(&vocab_path)?;

    // The model: resumed, initialised from a checkpoint, or fresh.
    let mut oc = match &cfg.init {
        Some(init) => read_checkpoint(init)?
            .config
            .unwrap_or_else(|| OscarConfig::tiny(tok.vocab_size(), cfg.img_feature_dim)),
        None => OscarConfig {
            vocab_size: tok.vocab_size(),
            hidden_size: cfg.model.hidden_size,
            num_hidden_layers: cfg.model.num_hidden_layers,
            num_attention_heads: cfg.model.num_attention_heads,
            intermediate_size: cfg.model.intermediate_size,
            initializer_range: cfg.model.initializer_range,
            max_position_embeddings: 512,
            ..OscarConfig::oscar_base()
        },
    };
    oc.img_feature_dim = cfg.img_feature_dim;
    oc.num_contrast_classes = cfg.num_contrast_classes;
    oc.use_img_layernorm = Some(cfg.model.use_img_layernorm);
    oc.hidden_dropout_prob = cfg.model.dropout;
    oc.attention_probs_dropout_prob = cfg.model.dropout;
    if tok.vocab_size() > oc.vocab_size {
        return Err(Error::Invalid(format!(
            "{} has {} word pieces, the model's vocab_size is {}",
            vocab_path.display(),
            tok.vocab_size(),
            oc.vocab_size
        )));
    }
    let Loaded {
        model,
        params,
        config: oc,
        ..
    } = match (resume, &cfg.init) {
        (Some(dir), _) => load_model::<BertImgForPreTraining>(
            read_checkpoint(dir)?,
            None,
            Fresh::Nothing,
            cfg.seed,
            device,
        )?,
        (None, Some(init)) => load_model::<BertImgForPreTraining>(
            read_checkpoint(init)?,
            Some(oc),
            Fresh::Missing,
            cfg.seed,
            device,
        )?,
        (None, None) => build_fresh::<BertImgForPreTraining>(&oc, cfg.seed, device)?,
    };
    std::fs::create_dir_all(&cfg.output_dir).map_err(|e| Error::io(&cfg.output_dir, e))?;
    let run_toml = cfg.to_toml();
    crate::checkpoint::write_atomic(&cfg.output_dir.join("pretrain.toml"), run_toml.as_bytes())?;
    let by_count = if cfg.same_shape_pollution > 0.0 {
        rows_by_tag_count(&corpus, &train_rows)?
    } else {
        HashMap::new()
    };
    let order = EpochOrder::new(train_rows.len(), cfg.seed)?;
    let mut task = PretrainTask {
        cfg,
        corpus,
        train_rows,
        eval_rows,
        extra,
        tok,
        model,
        params,
        config: oc,
        vocab_path,
        run_toml,
        by_count,
        order,
        evals: Vec::new(),
    };
    let options = TrainerOptions {
        steps: cfg.steps,
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        warmup_steps: cfg.warmup_steps,
        schedule: cfg.schedule,
        max_grad_norm: cfg.max_grad_norm,
        seed: cfg.seed,
        out: Some(cfg.output_dir.clone()),
        save_every: cfg.save_every,
        keep_last: cfg.keep_last,
        eval_every: cfg.eval_every,
        keep_best: None,
        log_every: cfg.log_every,
        progress: cfg.progress,
    };
    let r = Trainer::new(options).run(&mut task, resume)?;
    let figure = |m: &Metrics, k: &str| m.get(k).copied().unwrap_or(0.0);
    let logs: Vec<StepLog> = r
        .records
        .iter()
        .map(|l| StepLog {
            step: l.step,
            loss: l.loss,
            mlm_loss: figure(&l.metrics, "mlm_loss"),
            contrastive_loss: figure(&l.metrics, "contrastive_loss"),
            lr: l.lr,
            grad_norm: l.grad_norm,
            examples_per_s: l.examples_per_s,
        })
        .collect();
    plot_curves(&cfg.output_dir, &logs, &task.evals)?;
    Ok(PretrainReport {
        steps: r.steps,
        logs,
        evals: task.evals,
        last_checkpoint: r.last_checkpoint,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Pre-training as a task of the [`Trainer`].
struct PretrainTask<'a> {
    cfg: &'a PretrainConfig,
    corpus: PretrainCorpus,
    train_rows: Vec<usize>,
    eval_rows: Vec<usize>,
    extra: Option<(PretrainCorpus, Vec<usize>)>,
    tok: BertTokenizer,
    model: BertImgForPreTraining,
    params: Params,
    config: OscarConfig,
    vocab_path: PathBuf,
    run_toml: String,
    by_count: HashMap<usize, Vec<usize>>,
    order: EpochOrder,
    evals: Vec<EvalLog>,
}

impl PretrainTask<'_> {
    /// This rank's share of one batch's `CE(MLM, ignore −1) + CE(contrastive)` (the whole loss
    /// in a single process, as `BertImgForPreTraining::loss` computes it), and the two terms'
    /// shares as numbers. `seed` seeds the forward's dropout.
    fn batch_loss(&self, b: &Batch, seed: u64, part: Replica<'_>) -> Result<(Tensor, f64, f64)> {
        let n = b.items.len();
        let rows = part.rows(n);
        let x = collate_rows(
            &b.items,
            rows.clone(),
            self.cfg.img_feature_dim,
            &self.params.device(),
        )?;
        debug_assert_eq!(x.input_ids.dims2()?.1, b.text_len);
        let out = self.model.forward(&x, &part.ctx(seed, n))?;
        let width = b.text_len + b.img_len;
        let mlm_labels = &b.mlm_labels[rows.start * width..rows.end * width];
        let con_labels = &b.contrastive[rows];
        let labelled = |l: &[i64]| l.iter().filter(|v| **v != -1).count();
        let v = out.mlm_logits.dim(2)?;
        let mlm = crate::nn::ops::cross_entropy(&out.mlm_logits.reshape(((), v))?, mlm_labels, -1)?;
        let anchor = &out.contrastive_logits;
        let mlm = part.share(mlm, labelled(mlm_labels), labelled(&b.mlm_labels), anchor)?;
        if labelled(&b.contrastive) == 0 {
            return Err(Error::Invalid(
                "every contrastive label is -1: nothing to learn from".into(),
            ));
        }
        let con = crate::nn::ops::cross_entropy(&out.contrastive_logits, con_labels, -1)?;
        let con = part.share(con, labelled(con_labels), labelled(&b.contrastive), anchor)?;
        let (mlm_v, con_v) = (
            mlm.to_scalar::<f32>()? as f64,
            con.to_scalar::<f32>()? as f64,
        );
        let total = mlm.add(&con)?;
        Ok((total, mlm_v, con_v))
    }
}

impl TrainTask for PretrainTask<'_> {
    fn what(&self) -> &str {
        "pretrain"
    }

    fn params(&self) -> &Params {
        &self.params
    }

    fn frozen(&self) -> Vec<String> {
        if self.config.freeze_embedding {
            vec!["bert.embeddings.word_embeddings".into()]
        } else {
            vec![]
        }
    }

    fn examples_per_step(&self) -> u64 {
        (self.cfg.batch_size * self.cfg.gradient_accumulation_steps) as u64
    }

    /// The micro-batches of the step, their losses summed (each divided by the number of
    /// micro-batches) into one graph, as accumulation over `backward` calls would give.
    fn loss(
        &mut self,
        _step: u64,
        examples_seen: u64,
        rng: &mut StdRng,
        part: Replica<'_>,
    ) -> Result<StepLoss> {
        let cfg = self.cfg;
        part.check_batch("pretrain", cfg.batch_size)?;
        let mut total: Option<Tensor> = None;
        let (mut mlm_sum, mut con_sum) = (0.0, 0.0);
        for micro in 0..cfg.gradient_accumulation_steps {
            let rows: Vec<usize> = self
                .order
                .rows(
                    examples_seen + (micro * cfg.batch_size) as u64,
                    cfg.batch_size,
                )
                .into_iter()
                .map(|i| self.train_rows[i])
                .collect();
            let b = make_batch(
                cfg,
                &self.corpus,
                &self.tok,
                &rows,
                &self.train_rows,
                &self.by_count,
                rng,
            )?;
            let (loss, mlm, con) = self.batch_loss(&b, rng.random(), part)?;
            mlm_sum += mlm;
            con_sum += con;
            let loss = match &self.extra {
                Some((ec, erows)) => {
                    let pick: Vec<usize> = (0..cfg.batch_size)
                        .map(|_| erows[rng.random_range(0..erows.len())])
                        .collect();
                    let eb = make_batch(cfg, ec, &self.tok, &pick, erows, &HashMap::new(), rng)?;
                    let (eloss, _, _) = self.batch_loss(&eb, rng.random(), part)?;
                    ((loss * (1.0 - cfg.extra_loss_weight))? + (eloss * cfg.extra_loss_weight)?)?
                }
                None => loss,
            };
            let scaled = (loss / cfg.gradient_accumulation_steps as f64)?;
            total = Some(match total {
                Some(t) => t.add(&scaled)?,
                None => scaled,
            });
        }
        let n = cfg.gradient_accumulation_steps as f64;
        let metrics = Metrics::from([
            ("mlm_loss".to_string(), mlm_sum / n),
            ("contrastive_loss".to_string(), con_sum / n),
        ]);
        Ok(StepLoss {
            loss: total.ok_or_else(|| {
                Error::Invalid("gradient_accumulation_steps must be at least 1".into())
            })?,
            metrics,
        })
    }

    fn evaluate(&mut self, step: u64) -> Result<Option<Metrics>> {
        let Some(e) = evaluate(
            self.cfg,
            &self.corpus,
            &self.tok,
            &self.model,
            &self.eval_rows,
            &self.train_rows,
            &self.by_count,
            step,
        )?
        else {
            return Ok(None);
        };
        let figures = serde_json::to_value(&e).map_err(|err| Error::Invalid(err.to_string()))?;
        let m: Metrics = figures
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "step")
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect();
        self.evals.push(e);
        Ok(Some(m))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        save_pretrained(dir, &self.params, &self.config, Some(&self.vocab_path))?;
        crate::checkpoint::write_atomic(&dir.join("pretrain.toml"), self.run_toml.as_bytes())
    }
}

/// Held-out MLM accuracy (argmax at masked positions) and contrastive accuracy, on a fixed
/// sample with fixed pollution and masks.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    cfg: &PretrainConfig,
    c: &PretrainCorpus,
    tok: &BertTokenizer,
    model: &BertImgForPreTraining,
    eval_rows: &[usize],
    pool: &[usize],
    by_count: &HashMap<usize, Vec<usize>>,
    step: u64,
) -> Result<Option<EvalLog>> {
    if eval_rows.is_empty() {
        return Ok(None);
    }
    let mut rng = step_rng(cfg.seed, 0, 3);
    let rows: Vec<usize> = (0..cfg.eval_examples.min(eval_rows.len() * 4))
        .map(|i| eval_rows[i % eval_rows.len()])
        .collect();
    let _no_grad = crate::nn::NoGrad::new();
    let (mut hit, mut tot, mut chit, mut ctot, mut loss_sum, mut zeros) =
        (0usize, 0usize, 0usize, 0usize, 0.0, 0usize);
    for chunk in rows.chunks(cfg.batch_size) {
        let b = make_batch(cfg, c, tok, chunk, pool, by_count, &mut rng)?;
        let x = collate_dynamic(&b.items, cfg.img_feature_dim, model.bert.device())?;
        let out = model.forward(&x, &Ctx::eval())?;
        let v = out.mlm_logits.dim(2)?;
        let pred: Vec<u32> = out
            .mlm_logits
            .reshape(((), v))?
            .argmax(D::Minus1)?
            .to_vec1()?;
        for (p, l) in pred.iter().zip(&b.mlm_labels) {
            if *l >= 0 {
                tot += 1;
                hit += usize::from(*p as i64 == *l);
            }
        }
        if let Some(l) =
            crate::nn::ops::cross_entropy(&out.mlm_logits.reshape(((), v))?, &b.mlm_labels, -1)?
        {
            loss_sum += l.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        }
        let cp: Vec<u32> = out.contrastive_logits.argmax(D::Minus1)?.to_vec1()?;
        for (p, l) in cp.iter().zip(&b.contrastive) {
            ctot += 1;
            chit += usize::from(*p as i64 == *l);
            zeros += usize::from(*l == 0);
        }
    }
    let majority = zeros.max(ctot - zeros) as f64 / ctot.max(1) as f64;
    let reliance = tag_reliance(cfg, c, tok, model, &rows, pool, &mut rng)?;
    Ok(Some(EvalLog {
        step,
        mlm_accuracy: hit as f64 / tot.max(1) as f64,
        contrastive_accuracy: chit as f64 / ctot.max(1) as f64,
        mlm_loss: loss_sum / rows.len().max(1) as f64,
        mlm_chance: 1.0 / tok.vocab_size() as f64,
        contrastive_chance: majority,
        caption_accuracy_own_tags: reliance.map(|r| r.0),
        caption_accuracy_other_tags: reliance.map(|r| r.1),
        caption_accuracy_other_image: reliance.map(|r| r.2),
    }))
}

/// The three caption-word accuracies of [`EvalLog`]: each example is encoded with its own tags
/// and regions, with a random other image's tags, and with that image's tags and regions; the
/// same caption pieces (each with p 0.15, at least one) are `[MASK]` in all three.
fn tag_reliance(
    cfg: &PretrainConfig,
    c: &PretrainCorpus,
    tok: &BertTokenizer,
    model: &BertImgForPreTraining,
    rows: &[usize],
    pool: &[usize],
    rng: &mut StdRng,
) -> Result<Option<(f64, f64, f64)>> {
    if !cfg.use_tags {
        return Ok(None);
    }
    let layout = Layout {
        max_seq_length: cfg.max_seq_length,
        max_img_seq_length: cfg.max_img_seq_length,
        truncation: Truncation::Pair,
    };
    let (mut hits, mut total) = ([0usize; 3], 0usize);
    for chunk in rows.chunks(cfg.batch_size) {
        let mut variants: [Vec<Encoded>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut targets: Vec<Vec<(usize, u32)>> = Vec::new();
        for &i in chunk {
            let o = pool[rng.random_range(0..pool.len())];
            let (own, other) = (c.tags(i)?, c.tags(o)?);
            if own.is_empty() || other.is_empty() {
                continue;
            }
            let (r, ro) = (c.regions(i)?, c.regions(o)?);
            let text = &c.rows[i].text;
            let mut v = [
                layout.encode(tok, text, Some(&own), &r.data, r.dim)?,
                layout.encode(tok, text, Some(&other), &r.data, r.dim)?,
                layout.encode(tok, text, Some(&other), &ro.data, ro.dim)?,
            ];
            let n = v[0].text_a_len;
            if n == 0 || v.iter().any(|e| e.text_a_len != n) {
                continue; // the other tags truncated the caption differently
            }
            let mut pos: Vec<usize> = (1..1 + n).filter(|_| rng.random_bool(0.15)).collect();
            if pos.is_empty() {
                pos.push(1 + rng.random_range(0..n));
            }
            targets.push(pos.iter().map(|&p| (p, v[0].input_ids[p])).collect());
            for e in v.iter_mut() {
                for &p in &pos {
                    e.input_ids[p] = tok.special.mask;
                }
            }
            for (k, e) in v.into_iter().enumerate() {
                variants[k].push(e);
            }
        }
        if targets.is_empty() {
            continue;
        }
        total += targets.iter().map(Vec::len).sum::<usize>();
        for (k, items) in variants.iter().enumerate() {
            let x = collate_dynamic(items, cfg.img_feature_dim, model.bert.device())?;
            let logits = model.forward(&x, &Ctx::eval())?.mlm_logits;
            let l = logits.dim(1)?;
            let pred: Vec<u32> = logits.argmax(D::Minus1)?.flatten_all()?.to_vec1()?;
            for (j, t) in targets.iter().enumerate() {
                hits[k] += t.iter().filter(|(p, id)| pred[j * l + p] == *id).count();
            }
        }
    }
    let acc = |h: usize| h as f64 / total as f64;
    Ok((total > 0).then(|| (acc(hits[0]), acc(hits[1]), acc(hits[2]))))
}

fn plot_curves(out: &Path, logs: &[StepLog], evals: &[EvalLog]) -> Result<()> {
    let series = vec![
        (
            "loss".to_string(),
            logs.iter().map(|l| (l.step as f64, l.loss)).collect(),
        ),
        (
            "mlm loss".to_string(),
            logs.iter().map(|l| (l.step as f64, l.mlm_loss)).collect(),
        ),
        (
            "contrastive loss".to_string(),
            logs.iter()
                .map(|l| (l.step as f64, l.contrastive_loss))
                .collect(),
        ),
    ];
    crate::plot::line_chart(
        &out.join("loss.png"),
        "pre-training loss",
        "step",
        "loss",
        &series,
    )?;
    if !evals.is_empty() {
        let series = vec![
            (
                "held-out MLM accuracy".to_string(),
                evals
                    .iter()
                    .map(|e| (e.step as f64, e.mlm_accuracy))
                    .collect(),
            ),
            (
                "held-out contrastive accuracy".to_string(),
                evals
                    .iter()
                    .map(|e| (e.step as f64, e.contrastive_accuracy))
                    .collect(),
            ),
        ];
        crate::plot::line_chart(
            &out.join("eval.png"),
            "held-out accuracy",
            "step",
            "accuracy",
            &series,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_shape_pollution_draws_another_image_with_as_many_tags() {
        let d = tempfile::tempdir().unwrap();
        let wc = oscar_world::WorldConfig {
            images: 80,
            seed: 3,
            feature_dim: 8,
            ..Default::default()
        };
        oscar_world::write::write_world(&oscar_world::generate(&wc).unwrap(), d.path(), 0).unwrap();
        let c = PretrainCorpus::open(&d.path().join("pretrain/dataset.yaml"), 14).unwrap();
        let pool: Vec<usize> = (0..c.rows.len()).collect();
        let by_count = rows_by_tag_count(&c, &pool).unwrap();
        let count = |i: usize| c.tags(i).unwrap().split_whitespace().count();
        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(1);
        let (mut all, mut any_differs) = (
            PretrainConfig {
                same_shape_pollution: 1.0,
                ..PretrainConfig::default()
            },
            false,
        );
        for i in pool.iter().copied().step_by(7) {
            let n = count(i);
            let others = by_count[&n]
                .iter()
                .filter(|&&o| c.rows[o].image != c.rows[i].image)
                .count();
            let o = polluting_row(&all, &c, i, n, &pool, &by_count, &mut rng);
            if others >= 5 {
                assert_eq!(count(o), n, "row {i}: {n} tags, polluted with {}", count(o));
                assert_ne!(c.rows[o].image, c.rows[i].image);
            }
        }
        // Without the option any row may be drawn, and tag counts then differ.
        all.same_shape_pollution = 0.0;
        for i in pool.iter().copied().step_by(7) {
            any_differs |= count(polluting_row(
                &all,
                &c,
                i,
                count(i),
                &pool,
                &by_count,
                &mut rng,
            )) != count(i);
        }
        assert!(any_differs);
    }
}
