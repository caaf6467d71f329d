//! `--shard K/N`: one part of a job split over a cluster's scheduler (a Slurm array's
//! `$SLURM_ARRAY_TASK_ID`, a Kubernetes indexed job's `$JOB_COMPLETION_INDEX`). Items are dealt
//! round-robin by their position in the job's input list, so every shard gets the same amount
//! of work and the split is the same whenever the inputs are.

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

    fn from_str(s: &str) -> Result<Self, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
