//! The f32 product on CPUs with AVX-512 (Zen 4/5, Intel since Skylake-SP): the `gemm` crate's
//! kernels stop at AVX2 on stable Rust, half of such a CPU's FMA width. Classic BLIS blocking:
//! `b` is packed into panels of [`NR`] columns (k-major), `a` into micro-panels of [`MR`] rows
//! per [`KC`]-deep slice, and a 12 × 32 tile keeps 24 of the 32 vector registers as
//! accumulators (two 512-bit loads of `b` and 12 broadcasts of `a` feed 24 FMAs per step).
//! Row blocks of up to [`MC`] rows are split among candle's worker threads.
//!
//! The sums run in another order than the `gemm` crate's, so results differ from it by
//! rounding only (tested against a plain triple loop on odd shapes).

use super::{Epilogue, Out, View};
use std::arch::x86_64::*;

/// Rows per tile.
const MR: usize = 12;
/// Columns per tile and per packed panel (two 512-bit registers).
const NR: usize = 32;
/// Depth of one packed slice: a 32 × 256 panel slice (32 KiB) stays in L1 while the row
/// block's tiles pass over it.
const KC: usize = 256;
/// Rows packed together (a 240 × 256 slice of `a`, 240 KiB, stays in L2).
const MC: usize = 240;
/// Up to this depth a row-major `a` is read in place by the tiles instead of packed: one
/// slice deep, its 12 rows stay in cache. Packing them cost as much as multiplying at the
/// attention products' shapes (120 × 64 · 64 × 120 per head); the packing pays at k = 3072,
/// where 12 rows 12 KiB apart contend for the same cache sets (40 % slower in place).
const IN_PLACE_A_MAX_K: usize = KC;

/// Whether this CPU runs the kernel (`OSCAR_NO_AVX512=1` keeps the AVX2 paths, for tests and
/// comparisons).
pub fn available() -> bool {
    crate::nn::vmath::avx512()
}

thread_local! {
    /// This thread's buffers for `b`'s panels and `a`'s tiles, kept from one product to the
    /// next: the attention runs two small products per sequence and head, and allocating and
    /// zeroing their buffers each time cost more than packing them. The packers write every
    /// value the kernel reads, so a buffer's old values are never seen.
    static PACKED_B: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    static PACKED_A: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Buffers above this many values are allocated per product and not kept (a large product
/// pays for its own, and a thread does not hold tens of MB).
const SCRATCH_KEPT_MAX: usize = 1 << 18;

/// Runs `f` on `len` values of this thread's `buffer` (grown as needed; kept for the next
/// product when small).
fn with_scratch<R>(
    buffer: &'static std::thread::LocalKey<std::cell::Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    if len > SCRATCH_KEPT_MAX {
        return f(&mut vec![0f32; len]);
    }
    let mut buf = buffer.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    buffer.set(buf);
    out
}

/// Whether a product is large enough for packing to pay: small ones (a decoding step's handful
/// of rows, one attention head) stay on the `gemm` crate.
pub fn worth_it(m: usize, k: usize, n: usize) -> bool {
    m >= 2 * MR && n >= NR && k >= 16
}

/// `c[m×n] (+)= a·b`, then the epilogue, `c` contiguous; `threaded` spreads panels and row
/// blocks over candle's worker pool. The caller checks [`available`] and the shapes; a bias
/// only comes with overwriting.
pub fn sgemm(a: View, b: View, c: &mut [f32], accumulate: bool, threaded: bool, ep: Epilogue) {
    assert_eq!(c.len(), a.rows * b.cols);
    // SAFETY: `c` holds m·n values.
    unsafe { sgemm_into(a, b, Out(c.as_mut_ptr()), b.cols, accumulate, threaded, ep) }
}

/// [`sgemm`] into `m` rows of `n` values at `c`, `ldc` apart (`n` for a contiguous `c`), which
/// need not be initialized unless `accumulate`: without it every value is written before any is
/// read.
///
/// # Safety
/// `c` must point to those `m` rows of `n` writable values, which nothing else uses during the
/// call (the values between the rows are not touched).
pub unsafe fn sgemm_into(
    a: View,
    b: View,
    c: Out,
    ldc: usize,
    accumulate: bool,
    threaded: bool,
    ep: Epilogue,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(available() && b.rows == k && k > 0 && ldc >= n);
    assert!(!(accumulate && ep.bias.is_some()) && ep.bias.is_none_or(|b| b.len() == n));
    let panels = n.div_ceil(NR);
    let pool = candle_core::utils::barrier_pool();
    let threads = if threaded { pool.n_workers() + 1 } else { 1 };
    // Row blocks: MC rows, or fewer so that every thread gets one.
    let per = MC.min(m.div_ceil(threads).div_ceil(MR) * MR);
    let blocks = m.div_ceil(per);
    let block = |blk: usize, packed_b: &[f32]| {
        let rows = blk * per..((blk + 1) * per).min(m);
        row_block(a, rows, packed_b, (n, ldc), accumulate, ep, c);
    };
    with_scratch(&PACKED_B, panels * NR * k, |packed_b| {
        if threads == 1 {
            pack_b(b, 0..panels, packed_b);
            (0..blocks).for_each(|blk| block(blk, packed_b));
            return;
        }
        let pb = Out(packed_b.as_mut_ptr());
        pool.execute_chunked(panels, |range| {
            // SAFETY: each thread packs its own panels, a disjoint part of `packed_b`.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(pb.at(range.start * NR * k), range.len() * NR * k)
            };
            pack_b(b, range, dst);
        });
        let packed_b = &*packed_b;
        pool.execute_chunked(blocks, |range| range.for_each(|blk| block(blk, packed_b)));
    })
}

/// Packs columns `panels` (in units of [`NR`]) of `b` into `dst`: per panel, `k` rows of
/// [`NR`] consecutive values, the columns past `n` zero. Every value of those panels is
/// written. A column-major `b` (a transposed operand: attention's keys, a `Linear`'s weight)
/// is transposed 16 × 16 values at a time in registers; a value at a time, this transpose cost
/// more than half as much as the attention products it feeds.
fn pack_b(b: View, panels: std::ops::Range<usize>, dst: &mut [f32]) {
    let (k, n) = (b.rows, b.cols);
    assert!(dst.len() >= panels.len() * NR * k && (k - 1) * b.rs + (n - 1) * b.cs < b.data.len());
    for (i, p) in panels.enumerate() {
        let panel = &mut dst[i * NR * k..(i + 1) * NR * k];
        if b.cs == 1 && (p + 1) * NR <= n {
            // A row-major panel: each of its k rows is NR consecutive values.
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                row.copy_from_slice(&b.data[kk * b.rs + p * NR..][..NR]);
            }
            continue;
        }
        let cols = NR.min(n - p * NR);
        if b.rs == 1 {
            // Column-major: 16 × 16 blocks (partial ones at the last columns and inputs, the
            // columns past `n` written as zeros).
            for j0 in (0..NR).step_by(16) {
                let live = cols.saturating_sub(j0).min(16);
                for k0 in (0..k).step_by(16) {
                    let src = if live > 0 {
                        b.data[(p * NR + j0) * b.cs + k0..].as_ptr()
                    } else {
                        b.data.as_ptr()
                    };
                    // SAFETY: AVX-512 is this module's premise ([`sgemm_into`] asserts it); the
                    // `live` columns from p·NR + j0 are < n and the inputs from k0 read are < k,
                    // so every value read lies inside `b` (asserted above); the panel holds k·NR
                    // values, rows k0‥ of columns j0‥j0 + 16 among them.
                    unsafe {
                        transpose16(
                            src,
                            b.cs,
                            (live, (k - k0).min(16)),
                            panel[k0 * NR + j0..].as_mut_ptr(),
                            NR,
                        )
                    };
                }
            }
            continue;
        }
        // Any other layout (strided, or the last row-major panel), value by value.
        for jj in 0..NR {
            for kk in 0..k {
                panel[kk * NR + jj] = if jj < cols {
                    b.data[kk * b.rs + (p * NR + jj) * b.cs]
                } else {
                    0.0
                };
            }
        }
    }
}

/// Writes the transpose of the `rows × cols` values at `src` (rows `lds` apart, both counts at
/// most 16) to `dst` (rows `ldd` apart): `dst[c·ldd + r] = src[r·lds + c]` for every `c <
/// cols` and `r < 16`, 0 where `r ≥ rows`. Four rounds of shuffles: 32-bit and 64-bit
/// interleaves within each 128-bit lane, then two rounds of 128-bit lane exchanges.
///
/// # Safety
/// AVX-512F must be available; the `rows × cols` values read and the `cols` rows of 16 written
/// must lie inside their buffers.
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(
    src: *const f32,
    lds: usize,
    (rows, cols): (usize, usize),
    dst: *mut f32,
    ldd: usize,
) {
    let lanes = ((1u32 << cols) - 1) as __mmask16;
    let r: [__m512; 16] = std::array::from_fn(|i| {
        if i < rows {
            unsafe { _mm512_maskz_loadu_ps(lanes, src.add(i * lds)) }
        } else {
            _mm512_setzero_ps()
        }
    });
    // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved, lane by lane.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4g + c]: in lane l, rows 4g‥4g+4 of column 4l + c.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (g, c) = (i / 4, i % 4);
        let (a, b) = (
            _mm512_castps_pd(t[4 * g + c / 2]),
            _mm512_castps_pd(t[4 * g + 2 + c / 2]),
        );
        _mm512_castpd_ps(if c % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    for c in 0..4 {
        // Lanes 0 and 2 (`even`) or 1 and 3 (`odd`) of rows 0‥8, then of rows 8‥16.
        let even_lo = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let odd_lo = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
        let even_hi = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let odd_hi = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
        let out = [
            (c, _mm512_shuffle_f32x4::<0x88>(even_lo, even_hi)),
            (8 + c, _mm512_shuffle_f32x4::<0xdd>(even_lo, even_hi)),
            (4 + c, _mm512_shuffle_f32x4::<0x88>(odd_lo, odd_hi)),
            (12 + c, _mm512_shuffle_f32x4::<0xdd>(odd_lo, odd_hi)),
        ];
        for (col, v) in out {
            if col < cols {
                unsafe { _mm512_storeu_ps(dst.add(col * ldd), v) };
            }
        }
    }
}

/// Packs rows `rows` (at most [`MR`]) × inputs `ks` of `a` into `dst`, k-major (`[kk][MR]`),
/// the rows past the end left zero.
fn pack_a(a: View, rows: std::ops::Range<usize>, ks: std::ops::Range<usize>, dst: &mut [f32]) {
    let kc = ks.len();
    assert!(dst.len() == MR * kc && rows.len() <= MR);
    assert!((rows.end - 1) * a.rs + (ks.end - 1) * a.cs < a.data.len());
    if rows.len() < MR {
        dst.fill(0.0);
    }
    let d = dst.as_mut_ptr();
    for (r, row) in rows.enumerate() {
        let src = a.data[row * a.rs + ks.start * a.cs..].as_ptr();
        // SAFETY: every (row, kk) lies inside `a` (asserted above), every r·kk inside `dst`.
        unsafe {
            for kk in 0..kc {
                *d.add(kk * MR + r) = *src.add(kk * a.cs);
            }
        }
    }
}

/// Rows `rows` of the product, [`KC`] inputs at a time: that slice of the rows is packed into
/// micro-panels of [`MR`] rows (k-major), then every panel of `b` passes over it.
fn row_block(
    a: View,
    rows: std::ops::Range<usize>,
    packed_b: &[f32],
    (n, ldc): (usize, usize),
    accumulate: bool,
    ep: Epilogue,
    c: Out,
) {
    let k = a.cols;
    let tiles = rows.len().div_ceil(MR);
    // Whole tiles of a shallow row-major `a` are read in place; the others are packed.
    let in_place =
        |t: usize| a.cs == 1 && k <= IN_PLACE_A_MAX_K && rows.start + (t + 1) * MR <= rows.end;
    with_scratch(&PACKED_A, tiles * MR * KC.min(k), |packed_a| {
        let mut p0 = 0;
        while p0 < k {
            let kc = KC.min(k - p0);
            for t in (0..tiles).filter(|&t| !in_place(t)) {
                let row0 = rows.start + t * MR;
                pack_a(
                    a,
                    row0..(row0 + MR).min(rows.end),
                    p0..p0 + kc,
                    &mut packed_a[t * MR * kc..(t + 1) * MR * kc],
                );
            }
            let add = accumulate || p0 > 0;
            // The bias joins the first slice's sums (as the sums joined a bias-filled `c` before),
            // GELU the last slice's.
            let bias = ep.bias.filter(|_| p0 == 0);
            let gelu = ep.gelu && p0 + kc == k;
            for p in 0..n.div_ceil(NR) {
                let bp = &packed_b[p * NR * k + p0 * NR..p * NR * k + (p0 + kc) * NR];
                let cols = NR.min(n - p * NR);
                let mut bias_here = [0f32; NR];
                if let Some(b) = bias {
                    bias_here[..cols].copy_from_slice(&b[p * NR..p * NR + cols]);
                }
                let bias_ptr = if bias.is_some() {
                    bias_here.as_ptr()
                } else {
                    std::ptr::null()
                };
                for t in 0..tiles {
                    let row0 = rows.start + t * MR;
                    let live = MR.min(rows.end - row0);
                    // In place: row r's input kk at r·rs + kk (one slice deep, so p0 = 0).
                    let (ap, lda) = if in_place(t) {
                        (a.data[row0 * a.rs..][..(MR - 1) * a.rs + kc].as_ptr(), a.rs)
                    } else {
                        (packed_a[t * MR * kc..(t + 1) * MR * kc].as_ptr(), 0)
                    };
                    // SAFETY: AVX-512 was detected ([`sgemm`] asserts it); the packed slices hold
                    // kc·MR and kc·NR values, the bias NR; the tile's rows and columns lie inside
                    // `c` (m·n), and no other thread writes them.
                    // (Reading a row-major `a` in place instead of packing it was tried: as fast
                    // at k = 768, up to 40 % slower at k = 3072, where 12 rows 12 KiB apart
                    // contend for the same cache sets.)
                    unsafe {
                        let dst = c.at(row0 * ldc + p * NR);
                        let edge = (live, cols);
                        if lda > 0 {
                            tile::<true>(kc, ap, lda, bp.as_ptr(), dst, ldc, edge, add, bias_ptr)
                        } else {
                            tile::<false>(kc, ap, 0, bp.as_ptr(), dst, ldc, edge, add, bias_ptr)
                        }
                        if gelu {
                            for r in 0..live {
                                let row = std::slice::from_raw_parts_mut(dst.add(r * ldc), cols);
                                super::super::vmath::gelu_in_place(row);
                            }
                        }
                    }
                }
            }
            p0 += kc;
        }
    })
}

/// `c[MR×NR] (+)= a·b` over `kc` inputs: `a` packed `[kc][MR]`, or with `IN_PLACE` row-major
/// with row stride `lda`; `b` packed `[kc][NR]`; `c` with row stride `ldc`, of which only the
/// first `live.0` rows and `live.1` columns are read or written (masked stores: a partial tile
/// at the edge of the output, as attention's 95 × 95 scores have one in three, needs no copy
/// through a buffer). When not adding, a non-null `bias` (NR values) joins every row. Both forms
/// sum in the same order.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const IN_PLACE: bool>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    (rows, cols): (usize, usize),
    add: bool,
    bias: *const f32,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for r in 0..rows {
        _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + 16) as *const i8);
    }
    for kk in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(kk * NR));
        let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(if IN_PLACE {
                *a.add(r * lda + kk)
            } else {
                *a.add(kk * MR + r)
            });
            row[0] = _mm512_fmadd_ps(av, b0, row[0]);
            row[1] = _mm512_fmadd_ps(av, b1, row[1]);
        }
    }
    // The columns written in each half of the tile.
    let half = |from: usize| -> __mmask16 {
        let n = cols.saturating_sub(from).min(16);
        ((1u32 << n) - 1) as __mmask16
    };
    let (m0, m1) = (half(0), half(16));
    for (r, row) in acc.iter().enumerate().take(rows) {
        let dst = c.add(r * ldc);
        let (mut v0, mut v1) = (row[0], row[1]);
        if add {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, dst));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, dst.add(16)));
        } else if !bias.is_null() {
            v0 = _mm512_add_ps(v0, _mm512_loadu_ps(bias));
            v1 = _mm512_add_ps(v1, _mm512_loadu_ps(bias.add(16)));
        }
        _mm512_mask_storeu_ps(dst, m0, v0);
        _mm512_mask_storeu_ps(dst.add(16), m1, v1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of every panel, packed from row-major, column-major (the transposes in
    /// registers and the values left around them) and strided operands, is the operand's value
    /// at that input and column, or 0 past the last column (reported skipped on a CPU without
    /// AVX-512).
    #[test]
    fn packed_panels_hold_each_value_of_b_where_the_tile_reads_it() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 (or OSCAR_NO_AVX512 is set)");
            return;
        }
        // (k, n, the gap between columns or rows beyond the dense layout)
        for (k, n, gap) in [
            (1, 1, 0),
            (16, 16, 0),
            (64, 95, 704),
            (64, 120, 0),
            (600, 100, 3),
            (17, 33, 0),
            (33, 70, 5),
        ] {
            let data: Vec<f32> = (0..(k + gap) * (n + gap)).map(|i| i as f32).collect();
            let column_major = View {
                data: &data,
                rows: k,
                cols: n,
                rs: 1,
                cs: k + gap,
            };
            let row_major = View {
                data: &data,
                rows: k,
                cols: n,
                rs: n + gap,
                cs: 1,
            };
            let strided = View {
                data: &data,
                rows: k,
                cols: n.div_ceil(2),
                rs: n + gap,
                cs: 2,
            };
            for b in [column_major, row_major, strided] {
                let panels = b.cols.div_ceil(NR);
                let mut dst = vec![f32::NAN; panels * NR * k];
                pack_b(b, 0..panels, &mut dst);
                for p in 0..panels {
                    for kk in 0..k {
                        for jj in 0..NR {
                            let col = p * NR + jj;
                            let want = if col < b.cols {
                                b.data[kk * b.rs + col * b.cs]
                            } else {
                                0.0
                            };
                            let got = dst[p * NR * k + kk * NR + jj];
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "k {k}, n {n}, strides {}/{}: panel {p}, input {kk}, column {jj}",
                                b.rs,
                                b.cs
                            );
                        }
                    }
                }
            }
        }
    }
}
