//! Training checkpoints: the model as its task saves it (a `save_pretrained` directory plus the
//! task's settings) with the optimizer moments and the trainer state (step, data position, seed,
//! best model). A checkpoint directory is assembled
//! under a temporary name and renamed into place, so a crash during a save never leaves a
//! half-written `checkpoint-N` and never touches the previous one. The last K are kept.

use super::optim::AdamW;
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// What a training run needs to continue exactly where it stopped.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Optimizer updates done.
    pub step: u64,
    /// Training examples consumed (the data position).
    pub examples_seen: u64,
    pub seed: u64,
    /// The best evaluation so far, when the run keeps the best model (`best/`).
    #[serde(default)]
    pub best: Option<BestModel>,
}

/// Which model `best/` holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BestModel {
    pub metric: String,
    pub value: f64,
    pub step: u64,
}

/// `dir/checkpoint-{step}`.
pub fn checkpoint_dir(out: &Path, step: u64) -> PathBuf {
    out.join(format!("checkpoint-{step}"))
}

/// Saves `out/checkpoint-{step}`: the model (`write_model` fills a directory), the optimizer
/// moments and the trainer state. `before_file` runs before each part is written (tests inject
/// failures there to show that an interrupted save leaves the previous checkpoint intact).
pub fn save_checkpoint(
    out: &Path,
    write_model: &dyn Fn(&Path) -> Result<()>,
    opt: &AdamW,
    state: &TrainerState,
    keep_last: usize,
    before_file: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<PathBuf> {
    let final_dir = checkpoint_dir(out, state.step);
    replace_dir(out, &final_dir, &mut |tmp| {
        before_file("model")?;
        write_model(tmp)?;
        before_file("optimizer.safetensors")?;
        let opt_t: std::collections::HashMap<String, candle_core::Tensor> =
            opt.state_tensors()?.into_iter().collect();
        candle_core::safetensors::save(&opt_t, tmp.join("optimizer.safetensors"))
            .map_err(Error::from)?;
        before_file("trainer_state.json")?;
        write_atomic(
            &tmp.join("trainer_state.json"),
            serde_json::to_string_pretty(state)
                .map_err(|e| Error::Invalid(e.to_string()))?
                .as_bytes(),
        )
    })?;
    prune(out, keep_last)?;
    Ok(final_dir)
}

/// Saves the model alone as `out/best`, replacing the previous best only once complete.
pub fn save_best(out: &Path, write_model: &dyn Fn(&Path) -> Result<()>) -> Result<PathBuf> {
    let dir = out.join("best");
    replace_dir(out, &dir, &mut |tmp| write_model(tmp))?;
    Ok(dir)
}

/// Fills a temporary directory beside `target` and renames it into place: a crash while
/// writing never leaves a half-written `target`, and never touches the previous one.
fn replace_dir(out: &Path, target: &Path, fill: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(|e| Error::io(target, e))?;
    }
    std::fs::rename(&tmp, target).map_err(|e| Error::io(target, e))
}

/// The checkpoints in `out`, oldest first, by step.
pub fn list_checkpoints(out: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("checkpoint-")
                .and_then(|s| s.parse::<u64>().ok())
                .map(|s| (s, e.path()))
        })
        .collect();
    v.sort();
    v
}

fn prune(out: &Path, keep_last: usize) -> Result<()> {
    if keep_last == 0 {
        return Ok(());
    }
    let all = list_checkpoints(out);
    for (_, p) in all.iter().take(all.len().saturating_sub(keep_last)) {
        std::fs::remove_dir_all(p).map_err(|e| Error::io(p, e))?;
    }
    Ok(())
}

/// Reads a checkpoint's trainer state and optimizer moments.
pub fn read_trainer_state(
    dir: &Path,
) -> Result<(
    TrainerState,
    std::collections::HashMap<String, candle_core::Tensor>,
)> {
    let sp = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&sp).map_err(|e| Error::io(&sp, e))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(&sp, format!("not a trainer state: {e}")))?;
    let op = dir.join("optimizer.safetensors");
    let opt = candle_core::safetensors::load(&op, &candle_core::Device::Cpu)
        .map_err(|e| Error::bad_file(&op, e.to_string()))?;
    Ok((state, opt))
}
