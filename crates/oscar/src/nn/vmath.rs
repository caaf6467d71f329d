//! `exp`, `erf` and erf-GELU over slices, eight lanes at a time (AVX2 + FMA), for the element-wise
//! kernels of [`super::fused`]: the attention softmax, GELU and GELU's derivative.
//!
//! Why not libm: its `erff`/`expf` are branchy and take one value at a time; in an int8 Oscar-B
//! scoring call they were a tenth of the time (perf, 2026-12-03), more than the softmax and
//! LayerNorm together.
//!
//! Numerics mirror PyTorch's CPU kernels: `at::vec::Vectorized<float>::erf`, which torch's own
//! `gelu` (approximate="none") calls on the CPU, is Abramowitz & Stegun 7.1.26,
//! `erf(x) = sign(x)·(1 − t·P(t)·e^(−x²))` with `t = 1/(1 + 0.3275911·|x|)` (absolute error
//! ≤ 1.5·10⁻⁷; up to about 4·10⁻⁷ once evaluated in f32), and this is that formula. `exp` reduces `x = n·ln 2 + r` (ln 2 split in two for an
//! exact `r`), evaluates a degree-6 polynomial in `r` (Cephes' `expf` coefficients) and multiplies
//! by 2ⁿ built in the exponent bits: within 2 ulp of the exact value. Its range: below −87.33 it
//! returns 0 (the exact values there are subnormal, < 1.2·10⁻³⁸) and above 88.37 it returns +∞.
//!
//! Every element of a slice goes through the same code (the tail is padded to eight lanes), so a
//! value's result does not depend on its position: a batch's rows come out as they would alone.
//! Machines without AVX2 and FMA run the same formulas one value at a time.

/// Cephes' split of ln 2: `LN2_HI + LN2_LO = ln 2`, `LN2_HI` with few mantissa bits so that
/// `n·LN2_HI` is exact.
const LN2_HI: f32 = 355.0 / 512.0;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' `expf` polynomial, highest degree first: `e^r ≈ 1 + r + r²·P(r)`.
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];
/// Below this `exp` returns 0, above [`EXP_MAX`] +∞ (2ⁿ must stay a normal number).
const EXP_MIN: f32 = -87.336_55;
const EXP_MAX: f32 = 88.376_26;
/// Abramowitz & Stegun 7.1.26: `p` and `a1‥a5`.
const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_8,
    -1.453_152,
    1.061_405_4,
];
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`, the standard normal density at 0.
const INV_SQRT_2PI: f32 = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;

/// `e^x` (see the module's note on its range).
pub fn exp(x: f32) -> f32 {
    if x < EXP_MIN {
        return 0.0;
    }
    if x > EXP_MAX {
        return f32::INFINITY;
    }
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = EXP_P.iter().fold(0.0, |acc, &c| acc * r + c);
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `erf(x)`, Abramowitz & Stegun 7.1.26 (PyTorch's CPU formula).
pub fn erf(x: f32) -> f32 {
    let ax = x.abs();
    let t = 1.0 / (ERF_P * ax + 1.0);
    let poly = ERF_A.iter().rev().fold(0.0, |acc, &c| acc * t + c);
    let y = 1.0 - poly * t * exp(-ax * ax);
    y.copysign(x)
}

/// erf-GELU, `0.5·x·(1 + erf(x/√2))`.
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// GELU's derivative, `Φ(x) + x·φ(x)`.
pub fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
    cdf + x * (exp(-0.5 * x * x) * INV_SQRT_2PI)
}

/// `Σ f(x)` over a row in 8 lanes, the lanes summed at the end: the compiler turns the lane
/// loop into vector adds, where a plain `sum()` is one serial chain of dependent additions
/// (PyTorch's CPU reductions also sum in lanes, so the rounding differs from it as little).
pub fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// The largest element (−∞ for an empty row; NaNs are skipped, as `f32::max` skips them), in
/// 8 lanes like [`lane_sum`].
pub fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter().copied().fold(rest, f32::max)
}

/// `v = e^v` for every element.
pub fn exp_in_place(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        if avx512() {
            // SAFETY: AVX-512F was detected at run time.
            return unsafe { avx512::map_in_place(v, |x| avx512::exp16(x)) };
        }
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::map_in_place(v, |x| avx2::exp8(x)) };
    }
    v.iter_mut().for_each(|x| *x = exp(*x));
}

/// `row = softmax(row · scale + mask)`, the mask (one value per column) added where given: an
/// attention row's scores turned into probabilities. With AVX-512 the three passes over the
/// row (scale and mask with the maximum, `exp` with the sum, the normalisation) each run 16
/// values at a time; otherwise [`softmax_in_place`] after the scaling. The maximum and every
/// `exp` are the same bits on both paths; the sum is taken in another order.
pub fn scaled_softmax_in_place(row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
    assert!(
        mask.is_none_or(|m| m.len() == row.len()),
        "softmax: a mask of {} values for a row of {}",
        mask.map_or(0, <[f32]>::len),
        row.len()
    );
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F was detected at run time; the mask is as long as the row.
        return unsafe { avx512::scaled_softmax_in_place(row, scale, mask) };
    }
    match mask {
        Some(m) => row
            .iter_mut()
            .zip(m)
            .for_each(|(o, mv)| *o = *o * scale + mv),
        None => row.iter_mut().for_each(|o| *o *= scale),
    }
    softmax_in_place(row);
}

/// `row = softmax(row)`: the maximum subtracted, `exp`, then divided by the sum.
fn softmax_in_place(row: &mut [f32]) {
    let max = lane_max(row);
    row.iter_mut().for_each(|v| *v -= max);
    exp_in_place(row);
    let inv = 1.0 / lane_sum(row, |v| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `out[i] = gelu(x[i])`.
pub fn gelu_slice(x: &[f32], out: &mut [f32]) {
    assert_eq!(
        x.len(),
        out.len(),
        "gelu: {} values into {}",
        x.len(),
        out.len()
    );
    out.copy_from_slice(x);
    gelu_in_place(out);
}

/// `v[i] = gelu(v[i])`: the same values as [`gelu_slice`], for outputs still in cache (a
/// product's tile, say).
pub fn gelu_in_place(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        if avx512() {
            // SAFETY: AVX-512F was detected at run time.
            return unsafe { avx512::map_in_place(v, |x| avx512::gelu16(x)) };
        }
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::map_in_place(v, |x| avx2::gelu8(x)) };
    }
    v.iter_mut().for_each(|x| *x = gelu(*x));
}

/// `out[i] = g[i] · gelu'(x[i])`: GELU's backward.
pub fn gelu_grad_slice(x: &[f32], g: &[f32], out: &mut [f32]) {
    assert!(
        x.len() == g.len() && x.len() == out.len(),
        "gelu backward: {} inputs, {} gradients, {} outputs",
        x.len(),
        g.len(),
        out.len()
    );
    out.copy_from_slice(x);
    #[cfg(target_arch = "x86_64")]
    if simd() {
        if avx512() {
            // SAFETY: AVX-512F was detected at run time.
            unsafe { avx512::map_in_place(out, |x| avx512::gelu_grad16(x)) };
        } else {
            // SAFETY: AVX2 and FMA were detected at run time.
            unsafe { avx2::map_in_place(out, |x| avx2::gelu_grad8(x)) };
        }
        out.iter_mut().zip(g).for_each(|(o, g)| *o *= g);
        return;
    }
    out.iter_mut()
        .zip(g)
        .for_each(|(o, g)| *o = g * gelu_grad(*o));
}

/// Whether the AVX2 + FMA versions run (checked once).
#[cfg(target_arch = "x86_64")]
fn simd() -> bool {
    use std::sync::OnceLock;
    static SIMD: OnceLock<bool> = OnceLock::new();
    *SIMD.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Whether the AVX-512 versions run (checked once; `OSCAR_NO_AVX512=1` keeps every AVX-512
/// path of the crate off, to compare). They compute the AVX2 versions' operations lane by lane,
/// so the same bits (tested).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512() -> bool {
    use std::sync::OnceLock;
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var_os("OSCAR_NO_AVX512").is_none() && is_x86_feature_detected!("avx512f")
    })
}

/// [`avx2`]'s functions sixteen lanes wide, the same operations in the same order (the int8
/// epilogue applies [`avx512::gelu16`] to its results in registers).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Applies `f` to `v` sixteen values at a time; the tail is padded to sixteen lanes.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn map_in_place(v: &mut [f32], f: impl Fn(__m512) -> __m512) {
        let mut chunks = v.chunks_exact_mut(16);
        for c in &mut chunks {
            let p = c.as_mut_ptr();
            _mm512_storeu_ps(p, f(_mm512_loadu_ps(p)));
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut lanes = [0f32; 16];
            lanes[..rest.len()].copy_from_slice(rest);
            _mm512_storeu_ps(lanes.as_mut_ptr(), f(_mm512_loadu_ps(lanes.as_ptr())));
            rest.copy_from_slice(&lanes[..rest.len()]);
        }
    }

    /// [`super::scaled_softmax_in_place`]: `mask`, when given, holds `row.len()` values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn scaled_softmax_in_place(row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
        let n = row.len();
        let p = row.as_mut_ptr();
        // Lanes `i‥i + 16` that lie inside the row.
        let lanes = |i: usize| ((1u32 << (n - i).min(16)) - 1) as __mmask16;
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..n).step_by(16) {
            let m = lanes(i);
            let mut v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(i)), _mm512_set1_ps(scale));
            if let Some(mask) = mask {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, mask.as_ptr().add(i)));
            }
            _mm512_mask_storeu_ps(p.add(i), m, v);
            max = _mm512_mask_max_ps(max, m, v, max);
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
        let mut sum = _mm512_setzero_ps();
        for i in (0..n).step_by(16) {
            let m = lanes(i);
            let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p.add(i)), max));
            _mm512_mask_storeu_ps(p.add(i), m, e);
            sum = _mm512_mask_add_ps(sum, m, sum, e);
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
        for i in (0..n).step_by(16) {
            let m = lanes(i);
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(i)), inv);
            _mm512_mask_storeu_ps(p.add(i), m, v);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn bits(x: __m512) -> __m512i {
        _mm512_castps_si512(x)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn float(x: __m512i) -> __m512 {
        _mm512_castsi512_ps(x)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn exp16(x: __m512) -> __m512 {
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_add_ps(
            _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r),
            _mm512_set1_ps(1.0),
        );
        let two_n = float(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        )));
        let y = _mm512_mul_ps(y, two_n);
        let y = _mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_MIN)),
            y,
            _mm512_setzero_ps(),
        );
        _mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(EXP_MAX)),
            y,
            _mm512_set1_ps(f32::INFINITY),
        )
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn erf16(x: __m512) -> __m512 {
        let neg_zero = bits(_mm512_set1_ps(-0.0));
        let sign = _mm512_and_si512(bits(x), neg_zero);
        let ax = float(_mm512_xor_si512(bits(x), sign));
        let one = _mm512_set1_ps(1.0);
        let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(ERF_P), ax, one));
        let mut poly = _mm512_set1_ps(ERF_A[4]);
        for &c in ERF_A[..4].iter().rev() {
            poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
        }
        let e = exp16(float(_mm512_xor_si512(
            bits(_mm512_mul_ps(ax, ax)),
            neg_zero,
        )));
        let y = _mm512_fnmadd_ps(_mm512_mul_ps(poly, t), e, one);
        float(_mm512_or_si512(bits(y), sign))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn gelu16(x: __m512) -> __m512 {
        let e = erf16(_mm512_mul_ps(x, _mm512_set1_ps(FRAC_1_SQRT_2)));
        _mm512_mul_ps(
            _mm512_mul_ps(_mm512_set1_ps(0.5), x),
            _mm512_add_ps(_mm512_set1_ps(1.0), e),
        )
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn gelu_grad16(x: __m512) -> __m512 {
        let half = _mm512_set1_ps(0.5);
        let e = erf16(_mm512_mul_ps(x, _mm512_set1_ps(FRAC_1_SQRT_2)));
        let cdf = _mm512_mul_ps(half, _mm512_add_ps(_mm512_set1_ps(1.0), e));
        let g = exp16(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(-0.5), x), x));
        let pdf = _mm512_mul_ps(g, _mm512_set1_ps(INV_SQRT_2PI));
        _mm512_fmadd_ps(x, pdf, cdf)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Applies `f` to `v` eight values at a time; the tail is padded to eight lanes, so every value
    /// goes through `f`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn map_in_place(v: &mut [f32], f: impl Fn(__m256) -> __m256) {
        let mut chunks = v.chunks_exact_mut(8);
        for c in &mut chunks {
            let p = c.as_mut_ptr();
            _mm256_storeu_ps(p, f(_mm256_loadu_ps(p)));
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut lanes = [0f32; 8];
            lanes[..rest.len()].copy_from_slice(rest);
            _mm256_storeu_ps(lanes.as_mut_ptr(), f(_mm256_loadu_ps(lanes.as_ptr())));
            rest.copy_from_slice(&lanes[..rest.len()]);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r),
            _mm256_set1_ps(1.0),
        );
        let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        let y = _mm256_mul_ps(y, two_n);
        let y = _mm256_blendv_ps(
            y,
            _mm256_setzero_ps(),
            _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_MIN)),
        );
        _mm256_blendv_ps(
            y,
            _mm256_set1_ps(f32::INFINITY),
            _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(EXP_MAX)),
        )
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn erf8(x: __m256) -> __m256 {
        let sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0));
        let ax = _mm256_xor_ps(x, sign);
        let one = _mm256_set1_ps(1.0);
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), ax, one));
        let mut poly = _mm256_set1_ps(ERF_A[4]);
        for &c in ERF_A[..4].iter().rev() {
            poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
        }
        let e = exp8(_mm256_xor_ps(_mm256_mul_ps(ax, ax), _mm256_set1_ps(-0.0)));
        let y = _mm256_fnmadd_ps(_mm256_mul_ps(poly, t), e, one);
        _mm256_or_ps(y, sign)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu8(x: __m256) -> __m256 {
        let e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(FRAC_1_SQRT_2)));
        _mm256_mul_ps(
            _mm256_mul_ps(_mm256_set1_ps(0.5), x),
            _mm256_add_ps(_mm256_set1_ps(1.0), e),
        )
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_grad8(x: __m256) -> __m256 {
        let half = _mm256_set1_ps(0.5);
        let e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(FRAC_1_SQRT_2)));
        let cdf = _mm256_mul_ps(half, _mm256_add_ps(_mm256_set1_ps(1.0), e));
        let g = exp8(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-0.5), x), x));
        let pdf = _mm256_mul_ps(g, _mm256_set1_ps(INV_SQRT_2PI));
        _mm256_fmadd_ps(x, pdf, cdf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::cpu::erf::erf_f64;

    /// The scaled, masked softmax (AVX-512 where the machine has it) against f64 on rows of
    /// every length up to 40 and attention's 95, 120: each probability within 4 ulps plus 1e-9,
    /// the masked columns 0; a NaN score makes the row NaN on every path.
    #[test]
    fn scaled_softmax_matches_f64_with_and_without_a_mask() {
        let scale = 0.125f32;
        for n in (1..=40).chain([95, 120]) {
            let scores: Vec<f32> = (0..n)
                .map(|i| ((i * 37) % 23) as f32 * 1.7 - 19.0)
                .collect();
            let mask: Vec<f32> = (0..n)
                .map(|i| if i % 3 == 2 { -10000.0 } else { 0.0 })
                .collect();
            for mask in [None, Some(&mask[..])] {
                let mut row = scores.clone();
                scaled_softmax_in_place(&mut row, scale, mask);
                let z: Vec<f64> = (0..n)
                    .map(|i| scores[i] as f64 * scale as f64 + mask.map_or(0.0, |m| m[i] as f64))
                    .collect();
                let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
                for (i, &p) in row.iter().enumerate() {
                    let want = (z[i] - max).exp() / sum;
                    let tol = 4.0 * f32::EPSILON as f64 * want + 1e-9;
                    assert!(
                        (p as f64 - want).abs() <= tol,
                        "n {n}, mask {}: column {i} is {p}, want {want}",
                        mask.is_some()
                    );
                }
            }
            let mut row = scores.clone();
            row[n / 2] = f32::NAN;
            scaled_softmax_in_place(&mut row, scale, None);
            assert!(row.iter().all(|p| p.is_nan()), "n {n}: {row:?}");
        }
    }

    /// Every f32 in steps of `step` over `[lo, hi]`, plus the edges.
    fn grid(lo: f32, hi: f32, step: f32) -> Vec<f32> {
        let n = ((hi - lo) / step) as usize;
        (0..=n).map(|i| lo + i as f32 * step).collect()
    }

    fn ulps(a: f32, b: f64) -> f64 {
        (a as f64 - b).abs() / (b.abs() * f32::EPSILON as f64).max(f32::MIN_POSITIVE as f64)
    }

    /// The slice versions (AVX2 where the machine has it) and the one-value versions agree with
    /// f64 within the formulas' bounds on a dense grid, and on the tail of a slice as on its body.
    #[test]
    fn exp_erf_and_gelu_match_f64_on_a_dense_grid() {
        let xs = grid(-87.0, 88.0, 1.0 / 64.0);
        let mut v = xs.clone();
        exp_in_place(&mut v);
        for (&x, &y) in xs.iter().zip(&v) {
            let want = (x as f64).exp();
            assert!(ulps(y, want) <= 2.5, "exp({x}) = {y}, want {want}");
            assert!(ulps(exp(x), want) <= 2.5, "scalar exp({x}) = {}", exp(x));
        }
        let mut edge = vec![-1e4, -104.0, -87.4, 88.4, 1e4, f32::NEG_INFINITY, f32::NAN];
        exp_in_place(&mut edge);
        assert_eq!(
            &edge[..6],
            &[0.0, 0.0, 0.0, f32::INFINITY, f32::INFINITY, 0.0]
        );
        assert!(edge[6].is_nan());

        let xs = grid(-12.0, 12.0, 1.0 / 256.0);
        let mut g = vec![0f32; xs.len()];
        gelu_slice(&xs, &mut g);
        let ones = vec![1f32; xs.len()];
        let mut d = vec![0f32; xs.len()];
        gelu_grad_slice(&xs, &ones, &mut d);
        for (i, &x) in xs.iter().enumerate() {
            let x64 = x as f64;
            let e = erf_f64(x64);
            // A&S's 1.5e-7, plus f32 rounding in `1 − t·P(t)·e^(−x²)` (PyTorch's too).
            assert!(
                (erf(x) as f64 - e).abs() <= 6e-7,
                "erf({x}) = {}, want {e}",
                erf(x)
            );
            let cdf = 0.5 * (1.0 + erf_f64(x64 / std::f64::consts::SQRT_2));
            let want = x64 * cdf;
            // erf's absolute error, scaled by 0.5·|x|, plus f32 rounding of the result.
            let tol = 1.5e-7 * x64.abs().max(1.0) + 1e-6 * want.abs();
            assert!(
                (g[i] as f64 - want).abs() <= tol,
                "gelu({x}) = {}, want {want}",
                g[i]
            );
            assert!(
                (gelu(x) as f64 - want).abs() <= tol,
                "scalar gelu({x}) = {}",
                gelu(x)
            );
            let pdf = (-0.5 * x64 * x64).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let want = cdf + x64 * pdf;
            assert!(
                (d[i] as f64 - want).abs() <= 1e-6,
                "gelu'({x}) = {}, want {want}",
                d[i]
            );
            assert!(
                (gelu_grad(x) as f64 - want).abs() <= 1e-6,
                "scalar gelu'({x})"
            );
        }
        // A value gives the same result in the body of a slice and in its tail.
        for len in 1..=17 {
            let x: Vec<f32> = (0..len).map(|i| -3.0 + 0.37 * i as f32).collect();
            let mut out = vec![0f32; len];
            gelu_slice(&x, &mut out);
            for (i, &xi) in x.iter().enumerate() {
                let mut one = [0f32; 1];
                gelu_slice(&[xi], &mut one);
                assert_eq!(out[i].to_bits(), one[0].to_bits(), "len {len}, index {i}");
            }
        }
    }

    /// The lane reductions against plain ones, on every length up to 40 (partial lanes), with
    /// the maximum in every position and a NaN skipped.
    #[test]
    fn lane_sum_and_max_match_plain_reductions() {
        assert_eq!(lane_sum(&[], |v| v), 0.0);
        assert_eq!(lane_max(&[]), f32::NEG_INFINITY);
        for n in 1..=40 {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.5).collect();
            let want: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            assert!((lane_sum(&x, |v| v * v) as f64 - want).abs() < 1e-5 * want.max(1.0));
            for top in 0..n {
                let mut y = x.clone();
                y[top] = 9.0;
                assert_eq!(lane_max(&y), 9.0, "n = {n}, max at {top}");
            }
            let mut y = x.clone();
            y[n / 2] = f32::NAN;
            let plain = y.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(lane_max(&y), plain, "n = {n} with a NaN");
        }
    }

    /// The AVX-512 versions give the AVX2 versions' bits on a dense grid, its extremes, and
    /// NaN, ±∞, ±0 and subnormals (reported skipped on a CPU without AVX-512).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_versions_equal_the_avx2_versions_bit_for_bit() {
        if !(avx512() && simd()) {
            eprintln!("skipped: this CPU has no AVX-512 (or OSCAR_NO_AVX512 is set)");
            return;
        }
        let mut xs = grid(-100.0, 100.0, 1.0 / 1024.0);
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-40,
            -1e-40,
        ]);
        xs.extend([f32::MAX, f32::MIN, 88.37, 88.38, -87.33, -87.34]);
        type Pair = (unsafe fn(&mut [f32]), unsafe fn(&mut [f32]), &'static str);
        let pairs: [Pair; 3] = [
            (
                |v| unsafe { avx2::map_in_place(v, |x| avx2::exp8(x)) },
                |v| unsafe { avx512::map_in_place(v, |x| avx512::exp16(x)) },
                "exp",
            ),
            (
                |v| unsafe { avx2::map_in_place(v, |x| avx2::gelu8(x)) },
                |v| unsafe { avx512::map_in_place(v, |x| avx512::gelu16(x)) },
                "gelu",
            ),
            (
                |v| unsafe { avx2::map_in_place(v, |x| avx2::gelu_grad8(x)) },
                |v| unsafe { avx512::map_in_place(v, |x| avx512::gelu_grad16(x)) },
                "gelu'",
            ),
        ];
        for (narrow, wide, name) in pairs {
            let (mut a, mut b) = (xs.clone(), xs.clone());
            // SAFETY: both instruction sets were detected above.
            unsafe {
                narrow(&mut a);
                wide(&mut b);
            }
            for ((x, p), q) in xs.iter().zip(&a).zip(&b) {
                assert_eq!(p.to_bits(), q.to_bits(), "{name}({x}): {p} against {q}");
            }
        }
    }
}
