//! Caption decoding (`BertForImageCaptioning.generate`, oscar-spec §3.5): at every step the
//! model reads `[CLS] w1 … wt [MASK]` + tags + regions under the seq2seq mask and predicts the
//! word at the `[MASK]` slot; `[SEP]` ends a caption.
//!
//! Two interchangeable step models: [`Cached`] keeps every layer's keys/values — tags and regions
//! never attend to the caption, so they are encoded once per image, and each step costs two
//! tokens (the last word and the `[MASK]`) — and [`Reencode`], the reference's way, which
//! re-encodes the whole prefix every step. Greedy, sampling and beam search run on either; a
//! test proves they give the same captions and scores.

use crate::data::attention_mask;
use crate::data::tensorize::{collate, Encoded};
use crate::model::{BertForImageCaptioning, Inputs, KvCache};
use crate::nn::{ops, Ctx};
use crate::tokenizer::SpecialIds;
use candle_core::{DType, Device, Result, Tensor};
use rand::Rng;

/// Decoding settings (the reference's test-time defaults).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DecodeSettings {
    /// Tokens including `[CLS]` (reference `max_gen_length` 20).
    pub max_gen_length: usize,
    pub num_beams: usize,
    /// Hypothesis score = sum of log-probs / length^length_penalty.
    pub length_penalty: f64,
    pub temperature: f64,
    /// 0: off.
    pub top_k: usize,
    /// 1.0: off.
    pub top_p: f64,
    /// Captions returned per image, best first (beam search: at most `num_beams`; greedy and
    /// sampling: 1). The reference's `num_return_sequences`.
    pub num_return_sequences: usize,
}

impl Default for DecodeSettings {
    fn default() -> Self {
        DecodeSettings {
            max_gen_length: 20,
            num_beams: 5,
            length_penalty: 1.0,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            num_return_sequences: 1,
        }
    }
}

/// What one image contributes besides the caption: tag ids (ending with `[SEP]`, or empty) and
/// region features (`num_regions` rows of the model's width).
#[derive(Debug, Clone)]
pub struct ImageContext {
    pub tag_ids: Vec<u32>,
    pub regions: Vec<f32>,
    pub num_regions: usize,
}

/// A finished caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Word pieces without `[CLS]` and the final `[SEP]`.
    pub tokens: Vec<u32>,
    /// Beam: sum of log-probs / length^penalty (length counts `[CLS]`); greedy/sampling: sum.
    pub score: f64,
    /// Sum of the log-probs of every generated token (the `[SEP]` included when generated).
    pub logprob: f64,
    /// Whether the caption ended with `[SEP]` (not cut at the maximum length).
    pub ended: bool,
}

impl Generated {
    /// The generated tokens with the closing `[SEP]` when there was one (what SCST scores).
    pub fn with_end(&self, sep: u32) -> Vec<u32> {
        let mut t = self.tokens.clone();
        if self.ended {
            t.push(sep);
        }
        t
    }
}

/// The decoder's view of a captioning model.
pub struct Decoder<'a> {
    pub model: &'a BertForImageCaptioning,
    pub special: SpecialIds,
    /// Position of the first tag (`max(max_seq_a_len, max_gen_length)`).
    pub tag_start: usize,
}

/// `[rows, P]` context tensors — embeddings input (tag ids, types, positions, regions) — and
/// each row's valid context positions (tags first, then regions; `len` = P).
struct ContextBatch {
    tag_ids: Tensor,
    regions: Tensor,
    valid: Vec<Vec<usize>>,
    len: usize,
    tag_len: usize,
}

impl Decoder<'_> {
    fn device(&self) -> Device {
        self.model.bert.device().clone()
    }

    /// Pads the contexts of `rows` (indices into `ctxs`) to common lengths.
    fn context_batch(&self, ctxs: &[ImageContext], rows: &[usize]) -> Result<ContextBatch> {
        let dim = self.model.bert.config().img_feature_dim;
        let lt = rows
            .iter()
            .map(|&r| ctxs[r].tag_ids.len())
            .max()
            .unwrap_or(0);
        let lr = rows
            .iter()
            .map(|&r| ctxs[r].num_regions)
            .max()
            .unwrap_or(0)
            .max(1);
        let n = rows.len();
        let mut ids = vec![self.special.pad; n * lt];
        let mut feats = vec![0f32; n * lr * dim];
        let mut valid = Vec::with_capacity(n);
        for (i, &r) in rows.iter().enumerate() {
            let c = &ctxs[r];
            if c.regions.len() != c.num_regions * dim {
                candle_core::bail!(
                    "image context has {} values for {} regions of width {dim}",
                    c.regions.len(),
                    c.num_regions
                );
            }
            ids[i * lt..i * lt + c.tag_ids.len()].copy_from_slice(&c.tag_ids);
            feats[i * lr * dim..i * lr * dim + c.regions.len()].copy_from_slice(&c.regions);
            valid.push((0..c.tag_ids.len()).chain(lt..lt + c.num_regions).collect());
        }
        let dev = self.device();
        Ok(ContextBatch {
            tag_ids: Tensor::from_vec(ids, (n, lt), &dev)?,
            regions: Tensor::from_vec(feats, (n, lr, dim), &dev)?,
            valid,
            len: lt + lr,
            tag_len: lt,
        })
    }

    /// Embeddings of the context positions `[rows, P, H]`: tags (type 1, positions from
    /// `tag_start`), then regions.
    fn context_embeddings(&self, c: &ContextBatch, ctx: &Ctx) -> Result<Tensor> {
        let bert = &self.model.bert;
        let img = bert.embed_regions(&c.regions, ctx)?;
        if c.tag_len == 0 {
            return Ok(img);
        }
        let n = c.tag_ids.dim(0)?;
        let pos: Vec<u32> = (0..n)
            .flat_map(|_| (0..c.tag_len).map(|j| (self.tag_start + j) as u32))
            .collect();
        let pos = Tensor::from_vec(pos, (n, c.tag_len), &self.device())?;
        let types = Tensor::ones((n, c.tag_len), DType::U32, &self.device())?;
        let tags = bert.embed_text(&c.tag_ids, Some(&types), Some(&pos), ctx)?;
        Tensor::cat(&[&tags, &img], 1)
    }

    /// Log-probabilities `[rows, V]` from hidden states `[rows, H]` at `[MASK]` slots.
    fn log_probs(&self, h: &Tensor) -> Result<Tensor> {
        ops::log_softmax(&self.model.word_logits(h)?)
    }

    /// Starts a cached decoder for `rows` (indices into `ctxs`).
    pub fn cached(&self, ctxs: &[ImageContext], rows: &[usize]) -> Result<Cached<'_>> {
        let _no_grad = crate::nn::NoGrad::new();
        let c = self.context_batch(ctxs, rows)?;
        let emb = self.context_embeddings(&c, &Ctx::eval())?;
        let (p, context_cols) = (c.len, c.valid);
        let masks: Vec<f32> = context_cols
            .iter()
            .flat_map(|cols| attention_mask::seq2seq_context(cols, p).into_vec())
            .collect();
        let mask = Tensor::from_vec(masks, (rows.len(), p, p), &self.device())?;
        let mut cache = KvCache::new();
        self.model.bert.encode_cached(&emb, &mask, &mut cache, p)?;
        Ok(Cached {
            dec: self,
            cache,
            context_cols,
            context_len: p,
            committed: 0,
        })
    }

    /// Starts the re-encoding decoder (the reference's way) for `rows`.
    pub fn reencode(&self, ctxs: &[ImageContext], rows: &[usize]) -> Result<Reencode<'_>> {
        Ok(Reencode {
            dec: self,
            ctxs: rows.iter().map(|&r| ctxs[r].clone()).collect(),
            history: vec![vec![]; rows.len()],
        })
    }
}

/// One decoding step over many rows: feed each row's last committed token, get the
/// log-probabilities of the next; `reorder` keeps/duplicates rows (beam search).
pub trait StepModel {
    fn step(&mut self, last: &[u32]) -> Result<Tensor>;
    fn reorder(&mut self, rows: &[usize]) -> Result<()>;
}

/// Decoding with per-layer key/value caches.
pub struct Cached<'a> {
    dec: &'a Decoder<'a>,
    /// Keys/values `[rows, nh, P + committed, d]` of context and committed tokens.
    cache: KvCache,
    /// Each row's valid context positions (of `context_len`: tags, then regions).
    context_cols: Vec<Vec<usize>>,
    context_len: usize,
    committed: usize,
}

impl StepModel for Cached<'_> {
    fn step(&mut self, last: &[u32]) -> Result<Tensor> {
        let dev = self.dec.device();
        let n = last.len();
        let t = self.committed;
        let _no_grad = crate::nn::NoGrad::new();
        let mask_id = self.dec.special.mask;
        let ids: Vec<u32> = last.iter().flat_map(|&w| [w, mask_id]).collect();
        let pos: Vec<u32> = (0..n).flat_map(|_| [t as u32, t as u32 + 1]).collect();
        let ids = Tensor::from_vec(ids, (n, 2), &dev)?;
        let pos = Tensor::from_vec(pos, (n, 2), &dev)?;
        let types = Tensor::zeros((n, 2), DType::U32, &dev)?;
        let emb = self
            .dec
            .model
            .bert
            .embed_text(&ids, Some(&types), Some(&pos), &Ctx::eval())?;
        // Keys: the valid context, every committed word, then [last, MASK] causally.
        let masks: Vec<f32> = self
            .context_cols
            .iter()
            .flat_map(|cols| attention_mask::seq2seq_step(cols, self.context_len, t, 2).into_vec())
            .collect();
        let mask = Tensor::from_vec(masks, (n, 2, self.context_len + t + 2), &dev)?;
        // The last word joins the cache; the [MASK] slot is asked only once.
        let h = self
            .dec
            .model
            .bert
            .encode_cached(&emb, &mask, &mut self.cache, 1)?;
        self.committed += 1;
        self.dec.log_probs(&h.narrow(1, 1, 1)?.squeeze(1)?)
    }

    fn reorder(&mut self, rows: &[usize]) -> Result<()> {
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            &self.dec.device(),
        )?;
        self.cache.reorder(&idx)?;
        self.context_cols = rows.iter().map(|&r| self.context_cols[r].clone()).collect();
        Ok(())
    }
}

/// Decoding by re-encoding `[CLS] w1 … wt [MASK]` + tags + regions at every step.
pub struct Reencode<'a> {
    dec: &'a Decoder<'a>,
    ctxs: Vec<ImageContext>,
    history: Vec<Vec<u32>>,
}

impl StepModel for Reencode<'_> {
    fn step(&mut self, last: &[u32]) -> Result<Tensor> {
        let _no_grad = crate::nn::NoGrad::new();
        for (h, &w) in self.history.iter_mut().zip(last) {
            h.push(w);
        }
        let words: Vec<Vec<u32>> = self
            .history
            .iter()
            .map(|h| h.iter().copied().chain([self.dec.special.mask]).collect())
            .collect();
        let x = full_inputs(self.dec, &self.ctxs, &words, None)?;
        let seq = self.dec.model.bert.forward(&x, &Ctx::eval())?.sequence;
        let t = words[0].len() - 1;
        self.dec.log_probs(&seq.narrow(1, t, 1)?.squeeze(1)?)
    }

    fn reorder(&mut self, rows: &[usize]) -> Result<()> {
        self.ctxs = rows.iter().map(|&r| self.ctxs[r].clone()).collect();
        self.history = rows.iter().map(|&r| self.history[r].clone()).collect();
        Ok(())
    }
}

/// The full input of captions `words` (one list per row, equal lengths) + each row's tags and
/// regions under the seq2seq mask. `queries`: extra `[MASK]` rows for parallel scoring — for
/// row b, `queries[b][j] = (position, k)` adds a `[MASK]` at `position` that attends words
/// `0..k`, itself and the context (see [`sequence_logprobs`]).
fn full_inputs(
    dec: &Decoder,
    ctxs: &[ImageContext],
    words: &[Vec<u32>],
    queries: Option<&[Vec<(usize, usize)>]>,
) -> Result<Inputs> {
    let s = dec.special;
    let items: Vec<Encoded> = words
        .iter()
        .enumerate()
        .map(|(b, w)| {
            let c = &ctxs[b];
            let q: &[(usize, usize)] = queries.map(|q| q[b].as_slice()).unwrap_or(&[]);
            // Tokens: the words, the queries, the tags; each with its own position id.
            let (lw, lq, lt) = (w.len(), q.len(), c.tag_ids.len());
            let mut ids = w.clone();
            ids.extend(std::iter::repeat_n(s.mask, lq));
            ids.extend(&c.tag_ids);
            let mut pos: Vec<u32> = (0..lw as u32).collect();
            pos.extend(q.iter().map(|&(p, _)| p as u32));
            pos.extend((0..lt).map(|j| (dec.tag_start + j) as u32));
            let mut types = vec![0u32; lw + lq];
            types.resize(lw + lq + lt, 1);
            let t = ids.len();
            let ctx_cols: Vec<usize> = (lw + lq..t).chain(t..t + c.num_regions).collect();
            // The words under the seq2seq layout; each query row sees words 0..k, itself and
            // the context.
            let mut m = attention_mask::seq2seq(t + c.num_regions, 0..lw, &ctx_cols);
            for (qi, &(_, k)) in q.iter().enumerate() {
                let r = lw + qi;
                m.allow(
                    [r],
                    &(0..k.min(lw))
                        .chain([r])
                        .chain(ctx_cols.iter().copied())
                        .collect::<Vec<_>>(),
                );
            }
            Encoded {
                input_ids: ids,
                token_type_ids: types,
                position_ids: Some(pos),
                text_a_len: lw,
                tags_len: lt,
                regions: c.regions.clone(),
                num_regions: c.num_regions,
                mask: Some(m),
            }
        })
        .collect();
    let t_len = items.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
    let r_len = items
        .iter()
        .map(|e| e.num_regions)
        .max()
        .unwrap_or(0)
        .max(1);
    let dim = dec.model.bert.config().img_feature_dim;
    collate(&items, t_len, r_len, dim, &dec.device()).map_err(candle_core::Error::wrap)
}

/// Mean log-probability per token of given captions (`tokens[b]`: the generated word pieces,
/// ending with `[SEP]` when the caption ended), computed in one forward pass: the words
/// `[CLS] w1 … w(n−1)` plus n `[MASK]` queries, the j-th at position j seeing words `0..j`,
/// exactly what step j of decoding computes. Differentiable (SCST's loss); `ctx` decides dropout.
pub fn sequence_logprobs(
    dec: &Decoder,
    ctxs: &[ImageContext],
    tokens: &[Vec<u32>],
    ctx: &Ctx,
) -> Result<Tensor> {
    if tokens.iter().any(|t| t.is_empty()) {
        candle_core::bail!("a caption with no generated token cannot be scored");
    }
    let words: Vec<Vec<u32>> = tokens
        .iter()
        .map(|t| {
            std::iter::once(dec.special.cls)
                .chain(t[..t.len() - 1].iter().copied())
                .collect()
        })
        .collect();
    let lw = words.iter().map(Vec::len).max().unwrap_or(0);
    // Pad words (never attended) so every row has lw words.
    let padded: Vec<Vec<u32>> = words
        .iter()
        .map(|w| {
            w.iter()
                .copied()
                .chain(std::iter::repeat_n(dec.special.pad, lw - w.len()))
                .collect()
        })
        .collect();
    let queries: Vec<Vec<(usize, usize)>> = tokens
        .iter()
        .map(|t| (1..=t.len()).map(|j| (j, j)).collect())
        .collect();
    let x = full_inputs(dec, ctxs, &padded, Some(&queries))?;
    let seq = dec.model.bert.forward(&x, ctx)?.sequence;
    let lq = queries.iter().map(Vec::len).max().unwrap_or(0);
    let logp = ops::log_softmax(&dec.model.word_logits(&seq.narrow(1, lw, lq)?)?)?; // [n, lq, V]
    let v = logp.dim(2)?;
    let (n, _) = (tokens.len(), 0);
    let mut idx = vec![0u32; n * lq];
    let mut weight = vec![0f32; n * lq];
    for (b, t) in tokens.iter().enumerate() {
        for (j, &tok) in t.iter().enumerate() {
            idx[b * lq + j] = tok;
            weight[b * lq + j] = 1.0 / t.len() as f32;
        }
    }
    let dev = logp.device().clone();
    let picked = logp
        .reshape((n * lq, v))?
        .gather(&Tensor::from_vec(idx, (n * lq, 1), &dev)?, 1)?
        .reshape((n, lq))?;
    (picked * Tensor::from_vec(weight, (n, lq), &dev)?)?.sum(1)
}

/// Greedy decoding of every row; rows stop at `[SEP]` (later steps feed `[PAD]`, ignored).
pub fn greedy(
    m: &mut dyn StepModel,
    rows: usize,
    special: SpecialIds,
    max_gen_length: usize,
) -> Result<Vec<Generated>> {
    sample_or_greedy::<rand::rngs::StdRng>(m, rows, special, max_gen_length, None)
}

/// Sampling settings for [`sample`].
pub struct Sampling<'r, R: Rng> {
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    pub rng: &'r mut R,
}

/// Multinomial sampling (temperature, then top-k, then top-p filtering, as HF's
/// `top_k_top_p_filtering`); `logprob` records the unfiltered model log-probability.
pub fn sample<R: Rng>(
    m: &mut dyn StepModel,
    rows: usize,
    special: SpecialIds,
    max_gen_length: usize,
    s: Sampling<R>,
) -> Result<Vec<Generated>> {
    sample_or_greedy(m, rows, special, max_gen_length, Some(s))
}

fn sample_or_greedy<R: Rng>(
    m: &mut dyn StepModel,
    rows: usize,
    special: SpecialIds,
    max_gen_length: usize,
    mut s: Option<Sampling<R>>,
) -> Result<Vec<Generated>> {
    let mut out: Vec<Generated> = vec![
        Generated {
            tokens: vec![],
            score: 0.0,
            logprob: 0.0,
            ended: false
        };
        rows
    ];
    let mut done = vec![false; rows];
    let mut last = vec![special.cls; rows];
    for _ in 1..max_gen_length {
        let lp = m.step(&last)?.to_vec2::<f32>()?;
        for r in 0..rows {
            if done[r] {
                last[r] = special.pad;
                continue;
            }
            let tok = match s.as_mut() {
                None => argmax(&lp[r]),
                Some(s) => draw(&lp[r], s),
            };
            out[r].logprob += lp[r][tok] as f64;
            if tok as u32 == special.sep {
                done[r] = true;
                out[r].ended = true;
            } else {
                out[r].tokens.push(tok as u32);
            }
            last[r] = tok as u32;
        }
        if done.iter().all(|d| *d) {
            break;
        }
    }
    for g in &mut out {
        g.score = g.logprob;
    }
    Ok(out)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn draw<R: Rng>(logp: &[f32], s: &mut Sampling<R>) -> usize {
    let t = s.temperature.max(1e-6);
    let mut items: Vec<(usize, f64)> = logp
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, l as f64 / t))
        .collect();
    items.sort_by(|a, b| b.1.total_cmp(&a.1));
    if s.top_k > 0 {
        items.truncate(s.top_k);
    }
    let max = items[0].1;
    let mut probs: Vec<f64> = items.iter().map(|(_, l)| (l - max).exp()).collect();
    let z: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= z);
    if s.top_p < 1.0 {
        // Keep the smallest prefix whose mass exceeds top_p (at least one token).
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if acc > s.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        items.truncate(keep);
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= z);
    }
    let u: f64 = s.rng.random();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return items[i].0;
        }
    }
    items[items.len() - 1].0
}

/// Finished hypotheses of one image (HF's `BeamHypotheses`, no early stopping).
pub(crate) struct Hypotheses {
    /// (score, words, sum of log-probs, ended with `[SEP]`).
    pub items: Vec<(f64, Vec<u32>, f64, bool)>,
    pub num_beams: usize,
    pub length_penalty: f64,
}

impl Hypotheses {
    pub fn new(num_beams: usize, length_penalty: f64) -> Self {
        Hypotheses {
            items: vec![],
            num_beams,
            length_penalty,
        }
    }

    /// `tokens` counts `[CLS]` + words (not `[SEP]`), as the reference's `len(hyp)`.
    pub fn add(&mut self, words: Vec<u32>, sum_logprobs: f64, ended: bool) {
        let score = sum_logprobs / ((words.len() + 1) as f64).powf(self.length_penalty);
        if self.items.len() < self.num_beams || score > self.worst() {
            self.items.push((score, words, sum_logprobs, ended));
            if self.items.len() > self.num_beams {
                let (wi, _) = self
                    .items
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
                    .expect("non-empty");
                self.items.remove(wi);
            }
        }
    }

    fn worst(&self) -> f64 {
        self.items.iter().map(|h| h.0).fold(f64::INFINITY, f64::min)
    }

    /// No better hypothesis can come from a beam whose best sum is `best_sum` at `cur_len`.
    pub fn is_done(&self, best_sum: f64, cur_len: usize) -> bool {
        self.items.len() >= self.num_beams
            && self.worst() >= best_sum / (cur_len as f64).powf(self.length_penalty)
    }

    pub fn best(&self) -> Option<Generated> {
        self.top(1).pop()
    }

    /// The `n` best hypotheses, best first (the reference's `num_return_sequences`).
    pub fn top(&self, n: usize) -> Vec<Generated> {
        let mut items: Vec<&(f64, Vec<u32>, f64, bool)> = self.items.iter().collect();
        items.sort_by(|a, b| b.0.total_cmp(&a.0));
        items
            .into_iter()
            .take(n)
            .map(|(s, w, l, e)| Generated {
                tokens: w.clone(),
                score: *s,
                logprob: *l,
                ended: *e,
            })
            .collect()
    }
}

/// Beam search over `images` images, `num_beams` rows each (row = image·beams + beam), as the
/// reference's `_generate_beam_search`: 2·beams candidates per image and step, `[SEP]`
/// candidates ranked within the beams become hypotheses, unfinished beams are added at the
/// maximum length. `m` must have been started on `images·num_beams` rows (image-major).
pub fn beam_search(
    m: &mut dyn StepModel,
    images: usize,
    special: SpecialIds,
    st: &DecodeSettings,
) -> Result<Vec<Generated>> {
    Ok(beam_search_n(m, images, special, st, 1)?
        .into_iter()
        .flatten()
        .collect())
}

/// [`beam_search`] returning each image's `n` best hypotheses (at most `num_beams`), best first.
pub fn beam_search_n(
    m: &mut dyn StepModel,
    images: usize,
    special: SpecialIds,
    st: &DecodeSettings,
    n: usize,
) -> Result<Vec<Vec<Generated>>> {
    let nb = st.num_beams.max(1);
    let mut beam_scores: Vec<f64> = (0..images * nb)
        .map(|r| if r % nb == 0 { 0.0 } else { -1e9 })
        .collect();
    let mut seqs: Vec<Vec<u32>> = vec![vec![]; images * nb];
    let mut hyps: Vec<Hypotheses> = (0..images)
        .map(|_| Hypotheses::new(nb, st.length_penalty))
        .collect();
    let mut done = vec![false; images];
    let mut last = vec![special.cls; images * nb];
    let mut cur_len = 1;
    while cur_len < st.max_gen_length {
        let lp = m.step(&last)?.to_vec2::<f32>()?;
        let v = lp[0].len();
        let mut origin = Vec::with_capacity(images * nb);
        let mut next_last = Vec::with_capacity(images * nb);
        let mut next_scores = Vec::with_capacity(images * nb);
        let mut next_seqs = Vec::with_capacity(images * nb);
        for i in 0..images {
            if done[i] {
                for b in 0..nb {
                    origin.push(i * nb);
                    next_last.push(special.pad);
                    next_scores.push(0.0);
                    next_seqs.push(seqs[i * nb + b].clone());
                }
                continue;
            }
            // Top 2·beams of beam score + log-prob over (beam, token).
            let mut cand: Vec<(f64, usize, usize)> = Vec::with_capacity(2 * nb);
            for b in 0..nb {
                let r = i * nb + b;
                for (tok, &l) in lp[r].iter().enumerate() {
                    let s = beam_scores[r] + l as f64;
                    if cand.len() < 2 * nb {
                        cand.push((s, b, tok));
                        cand.sort_by(|x, y| y.0.total_cmp(&x.0));
                    } else if s > cand[2 * nb - 1].0 {
                        cand[2 * nb - 1] = (s, b, tok);
                        cand.sort_by(|x, y| y.0.total_cmp(&x.0));
                    }
                }
            }
            let _ = v;
            let mut picked = 0;
            for (rank, &(s, b, tok)) in cand.iter().enumerate() {
                let r = i * nb + b;
                if tok as u32 == special.sep {
                    if rank < nb {
                        hyps[i].add(seqs[r].clone(), s, true);
                    }
                } else {
                    origin.push(r);
                    next_last.push(tok as u32);
                    next_scores.push(s);
                    let mut sq = seqs[r].clone();
                    sq.push(tok as u32);
                    next_seqs.push(sq);
                    picked += 1;
                }
                if picked == nb {
                    break;
                }
            }
            let best = cand.iter().map(|c| c.0).fold(f64::NEG_INFINITY, f64::max);
            done[i] = hyps[i].is_done(best, cur_len);
        }
        m.reorder(&origin)?;
        beam_scores = next_scores;
        seqs = next_seqs;
        last = next_last;
        cur_len += 1;
        if done.iter().all(|d| *d) {
            break;
        }
    }
    for i in 0..images {
        if !done[i] {
            for b in 0..nb {
                hyps[i].add(seqs[i * nb + b].clone(), beam_scores[i * nb + b], false);
            }
        }
    }
    hyps.iter()
        .map(|h| match h.top(n.max(1)) {
            v if v.is_empty() => Err(candle_core::Error::Msg(
                "beam search finished no hypothesis".into(),
            )),
            v => Ok(v),
        })
        .collect()
}
