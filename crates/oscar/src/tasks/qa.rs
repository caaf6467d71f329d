//! Visual question answering: VQA v2 (`oscar/run_vqa.py`, oscar-spec §3.1) and GQA
//! (`oscar/run_gqa.py`, §3.2). Input `[CLS] question [SEP] tags [SEP]` + regions, pair
//! truncation, a classifier over the answer vocabulary on the pooled [CLS]. VQA: BCE against the
//! soft-score vector (× num_labels), scored by the soft score of the argmax answer during
//! training and by the official accuracy after; GQA: cross-entropy on the answer, accuracy.

use super::finetune::{run_task, start, Optim, RunFiles};
use crate::checkpoint::{load_model_at, read_checkpoint, save_pretrained, write_atomic, Fresh};
use crate::config::{ClassifierKind, LossType, OscarConfig};
use crate::data::features::{FeatureStore, Regions};
use crate::data::tensorize::{collate_dynamic, collate_rows, Encoded, Layout, Truncation};
use crate::data::text::{read_qa, AnswerVocab, QaExample};
use crate::error::{Error, Result};
use crate::model::{ClassLabels, ImageBertForSequenceClassification, Inputs};
use crate::nn::{ops, Ctx};
use crate::tokenizer::BertTokenizer;
use crate::train::collective::Replica;
use crate::train::trainer::{EpochOrder, Metrics, StepLoss, TrainTask};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::HashMap;
use std::path::Path;

/// Which benchmark's head and loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QaKind {
    /// Soft scores, BCE, VQA accuracy.
    #[default]
    Vqa,
    /// One answer, cross-entropy, exact-match accuracy.
    Gqa,
}

impl std::str::FromStr for QaKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "vqa" => Ok(QaKind::Vqa),
            "gqa" => Ok(QaKind::Gqa),
            _ => Err(format!("task {s:?}: expected vqa or gqa")),
        }
    }
}

/// Settings of a VQA/GQA run (TOML: every key optional). Defaults are the reference's (VQA:
/// `max_seq_length 128`, `max_img_seq_length 50`, dropout 0.3, wd 0.05, warm-up 0, linear head),
/// except the learning rate and step count, which are sized for the tiny models of the world.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct QaConfig {
    #[serde(flatten)]
    pub optim: Optim,
    pub task: QaKind,
    pub max_seq_length: usize,
    pub max_img_seq_length: usize,
    pub use_tags: bool,
    pub classifier: ClassifierKind,
    pub cls_hidden_scale: usize,
}

impl Default for QaConfig {
    fn default() -> Self {
        QaConfig {
            optim: Optim {
                warmup_steps: 0,
                drop_out: Some(0.3),
                ..Optim::default()
            },
            task: QaKind::Vqa,
            max_seq_length: 128,
            max_img_seq_length: 50,
            use_tags: true,
            classifier: ClassifierKind::Linear,
            cls_hidden_scale: 3,
        }
    }
}

impl QaConfig {
    /// GQA's reference defaults (`max_seq_length 165`, `max_img_seq_length 45`).
    pub fn gqa() -> Self {
        QaConfig {
            task: QaKind::Gqa,
            max_seq_length: 165,
            max_img_seq_length: 45,
            ..QaConfig::default()
        }
    }

    fn layout(&self) -> Layout {
        Layout {
            max_seq_length: self.max_seq_length,
            max_img_seq_length: self.max_img_seq_length,
            truncation: Truncation::Pair,
        }
    }
}

/// Questions of one split with the region features of their images.
pub struct QaSet {
    pub examples: Vec<QaExample>,
    pub features: HashMap<String, Regions>,
}

impl QaSet {
    /// Reads a question file (`q`, `o`, `an`, `s`, `img_id`, `q_id`) and the features of every
    /// image it names; answer ids must lie in the vocabulary of `num_answers`.
    pub fn open(
        questions: &Path,
        features: &Path,
        img_feature_dim: usize,
        num_answers: usize,
    ) -> Result<Self> {
        let examples = read_qa(questions, Some(num_answers))?;
        let store = FeatureStore::open(features, img_feature_dim)?;
        let mut feats = HashMap::new();
        for e in &examples {
            if !feats.contains_key(&e.img_id) {
                let r = store.get(&e.img_id).map_err(|err| {
                    Error::bad_file(questions, format!("question {}: {err}", e.q_id))
                })?;
                feats.insert(e.img_id.clone(), r);
            }
        }
        Ok(QaSet {
            examples,
            features: feats,
        })
    }

    fn dim(&self) -> usize {
        self.features.values().next().map(|r| r.dim).unwrap_or(1)
    }
}

/// GQA's target: the answer with the highest score (the first on ties; GQA files hold one).
pub fn best_answer(e: &QaExample) -> Option<usize> {
    e.answers
        .iter()
        .fold(None, |best: Option<(usize, f32)>, &(a, s)| match best {
            Some((_, bs)) if bs >= s => best,
            _ => Some((a, s)),
        })
        .map(|(a, _)| a)
}

/// The soft score the reference credits to a predicted label (0 when it is not a listed answer).
pub fn soft_score(e: &QaExample, label: usize) -> f32 {
    e.answers
        .iter()
        .filter(|(a, _)| *a == label)
        .map(|(_, s)| *s)
        .fold(0.0, f32::max)
}

/// A VQA/GQA model with its settings and answer vocabulary.
pub struct Answerer {
    pub model: ImageBertForSequenceClassification,
    pub params: crate::nn::Params,
    pub config: OscarConfig,
    pub settings: QaConfig,
    pub answers: AnswerVocab,
}

fn encode(
    tok: &BertTokenizer,
    cfg: &QaConfig,
    question: &str,
    tags: &str,
    r: &Regions,
) -> Result<Encoded> {
    let tags = if cfg.use_tags {
        Some(tags).filter(|t| !t.trim().is_empty())
    } else {
        None
    };
    cfg.layout().encode(tok, question, tags, &r.data, r.dim)
}

fn batch(
    tok: &BertTokenizer,
    cfg: &QaConfig,
    set: &QaSet,
    idx: &[usize],
    device: &Device,
) -> Result<Inputs> {
    batch_rows(tok, cfg, set, idx, 0..idx.len(), device)
}

/// The `rows` of the batch of questions `idx`, padded to the whole batch's lengths.
fn batch_rows(
    tok: &BertTokenizer,
    cfg: &QaConfig,
    set: &QaSet,
    idx: &[usize],
    rows: std::ops::Range<usize>,
    device: &Device,
) -> Result<Inputs> {
    let items = idx
        .iter()
        .map(|&i| {
            let e = &set.examples[i];
            encode(tok, cfg, &e.question, &e.tags, &set.features[&e.img_id])
        })
        .collect::<Result<Vec<_>>>()?;
    collate_rows(&items, rows, set.dim(), device)
}

/// Fine-tunes on `set` with the one trainer (`files`: checkpoints, metrics, resume; `eval`:
/// a labelled split scored at each evaluation). `on_step(step, loss, batch_score)`: the batch
/// score is the mean soft score of the argmax answers (VQA) or the accuracy (GQA), as the
/// reference logs.
#[allow(clippy::too_many_arguments)]
pub fn train(
    set: &QaSet,
    tok: &BertTokenizer,
    answers: &AnswerVocab,
    init: Option<&Path>,
    fresh: &OscarConfig,
    cfg: &QaConfig,
    files: &RunFiles,
    eval: Option<&QaSet>,
    on_step: impl FnMut(u64, f64, f64),
) -> Result<Answerer> {
    let n = answers.len();
    let loaded = start::<ImageBertForSequenceClassification>(
        files.resume.as_deref().or(init),
        fresh,
        &cfg.optim,
        &files.device,
        |c| {
            c.num_labels = n;
            c.classifier = cfg.classifier;
            c.cls_hidden_scale = cfg.cls_hidden_scale;
            c.loss_type = match cfg.task {
                QaKind::Vqa => LossType::Bce,
                QaKind::Gqa => LossType::Xe,
            };
        },
    )?;
    let model = Answerer {
        model: loaded.model,
        params: loaded.params,
        config: loaded.config,
        settings: cfg.clone(),
        answers: answers.clone(),
    };
    let mut task = QaTask {
        set,
        tok,
        eval,
        order: EpochOrder::new(set.examples.len(), cfg.optim.seed)?,
        model,
        vocab: files.vocab.clone(),
    };
    run_task(&mut task, &cfg.optim, files, "batch_score", on_step)?;
    Ok(task.model)
}

/// VQA / GQA fine-tuning as a task of the one trainer.
struct QaTask<'a> {
    set: &'a QaSet,
    tok: &'a BertTokenizer,
    eval: Option<&'a QaSet>,
    order: EpochOrder,
    model: Answerer,
    vocab: Option<std::path::PathBuf>,
}

impl TrainTask for QaTask<'_> {
    fn what(&self) -> &str {
        "question answering"
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
        let (cfg, set, n) = (&self.model.settings, self.set, self.model.answers.len());
        part.check_batch(self.what(), cfg.optim.batch_size)?;
        let all = self.order.rows(examples_seen, cfg.optim.batch_size);
        let rows = part.rows(all.len());
        let dev = self.model.params.device();
        let x = batch_rows(self.tok, cfg, set, &all, rows.clone(), &dev)?;
        let logits = self
            .model
            .model
            .forward(&x, &part.ctx(rng.random(), all.len()))?;
        let idx = &all[rows];
        let loss = match cfg.task {
            QaKind::Vqa => {
                let mut t = vec![0f32; idx.len() * n];
                for (row, &i) in idx.iter().enumerate() {
                    for &(a, s) in &set.examples[i].answers {
                        t[row * n + a] = s;
                    }
                }
                let l = self.model.model.loss(
                    &logits,
                    ClassLabels::Dense(&Tensor::from_vec(t, (idx.len(), n), &dev)?),
                )?;
                part.share(Some(l), idx.len(), all.len(), &logits)?
            }
            QaKind::Gqa => {
                // Unanswered training questions are ignored (-100), as CrossEntropyLoss would.
                let label = |i: usize| best_answer(&set.examples[i]).map_or(-100, |a| a as i64);
                let labels: Vec<i64> = idx.iter().map(|&i| label(i)).collect();
                let answered = |l: &[i64]| l.iter().filter(|l| **l != -100).count();
                let global: Vec<i64> = all.iter().map(|&i| label(i)).collect();
                if answered(&global) == 0 {
                    return Err(Error::Invalid(
                        "GQA: no question of the batch has an answer in the answer list".into(),
                    ));
                }
                let l = match answered(&labels) {
                    0 => None,
                    _ => Some(
                        self.model
                            .model
                            .loss(&logits, ClassLabels::Index(&labels))?,
                    ),
                };
                part.share(l, answered(&labels), answered(&global), &logits)?
            }
        };
        let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
        let score = idx
            .iter()
            .zip(&pred)
            .map(|(&i, &p)| batch_credit(cfg.task, &set.examples[i], p as usize))
            .sum::<f64>()
            / all.len() as f64;
        Ok(StepLoss {
            loss,
            metrics: Metrics::from([("batch_score".to_string(), score)]),
        })
    }

    /// The score on the evaluation split: the soft score of the argmax answer (VQA) or the
    /// accuracy (GQA), percent.
    fn evaluate(&mut self, _step: u64) -> Result<Option<Metrics>> {
        let Some(eval) = self.eval else {
            return Ok(None);
        };
        let e = self.model.evaluate(self.tok, eval, 128, |_| {})?;
        Ok(Some(Metrics::from([("score".to_string(), e.score)])))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.model.save(dir, self.vocab.as_deref())
    }
}

fn batch_credit(task: QaKind, e: &QaExample, label: usize) -> f64 {
    match task {
        QaKind::Vqa => soft_score(e, label) as f64,
        QaKind::Gqa => (best_answer(e) == Some(label)) as u8 as f64,
    }
}

/// One question's ranked answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Prediction {
    pub question_id: String,
    /// (answer, probability): sigmoid for VQA's independent answers, softmax for GQA.
    pub top: Vec<(String, f32)>,
}

/// Results of evaluating a labelled split.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QaEval {
    pub questions: usize,
    /// Mean soft score of the argmax answer (VQA) or accuracy (GQA), percent.
    pub score: f64,
    pub predictions: Vec<Prediction>,
}

impl Answerer {
    /// Loads a model saved by [`Answerer::save`] (weights, `qa.json`, `label2ans.json`).
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
        let settings: QaConfig = super::finetune::saved_settings(dir, "qa.json")?;
        let vocab_path = dir.join("label2ans.json");
        let answers = AnswerVocab::read(&vocab_path)?;
        let l = load_model_at::<ImageBertForSequenceClassification>(
            read_checkpoint(dir)?,
            Fresh::Nothing,
            device,
            precision,
        )?;
        if l.config.num_labels != answers.len() {
            return Err(Error::bad_file(
                &vocab_path,
                format!(
                    "{} answers, but the model's head has {} labels",
                    answers.len(),
                    l.config.num_labels
                ),
            ));
        }
        Ok(Answerer {
            model: l.model,
            params: l.params,
            config: l.config,
            settings,
            answers,
        })
    }

    pub fn save(&self, dir: &Path, vocab: Option<&Path>) -> Result<()> {
        save_pretrained(dir, &self.params, &self.config, vocab)?;
        let json = |v: serde_json::Result<String>| v.map_err(|e| Error::Invalid(e.to_string()));
        write_atomic(
            &dir.join("qa.json"),
            json(serde_json::to_string_pretty(&self.settings))?.as_bytes(),
        )?;
        write_atomic(
            &dir.join("label2ans.json"),
            json(serde_json::to_string(&self.answers.label2ans))?.as_bytes(),
        )
    }

    /// Answer probabilities `[B, num_answers]` for a batch.
    fn probabilities(&self, x: &Inputs) -> Result<Tensor> {
        let _no_grad = crate::nn::NoGrad::new();
        let logits = self.model.forward(x, &Ctx::eval())?;
        Ok(match self.settings.task {
            // σ(x) = 1 / (1 + e^−x)
            QaKind::Vqa => (logits.neg()?.exp()? + 1.0)?.recip()?,
            QaKind::Gqa => ops::softmax(&logits)?,
        })
    }

    fn top(&self, row: &[f32], k: usize) -> Vec<(String, f32)> {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|a, b| row[*b].total_cmp(&row[*a]).then(a.cmp(b)));
        idx.into_iter()
            .take(k.max(1))
            .map(|i| (self.answers.label2ans[i].clone(), row[i]))
            .collect()
    }

    /// Ranked answers for every question of `set`, in batches.
    pub fn predict(
        &self,
        tok: &BertTokenizer,
        set: &QaSet,
        batch_size: usize,
        k: usize,
        progress: impl FnMut(usize),
    ) -> Result<Vec<Prediction>> {
        let idx: Vec<usize> = (0..set.examples.len()).collect();
        self.predict_some(tok, set, &idx, batch_size, k, progress)
    }

    /// [`Self::predict`] for the questions at positions `idx` of `set` (a shard's), in that order.
    pub fn predict_some(
        &self,
        tok: &BertTokenizer,
        set: &QaSet,
        idx: &[usize],
        batch_size: usize,
        k: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Prediction>> {
        let mut out = Vec::with_capacity(idx.len());
        for chunk in idx.chunks(batch_size.max(1)) {
            let p = self
                .probabilities(&batch(
                    tok,
                    &self.settings,
                    set,
                    chunk,
                    &self.params.device(),
                )?)?
                .to_vec2::<f32>()?;
            for (&i, row) in chunk.iter().zip(&p) {
                out.push(Prediction {
                    question_id: set.examples[i].q_id.clone(),
                    top: self.top(row, k),
                });
            }
            progress(chunk.len());
        }
        Ok(out)
    }

    /// Predicts and scores a labelled split the way the reference's evaluation does.
    pub fn evaluate(
        &self,
        tok: &BertTokenizer,
        set: &QaSet,
        batch_size: usize,
        progress: impl FnMut(usize),
    ) -> Result<QaEval> {
        let predictions = self.predict(tok, set, batch_size, 5, progress)?;
        let a2l = self.answers.ans2label();
        let total: f64 = set
            .examples
            .iter()
            .zip(&predictions)
            .map(|(e, p)| batch_credit(self.settings.task, e, a2l[p.top[0].0.as_str()]))
            .sum();
        Ok(QaEval {
            questions: set.examples.len(),
            score: 100.0 * total / set.examples.len().max(1) as f64,
            predictions,
        })
    }

    /// Top-`k` answers to one question about one image.
    pub fn answer(
        &self,
        tok: &BertTokenizer,
        question: &str,
        tags: &str,
        regions: &Regions,
        k: usize,
    ) -> Result<Vec<(String, f32)>> {
        if regions.dim != self.config.img_feature_dim {
            return Err(Error::Invalid(format!(
                "the image has {}-d region features, the model expects {}",
                regions.dim, self.config.img_feature_dim
            )));
        }
        let e = encode(tok, &self.settings, question, tags, regions)?;
        let p = self
            .probabilities(&collate_dynamic(&[e], regions.dim, &self.params.device())?)?
            .to_vec2::<f32>()?;
        Ok(self.top(&p[0], k))
    }
}

/// The official submission format: `[{"question_id", "answer"}]` with the top answer.
pub fn submission(preds: &[Prediction]) -> serde_json::Value {
    let id = |q: &str| {
        q.parse::<i64>()
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| q.into())
    };
    preds
        .iter()
        .map(|p| serde_json::json!({"question_id": id(&p.question_id), "answer": p.top[0].0}))
        .collect()
}

/// Answers of a majority baseline: the most frequent training answer overall, and the most
/// frequent one per question type (`question_type` of the annotations).
pub fn majority_answers(
    train: &[oscar_eval::vqa::Annotation],
    test: &[oscar_eval::vqa::Annotation],
) -> (HashMap<String, String>, HashMap<String, String>) {
    fn most_common<'a>(it: impl Iterator<Item = &'a str>) -> String {
        let mut c: std::collections::BTreeMap<&str, usize> = Default::default();
        for a in it {
            *c.entry(a).or_default() += 1;
        }
        c.into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(a, _)| a.to_string())
            .unwrap_or_default()
    }
    let top = |a: &oscar_eval::vqa::Annotation| most_common(a.answer_texts());
    let tops: Vec<(String, String)> = train
        .iter()
        .map(|a| (a.question_type.clone(), top(a)))
        .collect();
    let overall = most_common(tops.iter().map(|(_, a)| a.as_str()));
    let per_type: HashMap<&str, String> = tops
        .iter()
        .map(|(t, _)| t.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|t| {
            (
                t,
                most_common(tops.iter().filter(|(q, _)| q == t).map(|(_, a)| a.as_str())),
            )
        })
        .collect();
    let global = test
        .iter()
        .map(|a| (a.question_id.clone(), overall.clone()))
        .collect();
    let typed = test
        .iter()
        .map(|a| {
            (
                a.question_id.clone(),
                per_type
                    .get(a.question_type.as_str())
                    .cloned()
                    .unwrap_or_else(|| overall.clone()),
            )
        })
        .collect();
    (global, typed)
}
