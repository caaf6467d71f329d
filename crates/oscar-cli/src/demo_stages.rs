//! The demo's finished stages on disk, so that a demo (or an ablation seed) interrupted after an
//! arm resumes there: each pre-training arm and each fine-tuned arm writes a record when it ends
//! (`pretrain-NAME/demo-stage.json`, `arm-K.json`), and a rerun into the same folder reads the
//! records of its own run instead of training again. A record names the run it belongs to (seed,
//! budget, recipe); one of another run is ignored and overwritten, never mixed in.

use crate::demo::{CaptionArm, DemoBudget, PretrainArm, RetrievalArm, VqaArm};
use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What makes two demo runs the same run.
#[derive(Serialize, Deserialize, PartialEq, Eq, Clone, Copy, Debug)]
pub(crate) struct RunKey {
    pub(crate) seed: u64,
    pub(crate) budget: DemoBudget,
    pub(crate) recipe: u32,
}

/// A pre-training arm's record: its figures and the checkpoint the fine-tuning starts from.
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct PretrainDone {
    pub(crate) arm: PretrainArm,
    pub(crate) last_checkpoint: Option<PathBuf>,
}

/// A fine-tuned arm's record: its test figures, learning curves and, for the arm whose models
/// are kept, the lines under the test scenes.
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct ArmDone {
    pub(crate) retrieval: RetrievalArm,
    pub(crate) captioning: CaptionArm,
    pub(crate) vqa: VqaArm,
    /// Retrieval, captioning and VQA fine-tuning: (step, metric in %).
    pub(crate) curves: [Vec<(f64, f64)>; 3],
    pub(crate) showcase: Option<Vec<(String, Vec<String>)>>,
}

#[derive(Serialize, Deserialize)]
struct Record<T> {
    run: RunKey,
    done: T,
}

/// The record at `path` if it belongs to `run`; `None` when there is none or it is another run's.
pub(crate) fn read<T: DeserializeOwned>(path: &Path, run: RunKey) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let r: Record<T> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a record of a finished demo stage (delete it to run that stage again)",
            path.display()
        )
    })?;
    Ok((r.run == run).then_some(r.done))
}

/// Writes the record of a finished stage (atomically: a record is whole or absent).
pub(crate) fn write<T: Serialize>(path: &Path, run: RunKey, done: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(&Record { run, done })?;
    oscar::checkpoint::write_atomic(path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_back_by_its_own_run_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("arm-0.json");
        let run = RunKey {
            seed: 3,
            budget: DemoBudget::Long,
            recipe: 2,
        };
        assert_eq!(read::<Vec<u32>>(&p, run).unwrap(), None);
        write(&p, run, &vec![1u32, 2]).unwrap();
        assert_eq!(read::<Vec<u32>>(&p, run).unwrap(), Some(vec![1, 2]));
        for other in [
            RunKey { seed: 4, ..run },
            RunKey {
                budget: DemoBudget::Demo,
                ..run
            },
            RunKey { recipe: 1, ..run },
        ] {
            assert_eq!(read::<Vec<u32>>(&p, other).unwrap(), None, "{other:?}");
        }
        std::fs::write(&p, "{\"run\": 1}").unwrap();
        let e = read::<Vec<u32>>(&p, run).unwrap_err();
        assert!(
            format!("{e:#}").contains("arm-0.json: not a record"),
            "{e:#}"
        );
    }
}
