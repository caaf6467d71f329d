//! What every fine-tuning task shares (oscar-spec §3, "common settings"): the model from a
//! checkpoint with a fresh task head (or from scratch), `--drop_out` overriding every dropout,
//! and the one trainer driven as the reference scripts drive theirs — `WarmupLinearSchedule`
//! stepped before AdamW, gradient clipping at `max_grad_norm` — with the run's files.

use crate::checkpoint::{build_fresh, load_model, read_checkpoint, Buildable, Fresh, Loaded};
use crate::config::OscarConfig;
use crate::error::{Error, Result};
use crate::train::schedule::Schedule;
use crate::train::trainer::{TrainReport, TrainTask, Trainer, TrainerOptions};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Optimisation settings of a fine-tuning run (flattened into each task's TOML/JSON settings).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Optim {
    /// Optimizer updates.
    pub steps: u64,
    /// Items per update (retrieval: positives, each with one negative).
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: u64,
    pub max_grad_norm: f64,
    /// `--drop_out`: overrides `hidden_dropout_prob` (and with it image and classifier dropout).
    pub drop_out: Option<f64>,
    pub seed: u64,
}

impl Optim {
    /// Rejects settings that cannot train (zero batch, negative or non-finite rates, dropout ∉ [0, 1)).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("fine-tuning settings: {m}")));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        for (name, v) in [
            ("lr", self.lr),
            ("weight_decay", self.weight_decay),
            ("max_grad_norm", self.max_grad_norm),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{name} is {v}, expected a finite value ≥ 0"));
            }
        }
        if let Some(p) = self.drop_out.filter(|p| !(0.0..1.0).contains(p)) {
            return bad(format!("drop_out is {p}, expected a probability in [0, 1)"));
        }
        Ok(())
    }
}

impl Default for Optim {
    fn default() -> Self {
        Optim {
            steps: 1000,
            batch_size: 32,
            lr: 1e-3,
            weight_decay: 0.05,
            warmup_steps: 50,
            max_grad_norm: 1.0,
            drop_out: None,
            seed: 88,
        }
    }
}

/// The config of a model trained from scratch: `path` (a `config.json`; for another depth,
/// width or head count than [`OscarConfig::small`]) or `small`. Its vocabulary and region
/// width must be the data's.
pub fn scratch_config(
    path: Option<&Path>,
    vocab_size: usize,
    img_feature_dim: usize,
) -> Result<OscarConfig> {
    let Some(p) = path else {
        return Ok(OscarConfig::small(vocab_size, img_feature_dim));
    };
    let c = OscarConfig::from_file(p)?;
    if c.vocab_size != vocab_size {
        return Err(Error::bad_file(
            p,
            format!(
                "vocab_size is {}, but the data's vocabulary has {vocab_size} word pieces",
                c.vocab_size
            ),
        ));
    }
    if c.img_feature_dim != img_feature_dim {
        return Err(Error::bad_file(
            p,
            format!(
                "img_feature_dim is {}, but the data's regions have {img_feature_dim} values",
                c.img_feature_dim
            ),
        ));
    }
    Ok(c)
}

/// Builds the task model: from `init` (a pre-training, BERT or task checkpoint; missing task-head
/// parameters start fresh) or from scratch with `fresh`. `adapt` sets the task's head settings on
/// whichever config is used; `--drop_out` is applied after it.
pub fn start<M: Buildable>(
    init: Option<&Path>,
    fresh: &OscarConfig,
    optim: &Optim,
    device: &Device,
    adapt: impl Fn(&mut OscarConfig),
) -> Result<Loaded<M>> {
    optim.validate()?;
    let finish = |c: &mut OscarConfig| {
        adapt(c);
        if let Some(p) = optim.drop_out {
            c.hidden_dropout_prob = p;
        }
    };
    match init {
        Some(p) => {
            let ck = read_checkpoint(p)?;
            let mut c = ck.config.clone().unwrap_or_else(|| fresh.clone());
            finish(&mut c);
            load_model::<M>(ck, Some(c), Fresh::Head, optim.seed, device)
        }
        None => {
            let mut c = fresh.clone();
            finish(&mut c);
            build_fresh::<M>(&c, optim.seed, device)
        }
    }
}

/// Where a fine-tuning run writes and how often (`--save-every`, `--eval-every`, `--keep-last`,
/// `--keep-best`, `--resume`), and where it computes: the same for every task.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// Where the model is built and trained (the CPU by default).
    pub device: Device,
    /// The run's directory: `metrics.jsonl`, `checkpoint-N/`, `best/` (none: nothing is written).
    pub out: Option<PathBuf>,
    /// The vocabulary to save beside every checkpoint.
    pub vocab: Option<PathBuf>,
    pub save_every: u64,
    pub eval_every: u64,
    pub keep_last: usize,
    pub keep_best: Option<String>,
    /// Continue from this `checkpoint-N` directory of an earlier run.
    pub resume: Option<PathBuf>,
}

impl Default for RunFiles {
    fn default() -> Self {
        RunFiles {
            device: crate::train::trainer::training_device(),
            out: None,
            vocab: None,
            save_every: 0,
            eval_every: 0,
            keep_last: 0,
            keep_best: None,
            resume: None,
        }
    }
}

impl Optim {
    /// The one trainer's settings for this fine-tuning run: the reference's `WarmupLinear`
    /// schedule stepped before AdamW and clipping at `max_grad_norm`.
    pub fn trainer_options(&self, files: &RunFiles) -> TrainerOptions {
        TrainerOptions {
            steps: self.steps,
            lr: self.lr,
            weight_decay: self.weight_decay,
            warmup_steps: self.warmup_steps,
            schedule: Schedule::WarmupLinear,
            max_grad_norm: self.max_grad_norm,
            seed: self.seed,
            out: files.out.clone(),
            save_every: files.save_every,
            keep_last: files.keep_last,
            eval_every: files.eval_every,
            keep_best: files.keep_best.clone(),
            log_every: 1,
            progress: false,
        }
    }
}

/// Runs a fine-tuning task on the one trainer; `on_step(step, loss, figure)` gets the task's
/// main per-step figure (`metric`).
pub fn run_task<T: TrainTask>(
    task: &mut T,
    optim: &Optim,
    files: &RunFiles,
    metric: &str,
    mut on_step: impl FnMut(u64, f64, f64),
) -> Result<TrainReport> {
    optim.validate()?;
    let metric = metric.to_string();
    let mut trainer = Trainer::new(optim.trainer_options(files)).on_step(|r| {
        on_step(
            r.step,
            r.loss,
            r.metrics.get(&metric).copied().unwrap_or(f64::NAN),
        )
    });
    trainer.run(task, files.resume.as_deref())
}

/// The region-feature width of a world-style dataset directory (`world.json`), else `default`
/// when the directory has no `world.json` (real data). A `world.json` that cannot be read is an
/// error, not a silent fall-back to `default`.
pub fn world_region_dim(dir: &Path, default: usize) -> Result<usize> {
    let path = dir.join("world.json");
    if !path.exists() {
        return Ok(default);
    }
    let meta =
        oscar_world::files::read_world_meta(&path).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(meta.summary.region_dim)
}

/// Reads task settings saved next to a checkpoint (`file`), or the defaults when absent.
pub fn saved_settings<T: serde::de::DeserializeOwned + Default>(
    dir: &Path,
    file: &str,
) -> Result<T> {
    let p = dir.join(file);
    if !p.exists() {
        return Ok(T::default());
    }
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(&p, format!("not {file} settings: {e}")))
}

/// Reads task settings from a TOML file (every key optional; a missing one keeps its default).
pub fn settings_from_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    toml::from_str(&text).map_err(|e| Error::bad_file(path, format!("not valid settings: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_train_are_errors() {
        assert!(Optim::default().validate().is_ok());
        assert!(Optim {
            batch_size: 0,
            ..Optim::default()
        }
        .validate()
        .is_err());
        assert!(Optim {
            lr: f64::NAN,
            ..Optim::default()
        }
        .validate()
        .is_err());
        assert!(Optim {
            drop_out: Some(1.0),
            ..Optim::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn a_scratch_config_file_sets_the_shape_and_must_match_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let wide = OscarConfig {
            num_attention_heads: 4,
            num_hidden_layers: 3,
            ..OscarConfig::small(50, 10)
        };
        std::fs::write(&p, wide.to_json_pretty()).unwrap();
        let c = scratch_config(Some(&p), 50, 10).unwrap();
        assert_eq!((c.num_attention_heads, c.num_hidden_layers), (4, 3));
        assert_eq!(
            scratch_config(None, 50, 10).unwrap().num_attention_heads,
            OscarConfig::small(50, 10).num_attention_heads
        );
        let e = scratch_config(Some(&p), 51, 10).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("vocab_size is 50"),
            "{e}"
        );
        let e = scratch_config(Some(&p), 50, 12).unwrap_err().to_string();
        assert!(e.contains("img_feature_dim is 10"), "{e}");
    }
}
