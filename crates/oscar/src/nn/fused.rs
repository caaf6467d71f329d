//! Fused CPU kernels with hand-written backward passes for the element-wise work of a BERT layer:
//! LayerNorm, the attention softmax (scale + additive mask + softmax in one pass) and erf-GELU.
//!
//! The composite versions in [`super::composite`] record 6–20 candle ops each (one allocation and one
//! pass over memory per op, more in the backward); these record one op whose backward is another
//! single pass. Candle's own fused `layer_norm` / `softmax_last_dim` have no backward
//! (rust-stack.md §4.1), which is why these exist. Rows are spread over candle's worker pool, so
//! they use the same threads as the matmuls. Numerics: the reference's (torch LayerNorm with biased
//! variance, max-shifted softmax, erf-GELU; `exp` and `erf` from [`super::vmath`], PyTorch's CPU
//! formulas); tests compare every forward and gradient with the composite ops.

use super::par::{Out, PARALLEL_MIN_ELEMS};
use super::sgemm::{sgemm, sgemm_epilogue_new, sgemm_serial_fresh, Epilogue, View};
use super::vmath;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};

/// Applies a custom op, recording its backward unless a [`super::NoGrad`] is alive.
fn op1<C: CustomOp1 + Send + Sync + 'static>(x: &Tensor, c: C) -> Result<Tensor> {
    if super::grad_enabled() {
        x.apply_op1(c)
    } else {
        x.apply_op1_no_bwd(&c)
    }
}

fn op2<C: CustomOp2 + Send + Sync + 'static>(x: &Tensor, y: &Tensor, c: C) -> Result<Tensor> {
    if super::grad_enabled() {
        x.apply_op2(y, c)
    } else {
        x.apply_op2_no_bwd(y, &c)
    }
}

fn op3<C: CustomOp3 + Send + Sync + 'static>(
    x: &Tensor,
    y: &Tensor,
    z: &Tensor,
    c: C,
) -> Result<Tensor> {
    if super::grad_enabled() {
        x.apply_op3(y, z, c)
    } else {
        x.apply_op3_no_bwd(y, z, &c)
    }
}

/// Whether the fused CPU kernels can run on these tensors (f32 on the CPU, and not switched off
/// by [`composite_only`]); elsewhere the same function runs as candle's composite ops
/// ([`super::composite`]), which every device supports.
pub(crate) fn fused_path(ts: &[&Tensor]) -> bool {
    !COMPOSITE_ONLY.with(|c| c.get())
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

thread_local! {
    static COMPOSITE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the composite ops in place of the fused kernels on this thread: what a GPU
/// device runs, checked on the CPU against the fused path.
pub fn composite_only<T>(f: impl FnOnce() -> T) -> T {
    let before = COMPOSITE_ONLY.with(|c| c.replace(true));
    let out = f();
    COMPOSITE_ONLY.with(|c| c.set(before));
    out
}

fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{op}: only f32 tensors are supported")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: expected a contiguous tensor"),
    }
}

/// [`f32_data`] of a three-input op's operands, in order.
fn f32_data3<'a>(
    op: &str,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
) -> Result<(&'a [f32], &'a [f32], &'a [f32])> {
    Ok((
        f32_data(s1, l1, op)?,
        f32_data(s2, l2, op)?,
        f32_data(s3, l3, op)?,
    ))
}

/// Calls `f(row, out_row)` for every row of width `width`, in parallel when the tensor is large.
/// Each row is zeroed just before `f` gets it, while it is in cache: zeroing the whole output
/// first would be a pass over memory of its own.
fn for_each_row(rows: usize, width: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    // SAFETY: the closure writes its row (zeroes) before anything reads it.
    unsafe {
        for_each_row_written(rows, width, |r, p| {
            std::ptr::write_bytes(p, 0, width);
            f(r, std::slice::from_raw_parts_mut(p, width))
        })
    }
}

/// [`for_each_row`] for row functions that write every value of their row themselves:
/// `f(row, out)` gets the row's first value's address, in a buffer that is not zeroed.
///
/// # Safety
/// `f(row, out)` must write all `width` values at `out`, and read none before writing it.
unsafe fn for_each_row_written(
    rows: usize,
    width: usize,
    f: impl Fn(usize, *mut f32) + Sync,
) -> Vec<f32> {
    let len = rows * width;
    let mut out = Vec::<f32>::with_capacity(len);
    let ptr = Out(out.as_mut_ptr());
    // SAFETY: row `r` lies inside the capacity and no other call touches it.
    let row = |r: usize| f(r, unsafe { ptr.at(r * width) });
    if len < PARALLEL_MIN_ELEMS {
        (0..rows).for_each(row);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(rows, |range| range.for_each(&row));
    }
    // SAFETY: `f` wrote every row (this function's contract; `execute_chunked` returns when all
    // rows are done).
    unsafe { out.set_len(len) };
    out
}

fn mean_rstd(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = vmath::lane_sum(x, |v| v) / n;
    let var = vmath::lane_sum(x, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// One row of [`layer_norm`], in place.
fn layer_norm_in_place(o: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let (mean, rstd) = mean_rstd(o, eps);
    for i in 0..o.len() {
        o[i] = (o[i] - mean) * rstd * w[i] + b[i];
    }
}

/// `layer_norm(x + residual)`: BERT's residual connections (HF `BertSelfOutput`, `BertOutput`).
/// With no backward to record ([`super::NoGrad`]) the sum is formed row by row in the output, in
/// cache, not as a tensor of its own written and read back; the values are the same as the two
/// ops' (tested).
pub fn add_layer_norm(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    if super::grad_enabled() || !fused_path(&[x, residual, weight, bias]) {
        return layer_norm(&x.add(residual)?, weight, bias, eps);
    }
    if x.dims() != residual.dims() {
        bail!(
            "add + layer norm: input {:?} and residual {:?} differ",
            x.dims(),
            residual.dims()
        );
    }
    let h = x.dims().last().copied().unwrap_or(1);
    let (weight, bias) = (weight.flatten_all()?, bias.flatten_all()?);
    if weight.elem_count() != h || bias.elem_count() != h {
        bail!(
            "add + layer norm: weight/bias of {} / {} for width {h}",
            weight.elem_count(),
            bias.elem_count()
        );
    }
    op2(
        &x.contiguous()?,
        &residual.contiguous()?,
        AddLayerNormOp {
            weight: weight.to_vec1()?,
            bias: bias.to_vec1()?,
            eps: eps as f32,
        },
    )
}

/// The forward of [`add_layer_norm`] (inference only: it has no backward).
struct AddLayerNormOp {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl CustomOp2 for AddLayerNormOp {
    fn name(&self) -> &'static str {
        "oscar-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, r) = (
            f32_data(s1, l1, self.name())?,
            f32_data(s2, l2, self.name())?,
        );
        let h = self.weight.len();
        let out = for_each_row(x.len() / h.max(1), h, |i, o| {
            let rows = i * h..(i + 1) * h;
            for ((o, a), b) in o.iter_mut().zip(&x[rows.clone()]).zip(&r[rows]) {
                *o = a + b;
            }
            layer_norm_in_place(o, &self.weight, &self.bias, self.eps);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `torch.nn.LayerNorm` over the last dimension: `(x − mean)/sqrt(var + eps)·w + b`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused_path(&[x, weight, bias]) {
        return super::composite::layer_norm(x, weight, bias, eps);
    }
    op3(
        &x.contiguous()?,
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNormOp { eps: eps as f32 },
    )
}

struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "oscar-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = f32_data3(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let h = l1.dims().last().copied().unwrap_or(1);
        if w.len() != h || b.len() != h {
            bail!(
                "layer norm: weight/bias of {} / {} for width {h}",
                w.len(),
                b.len()
            );
        }
        let out = for_each_row(x.len() / h.max(1), h, |r, o| {
            o.copy_from_slice(&x[r * h..(r + 1) * h]);
            layer_norm_in_place(o, w, b, self.eps);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &grad, &LayerNormGradInput { eps: self.eps })?;
        let h = w.elem_count();
        let dwdb = x.apply_op2_no_bwd(&grad, &LayerNormGradParams { eps: self.eps })?;
        let dw = dwdb.narrow(0, 0, h)?.reshape(w.shape())?;
        let db = dwdb.narrow(0, h, h)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// dx = rstd·(g·w − mean(g·w) − x̂·mean(g·w·x̂)).
struct LayerNormGradInput {
    eps: f32,
}

impl CustomOp3 for LayerNormGradInput {
    fn name(&self) -> &'static str {
        "oscar-layer-norm-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = f32_data3(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let h = w.len();
        let out = for_each_row(x.len() / h.max(1), h, |r, o| {
            let (row, gr) = (&x[r * h..(r + 1) * h], &g[r * h..(r + 1) * h]);
            let (mean, rstd) = mean_rstd(row, self.eps);
            let (mut s_gw, mut s_gwx) = (0f32, 0f32);
            for i in 0..h {
                let gw = gr[i] * w[i];
                s_gw += gw;
                s_gwx += gw * (row[i] - mean) * rstd;
            }
            let (m_gw, m_gwx) = (s_gw / h as f32, s_gwx / h as f32);
            for i in 0..h {
                let xhat = (row[i] - mean) * rstd;
                o[i] = rstd * (gr[i] * w[i] - m_gw - xhat * m_gwx);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `[dw; db]` = [Σ_rows g·x̂; Σ_rows g], as one `[2H]` vector.
struct LayerNormGradParams {
    eps: f32,
}

impl CustomOp2 for LayerNormGradParams {
    fn name(&self) -> &'static str {
        "oscar-layer-norm-grad-params"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (
            f32_data(s1, l1, self.name())?,
            f32_data(s2, l2, self.name())?,
        );
        let h = l1.dims().last().copied().unwrap_or(1);
        let rows = x.len() / h.max(1);
        // Per-thread partial sums over static row slices, added in a fixed order so results do
        // not depend on timing.
        let pool = candle_core::utils::barrier_pool();
        let parts = if rows * h < PARALLEL_MIN_ELEMS {
            1
        } else {
            pool.n_workers() + 1
        };
        let per = rows.div_ceil(parts);
        let mut sums = vec![0f32; parts * 2 * h];
        let partial = |p: usize, acc: &mut [f32]| {
            for r in p * per..rows.min((p + 1) * per) {
                let (row, gr) = (&x[r * h..(r + 1) * h], &g[r * h..(r + 1) * h]);
                let (mean, rstd) = mean_rstd(row, self.eps);
                for i in 0..h {
                    acc[i] += gr[i] * (row[i] - mean) * rstd;
                    acc[h + i] += gr[i];
                }
            }
        };
        if parts == 1 {
            partial(0, &mut sums);
        } else {
            let ptr = Out(sums.as_mut_ptr());
            pool.execute(|tid| {
                let p = ptr;
                // SAFETY: thread `tid` alone writes part `tid`; `execute` blocks until all are done.
                let acc = unsafe { std::slice::from_raw_parts_mut(p.0.add(tid * 2 * h), 2 * h) };
                partial(tid, acc);
            });
        }
        let mut out = vec![0f32; 2 * h];
        for part in sums.chunks(2 * h) {
            for (o, v) in out.iter_mut().zip(part) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(2 * h)))
    }
}

/// `torch.nn.Linear`: `y = x·Wᵀ + b` over the last dimension of `x`, `W` stored `[out, in]`. The
/// bias joins the product's sums in the kernel (no separate broadcast add); the backward is two
/// products and a column sum of the output gradient, all through [`sgemm`].
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if !fused_path(&[x, weight].into_iter().chain(bias).collect::<Vec<_>>()) {
        return super::composite::linear(x, weight, bias);
    }
    linear_op(x, weight, bias, LinearOp { gelu: false })
}

/// `gelu_erf(linear(x, W, b))`, BERT's intermediate layer. With no backward to record
/// ([`super::NoGrad`]) GELU runs on each tile of the product while it is in cache, instead of a
/// pass over the whole output; the values are the same as the two ops' (tested).
pub fn linear_gelu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if super::grad_enabled()
        || !fused_path(&[x, weight].into_iter().chain(bias).collect::<Vec<_>>())
    {
        return gelu_erf(&linear(x, weight, bias)?);
    }
    linear_op(x, weight, bias, LinearOp { gelu: true })
}

fn linear_op(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, op: LinearOp) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let dims = x.dims().to_vec();
    if dims.last() != Some(&k) {
        bail!(
            "linear: input {:?} does not end in the weight's {k} input features",
            dims
        );
    }
    let x2 = x.contiguous()?.reshape((x.elem_count() / k.max(1), k))?;
    let w = weight.contiguous()?;
    let y = match bias {
        Some(b) => {
            if b.elem_count() != n {
                bail!("linear: bias of {} for {n} output features", b.elem_count());
            }
            op3(&x2, &w, &b.contiguous()?.reshape(n)?, op)?
        }
        None => op2(&x2, &w, op)?,
    };
    let mut out = dims;
    *out.last_mut().expect("rank ≥ 1") = n;
    y.reshape(out)
}

/// The product of [`linear`], and of [`linear_gelu`] when `gelu` (forward only).
struct LinearOp {
    gelu: bool,
}
const LINEAR: &str = "oscar-linear";

impl LinearOp {
    fn forward(
        x: &[f32],
        lx: &Layout,
        w: &[f32],
        lw: &Layout,
        b: Option<&[f32]>,
        gelu: bool,
    ) -> Result<(CpuStorage, Shape)> {
        let ((m, k), (n, _)) = (lx.shape().dims2()?, lw.shape().dims2()?);
        let y = sgemm_epilogue_new(
            View::new(x, m, k),
            View::new(w, n, k).t(),
            Epilogue { bias: b, gelu },
        );
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn backward(&self, x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.gelu {
            // `linear_gelu` records no backward (it only fuses when gradients are off).
            bail!("linear with GELU: no backward (inference only)");
        }
        let g = grad.contiguous()?;
        let dx = g.apply_op2_no_bwd(
            w,
            &Product {
                transpose_lhs: false,
            },
        )?;
        let dw = g.apply_op2_no_bwd(
            x,
            &Product {
                transpose_lhs: true,
            },
        )?;
        Ok((dx, dw))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        LINEAR
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::forward(
            f32_data(s1, l1, LINEAR)?,
            l1,
            f32_data(s2, l2, LINEAR)?,
            l2,
            None,
            self.gelu,
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.backward(x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        LINEAR
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let b = f32_data(s3, l3, LINEAR)?;
        Self::forward(
            f32_data(s1, l1, LINEAR)?,
            l1,
            f32_data(s2, l2, LINEAR)?,
            l2,
            Some(b),
            self.gelu,
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.backward(x, w, grad)?;
        let db = grad.contiguous()?.apply_op1_no_bwd(&ColumnSum)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `lhs·rhs` or `lhsᵀ·rhs` of two contiguous matrices.
struct Product {
    transpose_lhs: bool,
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "oscar-product"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (
            f32_data(s1, l1, self.name())?,
            f32_data(s2, l2, self.name())?,
        );
        let ((r1, c1), (r2, c2)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        let a = if self.transpose_lhs {
            View::new(a, r1, c1).t()
        } else {
            View::new(a, r1, c1)
        };
        if a.cols != r2 {
            bail!("product: {}×{} · {r2}×{c2}", a.rows, a.cols);
        }
        let mut c = vec![0f32; a.rows * c2];
        sgemm(a, View::new(b, r2, c2), &mut c, false);
        Ok((CpuStorage::F32(c), Shape::from((a.rows, c2))))
    }
}

/// Σ over rows of a contiguous `[M, N]` matrix → `[N]` (the bias gradient).
struct ColumnSum;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "oscar-column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32_data(s, l, self.name())?;
        let (m, n) = l.shape().dims2()?;
        let mut out = vec![0f32; n];
        for row in g.chunks(n.max(1)).take(m) {
            for (o, v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }
}

/// `a·b` (or `a·bᵀ` with `transpose_b`) for every leading index of 3-D or 4-D tensors
/// (`[.., M, K]` · `[.., K, N]` or `[.., N, K]`): the attention products `q·kᵀ` and `p·v`. The
/// many small products are spread over the cores one per thread (candle's batched matmul runs
/// each on all threads in turn, and waking them costs more than a 120×64×120 product).
pub fn batched_matmul(a: &Tensor, b: &Tensor, transpose_b: bool) -> Result<Tensor> {
    if !fused_path(&[a, b]) {
        return super::composite::batched_matmul(a, b, transpose_b);
    }
    op2(
        &a.contiguous()?,
        &b.contiguous()?,
        BatchedProduct {
            ta: false,
            tb: transpose_b,
        },
    )
}

/// `op(a)·op(b)` per batch index, `op` transposing where asked.
struct BatchedProduct {
    ta: bool,
    tb: bool,
}

impl CustomOp2 for BatchedProduct {
    fn name(&self) -> &'static str {
        "oscar-batched-product"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (
            f32_data(s1, l1, self.name())?,
            f32_data(s2, l2, self.name())?,
        );
        let (da, db) = (l1.dims(), l2.dims());
        if da.len() < 3 || da.len() != db.len() || da[..da.len() - 2] != db[..db.len() - 2] {
            bail!(
                "batched product: shapes {da:?} and {db:?} do not share their leading dimensions"
            );
        }
        let r = da.len();
        let batch: usize = da[..r - 2].iter().product();
        let (ar, ac, br, bc) = (da[r - 2], da[r - 1], db[r - 2], db[r - 1]);
        fn view(d: &[f32], rows: usize, cols: usize, t: bool) -> View<'_> {
            if t {
                View::new(d, rows, cols).t()
            } else {
                View::new(d, rows, cols)
            }
        }
        let (m, k) = if self.ta { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if self.tb { (bc, br) } else { (br, bc) };
        if k != k2 {
            bail!("batched product: inner dimensions {k} and {k2} differ ({da:?}, {db:?})");
        }
        // SAFETY: the product writes all m·n values of its row, reading none.
        let out = unsafe {
            for_each_row_written(batch, m * n, |i, o| {
                let av = view(&a[i * ar * ac..(i + 1) * ar * ac], ar, ac, self.ta);
                let bv = view(&b[i * br * bc..(i + 1) * br * bc], br, bc, self.tb);
                sgemm_serial_fresh(av, bv, Out(o), bv.cols);
            })
        };
        let mut shape = da[..r - 2].to_vec();
        shape.extend([m, n]);
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if self.ta {
            bail!("batched product: no backward for a transposed left operand");
        }
        let g = grad.contiguous()?;
        let p = |ta, tb| BatchedProduct { ta, tb };
        // C = A·B: dA = dC·Bᵀ, dB = Aᵀ·dC.  C = A·Bᵀ: dA = dC·B, dB = dCᵀ·A.
        let (da, db) = if self.tb {
            (
                g.apply_op2_no_bwd(b, &p(false, false))?,
                g.apply_op2_no_bwd(a, &p(true, false))?,
            )
        } else {
            (
                g.apply_op2_no_bwd(b, &p(false, true))?,
                a.apply_op2_no_bwd(&g, &p(true, false))?,
            )
        };
        Ok((Some(da), Some(db)))
    }
}

/// Attention probabilities `softmax(scores·scale + mask)` over the last dimension. `scores` is
/// `[B, nh, Lq, Lk]`; `mask` (additive, no gradient) is `[B, 1, 1|Lq, Lk]` or absent.
pub fn attention_softmax(scores: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    if !fused_path(&[scores].into_iter().chain(mask).collect::<Vec<_>>()) {
        return super::composite::attention_softmax(scores, mask, scale);
    }
    let scores = scores.contiguous()?;
    let (b, _, lq, lk) = scores.dims4()?;
    let mask = match mask {
        Some(m) => {
            let (mb, one, mq, mk) = m.dims4()?;
            if mb != b || one != 1 || (mq != 1 && mq != lq) || mk != lk {
                bail!(
                    "attention mask {:?} does not fit scores {:?}",
                    m.dims(),
                    scores.dims()
                );
            }
            m.contiguous()?
        }
        None => Tensor::zeros((b, 1, 1, lk), scores.dtype(), scores.device())?,
    };
    op2(
        &scores,
        &mask.detach(),
        SoftmaxOp {
            scale: scale as f32,
        },
    )
}

/// Softmax over the last dimension of any tensor (no mask, no scale).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if !fused_path(&[x]) {
        return super::composite::softmax(x);
    }
    let dims = x.dims().to_vec();
    let lk = *dims.last().unwrap_or(&1);
    let rows = x.elem_count() / lk.max(1);
    let y = attention_softmax(&x.reshape((1, 1, rows, lk))?, None, 1.0)?;
    y.reshape(dims)
}

/// `softmax(q·kᵀ·scale + mask)·v` for every batch row and head, read from and written to the
/// hidden layout `[B, L, H]` (HF `BertSelfAttention` after its projections, before its dropout
/// on the probabilities, which inference leaves out). Each (row, head) is one work item: its
/// scores stay in a buffer in cache through the softmax and the second product, and the heads
/// are read and written in place, so neither the split into heads, the scores, the
/// probabilities nor the merge back are tensors of their own. The same products (the AVX-512
/// kernel reads `q` and `v` in place either way) and the same softmax as [`batched_matmul`] and
/// [`attention_softmax`] (tested). `q` is `[B, Lq, H]`, `k` and `v` `[B, Lk, H]`, `mask` the
/// additive `[B, 1, 1|Lq, Lk]`.
///
/// Returns `None` where it does not run: with a backward to record, or off the fused CPU path;
/// the caller then runs the split-heads ops.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Option<Tensor>> {
    if super::grad_enabled() || !fused_path(&[q, k, v, mask]) {
        return Ok(None);
    }
    let (b, lq, h) = q.dims3()?;
    let (bk, lk, hk) = k.dims3()?;
    let (mb, one, mq, mk) = mask.dims4()?;
    if heads == 0
        || h % heads != 0
        || (bk, hk) != (b, h)
        || v.dims() != k.dims()
        || (mb, one, mk) != (b, 1, lk)
        || (mq != 1 && mq != lq)
    {
        bail!(
            "attention: q {:?}, k {:?}, v {:?}, mask {:?} with {heads} heads do not fit",
            q.dims(),
            k.dims(),
            v.dims(),
            mask.dims()
        );
    }
    let op = AttentionOp {
        seqs: (0..b).map(|i| ((i * lq, lq), (i * lk, lk))).collect(),
        mask: Some((mask.flatten_all()?.to_vec1::<f32>()?, mq)),
        heads,
        scale: scale as f32,
    };
    Ok(Some(q.contiguous()?.apply_op3_no_bwd(
        &k.contiguous()?,
        &v.contiguous()?,
        &op,
    )?))
}

/// Where one sequence lies in the flat rows of a packed batch: its queries' first row and
/// count, and its keys' (and values') first row and count.
pub type PackedSeq = ((usize, usize), (usize, usize));

/// [`attention`] over a packed batch with no padding (TEI's unpadded `cu_seq_lengths` models,
/// FlashAttention's varlen): `q` is `[1, Nq, H]`, `k` and `v` `[1, Nk, H]`, the sequences stored
/// one after another, and each sequence's queries attend to all of its keys and to no other
/// sequence's. Inference only, on the fused CPU path (the caller checks [`packing_runs`]).
pub fn attention_packed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seqs: &[PackedSeq],
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    if !packing_runs(&[q, k, v]) {
        bail!("packed attention runs on the CPU in f32 without a backward only")
    }
    let (one, nq, h) = q.dims3()?;
    let (onek, nk, hk) = k.dims3()?;
    let fits = |&((qo, ql), (ko, kl)): &PackedSeq| qo + ql <= nq && ko + kl <= nk && kl > 0;
    // Query rows in order and apart: each output row is written by one sequence only.
    let apart = seqs.windows(2).all(|w| w[0].0 .0 + w[0].0 .1 <= w[1].0 .0);
    if heads == 0
        || h % heads != 0
        || (one, onek, hk) != (1, 1, h)
        || v.dims() != k.dims()
        || !seqs.iter().all(fits)
        || !apart
    {
        bail!(
            "packed attention: q {:?}, k {:?}, v {:?} with {heads} heads do not fit sequences \
             {seqs:?} (expected each inside q and k with at least one key, queries in row order)",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let op = AttentionOp {
        seqs: seqs.to_vec(),
        mask: None,
        heads,
        scale: scale as f32,
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

/// Whether [`attention_packed`] runs on these tensors: no backward to record, the fused f32 CPU
/// path.
pub fn packing_runs(ts: &[&Tensor]) -> bool {
    !super::grad_enabled() && fused_path(ts)
}

/// The forward of [`attention`] and [`attention_packed`] (inference only).
struct AttentionOp {
    /// Each sequence's queries and keys ([`PackedSeq`]); a padded batch row is one sequence.
    seqs: Vec<PackedSeq>,
    /// The additive mask `[B, mask_rows, Lk]` of a padded batch, and its `mask_rows` (1 or Lq).
    mask: Option<(Vec<f32>, usize)>,
    heads: usize,
    scale: f32,
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "oscar-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = f32_data3(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let h = *l1.dims().last().unwrap_or(&0);
        let q_rows = l1.shape().elem_count() / h.max(1);
        let (heads, d) = (self.heads, h / self.heads);
        let most = |f: fn(&PackedSeq) -> usize| self.seqs.iter().map(f).max().unwrap_or(0);
        let (max_q, max_k) = (most(|s| s.0 .1), most(|s| s.1 .1));
        // Rows no sequence covers (none in a padded batch) are zero; the sequences' query rows
        // do not overlap (checked by the callers), so covering them all means every row is
        // written below.
        let covered = self.seqs.iter().map(|s| s.0 .1).sum::<usize>() == q_rows;
        let mut out = if covered {
            Vec::<f32>::with_capacity(q_rows * h)
        } else {
            vec![0f32; q_rows * h]
        };
        let dst = Out(out.as_mut_ptr());
        // One (sequence, head) after another, with this thread's buffers.
        let items = |range: std::ops::Range<usize>| {
            let mut probs = vec![0f32; max_q * max_k];
            for item in range {
                let (si, hi) = (item / heads, item % heads);
                let ((q0, lq), (k0, lk)) = self.seqs[si];
                // This head's first feature in the sequence's first query and first key.
                let (qo, ko) = (q0 * h + hi * d, k0 * h + hi * d);
                let qv = View {
                    data: &q[qo..],
                    rows: lq,
                    cols: d,
                    rs: h,
                    cs: 1,
                };
                let kt = View {
                    data: &k[ko..],
                    rows: d,
                    cols: lk,
                    rs: 1,
                    cs: h,
                };
                let vv = View {
                    data: &v[ko..],
                    rows: lk,
                    cols: d,
                    rs: h,
                    cs: 1,
                };
                let probs = &mut probs[..lq * lk];
                // SAFETY: `probs` holds lq·lk values.
                unsafe { sgemm_serial_fresh(qv, kt, Out(probs.as_mut_ptr()), lk) };
                for (r, row) in probs.chunks_exact_mut(lk).enumerate() {
                    let mrow = self.mask.as_ref().map(|(mask, mask_rows)| {
                        let m = if *mask_rows == 1 { 0 } else { r };
                        &mask[(si * mask_rows + m) * lk..][..lk]
                    });
                    vmath::scaled_softmax_in_place(row, self.scale, mrow);
                }
                // The context goes straight to this head's columns of the sequence's rows.
                // SAFETY: queries q0.. × this head's d features lie inside the output, rows h
                // apart, and only this item writes them (the sequences' query rows do not
                // overlap).
                unsafe {
                    sgemm_serial_fresh(
                        View::new(probs, lq, lk),
                        vv,
                        Out(dst.at(q0 * h + hi * d)),
                        h,
                    )
                };
            }
        };
        let work: usize = self.seqs.iter().map(|s| s.0 .1 * s.1 .1).sum::<usize>() * h;
        if work < 1 << 18 {
            items(0..self.seqs.len() * heads);
        } else {
            candle_core::utils::barrier_pool().execute_chunked(self.seqs.len() * heads, items);
        }
        // SAFETY: every row was written above when `covered`, and is zero otherwise.
        unsafe { out.set_len(q_rows * h) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

struct SoftmaxOp {
    scale: f32,
}

impl CustomOp2 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "oscar-attention-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (s, m) = (
            f32_data(s1, l1, self.name())?,
            f32_data(s2, l2, self.name())?,
        );
        let &[_, nh, lq, lk] = l1.dims() else {
            bail!("attention softmax: scores must be 4-D")
        };
        let mq = l2.dims()[2];
        // SAFETY: the first loop writes all `lk` values of the row before any is read.
        let out = unsafe {
            for_each_row_written(s.len() / lk.max(1), lk, |r, o| {
                let (bi, q) = (r / (nh * lq), r % lq);
                let mrow = &m[(bi * mq + if mq == 1 { 0 } else { q }) * lk..][..lk];
                std::ptr::copy_nonoverlapping(s[r * lk..].as_ptr(), o, lk);
                let row = std::slice::from_raw_parts_mut(o, lk);
                vmath::scaled_softmax_in_place(row, self.scale, Some(mrow));
            })
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _s: &Tensor,
        _m: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let ds = res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad { scale: self.scale })?;
        Ok((Some(ds), None))
    }
}

/// ds = scale·y·(g − Σ g·y).
struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "oscar-attention-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (
            f32_data(s1, l1, self.name())?,
            f32_data(s2, l2, self.name())?,
        );
        let lk = l1.dims().last().copied().unwrap_or(1);
        let out = for_each_row(y.len() / lk.max(1), lk, |r, o| {
            let (yr, gr) = (&y[r * lk..(r + 1) * lk], &g[r * lk..(r + 1) * lk]);
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for i in 0..lk {
                o[i] = self.scale * yr[i] * (gr[i] - dot);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `log_softmax` over the last dimension (max-shifted), as one op; backward
/// `g − softmax(x)·Σg` from the saved result.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    if !fused_path(&[x]) {
        return super::composite::log_softmax(x);
    }
    op1(&x.contiguous()?, LogSoftmaxOp)
}

struct LogSoftmaxOp;

impl CustomOp1 for LogSoftmaxOp {
    fn name(&self) -> &'static str {
        "oscar-log-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        let n = l.dims().last().copied().unwrap_or(1);
        let out = for_each_row(x.len() / n.max(1), n, |r, o| {
            let row = &x[r * n..(r + 1) * n];
            let max = vmath::lane_max(row);
            for i in 0..n {
                o[i] = row[i] - max;
            }
            vmath::exp_in_place(o);
            let lse = vmath::lane_sum(o, |v| v).ln() + max;
            for i in 0..n {
                o[i] = row[i] - lse;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.apply_op2_no_bwd(&grad.contiguous()?, &LogSoftmaxGrad)?,
        ))
    }
}

struct LogSoftmaxGrad;

impl CustomOp2 for LogSoftmaxGrad {
    fn name(&self) -> &'static str {
        "oscar-log-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (
            f32_data(s1, l1, self.name())?,
            f32_data(s2, l2, self.name())?,
        );
        let n = l1.dims().last().copied().unwrap_or(1);
        let out = for_each_row(y.len() / n.max(1), n, |r, o| {
            let (yr, gr) = (&y[r * n..(r + 1) * n], &g[r * n..(r + 1) * n]);
            let total: f32 = gr.iter().sum();
            o.copy_from_slice(yr);
            vmath::exp_in_place(o);
            for i in 0..n {
                o[i] = gr[i] - o[i] * total;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `[B, A, C, d]` → `[B, C, A, d]` (contiguous): attention's split of the hidden features into
/// heads and its merge back. candle's `transpose(1, 2).contiguous()` copies on the calling thread
/// alone; this copies `d`-long rows on every thread. Its backward is the same swap.
pub fn swap_middle_axes(x: &Tensor) -> Result<Tensor> {
    if !fused_path(&[x]) {
        return x.transpose(1, 2)?.contiguous();
    }
    x.dims4()?;
    op1(&x.contiguous()?, SwapMiddleAxes)
}

struct SwapMiddleAxes;

impl CustomOp1 for SwapMiddleAxes {
    fn name(&self) -> &'static str {
        "oscar-swap-middle-axes"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        let (b, a, c, d) = l.shape().dims4()?;
        // Output row (bi, ci, ai) is input row (bi, ai, ci).
        // SAFETY: each row is copied whole, `d` values, from inside `x`.
        let out = unsafe {
            for_each_row_written(b * c * a, d, |r, o| {
                let (bi, ci, ai) = (r / (c * a), r / a % c, r % a);
                let src = &x[((bi * a + ai) * c + ci) * d..][..d];
                std::ptr::copy_nonoverlapping(src.as_ptr(), o, d);
            })
        };
        Ok((CpuStorage::F32(out), Shape::from((b, c, a, d))))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(swap_middle_axes(grad)?))
    }
}

/// erf-GELU `0.5·x·(1 + erf(x/√2))` (BERT's `gelu`), with its exact derivative as backward.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !fused_path(&[x]) {
        return super::composite::gelu_erf(x);
    }
    op1(&x.contiguous()?, GeluOp)
}

struct GeluOp;

/// Rows of this many elements for the element-wise kernels (any split works; this keeps chunks
/// large enough for the pool and small enough to balance).
const ELEMWISE_ROW: usize = 4096;

/// `f(input chunk, output chunk)` over chunks of [`ELEMWISE_ROW`] elements, in parallel.
fn map_chunks(n: usize, f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync) -> Vec<f32> {
    let rows = n.div_ceil(ELEMWISE_ROW);
    let mut out = for_each_row(rows, ELEMWISE_ROW, |r, o| {
        let range = r * ELEMWISE_ROW..((r + 1) * ELEMWISE_ROW).min(n);
        let len = range.len();
        f(range, &mut o[..len]);
    });
    out.truncate(n);
    out
}

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "oscar-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        Ok((
            CpuStorage::F32(map_chunks(x.len(), |r, o| vmath::gelu_slice(&x[r], o))),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)?))
    }
}

struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "oscar-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (
            f32_data(s1, l1, self.name())?,
            f32_data(s2, l2, self.name())?,
        );
        Ok((
            CpuStorage::F32(map_chunks(x.len(), |r, o| {
                vmath::gelu_grad_slice(&x[r.clone()], &g[r], o)
            })),
            l1.shape().clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The composite, op-by-op versions (every op has candle's own backward): the oracle.
    use crate::nn::composite;
    use composite as ops;
    use rand::{Rng, SeedableRng};

    fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (rng.random::<f32>() - 0.5) * 2.0 * scale)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d: f32 = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let m: f32 = b.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        d / m.max(1e-12)
    }

    /// Forward and every gradient of `fused` equal those of `composite` for a random upstream
    /// gradient, on a tensor small enough for one thread and one large enough for the pool.
    fn check(
        vars: &[Var],
        fused: &dyn Fn(&[Tensor]) -> Tensor,
        composite: &dyn Fn(&[Tensor]) -> Tensor,
    ) {
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (yf, yc) = (fused(&ts), composite(&ts));
        assert!(
            max_rel(&yf, &yc) < 1e-5,
            "forward differs: {}",
            max_rel(&yf, &yc)
        );
        let up = random(yf.dims(), 99, 1.0);
        let gf = (yf * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (yc * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (a, b) = (
                gf.get(v.as_tensor()).expect("fused gradient"),
                gc.get(v.as_tensor()).expect("composite gradient"),
            );
            assert!(
                max_rel(a, b) < 2e-5,
                "gradient {i} differs: {}",
                max_rel(a, b)
            );
        }
    }

    #[test]
    fn layer_norm_matches_the_composite_op_forward_and_backward() {
        for (rows, h) in [(6, 16), (700, 96)] {
            let x = Var::from_tensor(&random(&[2, rows / 2, h], 1, 3.0)).unwrap();
            let w = Var::from_tensor(&(random(&[h], 2, 0.5) + 1.0).unwrap()).unwrap();
            let b = Var::from_tensor(&random(&[h], 3, 0.5)).unwrap();
            check(
                &[x, w, b],
                &|t| layer_norm(&t[0], &t[1], &t[2], 1e-12).unwrap(),
                &|t| ops::layer_norm(&t[0], &t[1], &t[2], 1e-12).unwrap(),
            );
        }
    }

    #[test]
    fn attention_softmax_matches_scale_mask_softmax() {
        for (b, nh, l, per_query) in [(2, 2, 5, false), (3, 4, 60, true)] {
            let s = Var::from_tensor(&random(&[b, nh, l, l], 4, 4.0)).unwrap();
            let mq = if per_query { l } else { 1 };
            let keep = random(&[b, 1, mq, l], 5, 1.0)
                .ge(-0.5)
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap();
            let mask = keep.affine(10000.0, -10000.0).unwrap();
            let scale = 0.125;
            check(
                &[s],
                &|t| attention_softmax(&t[0], Some(&mask), scale).unwrap(),
                &|t| ops::softmax(&(&t[0] * scale).unwrap().broadcast_add(&mask).unwrap()).unwrap(),
            );
        }
        let x = Var::from_tensor(&random(&[3, 7], 6, 2.0)).unwrap();
        check(&[x], &|t| softmax(&t[0]).unwrap(), &|t| {
            ops::softmax(&t[0]).unwrap()
        });
    }

    #[test]
    fn log_softmax_matches_the_composite_op() {
        for (rows, n) in [(3, 7), (40, 3000)] {
            let x = Var::from_tensor(&random(&[rows, n], 13, 6.0)).unwrap();
            check(&[x], &|t| log_softmax(&t[0]).unwrap(), &|t| {
                ops::log_softmax(&t[0]).unwrap()
            });
        }
    }

    #[test]
    fn gelu_matches_candle_gelu_erf_forward_and_backward() {
        for n in [37, 50_000] {
            let x = Var::from_tensor(&random(&[n], 7, 5.0)).unwrap();
            check(&[x], &|t| gelu_erf(&t[0]).unwrap(), &|t| {
                t[0].gelu_erf().unwrap()
            });
        }
    }

    #[test]
    fn linear_matches_matmul_plus_bias_forward_and_backward() {
        for (rows, k, n) in [(5, 7, 3), (300, 96, 160)] {
            let x = Var::from_tensor(&random(&[2, rows / 2 + 1, k], 14, 1.0)).unwrap();
            let w = Var::from_tensor(&random(&[n, k], 15, 0.3)).unwrap();
            let b = Var::from_tensor(&random(&[n], 16, 0.3)).unwrap();
            let composite = |t: &[Tensor]| t[0].broadcast_matmul(&t[1].t().unwrap()).unwrap();
            check(
                &[x.clone(), w.clone(), b],
                &|t| linear(&t[0], &t[1], Some(&t[2])).unwrap(),
                &|t| composite(t).broadcast_add(&t[2]).unwrap(),
            );
            check(
                &[x, w],
                &|t| linear(&t[0], &t[1], None).unwrap(),
                &composite,
            );
        }
    }

    /// `linear_gelu` without gradients (GELU on the product's tiles) gives the bits of `linear`
    /// then `gelu_erf`; with gradients it is those two ops, and trains through both.
    #[test]
    fn linear_gelu_equals_linear_then_gelu() {
        for (rows, k, n) in [(5, 7, 3), (300, 96, 160)] {
            let x = Var::from_tensor(&random(&[2, rows / 2 + 1, k], 17, 1.0)).unwrap();
            let w = Var::from_tensor(&random(&[n, k], 18, 0.3)).unwrap();
            let b = Var::from_tensor(&random(&[n], 19, 0.3)).unwrap();
            let separate =
                |t: &[Tensor]| gelu_erf(&linear(&t[0], &t[1], Some(&t[2])).unwrap()).unwrap();
            let inputs = [
                x.as_tensor().clone(),
                w.as_tensor().clone(),
                b.as_tensor().clone(),
            ];
            let want: Vec<f32> = separate(&inputs).flatten_all().unwrap().to_vec1().unwrap();
            for bias in [true, false] {
                let fused = {
                    let _no_grad = super::super::NoGrad::new();
                    linear_gelu(x.as_tensor(), w.as_tensor(), bias.then_some(b.as_tensor()))
                        .unwrap()
                };
                let want = if bias {
                    want.clone()
                } else {
                    gelu_erf(&linear(x.as_tensor(), w.as_tensor(), None).unwrap())
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap()
                };
                let got: Vec<f32> = fused.flatten_all().unwrap().to_vec1().unwrap();
                assert!(got
                    .iter()
                    .zip(&want)
                    .all(|(p, q)| p.to_bits() == q.to_bits()));
            }
            check(
                &[x, w, b],
                &|t| linear_gelu(&t[0], &t[1], Some(&t[2])).unwrap(),
                &|t| separate(t),
            );
        }
    }

    /// At inference the fused residual + LayerNorm gives the bits of the add followed by the
    /// LayerNorm, one thread and the pool; with a backward to record it is those two ops (the
    /// gradients match); mismatched shapes are refused.
    #[test]
    fn add_layer_norm_equals_add_then_layer_norm() {
        for (rows, h) in [(6, 16), (700, 96)] {
            let x = Var::from_tensor(&random(&[2, rows / 2, h], 30, 3.0)).unwrap();
            let r = Var::from_tensor(&random(&[2, rows / 2, h], 31, 3.0)).unwrap();
            let w = Var::from_tensor(&random(&[h], 32, 1.0)).unwrap();
            let b = Var::from_tensor(&random(&[h], 33, 1.0)).unwrap();
            let separate =
                |t: &[Tensor]| layer_norm(&t[0].add(&t[1]).unwrap(), &t[2], &t[3], 1e-12).unwrap();
            let inputs: Vec<Tensor> = [&x, &r, &w, &b].map(|v| v.as_tensor().clone()).into();
            let want: Vec<f32> = separate(&inputs).flatten_all().unwrap().to_vec1().unwrap();
            let got = {
                let _no_grad = super::super::NoGrad::new();
                add_layer_norm(&inputs[0], &inputs[1], &inputs[2], &inputs[3], 1e-12).unwrap()
            };
            assert!(!got.track_op());
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(p, q)| p.to_bits() == q.to_bits()),
                "{rows}×{h}"
            );
            check(
                &[x, r, w, b],
                &|t| add_layer_norm(&t[0], &t[1], &t[2], &t[3], 1e-12).unwrap(),
                &|t| separate(t),
            );
        }
        let _no_grad = super::super::NoGrad::new();
        let x = random(&[2, 4], 34, 1.0);
        let w = random(&[4], 35, 1.0);
        assert!(add_layer_norm(&x, &random(&[2, 3], 36, 1.0), &w, &w, 1e-12).is_err());
        assert!(add_layer_norm(&x, &x, &random(&[3], 37, 1.0), &w, 1e-12).is_err());
    }

    /// The fused attention gives the bits of the split-heads ops (split, q·kᵀ, masked softmax,
    /// p·v, merge) for a mask per key and a mask per query, at a decoding-sized shape (the `gemm`
    /// crate's products), a small one and Oscar-B's head shape (the AVX-512 kernel); it stays off
    /// with a backward to record, and refuses shapes that do not fit.
    #[test]
    fn attention_equals_the_split_heads_ops() {
        for (b, lq, lk, nh, d) in [(2, 1, 9, 2, 8), (2, 5, 7, 2, 4), (2, 70, 120, 3, 64)] {
            let h = nh * d;
            let q = random(&[b, lq, h], 40, 1.0);
            let k = random(&[b, lk, h], 41, 1.0);
            let v = random(&[b, lk, h], 42, 1.0);
            let scale = 1.0 / (d as f64).sqrt();
            for mq in [1, lq] {
                let mask = random(&[b, 1, mq, lk], 43, 3.0);
                let _no_grad = super::super::NoGrad::new();
                let split = |x: &Tensor| swap_middle_axes(&x.reshape((b, (), nh, d))?);
                let want = (|| {
                    let s = batched_matmul(&split(&q)?, &split(&k)?, true)?;
                    let p = attention_softmax(&s, Some(&mask), scale)?;
                    swap_middle_axes(&batched_matmul(&p, &split(&v)?, false)?)?.reshape((b, lq, h))
                })()
                .unwrap();
                let got = attention(&q, &k, &v, &mask, nh, scale).unwrap().unwrap();
                assert_eq!(got.dims(), &[b, lq, h]);
                let (got, want): (Vec<f32>, Vec<f32>) = (
                    got.flatten_all().unwrap().to_vec1().unwrap(),
                    want.flatten_all().unwrap().to_vec1().unwrap(),
                );
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "b {b}, lq {lq}, lk {lk}, {nh} heads of {d}, mask rows {mq}"
                );
            }
        }
        let (q, mask) = (random(&[1, 3, 8], 44, 1.0), random(&[1, 1, 1, 3], 45, 1.0));
        assert!(attention(&q, &q, &q, &mask, 2, 1.0).unwrap().is_none());
        let _no_grad = super::super::NoGrad::new();
        assert!(attention(&q, &q, &q, &mask, 3, 1.0).is_err());
        assert!(attention(&q, &q, &q, &random(&[1, 1, 1, 4], 46, 1.0), 2, 1.0).is_err());
    }

    /// Packed attention computes, for each sequence's rows, what the padded op computes for that
    /// batch row with the padding masked out (BERT's −10000): the same up to the order of the
    /// sums' zero terms. Sequences of different lengths, one of a single key, queries that are a
    /// subset of the keys (a [CLS]-only last layer); the padded rows of the output stay zero.
    #[test]
    fn packed_attention_equals_the_padded_batch_with_its_padding_masked() {
        let (nh, d, l) = (3, 16, 37);
        let h = nh * d;
        let lens = [37usize, 1, 20, 9];
        let b = lens.len();
        let (q, k, v) = (
            random(&[b, l, h], 50, 1.0),
            random(&[b, l, h], 51, 1.0),
            random(&[b, l, h], 52, 1.0),
        );
        let mut mask = vec![-10000f32; b * l];
        for (i, &n) in lens.iter().enumerate() {
            mask[i * l..i * l + n].fill(0.0);
        }
        let mask = Tensor::from_vec(mask, (b, 1, 1, l), &Device::Cpu).unwrap();
        let scale = 1.0 / (d as f64).sqrt();
        let _no_grad = super::super::NoGrad::new();
        let padded = attention(&q, &k, &v, &mask, nh, scale).unwrap().unwrap();
        let padded: Vec<f32> = padded.flatten_all().unwrap().to_vec1().unwrap();
        let pack = |x: &Tensor, every: bool| {
            let rows: Vec<Tensor> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    x.get(i)
                        .unwrap()
                        .narrow(0, 0, if every { n } else { 1 })
                        .unwrap()
                })
                .collect();
            Tensor::cat(&rows, 0).unwrap().unsqueeze(0).unwrap()
        };
        let starts: Vec<usize> = lens
            .iter()
            .scan(0, |s, &n| Some(std::mem::replace(s, *s + n)))
            .collect();
        for every in [true, false] {
            let seqs: Vec<PackedSeq> = (0..b)
                .map(|i| {
                    let q0 = if every { starts[i] } else { i };
                    ((q0, if every { lens[i] } else { 1 }), (starts[i], lens[i]))
                })
                .collect();
            let got = attention_packed(
                &pack(&q, every),
                &pack(&k, true),
                &pack(&v, true),
                &seqs,
                nh,
                scale,
            )
            .unwrap();
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            for (i, &((q0, lq), _)) in seqs.iter().enumerate() {
                for r in 0..lq {
                    let (g, w) = (&got[(q0 + r) * h..][..h], &padded[(i * l + r) * h..][..h]);
                    let worst = g
                        .iter()
                        .zip(w)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(worst < 1e-5, "sequence {i} row {r}: {worst}");
                }
            }
        }
        // A sequence without keys, overlapping query rows, and the backward path are refused.
        let qp = pack(&q, true);
        assert!(attention_packed(&qp, &qp, &qp, &[((0, 2), (0, 0))], nh, scale).is_err());
        assert!(attention_packed(
            &qp,
            &qp,
            &qp,
            &[((0, 2), (0, 2)), ((1, 2), (0, 2))],
            nh,
            scale
        )
        .is_err());
        assert!(attention_packed(&qp, &qp, &qp, &[((0, 2), (0, 70))], nh, scale).is_err());
        drop(_no_grad);
        assert!(attention_packed(&qp, &qp, &qp, &[((0, 2), (0, 2))], nh, scale).is_err());
    }

    #[test]
    fn swap_middle_axes_matches_transpose_forward_and_backward() {
        for dims in [[1, 2, 3, 4], [2, 70, 12, 64]] {
            let x = Var::from_tensor(&random(&dims, 27, 1.0)).unwrap();
            check(
                std::slice::from_ref(&x),
                &|t| swap_middle_axes(&t[0]).unwrap(),
                &|t| t[0].transpose(1, 2).unwrap().contiguous().unwrap(),
            );
            let (want, got) = (
                x.as_tensor().transpose(1, 2).unwrap().contiguous().unwrap(),
                swap_middle_axes(x.as_tensor()).unwrap(),
            );
            assert_eq!(want.dims(), got.dims());
            assert_eq!(max_rel(&want, &got), 0.0);
        }
        assert!(swap_middle_axes(&random(&[2, 3, 4], 28, 1.0)).is_err());
    }

    #[test]
    fn batched_matmul_matches_candle_matmul_forward_and_backward() {
        for (b, h, m, k, n) in [(1, 2, 3, 4, 5), (3, 4, 30, 16, 25)] {
            let a = Var::from_tensor(&random(&[b, h, m, k], 22, 1.0)).unwrap();
            let bt = Var::from_tensor(&random(&[b, h, n, k], 23, 1.0)).unwrap();
            let bn = Var::from_tensor(&random(&[b, h, k, n], 24, 1.0)).unwrap();
            check(
                &[a.clone(), bt],
                &|t| batched_matmul(&t[0], &t[1], true).unwrap(),
                &|t| t[0].matmul(&t[1].t().unwrap()).unwrap(),
            );
            check(
                &[a, bn],
                &|t| batched_matmul(&t[0], &t[1], false).unwrap(),
                &|t| t[0].matmul(&t[1]).unwrap(),
            );
        }
        assert!(batched_matmul(
            &random(&[2, 3, 4], 25, 1.0),
            &random(&[2, 5, 4], 26, 1.0),
            false
        )
        .is_err());
        assert!(batched_matmul(
            &random(&[2, 3, 4], 25, 1.0),
            &random(&[3, 4, 4], 26, 1.0),
            false
        )
        .is_err());
    }

    #[test]
    fn no_grad_scopes_record_no_backward() {
        let x = Var::from_tensor(&random(&[4, 8], 20, 1.0)).unwrap();
        let w = Var::from_tensor(&random(&[3, 8], 21, 1.0)).unwrap();
        let forward = || gelu_erf(&linear(x.as_tensor(), w.as_tensor(), None).unwrap()).unwrap();
        assert!(forward().track_op(), "recorded outside a NoGrad scope");
        {
            let _g = crate::nn::NoGrad::new();
            {
                let _inner = crate::nn::NoGrad::new();
            }
            let y = forward();
            assert!(
                !y.track_op(),
                "nothing recorded inside the scope, also after a nested one ends"
            );
        }
        let y = forward();
        assert!(y.track_op());
        assert!(y
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(w.as_tensor())
            .is_some());
    }

    #[test]
    fn fused_ops_reject_what_they_cannot_compute_and_hand_other_dtypes_on() {
        let s = random(&[1, 1, 2, 3], 8, 1.0);
        assert!(attention_softmax(&s, Some(&random(&[1, 1, 1, 4], 9, 1.0)), 1.0).is_err());
        let x = random(&[2, 4], 10, 1.0);
        assert!(layer_norm(&x, &random(&[3], 11, 1.0), &random(&[4], 12, 1.0), 1e-12).is_err());
        // Another dtype is not the fused kernels' to compute: candle's composite op computes it.
        let g64 = gelu_erf(&x.to_dtype(candle_core::DType::F64).unwrap()).unwrap();
        assert!(
            max_rel(
                &g64.to_dtype(candle_core::DType::F32).unwrap(),
                &gelu_erf(&x).unwrap()
            ) < 1e-6
        );
        assert!(linear(&x, &random(&[3, 5], 17, 1.0), None).is_err());
        assert!(linear(&x, &random(&[3, 4], 18, 1.0), Some(&random(&[2], 19, 1.0))).is_err());
    }
}
