//! A model of whichever head a checkpoint carries, for tools that take any checkpoint
//! (`oscar inspect`, `convert`, `encode`).

use super::keys::HeadKind;
use super::load::{load_model, Backbone, Checkpoint, Fresh, Loaded};
use crate::config::OscarConfig;
use crate::error::Result;
use crate::model::{
    BertForImageCaptioning, BertImgForPreTraining, BertImgModel, EncoderOutput,
    ImageBertForMultipleChoice, ImageBertForSequenceClassification,
};
use crate::nn::{LoadReport, Params};
use candle_core::Tensor;
use std::collections::HashMap;

pub enum AnyModel {
    Backbone(Backbone),
    PreTraining(BertImgForPreTraining),
    SequenceClassification(ImageBertForSequenceClassification),
    MultipleChoice(ImageBertForMultipleChoice),
    Captioning(BertForImageCaptioning),
}

/// What a checkpoint holds, from its keys.
pub fn detect_head(ckpt: &Checkpoint, cfg: Option<&OscarConfig>) -> HeadKind {
    let keys: Vec<&str> = ckpt.tensors.keys().map(String::as_str).collect();
    let shapes: HashMap<String, Vec<usize>> = ckpt
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    let hidden = cfg
        .or(ckpt.config.as_ref())
        .map(|c| c.hidden_size)
        .or_else(|| {
            shapes
                .iter()
                .find(|(k, _)| k.ends_with("word_embeddings.weight"))
                .map(|(_, s)| s[1])
        })
        .unwrap_or(768);
    HeadKind::detect(&keys, &shapes, hidden)
}

fn wrap<M>(
    l: Loaded<M>,
    f: impl FnOnce(M) -> AnyModel,
) -> (AnyModel, Params, OscarConfig, LoadReport) {
    (f(l.model), l.params, l.config, l.report)
}

impl AnyModel {
    /// Builds the model of the checkpoint's own head on `device`.
    pub fn load(
        ckpt: Checkpoint,
        cfg: Option<OscarConfig>,
        fresh: Fresh,
        device: &candle_core::Device,
    ) -> Result<(HeadKind, AnyModel, Params, OscarConfig, LoadReport)> {
        let head = detect_head(&ckpt, cfg.as_ref());
        let (m, p, c, r) = match head {
            HeadKind::Backbone => wrap(
                load_model::<Backbone>(ckpt, cfg, fresh, 0, device)?,
                AnyModel::Backbone,
            ),
            HeadKind::PreTraining => wrap(
                load_model::<BertImgForPreTraining>(ckpt, cfg, fresh, 0, device)?,
                AnyModel::PreTraining,
            ),
            HeadKind::SequenceClassification => wrap(
                load_model::<ImageBertForSequenceClassification>(ckpt, cfg, fresh, 0, device)?,
                AnyModel::SequenceClassification,
            ),
            HeadKind::MultipleChoice => wrap(
                load_model::<ImageBertForMultipleChoice>(ckpt, cfg, fresh, 0, device)?,
                AnyModel::MultipleChoice,
            ),
            HeadKind::Captioning => wrap(
                load_model::<BertForImageCaptioning>(ckpt, cfg, fresh, 0, device)?,
                AnyModel::Captioning,
            ),
        };
        Ok((head, m, p, c, r))
    }

    /// Every `Linear` layer, for int8 inference ([`super::quantize_linears`]).
    pub fn linears(&mut self) -> Vec<&mut crate::nn::Linear> {
        match self {
            AnyModel::Backbone(m) => m.0.linears(),
            AnyModel::PreTraining(m) => m.linears(),
            AnyModel::SequenceClassification(m) => m.linears(),
            AnyModel::MultipleChoice(m) => m.linears(),
            AnyModel::Captioning(m) => m.linears(),
        }
    }

    pub fn bert(&self) -> &BertImgModel {
        match self {
            AnyModel::Backbone(m) => &m.0,
            AnyModel::PreTraining(m) => &m.bert,
            AnyModel::SequenceClassification(m) => &m.bert,
            AnyModel::MultipleChoice(m) => &m.bert,
            AnyModel::Captioning(m) => &m.bert,
        }
    }

    /// Each head's logits on an inference pass of the backbone, by name. The pair head of
    /// NLVR2 needs two images per statement, so it contributes nothing here.
    pub fn head_outputs(
        &self,
        out: &EncoderOutput,
    ) -> candle_core::Result<Vec<(&'static str, Tensor)>> {
        Ok(match self {
            AnyModel::Backbone(_) | AnyModel::MultipleChoice(_) => vec![],
            AnyModel::PreTraining(m) => vec![
                ("mlm_logits", m.predictions.forward(&out.sequence)?),
                (
                    "contrastive_logits",
                    m.seq_relationship.forward(&out.pooled)?,
                ),
            ],
            AnyModel::SequenceClassification(m) => {
                vec![("logits", m.classifier.forward(&out.pooled)?)]
            }
            AnyModel::Captioning(m) => vec![("mlm_logits", m.predictions.forward(&out.sequence)?)],
        })
    }
}
