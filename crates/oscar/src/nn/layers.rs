//! Linear, LayerNorm and Embedding with torch's parameter names and layouts
//! (`weight[out, in]`, `bias[out]`; LayerNorm `weight`/`bias`).

use super::ops;
use super::{Init, ParamBuilder};
use candle_core::{Result, Tensor};

/// `torch.nn.Linear`: `y = x·Wᵀ + b`, `W` stored `[out, in]`.
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(pb: &ParamBuilder, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        Ok(Linear {
            weight: pb.get((out_dim, in_dim), "weight", Init::Normal(std))?,
            bias: Some(pb.get(out_dim, "bias", Init::Zeros)?),
        })
    }

    pub fn no_bias(pb: &ParamBuilder, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        Ok(Linear {
            weight: pb.get((out_dim, in_dim), "weight", Init::Normal(std))?,
            bias: None,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        super::fused::linear(x, &self.weight, self.bias.as_ref())
    }
}

/// `BertLayerNorm` (torch LayerNorm over the last dim), differentiable.
#[derive(Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(pb: &ParamBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: pb.get(dim, "weight", Init::Ones)?,
            bias: pb.get(dim, "bias", Init::Zeros)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// `torch.nn.Embedding`: row lookup, `weight[num, dim]`.
#[derive(Clone)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(pb: &ParamBuilder, num: usize, dim: usize, std: f64) -> Result<Self> {
        Ok(Embedding {
            weight: pb.get((num, dim), "weight", Init::Normal(std))?,
        })
    }

    /// Looks up `ids` (`[B, T]`, u32) → `[B, T, dim]`. Ids must be below `num` (checked by the caller).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        self.weight.index_select(&flat, 0)?.reshape((b, t, ()))
    }
}
