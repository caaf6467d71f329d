//! `BertImgForPreTraining` (Oscar paper §3.2; oscar-spec §1.2, §2.1): the masked token loss over
//! words and tags (MLM head tied to the word embeddings) plus the contrastive loss on [CLS]
//! (`cls.seq_relationship`, 2 classes for Oscar, 3 for Oscar+). Loss = MLM + contrastive.

use super::bert::BertImgModel;
use super::heads::BertLMPredictionHead;
use super::inputs::Inputs;
use crate::config::OscarConfig;
use crate::nn::{ops, Ctx, Linear, ParamBuilder};
use candle_core::{Result, Tensor};

pub struct BertImgForPreTraining {
    pub(crate) bert: BertImgModel,
    /// `cls.predictions`.
    pub(crate) predictions: BertLMPredictionHead,
    /// `cls.seq_relationship`.
    pub(crate) seq_relationship: Linear,
}

/// Logits of both objectives.
pub struct PreTrainingOutput {
    /// `[B, T+R, V]`: the MLM logits at every position, as the reference computes them.
    pub mlm_logits: Tensor,
    /// `[B, num_contrast_classes]`.
    pub contrastive_logits: Tensor,
}

impl BertImgForPreTraining {
    pub(crate) fn linears(&mut self) -> Vec<&mut Linear> {
        let mut v = self.bert.linears();
        v.extend(self.predictions.linears());
        v.push(&mut self.seq_relationship);
        v
    }

    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        let bert = BertImgModel::new(&pb.pp("bert"), cfg)?;
        let cls = pb.pp("cls");
        let tied = bert.embeddings.word_embeddings.weight.clone();
        Ok(BertImgForPreTraining {
            predictions: BertLMPredictionHead::new(&cls.pp("predictions"), cfg, Some(&tied))?,
            seq_relationship: Linear::new(
                &cls.pp("seq_relationship"),
                cfg.hidden_size,
                cfg.num_contrast_classes,
                cfg.initializer_range,
            )?,
            bert,
        })
    }

    /// The `bert` backbone under the head.
    pub fn backbone(&self) -> &BertImgModel {
        &self.bert
    }

    pub fn forward(&self, x: &Inputs, ctx: &Ctx) -> Result<PreTrainingOutput> {
        let out = self.bert.forward(x, ctx)?;
        Ok(PreTrainingOutput {
            mlm_logits: self.predictions.forward(&out.sequence)?,
            contrastive_logits: self.seq_relationship.forward(&out.pooled)?,
        })
    }

    /// `CE(MLM, ignore −1) + CE(contrastive)`. `mlm_labels` is `[B·(T+R)]` row-major (image
    /// positions −1); `contrastive_labels` one class per item. Returns (total, mlm, contrastive).
    pub fn loss(
        &self,
        out: &PreTrainingOutput,
        mlm_labels: &[i64],
        contrastive_labels: &[i64],
    ) -> Result<(Tensor, Option<Tensor>, Tensor)> {
        let v = out.mlm_logits.dim(2)?;
        let mlm = ops::cross_entropy(&out.mlm_logits.reshape(((), v))?, mlm_labels, -1)?;
        let Some(con) = ops::cross_entropy(&out.contrastive_logits, contrastive_labels, -1)? else {
            candle_core::bail!("every contrastive label is -1: nothing to learn from");
        };
        let total = match &mlm {
            Some(m) => m.add(&con)?,
            None => con.clone(),
        };
        Ok((total, mlm, con))
    }
}
