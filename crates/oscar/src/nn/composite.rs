//! The functions of [`super::fused`] written with candle's own ops, one op at a time. Every op
//! has candle's backward and runs on every device and dtype candle supports, so these are what
//! the model uses off the CPU (CUDA, Metal) or on other dtypes, and the oracle the fused CPU
//! kernels are tested against. Numerics are the reference's: biased variance for LayerNorm,
//! max-shifted softmax, erf-GELU.

use candle_core::{Result, Tensor, D};

/// `torch.nn.LayerNorm` over the last dimension.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    centered
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(w)?
        .broadcast_add(b)
}

/// `torch.nn.Linear`: `x·Wᵀ + b` over the last dimension, `W` stored `[out, in]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = x.broadcast_matmul(&weight.t()?)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `a·b`, or `a·bᵀ` with `transpose_b`, over the leading dimensions.
pub fn batched_matmul(a: &Tensor, b: &Tensor, transpose_b: bool) -> Result<Tensor> {
    if transpose_b {
        a.matmul(&b.t()?.contiguous()?)
    } else {
        a.matmul(&b.contiguous()?)
    }
}

/// Softmax over the last dimension, max-shifted.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let e = x
        .broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?
        .exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// `log_softmax` over the last dimension, max-shifted.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// `softmax(scores·scale + mask)`; the additive mask carries no gradient.
pub fn attention_softmax(scores: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let s = (scores * scale)?;
    let s = match mask {
        Some(m) => s.broadcast_add(&m.detach())?,
        None => s,
    };
    softmax(&s)
}

/// erf-GELU `0.5·x·(1 + erf(x/√2))`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}
