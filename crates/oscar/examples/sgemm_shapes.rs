//! The f32 product (`oscar::nn::sgemm::sgemm`, the kernel every f32 `Linear` runs) at Oscar-B's
//! scoring shapes, medians and bests of `runs` calls, GFLOP/s as JSON lines: to compare kernel changes
//! against the CPU's FMA peak without a whole model around them.
//!
//!     cargo run --release -p oscar --example sgemm_shapes [runs]
//!
//! Shapes: 32 pairs × 120 positions (3,840 rows) through 768→768, 768→3072 and 3072→768.

use oscar::nn::sgemm::{sgemm, View};
use std::io::Write;
use std::time::Instant;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // A closed stdout (`| head`) ends the run quietly.
    let mut out = std::io::stdout().lock();
    let mut total = 0.0;
    for (m, k, n) in [(3840, 768, 768), (3840, 768, 3072), (3840, 3072, 768)] {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104_729) % 997) as f32 * 1e-3)
            .collect();
        let mut c = vec![0f32; m * n];
        let mut t = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            // x · wᵀ, as `Linear` computes it.
            sgemm(View::new(&a, m, k), View::new(&w, n, k).t(), &mut c, false);
            t.push(t0.elapsed().as_secs_f64());
        }
        t.sort_by(f64::total_cmp);
        let (s, best) = (t[t.len() / 2], t[0]);
        total += s;
        let gflops = 2.0 * (m * k * n) as f64 / s / 1e9;
        let line = serde_json::json!({"m": m, "k": k, "n": n, "runs": runs, "s": s, "gflop_per_s": gflops,
            "best_s": best, "best_gflop_per_s": gflops * s / best});
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
    let _ = writeln!(out, "{}", serde_json::json!({"sum_of_medians_s": total}));
}
