//! The f32 matrix product behind [`super::linear`]: the `gemm` crate (candle's own CPU kernel) by
//! default, or OpenBLAS's `cblas_sgemm` with the `openblas` feature (sgemm.md: 144 vs 120 GFLOP/s
//! at BERT shapes on the project's machine; needs the system's libopenblas at build time), and
//! this crate's AVX-512 kernel ([`avx512`]) on CPUs that have it, for products large enough.

#[cfg(target_arch = "x86_64")]
mod avx512;

use super::par::Out;

/// A row-major view of a matrix inside a slice: element (i, j) is at `i·rs + j·cs`. One of the
/// strides is 1 (a matrix or its transpose stored contiguously).
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A contiguous `rows × cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, without moving data.
    pub fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// What a `Linear` layer does to its product besides the sum: a bias per output column, then
/// erf-GELU (BERT's intermediate layer, `BertIntermediate`). The AVX-512 kernel applies both to
/// each tile while it is still in cache; the other paths in passes over `c` afterwards. Either
/// way the values are those of the product, then `+ bias`, then [`vmath::gelu_slice`].
///
/// [`vmath::gelu_slice`]: super::vmath::gelu_slice
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub gelu: bool,
}

/// `c[m×n] (+)= a[m×k]·b[k×n]`; `c` contiguous. `accumulate` adds to `c` instead of overwriting.
/// Large products use every core (through the backend's threads).
pub fn sgemm(a: View, b: View, c: &mut [f32], accumulate: bool) {
    product(a, b, c, accumulate, true, Epilogue::default())
}

/// `c = a·b + bias`, then GELU if asked ([`Epilogue`]); threaded as [`sgemm`].
pub fn sgemm_epilogue(a: View, b: View, c: &mut [f32], epilogue: Epilogue) {
    epilogue.check(b.cols);
    product(a, b, c, false, true, epilogue)
}

/// [`sgemm_epilogue`] into a new `m × n` buffer. The AVX-512 kernel writes every value itself,
/// so there the buffer is not zeroed first (a pass over the output fewer).
pub fn sgemm_epilogue_new(a: View, b: View, epilogue: Epilogue) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    epilogue.check(n);
    #[cfg(target_arch = "x86_64")]
    if b.rows == k && avx512_runs(m, k, n, true) {
        let mut c = Vec::<f32>::with_capacity(m * n);
        // SAFETY: the capacity holds m·n values; without accumulating, the kernel writes each
        // of them, so all are initialized when the length is set.
        unsafe {
            avx512::sgemm_into(a, b, Out(c.as_mut_ptr()), n, false, true, epilogue);
            c.set_len(m * n);
        }
        return c;
    }
    let mut c = super::par::zeroed(m * n);
    product(a, b, &mut c, false, true, epilogue);
    c
}

impl Epilogue<'_> {
    /// Panics unless the bias, if any, has one value per column.
    fn check(&self, n: usize) {
        if let Some(bias) = self.bias {
            assert_eq!(
                bias.len(),
                n,
                "sgemm: bias of {} for {n} columns",
                bias.len()
            );
        }
    }
}

/// Whether a product runs the AVX-512 kernel: on CPUs that have it, for products large enough,
/// unless OpenBLAS is built in (the user's choice for the threaded products).
#[cfg(target_arch = "x86_64")]
fn avx512_runs(m: usize, k: usize, n: usize, threaded: bool) -> bool {
    k > 0
        && (!threaded || !cfg!(feature = "openblas"))
        && avx512::worth_it(m, k, n)
        && avx512::available()
}

/// [`sgemm`] on the calling thread only (for callers that spread many small products over the
/// cores themselves).
pub fn sgemm_serial(a: View, b: View, c: &mut [f32], accumulate: bool) {
    product(a, b, c, accumulate, false, Epilogue::default())
}

/// [`sgemm_serial`] without accumulating, into `m` rows of `n` values at `c`, `ldc` apart (`n`
/// for a contiguous `c`: a head's columns of a wider output otherwise), that need not be
/// initialized: every one is written, none read first.
///
/// # Safety
/// `c` must point to those `m` rows of `n` writable values, which nothing else uses during the
/// call (the values between the rows are not touched).
pub(crate) unsafe fn sgemm_serial_fresh(a: View, b: View, c: Out, ldc: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && ldc >= n,
        "sgemm: {m}×{k} · {}×{n} into rows {ldc} apart",
        b.rows
    );
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx512_runs(m, k, n, false) {
        // SAFETY: as this function's; without accumulating the kernel writes before reading.
        return unsafe { avx512::sgemm_into(a, b, c, ldc, false, false, Epilogue::default()) };
    }
    // SAFETY: `c` holds m rows of n values ldc apart (this function's contract); `gemm` writes
    // them all and, not accumulating, reads none.
    unsafe {
        if k == 0 {
            for r in 0..m {
                std::ptr::write_bytes(c.0.add(r * ldc), 0, n);
            }
        } else {
            gemm_raw(a, b, c.0, ldc, false, gemm::Parallelism::None);
        }
    }
}

fn product(a: View, b: View, c: &mut [f32], accumulate: bool, threaded: bool, ep: Epilogue) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && c.len() == m * n,
        "sgemm: {m}×{k} · {}×{n} into {}",
        b.rows,
        c.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx512_runs(m, k, n, threaded) {
        return avx512::sgemm(a, b, c, accumulate, threaded, ep);
    }
    let accumulate = match ep.bias {
        Some(bias) => {
            super::par::each_row(c, n, threaded, |row| row.copy_from_slice(bias));
            true
        }
        None => accumulate,
    };
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
    } else if threaded {
        backend::sgemm(a, b, c, accumulate);
    } else {
        gemm_crate(a, b, c, accumulate, gemm::Parallelism::None);
    }
    if ep.gelu {
        super::par::each_row(c, n, threaded, super::vmath::gelu_in_place);
    }
}

fn gemm_crate(a: View, b: View, c: &mut [f32], accumulate: bool, par: gemm::Parallelism) {
    assert_eq!(c.len(), a.rows * b.cols);
    // SAFETY: `c` holds m·n contiguous elements.
    unsafe { gemm_raw(a, b, c.as_mut_ptr(), b.cols, accumulate, par) }
}

/// The `gemm` crate's product into `c` (`m` rows of `n` values, `ldc` apart), read only when
/// `accumulate`.
///
/// # Safety
/// `c` must point to those rows of writable values (initialized when `accumulate`), which
/// nothing else uses during the call.
unsafe fn gemm_raw(
    a: View,
    b: View,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // SAFETY: the views' strides address elements inside their slices (checked by the callers'
    // shapes), and `c` is as this function's contract says.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(not(feature = "openblas"))]
mod backend {
    use super::View;

    pub fn sgemm(a: View, b: View, c: &mut [f32], accumulate: bool) {
        let threads = candle_core::utils::get_num_threads();
        let big = a.rows * a.cols * b.cols > 1 << 15;
        let par = if threads > 1 && big {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        super::gemm_crate(a, b, c, accumulate, par)
    }
}

#[cfg(feature = "openblas")]
mod backend {
    use super::View;
    extern crate openblas_src;

    /// (transpose flag, leading dimension) of a row-major view for cblas.
    fn trans(v: View) -> (cblas_sys::CBLAS_TRANSPOSE, i32) {
        if v.cs == 1 {
            (
                cblas_sys::CBLAS_TRANSPOSE::CblasNoTrans,
                v.rs.max(v.cols).max(1) as i32,
            )
        } else {
            assert!(v.rs == 1, "sgemm: one stride must be 1");
            (
                cblas_sys::CBLAS_TRANSPOSE::CblasTrans,
                v.cs.max(v.rows).max(1) as i32,
            )
        }
    }

    pub fn sgemm(a: View, b: View, c: &mut [f32], accumulate: bool) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let ((ta, lda), (tb, ldb)) = (trans(a), trans(b));
        // SAFETY: shapes and leading dimensions describe memory inside the slices.
        unsafe {
            cblas_sys::cblas_sgemm(
                cblas_sys::CBLAS_LAYOUT::CblasRowMajor,
                ta,
                tb,
                m as i32,
                n as i32,
                k as i32,
                1.0,
                a.data.as_ptr(),
                lda,
                b.data.as_ptr(),
                ldb,
                if accumulate { 1.0 } else { 0.0 },
                c.as_mut_ptr(),
                n as i32,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View, b: View) -> Vec<f32> {
        let mut c = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols)
                    .map(|p| a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs])
                    .sum();
            }
        }
        c
    }

    /// Deterministic `m × k` and `k × n` operands, each stored as itself and as a transpose; `f`
    /// gets every combination with the naive product.
    fn each_layout(m: usize, k: usize, n: usize, mut f: impl FnMut(View, View, &[f32])) {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5)
            .collect();
        for va in [View::new(&a, m, k), View::new(&a, k, m).t()] {
            for vb in [View::new(&b, k, n), View::new(&b, n, k).t()] {
                f(va, vb, &naive(va, vb));
            }
        }
    }

    /// The largest difference between `c` and `factor · want`.
    fn worst(c: &[f32], want: &[f32], factor: f32) -> f32 {
        c.iter()
            .zip(want)
            .map(|(x, y)| (x - factor * y).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn sgemm_matches_the_naive_product_for_every_transpose_and_accumulates() {
        each_layout(37, 50, 29, |va, vb, want| {
            let mut c = vec![1.0f32; want.len()];
            sgemm(va, vb, &mut c, false);
            assert!(worst(&c, want, 1.0) < 1e-4);
            sgemm(va, vb, &mut c, true);
            assert!(worst(&c, want, 2.0) < 1e-4);
        });
    }

    /// The AVX-512 kernel against the plain triple loop, on shapes with partial tiles, panels
    /// and depth slices, every transpose, overwriting and accumulating, on one thread and the
    /// pool (reported skipped on a CPU without AVX-512).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_kernel_matches_the_naive_product_on_odd_shapes() {
        if !avx512::available() {
            eprintln!("skipped: this CPU has no AVX-512 (or OSCAR_NO_AVX512 is set)");
            return;
        }
        for (m, k, n) in [
            (1, 1, 1),
            (13, 5, 7),
            (25, 17, 33),
            (120, 64, 120),
            (37, 300, 65),
            (253, 600, 100),
        ] {
            let tol = 1e-5 * k as f32;
            each_layout(m, k, n, |va, vb, want| {
                for threaded in [false, true] {
                    let mut c = vec![1.0f32; want.len()];
                    avx512::sgemm(va, vb, &mut c, false, threaded, Epilogue::default());
                    let off = worst(&c, want, 1.0);
                    assert!(off < tol, "{m}×{k}×{n}: off by {off}");
                    avx512::sgemm(va, vb, &mut c, true, threaded, Epilogue::default());
                    let off = worst(&c, want, 2.0);
                    assert!(off < 2.0 * tol, "{m}×{k}×{n} accumulated: off by {off}");
                }
            });
        }
    }

    /// The epilogue (bias, GELU), also into a fresh buffer, gives the values of the plain
    /// product, then the bias added,
    /// then [`super::super::vmath::gelu_slice`], bit for bit: on every path this CPU has (the
    /// AVX-512 tile, the `gemm` crate threaded and serial), on shapes with partial tiles,
    /// panels and depth slices.
    #[test]
    fn the_epilogue_equals_bias_then_gelu_after_the_product() {
        for (m, k, n) in [(1, 1, 1), (13, 5, 7), (37, 300, 65), (253, 600, 100)] {
            let bias: Vec<f32> = (0..n).map(|j| (j % 9) as f32 * 0.3 - 1.2).collect();
            each_layout(m, k, n, |va, vb, _| {
                for threaded in [false, true] {
                    for (b, gelu) in [
                        (Some(&bias[..]), false),
                        (None, true),
                        (Some(&bias[..]), true),
                    ] {
                        // The separate passes: the bias written first, the product added to it
                        // (`Linear`'s order before the epilogue), then GELU over the output.
                        let mut want = vec![0f32; m * n];
                        if let Some(b) = b {
                            want.chunks_exact_mut(n).for_each(|r| r.copy_from_slice(b));
                        }
                        product(
                            va,
                            vb,
                            &mut want,
                            b.is_some(),
                            threaded,
                            Epilogue::default(),
                        );
                        if gelu {
                            let plain = want.clone();
                            super::super::vmath::gelu_slice(&plain, &mut want);
                        }
                        let mut got = vec![f32::NAN; m * n];
                        product(
                            va,
                            vb,
                            &mut got,
                            false,
                            threaded,
                            Epilogue { bias: b, gelu },
                        );
                        assert!(
                            got.iter()
                                .zip(&want)
                                .all(|(x, y)| x.to_bits() == y.to_bits()),
                            "{m}×{k}×{n}, bias {}, gelu {gelu}, threaded {threaded}",
                            b.is_some()
                        );
                        if threaded {
                            // Into a fresh (not zeroed) buffer: the same values.
                            let fresh = sgemm_epilogue_new(va, vb, Epilogue { bias: b, gelu });
                            assert!(fresh
                                .iter()
                                .zip(&want)
                                .all(|(x, y)| x.to_bits() == y.to_bits()));
                        }
                    }
                }
            });
        }
    }
}
