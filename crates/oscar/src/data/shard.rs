//! `--shard K/N`: one part of a job split over a cluster's scheduler (a Slurm array's
//! `$SLURM_ARRAY_TASK_ID`, a Kubernetes indexed job's `$JOB_COMPLETION_INDEX`). Items are dealt
//! round-robin by their position in the job's input list, so every shard gets the same amount
//! of work and the split is the same whenever the inputs are. A shard's results go to a
//! [`Part`] file, saved as they are computed (a rerun resumes), and [`merge`] joins the parts.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Shard `index` of `count` (0-based, as schedulers number their tasks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole job.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether the item at `position` of the input list is this shard's.
    pub fn keeps(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || {
            format!("shard {s:?}: expected K/N with 0 ≤ K < N (K counts from 0, as $SLURM_ARRAY_TASK_ID)")
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// One shard's results, kept in a JSON file as they are computed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part<T> {
    /// What the results are (`retrieval-scores`, `captions`, `answers`).
    pub kind: String,
    /// `K/N`.
    pub shard: String,
    /// How many inputs the whole job has, and a digest of their list: every part of one job
    /// has the same.
    pub total: usize,
    pub inputs_digest: String,
    /// What every part of the job shares and the merge needs (for retrieval: each caption's
    /// image), identical across parts.
    pub context: serde_json::Value,
    /// Results by position in the job's input list.
    pub results: BTreeMap<usize, T>,
}

/// FNV-1a over the input names, one per line: the same list gives the same digest.
pub fn digest(inputs: &[impl AsRef<str>]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for s in inputs {
        for b in s.as_ref().bytes().chain([b'\n']) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

impl<T: Serialize + DeserializeOwned> Part<T> {
    /// The part at `path` when it exists (a rerun of the same job and shard resumes from it),
    /// else an empty one.
    pub fn resume(
        path: &Path,
        kind: &str,
        shard: Shard,
        inputs: &[impl AsRef<str>],
        context: serde_json::Value,
    ) -> Result<Self> {
        let fresh = Part {
            kind: kind.to_string(),
            shard: format!("{}/{}", shard.index, shard.count),
            total: inputs.len(),
            inputs_digest: digest(inputs),
            context,
            results: BTreeMap::new(),
        };
        if !path.exists() {
            return Ok(fresh);
        }
        let old = Self::read(path)?;
        let same = old.kind == fresh.kind
            && old.shard == fresh.shard
            && old.total == fresh.total
            && old.inputs_digest == fresh.inputs_digest
            && old.context == fresh.context;
        if !same {
            return Err(Error::bad_file(
                path,
                format!(
                    "holds {} results of shard {} over {} inputs (digest {}), not this job's {} \
                     shard {} over {} inputs (digest {}): delete it or choose another file",
                    old.kind,
                    old.shard,
                    old.total,
                    old.inputs_digest,
                    fresh.kind,
                    fresh.shard,
                    fresh.total,
                    fresh.inputs_digest
                ),
            ));
        }
        Ok(old)
    }

    /// Reads a part file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::bad_file(
                path,
                format!("not a shard's part file (`--shard K/N` output): {e}"),
            )
        })
    }

    /// The positions of `shard` not done yet, in order.
    pub fn todo(&self, shard: Shard) -> Vec<usize> {
        (0..self.total)
            .filter(|&p| shard.keeps(p) && !self.results.contains_key(&p))
            .collect()
    }

    /// Computes this shard's missing results `block` positions at a time, saving the part to
    /// `path` after each block (so an interrupted run loses at most one block).
    pub fn fill<E: From<Error>>(
        &mut self,
        path: &Path,
        shard: Shard,
        block: usize,
        mut compute: impl FnMut(&[usize]) -> std::result::Result<Vec<T>, E>,
    ) -> std::result::Result<(), E> {
        let todo = self.todo(shard);
        for b in todo.chunks(block.max(1)) {
            let values = compute(b)?;
            if values.len() != b.len() {
                return Err(Error::Invalid(format!(
                    "{} results for a block of {} inputs",
                    values.len(),
                    b.len()
                ))
                .into());
            }
            self.results.extend(b.iter().copied().zip(values));
            self.save(path)?;
        }
        if todo.is_empty() {
            self.save(path)?;
        }
        Ok(())
    }

    /// Writes the part atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let body = serde_json::to_string(self).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::checkpoint::write_atomic(path, body.as_bytes())
    }
}

/// What every part of a merged job agreed on, and the results in input order.
pub struct Merged<T> {
    pub kind: String,
    pub context: serde_json::Value,
    pub results: Vec<T>,
}

/// The kind of results a part file holds (to choose how to merge it).
pub fn part_kind(path: &Path) -> Result<String> {
    #[derive(Deserialize)]
    struct Head {
        kind: String,
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let h: Head = serde_json::from_str(&text).map_err(|e| {
        Error::bad_file(
            path,
            format!("not a shard's part file (`--shard K/N` output): {e}"),
        )
    })?;
    Ok(h.kind)
}

/// Joins the parts of one job: every shard `0..N` exactly once, all of the same job, every
/// input's result present.
pub fn merge<T: Serialize + DeserializeOwned>(paths: &[PathBuf]) -> Result<Merged<T>> {
    let first = paths
        .first()
        .ok_or_else(|| Error::Invalid("no part files to merge".into()))?;
    let parts = paths
        .iter()
        .map(|p| Part::<T>::read(p))
        .collect::<Result<Vec<_>>>()?;
    let head = &parts[0];
    let count: usize = head
        .shard
        .parse::<Shard>()
        .map_err(|e| Error::bad_file(first, e))?
        .count;
    let mut seen = vec![None::<&Path>; count];
    for (p, part) in paths.iter().zip(&parts) {
        let shard: Shard = part.shard.parse().map_err(|e| Error::bad_file(p, e))?;
        if part.kind != head.kind
            || shard.count != count
            || part.total != head.total
            || part.inputs_digest != head.inputs_digest
            || part.context != head.context
        {
            return Err(Error::bad_file(
                p,
                format!(
                    "is not a part of the same job as {}: {} shard {} over {} inputs (digest {}) \
                     against {} shard {} over {} inputs (digest {}), or other shared settings",
                    first.display(),
                    part.kind,
                    part.shard,
                    part.total,
                    part.inputs_digest,
                    head.kind,
                    head.shard,
                    head.total,
                    head.inputs_digest
                ),
            ));
        }
        if let Some(other) = seen[shard.index].replace(p) {
            return Err(Error::bad_file(
                p,
                format!("shard {} is also in {}", part.shard, other.display()),
            ));
        }
        let missing = part.todo(shard).len();
        if missing > 0 {
            return Err(Error::bad_file(
                p,
                format!(
                    "shard {} is unfinished: {missing} of its inputs have no result (rerun it: it resumes)",
                    part.shard
                ),
            ));
        }
    }
    if let Some(k) = seen.iter().position(Option::is_none) {
        return Err(Error::Invalid(format!(
            "shard {k}/{count} is missing: give all {count} part files"
        )));
    }
    let kind = head.kind.clone();
    let context = head.context.clone();
    let mut all = BTreeMap::new();
    for part in parts {
        all.extend(part.results);
    }
    Ok(Merged {
        kind,
        context,
        results: all.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_resume_merge_in_input_order_and_refuse_mixed_or_missing_shards() {
        let d = tempfile::tempdir().unwrap();
        let inputs: Vec<String> = (0..7).map(|i| format!("img{i}")).collect();
        let ctx = serde_json::json!({"k": 1});
        let paths: Vec<PathBuf> = (0..3)
            .map(|k| d.path().join(format!("p{k}.json")))
            .collect();
        for (k, path) in paths.iter().enumerate() {
            let shard = Shard { index: k, count: 3 };
            let mut part = Part::resume(path, "demo", shard, &inputs, ctx.clone()).unwrap();
            let todo = part.todo(shard);
            assert_eq!(todo, (0..7).filter(|p| p % 3 == k).collect::<Vec<_>>());
            // Shard 1 stops after one result; its rerun resumes with the rest.
            for &p in todo.iter().take(if k == 1 { 1 } else { todo.len() }) {
                part.results.insert(p, format!("r{p}"));
            }
            part.save(path).unwrap();
        }
        let e = merge::<String>(&paths).err().unwrap().to_string();
        assert!(e.contains("p1.json") && e.contains("unfinished"), "{e}");
        let shard = Shard { index: 1, count: 3 };
        let mut part =
            Part::<String>::resume(&paths[1], "demo", shard, &inputs, ctx.clone()).unwrap();
        assert_eq!(part.todo(shard), vec![4]);
        part.results.insert(4, "r4".into());
        part.save(&paths[1]).unwrap();
        let m = merge::<String>(&paths).unwrap();
        assert_eq!(
            m.results,
            (0..7).map(|p| format!("r{p}")).collect::<Vec<_>>()
        );
        assert_eq!((m.kind.as_str(), m.context), ("demo", ctx.clone()));
        // Another input list, a missing shard, a shard twice: refused, naming the file.
        let other: Vec<String> = (0..7).map(|i| format!("x{i}")).collect();
        let e =
            Part::<String>::resume(&paths[0], "demo", Shard { index: 0, count: 3 }, &other, ctx)
                .err()
                .unwrap()
                .to_string();
        assert!(e.contains("p0.json") && e.contains("delete it"), "{e}");
        let e = merge::<String>(&paths[..2]).err().unwrap().to_string();
        assert!(e.contains("shard 2/3 is missing"), "{e}");
        let e = merge::<String>(&[paths[0].clone(), paths[0].clone(), paths[2].clone()])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("also in"), "{e}");
    }

    #[test]
    fn shards_partition_the_inputs() {
        let shards: Vec<Shard> = (0..3).map(|k| format!("{k}/3").parse().unwrap()).collect();
        for pos in 0..100 {
            assert_eq!(shards.iter().filter(|s| s.keeps(pos)).count(), 1);
        }
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
