//! The differentiable ops BERT needs, with the reference's numerics (LayerNorm eps from the config,
//! erf-GELU, softmax over the last dimension, mask −10000), and its losses. The element-wise
//! kernels behind LayerNorm, softmax and GELU are the fused ones of [`super::fused`].

use super::{fused, Ctx};
use candle_core::{DType, Result, Tensor};
use rand::{Rng, RngCore};

/// `torch.nn.LayerNorm` over the last dimension (biased variance); fused, with a backward.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    fused::layer_norm(x, weight, bias, eps)
}

/// `layer_norm(x + residual, …)`, fused at inference; with a backward it is the two ops.
pub use super::fused::add_layer_norm;

/// Softmax over the last dimension, max-shifted for stability; fused, with a backward.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    fused::softmax(x)
}

/// `log_softmax` over the last dimension; fused, with a backward.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    fused::log_softmax(x)
}

/// The activation named by `hidden_act` (`gelu` is the erf form, as BERT's).
pub fn activation(x: &Tensor, name: &str) -> Result<Tensor> {
    match name {
        "gelu" => fused::gelu_erf(x),
        "gelu_new" => x.gelu(),
        "relu" => x.relu(),
        "tanh" => x.tanh(),
        other => candle_core::bail!("unsupported activation {other}"),
    }
}

/// `activation(layer(x), name)`, GELU fused into the layer's product ([`Linear::forward_gelu`]).
///
/// [`Linear::forward_gelu`]: super::layers::Linear::forward_gelu
pub fn linear_activation(layer: &super::layers::Linear, x: &Tensor, name: &str) -> Result<Tensor> {
    match name {
        "gelu" => layer.forward_gelu(x),
        other => activation(&layer.forward(x)?, other),
    }
}

/// Inverted dropout (`torch.nn.Dropout`): in training, zero each element with probability `p`
/// and scale the rest by 1/(1-p); in inference, the identity.
pub fn dropout(x: &Tensor, p: f64, ctx: &Ctx) -> Result<Tensor> {
    let Some(rng) = ctx.rng() else {
        return Ok(x.clone());
    };
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let n = x.elem_count();
    let mut rng = rng.borrow_mut();
    // A rank's rows of a larger batch: skip the draws of the rows before it and after it (one
    // u64 per element, as `random::<f64>` draws), so its mask is the whole batch's on its rows.
    let (before, after) = match ctx.window() {
        Some((lo, hi, total)) => {
            let rows = x.dims().first().copied().unwrap_or(0);
            if rows != hi - lo || !n.is_multiple_of(rows.max(1)) {
                candle_core::bail!(
                    "dropout on {:?} in a forward of rows {lo}..{hi} of {total}: the first \
                     dimension must be those rows",
                    x.dims()
                );
            }
            let per_row = n / rows.max(1);
            (lo * per_row, (total - hi) * per_row)
        }
        None => (0, 0),
    };
    for _ in 0..before {
        rng.next_u64();
    }
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random::<f64>() < keep {
                scale
            } else {
                0.0
            }
        })
        .collect();
    for _ in 0..after {
        rng.next_u64();
    }
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x.mul(&mask)
}

/// Mean cross-entropy over the rows whose label is not `ignore` (`CrossEntropyLoss(ignore_index)`).
/// `logits` is `[N, C]`, `labels` holds N class indices. Returns `None` when every row is ignored
/// (torch returns NaN there; callers decide what an empty loss means).
pub fn cross_entropy(logits: &Tensor, labels: &[i64], ignore: i64) -> Result<Option<Tensor>> {
    let (n, c) = logits.dims2()?;
    if labels.len() != n {
        candle_core::bail!("cross_entropy: {} labels for {n} rows", labels.len());
    }
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        if l == ignore {
            continue;
        }
        if l < 0 || l as usize >= c {
            candle_core::bail!("cross_entropy: label {l} at row {i} is outside 0..{c}");
        }
        rows.push(i as u32);
        targets.push(l as u32);
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let dev = logits.device();
    let picked = if rows.len() == n {
        logits.clone()
    } else {
        logits.index_select(&Tensor::new(rows.as_slice(), dev)?, 0)?
    };
    let logp = log_softmax(&picked)?;
    let t = Tensor::new(targets.as_slice(), dev)?.unsqueeze(1)?;
    let nll = logp.gather(&t, 1)?.squeeze(1)?;
    Ok(Some(nll.mean_all()?.neg()?))
}

/// `binary_cross_entropy_with_logits(mean)` in its stable form `max(x,0) - x·y + log(1+e^-|x|)`.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets.to_dtype(logits.dtype())?;
    let softplus = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    let loss = (logits.relu()? - logits.mul(&targets)?)?.add(&softplus)?;
    loss.mean_all()
}

/// `KLDivLoss(reduction='none')(log_q, p)` = p·(log p − log q), with 0 where p = 0 (torch's xlogy).
pub fn kl_div_pointwise(log_q: &Tensor, p: &Tensor) -> Result<Tensor> {
    let p = p.to_dtype(log_q.dtype())?;
    let positive = p.gt(0.0)?;
    let safe_p = positive.where_cond(&p, &p.ones_like()?)?;
    let plogp = p.mul(&safe_p.log()?)?;
    plogp.sub(&p.mul(log_q)?)
}

/// Mean squared error over all elements.
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    pred.sub(&target.to_dtype(pred.dtype())?)?.sqr()?.mean_all()
}

/// Converts a 0/1 mask (`[B, L]` or `[B, L, L]`) into the additive mask BERT adds to the
/// attention scores: `(1 − mask)·(−10000)`, shaped `[B, 1, 1|L, L]`.
pub fn extended_attention_mask(mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?;
    let m = match m.rank() {
        2 => m.unsqueeze(1)?.unsqueeze(1)?,
        3 => m.unsqueeze(1)?,
        r => candle_core::bail!("attention mask must be 2-D [B, L] or 3-D [B, L, L], got rank {r}"),
    };
    m.affine(10000.0, -10000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn layer_norm_and_softmax_match_hand_values_and_carry_gradients() {
        let x = Var::from_tensor(&t(&[1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 5.0], &[2, 4])).unwrap();
        let w = Var::from_tensor(&t(&[1.0, 0.5, 2.0, 1.0], &[4])).unwrap();
        let b = Var::from_tensor(&t(&[0.0, 0.1, 0.0, -0.1], &[4])).unwrap();
        let y = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
        let row: Vec<f32> = y.get(0).unwrap().to_vec1().unwrap();
        // (x - 2.5) / sqrt(1.25)
        let s = 1.25f32.sqrt();
        let expect = [-1.5 / s, 0.5 * -0.5 / s + 0.1, 2.0 * 0.5 / s, 1.5 / s - 0.1];
        for (a, e) in row.iter().zip(expect) {
            assert!((a - e).abs() < 1e-6, "{a} vs {e}");
        }
        let p = softmax(&y).unwrap();
        let sums: Vec<f32> = p.sum(1).unwrap().to_vec1().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6));
        let loss = p
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .add(&y.sqr().unwrap().sum_all().unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        for v in [&x, &w, &b] {
            let g = grads.get(v.as_tensor()).expect("gradient recorded");
            let n: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(n > 0.0);
        }
    }

    #[test]
    fn a_ranks_dropout_masks_are_the_whole_batchs_on_its_rows() {
        let x = Tensor::ones((5, 2, 3), DType::F32, &Device::Cpu).unwrap();
        let whole = Ctx::train(11);
        // Two dropouts in a row: the stream must stay in step after each.
        let w1 = dropout(&x, 0.4, &whole).unwrap();
        let w2 = dropout(&x, 0.4, &whole).unwrap();
        let mut parts1 = Vec::new();
        let mut parts2 = Vec::new();
        for (lo, hi) in [(0, 2), (2, 3), (3, 5)] {
            let ctx = Ctx::train_rows(11, lo, hi, 5);
            let xs = x.narrow(0, lo, hi - lo).unwrap();
            parts1.push(dropout(&xs, 0.4, &ctx).unwrap());
            parts2.push(dropout(&xs, 0.4, &ctx).unwrap());
        }
        for (w, parts) in [(w1, parts1), (w2, parts2)] {
            let joined = Tensor::cat(&parts, 0).unwrap();
            let a: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = joined.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b);
            assert!(a.contains(&0.0) && a.iter().any(|v| *v > 1.0));
        }
        // A tensor whose first dimension is not the window's rows is refused.
        let ctx = Ctx::train_rows(11, 0, 2, 5);
        assert!(dropout(&x, 0.4, &ctx).is_err());
    }

    #[test]
    fn dropout_is_identity_in_eval_and_scaled_in_train() {
        let x = Tensor::ones((1000,), DType::F32, &Device::Cpu).unwrap();
        let y = dropout(&x, 0.3, &Ctx::eval()).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), x.to_vec1::<f32>().unwrap());
        let y: Vec<f32> = dropout(&x, 0.3, &Ctx::train(7)).unwrap().to_vec1().unwrap();
        let zeros = y.iter().filter(|v| **v == 0.0).count();
        assert!((200..400).contains(&zeros), "{zeros} zeros");
        assert!(y.iter().all(|v| *v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
        let again: Vec<f32> = dropout(&x, 0.3, &Ctx::train(7)).unwrap().to_vec1().unwrap();
        assert_eq!(y, again, "same seed, same mask");
    }

    #[test]
    fn losses_match_closed_forms() {
        let logits = t(&[2.0, 0.0, 0.0, 1.0, 3.0, 0.0], &[2, 3]);
        // Row 0 label 0, row 1 ignored.
        let ce: f32 = cross_entropy(&logits, &[0, -1], -1)
            .unwrap()
            .unwrap()
            .to_scalar()
            .unwrap();
        let expect = -(2f32.exp() / (2f32.exp() + 2.0)).ln();
        assert!((ce - expect).abs() < 1e-6);
        assert!(cross_entropy(&logits, &[-1, -1], -1).unwrap().is_none());
        assert!(cross_entropy(&logits, &[5, 0], -1).is_err());
        let y = t(&[1.0, 0.0, 0.5, 0.0, 1.0, 0.0], &[2, 3]);
        let bce: f32 = bce_with_logits(&logits, &y).unwrap().to_scalar().unwrap();
        let v = [2.0f32, 0.0, 0.0, 1.0, 3.0, 0.0];
        let yy = [1.0f32, 0.0, 0.5, 0.0, 1.0, 0.0];
        let mut s = 0.0;
        for i in 0..6 {
            let p = 1.0 / (1.0 + (-v[i]).exp());
            s += -(yy[i] * p.ln() + (1.0 - yy[i]) * (1.0 - p).ln());
        }
        assert!((bce - s / 6.0).abs() < 1e-6);
    }

    #[test]
    fn extended_mask_is_minus_10000_on_masked_positions() {
        let m = t(&[1.0, 1.0, 0.0], &[1, 3]);
        let e: Vec<f32> = extended_attention_mask(&m)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(e, vec![0.0, 0.0, -10000.0]);
    }
}
