//! The post-LN transformer encoder: HF `BertSelfAttention`, `BertSelfOutput`, `BertAttention`,
//! `BertIntermediate`, `BertOutput`, `BertLayer`, `BertEncoder` (Oscar's `CaptionBertEncoder`
//! without its history state).

use crate::config::OscarConfig;
use crate::nn::{fused, ops, Ctx, LayerNorm, Linear, ParamBuilder};
use candle_core::{Result, Tensor};

/// Keys and values of the positions already encoded, per layer (`[B, nh, P, d]` each): what
/// cached decoding keeps between steps instead of re-encoding the prefix (candle's llama
/// `Cache`, HF's `past_key_values`). Rows can be reordered, kept or duplicated (beam search).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn new() -> Self {
        KvCache::default()
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn layer(&self, i: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(i)
    }

    /// Appends layer `i`'s keys and values of the first `keep` new positions.
    fn append(&mut self, i: usize, k: &Tensor, v: &Tensor, keep: usize) -> Result<()> {
        let (k, v) = (k.narrow(2, 0, keep)?, v.narrow(2, 0, keep)?);
        let cached = self.layers.len();
        match self.layers.get_mut(i) {
            Some(c) => *c = (Tensor::cat(&[&c.0, &k], 2)?, Tensor::cat(&[&c.1, &v], 2)?),
            None if i == cached => self.layers.push((k, v)),
            None => candle_core::bail!("KvCache: layer {i} appended before layer {cached}"),
        }
        Ok(())
    }

    /// Keeps the rows `rows` (indices into the current rows; repeats allowed), in that order.
    pub fn reorder(&mut self, rows: &Tensor) -> Result<()> {
        for (k, v) in self.layers.iter_mut() {
            *k = k.index_select(rows, 0)?;
            *v = v.index_select(rows, 0)?;
        }
        Ok(())
    }
}

/// Which keys each query position attends to.
#[derive(Clone, Copy)]
pub enum Attend<'a> {
    /// A padded batch (`[B, L, H]`) and its additive mask `[B, 1, 1|n, P+L]` from
    /// `ops::extended_attention_mask`.
    Mask(&'a Tensor),
    /// A packed batch (`[1, N, H]`, no padding): each sequence's rows; a sequence's queries
    /// attend to all of its keys (see [`fused::attention_packed`]).
    Packed(&'a [fused::PackedSeq]),
}

/// `attention.self`: scaled dot-product attention.
pub struct BertSelfAttention {
    pub(crate) query: Linear,
    pub(crate) key: Linear,
    pub(crate) value: Linear,
    num_heads: usize,
    head_dim: usize,
    dropout: f64,
}

impl BertSelfAttention {
    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        let (h, std) = (cfg.hidden_size, cfg.initializer_range);
        Ok(BertSelfAttention {
            query: Linear::new(&pb.pp("query"), h, h, std)?,
            key: Linear::new(&pb.pp("key"), h, h, std)?,
            value: Linear::new(&pb.pp("value"), h, h, std)?,
            num_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            dropout: cfg.attention_probs_dropout_prob,
        })
    }

    /// `[B, L, H]` → `[B, nh, L, d]`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        fused::swap_middle_axes(&x.reshape((b, l, self.num_heads, self.head_dim))?)
    }

    /// The one attention path. Queries come from `xq` (`[B, n, H]`: every position, or only some
    /// of them), keys and values from the `past` positions (a cache, or none) followed by `x`'s
    /// own (`[B, L, H]`); `attend` says which keys each query reads (a packed batch runs
    /// [`fused::attention_packed`], without a cache). Returns the output and, when `keep_kv`, `x`'s keys and
    /// values split into heads (`[B, nh, L, d]`), which a decoding caller caches. Attention does
    /// not depend on the order of the keys, so a cached step computes what re-encoding the whole
    /// sequence computes. Inference without a cache runs [`fused::attention`] on the unsplit
    /// projections: the same values without the head tensors.
    pub fn forward(
        &self,
        xq: &Tensor,
        x: &Tensor,
        past: Option<&(Tensor, Tensor)>,
        attend: Attend,
        keep_kv: bool,
        ctx: &Ctx,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let (b, n, h) = xq.dims3()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let (q, k_new, v_new) = if xq.id() == x.id() {
            match &Linear::forward_shared(&[&self.query, &self.key, &self.value], x)?[..] {
                [q, k, v] => (q.clone(), k.clone(), v.clone()),
                _ => candle_core::bail!("self-attention: expected three projections"),
            }
        } else {
            (
                self.query.forward(xq)?,
                self.key.forward(x)?,
                self.value.forward(x)?,
            )
        };
        let ext_mask = match attend {
            Attend::Packed(seqs) => {
                if past.is_some() || keep_kv || ctx.is_train() {
                    candle_core::bail!(
                        "a packed batch is encoded without a cache and without training"
                    )
                }
                let out = fused::attention_packed(&q, &k_new, &v_new, seqs, self.num_heads, scale)?;
                return Ok((out, None));
            }
            Attend::Mask(m) => m,
        };
        if past.is_none() && !keep_kv && !ctx.is_train() {
            if let Some(out) =
                fused::attention(&q, &k_new, &v_new, ext_mask, self.num_heads, scale)?
            {
                return Ok((out, None));
            }
        }
        let q = self.split_heads(&q)?;
        let k_new = self.split_heads(&k_new)?;
        let v_new = self.split_heads(&v_new)?;
        let (k, v) = match past {
            Some((pk, pv)) => (
                Tensor::cat(&[pk, &k_new], 2)?,
                Tensor::cat(&[pv, &v_new], 2)?,
            ),
            None => (k_new.clone(), v_new.clone()),
        };
        let scores = fused::batched_matmul(&q, &k, true)?;
        let probs = fused::attention_softmax(&scores, Some(ext_mask), scale)?;
        let probs = ops::dropout(&probs, self.dropout, ctx)?;
        let out = fused::swap_middle_axes(&fused::batched_matmul(&probs, &v, false)?)?
            .reshape((b, n, h))?;
        Ok((out, Some((k_new, v_new))))
    }
}

/// `dense → dropout → LayerNorm(x + input)`: `attention.output` and `output` share this shape.
pub struct BertResidualOutput {
    pub(crate) dense: Linear,
    pub(crate) layer_norm: LayerNorm,
    dropout: f64,
}

impl BertResidualOutput {
    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig, in_dim: usize) -> Result<Self> {
        Ok(BertResidualOutput {
            dense: Linear::new(
                &pb.pp("dense"),
                in_dim,
                cfg.hidden_size,
                cfg.initializer_range,
            )?,
            layer_norm: LayerNorm::new(&pb.pp("LayerNorm"), cfg.hidden_size, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    pub fn forward(&self, x: &Tensor, residual: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let y = ops::dropout(&self.dense.forward(x)?, self.dropout, ctx)?;
        self.layer_norm.forward_residual(&y, residual)
    }
}

/// `attention`: self-attention then `attention.output` (HF `BertAttention`).
pub struct BertAttention {
    pub(crate) self_attention: BertSelfAttention,
    pub(crate) output: BertResidualOutput,
}

impl BertAttention {
    fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        Ok(BertAttention {
            self_attention: BertSelfAttention::new(&pb.pp("self"), cfg)?,
            output: BertResidualOutput::new(&pb.pp("output"), cfg, cfg.hidden_size)?,
        })
    }

    /// See [`BertSelfAttention::forward`]; the residual is the query positions' input.
    fn forward(
        &self,
        xq: &Tensor,
        x: &Tensor,
        past: Option<&(Tensor, Tensor)>,
        attend: Attend,
        keep_kv: bool,
        ctx: &Ctx,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let (a, kv) = self
            .self_attention
            .forward(xq, x, past, attend, keep_kv, ctx)?;
        Ok((self.output.forward(&a, xq, ctx)?, kv))
    }
}

/// `intermediate`: `dense` to the FFN width, then the activation (HF `BertIntermediate`).
pub struct BertIntermediate {
    pub(crate) dense: Linear,
    act: String,
}

impl BertIntermediate {
    fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        Ok(BertIntermediate {
            dense: Linear::new(
                &pb.pp("dense"),
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.initializer_range,
            )?,
            act: cfg.hidden_act.clone(),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear_activation(&self.dense, x, &self.act)
    }
}

/// `encoder.layer.{i}` (HF `BertLayer`).
pub struct BertLayer {
    pub(crate) attention: BertAttention,
    pub(crate) intermediate: BertIntermediate,
    pub(crate) output: BertResidualOutput,
}

impl BertLayer {
    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        Ok(BertLayer {
            attention: BertAttention::new(&pb.pp("attention"), cfg)?,
            intermediate: BertIntermediate::new(&pb.pp("intermediate"), cfg)?,
            output: BertResidualOutput::new(&pb.pp("output"), cfg, cfg.intermediate_size)?,
        })
    }

    /// The outputs of the query positions `xq`, and `x`'s keys and values (see
    /// [`BertSelfAttention::forward`]).
    pub fn forward(
        &self,
        xq: &Tensor,
        x: &Tensor,
        past: Option<&(Tensor, Tensor)>,
        attend: Attend,
        keep_kv: bool,
        ctx: &Ctx,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let (a, kv) = self.attention.forward(xq, x, past, attend, keep_kv, ctx)?;
        Ok((
            self.output
                .forward(&self.intermediate.forward(&a)?, &a, ctx)?,
            kv,
        ))
    }
}

/// `encoder`: the stack of layers (HF `BertEncoder`; Oscar's `CaptionBertEncoder` without its
/// history state, which [`KvCache`] replaces).
pub struct BertEncoder {
    pub(crate) layers: Vec<BertLayer>,
}

/// What [`BertEncoder`]'s loop computes besides the plain forward.
enum Queries<'c> {
    /// Every position.
    All,
    /// Every position of the last layer but position 0 only ([`BertEncoder::forward_first`]).
    FirstOnly,
    /// Every new position over the cached ones, then append the first `keep` to the cache.
    Cached { cache: &'c mut KvCache, keep: usize },
}

impl BertEncoder {
    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::new(&pb.pp(format!("layer.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertEncoder { layers })
    }

    /// The last hidden states of every position.
    pub fn forward(&self, x: &Tensor, ext_mask: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.run(x, ext_mask, ctx, Queries::All)
    }

    /// The last hidden state of position 0 (`[B, 1, H]`), all a pooler reads: every layer but the
    /// last runs in full, the last computes [CLS]'s query, attention and feed-forward only
    /// (keys and values still from every position). Same arithmetic for [CLS] as [`Self::forward`];
    /// a 12-layer classification forward does ~7 % less work, a 2-layer one ~40 %.
    ///
    /// In inference on the CPU, the masked-out positions are dropped first ([`Packing`]): [CLS]
    /// never reads them, and the rest runs on the packed batch (TEI's unpadded models). Oscar
    /// pads every caption to `max_seq_length` and every region list to `max_img_seq_length`, so
    /// this is most of the padding's cost. `OSCAR_KEEP_PADDING=1` computes the padded positions
    /// as the reference does.
    pub fn forward_first(&self, x: &Tensor, ext_mask: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.run(x, ext_mask, ctx, Queries::FirstOnly)
    }

    /// Inference over `x`'s new positions, which attend to the `cache`d ones and to each other as
    /// `ext_mask` (`[B, 1, n, P+n]`) allows; the keys and values of the first `keep` new positions
    /// are appended to the cache. Returns the new positions' last hidden states.
    pub fn forward_cached(
        &self,
        x: &Tensor,
        ext_mask: &Tensor,
        cache: &mut KvCache,
        keep: usize,
    ) -> Result<Tensor> {
        self.run(x, ext_mask, &Ctx::eval(), Queries::Cached { cache, keep })
    }

    /// The one loop over the layers.
    fn run(
        &self,
        x: &Tensor,
        ext_mask: &Tensor,
        ctx: &Ctx,
        mut queries: Queries,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len().saturating_sub(1);
        if self.layers.is_empty() && matches!(queries, Queries::FirstOnly) {
            return x.narrow(1, 0, 1);
        }
        if matches!(queries, Queries::FirstOnly) && !ctx.is_train() {
            if let Some(p) = Packing::of(x, ext_mask)? {
                return self.run_packed(x, &p, ctx);
            }
        }
        let attend = Attend::Mask(ext_mask);
        for (i, layer) in self.layers.iter().enumerate() {
            let (out, kv) = match &queries {
                Queries::FirstOnly if i == last => {
                    let mask = if ext_mask.dim(2)? == 1 {
                        ext_mask.clone()
                    } else {
                        ext_mask.narrow(2, 0, 1)?
                    };
                    let first = h.narrow(1, 0, 1)?;
                    layer.forward(&first, &h, None, Attend::Mask(&mask), false, ctx)?
                }
                Queries::Cached { cache, .. } => {
                    layer.forward(&h, &h, cache.layer(i), attend, true, ctx)?
                }
                _ => layer.forward(&h, &h, None, attend, false, ctx)?,
            };
            if let Queries::Cached { cache, keep } = &mut queries {
                let Some((k, v)) = kv else {
                    candle_core::bail!("layer {i}: no keys and values to cache")
                };
                cache.append(i, &k, &v, *keep)?;
            }
            h = out;
        }
        Ok(h)
    }

    /// [`Self::forward_first`] on a packed batch: every layer over the kept rows, the last one's
    /// queries at each sequence's first row.
    fn run_packed(&self, x: &Tensor, p: &Packing, ctx: &Ctx) -> Result<Tensor> {
        let (b, l, hidden) = x.dims3()?;
        let mut h = x
            .reshape((b * l, hidden))?
            .index_select(&p.rows, 0)?
            .unsqueeze(0)?;
        let last = self.layers.len() - 1;
        for layer in &self.layers[..last] {
            h = layer
                .forward(&h, &h, None, Attend::Packed(&p.all), false, ctx)?
                .0;
        }
        let first = h.index_select(&p.first_rows, 1)?;
        let (out, _) =
            self.layers[last].forward(&first, &h, None, Attend::Packed(&p.first), false, ctx)?;
        out.reshape((b, 1, hidden))
    }
}

/// Whether `OSCAR_KEEP_PADDING=1` asks pooled inference to compute the padded positions as the
/// reference does, instead of dropping them ([`BertEncoder::forward_first`]).
pub fn keeps_padding() -> bool {
    static KEEP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KEEP.get_or_init(|| std::env::var_os("OSCAR_KEEP_PADDING").is_some_and(|v| v == "1"))
}

/// A padded batch with its masked-out positions dropped, for [`BertEncoder::forward_first`].
/// Dropping a key BERT's mask adds −10000 to changes no probability: its `exp` underflows to
/// zero next to any kept key's (the scores would have to span ~100 for one to survive, and span
/// 10⁴ to matter). Built only where that holds and nothing else reads the dropped rows: a
/// `[B, L]` mask (not a per-query one) of 0 and ≤ −10⁴ only, position 0 kept in every row, on
/// the fused CPU path without a backward, at inference (dropout draws per padded position);
/// and only when something is dropped.
struct Packing {
    /// The kept rows of the flattened `[B·L]` positions, row by row.
    rows: Tensor,
    /// Each sequence's first row in the packed batch (its [CLS]).
    first_rows: Tensor,
    /// Every kept position as a query over its sequence's.
    all: Vec<fused::PackedSeq>,
    /// Each sequence's [CLS] (row `i` of the queries) over its sequence's positions.
    first: Vec<fused::PackedSeq>,
}

impl Packing {
    fn of(x: &Tensor, ext_mask: &Tensor) -> Result<Option<Packing>> {
        if keeps_padding() || !fused::packing_runs(&[x, ext_mask]) {
            return Ok(None);
        }
        let (b, l, _) = x.dims3()?;
        let (mb, _, mq, ml) = ext_mask.dims4()?;
        if (mb, mq, ml) != (b, 1, l) || l == 0 {
            return Ok(None);
        }
        let mask = ext_mask.flatten_all()?.to_vec1::<f32>()?;
        if mask.iter().any(|&m| m != 0.0 && m > -1e4)
            || mask.chunks_exact(l).any(|row| row[0] != 0.0)
        {
            return Ok(None);
        }
        let rows: Vec<u32> = (0..b * l)
            .filter(|&i| mask[i] == 0.0)
            .map(|i| i as u32)
            .collect();
        if rows.len() == b * l {
            return Ok(None);
        }
        let (mut all, mut first, mut first_rows) = (vec![], vec![], vec![]);
        let mut start = 0;
        for (i, row) in mask.chunks_exact(l).enumerate() {
            let n = row.iter().filter(|&&m| m == 0.0).count();
            all.push(((start, n), (start, n)));
            first.push(((i, 1), (start, n)));
            first_rows.push(start as u32);
            start += n;
        }
        let device = x.device();
        Ok(Some(Packing {
            rows: Tensor::new(rows, device)?,
            first_rows: Tensor::new(first_rows, device)?,
            all,
            first,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ext(mask: &[f32], b: usize, rows: usize) -> Tensor {
        let l = mask.len() / (b * rows);
        let m = Tensor::from_slice(mask, (b, rows, l), &Device::Cpu).unwrap();
        let m = if rows == 1 { m.squeeze(1).unwrap() } else { m };
        ops::extended_attention_mask(&m).unwrap()
    }

    fn packing(mask: &Tensor) -> Option<Packing> {
        let (b, _, _, l) = mask.dims4().unwrap();
        let x = Tensor::zeros((b, l, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let _no_grad = crate::nn::NoGrad::new();
        Packing::of(&x, mask).unwrap()
    }

    /// The kept rows and each sequence's spans, and every case where packing must not run.
    #[test]
    fn packing_keeps_the_attended_rows_and_only_where_that_is_exact() {
        let p = packing(&ext(&[1., 1., 0., 1., 1., 0., 0., 0.], 2, 1)).unwrap();
        assert_eq!(p.rows.to_vec1::<u32>().unwrap(), [0, 1, 3, 4]);
        assert_eq!(p.first_rows.to_vec1::<u32>().unwrap(), [0, 3]);
        assert_eq!(p.all, [((0, 3), (0, 3)), ((3, 1), (3, 1))]);
        assert_eq!(p.first, [((0, 1), (0, 3)), ((1, 1), (3, 1))]);
        // Nothing to drop; [CLS] masked; a soft mask; a per-query mask; a backward to record.
        assert!(packing(&ext(&[1.; 8], 2, 1)).is_none());
        assert!(packing(&ext(&[1., 1., 0., 1., 0., 1., 1., 1.], 2, 1)).is_none());
        assert!(packing(&ext(&[1., 1., 0.5, 1., 1., 0., 0., 0.], 2, 1)).is_none());
        assert!(packing(&ext(&[1., 0., 1., 0., 1., 1., 1., 1.], 1, 2)).is_none());
        let m = ext(&[1., 1., 0., 1.], 1, 1);
        let x = Tensor::zeros((1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(Packing::of(&x, &m).unwrap().is_none());
    }
}
