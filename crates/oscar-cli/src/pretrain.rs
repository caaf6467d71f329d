//! `oscar pretrain`: Oscar's pre-training objectives on a corpus (TOML config; flags override).

use anyhow::Result;
use clap::Args;
use oscar::tasks::pretrain::{pretrain_on, PretrainConfig};
use std::path::PathBuf;

#[derive(Args)]
pub struct PretrainArgs {
    /// TOML configuration (every field of PretrainConfig; missing ones take the defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The dataset yaml.
    #[arg(long)]
    dataset: Option<PathBuf>,
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Initialise from a BERT / MiniLM / Oscar checkpoint (missing parts start fresh).
    #[arg(long)]
    init: Option<PathBuf>,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    img_feature_dim: Option<usize>,
    /// Train without object tags (the ablation arm).
    #[arg(long)]
    no_tags: bool,
    /// Continue from a checkpoint directory of an earlier run (at or past `--steps`: evaluate it only).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Save OUT/checkpoint-N every N steps (default: the config's `save_every`).
    #[arg(long)]
    save_every: Option<u64>,
    /// Evaluate on the held-out images every N steps (default: the config's `eval_every`).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Keep the last K checkpoints, 0 for all (default: the config's `keep_last`).
    #[arg(long)]
    keep_last: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Where to train: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
}

pub fn run(a: &PretrainArgs) -> Result<()> {
    let mut cfg = match &a.config {
        Some(p) => PretrainConfig::from_toml(p)?,
        None => PretrainConfig::default(),
    };
    macro_rules! over {
        ($($f:ident),*) => { $( if let Some(v) = &a.$f { cfg.$f = v.clone().into(); } )* };
    }
    over!(
        dataset,
        output_dir,
        steps,
        batch_size,
        lr,
        seed,
        img_feature_dim,
        save_every,
        eval_every,
        keep_last
    );
    if a.init.is_some() {
        cfg.init = a.init.clone();
    }
    if a.no_tags {
        cfg.use_tags = false;
    }
    if a.quiet {
        cfg.progress = false;
    }
    let r = pretrain_on(&cfg, a.resume.as_deref(), &a.device)?;
    let last = r.logs.last();
    outln!(
        "pre-trained {} steps in {:.1} s: final loss {:.4}{}; curves in {}",
        r.steps,
        r.seconds,
        last.map(|l| l.loss).unwrap_or(f64::NAN),
        r.evals.last().map(|e| format!(", held-out MLM accuracy {:.3} (chance {:.4}), contrastive accuracy {:.3} (majority {:.3})", e.mlm_accuracy, e.mlm_chance, e.contrastive_accuracy, e.contrastive_chance)).unwrap_or_default(),
        cfg.output_dir.join("loss.png").display()
    );
    if let Some(e) = r.evals.last() {
        if let (Some(own), Some(tags), Some(image)) = (
            e.caption_accuracy_own_tags,
            e.caption_accuracy_other_tags,
            e.caption_accuracy_other_image,
        ) {
            outln!("masked caption words: accuracy {own:.3} with the image's tags and regions, {tags:.3} with another image's tags, {image:.3} with another image's tags and regions");
        }
    }
    if let Some(c) = r.last_checkpoint {
        outln!("checkpoint: {}", c.display());
    }
    Ok(())
}
