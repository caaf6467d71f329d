//! The `Linear` product at Oscar-B's shapes three ways — f32 (the `gemm` crate, what every f32
//! layer runs), candle's quantized `QMatMul` with Q8_0 weights (activations quantized to Q8_0 by
//! candle), and this crate's int8 kernel — interleaved, medians of `runs` calls, as JSON lines.
//! The int8 kernel also runs bare (`kernel::gemm`) with one step per channel and with group
//! steps (`PackedWeight::quantize_with`), to time what the groups' shifts cost.
//!
//!     cargo run --release -p oscar --example int8_gemm [runs]
//!
//! Shapes: 32 pairs × 120 positions (3,840 rows) through 768→3072 and 3072→768, and a beam-5
//! decoding step of 2 images (10 rows) through the 30,522-word prediction matrix.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use oscar::nn::int8::{kernel, Int8Linear, PackedWeight};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let _no_grad = oscar::nn::NoGrad::new();
    for (m, k, n) in [(3840, 768, 3072), (3840, 3072, 768), (10, 768, 30522)] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu)?;
        let b = Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu)?;
        let q8 = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
        let i8 = Int8Linear::new(&w, Some(&b))?;
        let (xv, wv) = (
            x.flatten_all()?.to_vec1::<f32>()?,
            w.flatten_all()?.to_vec1::<f32>()?,
        );
        let plain = PackedWeight::quantize_with(&wv, n, k, false);
        let grouped = PackedWeight::quantize_with(&wv, n, k, true);
        let mut y = vec![0f32; m * n];
        let f32_out = oscar::nn::fused::linear(&x, &w, Some(&b))?;
        let rel = |y: &Tensor| -> candle_core::Result<f32> {
            let d = (y - &f32_out)?.sqr()?.sum_all()?.to_scalar::<f32>()?;
            Ok((d / f32_out.sqr()?.sum_all()?.to_scalar::<f32>()?).sqrt())
        };
        let (e_q8, e_i8) = (rel(&q8.forward(&x)?)?, rel(&i8.forward(&x)?)?);
        let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..runs {
            let t0 = Instant::now();
            oscar::nn::fused::linear(&x, &w, Some(&b))?;
            t[0].push(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            q8.forward(&x)?;
            t[1].push(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            i8.forward(&x)?;
            t[2].push(t0.elapsed().as_secs_f64());
            for (i, pw) in [(3, &plain), (4, &grouped)] {
                let t0 = Instant::now();
                kernel::gemm(&xv, m, pw, None, &mut y);
                t[i].push(t0.elapsed().as_secs_f64());
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (f, q, i) = (med(&mut t[0]), med(&mut t[1]), med(&mut t[2]));
        let (kp, kg) = (med(&mut t[3]), med(&mut t[4]));
        let gmacs = |s: f64| (m * k * n) as f64 / s / 1e9;
        println!(
            "{}",
            serde_json::json!({
                "m": m, "k": k, "n": n, "runs": runs,
                "f32_s": f, "candle_q8_0_s": q, "oscar_int8_s": i,
                "f32_gmac_per_s": gmacs(f), "candle_q8_0_gmac_per_s": gmacs(q), "oscar_int8_gmac_per_s": gmacs(i),
                "kernel_per_channel_s": kp, "kernel_groups_s": kg,
                "groups_vs_per_channel": kp / kg,
                "int8_vs_f32": f / i, "int8_vs_candle_q8_0": q / i,
                "relative_error_q8_0": e_q8, "relative_error_int8": e_i8,
                "int8_kernel": oscar::nn::int8::kernel::kernel_name(),
            })
        );
    }
    Ok(())
}
