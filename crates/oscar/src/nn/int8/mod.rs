//! Dynamic int8 inference for `Linear` layers, as PyTorch's `quantize_dynamic` and ONNX Runtime's
//! dynamic quantization do for BERT encoders: weights int8 per output channel (symmetric),
//! activations quantized per row at every call, int32 accumulation, bias and scales in f32.
//! Attention products, softmax, LayerNorm and GELU stay f32. Inference only: a quantized layer
//! has no gradient.

mod aligned;
mod amx;
pub mod kernel;
pub mod outliers;

pub use kernel::PackedWeight;

use crate::nn::sgemm::Epilogue;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use std::sync::Arc;

/// The numeric precision of a model's `Linear` layers at inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout (the reference's numerics).
    #[default]
    F32,
    /// Dynamic int8 for every `Linear` layer of the encoder and heads (and the tied word-
    /// prediction matrix of captioning).
    Int8,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" | "fp32" | "none" => Ok(Precision::F32),
            "int8" => Ok(Precision::Int8),
            other => Err(format!("precision {other:?}: expected int8 or f32")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        })
    }
}

/// A `Linear` layer's weight quantized to int8, and its f32 bias.
#[derive(Clone)]
pub struct Int8Linear {
    weight: Arc<PackedWeight>,
    bias: Option<Arc<[f32]>>,
}

impl Int8Linear {
    /// Quantizes `weight` (`[out, in]`, f32 on the CPU) per output channel.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        if !weight.device().is_cpu() {
            bail!(
                "int8 inference runs on the CPU (the model is on {:?})",
                weight.device()
            )
        }
        let w = weight
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = match bias {
            Some(b) => {
                if b.elem_count() != n {
                    bail!(
                        "int8 linear: bias of {} for {n} output features",
                        b.elem_count()
                    );
                }
                Some(
                    b.to_dtype(candle_core::DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?
                        .into(),
                )
            }
            None => None,
        };
        Ok(Int8Linear {
            weight: Arc::new(PackedWeight::quantize(&w, n, k)),
            bias,
        })
    }

    pub fn packed(&self) -> &PackedWeight {
        &self.weight
    }

    /// `y = x·Wᵀ + b` over the last dimension of `x` (f32, CPU).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }

    /// `gelu_erf(x·Wᵀ + b)`, GELU on each tile of the product while it is in cache.
    pub fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }

    /// The products of one input with several layers of its width (a BERT layer's query, key
    /// and value): `x` is scanned for outlier features and quantized once for all of them, and
    /// each output is the layer's [`Self::forward`] (the same bits).
    pub fn forward_shared(x: &Tensor, layers: &[&Int8Linear]) -> Result<Vec<Tensor>> {
        let Some(k) = layers.first().map(|l| l.weight.k) else {
            return Ok(vec![]);
        };
        let dims = x.dims().to_vec();
        if dims.last() != Some(&k) || layers.iter().any(|l| l.weight.k != k) {
            bail!(
                "int8 linear: input {dims:?} and layers of {:?} input features do not fit",
                layers.iter().map(|l| l.weight.k).collect::<Vec<_>>()
            );
        }
        if !x.device().is_cpu() {
            bail!(
                "int8 inference runs on the CPU (the input is on {:?})",
                x.device()
            )
        }
        let m = x.elem_count() / k.max(1);
        let x2 = x
            .to_dtype(candle_core::DType::F32)?
            .contiguous()?
            .reshape((m, k))?;
        let ys = {
            let (storage, layout) = x2.storage_and_layout();
            let (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) =
                (&*storage, layout.contiguous_offsets())
            else {
                bail!("int8 linear: expected a contiguous f32 input on the CPU")
            };
            let products: Vec<(&PackedWeight, Epilogue)> = layers
                .iter()
                .map(|l| {
                    let ep = Epilogue {
                        bias: l.bias.as_deref(),
                        gelu: false,
                    };
                    (&*l.weight, ep)
                })
                .collect();
            outliers::gemm_decomposed_shared(&v[a..b], m, &products, outlier_threshold())
        };
        ys.into_iter()
            .zip(layers)
            .map(|(y, l)| {
                let mut out = dims.clone();
                *out.last_mut().expect("rank ≥ 1") = l.weight.n;
                Tensor::from_vec(y, out, x.device())
            })
            .collect()
    }

    fn apply(&self, x: &Tensor, gelu: bool) -> Result<Tensor> {
        let (n, k) = (self.weight.n, self.weight.k);
        let dims = x.dims().to_vec();
        if dims.last() != Some(&k) {
            bail!("int8 linear: input {dims:?} does not end in the weight's {k} input features");
        }
        let x2 = x
            .to_dtype(candle_core::DType::F32)?
            .contiguous()?
            .reshape((x.elem_count() / k.max(1), k))?;
        let y = x2.apply_op1_no_bwd(&Int8Op { layer: self, gelu })?;
        let mut out = dims;
        *out.last_mut().expect("rank ≥ 1") = n;
        y.reshape(out)
    }
}

/// The forward of an [`Int8Linear`], with or without GELU.
struct Int8Op<'a> {
    layer: &'a Int8Linear,
    gelu: bool,
}

impl CustomOp1 for Int8Op<'_> {
    fn name(&self) -> &'static str {
        "oscar-int8-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            bail!("int8 linear: the input must be f32")
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            bail!("int8 linear: expected a contiguous input")
        };
        let (m, _) = l.shape().dims2()?;
        let w = &self.layer.weight;
        let y = outliers::gemm_decomposed(
            &v[a..b],
            m,
            w,
            Epilogue {
                bias: self.layer.bias.as_deref(),
                gelu: self.gelu,
            },
            outlier_threshold(),
        );
        Ok((CpuStorage::F32(y), Shape::from((m, w.n))))
    }
}

/// The magnitude from which an input feature is multiplied in f32 ([`outliers::THRESHOLD`];
/// `OSCAR_INT8_OUTLIER_THRESHOLD` sets another, `inf` turns the decomposition off).
fn outlier_threshold() -> f32 {
    static T: std::sync::OnceLock<f32> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        let Ok(v) = std::env::var("OSCAR_INT8_OUTLIER_THRESHOLD") else {
            return outliers::THRESHOLD;
        };
        match v.trim().parse::<f32>() {
            Ok(t) if t > 0.0 => t,
            _ => {
                eprintln!(
                    "warning: OSCAR_INT8_OUTLIER_THRESHOLD={v:?} is not a positive number; \
                     using {}",
                    outliers::THRESHOLD
                );
                outliers::THRESHOLD
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::kernel::{gemm, reference, PackedWeight};
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-scale..scale)).collect()
    }

    /// The packed kernel (this CPU's best), into a given buffer and into a fresh one, equals the
    /// plain triple loop bit for bit, on shapes that leave partial tiles, panels, groups of 4 and
    /// weight groups, with and without group steps and a bias, on one thread and on the pool.
    #[test]
    fn packed_kernel_equals_the_scalar_reference_on_odd_shapes() {
        for (i, &(m, k, n)) in [
            (1, 1, 1),
            (2, 0, 5),
            (3, 5, 7),
            (5, 13, 17),
            (4, 16, 16),
            (9, 31, 33),
            (70, 67, 50),
            (130, 768, 40),
            (300, 96, 129),
            (2, 3072, 300),
            (40, 3072, 100),
        ]
        .iter()
        .enumerate()
        {
            let x = random(m * k, i as u64, 3.0);
            // Every group of 32 inputs in a different range, so that groups take exponents.
            let wf: Vec<f32> = random(n * k, 100 + i as u64, 0.2)
                .iter()
                .enumerate()
                .map(|(e, v)| v * 0.5f32.powi(((e % k) / 32 % 4) as i32))
                .collect();
            let b = random(n, 200 + i as u64, 1.0);
            for (groups, bias) in [
                (false, None),
                (false, Some(&b[..])),
                (true, None),
                (true, Some(&b[..])),
            ] {
                let w = PackedWeight::quantize_with(&wf, n, k, groups);
                let want = reference(&x, m, &w, bias);
                let mut got = vec![0f32; m * n];
                gemm(&x, m, &w, bias, &mut got);
                // Into a fresh (not zeroed) buffer: every value written.
                let ep = super::Epilogue { bias, gelu: false };
                let fresh = super::kernel::gemm_epilogue_fresh(&x, m, &w, ep);
                for got in [got, fresh] {
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{m}×{k}·{n} (groups {groups}): packed differs from reference"
                    );
                }
            }
        }
    }

    /// Quantization error stays within what 7- or 8-bit activations and 8-bit weights allow: each
    /// output is within a few quantization steps of the f32 product.
    #[test]
    fn int8_product_is_close_to_the_f32_product() {
        let (m, k, n) = (37, 768, 70);
        let x = random(m * k, 1, 2.0);
        let wf = random(n * k, 2, 0.05);
        let w = PackedWeight::quantize(&wf, n, k);
        let mut got = vec![0f32; m * n];
        gemm(&x, m, &w, None, &mut got);
        let mut num = 0f64;
        let mut den = 0f64;
        for i in 0..m {
            for j in 0..n {
                let exact: f32 = (0..k).map(|kk| x[i * k + kk] * wf[j * k + kk]).sum();
                num += ((got[i * n + j] - exact) as f64).powi(2);
                den += (exact as f64).powi(2);
            }
        }
        let rel = (num / den).sqrt();
        assert!(rel < 0.02, "relative error {rel}");
        assert!(
            rel > 1e-5,
            "no quantization error at all: {rel} (is the int8 path running?)"
        );
    }

    /// Weights read back from their int8 form pack to the same layout (a stored quantized model
    /// reloads exactly), and dequantized weights re-quantize to the same integers, exponents and
    /// scales, with and without groups.
    #[test]
    fn quantized_weights_round_trip() {
        for (n, k) in [(3000, 24), (300, 200)] {
            // Channels (and groups) of very different magnitudes, as trained layers have.
            let w: Vec<f32> = random(n * k, 7, 1.0)
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let (j, kk) = (i / k, i % k);
                    v * 10f32.powf(j as f32 % 7.0 - 4.0) * 0.5f32.powi((kk / 32 % 5) as i32)
                })
                .collect();
            for groups in [false, true] {
                let w = PackedWeight::quantize_with(&w, n, k, groups);
                let q = w.quantized();
                let e = w.exponents();
                // One group per channel (k = 24) holds the channel's largest weight: exponent 0.
                assert_eq!(e.is_some(), groups && k > 32, "{n}×{k}: groups {groups}");
                let back = PackedWeight::from_quantized(&q, &w.scales, e.as_deref(), n, k);
                assert_eq!(back, w);
                let ng = k.div_ceil(super::kernel::WEIGHT_GROUP);
                let deq: Vec<f32> = (0..n * k)
                    .map(|i| {
                        let ex = e.as_ref().map_or(0, |e| e[(i / k) * ng + (i % k) / 32]);
                        super::kernel::dequantize_weight(q[i], w.scales[i / k], ex)
                    })
                    .collect();
                assert_eq!(PackedWeight::quantize_with(&deq, n, k, groups), w);
                for kk in [0, k / 2, k - 1] {
                    let col: Vec<f32> = (0..n).map(|j| deq[j * k + kk]).collect();
                    assert_eq!(w.dequantized_column(kk), col);
                }
            }
        }
    }

    /// Group steps pay where a channel's weights differ in size from group to group: the
    /// dequantized weights come much closer to f32 (about 0.37× the error here: one group of 8 at
    /// the channel's step, seven at an eighth of it), and so does the product; on uniform
    /// weights, where most groups keep the channel's step, neither gets worse.
    #[test]
    fn group_steps_reduce_the_error_of_uneven_channels() {
        let (m, k, n) = (16, 256, 48);
        let x = random(m * k, 11, 1.0);
        let rel = |got: &[f32], want: &[f32]| {
            let num: f64 = got
                .iter()
                .zip(want)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let den: f64 = want.iter().map(|&b| (b as f64).powi(2)).sum();
            (num / den).sqrt()
        };
        let errors = |wf: &[f32], groups: bool| {
            let w = PackedWeight::quantize_with(wf, n, k, groups);
            let deq: Vec<f32> = (0..n * k)
                .map(|i| w.dequantized_column(i % k)[i / k])
                .collect();
            let exact: Vec<f32> = (0..m * n)
                .map(|i| {
                    (0..k)
                        .map(|kk| x[(i / n) * k + kk] * wf[(i % n) * k + kk])
                        .sum()
                })
                .collect();
            (rel(&deq, wf), rel(&reference(&x, m, &w, None), &exact))
        };
        let uneven: Vec<f32> = random(n * k, 12, 1.0)
            .iter()
            .enumerate()
            .map(|(i, v)| v * if (i % k) / 32 == 3 { 1.0 } else { 0.1 })
            .collect();
        let (plain, grouped) = (errors(&uneven, false), errors(&uneven, true));
        assert!(
            grouped.0 < 0.5 * plain.0 && grouped.1 < plain.1,
            "uneven: (weights, product) {grouped:?} with groups, {plain:?} without"
        );
        let uniform = random(n * k, 13, 1.0);
        let (plain, grouped) = (errors(&uniform, false), errors(&uniform, true));
        assert!(
            grouped.0 <= plain.0 && grouped.1 <= plain.1 * 1.01,
            "uniform: {grouped:?} with groups, {plain:?} without"
        );
    }

    /// A row holding NaN gives NaN outputs, as the f32 product would; other rows are unharmed;
    /// an all-zero row gives the bias exactly.
    #[test]
    fn non_finite_and_zero_rows() {
        let (m, k, n) = (3, 20, 5);
        let mut x = random(m * k, 3, 1.0);
        x[3] = f32::NAN;
        x[2 * k..].fill(0.0);
        let w = PackedWeight::quantize(&random(n * k, 4, 1.0), n, k);
        let b = random(n, 5, 1.0);
        let mut y = vec![0f32; m * n];
        gemm(&x, m, &w, Some(&b), &mut y);
        assert!(y[..n].iter().all(|v| v.is_nan()));
        assert!(y[n..2 * n].iter().all(|v| v.is_finite()));
        assert_eq!(&y[2 * n..], &b[..]);
    }
}
