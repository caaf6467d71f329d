//! `oscar train <task>`: fine-tuning for retrieval, captioning, VQA, GQA and NLVR2.

use anyhow::Result;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use oscar::tasks::finetune::Optim;
use oscar::tasks::first_stage::FirstStageConfig;
use oscar::tasks::retrieval::{train, world_paths, RetrievalSet, RetrievalTrainConfig};
use oscar::tokenizer::BertTokenizer;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum TrainCmd {
    /// Image–text matching (binary, a wrong caption or a wrong image per positive), then the full
    /// cross-scoring evaluation on the test split.
    Retrieval(RetrievalArgs),
    /// Captioning: masked-caption seq2seq training (or SCST with --scst), then beam-search
    /// captions of the test split scored with BLEU/METEOR/ROUGE-L/CIDEr against a nearest-neighbour baseline.
    Caption(crate::caption::CaptionTrainArgs),
    /// VQA v2: soft-score BCE over the answer vocabulary; official accuracy on the test split.
    Vqa(crate::qa::QaArgs),
    /// GQA: cross-entropy on the answer; accuracy.
    Gqa(crate::qa::QaArgs),
    /// NLVR2: a statement about two images, pair head; accuracy and consistency.
    Nlvr2(crate::qa::Nlvr2Args),
    /// The learned first stage of two-stage retrieval for a retrieval checkpoint: projections of
    /// its image-only and caption-only passes fitted with an in-batch contrastive loss on the
    /// training split, written next to the checkpoint (`first_stage.safetensors`, `.json`).
    FirstStage(FirstStageArgs),
}

#[derive(Args)]
pub struct FirstStageArgs {
    /// The retrieval checkpoint (`oscar train retrieval --out`); the first stage is written into it.
    #[arg(long)]
    checkpoint: PathBuf,
    /// A world-style dataset directory (retrieval/{split}_captions.json, features/, labels/).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    /// A split whose first-stage recall is reported (skipped when the dataset has none).
    #[arg(long, default_value = "val")]
    held_out: String,
    #[arg(long, default_value_t = FirstStageConfig::default().steps)]
    steps: u64,
    #[arg(long, default_value_t = FirstStageConfig::default().batch_size)]
    batch_size: usize,
    #[arg(long, default_value_t = FirstStageConfig::default().lr)]
    lr: f64,
    /// Width of the shared embedding space.
    #[arg(long, default_value_t = FirstStageConfig::default().dim)]
    dim: usize,
    /// Width of each projection's GELU hidden layer (0: linear projections).
    #[arg(long, default_value_t = FirstStageConfig::default().hidden)]
    hidden: usize,
    #[arg(long, default_value_t = FirstStageConfig::default().temperature)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to compute: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
}

/// `oscar train first-stage`.
fn first_stage(a: &FirstStageArgs) -> Result<()> {
    use oscar::tasks::first_stage::{fit, FitProgress};
    let r = oscar::tasks::retrieval::Retriever::load(&a.checkpoint, &a.device)?;
    let settings = oscar::tasks::retrieval::saved_settings(&a.checkpoint)?;
    let tok = BertTokenizer::from_vocab(&a.checkpoint.join("vocab.txt"))?;
    let dim = r.config.img_feature_dim;
    let (c, f, l) = world_paths(&a.data, &a.split);
    let train_set = RetrievalSet::open(&c, &f, &l, dim, None)?;
    let (hc, hf, hl) = world_paths(&a.data, &a.held_out);
    let held = match hc.exists() {
        true => Some(RetrievalSet::open(&hc, &hf, &hl, dim, None)?),
        false => {
            outln!(
                "no {} split in {}: no held-out recall",
                a.held_out,
                a.data.display()
            );
            None
        }
    };
    let cfg = FirstStageConfig {
        dim: a.dim,
        hidden: a.hidden,
        steps: a.steps,
        batch_size: a.batch_size,
        lr: a.lr,
        temperature: a.temperature,
        seed: a.seed,
        ..FirstStageConfig::default()
    };
    let bar = ProgressBar::new((train_set.images.len() + train_set.captions.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "encode {bar:30} {pos}/{len} single-modality passes · ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut steps: Option<crate::StepLog> = None;
    let fs = fit(
        &r,
        &tok,
        &settings,
        &train_set,
        held.as_ref().map(|h| (a.held_out.as_str(), h)),
        &cfg,
        |p| match p {
            FitProgress::Features(n, _) => bar.inc(n as u64),
            FitProgress::Step(k, loss, acc) => {
                if !bar.is_finished() {
                    bar.finish_and_clear();
                }
                steps
                    .get_or_insert_with(|| {
                        crate::StepLog::new(a.steps, "fit first stage", "batch_accuracy")
                    })
                    .record(k, loss, acc)
            }
        },
    )?;
    if let Some(s) = steps {
        s.finish();
    }
    fs.save(&a.checkpoint)?;
    outln!("{}", serde_json::to_string_pretty(&fs.saved)?);
    outln!(
        "first stage written to {}: use it with `oscar eval retrieval --checkpoint {} --data {} --two-stage-k K --first-stage learned`",
        a.checkpoint.display(),
        a.checkpoint.display(),
        a.data.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct RetrievalArgs {
    /// A world-style dataset directory (retrieval/, features/, labels/, vocab.txt).
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Start from this checkpoint (e.g. a pre-training checkpoint); otherwise from scratch.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Shape of a model trained from scratch: a config.json (default: the small config).
    #[arg(long, conflicts_with = "init")]
    model_config: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Region feature width (default: the world's).
    #[arg(long)]
    img_feature_dim: Option<usize>,
    #[arg(long)]
    no_tags: bool,
    /// Attention between caption (C), tags (L) and regions (R): CLR, CL, CR or LR.
    #[arg(long, default_value = "CLR")]
    att_mask: oscar::tasks::retrieval::AttMask,
    /// Test images to score (all captions of those images).
    #[arg(long, default_value_t = 100)]
    test_images: usize,
    /// Two-stage search: candidates kept by the tag-overlap first stage (for the learned one,
    /// `oscar train first-stage` then `oscar eval retrieval --first-stage learned`).
    #[arg(long)]
    two_stage_k: Option<usize>,
    /// Share of same-shape negatives (a caption with as many words, an image with as many
    /// detections) instead of random ones; 0 = the reference.
    #[arg(long, default_value_t = 0.0)]
    hard_negatives: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    run: crate::RunArgs,
}

pub fn run(cmd: &TrainCmd) -> Result<()> {
    use oscar::tasks::qa::QaKind;
    let a = match cmd {
        TrainCmd::Retrieval(a) => a,
        TrainCmd::Vqa(a) => {
            return {
                crate::qa::print_qa(&crate::qa::run_qa(QaKind::Vqa, a)?, &a.common.out);
                Ok(())
            }
        }
        TrainCmd::Gqa(a) => {
            return {
                crate::qa::print_qa(&crate::qa::run_qa(QaKind::Gqa, a)?, &a.common.out);
                Ok(())
            }
        }
        TrainCmd::Caption(a) => {
            return {
                crate::caption::print_run(&crate::caption::run_train(a)?, &a.common.out);
                Ok(())
            }
        }
        TrainCmd::Nlvr2(a) => {
            return {
                crate::qa::print_nlvr2(&crate::qa::run_nlvr2(a)?, &a.common.out);
                Ok(())
            }
        }
        TrainCmd::FirstStage(a) => return first_stage(a),
    };
    let dim = match a.img_feature_dim {
        Some(d) => d,
        None => crate::world_dim(&a.data)?,
    };
    let vocab = a.data.join("vocab.txt");
    let tok = BertTokenizer::from_vocab(&vocab)?;
    let (c, f, l) = world_paths(&a.data, "train");
    let train_set = RetrievalSet::open(&c, &f, &l, dim, None)?;
    let cfg = RetrievalTrainConfig {
        optim: Optim {
            steps: a.steps,
            batch_size: a.batch_size,
            lr: a.lr,
            seed: a.seed,
            ..Optim::default()
        },
        use_tags: !a.no_tags,
        att_mask: a.att_mask,
        hard_negative_prob: a.hard_negatives,
        ..RetrievalTrainConfig::default()
    };
    let fresh =
        oscar::tasks::finetune::scratch_config(a.model_config.as_deref(), tok.vocab_size(), dim)?;
    std::fs::create_dir_all(&a.out)?;
    let mut steps = crate::StepLog::new(a.steps, "train retrieval", "accuracy");
    let r = train(
        &train_set,
        &tok,
        a.init.as_deref(),
        &fresh,
        &cfg,
        &a.run.files(&a.out, &vocab),
        |k, loss, acc| steps.record(k, loss, acc),
    )?;
    steps.finish();
    r.save_with_settings(&a.out, Some(&vocab), &cfg)?;
    let (c, f, l) = world_paths(&a.data, "test");
    let mut test = RetrievalSet::open(&c, &f, &l, dim, None)?;
    test.images.truncate(a.test_images);
    test.captions.retain(|(i, _)| *i < a.test_images);
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("score {bar:30} {pos}/{len} pairs · {per_sec} · ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let partial = a.out.join("scores.partial.json");
    let plan = oscar::tasks::retrieval::EvalPlan {
        batch: 256,
        full: true,
        two_stage: a
            .two_stage_k
            .map(|k| (k, oscar::tasks::first_stage::FirstStageKind::Tags)),
        partial: Some(&partial),
    };
    let e = oscar::tasks::retrieval::evaluate(&r, &tok, &test, &cfg, &plan, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let _ = std::fs::remove_file(&partial);
    oscar::checkpoint::write_atomic(
        &a.out.join("eval.json"),
        serde_json::to_string_pretty(&e)?.as_bytes(),
    )?;
    crate::eval::print_retrieval(&e);
    outln!("model and eval.json in {}", a.out.display());
    Ok(())
}
