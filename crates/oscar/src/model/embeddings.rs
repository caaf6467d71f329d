//! `BertEmbeddings` (word + position + token type → LayerNorm → dropout) and Oscar's region
//! embedding (`img_embedding` Linear → optional `LayerNorm` → dropout; no position or type).

use crate::config::OscarConfig;
use crate::nn::{ops, Ctx, Embedding, LayerNorm, Linear, ParamBuilder};
use candle_core::{DType, Result, Tensor};

/// HF `BertEmbeddings` (keys `bert.embeddings.*`).
pub struct BertEmbeddings {
    pub(crate) word_embeddings: Embedding,
    pub(crate) position_embeddings: Embedding,
    pub(crate) token_type_embeddings: Embedding,
    pub(crate) layer_norm: LayerNorm,
    dropout: f64,
}

impl BertEmbeddings {
    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        let std = cfg.initializer_range;
        Ok(BertEmbeddings {
            word_embeddings: Embedding::new(
                &pb.pp("word_embeddings"),
                cfg.vocab_size,
                cfg.hidden_size,
                std,
            )?,
            position_embeddings: Embedding::new(
                &pb.pp("position_embeddings"),
                cfg.max_position_embeddings,
                cfg.hidden_size,
                std,
            )?,
            token_type_embeddings: Embedding::new(
                &pb.pp("token_type_embeddings"),
                cfg.type_vocab_size,
                cfg.hidden_size,
                std,
            )?,
            layer_norm: LayerNorm::new(&pb.pp("LayerNorm"), cfg.hidden_size, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    pub fn forward(
        &self,
        ids: &Tensor,
        types: Option<&Tensor>,
        positions: Option<&Tensor>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let dev = ids.device();
        let positions = match positions {
            Some(p) => p.clone(),
            None => Tensor::arange(0u32, t as u32, dev)?
                .unsqueeze(0)?
                .repeat((b, 1))?,
        };
        let types = match types {
            Some(tt) => tt.clone(),
            None => Tensor::zeros((b, t), DType::U32, dev)?,
        };
        let e = self
            .word_embeddings
            .forward(ids)?
            .add(&self.position_embeddings.forward(&positions)?)?
            .add(&self.token_type_embeddings.forward(&types)?)?;
        ops::dropout(&self.layer_norm.forward(&e)?, self.dropout, ctx)
    }
}

/// Oscar's region embedding (`bert.img_embedding`, `bert.LayerNorm` when `use_img_layernorm`).
pub struct ImageEmbedding {
    pub(crate) img_embedding: Linear,
    pub(crate) layer_norm: Option<LayerNorm>,
    dropout: f64,
}

impl ImageEmbedding {
    /// `pb` is the backbone's builder (`bert`): the keys are `bert.img_embedding.*` and `bert.LayerNorm.*`.
    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        let layer_norm = if cfg.img_layernorm() {
            Some(LayerNorm::new(
                &pb.pp("LayerNorm"),
                cfg.hidden_size,
                cfg.img_layer_norm_eps,
            )?)
        } else {
            None
        };
        Ok(ImageEmbedding {
            img_embedding: Linear::new(
                &pb.pp("img_embedding"),
                cfg.img_feature_dim,
                cfg.hidden_size,
                cfg.initializer_range,
            )?,
            layer_norm,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    pub fn forward(&self, feats: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let mut x = self.img_embedding.forward(feats)?;
        if let Some(ln) = &self.layer_norm {
            x = ln.forward(&x)?;
        }
        ops::dropout(&x, self.dropout, ctx)
    }
}
