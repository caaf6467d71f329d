//! `BertImgModel` (Oscar, modeling_bert.py; paper §3): text embeddings and region embeddings
//! concatenated text-then-regions, one post-LN encoder over both, and the [CLS] pooler.

use super::embeddings::{BertEmbeddings, ImageEmbedding};
use super::encoder::{BertEncoder, KvCache};
use super::inputs::Inputs;
use crate::config::OscarConfig;
use crate::nn::{ops, Ctx, Linear, ParamBuilder};
use candle_core::{bail, DType, Result, Tensor};

/// HF `BertPooler`: `tanh(dense(h[:, 0]))`.
pub struct BertPooler {
    pub(crate) dense: Linear,
}

impl BertPooler {
    pub fn forward(&self, seq: &Tensor) -> Result<Tensor> {
        self.dense
            .forward(&seq.narrow(1, 0, 1)?.squeeze(1)?)?
            .tanh()
    }
}

/// What the backbone returns.
pub struct EncoderOutput {
    /// `[B, T+R, H]` last hidden states.
    pub sequence: Tensor,
    /// `[B, H]` pooled [CLS].
    pub pooled: Tensor,
}

/// The backbone, keys `bert.*`.
pub struct BertImgModel {
    pub(crate) embeddings: BertEmbeddings,
    pub(crate) encoder: BertEncoder,
    pub(crate) pooler: BertPooler,
    pub(crate) image: ImageEmbedding,
    pub(crate) cfg: OscarConfig,
    device: candle_core::Device,
}

impl BertImgModel {
    /// Every `Linear` layer (for [`crate::nn::int8`] quantization): the region embedding, each
    /// layer's query, key, value, attention output, intermediate and output, and the pooler.
    pub(crate) fn linears(&mut self) -> Vec<&mut Linear> {
        let mut v = vec![&mut self.image.img_embedding, &mut self.pooler.dense];
        for l in &mut self.encoder.layers {
            let a = &mut l.attention;
            let sa = &mut a.self_attention;
            v.extend([
                &mut sa.query,
                &mut sa.key,
                &mut sa.value,
                &mut a.output.dense,
                &mut l.intermediate.dense,
                &mut l.output.dense,
            ]);
        }
        v
    }

    /// Whether the encoder's layers run in int8 ([`crate::checkpoint::quantize`]).
    pub fn encoder_is_quantized(&self) -> bool {
        self.encoder
            .layers
            .iter()
            .all(|l| l.intermediate.dense.is_quantized())
    }

    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        Ok(BertImgModel {
            embeddings: BertEmbeddings::new(&pb.pp("embeddings"), cfg)?,
            encoder: BertEncoder::new(&pb.pp("encoder"), cfg)?,
            pooler: BertPooler {
                dense: Linear::new(
                    &pb.pp("pooler").pp("dense"),
                    cfg.hidden_size,
                    cfg.hidden_size,
                    cfg.initializer_range,
                )?,
            },
            image: ImageEmbedding::new(pb, cfg)?,
            cfg: cfg.clone(),
            device: pb.device(),
        })
    }

    /// The device the weights live on (inputs must be there too).
    pub fn device(&self) -> &candle_core::Device {
        &self.device
    }

    /// The model's configuration.
    pub fn config(&self) -> &OscarConfig {
        &self.cfg
    }

    /// Word-piece embeddings `[B, L, H]` of `ids` (`embeddings`: words + positions + token
    /// types, LayerNorm, dropout); positions default to 0.., types to 0.
    pub fn embed_text(
        &self,
        ids: &Tensor,
        types: Option<&Tensor>,
        positions: Option<&Tensor>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        self.embeddings.forward(ids, types, positions, ctx)
    }

    /// Region embeddings `[B, R, H]` of region features `[B, R, img_feature_dim]`.
    pub fn embed_regions(&self, regions: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.image.forward(regions, ctx)
    }

    /// Inference over embedded new positions `emb` (`[B, n, H]`) that attend, as the 0/1 `mask`
    /// (`[B, n, P+n]`) allows, to the `cache`d positions and to each other; the first `keep` new
    /// positions join the cache. Returns their last hidden states (what cached decoding uses).
    pub fn encode_cached(
        &self,
        emb: &Tensor,
        mask: &Tensor,
        cache: &mut KvCache,
        keep: usize,
    ) -> Result<Tensor> {
        self.encoder
            .forward_cached(emb, &ops::extended_attention_mask(mask)?, cache, keep)
    }

    /// Checks shapes and id ranges so that bad input is an error, not a panic or garbage.
    fn validate(&self, x: &Inputs) -> Result<()> {
        let (b, t) = x.input_ids.dims2()?;
        let check_ids = |name: &str, ids: &Tensor, limit: usize| -> Result<()> {
            if ids.dims() != [b, t] {
                bail!(
                    "{name} has shape {:?}, expected [{b}, {t}] like input_ids",
                    ids.dims()
                );
            }
            let max = ids
                .to_dtype(DType::U32)?
                .flatten_all()?
                .max(0)?
                .to_scalar::<u32>()?;
            if max as usize >= limit {
                bail!("{name} holds id {max}, expected < {limit}");
            }
            Ok(())
        };
        if t == 0 {
            bail!("input_ids is empty: expected at least [CLS]");
        }
        check_ids("input_ids", &x.input_ids, self.cfg.vocab_size)?;
        if let Some(tt) = &x.token_type_ids {
            check_ids("token_type_ids", tt, self.cfg.type_vocab_size)?;
        }
        if let Some(p) = &x.position_ids {
            check_ids("position_ids", p, self.cfg.max_position_embeddings)?;
        } else if t > self.cfg.max_position_embeddings {
            bail!(
                "text length {t} exceeds max_position_embeddings {}",
                self.cfg.max_position_embeddings
            );
        }
        let r = x.img_len()?;
        if let Some(f) = &x.img_feats {
            let (fb, _, fd) = f.dims3()?;
            if fb != b || fd != self.cfg.img_feature_dim {
                bail!(
                    "img_feats has shape {:?}, expected [{b}, R, {}]",
                    f.dims(),
                    self.cfg.img_feature_dim
                );
            }
        }
        if let Some(m) = &x.attention_mask {
            let l = t + r;
            if m.dims() != [b, l] && m.dims() != [b, l, l] {
                bail!("attention_mask has shape {:?}, expected [{b}, {l}] or [{b}, {l}, {l}] (text {t} + regions {r})", m.dims());
            }
        }
        Ok(())
    }

    pub fn forward(&self, x: &Inputs, ctx: &Ctx) -> Result<EncoderOutput> {
        let (emb, ext) = self.embed(x, ctx)?;
        let sequence = self.encoder.forward(&emb, &ext, ctx)?;
        let pooled = self.pooler.forward(&sequence)?;
        Ok(EncoderOutput { sequence, pooled })
    }

    /// The pooled [CLS] alone (`[B, H]`), for the classification heads: the last layer computes
    /// position 0 only ([`BertEncoder::forward_first`]).
    pub fn forward_pooled(&self, x: &Inputs, ctx: &Ctx) -> Result<Tensor> {
        let (emb, ext) = self.embed(x, ctx)?;
        self.pooler
            .forward(&self.encoder.forward_first(&emb, &ext, ctx)?)
    }

    /// Text ++ region embeddings and the additive attention mask.
    fn embed(&self, x: &Inputs, ctx: &Ctx) -> Result<(Tensor, Tensor)> {
        self.validate(x)?;
        let text = self.embeddings.forward(
            &x.input_ids,
            x.token_type_ids.as_ref(),
            x.position_ids.as_ref(),
            ctx,
        )?;
        let emb = match &x.img_feats {
            Some(f) => {
                let img = self.image.forward(&f.to_dtype(DType::F32)?, ctx)?;
                Tensor::cat(&[&text, &img], 1)?
            }
            None => text,
        };
        Ok((emb, ops::extended_attention_mask(&x.mask_or_ones()?)?))
    }
}
