//! The int8 matrix product behind [`super::Int8Linear`]: `y[m×n] = x[m×k]·Wᵀ + b` with `W`
//! quantized per output channel (symmetric, int8) and `x` quantized per row on the fly
//! (asymmetric, 8 bits where the CPU has AVX-512 VNNI, else 7), products summed exactly in int32
//! and scaled back to f32.
//!
//! Why 7-bit activations without VNNI: AVX2 has no int8 dot product with int32 accumulation; its
//! fastest path is `vpmaddubsw` (u8 × i8, adjacent pairs summed into a *saturating* i16) then
//! `vpmaddwd` by ones. With 8-bit activations a pair can reach 2·255·127 and saturate, silently.
//! fbgemm (PyTorch's `quantize_dynamic`) avoids it by giving the weights 7 bits (`reduce_range`,
//! which it drops on VNNI CPUs); ONNX Runtime's AVX2 path accepts the risk. There the activations
//! get 7 bits (0‥127, 2·127·127 < 2¹⁵) by default, so every sum is exact and the weights keep 8
//! (`OSCAR_INT8_ACTIVATION_BITS=8` gives AVX2 all 8 bits at two products per byte). Measured on
//! this project's Zen 3: this sequence does 73 GMAC/s per core against 47 for f32 FMA. VNNI's
//! `vpdpbusd` adds the products straight into int32, so there the activations take all 8 bits
//! (0‥255) at the same speed: on all-MiniLM-L6-v2 that takes a third of the error away (worst
//! pooled cosine to f32 0.99840 → 0.99897; docs/int8.md). [`activation_levels`] says which.
//!
//! Group steps: where activations take 8 bits, each group of [`WEIGHT_GROUP`] inputs of a channel
//! may take the channel's step halved up to 3 times ([`PackedWeight::quantize_with`]); the tiles
//! shift each group's int32 sum left instead of rescaling it, so the sums stay exact integers.
//!
//! Layout: `k` is padded to a multiple of 4 and `n` to a multiple of [`NR`]; the weights are
//! packed in panels of 16 output channels, 4 consecutive inputs of one channel per 32-bit lane,
//! so one 256-bit load feeds 8 channels. The AVX2 tile is checked against [`reference`], a plain
//! triple loop over the unpacked integers; both share one epilogue, so they agree bit for bit.
//!
//! Where the CPU has AMX ([`amx`]) the panels are its weight tiles as they are, and products
//! whose `k` is a multiple of 64 run there, 32 rows × 2 panels a call ([`amx_tiles`]); weights
//! with group shifts are then held as two planes ([`Panels::Split`]), since a tile product
//! cannot shift a group's sum on its way.

use super::aligned::Aligned;
use super::amx;
use crate::nn::par::Out;
use crate::nn::sgemm::Epilogue;

/// Output channels per packed panel (two 256-bit registers of int32 sums).
pub const NR: usize = 16;
/// Rows per tile.
pub const MR: usize = 4;
/// Rows quantized and kept in cache together while every panel passes over them.
const MC: usize = 64;
/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Inputs per weight group: within a channel, each group of this many consecutive inputs may take
/// a finer step than the channel's (see [`PackedWeight::quantize_with`]).
pub const WEIGHT_GROUP: usize = 32;
/// The finest group step is the channel's step halved this many times.
const MAX_EXPONENT: u32 = 3;

/// The largest group exponent a product over `k` inputs allows: each group's int32 sum is shifted
/// left by up to this much, and the total must stay within int32 for 8-bit activations
/// (`255 · 127 · k4 · 2^e < 2^31`; 3 up to k ≈ 8,000).
pub fn max_exponent(k: usize) -> u8 {
    let k4 = k.div_ceil(4) * 4;
    (0..=MAX_EXPONENT)
        .rev()
        .find(|&e| ((255 * 127 * k4) as u64) << e < 1u64 << 31)
        .unwrap_or(0) as u8
}

/// `2^-e`, exactly.
fn pow2_neg(e: u32) -> f32 {
    f32::from_bits((127 - e) << 23)
}

/// A stored weight `q` back in f32: `q · scale · 2^-e` (the channel's scale, the group's
/// exponent), what [`PackedWeight::quantize_with`] maps back to the same integers.
pub fn dequantize_weight(q: i8, scale: f32, exponent: u8) -> f32 {
    q as f32 * scale * pow2_neg(exponent as u32)
}

/// Whether [`PackedWeight::quantize`] gives each group of [`WEIGHT_GROUP`] inputs its own
/// power-of-two step: by default where activations take 8 bits (with 7 the activations' error
/// dominates and groups gained nothing on all-MiniLM-L6-v2; docs/int8.md);
/// `OSCAR_INT8_WEIGHT_GROUPS=0` or `1` chooses.
pub fn weight_groups() -> bool {
    use std::sync::OnceLock;
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("OSCAR_INT8_WEIGHT_GROUPS") {
        Err(_) => activation_levels() == 255,
        Ok(v) => match v.trim() {
            "1" => true,
            "0" => false,
            _ => {
                let auto = activation_levels() == 255;
                eprintln!(
                    "warning: OSCAR_INT8_WEIGHT_GROUPS={v:?} is neither 0 nor 1; using {}",
                    auto as u8
                );
                auto
            }
        },
    })
}

/// How a [`PackedWeight`]'s integers are held, both in its panel layout.
#[derive(Debug, Clone, PartialEq)]
enum Panels {
    /// The integers `q` themselves: what every tile reads (AMX's too, without group shifts).
    Plain(Aligned<i8>),
    /// For the AMX tiles with group shifts, which cannot shift a group's sum between two
    /// `tdpbusd` steps: each weight shifted by its group's shift, `w = q · 2^shift` (up to
    /// 127 · 8), held as `low + 8 · high` with both in int8 (`high = ⌊(w + 4) / 8⌋`, `low` in
    /// −4‥3). The tiles sum the activations against each plane and add 8 times `high`'s sums to
    /// `low`'s: the same exact integers as shifting each group's sum. Twice the bytes.
    Split { low: Aligned<i8>, high: Aligned<i8> },
}

/// A weight matrix `[n, k]` quantized per output channel and packed for the kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeight {
    pub n: usize,
    pub k: usize,
    /// `k` rounded up to a multiple of 4.
    k4: usize,
    /// `ceil(n / NR)` panels, each `k4 / 4` groups of `NR × 4` bytes.
    panels: Panels,
    /// Per output channel: the channel's step; input `kk`'s weight is `q · scale · 2^-e` with `e`
    /// its group's exponent (0 without groups). `n` of them.
    pub scales: Vec<f32>,
    /// The largest exponent of this matrix's groups, `E` (0: no groups; the kernels skip shifts).
    shift_base: u32,
    /// With groups: per panel, per group, per channel of the panel, `E − e`: the left shift of
    /// that group's int32 sum, so that every sum counts in steps of `scale · 2^-E`.
    shifts: Vec<u8>,
    /// Per output channel `scale · 2^-E`: what the epilogue multiplies the int32 total by.
    step_scales: Vec<f32>,
    /// Per output channel: `Σ_k q · 2^(E − e)`, for the activations' zero point.
    colsums: Vec<i32>,
}

impl PackedWeight {
    /// [`Self::quantize_with`], with groups where [`weight_groups`] says.
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        Self::quantize_with(w, n, k, weight_groups())
    }

    /// Quantizes `w` (`[n, k]` row-major) per output channel: `scale = max|w| / 127`,
    /// `q = round(w / scale)` (ties to even), so the largest weight of each channel is exact.
    ///
    /// With `groups`, each group of [`WEIGHT_GROUP`] inputs of a channel whose weights are all
    /// small takes the step `scale · 2^-e`, `e` the largest (up to [`max_exponent`]) with
    /// `max|w_group| · 2^e ≤ max|w|`: its integers use the whole int8 range, yet the kernel
    /// stays integer (a group's sum is shifted, not rescaled in f32). A per-group f32 scale
    /// would be finer still but convert every group's sum to f32. On all-MiniLM-L6-v2 this takes
    /// the weights' share of the error down by about a third (docs/int8.md).
    pub fn quantize_with(w: &[f32], n: usize, k: usize, groups: bool) -> Self {
        assert_eq!(
            w.len(),
            n * k,
            "int8: weight of {} values for {n}×{k}",
            w.len()
        );
        let e_max = if groups { max_exponent(k) as u32 } else { 0 };
        let ngroups = k.div_ceil(WEIGHT_GROUP);
        let mut q = vec![0i8; n * k];
        let mut scales = vec![0f32; n];
        let mut exps = vec![0u8; n * ngroups];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = max / 127.0;
            scales[j] = scale;
            if scale > 0.0 {
                for (g, chunk) in row.chunks(WEIGHT_GROUP).enumerate() {
                    let gmax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let e = (0..=e_max)
                        .rev()
                        .find(|&e| gmax / pow2_neg(e) <= max)
                        .unwrap_or(0);
                    exps[j * ngroups + g] = e as u8;
                    let up = 1.0 / pow2_neg(e);
                    let out = &mut q[j * k + g * WEIGHT_GROUP..][..chunk.len()];
                    for (o, v) in out.iter_mut().zip(chunk) {
                        *o = (v * up / scale).round_ties_even().clamp(-127.0, 127.0) as i8;
                    }
                }
            }
        }
        let exps = (e_max > 0).then_some(&exps[..]);
        Self::from_quantized(&q, &scales, exps, n, k)
    }

    /// Packs weights already quantized (`q[n, k]`, one `scale` per channel and, with groups,
    /// one exponent per channel and group, `[n, ceil(k / WEIGHT_GROUP)]`), e.g. read back from
    /// a file written with [`Self::quantized`] and [`Self::exponents`]. Exponents above
    /// [`max_exponent`]`(k)` are an error of the caller (asserted).
    pub fn from_quantized(
        q: &[i8],
        scales: &[f32],
        exponents: Option<&[u8]>,
        n: usize,
        k: usize,
    ) -> Self {
        let split = amx_for(k.div_ceil(4) * 4);
        Self::from_quantized_in(q, scales, exponents, n, k, split)
    }

    /// [`Self::from_quantized`], with group-shifted weights held as AMX's two planes
    /// ([`Panels::Split`]) when `split` (only where [`amx_for`] this `k` holds: no other tile
    /// reads them).
    fn from_quantized_in(
        q: &[i8],
        scales: &[f32],
        exponents: Option<&[u8]>,
        n: usize,
        k: usize,
        split: bool,
    ) -> Self {
        let ngroups = k.div_ceil(WEIGHT_GROUP);
        assert!(
            q.len() == n * k
                && scales.len() == n
                && exponents.is_none_or(|e| e.len() == n * ngroups),
            "int8: {n}×{k} weights"
        );
        // All exponents 0 is the plain per-channel scheme: no shifts to run.
        let shift_base = exponents.map_or(0, |e| e.iter().copied().max().unwrap_or(0) as u32);
        assert!(
            shift_base <= max_exponent(k) as u32,
            "int8: group exponent {shift_base} exceeds {} for k = {k}",
            max_exponent(k)
        );
        let exp = |j: usize, kk: usize| exponents.map_or(0, |e| e[j * ngroups + kk / WEIGHT_GROUP]);
        let k4 = k.div_ceil(4) * 4;
        let np = n.div_ceil(NR);
        let mut panels = Aligned::<i8>::zeroed(np * k4 * NR);
        for j in 0..n {
            let (p, c) = (j / NR, j % NR);
            let panel = &mut panels[p * k4 * NR..(p + 1) * k4 * NR];
            for (kk, &v) in q[j * k..(j + 1) * k].iter().enumerate() {
                panel[(kk / 4) * NR * 4 + c * 4 + kk % 4] = v;
            }
        }
        let shift = |j: usize, kk: usize| shift_base - exp(j, kk) as u32;
        let shifts = if shift_base == 0 {
            Vec::new()
        } else {
            // Groups of the padded k4: the padding's weights are 0, whatever their shift.
            let pg = k4.div_ceil(WEIGHT_GROUP);
            let mut shifts = vec![0u8; np * pg * NR];
            for j in 0..n {
                for g in 0..ngroups {
                    shifts[((j / NR) * pg + g) * NR + j % NR] = shift(j, g * WEIGHT_GROUP) as u8;
                }
            }
            shifts
        };
        let colsums = (0..n)
            .map(|j| {
                (0..k).fold(0i32, |s, kk| {
                    s.wrapping_add((q[j * k + kk] as i32) << shift(j, kk))
                })
            })
            .collect();
        let step_scales = scales.iter().map(|&s| s * pow2_neg(shift_base)).collect();
        let panels = if split && shift_base > 0 {
            let (mut low, mut high) = (
                Aligned::<i8>::zeroed(panels.len()),
                Aligned::<i8>::zeroed(panels.len()),
            );
            for j in 0..n {
                let base = (j / NR) * k4 * NR + (j % NR) * 4;
                for kk in 0..k {
                    let at = base + (kk / 4) * NR * 4 + kk % 4;
                    let w = (panels[at] as i32) << shift(j, kk);
                    let h = (w + 4) >> 3;
                    high[at] = h as i8;
                    low[at] = (w - 8 * h) as i8;
                }
            }
            Panels::Split { low, high }
        } else {
            Panels::Plain(panels)
        };
        PackedWeight {
            n,
            k,
            k4,
            panels,
            scales: scales.to_vec(),
            shift_base,
            shifts,
            step_scales,
            colsums,
        }
    }

    /// The quantized weights `[n, k]`, unpacked.
    pub fn quantized(&self) -> Vec<i8> {
        let mut q = vec![0i8; self.n * self.k];
        for j in 0..self.n {
            for kk in 0..self.k {
                q[j * self.k + kk] = self.at(j, kk);
            }
        }
        q
    }

    /// The groups' exponents `[n, ceil(k / WEIGHT_GROUP)]`, or `None` where every one is 0
    /// (the plain per-channel scheme).
    pub fn exponents(&self) -> Option<Vec<u8>> {
        (self.shift_base > 0).then(|| {
            let ngroups = self.k.div_ceil(WEIGHT_GROUP);
            (0..self.n * ngroups)
                .map(|i| self.exponent(i / ngroups, (i % ngroups) * WEIGHT_GROUP))
                .collect()
        })
    }

    /// The exponent of input `kk`'s group in channel `j`.
    fn exponent(&self, j: usize, kk: usize) -> u8 {
        (self.shift_base - self.shift(j, kk)) as u8
    }

    /// The left shift of input `kk`'s group sum in channel `j` (`E − e`).
    fn shift(&self, j: usize, kk: usize) -> u32 {
        if self.shift_base == 0 {
            return 0;
        }
        let pg = self.k4.div_ceil(WEIGHT_GROUP);
        self.shifts[((j / NR) * pg + kk / WEIGHT_GROUP) * NR + j % NR] as u32
    }

    /// Input feature `kk` of every output channel, dequantized (`n` values).
    pub fn dequantized_column(&self, kk: usize) -> Vec<f32> {
        (0..self.n)
            .map(|j| dequantize_weight(self.at(j, kk), self.scales[j], self.exponent(j, kk)))
            .collect()
    }

    fn at(&self, j: usize, kk: usize) -> i8 {
        let (p, c) = (j / NR, j % NR);
        let at = p * self.k4 * NR + (kk / 4) * NR * 4 + c * 4 + kk % 4;
        match &self.panels {
            Panels::Plain(q) => q[at],
            Panels::Split { low, high } => {
                ((low[at] as i32 + 8 * high[at] as i32) >> self.shift(j, kk)) as i8
            }
        }
    }

    /// Whether the AMX tiles compute this matrix's products: split weights (made only where
    /// [`amx_for`] holds) always, plain ones where [`amx_for`] holds and no group is shifted.
    fn on_amx(&self) -> bool {
        match self.panels {
            Panels::Split { .. } => true,
            Panels::Plain(_) => self.shift_base == 0 && amx_for(self.k4),
        }
    }

    /// Bytes held (packed weights, shifts, scales and column sums).
    pub fn bytes(&self) -> usize {
        let panels = match &self.panels {
            Panels::Plain(q) => q.len(),
            Panels::Split { low, high } => low.len() + high.len(),
        };
        panels + self.shifts.len() + 12 * self.scales.len()
    }

    /// Consecutive panels of the integers, one after the other (`k4 · NR` bytes each). Only
    /// the AMX tiles take [`Panels::Split`] weights, and [`rows_block`] sends those there.
    fn panels(&self, ps: std::ops::Range<usize>) -> &[i8] {
        match &self.panels {
            Panels::Plain(q) => &q[ps.start * self.k4 * NR..ps.end * self.k4 * NR],
            Panels::Split { .. } => unreachable!("int8: split weights outside the AMX tiles"),
        }
    }

    /// Those panels' shifts (`ceil(k4 / WEIGHT_GROUP) · NR` bytes each), `None` without groups.
    fn panel_shifts(&self, ps: std::ops::Range<usize>) -> Option<&[u8]> {
        let per = self.k4.div_ceil(WEIGHT_GROUP) * NR;
        (self.shift_base > 0).then(|| &self.shifts[ps.start * per..ps.end * per])
    }
}

/// One row's quantization: `x ≈ (q - zero) · scale`, `q` in 0‥[`activation_levels`].
#[derive(Debug, Clone, Copy)]
struct RowQuant {
    scale: f32,
    zero: i32,
}

/// Quantizes `x` (one row, `k` values) into `q` (`k4` bytes, the padding left 0). The range
/// always includes 0, so zero padding and ReLU zeros are exact. A row holding NaN or ±∞ gets a
/// NaN scale: its outputs are NaN, as the f32 product's would be.
#[cfg(test)]
fn quantize_row(x: &[f32], q: &mut [u8], levels: i32) -> RowQuant {
    quantize_row_in(x, min_max(x), q, levels)
}

/// [`quantize_row`] with the row's [`min_max`] already known.
fn quantize_row_in(x: &[f32], (lo, hi): (f32, f32), q: &mut [u8], levels: i32) -> RowQuant {
    if !(lo.is_finite() && hi.is_finite()) {
        q.fill(0);
        return RowQuant {
            scale: f32::NAN,
            zero: 0,
        };
    }
    let scale = (hi - lo) / levels as f32;
    if scale == 0.0 {
        q.fill(0);
        return RowQuant {
            scale: 0.0,
            zero: 0,
        };
    }
    let inv = 1.0 / scale;
    let zero = ((-lo * inv).round_ties_even() as i32).clamp(0, levels);
    quantize_values(x, inv, zero, levels, &mut q[..x.len()]);
    q[x.len()..].fill(0);
    RowQuant { scale, zero }
}

/// The smallest and the largest of `x` and 0 (the range a row's quantization covers); `(NaN,
/// NaN)` when `x` holds a NaN.
pub(super) fn min_max(x: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512Vnni {
        // SAFETY: AVX-512F was detected at run time (the VNNI kernels need it).
        return unsafe { avx512::min_max(x) };
    }
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: AVX2 was detected at run time.
        return unsafe { avx2::min_max(x) };
    }
    // NaN must not be skipped (f32::min would, even after it was seen): it decides the row's fate.
    let (mut lo, mut hi) = (0f32, 0f32);
    for &v in x {
        if v.is_nan() {
            return (f32::NAN, f32::NAN);
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo, hi)
}

/// `q = clamp(round(x · inv) + zero, 0, levels)`, rounding ties to even (as `vcvtps2dq` does).
fn quantize_values(x: &[f32], inv: f32, zero: i32, levels: i32, q: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512Vnni {
        // SAFETY: AVX-512F was detected at run time (the VNNI kernels need it).
        return unsafe { avx512::quantize_values(x, inv, zero, levels, q) };
    }
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: AVX2 was detected at run time.
        return unsafe { avx2::quantize_values(x, inv, zero, levels, q) };
    }
    quantize_values_scalar(x, inv, zero, levels, q)
}

fn quantize_values_scalar(x: &[f32], inv: f32, zero: i32, levels: i32, q: &mut [u8]) {
    for (o, &v) in q.iter_mut().zip(x) {
        *o = ((v * inv).round_ties_even() as i32 + zero).clamp(0, levels) as u8;
    }
}

/// The instruction sets the kernels can use, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// AVX-512 VNNI (`vpdpbusd`: four u8 × i8 products summed straight into int32, no i16
    /// step) for the tiles; AVX2 for quantizing and the epilogue.
    Avx512Vnni,
    Avx2,
    Portable,
}

/// Which kernels run, checked once: `OSCAR_INT8_SCALAR=1` forces the portable path and
/// `OSCAR_NO_AVX512=1` stops at AVX2 (for tests and comparisons). For one
/// [`activation_levels`], every path computes the same int32 sums, so the choice changes speed,
/// never results; 8-bit activations on AVX2 take two products per byte ([`avx2::tile_sums`]).
fn isa() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var_os("OSCAR_INT8_SCALAR").is_some() {
            return Isa::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if vnni_allowed() {
                return Isa::Avx512Vnni;
            }
            if is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    })
}

/// Whether products over `k4` inputs take the AMX tiles ([`amx`]): where the VNNI tiles would
/// run (so with the same activations), the CPU and the kernel allow AMX, and `k4` is a whole
/// number of AMX steps (64 inputs; BERT's 384, 768, 1536 and 3072 are, Oscar's 2054-d region
/// features are not and take VNNI).
fn amx_for(k4: usize) -> bool {
    // At least one step: the tile loop runs `k4 / 64` times and cannot run none.
    isa() == Isa::Avx512Vnni && k4 >= amx::STEP && k4.is_multiple_of(amx::STEP) && amx::available()
}

/// Whether the VNNI tile may run: the CPU has it and `OSCAR_NO_AVX512` is not set.
fn vnni_allowed() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::env::var_os("OSCAR_NO_AVX512").is_none() && avx512_vnni_detected()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The activations' range, `0‥levels`: 255 (8 bits) where the VNNI tile may run, 127 (7 bits)
/// elsewhere (module doc); `OSCAR_INT8_ACTIVATION_BITS=7` or `8` chooses, so a model's int8
/// outputs on one CPU can be reproduced on another (8 bits on AVX2 take two products per byte,
/// about half the speed of 7). Checked once; it does not depend on `OSCAR_INT8_SCALAR`, so the portable tile
/// reproduces the fast one's results on the same CPU.
pub fn activation_levels() -> i32 {
    use std::sync::OnceLock;
    static LEVELS: OnceLock<i32> = OnceLock::new();
    *LEVELS.get_or_init(|| {
        let auto = if vnni_allowed() { 255 } else { 127 };
        match std::env::var("OSCAR_INT8_ACTIVATION_BITS") {
            Err(_) => auto,
            Ok(v) => match v.trim() {
                "8" => 255,
                "7" => 127,
                _ => {
                    eprintln!(
                        "warning: OSCAR_INT8_ACTIVATION_BITS={v:?} is neither 7 nor 8; using {}",
                        if auto == 255 { 8 } else { 7 }
                    );
                    auto
                }
            },
        }
    })
}

#[cfg(target_arch = "x86_64")]
fn avx512_vnni_detected() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Whether the AVX2 kernels (quantizing, epilogue, and the tiles below AVX-512) run.
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    isa() != Isa::Portable
}

/// Panels one tile call covers: the VNNI tile keeps 4 panels × [`MR`] rows of sums in 16 of
/// AVX-512's 32 registers, enough independent chains to keep both multiply pipes busy.
const GROUP_MAX: usize = 4;

/// With group shifts each panel needs a second set of sums: 3 panels × [`MR`] rows × 2 sets
/// take 24 registers.
const GROUP_SHIFTED: usize = 3;

fn panel_group(shifted: bool) -> usize {
    match (isa(), shifted) {
        (Isa::Avx512Vnni, false) => GROUP_MAX,
        (Isa::Avx512Vnni, true) => GROUP_SHIFTED,
        _ => 1,
    }
}

/// Which kernel [`gemm`] uses on this machine.
pub fn kernel_name() -> String {
    let tile = match isa() {
        Isa::Avx512Vnni if amx_for(amx::STEP) => {
            "amx (tdpbusd; avx512-vnni where k is not a multiple of 64)"
        }
        Isa::Avx512Vnni => "avx512-vnni (vpdpbusd)",
        Isa::Avx2 if activation_levels() > 127 => "avx2 (vpmaddubsw, two per byte)",
        Isa::Avx2 => "avx2 (vpmaddubsw)",
        Isa::Portable => "portable",
    };
    let bits = if activation_levels() == 255 { 8 } else { 7 };
    let groups = if weight_groups() { ", group steps" } else { "" };
    format!("{tile}, {bits}-bit activations{groups}")
}

/// `y[m×n] = x[m×k]·Wᵀ (+ bias)`, `x` row-major f32. Large products use candle's worker pool:
/// rows are split among the threads when there are enough of them, output channels otherwise
/// (decoding steps have a handful of rows).
pub fn gemm(x: &[f32], m: usize, w: &PackedWeight, bias: Option<&[f32]>, y: &mut [f32]) {
    gemm_epilogue(x, m, w, Epilogue { bias, gelu: false }, y)
}

/// [`gemm`], then erf-GELU on each tile's outputs while they are in cache when `ep.gelu` (the
/// values of [`vmath::gelu_slice`] over the whole output).
///
/// [`vmath::gelu_slice`]: crate::nn::vmath::gelu_slice
pub fn gemm_epilogue(x: &[f32], m: usize, w: &PackedWeight, ep: Epilogue, y: &mut [f32]) {
    assert_eq!(y.len(), m * w.n, "int8 gemm: {m}×{} into {}", w.n, y.len());
    let job = Job {
        w,
        ep,
        y: Out(y.as_mut_ptr()),
    };
    // SAFETY: `y` holds the m·n values written.
    unsafe { gemm_into(x, m, &[job], None) }
}

/// [`gemm_epilogue`] into a fresh buffer: the kernel writes each of its `m·n` values once, so
/// it is not zeroed first (a pass over the whole output, 47 MB for 3,840 rows × 3,072).
pub fn gemm_epilogue_fresh(x: &[f32], m: usize, w: &PackedWeight, ep: Epilogue) -> Vec<f32> {
    gemm_fresh(x, m, w, ep, None)
}

fn gemm_fresh(
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    ep: Epilogue,
    ranges: Option<&[(f32, f32)]>,
) -> Vec<f32> {
    gemm_fresh_shared(x, m, &[(w, ep)], ranges)
        .pop()
        .expect("one product")
}

/// The products of the same rows `x` with several weights of the same input width (a layer's
/// query, key and value): each row is quantized once for all of them, and each product is what
/// [`gemm_epilogue_fresh`] gives alone (the same bits). `ranges`, when given, holds every row's
/// [`min_max`] (the outlier scan computes them), so that the rows are not read once more to
/// find them.
pub(super) fn gemm_fresh_shared(
    x: &[f32],
    m: usize,
    products: &[(&PackedWeight, Epilogue)],
    ranges: Option<&[(f32, f32)]>,
) -> Vec<Vec<f32>> {
    let mut ys: Vec<Vec<f32>> = products
        .iter()
        .map(|(w, _)| Vec::with_capacity(m * w.n))
        .collect();
    let jobs: Vec<Job> = products
        .iter()
        .zip(ys.iter_mut())
        .map(|(&(w, ep), y)| Job {
            w,
            ep,
            y: Out(y.as_mut_ptr()),
        })
        .collect();
    // SAFETY: each capacity holds m·n values of its product, and `gemm_into` writes every one
    // of them (every row of every tile, every channel of every panel up to `n`), so all are
    // initialized when the lengths are set.
    unsafe {
        gemm_into(x, m, &jobs, ranges);
        for (y, (w, _)) in ys.iter_mut().zip(products) {
            y.set_len(m * w.n);
        }
    }
    ys
}

/// One weight's product over rows the products share: its epilogue and where it writes its
/// `m × w.n` values.
#[derive(Clone, Copy)]
struct Job<'a> {
    w: &'a PackedWeight,
    ep: Epilogue<'a>,
    y: Out,
}

/// Every row of a product's input quantized ahead, for several products to read: `rq` one per
/// row, `qa` their `k4` bytes each and then a block of rows past the end that tiles may read
/// (their sums are never written).
struct Quantized {
    qa: Aligned<u8>,
    rq: Vec<RowQuant>,
}

impl Quantized {
    /// Quantizes the `m` rows of `x` (`k` values each) into `k4` bytes each, on the pool when
    /// they are many.
    fn rows(x: &[f32], m: usize, k: usize, k4: usize, ranges: Option<&[(f32, f32)]>) -> Self {
        let spare = amx::BLOCK_ROWS.max(MR);
        let mut qa = Aligned::<u8>::zeroed((m + spare) * k4);
        let mut rq = vec![
            RowQuant {
                scale: 0.0,
                zero: 0
            };
            m
        ];
        let levels = activation_levels();
        let quantize = |rows: std::ops::Range<usize>, qa: &mut [u8], rq: &mut [RowQuant]| {
            for (i, row) in rows.enumerate() {
                let xr = &x[row * k..(row + 1) * k];
                let range = ranges.map_or_else(|| min_max(xr), |rs| rs[row]);
                rq[i] = quantize_row_in(xr, range, &mut qa[i * k4..(i + 1) * k4], levels);
            }
        };
        if m * k < PARALLEL_MIN_MACS / 64 {
            quantize(0..m, &mut qa, &mut rq);
        } else {
            let (qa_out, rq_out) = (Bytes(qa.as_mut_ptr()), Quants(rq.as_mut_ptr()));
            candle_core::utils::barrier_pool().execute_chunked(m, |range| {
                // SAFETY: each thread gets its own rows of `qa` (k4 bytes each) and `rq`.
                let (qa, rq) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(
                            qa_out.at(range.start * k4),
                            range.len() * k4,
                        ),
                        std::slice::from_raw_parts_mut(rq_out.at(range.start), range.len()),
                    )
                };
                quantize(range, qa, rq);
            });
        }
        Quantized { qa, rq }
    }
}

/// [`Quantized::rows`]' buffers, written by the pool's threads, each its own rows.
#[derive(Clone, Copy)]
struct Bytes(*mut u8);
unsafe impl Send for Bytes {}
unsafe impl Sync for Bytes {}
#[derive(Clone, Copy)]
struct Quants(*mut RowQuant);
unsafe impl Send for Quants {}
unsafe impl Sync for Quants {}

impl Bytes {
    /// # Safety
    /// `i` must lie inside the buffer.
    unsafe fn at(self, i: usize) -> *mut u8 {
        unsafe { self.0.add(i) }
    }
}

impl Quants {
    /// # Safety
    /// `i` must lie inside the buffer.
    unsafe fn at(self, i: usize) -> *mut RowQuant {
        unsafe { self.0.add(i) }
    }
}

/// # Safety
/// Each job's `y` must be valid for writing `m · w.n` values that nothing else uses meanwhile;
/// each is written exactly once (never read before). `ranges`, when given, holds each row's
/// [`min_max`].
unsafe fn gemm_into(x: &[f32], m: usize, jobs: &[Job], ranges: Option<&[(f32, f32)]>) {
    let Some(first) = jobs.first() else { return };
    let (k, k4) = (first.w.k, first.w.k4);
    assert_eq!(x.len(), m * k, "int8 gemm: {} inputs for {m}×{k}", x.len());
    if let Some(r) = ranges {
        assert_eq!(r.len(), m, "int8 gemm: {} row ranges for {m} rows", r.len());
    }
    for job in jobs {
        assert_eq!(
            job.w.k, k,
            "int8 gemm: shared rows of {k} into a weight of {}",
            job.w.k
        );
        assert_eq!(
            job.w.k4, k4,
            "int8 gemm: weights of {k} inputs padded differently"
        );
        if let Some(b) = job.ep.bias {
            assert_eq!(
                b.len(),
                job.w.n,
                "int8 gemm: bias of {} for {} channels",
                b.len(),
                job.w.n
            );
        }
    }
    if m == 0 {
        return;
    }
    if k == 0 {
        // A sum over no inputs is 0: every output is `0 + bias` (as the epilogue adds it), with
        // GELU where asked; the tiles have no step to run.
        for job in jobs {
            let n = job.w.n;
            for i in 0..m {
                // SAFETY: row `i` lies inside `y` (m·n values), written by this thread only.
                let row = unsafe { std::slice::from_raw_parts_mut(job.y.0.add(i * n), n) };
                for (j, o) in row.iter_mut().enumerate() {
                    *o = job.ep.bias.map_or(0.0, |b| 0.0 + b[j]);
                }
                if job.ep.gelu {
                    crate::nn::vmath::gelu_in_place(row);
                }
            }
        }
        return;
    }
    // One product quantizes each block of rows as it goes; several quantize every row first,
    // once, and then each runs over the quantized rows with its weight in cache.
    let pre = (jobs.len() > 1).then(|| Quantized::rows(x, m, k, k4, ranges));
    for &job in jobs {
        // SAFETY: the caller's, job by job.
        unsafe { product(x, m, job, ranges, pre.as_ref()) };
    }
}

/// One product of [`gemm_into`], threaded: rows are split among the threads when there are
/// enough of them, output channels otherwise (decoding steps have a handful of rows).
///
/// # Safety
/// As [`gemm_into`]'s, for this job.
unsafe fn product(
    x: &[f32],
    m: usize,
    job: Job,
    ranges: Option<&[(f32, f32)]>,
    pre: Option<&Quantized>,
) {
    let (w, k) = (job.w, job.w.k);
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    let all = 0..w.n.div_ceil(NR);
    if m * w.n * k < PARALLEL_MIN_MACS || threads == 1 {
        rows_block(x, ranges, pre, 0..m, job, all);
    } else if m >= MR * 4 * threads {
        // Whole row blocks of MC rows per thread when there are enough of them.
        let per = MC.min(m.div_ceil(threads).div_ceil(MR) * MR);
        let blocks = m.div_ceil(per);
        pool.execute_chunked(blocks, |range| {
            for blk in range {
                let rows = blk * per..((blk + 1) * per).min(m);
                rows_block(x, ranges, pre, rows, job, all.clone());
            }
        });
    } else {
        pool.execute_chunked(all.len(), |range| {
            rows_block(x, ranges, pre, 0..m, job, range);
        });
    }
}

/// Rows `rows` × panels `panels` of the product, `MC` rows at a time: those rows are quantized
/// into a buffer that stays in cache while every panel passes over it (or read from `pre`,
/// where they were quantized ahead).
fn rows_block(
    x: &[f32],
    ranges: Option<&[(f32, f32)]>,
    pre: Option<&Quantized>,
    rows: std::ops::Range<usize>,
    Job { w, ep, y }: Job,
    panels: std::ops::Range<usize>,
) {
    let (k, k4) = (w.k, w.k4);
    let amx = w.on_amx();
    // Rows per tile: the activation bytes past the last row, up to a whole tile, stay 0.
    let tile_rows = if amx { amx::BLOCK_ROWS } else { MR };
    let mut own_qa = match pre {
        Some(_) => Aligned::zeroed(0),
        None => Aligned::zeroed(MC.min(rows.len()).div_ceil(tile_rows) * tile_rows * k4),
    };
    let mut own_rq = Vec::with_capacity(if pre.is_some() { 0 } else { MC });
    let mut tile = [0i32; GROUP_MAX * MR * NR];
    let levels = activation_levels();
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + MC).min(rows.end);
        let rows_here = end - start;
        let (qa, rq): (&[u8], &[RowQuant]) = match pre {
            // Rows past `end` up to a whole tile are the next rows' or the spare ones: their
            // sums are never written.
            Some(p) => (&p.qa[start * k4..], &p.rq[start..end]),
            None => {
                own_rq.clear();
                for r in 0..rows_here {
                    let row = start + r;
                    let xr = &x[row * k..(row + 1) * k];
                    let range = ranges.map_or_else(|| min_max(xr), |rs| rs[row]);
                    own_rq.push(quantize_row_in(
                        xr,
                        range,
                        &mut own_qa[r * k4..(r + 1) * k4],
                        levels,
                    ));
                }
                // Rows past the end of a partial tile multiply zeros; their sums are never
                // written.
                own_qa[rows_here * k4..rows_here.div_ceil(tile_rows) * tile_rows * k4].fill(0);
                (&own_qa, &own_rq)
            }
        };
        if amx {
            amx_tiles(qa, start, rq, w, panels.clone(), ep, y);
            start = end;
            continue;
        }
        let group = panel_group(w.shift_base > 0);
        let mut p = panels.start;
        while p < panels.end {
            let count = group.min(panels.end - p);
            let group_panels = w.panels(p..p + count);
            let group_shifts = w.panel_shifts(p..p + count);
            for t in (0..rows_here).step_by(MR) {
                tile_sums(
                    &qa[t * k4..(t + MR) * k4],
                    k4,
                    group_panels,
                    group_shifts,
                    &mut tile[..count * MR * NR],
                );
                let live = MR.min(rows_here - t);
                let sums = TileSums {
                    sums: &tile[..count * MR * NR],
                    high: None,
                    rows: MR,
                    first_panel: p,
                };
                // SAFETY: this thread's rows start+t.. × these panels' channels, inside `y`.
                unsafe { write_tile(sums, &rq[t..t + live], start + t, w, ep, y) };
            }
            p += count;
        }
        start = end;
    }
}

/// [`rows_block`]'s sums on the AMX tiles: 32 rows × 2 panels a call (or, for split weights,
/// 32 rows × 1 panel against its two planes). `qa` holds `rq.len()` quantized rows from row
/// `start`, zero up to a multiple of 32 rows.
fn amx_tiles(
    qa: &[u8],
    start: usize,
    rq: &[RowQuant],
    w: &PackedWeight,
    panels: std::ops::Range<usize>,
    ep: Epilogue,
    y: Out,
) {
    let k4 = w.k4;
    let block = amx::BLOCK_ROWS;
    let rows_here = rq.len();
    assert!(
        k4.is_multiple_of(amx::STEP) && qa.len() >= rows_here.div_ceil(block) * block * k4,
        "int8 AMX tiles: k4 = {k4}, {} activation bytes for {rows_here} rows",
        qa.len()
    );
    let steps = k4 / amx::STEP;
    let split = matches!(w.panels, Panels::Split { .. });
    let mut tile = [0i32; 2 * amx::BLOCK_ROWS * NR];
    let panel = |q: &[i8], p: usize| q[p * k4 * NR..(p + 1) * k4 * NR].as_ptr();
    // SAFETY: `amx_for` said the tiles may run (its caller's check).
    #[cfg(target_arch = "x86_64")]
    let _tiles = unsafe { amx::Tiles::configure() };
    let mut p = panels.start;
    while p < panels.end {
        let (b0, b1, count) = match &w.panels {
            Panels::Plain(q) if p + 1 < panels.end => (panel(q, p), panel(q, p + 1), 2),
            Panels::Plain(q) => (panel(q, p), panel(q, p), 1),
            Panels::Split { low, high } => (panel(low, p), panel(high, p), 1),
        };
        for t in (0..rows_here).step_by(block) {
            // SAFETY: `amx_for` said the tiles may run; the 32 rows from `t` lie inside `qa`
            // (asserted), each panel holds `steps · 1024` bytes, and `tile` 1,024 sums.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                amx::sums_2x2(qa[t * k4..].as_ptr(), k4, b0, b1, steps, tile.as_mut_ptr())
            };
            let live = block.min(rows_here - t);
            let (sums, high) = tile.split_at(count * block * NR);
            let sums = TileSums {
                sums,
                high: split.then(|| &high[..block * NR]),
                rows: block,
                first_panel: p,
            };
            // SAFETY: this thread's rows start+t.. × these panels' channels, inside `y`.
            unsafe { write_tile(sums, &rq[t..t + live], start + t, w, ep, y) };
        }
        p += count;
    }
}

/// The int32 sums of a tile, `[panel][row][channel]` with `rows` rows per panel, the first of
/// them panel `first_panel` of the weights. For [`Panels::Split`] weights, `high` holds the
/// sums against the second plane (one panel), which count 8 times: the tile's sums are
/// `sums + 8 · high`, wrapping as the int32 lanes do.
#[derive(Clone, Copy)]
struct TileSums<'a> {
    sums: &'a [i32],
    high: Option<&'a [i32]>,
    rows: usize,
    first_panel: usize,
}

/// Scales a tile's sums back ([`epilogue`]; GELU too where `ep.gelu`) into rows `row0..` (one
/// per `rq`) of `y`, whose rows hold `w.n` values.
///
/// # Safety
/// Those rows × the tile's channels must lie inside `y`, and no other thread may write them.
unsafe fn write_tile(
    tile: TileSums,
    rq: &[RowQuant],
    row0: usize,
    w: &PackedWeight,
    ep: Epilogue,
    y: Out,
) {
    let n = w.n;
    let per = tile.rows * NR;
    let count = tile.sums.len() / per;
    let p = tile.first_panel;
    let channels = p * NR..((p + count) * NR).min(n);
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512Vnni && (p + count) * NR <= n {
        debug_assert!(tile.high.is_none_or(|h| h.len() == tile.sums.len()));
        // `gelu_in_place`'s own AVX-512 GELU on the values before they are stored: the same bits
        // without a second pass over the tile.
        let gelu_in_registers = ep.gelu && crate::nn::vmath::avx512();
        // SAFETY: AVX-512F was detected (the VNNI kernels need it); the rows × `channels` lie
        // inside `y` (the caller's).
        unsafe {
            avx512::epilogue(
                (tile.sums, tile.high),
                tile.rows,
                rq,
                &w.colsums[channels.clone()],
                &w.step_scales[channels.clone()],
                ep.bias.map(|b| &b[channels.clone()]),
                y.0.add(row0 * n + channels.start),
                n,
                gelu_in_registers,
            )
        };
        if !gelu_in_registers {
            unsafe { gelu_rows(rq.len(), row0, channels, n, ep, y) };
        }
        return;
    }
    let mut combined = [0i32; amx::BLOCK_ROWS * NR];
    let sums = match tile.high {
        Some(high) => {
            for ((c, &l), &h) in combined.iter_mut().zip(tile.sums).zip(high) {
                *c = l.wrapping_add(h.wrapping_shl(3));
            }
            &combined[..tile.sums.len()]
        }
        None => tile.sums,
    };
    for (pp, sums) in sums.chunks_exact(per).enumerate() {
        let cols = (p + pp) * NR..((p + pp + 1) * NR).min(n);
        for (r, &q) in rq.iter().enumerate() {
            // SAFETY: (row, cols) lies inside `y`, written by this thread only (the caller's).
            let out = unsafe {
                std::slice::from_raw_parts_mut(y.0.add((row0 + r) * n + cols.start), cols.len())
            };
            epilogue(
                &sums[r * NR..r * NR + cols.len()],
                q,
                w,
                cols.clone(),
                ep.bias,
                out,
            );
        }
    }
    // SAFETY: the caller's rows × `channels`.
    unsafe { gelu_rows(rq.len(), row0, channels, n, ep, y) };
}

/// erf-GELU in place on rows `row0..row0 + rows` × `channels` of `y` where `ep.gelu`.
///
/// # Safety
/// As [`write_tile`]'s: those rows × `channels` lie inside `y`, written by this thread only.
unsafe fn gelu_rows(
    rows: usize,
    row0: usize,
    channels: std::ops::Range<usize>,
    n: usize,
    ep: Epilogue,
    y: Out,
) {
    if !ep.gelu {
        return;
    }
    for r in 0..rows {
        // SAFETY: the caller's rows × `channels`, inside `y` and written by this thread only.
        let out = unsafe {
            std::slice::from_raw_parts_mut(y.0.add((row0 + r) * n + channels.start), channels.len())
        };
        crate::nn::vmath::gelu_in_place(out);
    }
}

/// Scales one row's int32 sums back: `(Σ q_a·q_w − zero·Σ q_w) · scale_a · step_w + bias`
/// (`step_w` the channel's step at the finest group exponent, the sums counted in it). The
/// result `Σ (q_a − zero)·q_w` lies within int32 (|each| ≤ 255·127·k4·2^E, [`max_exponent`]),
/// so the wrapping arithmetic of the SIMD versions gives it exactly even where a term overflows.
/// A whole panel's 16 channels take the AVX2 version: the same operations in the same order, so
/// the same bits.
fn epilogue(
    sums: &[i32],
    rq: RowQuant,
    w: &PackedWeight,
    cols: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if cols.len() == NR && avx2() {
        let b = bias.map(|b| &b[cols.clone()]);
        // SAFETY: AVX2 was detected at run time; every slice holds `NR` values.
        return unsafe {
            avx2::epilogue(
                sums,
                rq,
                &w.colsums[cols.clone()],
                &w.step_scales[cols],
                b,
                out,
            )
        };
    }
    for ((o, &s), j) in out.iter_mut().zip(sums).zip(cols) {
        let v = s.wrapping_sub(rq.zero.wrapping_mul(w.colsums[j])) as f32
            * (rq.scale * w.step_scales[j]);
        *o = match bias {
            Some(b) => v + b[j],
            None => v,
        };
    }
}

/// The int32 sums of `MR` quantized rows (`qa`, stride `k4`) against consecutive panels
/// (`panels`, `k4 · NR` bytes each), into `tile` laid out `[panel][row][channel]`. With `shifts`
/// (those panels' [`PackedWeight`] group shifts) each group's sum is shifted left by its shift
/// before it is added.
fn tile_sums(qa: &[u8], k4: usize, panels: &[i8], shifts: Option<&[u8]>, tile: &mut [i32]) {
    let count = panels.len() / (k4 * NR);
    let per_shifts = k4.div_ceil(WEIGHT_GROUP) * NR;
    assert!(
        qa.len() == MR * k4
            && panels.len() == count * k4 * NR
            && tile.len() == count * MR * NR
            && shifts.is_none_or(|s| s.len() == count * per_shifts),
        "int8 tile: {} activation bytes, {} panel bytes, {} sums for k4 = {k4}",
        qa.len(),
        panels.len(),
        tile.len()
    );
    #[cfg(target_arch = "x86_64")]
    match (isa(), count, shifts) {
        // SAFETY (each arm): the instruction set was detected at run time, and the lengths
        // were asserted above.
        (Isa::Avx512Vnni, 4, None) => {
            return unsafe { avx512::tile_sums::<4>(qa, k4, panels, tile) }
        }
        (Isa::Avx512Vnni, 3, None) => {
            return unsafe { avx512::tile_sums::<3>(qa, k4, panels, tile) }
        }
        (Isa::Avx512Vnni, 2, None) => {
            return unsafe { avx512::tile_sums::<2>(qa, k4, panels, tile) }
        }
        (Isa::Avx512Vnni, 1, None) => {
            return unsafe { avx512::tile_sums::<1>(qa, k4, panels, tile) }
        }
        (Isa::Avx512Vnni, _, Some(sh)) => {
            // Up to GROUP_SHIFTED panels a call.
            let g = GROUP_SHIFTED;
            for ((ps, ss), t) in panels
                .chunks(g * k4 * NR)
                .zip(sh.chunks(g * per_shifts))
                .zip(tile.chunks_mut(g * MR * NR))
            {
                unsafe {
                    match t.len() / (MR * NR) {
                        3 => avx512::tile_sums_shifted::<3>(qa, k4, ps, ss, t),
                        2 => avx512::tile_sums_shifted::<2>(qa, k4, ps, ss, t),
                        _ => avx512::tile_sums_shifted::<1>(qa, k4, ps, ss, t),
                    }
                }
            }
            return;
        }
        (Isa::Avx2, _, _) => {
            for (i, (panel, sums)) in panels
                .chunks_exact(k4 * NR)
                .zip(tile.chunks_exact_mut(MR * NR))
                .enumerate()
            {
                let levels = activation_levels();
                match shifts {
                    None => unsafe { avx2::tile_sums(qa, k4, panel, levels, sums) },
                    Some(sh) => unsafe {
                        avx2::tile_sums_shifted(
                            qa,
                            k4,
                            panel,
                            &sh[i * per_shifts..(i + 1) * per_shifts],
                            levels,
                            sums,
                        )
                    },
                }
            }
            return;
        }
        _ => {}
    }
    for (i, (panel, sums)) in panels
        .chunks_exact(k4 * NR)
        .zip(tile.chunks_exact_mut(MR * NR))
        .enumerate()
    {
        let sh = shifts.map(|s| &s[i * per_shifts..(i + 1) * per_shifts]);
        tile_sums_portable(qa, k4, panel, sh, sums)
    }
}

/// One panel's sums, one product at a time (wrapping, as the SIMD tiles add).
fn tile_sums_portable(qa: &[u8], k4: usize, panel: &[i8], shifts: Option<&[u8]>, tile: &mut [i32]) {
    for r in 0..MR {
        for c in 0..NR {
            let mut s = 0i32;
            for kk in 0..k4 {
                let sh = shifts.map_or(0, |sh| sh[(kk / WEIGHT_GROUP) * NR + c]);
                let p = qa[r * k4 + kk] as i32 * panel[(kk / 4) * NR * 4 + c * 4 + kk % 4] as i32;
                s = s.wrapping_add(p << sh);
            }
            tile[r * NR + c] = s;
        }
    }
}

/// The same product from the unpacked integers, one output at a time: what the packed kernels
/// are tested against.
pub fn reference(x: &[f32], m: usize, w: &PackedWeight, bias: Option<&[f32]>) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    let q = w.quantized();
    let mut y = vec![0f32; m * n];
    let mut qa = vec![0u8; w.k4];
    for i in 0..m {
        let rq = quantize_row_scalar(&x[i * k..(i + 1) * k], &mut qa, activation_levels());
        // Exact in i64; the total lies within int32 (see `epilogue`).
        let sums: Vec<i32> = (0..n)
            .map(|j| {
                (0..k)
                    .map(|kk| (qa[kk] as i64 * q[j * k + kk] as i64) << w.shift(j, kk))
                    .sum::<i64>() as i32
            })
            .collect();
        epilogue(&sums, rq, w, 0..n, bias, &mut y[i * n..(i + 1) * n]);
    }
    y
}

/// [`quantize_row`] without SIMD.
fn quantize_row_scalar(x: &[f32], q: &mut [u8], levels: i32) -> RowQuant {
    let (mut lo, mut hi) = (0f32, 0f32);
    for &v in x {
        if v.is_nan() {
            lo = f32::NAN;
            hi = f32::NAN;
            break;
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    q.fill(0);
    if !(lo.is_finite() && hi.is_finite()) {
        return RowQuant {
            scale: f32::NAN,
            zero: 0,
        };
    }
    let scale = (hi - lo) / levels as f32;
    if scale == 0.0 {
        return RowQuant {
            scale: 0.0,
            zero: 0,
        };
    }
    let inv = 1.0 / scale;
    let zero = ((-lo * inv).round_ties_even() as i32).clamp(0, levels);
    quantize_values_scalar(x, inv, zero, levels, &mut q[..x.len()]);
    RowQuant { scale, zero }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR, WEIGHT_GROUP};
    use std::arch::x86_64::*;

    /// Sums of 4 rows × 16 channels: per group of 4 inputs, each row's 4 bytes are broadcast,
    /// multiplied with the panel's two registers (`vpmaddubsw`), the i16 pairs widened and summed
    /// (`vpmaddwd` by ones) and added to 8 int32 accumulators. Activations of 8 bits (`levels`
    /// 255) would saturate the i16 pairs (255 · 127 · 2 > 32,767), so each byte is taken as
    /// `2 · (a >> 1) + (a & 1)`: two `vpmaddubsw` whose pairs fit, the first summed by twos —
    /// the same exact sums at about twice the multiply work.
    #[target_feature(enable = "avx2")]
    pub unsafe fn tile_sums(qa: &[u8], k4: usize, panel: &[i8], levels: i32, tile: &mut [i32]) {
        if levels > 127 {
            sums::<false, true>(qa, k4, panel, &[], tile)
        } else {
            sums::<false, false>(qa, k4, panel, &[], tile)
        }
    }

    /// [`tile_sums`] with each group's products shifted left by its channel's shift
    /// (`shifts`: per group of [`WEIGHT_GROUP`] inputs, `NR` bytes) before they are added.
    #[target_feature(enable = "avx2")]
    pub unsafe fn tile_sums_shifted(
        qa: &[u8],
        k4: usize,
        panel: &[i8],
        shifts: &[u8],
        levels: i32,
        tile: &mut [i32],
    ) {
        if levels > 127 {
            sums::<true, true>(qa, k4, panel, shifts, tile)
        } else {
            sums::<true, false>(qa, k4, panel, shifts, tile)
        }
    }

    /// Every tile; without `SHIFTED` the shifts are neither read nor applied, with `EIGHT` the
    /// activations take 8 bits (two products per byte, [`tile_sums`]).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn sums<const SHIFTED: bool, const EIGHT: bool>(
        qa: &[u8],
        k4: usize,
        panel: &[i8],
        shifts: &[u8],
        tile: &mut [i32],
    ) {
        let ones = _mm256_set1_epi16(1);
        let twos = _mm256_set1_epi16(2);
        let (low7, bit0) = (_mm256_set1_epi8(0x7f), _mm256_set1_epi8(1));
        // The 4-byte groups' products with `b`, pairs summed into int32 lanes.
        let product = |av: __m256i, b: __m256i| -> __m256i {
            if EIGHT {
                let hi = _mm256_and_si256(_mm256_srli_epi16::<1>(av), low7);
                let lo = _mm256_and_si256(av, bit0);
                _mm256_add_epi32(
                    _mm256_madd_epi16(_mm256_maddubs_epi16(hi, b), twos),
                    _mm256_madd_epi16(_mm256_maddubs_epi16(lo, b), ones),
                )
            } else {
                _mm256_madd_epi16(_mm256_maddubs_epi16(av, b), ones)
            }
        };
        let (a, b) = (qa.as_ptr(), panel.as_ptr());
        let mut c = [_mm256_setzero_si256(); 2 * MR];
        let steps = WEIGHT_GROUP / 4;
        for gi in 0..(k4 / 4).div_ceil(steps) {
            let (mut sh0, mut sh1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            if SHIFTED {
                let sp = shifts.as_ptr().add(gi * NR);
                sh0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sp as *const __m128i));
                sh1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sp.add(8) as *const __m128i));
            }
            for g in gi * steps..((gi + 1) * steps).min(k4 / 4) {
                let b0 = _mm256_loadu_si256(b.add(g * 64) as *const __m256i);
                let b1 = _mm256_loadu_si256(b.add(g * 64 + 32) as *const __m256i);
                for r in 0..MR {
                    let av = _mm256_set1_epi32(std::ptr::read_unaligned(
                        a.add(r * k4 + g * 4) as *const i32
                    ));
                    let mut p0 = product(av, b0);
                    let mut p1 = product(av, b1);
                    if SHIFTED {
                        p0 = _mm256_sllv_epi32(p0, sh0);
                        p1 = _mm256_sllv_epi32(p1, sh1);
                    }
                    c[2 * r] = _mm256_add_epi32(c[2 * r], p0);
                    c[2 * r + 1] = _mm256_add_epi32(c[2 * r + 1], p1);
                }
            }
        }
        let out = tile.as_mut_ptr();
        for (i, v) in c.iter().enumerate() {
            _mm256_storeu_si256(out.add(i * 8) as *mut __m256i, *v);
        }
    }

    /// [`super::epilogue`] for one row of a whole panel (`NR` channels): the int32 difference,
    /// its conversion (rounding to nearest, as `as f32`), the scale product, then the bias.
    #[target_feature(enable = "avx2")]
    pub unsafe fn epilogue(
        sums: &[i32],
        rq: super::RowQuant,
        colsums: &[i32],
        scales: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) {
        debug_assert!(sums.len() >= NR && colsums.len() == NR && scales.len() == NR);
        debug_assert!(out.len() == NR && bias.is_none_or(|b| b.len() == NR));
        let zero = _mm256_set1_epi32(rq.zero);
        let scale = _mm256_set1_ps(rq.scale);
        for h in (0..NR).step_by(8) {
            let s = _mm256_loadu_si256(sums.as_ptr().add(h) as *const __m256i);
            let c = _mm256_loadu_si256(colsums.as_ptr().add(h) as *const __m256i);
            let d = _mm256_sub_epi32(s, _mm256_mullo_epi32(zero, c));
            let sc = _mm256_mul_ps(scale, _mm256_loadu_ps(scales.as_ptr().add(h)));
            let mut v = _mm256_mul_ps(_mm256_cvtepi32_ps(d), sc);
            if let Some(b) = bias {
                v = _mm256_add_ps(v, _mm256_loadu_ps(b.as_ptr().add(h)));
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(h), v);
        }
    }

    /// `(min(0, min x), max(0, max x))`; NaN anywhere gives NaN.
    #[target_feature(enable = "avx2")]
    pub unsafe fn min_max(x: &[f32]) -> (f32, f32) {
        let mut lo = _mm256_setzero_ps();
        let mut hi = _mm256_setzero_ps();
        let mut nan = _mm256_setzero_ps();
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            let v = _mm256_loadu_ps(c.as_ptr());
            lo = _mm256_min_ps(lo, v);
            hi = _mm256_max_ps(hi, v);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        }
        let (mut l, mut h, mut n) = ([0f32; 8], [0f32; 8], [0f32; 8]);
        _mm256_storeu_ps(l.as_mut_ptr(), lo);
        _mm256_storeu_ps(h.as_mut_ptr(), hi);
        _mm256_storeu_ps(n.as_mut_ptr(), nan);
        if n.iter().any(|v| v.to_bits() != 0) || rest.iter().any(|v| v.is_nan()) {
            return (f32::NAN, f32::NAN);
        }
        let lo = l.iter().chain(rest).fold(0f32, |m, &v| m.min(v));
        let hi = h.iter().chain(rest).fold(0f32, |m, &v| m.max(v));
        (lo, hi)
    }

    /// [`super::quantize_values_scalar`], 8 values at a time.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_values(x: &[f32], inv: f32, zero: i32, levels: i32, q: &mut [u8]) {
        let vinv = _mm256_set1_ps(inv);
        let vzero = _mm256_set1_epi32(zero);
        let (lo, hi) = (_mm256_setzero_si256(), _mm256_set1_epi32(levels));
        let n8 = x.len() / 8 * 8;
        let mut lanes = [0i32; 8];
        for i in (0..n8).step_by(8) {
            let v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), vinv));
            let v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, vzero), lo), hi);
            _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, v);
            for (o, l) in q[i..i + 8].iter_mut().zip(lanes) {
                *o = l as u8;
            }
        }
        super::quantize_values_scalar(&x[n8..], inv, zero, levels, &mut q[n8..]);
    }
}

/// The AVX-512 VNNI tile.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR, WEIGHT_GROUP};
    use std::arch::x86_64::*;

    /// Sums of 4 rows × `P` panels of 16 channels: per group of 4 inputs, each row's 4 bytes
    /// are broadcast and `vpdpbusd` adds their 4 products with each panel's 16 channels (one
    /// 512-bit load per panel) into an int32 accumulator, exactly: no i16 step can saturate.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::needless_range_loop)] // `r` picks the row's bytes and its accumulators
    pub unsafe fn tile_sums<const P: usize>(qa: &[u8], k4: usize, panels: &[i8], tile: &mut [i32]) {
        debug_assert!(panels.len() == P * k4 * NR && tile.len() == P * MR * NR);
        let mut c = [[_mm512_setzero_si512(); MR]; P];
        accumulate::<P>(qa, k4, panels, 0..k4 / 4, &mut c);
        store::<P>(&c, tile);
    }

    /// Adds the products of groups `steps` (of 4 inputs) of the `MR` rows and `P` panels into
    /// `c`: per group, each panel's 16 channels × 4 inputs in one load, each row's 4 bytes
    /// broadcast, one `vpdpbusd` per row and panel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // `r` picks the row's bytes and its accumulators
    unsafe fn accumulate<const P: usize>(
        qa: &[u8],
        k4: usize,
        panels: &[i8],
        steps: std::ops::Range<usize>,
        c: &mut [[__m512i; MR]; P],
    ) {
        let (a, b) = (qa.as_ptr(), panels.as_ptr());
        let stride = k4 * NR;
        for g in steps {
            let mut bv = [_mm512_setzero_si512(); P];
            for (pp, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(b.add(pp * stride + g * 64) as *const __m512i);
            }
            for r in 0..MR {
                let av = _mm512_set1_epi32(std::ptr::read_unaligned(
                    a.add(r * k4 + g * 4) as *const i32
                ));
                for pp in 0..P {
                    c[pp][r] = _mm512_dpbusd_epi32(c[pp][r], av, bv[pp]);
                }
            }
        }
    }

    /// Writes the sums `c` into `tile`, laid out `[panel][row][channel]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store<const P: usize>(c: &[[__m512i; MR]; P], tile: &mut [i32]) {
        let out = tile.as_mut_ptr();
        for (pp, rows) in c.iter().enumerate() {
            for (r, v) in rows.iter().enumerate() {
                _mm512_storeu_si512(out.add((pp * MR + r) * NR) as *mut __m512i, *v);
            }
        }
    }

    /// [`tile_sums`] with shifts: per group of [`WEIGHT_GROUP`] inputs the products go into a
    /// second set of sums, which is shifted left by each channel's shift of that group
    /// (`vpsllvd`; `shifts` holds `NR` bytes per group, panel after panel) and added.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::needless_range_loop)] // `r` picks the row's bytes and its accumulators
    pub unsafe fn tile_sums_shifted<const P: usize>(
        qa: &[u8],
        k4: usize,
        panels: &[i8],
        shifts: &[u8],
        tile: &mut [i32],
    ) {
        let steps = WEIGHT_GROUP / 4;
        let groups = (k4 / 4).div_ceil(steps);
        debug_assert!(panels.len() == P * k4 * NR && tile.len() == P * MR * NR);
        debug_assert!(shifts.len() == P * groups * NR);
        let mut c = [[_mm512_setzero_si512(); MR]; P];
        for gi in 0..groups {
            let mut t = [[_mm512_setzero_si512(); MR]; P];
            accumulate::<P>(
                qa,
                k4,
                panels,
                gi * steps..((gi + 1) * steps).min(k4 / 4),
                &mut t,
            );
            for pp in 0..P {
                let sp = shifts.as_ptr().add((pp * groups + gi) * NR);
                let sh = _mm512_cvtepu8_epi32(_mm_loadu_si128(sp as *const __m128i));
                for r in 0..MR {
                    c[pp][r] = _mm512_add_epi32(c[pp][r], _mm512_sllv_epi32(t[pp][r], sh));
                }
            }
        }
        store::<P>(&c, tile);
    }

    /// [`super::min_max`], 64 values a step in four independent chains (one chain of dependent
    /// `vminps` waits on each one's latency), the last values by a masked load whose lanes
    /// past the end read 0, which the range holds anyway.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn min_max(x: &[f32]) -> (f32, f32) {
        let mut lo = [_mm512_setzero_ps(); 4];
        let mut hi = [_mm512_setzero_ps(); 4];
        let mut nan: __mmask16 = 0;
        let p = x.as_ptr();
        let n64 = x.len() / 64 * 64;
        for i in (0..n64).step_by(64) {
            for j in 0..4 {
                let v = _mm512_loadu_ps(p.add(i + 16 * j));
                lo[j] = _mm512_min_ps(lo[j], v);
                hi[j] = _mm512_max_ps(hi[j], v);
                nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            }
        }
        for i in (n64..x.len()).step_by(16) {
            let mask = if x.len() - i >= 16 {
                0xffff
            } else {
                (1u16 << (x.len() - i)) - 1
            };
            let v = _mm512_maskz_loadu_ps(mask, p.add(i));
            lo[0] = _mm512_min_ps(lo[0], v);
            hi[0] = _mm512_max_ps(hi[0], v);
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        }
        if nan != 0 {
            return (f32::NAN, f32::NAN);
        }
        let lo = _mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3]));
        let hi = _mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3]));
        (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi))
    }

    /// [`super::quantize_values_scalar`], 16 values at a time (the last ones masked), narrowed
    /// to bytes by `vpmovdb` once clamped to 0‥levels.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn quantize_values(x: &[f32], inv: f32, zero: i32, levels: i32, q: &mut [u8]) {
        debug_assert!(q.len() >= x.len());
        let vinv = _mm512_set1_ps(inv);
        let vzero = _mm512_set1_epi32(zero);
        let (lo, hi) = (_mm512_setzero_si512(), _mm512_set1_epi32(levels));
        for i in (0..x.len()).step_by(16) {
            let mask = if x.len() - i >= 16 {
                0xffff
            } else {
                (1u16 << (x.len() - i)) - 1
            };
            let v = _mm512_cvtps_epi32(_mm512_mul_ps(
                _mm512_maskz_loadu_ps(mask, x.as_ptr().add(i)),
                vinv,
            ));
            let v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, vzero), lo), hi);
            _mm512_mask_cvtepi32_storeu_epi8(q.as_mut_ptr().add(i) as *mut i8, mask, v);
        }
    }

    /// [`super::epilogue`] for a whole tile: `rq.len()` rows × the channels of `sums.len() /
    /// (rows·NR)` panels (`sums` laid out `[panel][row][channel]`, `rows` rows per panel;
    /// `colsums`, `scales`, `bias` cover exactly those channels), written at `y` with row
    /// stride `n`. The operations of the AVX2 epilogue in the same order, 16 lanes at a time,
    /// so the same bits; with `gelu`, then [`crate::nn::vmath`]'s AVX-512 GELU. `high`, when
    /// given, holds as many sums against split weights' second plane, added 8 times first
    /// ([`super::TileSums`]).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)] // the epilogue's inputs, as the scalar one takes them
    pub unsafe fn epilogue(
        (sums, high): (&[i32], Option<&[i32]>),
        rows: usize,
        rq: &[super::RowQuant],
        colsums: &[i32],
        scales: &[f32],
        bias: Option<&[f32]>,
        y: *mut f32,
        n: usize,
        gelu: bool,
    ) {
        let panels = sums.len() / (rows * NR);
        debug_assert!(colsums.len() == panels * NR && scales.len() == panels * NR);
        debug_assert!(rq.len() <= rows && bias.is_none_or(|b| b.len() == panels * NR));
        for pp in 0..panels {
            let c = _mm512_loadu_si512(colsums.as_ptr().add(pp * NR) as *const __m512i);
            let ws = _mm512_loadu_ps(scales.as_ptr().add(pp * NR));
            for (r, q) in rq.iter().enumerate() {
                let at = (pp * rows + r) * NR;
                let mut s = _mm512_loadu_si512(sums.as_ptr().add(at) as *const __m512i);
                if let Some(h) = high {
                    let h = _mm512_loadu_si512(h.as_ptr().add(at) as *const __m512i);
                    s = _mm512_add_epi32(s, _mm512_slli_epi32::<3>(h));
                }
                let d = _mm512_sub_epi32(s, _mm512_mullo_epi32(_mm512_set1_epi32(q.zero), c));
                let sc = _mm512_mul_ps(_mm512_set1_ps(q.scale), ws);
                let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(d), sc);
                if let Some(b) = bias {
                    v = _mm512_add_ps(v, _mm512_loadu_ps(b.as_ptr().add(pp * NR)));
                }
                if gelu {
                    v = crate::nn::vmath::avx512::gelu16(v);
                }
                _mm512_storeu_ps(y.add(r * n + pp * NR), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A row quantized to 0‥levels (7 and 8 bits) dequantizes to within one step, (max − min) /
    /// levels with the range stretched to hold 0, of every value (half a step but at a clamped
    /// end), and the SIMD quantizer gives the scalar one's bytes.
    #[test]
    fn rows_dequantize_within_one_step_for_both_ranges() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for levels in [127, 255] {
            for k in [1usize, 7, 8, 15, 16, 17, 33, 63, 768, 3073] {
                let x: Vec<f32> = (0..k).map(|_| rng.random_range(-3.0..5.0f32)).collect();
                let mut q = vec![0u8; k.div_ceil(4) * 4];
                let rq = quantize_row(&x, &mut q, levels);
                let mut q2 = vec![0u8; q.len()];
                let rq2 = quantize_row_scalar(&x, &mut q2, levels);
                assert_eq!(q, q2, "{levels} levels, k = {k}");
                assert_eq!(
                    (rq.scale.to_bits(), rq.zero),
                    (rq2.scale.to_bits(), rq2.zero)
                );
                let lo = x.iter().fold(0f32, |m, &v| m.min(v));
                let hi = x.iter().fold(0f32, |m, &v| m.max(v));
                let step = (hi - lo) / levels as f32;
                assert_eq!(rq.scale, step);
                let mut total = 0f32;
                for (v, &b) in x.iter().zip(&q) {
                    assert!(b as i32 <= levels);
                    let err = ((b as i32 - rq.zero) as f32 * rq.scale - v).abs();
                    assert!(err <= step * 1.001, "{v} off by {err}, step {step}");
                    total += err;
                }
                assert!(total / k as f32 <= 0.5 * step, "{levels} levels, k = {k}");
            }
        }
    }

    /// Every tile this CPU can run — the dispatched one, AVX2's and AVX-512 VNNI's — gives the
    /// portable tile's sums, for 1 to 4 panels at once, with 7-bit activations and the full 8
    /// bits, without and with group shifts, on `k4` that leave a partial group (a
    /// kernel the CPU lacks is reported skipped).
    #[test]
    fn every_tile_agrees_with_the_portable_tile() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for (k4, levels) in [
            (4, 127),
            (8, 255),
            (20, 127),
            (20, 255),
            (100, 255),
            (768, 127),
            (768, 255),
        ] {
            for count in 1..=GROUP_MAX {
                for shifted in [false, true] {
                    check_tiles(&mut rng, k4, levels, count, shifted);
                }
            }
        }
    }

    /// This CPU's [`min_max`] gives the plain loop's range (0 included; NaN anywhere, NaN) at
    /// every length around its steps of 16 and 64 values, with NaN and ±∞ at random places.
    #[test]
    fn min_max_equals_the_plain_loop() {
        let plain = |x: &[f32]| {
            if x.iter().any(|v| v.is_nan()) {
                return (f32::NAN, f32::NAN);
            }
            x.iter()
                .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)))
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for len in (0..200).chain([768, 3072, 3073]) {
            for special in [
                None,
                Some(f32::NAN),
                Some(f32::INFINITY),
                Some(f32::NEG_INFINITY),
            ] {
                let mut x: Vec<f32> = (0..len).map(|_| rng.random_range(-4.0..9.0f32)).collect();
                if let (Some(s), true) = (special, len > 0) {
                    let at = rng.random_range(0..len);
                    x[at] = s;
                }
                let (got, want) = (min_max(&x), plain(&x));
                let same = |a: f32, b: f32| a == b || (a.is_nan() && b.is_nan());
                assert!(
                    same(got.0, want.0) && same(got.1, want.1),
                    "{len} values, {special:?}: {got:?} against {want:?} ({})",
                    kernel_name()
                );
            }
        }
    }

    /// Where AMX runs: the same group-shifted weights held as AMX's two planes and as plain
    /// integers (which the VNNI tiles take) give the same products as the reference, bit for
    /// bit, on one thread and split among threads by rows and by panels (odd panel counts, a
    /// partial last panel, rows that leave a partial 32-row block); plain weights without shifts
    /// take AMX too. Reported skipped on CPUs without AMX.
    #[test]
    fn amx_planes_and_plain_integers_give_the_reference() {
        if !amx_for(amx::STEP) {
            eprintln!("skipped: no AMX-INT8 here ({})", kernel_name());
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(23);
        for (m, k, n) in [
            (1, 64, 16),
            (33, 128, 48),
            (8, 768, 496),
            (70, 192, 100),
            (200, 768, 64),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2.0..3.0f32)).collect();
            let wf: Vec<f32> = (0..n * k)
                .map(|e| rng.random_range(-0.2..0.2f32) * 0.5f32.powi(((e % k) / 32 % 4) as i32))
                .collect();
            let b: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0f32)).collect();
            let shifted = PackedWeight::quantize_with(&wf, n, k, true);
            assert!(
                matches!(shifted.panels, Panels::Split { .. }),
                "{m}×{k}·{n}: not split"
            );
            let q = shifted.quantized();
            let e = shifted.exponents();
            assert!(e.is_some(), "{m}×{k}·{n}: no group took a finer step");
            let plain =
                PackedWeight::from_quantized_in(&q, &shifted.scales, e.as_deref(), n, k, false);
            assert!(!plain.on_amx());
            assert_eq!((plain.quantized(), plain.exponents()), (q, e));
            let unshifted = PackedWeight::quantize_with(&wf, n, k, false);
            assert!(unshifted.on_amx());
            for w in [&shifted, &plain, &unshifted] {
                let want = reference(&x, m, w, Some(&b));
                let mut got = vec![0f32; m * n];
                gemm(&x, m, w, Some(&b), &mut got);
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{m}×{k}·{n}, AMX {}: differs from the reference",
                    w.on_amx()
                );
            }
        }
    }

    fn check_tiles(
        rng: &mut rand::rngs::StdRng,
        k4: usize,
        levels: i32,
        count: usize,
        shifted: bool,
    ) {
        let qa: Vec<u8> = (0..MR * k4)
            .map(|_| rng.random_range(0..=levels as u8))
            .collect();
        let panels: Vec<i8> = (0..count * k4 * NR)
            .map(|_| rng.random_range(-127..=127i8))
            .collect();
        let per = k4.div_ceil(WEIGHT_GROUP) * NR;
        let shifts: Vec<u8> = (0..count * per)
            .map(|_| rng.random_range(0..=MAX_EXPONENT as u8))
            .collect();
        let sh = shifted.then_some(&shifts[..]);
        let what = format!("k4 = {k4}, {count} panels, {levels} levels, shifts {shifted}");
        let mut want = vec![0i32; count * MR * NR];
        for (i, (panel, sums)) in panels
            .chunks_exact(k4 * NR)
            .zip(want.chunks_exact_mut(MR * NR))
            .enumerate()
        {
            tile_sums_portable(&qa, k4, panel, sh.map(|s| &s[i * per..(i + 1) * per]), sums);
        }
        if shifted {
            // The portable tile itself against the plain definition.
            for (pp, sums) in want.chunks_exact(MR * NR).enumerate() {
                for r in 0..MR {
                    for c in 0..NR {
                        let exact: i64 = (0..k4)
                            .map(|kk| {
                                let w = panels[pp * k4 * NR + (kk / 4) * NR * 4 + c * 4 + kk % 4];
                                let s = shifts[pp * per + (kk / WEIGHT_GROUP) * NR + c];
                                (qa[r * k4 + kk] as i64 * w as i64) << s
                            })
                            .sum();
                        assert_eq!(sums[r * NR + c] as i64, exact, "{what}");
                    }
                }
            }
        }
        if levels <= activation_levels() {
            let mut got = vec![0i32; count * MR * NR];
            tile_sums(&qa, k4, &panels, sh, &mut got);
            assert_eq!(got, want, "{what} ({})", kernel_name());
        }
        #[cfg(target_arch = "x86_64")]
        {
            // AVX2's tile, with 7-bit activations and with 8 (two products per byte).
            if is_x86_feature_detected!("avx2") {
                let mut got = vec![0i32; count * MR * NR];
                for (i, (panel, sums)) in panels
                    .chunks_exact(k4 * NR)
                    .zip(got.chunks_exact_mut(MR * NR))
                    .enumerate()
                {
                    // SAFETY: AVX2 detected just above; lengths as the kernel needs.
                    unsafe {
                        match sh {
                            None => avx2::tile_sums(&qa, k4, panel, levels, sums),
                            Some(s) => avx2::tile_sums_shifted(
                                &qa,
                                k4,
                                panel,
                                &s[i * per..(i + 1) * per],
                                levels,
                                sums,
                            ),
                        }
                    };
                }
                assert_eq!(got, want, "AVX2, {what}");
            } else if k4 == 4 && count == 1 {
                eprintln!("skipped the AVX2 tile: this CPU has no AVX2");
            }
            if avx512_vnni_detected() {
                let mut got = vec![0i32; count * MR * NR];
                // SAFETY: AVX-512 VNNI detected just above; lengths as the kernel needs.
                unsafe {
                    match (count, sh) {
                        (1, None) => avx512::tile_sums::<1>(&qa, k4, &panels, &mut got),
                        (2, None) => avx512::tile_sums::<2>(&qa, k4, &panels, &mut got),
                        (3, None) => avx512::tile_sums::<3>(&qa, k4, &panels, &mut got),
                        (_, None) => avx512::tile_sums::<4>(&qa, k4, &panels, &mut got),
                        // The shifted tile takes 1 to 3 panels a call: 3 + 1 for 4.
                        (_, Some(s)) => {
                            let mut p = 0;
                            while p < count {
                                let q = (count - p).min(GROUP_SHIFTED);
                                let (ps, ss) = (
                                    &panels[p * k4 * NR..(p + q) * k4 * NR],
                                    &s[p * per..(p + q) * per],
                                );
                                let t = &mut got[p * MR * NR..(p + q) * MR * NR];
                                match q {
                                    3 => avx512::tile_sums_shifted::<3>(&qa, k4, ps, ss, t),
                                    2 => avx512::tile_sums_shifted::<2>(&qa, k4, ps, ss, t),
                                    _ => avx512::tile_sums_shifted::<1>(&qa, k4, ps, ss, t),
                                }
                                p += q;
                            }
                        }
                    }
                }
                assert_eq!(got, want, "AVX-512 VNNI, {what}");
            } else if k4 == 4 && count == 1 {
                eprintln!("skipped the AVX-512 VNNI tile: this CPU has no AVX-512 VNNI");
            }
        }
    }
}
