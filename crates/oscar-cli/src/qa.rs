//! `oscar train vqa|gqa|nlvr2` and `oscar answer`: the understanding tasks (issue 8).

use crate::search::image_tags;
use crate::{steps_bar, world_dim, StepLog};
use anyhow::{bail, Context, Result};
use clap::Args;
use oscar::data::features::FeatureStore;
use oscar::data::text::AnswerVocab;
use oscar::tasks::finetune::settings_from_toml;
use oscar::tasks::nlvr2::{Nlvr2Config, Nlvr2Set};
use oscar::tasks::qa::{majority_answers, submission, Answerer, QaConfig, QaKind, QaSet};
use oscar::tokenizer::BertTokenizer;
use oscar::OscarConfig;
use std::path::{Path, PathBuf};

/// Options every fine-tuning command shares.
#[derive(Args, Clone)]
pub struct CommonTrain {
    /// A world-style dataset directory (default file locations inside it).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Start from this checkpoint (pre-training, BERT or task); otherwise from scratch.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Settings in TOML (every key optional); flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// `--drop_out` of the reference: every dropout probability.
    #[arg(long)]
    pub drop_out: Option<f64>,
    /// Leave the object tags out of the input.
    #[arg(long)]
    pub no_tags: bool,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Region feature width (default: the world's).
    #[arg(long)]
    pub img_feature_dim: Option<usize>,
    /// Region features (default DATA/features/features.tsv).
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// Shape of a model trained from scratch: a config.json (default: the small config,
    /// hidden 64, 2 layers, 2 heads). Not with --init, whose checkpoint has its own.
    #[arg(long, conflicts_with = "init")]
    pub model_config: Option<PathBuf>,
    #[command(flatten)]
    pub run: crate::RunArgs,
}

impl CommonTrain {
    /// The run's files: checkpoints, metrics and resume in `--out`, the data's vocabulary.
    pub fn files(&self) -> oscar::tasks::finetune::RunFiles {
        self.run.files(&self.out, &self.data.join("vocab.txt"))
    }

    pub fn apply(&self, o: &mut oscar::tasks::finetune::Optim, use_tags: &mut bool) {
        if let Some(v) = self.steps {
            o.steps = v;
        }
        if let Some(v) = self.batch_size {
            o.batch_size = v;
        }
        if let Some(v) = self.lr {
            o.lr = v;
        }
        if let Some(v) = self.drop_out {
            o.drop_out = Some(v);
        }
        if let Some(v) = self.seed {
            o.seed = v;
        }
        if self.no_tags {
            *use_tags = false;
        }
    }

    pub fn dim(&self) -> Result<usize> {
        match self.img_feature_dim {
            Some(d) => Ok(d),
            None => world_dim(&self.data),
        }
    }

    /// The config of a model trained from scratch (`--model-config` or the small one).
    pub fn fresh(&self, vocab_size: usize, dim: usize) -> Result<OscarConfig> {
        Ok(oscar::tasks::finetune::scratch_config(
            self.model_config.as_deref(),
            vocab_size,
            dim,
        )?)
    }

    pub fn features(&self) -> PathBuf {
        self.features
            .clone()
            .unwrap_or_else(|| self.data.join("features/features.tsv"))
    }
}

#[derive(Args)]
pub struct QaArgs {
    #[command(flatten)]
    pub common: CommonTrain,
    /// Training questions (default DATA/vqa/train.json).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Questions to evaluate after training (default DATA/vqa/test.json).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Official annotations of the evaluated questions (default DATA/vqa/test_annotations.json
    /// when present; VQA only) for the official accuracy by question and answer type.
    #[arg(long)]
    pub annotations: Option<PathBuf>,
    /// Training annotations, for the majority-answer baselines (default DATA/vqa/train_annotations.json).
    #[arg(long)]
    pub train_annotations: Option<PathBuf>,
    /// Answer vocabulary: ans2label / label2ans as JSON or pickle (default DATA/vqa/ans2label.json).
    #[arg(long)]
    pub answers: Option<PathBuf>,
    /// Answer head over the pooled output (the reference's `--classifier`): `linear` (its
    /// default) or `mlp` (Linear, ReLU, Linear of width hidden·`cls_hidden_scale`).
    #[arg(long, value_parser = ["linear", "mlp"])]
    pub classifier: Option<String>,
}

fn or_default(p: &Option<PathBuf>, dir: &Path, rel: &str) -> PathBuf {
    p.clone().unwrap_or_else(|| dir.join(rel))
}

/// The figures of a VQA/GQA run, for logs, the demo and `eval.json`.
#[derive(serde::Serialize)]
pub struct QaRun {
    pub task: QaKind,
    /// Reference-style score (VQA: soft score of the argmax; GQA: accuracy), percent.
    pub score: f64,
    /// Official VQA accuracy, with breakdowns (VQA with annotations).
    pub official: Option<oscar_eval::vqa::VqaScores>,
    /// Official accuracy of answering every question with the most common training answer,
    /// and with the most common answer of its question type.
    pub majority_overall: Option<f64>,
    pub majority_per_type: Option<f64>,
    pub curve: Vec<(f64, f64)>,
    pub seconds: f64,
}

pub fn run_qa(kind: QaKind, a: &QaArgs) -> Result<QaRun> {
    let c = &a.common;
    let t0 = std::time::Instant::now();
    let mut cfg = match &c.config {
        Some(p) => settings_from_toml::<QaConfig>(p)?,
        None if kind == QaKind::Gqa => QaConfig::gqa(),
        None => QaConfig::default(),
    };
    cfg.task = kind;
    c.apply(&mut cfg.optim, &mut cfg.use_tags);
    match a.classifier.as_deref() {
        Some("mlp") => cfg.classifier = oscar::config::ClassifierKind::Mlp,
        Some(_) => cfg.classifier = oscar::config::ClassifierKind::Linear,
        None => {}
    }
    let dim = c.dim()?;
    let vocab = c.data.join("vocab.txt");
    let tok = BertTokenizer::from_vocab(&vocab)?;
    let answers = AnswerVocab::read(&or_default(&a.answers, &c.data, "vqa/ans2label.json"))?;
    let train_set = QaSet::open(
        &or_default(&a.train, &c.data, "vqa/train.json"),
        &c.features(),
        dim,
        answers.len(),
    )?;
    let fresh = c.fresh(tok.vocab_size(), dim)?;
    let name = format!("train {kind:?}").to_lowercase();
    std::fs::create_dir_all(&c.out).with_context(|| format!("creating {}", c.out.display()))?;
    let mut steps = StepLog::new(cfg.optim.steps, &name, "batch_score");
    // The held-out split each evaluation during training scores (the world's val split).
    let val_path = c.data.join(if kind == QaKind::Vqa {
        "vqa/val.json"
    } else {
        "gqa/val.json"
    });
    let val = if val_path.exists() {
        Some(QaSet::open(&val_path, &c.features(), dim, answers.len())?)
    } else {
        None
    };
    let model = oscar::tasks::qa::train(
        &train_set,
        &tok,
        &answers,
        c.init.as_deref(),
        &fresh,
        &cfg,
        &c.files(),
        val.as_ref(),
        |k, loss, score| steps.record(k, loss, score),
    )?;
    let curve = steps.finish();
    model.save(&c.out, Some(&vocab))?;

    let eval_path = or_default(&a.eval, &c.data, "vqa/test.json");
    let eval_set = QaSet::open(&eval_path, &c.features(), dim, answers.len())?;
    let e = model.evaluate(&tok, &eval_set, 128, |_| {})?;
    let sub = submission(&e.predictions);
    oscar::checkpoint::write_atomic(
        &c.out.join("results.json"),
        serde_json::to_string(&sub)?.as_bytes(),
    )?;
    let mut run = QaRun {
        task: kind,
        score: e.score,
        official: None,
        majority_overall: None,
        majority_per_type: None,
        curve,
        seconds: 0.0,
    };
    let ann_path = a.annotations.clone().or_else(|| {
        let stem = eval_path.file_stem()?.to_str()?.to_string();
        Some(eval_path.with_file_name(format!("{stem}_annotations.json"))).filter(|p| p.exists())
    });
    if let (QaKind::Vqa, Some(ann)) = (kind, ann_path) {
        use oscar_eval::vqa::{evaluate_vqa, read_annotations};
        let anns = read_annotations(&ann)?;
        let results: std::collections::HashMap<String, String> = e
            .predictions
            .iter()
            .map(|p| (p.question_id.clone(), p.top[0].0.clone()))
            .collect();
        run.official = Some(evaluate_vqa(&anns, &results, false)?);
        let train_ann = or_default(&a.train_annotations, &c.data, "vqa/train_annotations.json");
        if train_ann.exists() {
            let (overall, typed) = majority_answers(&read_annotations(&train_ann)?, &anns);
            run.majority_overall = Some(evaluate_vqa(&anns, &overall, false)?.overall);
            run.majority_per_type = Some(evaluate_vqa(&anns, &typed, false)?.overall);
        }
    }
    run.seconds = t0.elapsed().as_secs_f64();
    oscar::checkpoint::write_atomic(
        &c.out.join("eval.json"),
        serde_json::to_string_pretty(&run)?.as_bytes(),
    )?;
    Ok(run)
}

pub fn print_qa(run: &QaRun, out: &Path) {
    let label = if run.task == QaKind::Vqa {
        "soft score of the argmax answer"
    } else {
        "accuracy"
    };
    outln!(
        "{:?} on {}: {label} {:.1} %",
        run.task,
        out.display(),
        run.score
    );
    if let Some(o) = &run.official {
        outln!(
            "official VQA accuracy {:.2} % over {} questions",
            o.overall,
            o.questions
        );
        for (t, v) in &o.per_question_type {
            outln!("  {t:<30} {v:6.2}");
        }
    }
    if let (Some(m), Some(t)) = (run.majority_overall, run.majority_per_type) {
        outln!("majority-answer baselines: overall {m:.2} %, per question type {t:.2} %");
    }
    outln!(
        "model, results.json (submission format) and eval.json in {} ({:.0} s)",
        out.display(),
        run.seconds
    );
}

#[derive(Args)]
pub struct Nlvr2Args {
    #[command(flatten)]
    pub common: CommonTrain,
    /// Training statements (default DATA/nlvr2/train.json).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Labelled statements to evaluate (default DATA/nlvr2/dev.json and DATA/nlvr2/test.json).
    #[arg(long)]
    pub eval: Vec<PathBuf>,
}

#[derive(serde::Serialize)]
pub struct Nlvr2Run {
    /// (file, accuracy %, consistency %, statements).
    pub splits: Vec<(String, f64, f64, usize)>,
    pub curve: Vec<(f64, f64)>,
    pub seconds: f64,
}

pub fn run_nlvr2(a: &Nlvr2Args) -> Result<Nlvr2Run> {
    let c = &a.common;
    let t0 = std::time::Instant::now();
    let mut cfg = match &c.config {
        Some(p) => settings_from_toml::<Nlvr2Config>(p)?,
        None => Nlvr2Config::default(),
    };
    c.apply(&mut cfg.optim, &mut cfg.use_tags);
    let dim = c.dim()?;
    let vocab = c.data.join("vocab.txt");
    let tok = BertTokenizer::from_vocab(&vocab)?;
    let train_set = Nlvr2Set::open(
        &or_default(&a.train, &c.data, "nlvr2/train.json"),
        &c.features(),
        dim,
    )?;
    std::fs::create_dir_all(&c.out).with_context(|| format!("creating {}", c.out.display()))?;
    let mut steps = StepLog::new(cfg.optim.steps, "train nlvr2", "accuracy");
    let dev_path = c.data.join("nlvr2/dev.json");
    let dev = if dev_path.exists() {
        Some(Nlvr2Set::open(&dev_path, &c.features(), dim)?)
    } else {
        None
    };
    let model = oscar::tasks::nlvr2::train(
        &train_set,
        &tok,
        c.init.as_deref(),
        &c.fresh(tok.vocab_size(), dim)?,
        &cfg,
        &c.files(),
        dev.as_ref(),
        |k, loss, acc| steps.record(k, loss, acc),
    )?;
    let curve = steps.finish();
    model.save(&c.out, Some(&vocab))?;
    let evals = if a.eval.is_empty() {
        vec![
            c.data.join("nlvr2/dev.json"),
            c.data.join("nlvr2/test.json"),
        ]
    } else {
        a.eval.clone()
    };
    let mut splits = Vec::new();
    let mut details = serde_json::Map::new();
    for p in evals.iter().filter(|p| !a.eval.is_empty() || p.exists()) {
        let set = Nlvr2Set::open(p, &c.features(), dim)?;
        let e = model.evaluate(&tok, &set, 64)?;
        splits.push((
            p.display().to_string(),
            e.accuracy,
            e.consistency,
            e.statements,
        ));
        details.insert(p.display().to_string(), serde_json::to_value(&e)?);
    }
    let run = Nlvr2Run {
        splits,
        curve,
        seconds: t0.elapsed().as_secs_f64(),
    };
    let mut j = serde_json::to_value(&run)?;
    j["predictions"] = serde_json::Value::Object(details);
    oscar::checkpoint::write_atomic(
        &c.out.join("eval.json"),
        serde_json::to_string_pretty(&j)?.as_bytes(),
    )?;
    Ok(run)
}

pub fn print_nlvr2(run: &Nlvr2Run, out: &Path) {
    for (f, acc, cons, n) in &run.splits {
        outln!("NLVR2 {f}: accuracy {acc:.1} %, consistency {cons:.1} % ({n} statements)");
    }
    outln!(
        "model and eval.json in {} ({:.0} s)",
        out.display(),
        run.seconds
    );
}

#[derive(Args)]
pub struct AnswerArgs {
    /// Where to compute: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
    /// Linear layers in dynamic int8 (`int8`: weights per channel, activations per row; about
    /// twice the f32 speed on AVX2 CPUs) or `f32` (the reference's numerics).
    #[arg(long, value_name = "int8|f32", default_value = "f32")]
    quantize: oscar::nn::int8::Precision,
    /// A VQA/GQA checkpoint (`oscar train vqa --out`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Region features (features.tsv, *.feature.tsv or a torch feature dict).
    #[arg(long, required_unless_present = "image_file")]
    features: Option<PathBuf>,
    #[command(flatten)]
    photos: crate::detect::PhotoArgs,
    /// One image's id in the feature file (with --question)…
    #[arg(long, requires = "question")]
    image: Option<String>,
    #[arg(long)]
    question: Option<String>,
    /// …or a question file (VQA JSON list) to answer in full, written in the submission format.
    #[arg(long, conflicts_with_all = ["image", "question"])]
    questions: Option<PathBuf>,
    /// Where to write the submission JSON (with --questions).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Detector labels for the image's tags, or the tags themselves.
    #[arg(long, conflicts_with = "tags")]
    labels: Option<PathBuf>,
    #[arg(long)]
    tags: Option<String>,
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// With --questions: answer only part K of N of them (round-robin; 0-based K, as a Slurm
    /// array's task id) into the part file `--out` (resumable); join the parts with `oscar merge`
    /// (which scores them with `--annotations`).
    #[arg(long, requires_all = ["out", "questions"])]
    shard: Option<oscar::data::shard::Shard>,
}

/// `oscar answer --questions F --shard K/N --out PART`: this shard's questions, 512 at a time,
/// each block saved to the part file before the next (a rerun resumes).
fn answer_shard(
    m: &Answerer,
    tok: &BertTokenizer,
    set: &QaSet,
    a: &AnswerArgs,
    shard: oscar::data::shard::Shard,
    out: &std::path::Path,
) -> Result<()> {
    let ids: Vec<&str> = set.examples.iter().map(|e| e.q_id.as_str()).collect();
    let context = serde_json::json!({"checkpoint": a.checkpoint});
    let mut part = oscar::data::shard::Part::<serde_json::Value>::resume(
        out, "answers", shard, &ids, context,
    )?;
    let bar = steps_bar(
        (part.todo(shard).len() + part.results.len()) as u64,
        "answer",
    );
    bar.set_position(part.results.len() as u64);
    part.fill(out, shard, 512, |block| -> Result<Vec<serde_json::Value>> {
        let preds = m.predict_some(tok, set, block, 128, a.top, |n| bar.inc(n as u64))?;
        Ok(oscar::tasks::qa::submission(&preds)
            .as_array()
            .cloned()
            .unwrap_or_default())
    })?;
    bar.finish_and_clear();
    outln!(
        "shard {}: {} of {} questions answered into {} (join the parts with `oscar merge`)",
        part.shard,
        part.results.len(),
        part.total,
        out.display()
    );
    Ok(())
}

pub fn answer(a: &AnswerArgs) -> Result<()> {
    if !a.photos.is_empty() {
        let Some(question) = &a.question else {
            bail!("--image-file needs --question")
        };
        if a.questions.is_some() || a.image.is_some() || a.tags.is_some() || a.labels.is_some() {
            bail!("--image-file takes its regions and tags from the detector: drop --questions, --image, --tags and --labels");
        }
        let api = oscar::infer::Answering::load_at(&a.checkpoint, &a.device, a.quantize)?;
        let photos = a.photos.detect(api.feature_dim())?;
        let images: Vec<_> = photos.into_iter().map(|p| p.input).collect();
        let questions = vec![question.as_str(); images.len()];
        let answers = api.answer(&images, &questions, a.top)?;
        let out: Vec<_> = a
            .photos
            .image_file
            .iter()
            .zip(answers)
            .map(|(f, top)| serde_json::json!({"image_file": f, "answers": top}))
            .collect();
        return crate::emit(&(serde_json::to_string_pretty(&out)? + "\n"));
    }
    let Some(features) = &a.features else {
        bail!("give --features FILE (or --image-file with --detector)")
    };
    match (&a.questions, &a.image, &a.question) {
        (Some(q), _, _) => {
            let m = Answerer::load_at(&a.checkpoint, &a.device, a.quantize)?;
            let tok = BertTokenizer::from_vocab(&a.checkpoint.join("vocab.txt"))?;
            let dim = m.config.img_feature_dim;
            let set = QaSet::open(q, features, dim, m.answers.len())?;
            if let (Some(shard), Some(out)) = (a.shard, &a.out) {
                return answer_shard(&m, &tok, &set, a, shard, out);
            }
            let bar = steps_bar(set.examples.len() as u64, "answer");
            let preds = m.predict(&tok, &set, 128, a.top, |n| bar.inc(n as u64))?;
            bar.finish_and_clear();
            let body = serde_json::to_string(&submission(&preds))?;
            match &a.out {
                Some(o) => {
                    oscar::checkpoint::write_atomic(o, body.as_bytes())?;
                    outln!("{} answers written to {}", preds.len(), o.display());
                }
                None => crate::emit(&(body + "\n"))?,
            }
        }
        (None, Some(img), Some(question)) => {
            let api = oscar::infer::Answering::load_at(&a.checkpoint, &a.device, a.quantize)?;
            let tags = image_tags(a.tags.as_deref(), a.labels.as_deref(), img)?;
            let image = oscar::infer::ImageInput::from_store(
                &FeatureStore::open(features, api.feature_dim())?,
                img,
                tags.split_whitespace().map(str::to_string).collect(),
            )?;
            let top = api.answer(&[image], &[question.as_str()], a.top)?.remove(0);
            crate::emit(&(serde_json::to_string_pretty(&top)? + "\n"))?;
        }
        _ => bail!("give --image and --question, or --questions FILE"),
    }
    Ok(())
}
