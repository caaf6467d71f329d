//! `BertForImageCaptioning` (VinVL code; oscar-spec §1.2, §3.5): the backbone under the seq2seq
//! mask, an MLM head (`cls.predictions`, decoder tied only when `tie_weights`) applied to the
//! masked caption positions, and `BertCaptioningLoss` (label smoothing, drop-worst).

use super::bert::BertImgModel;
use super::heads::BertLMPredictionHead;
use super::inputs::Inputs;
use crate::config::OscarConfig;
use crate::nn::{ops, Ctx, ParamBuilder};
use crate::train::collective::Replica;
use candle_core::{bail, DType, Result, Tensor};

pub struct BertForImageCaptioning {
    pub(crate) bert: BertImgModel,
    /// `cls.predictions`.
    pub(crate) predictions: BertLMPredictionHead,
    label_smoothing: f64,
    drop_worst_ratio: f64,
    drop_worst_after: usize,
}

impl BertForImageCaptioning {
    pub(crate) fn linears(&mut self) -> Vec<&mut crate::nn::Linear> {
        let mut v = self.bert.linears();
        v.extend(self.predictions.linears());
        v
    }

    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        let bert = BertImgModel::new(&pb.pp("bert"), cfg)?;
        let tied = cfg
            .tie_weights
            .then(|| bert.embeddings.word_embeddings.weight.clone());
        Ok(BertForImageCaptioning {
            predictions: BertLMPredictionHead::new(
                &pb.pp("cls").pp("predictions"),
                cfg,
                tied.as_ref(),
            )?,
            bert,
            label_smoothing: cfg.label_smoothing,
            drop_worst_ratio: cfg.drop_worst_ratio,
            drop_worst_after: cfg.drop_worst_after,
        })
    }

    /// Logits `[M, V]` at the positions where `masked_pos` (`[B, S]`, S ≤ T, 0/1) is 1, in
    /// row-major order, as the reference's `sequence_output[masked_pos == 1]`.
    /// The `bert` backbone under the head.
    pub fn backbone(&self) -> &BertImgModel {
        &self.bert
    }

    pub fn forward(&self, x: &Inputs, masked_pos: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let out = self.bert.forward(x, ctx)?;
        let (b, s) = masked_pos.dims2()?;
        let (_, l, h) = out.sequence.dims3()?;
        if b != out.sequence.dim(0)? || s > l {
            bail!(
                "masked_pos has shape {:?}, expected [{}, ≤{l}]",
                masked_pos.dims(),
                out.sequence.dim(0)?
            );
        }
        let flags = masked_pos
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let rows: Vec<u32> = flags
            .iter()
            .enumerate()
            .filter(|(_, f)| **f != 0.0)
            .map(|(i, _)| ((i / s) * l + i % s) as u32)
            .collect();
        if rows.is_empty() {
            bail!("masked_pos selects no position");
        }
        let picked = out
            .sequence
            .reshape((b * l, h))?
            .index_select(&Tensor::new(rows.as_slice(), out.sequence.device())?, 0)?;
        self.predictions.forward(&picked)
    }

    /// `BertCaptioningLoss` on logits `[M, V]` and the M target ids; `iteration` is the
    /// reference's internal counter (1 on the first call): drop-worst applies when it exceeds
    /// `drop_worst_after`, keeping the `int(M·(1−ratio))` smallest token losses.
    /// Word logits `[.., V]` from last hidden states `[.., H]` (the `cls.predictions` head).
    pub fn word_logits(&self, h: &Tensor) -> Result<Tensor> {
        self.predictions.forward(h)
    }

    /// This rank's share of [`Self::loss`] over a data-parallel batch whose ranks hold
    /// `counts` masked tokens each (this rank's `targets` among them); see
    /// [`captioning_loss_share`].
    pub fn loss_share(
        &self,
        logits: &Tensor,
        targets: &[u32],
        iteration: usize,
        part: Replica<'_>,
        counts: &[usize],
    ) -> crate::error::Result<Tensor> {
        if part.size() == 1 {
            return Ok(self.loss(logits, targets, iteration)?);
        }
        let drop_worst = (self.drop_worst_ratio > 0.0 && iteration > self.drop_worst_after)
            .then_some(self.drop_worst_ratio);
        captioning_loss_share(
            logits,
            targets,
            self.label_smoothing,
            drop_worst,
            part,
            counts,
        )
    }

    pub fn loss(&self, logits: &Tensor, targets: &[u32], iteration: usize) -> Result<Tensor> {
        captioning_loss(
            logits,
            targets,
            self.label_smoothing,
            self.drop_worst_ratio,
            self.drop_worst_after,
            iteration,
        )
    }
}

/// Smoothed-KL captioning loss (see [`BertForImageCaptioning::loss`]).
pub fn captioning_loss(
    logits: &Tensor,
    targets: &[u32],
    eps: f64,
    drop_worst_ratio: f64,
    drop_worst_after: usize,
    iteration: usize,
) -> Result<Tensor> {
    let per_token = captioning_token_losses(logits, targets, eps)?;
    let kept = if drop_worst_ratio > 0.0 && iteration > drop_worst_after {
        let order = drop_worst_kept(&per_token.to_vec1::<f32>()?, drop_worst_ratio)?;
        per_token.index_select(&Tensor::new(order.as_slice(), logits.device())?, 0)?
    } else {
        per_token
    };
    kept.mean_all()
}

/// One rank's share of [`captioning_loss`] over a batch whose ranks hold `counts` masked
/// tokens each, this rank's `targets` among them: summed over the ranks, the shares give the
/// whole batch's loss. Drop-worst (`Some(ratio)`) keeps the smallest token losses of the whole
/// batch, as one process would; the per-token losses are gathered from every rank.
pub fn captioning_loss_share(
    logits: &Tensor,
    targets: &[u32],
    eps: f64,
    drop_worst: Option<f64>,
    part: Replica<'_>,
    counts: &[usize],
) -> crate::error::Result<Tensor> {
    let global: usize = counts.iter().sum();
    let per_token = match targets.is_empty() {
        true => None,
        false => Some(captioning_token_losses(logits, targets, eps)?),
    };
    let Some(ratio) = drop_worst else {
        let mean = per_token.map(|t| t.mean_all()).transpose()?;
        return part.share(mean, targets.len(), global, logits);
    };
    let local: Vec<f32> = match &per_token {
        Some(t) => t.to_vec1()?,
        None => Vec::new(),
    };
    let all = part.gather(&local, counts)?;
    let kept = drop_worst_kept(&all, ratio)?;
    let start: usize = counts[..part.rank()].iter().sum();
    let mine: Vec<u32> = kept
        .iter()
        .filter(|&&i| (start..start + targets.len()).contains(&(i as usize)))
        .map(|&i| i - start as u32)
        .collect();
    match (per_token, mine.is_empty()) {
        (Some(t), false) => {
            let picked = t.index_select(&Tensor::new(mine.as_slice(), logits.device())?, 0)?;
            Ok((picked.sum_all()? / kept.len() as f64)?)
        }
        _ => part.share(None, 0, kept.len(), logits),
    }
}

/// The smoothed-KL loss of each of the M masked tokens (`[M]`), before drop-worst and the mean.
pub fn captioning_token_losses(logits: &Tensor, targets: &[u32], eps: f64) -> Result<Tensor> {
    let (m, v) = logits.dims2()?;
    if targets.len() != m {
        bail!("{} target ids for {m} masked positions", targets.len());
    }
    if let Some(bad) = targets.iter().find(|t| **t as usize >= v) {
        bail!("target id {bad} is outside the vocabulary of {v}");
    }
    let mut smooth = vec![(eps / (v as f64 - 1.0)) as f32; m * v];
    for (i, &t) in targets.iter().enumerate() {
        smooth[i * v + t as usize] = (1.0 - eps) as f32;
    }
    let smooth = Tensor::from_vec(smooth, (m, v), logits.device())?;
    ops::kl_div_pointwise(&ops::log_softmax(logits)?, &smooth)?.sum(1)
}

/// Which of the `values` drop-worst keeps: the indices of the `int(M·(1−ratio))` smallest,
/// ties by position (a stable sort, as the reference's `topk` of the negated losses).
pub fn drop_worst_kept(values: &[f32], ratio: f64) -> Result<Vec<u32>> {
    let m = values.len();
    let k = (m as f64 * (1.0 - ratio)) as usize;
    let mut order: Vec<u32> = (0..m as u32).collect();
    order.sort_by(|a, b| values[*a as usize].total_cmp(&values[*b as usize]));
    order.truncate(k);
    if order.is_empty() {
        bail!("drop_worst_ratio {ratio} leaves no token of {m}");
    }
    Ok(order)
}
