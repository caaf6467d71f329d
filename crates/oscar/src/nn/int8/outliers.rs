//! LLM.int8()'s mixed-precision decomposition (Dettmers et al., 2022; bitsandbytes'
//! `Linear8bitLt` with its default `threshold=6.0`): the input features that reach the
//! threshold in magnitude in any row of a call are taken out of the int8 product and multiplied
//! in f32, against their weights dequantized. Transformer hidden states carry a few such outlier
//! features in every token; left in, each sets its row's quantization step, and the step
//! coarsens all the other features of the row. all-MiniLM-L6-v2's pooled embeddings come out of
//! int8 at a cosine of 0.993 to f32 without the decomposition (docs/int8.md).

#[cfg(test)]
use super::kernel::gemm;
use super::kernel::{self, min_max, PackedWeight};
use crate::nn::par::{Out, PARALLEL_MIN_ELEMS};
use crate::nn::sgemm::Epilogue;

/// bitsandbytes' default outlier threshold.
pub const THRESHOLD: f32 = 6.0;

/// The input features (columns of `x`, `m × k` row-major) where some row's value reaches
/// `threshold` in magnitude. NaN reaches nothing: a NaN stays in the int8 product, which turns
/// its row into NaN as the f32 product would.
pub fn outlier_columns(x: &[f32], k: usize, threshold: f32) -> Vec<usize> {
    scan(x, k, threshold).0
}

/// [`outlier_columns`], and every row's [`min_max`] (what its quantization needs), in one pass
/// over `x`: a row whose range lies inside `(−threshold, threshold)` holds no outlier, so only
/// the other rows (none, in most calls) are looked at value by value.
fn scan(x: &[f32], k: usize, threshold: f32) -> (Vec<usize>, Vec<(f32, f32)>) {
    if k == 0 {
        return (Vec::new(), vec![(0.0, 0.0); x.len()]);
    }
    let m = x.len() / k;
    let mut ranges = vec![(0f32, 0f32); m];
    // Bytes or-ed without a branch, so the compiler vectorizes the scan of a row.
    let scan_rows = |rows: &[f32], ranges: &mut [(f32, f32)], hit: &mut [u8]| {
        for (row, range) in rows.chunks_exact(k).zip(ranges) {
            *range = min_max(row);
            let (lo, hi) = *range;
            if !(lo > -threshold && hi < threshold) {
                for (h, v) in hit.iter_mut().zip(row) {
                    *h |= (v.abs() >= threshold) as u8;
                }
            }
        }
    };
    let mut hit = vec![0u8; k];
    if x.len() < PARALLEL_MIN_ELEMS {
        scan_rows(x, &mut ranges, &mut hit);
    } else {
        // Each thread scans its rows into its own flags and its rows' ranges, then ors its flags
        // into the shared ones.
        let shared = std::sync::Mutex::new(hit);
        let out = Ranges(ranges.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(m, |rows| {
            let mut mine = vec![0u8; k];
            // SAFETY: each thread gets its own rows' ranges, inside `ranges` (m of them).
            let rs = unsafe { out.rows(rows.clone()) };
            scan_rows(&x[rows.start * k..rows.end * k], rs, &mut mine);
            let mut all = shared.lock().unwrap_or_else(|e| e.into_inner());
            all.iter_mut().zip(&mine).for_each(|(a, m)| *a |= m);
        });
        hit = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    }
    ((0..k).filter(|&c| hit[c] != 0).collect(), ranges)
}

/// The row ranges the pool's threads fill, each its own rows.
#[derive(Clone, Copy)]
struct Ranges(*mut (f32, f32));
unsafe impl Send for Ranges {}
unsafe impl Sync for Ranges {}

impl Ranges {
    /// # Safety
    /// `rows` must lie inside the buffer, and no one else use them while the slice lives.
    unsafe fn rows<'a>(self, rows: std::ops::Range<usize>) -> &'a mut [(f32, f32)] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(rows.start), rows.len()) }
    }
}

/// `y = x·Wᵀ (+ bias)` with the outlier features of `x` in f32 and the rest in int8: the int8
/// product of `x` with those features zeroed (a zero is exact in the row quantization), plus
/// the f32 product of those features with their dequantized weights. Returns `y` (`m × n`).
pub fn gemm_decomposed(
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    ep: Epilogue,
    threshold: f32,
) -> Vec<f32> {
    gemm_decomposed_shared(x, m, &[(w, ep)], threshold)
        .pop()
        .expect("one product")
}

/// [`gemm_decomposed`] of the same rows `x` with several weights of the same input width (a
/// layer's query, key and value): the rows are scanned and quantized once for all of them, and
/// each product is what [`gemm_decomposed`] gives alone (the same bits).
pub fn gemm_decomposed_shared(
    x: &[f32],
    m: usize,
    products: &[(&PackedWeight, Epilogue)],
    threshold: f32,
) -> Vec<Vec<f32>> {
    let Some(k) = products.first().map(|(w, _)| w.k) else {
        return vec![];
    };
    let (cols, ranges) = scan(x, k, threshold);
    if cols.is_empty() {
        return kernel::gemm_fresh_shared(x, m, products, Some(&ranges));
    }
    let mut inliers = x.to_vec();
    for row in inliers.chunks_exact_mut(k) {
        for &c in &cols {
            row[c] = 0.0;
        }
    }
    // GELU, when asked, waits for the outlier features' part: each row gets it after its sum.
    let without_gelu: Vec<(&PackedWeight, Epilogue)> = products
        .iter()
        .map(|&(w, ep)| (w, Epilogue { gelu: false, ..ep }))
        .collect();
    let mut ys = kernel::gemm_fresh_shared(&inliers, m, &without_gelu, None);
    for (y, &(w, ep)) in ys.iter_mut().zip(products) {
        add_outlier_part(x, &cols, w, ep.gelu, y);
    }
    ys
}

/// Adds the outlier features' f32 part to each row of `y` (`m × w.n`), then GELU where asked.
fn add_outlier_part(x: &[f32], cols: &[usize], w: &PackedWeight, gelu: bool, y: &mut [f32]) {
    let (k, n) = (w.k, w.n);
    let weights: Vec<Vec<f32>> = cols.iter().map(|&c| w.dequantized_column(c)).collect();
    let add_outliers = |xr: &[f32], yr: &mut [f32]| {
        for (&c, wc) in cols.iter().zip(&weights) {
            let v = xr[c];
            for (o, wv) in yr.iter_mut().zip(wc) {
                *o += v * wv;
            }
        }
        if gelu {
            crate::nn::vmath::gelu_in_place(yr);
        }
    };
    if y.len() < PARALLEL_MIN_ELEMS {
        // A decoding step's few rows: not worth waking the pool.
        for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
            add_outliers(xr, yr);
        }
        return;
    }
    let m = y.len() / n.max(1);
    let out = Out(y.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(m, |range| {
        // SAFETY: each thread gets its own rows of `y` (m·n values).
        let ys = unsafe { out.rows(range.clone(), n) };
        let xs = &x[range.start * k..range.end * k];
        for (xr, yr) in xs.chunks_exact(k).zip(ys.chunks_exact_mut(n)) {
            add_outliers(xr, yr);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Rows with two outlier features (BERT-like: one large feature per token, the same feature
    /// in every token): the decomposed product is several times closer to the f32 product than
    /// the plain int8 one, and without outliers the two are the same product.
    #[test]
    fn outlier_features_leave_the_int8_product() {
        let (m, k, n) = (40, 256, 48);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let wf: Vec<f32> = (0..n * k).map(|_| rng.random_range(-0.1..0.1)).collect();
        let w = PackedWeight::quantize(&wf, n, k);
        let exact = |x: &[f32]| -> Vec<f32> {
            (0..m * n)
                .map(|o| {
                    let (i, j) = (o / n, o % n);
                    (0..k).map(|c| x[i * k + c] * wf[j * k + c]).sum()
                })
                .collect()
        };
        let err = |got: &[f32], want: &[f32]| -> f64 {
            let num: f64 = got
                .iter()
                .zip(want)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
            (num / den).sqrt()
        };
        let mut plain = vec![0f32; m * n];
        gemm(&x, m, &w, None, &mut plain);
        let mixed = gemm_decomposed(&x, m, &w, Epilogue::default(), THRESHOLD);
        assert_eq!(plain, mixed, "no outliers: the same product");
        for i in 0..m {
            x[i * k + 17] = 20.0 + i as f32;
            x[i * k + 100] = -12.0;
        }
        assert_eq!(outlier_columns(&x, k, THRESHOLD), vec![17, 100]);
        gemm(&x, m, &w, None, &mut plain);
        let mixed = gemm_decomposed(&x, m, &w, Epilogue::default(), THRESHOLD);
        let want = exact(&x);
        let (e_plain, e_mixed) = (err(&plain, &want), err(&mixed, &want));
        assert!(
            e_mixed * 4.0 < e_plain,
            "decomposed {e_mixed:.2e} against plain int8 {e_plain:.2e}"
        );
        let mut nan = x.clone();
        nan[5] = f32::NAN;
        let mixed = gemm_decomposed(&nan, m, &w, Epilogue::default(), THRESHOLD);
        assert!(mixed[..n].iter().all(|v| v.is_nan()));
        assert!(mixed[n..].iter().all(|v| v.is_finite()));
    }

    /// GELU in the epilogue (on each tile, or on each row after its outlier part) gives the bits
    /// of the product followed by `gelu_slice`, with a bias, with and without outlier features,
    /// on shapes with partial tiles and panel groups, one thread and the pool.
    #[test]
    fn gelu_in_the_epilogue_equals_gelu_after_the_product() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for (m, k, n) in [(3, 5, 7), (40, 256, 48), (300, 96, 200)] {
            let mut x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2.0..2.0)).collect();
            let wf: Vec<f32> = (0..n * k).map(|_| rng.random_range(-0.2..0.2)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let w = PackedWeight::quantize(&wf, n, k);
            for outliers in [false, true] {
                if outliers {
                    x[k / 2] = 9.0;
                }
                let bias = Epilogue {
                    bias: Some(&b),
                    gelu: false,
                };
                let plain = gemm_decomposed(&x, m, &w, bias, THRESHOLD);
                let mut want = vec![0f32; m * n];
                crate::nn::vmath::gelu_slice(&plain, &mut want);
                let ep = Epilogue { gelu: true, ..bias };
                let got = gemm_decomposed(&x, m, &w, ep, THRESHOLD);
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(p, q)| p.to_bits() == q.to_bits()),
                    "{m}×{k}×{n}, outliers {outliers}"
                );
            }
        }
    }

    /// Products sharing their input's quantization (a layer's query, key and value) each equal
    /// the product alone bit for bit: weights of different widths, with and without a bias and
    /// GELU, with and without outlier features, on one thread, in row blocks over quantized-ahead
    /// rows and with the channels split among threads (a few rows); and through `Int8Linear`.
    #[test]
    fn shared_rows_give_each_product_alone() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for (m, k, ns) in [
            (3, 5, [7, 16, 1]),
            (10, 768, [512, 100, 48]),
            (300, 96, [200, 33, 64]),
            (700, 256, [64, 64, 64]),
        ] {
            let mut x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2.0..2.0)).collect();
            let ws: Vec<PackedWeight> = ns
                .iter()
                .map(|&n| {
                    let wf: Vec<f32> = (0..n * k).map(|_| rng.random_range(-0.2..0.2)).collect();
                    PackedWeight::quantize(&wf, n, k)
                })
                .collect();
            let bias: Vec<f32> = (0..ns[0]).map(|_| rng.random_range(-1.0..1.0)).collect();
            let eps = [
                Epilogue {
                    bias: Some(&bias),
                    gelu: false,
                },
                Epilogue {
                    bias: None,
                    gelu: true,
                },
                Epilogue::default(),
            ];
            for outliers in [false, true] {
                if outliers {
                    x[(m / 2) * k + k / 3] = 9.0;
                }
                let products: Vec<(&PackedWeight, Epilogue)> = ws.iter().zip(eps).collect();
                let got = gemm_decomposed_shared(&x, m, &products, THRESHOLD);
                for (i, (&(w, ep), g)) in products.iter().zip(&got).enumerate() {
                    let want = gemm_decomposed(&x, m, w, ep, THRESHOLD);
                    assert!(
                        g.len() == want.len()
                            && g.iter().zip(&want).all(|(p, q)| p.to_bits() == q.to_bits()),
                        "{m}×{k}, product {i} of {ns:?}, outliers {outliers}"
                    );
                }
            }
        }
        let dev = &candle_core::Device::Cpu;
        let xt = candle_core::Tensor::randn(0f32, 1.0, (2, 9, 64), dev).unwrap();
        let layers: Vec<super::super::Int8Linear> = [64, 32, 64]
            .iter()
            .map(|&n| {
                let w = candle_core::Tensor::randn(0f32, 0.1, (n, 64), dev).unwrap();
                let b = candle_core::Tensor::randn(0f32, 0.1, n, dev).unwrap();
                super::super::Int8Linear::new(&w, Some(&b)).unwrap()
            })
            .collect();
        let refs: Vec<&super::super::Int8Linear> = layers.iter().collect();
        let shared = super::super::Int8Linear::forward_shared(&xt, &refs).unwrap();
        for (l, s) in layers.iter().zip(&shared) {
            let alone = l.forward(&xt).unwrap();
            assert_eq!(s.dims(), alone.dims());
            let (s, a): (Vec<f32>, Vec<f32>) = (
                s.flatten_all().unwrap().to_vec1().unwrap(),
                alone.flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert!(s.iter().zip(&a).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
        let wrong = candle_core::Tensor::zeros((2, 9, 63), candle_core::DType::F32, dev).unwrap();
        assert!(super::super::Int8Linear::forward_shared(&wrong, &refs).is_err());
    }

    /// A large input is scanned by every thread: outliers planted in the first, a middle and
    /// the last row are all found, values of exactly ± the threshold too, and a NaN is none;
    /// every row's range is its [`min_max`].
    #[test]
    fn every_row_of_a_large_input_is_scanned() {
        let (m, k) = (1000, 97);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        x[3] = -6.0;
        x[(m / 2) * k + 50] = 7.0;
        x[(m / 3) * k + 60] = THRESHOLD;
        x[(m - 1) * k + 96] = 100.0;
        x[(m - 2) * k + 10] = f32::NAN;
        let (cols, ranges) = scan(&x, k, THRESHOLD);
        assert_eq!(cols, vec![3, 50, 60, 96]);
        assert_eq!(outlier_columns(&x, k, THRESHOLD), cols);
        for (row, range) in x.chunks_exact(k).zip(&ranges) {
            let want = min_max(row);
            assert_eq!(
                (range.0.to_bits(), range.1.to_bits()),
                (want.0.to_bits(), want.1.to_bits())
            );
        }
    }

    /// Without outliers the decomposed product takes the scan's row ranges, and gives the plain
    /// product's bits, on one thread and on the pool.
    #[test]
    fn the_scans_row_ranges_give_the_plain_product() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for (m, k, n) in [(7, 33, 20), (500, 97, 40)] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-3.0..2.0)).collect();
            let wf: Vec<f32> = (0..n * k).map(|_| rng.random_range(-0.1..0.1)).collect();
            let w = PackedWeight::quantize(&wf, n, k);
            let mut plain = vec![0f32; m * n];
            gemm(&x, m, &w, None, &mut plain);
            let mixed = gemm_decomposed(&x, m, &w, Epilogue::default(), THRESHOLD);
            assert!(
                plain
                    .iter()
                    .zip(&mixed)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{m}×{k}·{n}"
            );
        }
    }
}
