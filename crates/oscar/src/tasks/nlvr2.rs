//! NLVR2 (`oscar/run_nlvr.py --use_pair --num_choice 2`, oscar-spec §3.3): a statement about a
//! pair of images. Each image gives `[CLS] statement [SEP] tags_i [SEP]` + regions_i; the two
//! pooled outputs are concatenated into the MLP head (`cls_hidden_scale`, LayerNorm with the
//! image LayerNorm), 2-way cross-entropy. Evaluation: accuracy and consistency (the share of
//! statements whose every image pair is judged right).

use super::finetune::{run_task, start, Optim, RunFiles};
use crate::checkpoint::{load_model_at, read_checkpoint, save_pretrained, write_atomic, Fresh};
use crate::config::{ClassifierKind, LossType, OscarConfig};
use crate::data::features::{FeatureStore, Regions};
use crate::data::tensorize::{collate_rows, Encoded, Layout, Truncation};
use crate::data::text::{read_nlvr2, Nlvr2Example};
use crate::error::{Error, Result};
use crate::model::{ClassLabels, ImageBertForMultipleChoice, Inputs};
use crate::nn::{ops, Ctx};
use crate::tokenizer::BertTokenizer;
use crate::train::collective::Replica;
use crate::train::trainer::{EpochOrder, Metrics, StepLoss, TrainTask};
use candle_core::Device;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Settings of an NLVR2 run (TOML: every key optional). Layout, head, dropout and weight decay
/// are the reference's (`max_seq_length 55`, `max_img_seq_length 40`, `cls_hidden_scale 3`,
/// dropout 0.3, wd 0.05); learning rate, steps and warm-up are sized for the world's tiny models
/// (the reference warms up for 10,000 of its steps).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Nlvr2Config {
    #[serde(flatten)]
    pub optim: Optim,
    pub max_seq_length: usize,
    pub max_img_seq_length: usize,
    pub use_tags: bool,
    pub cls_hidden_scale: usize,
}

impl Default for Nlvr2Config {
    fn default() -> Self {
        Nlvr2Config {
            optim: Optim {
                drop_out: Some(0.3),
                ..Optim::default()
            },
            max_seq_length: 55,
            max_img_seq_length: 40,
            use_tags: true,
            cls_hidden_scale: 3,
        }
    }
}

/// Statements of one split with the features of every image they name.
pub struct Nlvr2Set {
    pub examples: Vec<Nlvr2Example>,
    pub features: HashMap<String, Regions>,
}

impl Nlvr2Set {
    pub fn open(statements: &Path, features: &Path, img_feature_dim: usize) -> Result<Self> {
        let examples = read_nlvr2(statements)?;
        let store = FeatureStore::open(features, img_feature_dim)?;
        let mut feats = HashMap::new();
        for e in &examples {
            for img in [&e.images.0, &e.images.1] {
                if !feats.contains_key(img) {
                    let r = store.get(img).map_err(|err| {
                        Error::bad_file(statements, format!("statement {}: {err}", e.id))
                    })?;
                    feats.insert(img.clone(), r);
                }
            }
        }
        Ok(Nlvr2Set {
            examples,
            features: feats,
        })
    }
}

fn encode(
    tok: &BertTokenizer,
    cfg: &Nlvr2Config,
    statement: &str,
    tags: &str,
    r: &Regions,
) -> Result<Encoded> {
    let tags = if cfg.use_tags {
        Some(tags).filter(|t| !t.trim().is_empty())
    } else {
        None
    };
    Layout {
        max_seq_length: cfg.max_seq_length,
        max_img_seq_length: cfg.max_img_seq_length,
        truncation: Truncation::Pair,
    }
    .encode(tok, statement, tags, &r.data, r.dim)
}

/// Rows (left, right) of each example, consecutive, as the multiple-choice head expects.
fn batch(
    tok: &BertTokenizer,
    cfg: &Nlvr2Config,
    set: &Nlvr2Set,
    idx: &[usize],
    device: &Device,
) -> Result<Inputs> {
    batch_rows(tok, cfg, set, idx, 0..2 * idx.len(), device)
}

/// The encoder `rows` (two per statement) of the batch `idx`, padded to the whole batch's
/// lengths.
fn batch_rows(
    tok: &BertTokenizer,
    cfg: &Nlvr2Config,
    set: &Nlvr2Set,
    idx: &[usize],
    rows: std::ops::Range<usize>,
    device: &Device,
) -> Result<Inputs> {
    let mut items = Vec::with_capacity(2 * idx.len());
    for &i in idx {
        let e = &set.examples[i];
        items.push(encode(
            tok,
            cfg,
            &e.statement,
            &e.tags.0,
            &set.features[&e.images.0],
        )?);
        items.push(encode(
            tok,
            cfg,
            &e.statement,
            &e.tags.1,
            &set.features[&e.images.1],
        )?);
    }
    let dim = set.features.values().next().map(|r| r.dim).unwrap_or(1);
    collate_rows(&items, rows, dim, device)
}

/// A trained NLVR2 model.
pub struct Nlvr2Model {
    pub model: ImageBertForMultipleChoice,
    pub params: crate::nn::Params,
    pub config: OscarConfig,
    pub settings: Nlvr2Config,
}

/// Fine-tunes on `set` with the one trainer (`files`: checkpoints, metrics, resume; `eval`: a
/// labelled split whose accuracy each evaluation reports); `on_step(step, loss, batch_accuracy)`.
#[allow(clippy::too_many_arguments)]
pub fn train(
    set: &Nlvr2Set,
    tok: &BertTokenizer,
    init: Option<&Path>,
    fresh: &OscarConfig,
    cfg: &Nlvr2Config,
    files: &RunFiles,
    eval: Option<&Nlvr2Set>,
    on_step: impl FnMut(u64, f64, f64),
) -> Result<Nlvr2Model> {
    if let Some(e) = set.examples.iter().find(|e| e.label.is_none()) {
        return Err(Error::Invalid(format!(
            "training statement {} has no label",
            e.id
        )));
    }
    let loaded = start::<ImageBertForMultipleChoice>(
        files.resume.as_deref().or(init),
        fresh,
        &cfg.optim,
        &files.device,
        |c| {
            c.num_labels = 2;
            c.num_choice = 2;
            c.classifier = ClassifierKind::Mlp;
            c.cls_hidden_scale = cfg.cls_hidden_scale;
            c.loss_type = LossType::Xe;
        },
    )?;
    let model = Nlvr2Model {
        model: loaded.model,
        params: loaded.params,
        config: loaded.config,
        settings: cfg.clone(),
    };
    let mut task = Nlvr2Task {
        set,
        tok,
        eval,
        order: EpochOrder::new(set.examples.len(), cfg.optim.seed)?,
        model,
        vocab: files.vocab.clone(),
    };
    run_task(&mut task, &cfg.optim, files, "accuracy", on_step)?;
    Ok(task.model)
}

/// NLVR2 fine-tuning as a task of the one trainer.
struct Nlvr2Task<'a> {
    set: &'a Nlvr2Set,
    tok: &'a BertTokenizer,
    eval: Option<&'a Nlvr2Set>,
    order: EpochOrder,
    model: Nlvr2Model,
    vocab: Option<std::path::PathBuf>,
}

impl TrainTask for Nlvr2Task<'_> {
    fn what(&self) -> &str {
        "NLVR2"
    }

    fn params(&self) -> &crate::nn::Params {
        &self.model.params
    }

    fn examples_per_step(&self) -> u64 {
        self.model.settings.optim.batch_size as u64
    }

    fn loss(
        &mut self,
        _step: u64,
        examples_seen: u64,
        rng: &mut StdRng,
        part: Replica<'_>,
    ) -> Result<StepLoss> {
        let cfg = &self.model.settings;
        part.check_batch(self.what(), cfg.optim.batch_size)?;
        let all = self.order.rows(examples_seen, cfg.optim.batch_size);
        let (b, rows) = (all.len(), part.rows(all.len()));
        let labels: Vec<i64> = all[rows.clone()]
            .iter()
            .map(|&i| self.set.examples[i].label.unwrap_or(0) as i64)
            .collect();
        // Two encoder rows per statement: the window is in rows.
        let x = batch_rows(
            self.tok,
            cfg,
            self.set,
            &all,
            2 * rows.start..2 * rows.end,
            &self.model.params.device(),
        )?;
        let ctx = Ctx::train_rows(rng.random(), 2 * rows.start, 2 * rows.end, 2 * b);
        let logits = self.model.model.forward(&x, &ctx)?;
        let loss = self
            .model
            .model
            .loss(&logits, ClassLabels::Index(&labels))?;
        let loss = part.share(Some(loss), labels.len(), b, &logits)?;
        let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
        let acc = pred
            .iter()
            .zip(&labels)
            .filter(|(p, l)| **p as i64 == **l)
            .count() as f64
            / b as f64;
        Ok(StepLoss {
            loss,
            metrics: Metrics::from([("accuracy".to_string(), acc)]),
        })
    }

    /// Accuracy and consistency (percent) on the evaluation split.
    fn evaluate(&mut self, _step: u64) -> Result<Option<Metrics>> {
        let Some(eval) = self.eval else {
            return Ok(None);
        };
        let e = self.model.evaluate(self.tok, eval, 64)?;
        Ok(Some(Metrics::from([
            ("accuracy".to_string(), e.accuracy),
            ("consistency".to_string(), e.consistency),
        ])))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.model.save(dir, self.vocab.as_deref())
    }
}

/// Accuracy and consistency on a labelled split.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Nlvr2Eval {
    pub statements: usize,
    /// Percent.
    pub accuracy: f64,
    /// Percent of statement groups judged right on every pair.
    pub consistency: f64,
    pub groups: usize,
    /// (id, predicted label, probability of "true").
    pub predictions: Vec<(String, u8, f32)>,
}

/// The statement group of an example: NLVR2 identifiers `split-set-pair-image` share their
/// first two parts; other ids group by the statement's text.
pub fn group_key(e: &Nlvr2Example) -> String {
    let parts: Vec<&str> = e.id.split('-').collect();
    if parts.len() == 4
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        format!("{}-{}", parts[0], parts[1])
    } else {
        e.statement.trim().to_lowercase()
    }
}

/// Accuracy and consistency of `predicted` labels against the examples' labels.
pub fn accuracy_and_consistency(
    examples: &[Nlvr2Example],
    predicted: &[u8],
) -> Result<(f64, f64, usize)> {
    if examples.len() != predicted.len() || examples.is_empty() {
        return Err(Error::Invalid(format!(
            "{} predictions for {} statements",
            predicted.len(),
            examples.len()
        )));
    }
    let mut groups: BTreeMap<String, bool> = BTreeMap::new();
    let mut right = 0;
    for (e, &p) in examples.iter().zip(predicted) {
        let label = e.label.ok_or_else(|| {
            Error::Invalid(format!(
                "statement {} has no label to evaluate against",
                e.id
            ))
        })?;
        let ok = label == p;
        right += ok as usize;
        *groups.entry(group_key(e)).or_insert(true) &= ok;
    }
    let consistent = groups.values().filter(|v| **v).count();
    Ok((
        100.0 * right as f64 / examples.len() as f64,
        100.0 * consistent as f64 / groups.len() as f64,
        groups.len(),
    ))
}

impl Nlvr2Model {
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
        let settings: Nlvr2Config = super::finetune::saved_settings(dir, "nlvr2.json")?;
        let l = load_model_at::<ImageBertForMultipleChoice>(
            read_checkpoint(dir)?,
            Fresh::Nothing,
            device,
            precision,
        )?;
        Ok(Nlvr2Model {
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
        write_atomic(&dir.join("nlvr2.json"), body.as_bytes())
    }

    /// P(true) of every statement of `set`.
    pub fn predict(
        &self,
        tok: &BertTokenizer,
        set: &Nlvr2Set,
        batch_size: usize,
    ) -> Result<Vec<f32>> {
        let _no_grad = crate::nn::NoGrad::new();
        let idx: Vec<usize> = (0..set.examples.len()).collect();
        let mut out = Vec::with_capacity(idx.len());
        for chunk in idx.chunks(batch_size.max(1)) {
            let p = ops::softmax(&self.model.forward(
                &batch(tok, &self.settings, set, chunk, &self.params.device())?,
                &Ctx::eval(),
            )?)?;
            out.extend(p.narrow(1, 1, 1)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    pub fn evaluate(
        &self,
        tok: &BertTokenizer,
        set: &Nlvr2Set,
        batch_size: usize,
    ) -> Result<Nlvr2Eval> {
        let p = self.predict(tok, set, batch_size)?;
        let labels: Vec<u8> = p.iter().map(|&x| (x > 0.5) as u8).collect();
        let (accuracy, consistency, groups) = accuracy_and_consistency(&set.examples, &labels)?;
        let predictions = set
            .examples
            .iter()
            .zip(labels.iter().zip(&p))
            .map(|(e, (&l, &x))| (e.id.clone(), l, x))
            .collect();
        Ok(Nlvr2Eval {
            statements: set.examples.len(),
            accuracy,
            consistency,
            groups,
            predictions,
        })
    }
}
