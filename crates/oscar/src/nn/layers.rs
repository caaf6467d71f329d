//! Linear, LayerNorm and Embedding with torch's parameter names and layouts
//! (`weight[out, in]`, `bias[out]`; LayerNorm `weight`/`bias`).

use super::ops;
use super::{Init, ParamBuilder};
use candle_core::{Result, Tensor};

/// `torch.nn.Linear`: `y = x·Wᵀ + b`, `W` stored `[out, in]`. After [`Linear::quantize`] it
/// computes the same product in int8 ([`super::int8`]) and no longer holds the f32 weight.
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    int8: Option<super::int8::Int8Linear>,
}

impl Linear {
    pub fn new(pb: &ParamBuilder, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        Ok(Self::from_tensors(
            pb.get((out_dim, in_dim), "weight", Init::Normal(std))?,
            Some(pb.get(out_dim, "bias", Init::Zeros)?),
        ))
    }

    pub fn no_bias(pb: &ParamBuilder, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        Ok(Self::from_tensors(
            pb.get((out_dim, in_dim), "weight", Init::Normal(std))?,
            None,
        ))
    }

    /// A layer over existing tensors (a tied word-prediction matrix, say).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            int8: None,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.int8 {
            Some(q) => q.forward(x),
            None => super::fused::linear(x, &self.weight, self.bias.as_ref()),
        }
    }

    /// `[l.forward(x) for l in layers]`. Where every layer is int8, `x` is quantized once for
    /// all of them ([`super::int8::Int8Linear::forward_shared`]: a BERT layer's query, key and
    /// value read the same hidden states); the values are the same either way.
    pub fn forward_shared(layers: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
        let int8: Option<Vec<&super::int8::Int8Linear>> =
            layers.iter().map(|l| l.int8.as_ref()).collect();
        match int8 {
            Some(q) if layers.len() > 1 => super::int8::Int8Linear::forward_shared(x, &q),
            _ => layers.iter().map(|l| l.forward(x)).collect(),
        }
    }

    /// `gelu_erf(self.forward(x))`: BERT's intermediate layer. Without a backward to record
    /// ([`super::NoGrad`]), GELU runs on each tile of the product, int8 or f32, while it is in
    /// cache instead of in a pass over the whole output; the values are the same.
    pub fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        match &self.int8 {
            Some(q) => q.forward_gelu(x),
            None => super::fused::linear_gelu(x, &self.weight, self.bias.as_ref()),
        }
    }

    /// Switches the layer to dynamic int8 and releases its f32 weight (the field keeps an empty
    /// `[0, in]` tensor; the layer can no longer be trained). Returns the released weight's id.
    pub fn quantize(&mut self) -> Result<candle_core::TensorId> {
        let id = self.weight.id();
        if self.int8.is_none() {
            self.int8 = Some(super::int8::Int8Linear::new(
                &self.weight,
                self.bias.as_ref(),
            )?);
            let k = self.weight.dim(1)?;
            self.weight = Tensor::zeros((0, k), self.weight.dtype(), self.weight.device())?;
        }
        Ok(id)
    }

    pub fn is_quantized(&self) -> bool {
        self.int8.is_some()
    }

    /// Bytes of the int8 weights (packed, with scales), 0 for an f32 layer.
    pub fn int8_bytes(&self) -> usize {
        self.int8.as_ref().map_or(0, |q| q.packed().bytes())
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

    /// `self.forward(&(x + residual))`, fused at inference ([`ops::add_layer_norm`]).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        ops::add_layer_norm(x, residual, &self.weight, &self.bias, self.eps)
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
