//! `ImageBertForSequenceClassification` (VQA, GQA, retrieval) and `ImageBertForMultipleChoice`
//! (NLVR2's pair head) from Oscar's modeling_bert.py (oscar-spec §1.2, §3.1–3.4).

use super::bert::BertImgModel;
use super::heads::Classifier;
use super::inputs::Inputs;
use crate::config::{LossType, OscarConfig};
use crate::nn::{ops, Ctx, ParamBuilder};
use candle_core::{bail, Result, Tensor};

/// Targets of a classification loss.
pub enum ClassLabels<'a> {
    /// One class index per item (`xe`/`sfmx`; GQA, retrieval, NLVR2).
    Index(&'a [i64]),
    /// `[B, num_labels]` targets: soft scores for `bce` (VQA), a distribution for `kl`,
    /// or `[B, 1]` values for regression when `num_labels == 1`.
    Dense(&'a Tensor),
}

/// The loss the reference computes for `loss_type` (oscar-spec §1.2):
/// `num_labels == 1` → MSE; `bce` → BCE-with-logits(mean)·num_labels; `kl` → KLDiv(batchmean)
/// of `log_softmax(logits)`; otherwise cross-entropy.
pub fn classification_loss(
    logits: &Tensor,
    labels: ClassLabels,
    loss_type: LossType,
) -> Result<Tensor> {
    let (b, n) = logits.dims2()?;
    if n == 1 {
        let ClassLabels::Dense(t) = labels else {
            bail!("num_labels == 1 is regression: expected dense targets")
        };
        return ops::mse(&logits.flatten_all()?, &t.flatten_all()?);
    }
    match (loss_type, labels) {
        (LossType::Bce, ClassLabels::Dense(t)) => {
            check_dense(t, b, n)?;
            ops::bce_with_logits(logits, t)? * n as f64
        }
        (LossType::Kl, ClassLabels::Dense(t)) => {
            check_dense(t, b, n)?;
            ops::kl_div_pointwise(&ops::log_softmax(logits)?, t)?.sum_all()? / b as f64
        }
        (LossType::Xe | LossType::Sfmx, ClassLabels::Index(idx)) => {
            match ops::cross_entropy(logits, idx, -100)? {
                Some(l) => Ok(l),
                None => bail!("every label is ignored"),
            }
        }
        (lt, _) => bail!(
            "loss_type {lt:?} expects {} labels",
            if matches!(lt, LossType::Bce | LossType::Kl) {
                "dense [B, num_labels]"
            } else {
                "class-index"
            }
        ),
    }
}

fn check_dense(t: &Tensor, b: usize, n: usize) -> Result<()> {
    if t.dims() != [b, n] {
        bail!("targets have shape {:?}, expected [{b}, {n}]", t.dims());
    }
    Ok(())
}

/// `classifier(dropout(pooled))`, keys `bert.*` and `classifier.*`.
pub struct ImageBertForSequenceClassification {
    pub(crate) bert: BertImgModel,
    pub(crate) classifier: Classifier,
    dropout: f64,
    loss_type: LossType,
}

impl ImageBertForSequenceClassification {
    pub(crate) fn linears(&mut self) -> Vec<&mut crate::nn::Linear> {
        let mut v = self.bert.linears();
        v.extend(self.classifier.linears());
        v
    }

    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        Ok(ImageBertForSequenceClassification {
            bert: BertImgModel::new(&pb.pp("bert"), cfg)?,
            classifier: Classifier::new(&pb.pp("classifier"), cfg, cfg.hidden_size, false)?,
            dropout: cfg.hidden_dropout_prob,
            loss_type: cfg.loss_type,
        })
    }

    /// `[B, num_labels]` logits.
    /// The `bert` backbone under the head.
    pub fn backbone(&self) -> &BertImgModel {
        &self.bert
    }

    pub fn forward(&self, x: &Inputs, ctx: &Ctx) -> Result<Tensor> {
        let pooled = self.bert.forward_pooled(x, ctx)?;
        self.classifier
            .forward(&ops::dropout(&pooled, self.dropout, ctx)?)
    }

    pub fn loss(&self, logits: &Tensor, labels: ClassLabels) -> Result<Tensor> {
        classification_loss(logits, labels, self.loss_type)
    }
}

/// NLVR2: the statement with each of `num_choice` images; the pooled outputs are concatenated
/// (`[B, C·H]`) and classified by `classifier` (MLP with LayerNorm when `use_img_layernorm`).
pub struct ImageBertForMultipleChoice {
    pub(crate) bert: BertImgModel,
    pub(crate) classifier: Classifier,
    num_choice: usize,
    dropout: f64,
    loss_type: LossType,
}

impl ImageBertForMultipleChoice {
    pub(crate) fn linears(&mut self) -> Vec<&mut crate::nn::Linear> {
        let mut v = self.bert.linears();
        v.extend(self.classifier.linears());
        v
    }

    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        Ok(ImageBertForMultipleChoice {
            bert: BertImgModel::new(&pb.pp("bert"), cfg)?,
            classifier: Classifier::new(
                &pb.pp("classifier"),
                cfg,
                cfg.num_choice * cfg.hidden_size,
                cfg.img_layernorm(),
            )?,
            num_choice: cfg.num_choice,
            dropout: cfg.hidden_dropout_prob,
            loss_type: cfg.loss_type,
        })
    }

    /// `x` holds `B·C` rows, the C choices of each item consecutive. Returns `[B, num_labels]`.
    /// The `bert` backbone under the head.
    pub fn backbone(&self) -> &BertImgModel {
        &self.bert
    }

    pub fn forward(&self, x: &Inputs, ctx: &Ctx) -> Result<Tensor> {
        let rows = x.input_ids.dim(0)?;
        if rows % self.num_choice != 0 {
            bail!(
                "{rows} rows is not a multiple of num_choice {}",
                self.num_choice
            );
        }
        let pooled = ops::dropout(&self.bert.forward_pooled(x, ctx)?, self.dropout, ctx)?;
        let h = pooled.dim(1)?;
        self.classifier
            .forward(&pooled.reshape((rows / self.num_choice, self.num_choice * h))?)
    }

    pub fn loss(&self, logits: &Tensor, labels: ClassLabels) -> Result<Tensor> {
        classification_loss(logits, labels, self.loss_type)
    }
}
