//! Learning-rate schedules of pytorch-transformers (WarmupLinearSchedule, WarmupCosineSchedule,
//! WarmupConstantSchedule), as multipliers of the base rate.
//!
//! Stepping follows the reference scripts, which call `scheduler.step()` *before*
//! `optimizer.step()`: the k-th update (1-based) uses `lambda(k)`, so with no warm-up the very
//! first update already runs at `lr·(T−1)/T`.

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Linear warm-up, then linear decay to 0 at `total`.
    WarmupLinear,
    /// Linear warm-up, then a half cosine to 0 at `total`.
    WarmupCosine,
    /// Linear warm-up, then constant.
    Constant,
}

impl Schedule {
    /// The multiplier at scheduler step `step` (LambdaLR's `last_epoch`).
    pub fn lambda(self, step: u64, warmup: u64, total: u64) -> f64 {
        let (s, w, t) = (step as f64, warmup as f64, total as f64);
        if step < warmup {
            return s / w.max(1.0);
        }
        match self {
            Schedule::WarmupLinear => ((t - s) / (t - w).max(1.0)).max(0.0),
            Schedule::WarmupCosine => {
                let progress = (s - w) / (t - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
            Schedule::Constant => 1.0,
        }
    }

    /// The learning rate of the k-th optimizer update (1-based), stepped as the reference does.
    pub fn lr_for_update(self, base_lr: f64, k: u64, warmup: u64, total: u64) -> f64 {
        base_lr * self.lambda(k, warmup, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_linear_values() {
        let s = Schedule::WarmupLinear;
        assert_eq!(s.lambda(0, 2, 10), 0.0);
        assert_eq!(s.lambda(1, 2, 10), 0.5);
        assert_eq!(s.lambda(2, 2, 10), 1.0);
        assert_eq!(s.lambda(6, 2, 10), 0.5);
        assert_eq!(s.lambda(12, 2, 10), 0.0);
        assert!((Schedule::WarmupLinear.lr_for_update(1.0, 1, 0, 4) - 0.75).abs() < 1e-12);
        assert!((Schedule::WarmupCosine.lambda(6, 2, 10) - 0.5).abs() < 1e-12);
        assert_eq!(Schedule::Constant.lambda(9, 2, 10), 1.0);
    }
}
