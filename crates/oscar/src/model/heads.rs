//! Prediction heads: HF `BertPredictionHeadTransform`, `BertLMPredictionHead` (decoder tied to
//! the word embeddings or its own, plus a separate bias) and Oscar's classifiers.

use crate::config::{ClassifierKind, OscarConfig};
use crate::nn::{ops, Init, LayerNorm, Linear, ParamBuilder};
use candle_core::{Result, Tensor};

/// `transform`: dense → activation → LayerNorm.
pub struct BertPredictionHeadTransform {
    pub(crate) dense: Linear,
    pub(crate) layer_norm: LayerNorm,
    act: String,
}

impl BertPredictionHeadTransform {
    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig) -> Result<Self> {
        Ok(BertPredictionHeadTransform {
            dense: Linear::new(
                &pb.pp("dense"),
                cfg.hidden_size,
                cfg.hidden_size,
                cfg.initializer_range,
            )?,
            layer_norm: LayerNorm::new(&pb.pp("LayerNorm"), cfg.hidden_size, cfg.layer_norm_eps)?,
            act: cfg.hidden_act.clone(),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.layer_norm
            .forward(&ops::linear_activation(&self.dense, x, &self.act)?)
    }
}

/// `cls.predictions`: transform, then `decoder` (`[V, H]`, no bias) plus `bias[V]`.
pub struct BertLMPredictionHead {
    pub(crate) transform: BertPredictionHeadTransform,
    /// Weight: the word-embedding matrix itself when tied, else the head's own
    /// `decoder.weight`; bias: `cls.predictions.bias`.
    pub(crate) decoder: Linear,
}

impl BertLMPredictionHead {
    /// `tied`: the word embeddings to share, or `None` for an own `decoder.weight`.
    pub fn new(pb: &ParamBuilder, cfg: &OscarConfig, tied: Option<&Tensor>) -> Result<Self> {
        let decoder_weight = match tied {
            Some(w) => w.clone(),
            None => pb.pp("decoder").get(
                (cfg.vocab_size, cfg.hidden_size),
                "weight",
                Init::Normal(cfg.initializer_range),
            )?,
        };
        Ok(BertLMPredictionHead {
            transform: BertPredictionHeadTransform::new(&pb.pp("transform"), cfg)?,
            decoder: Linear::from_tensors(
                decoder_weight,
                Some(pb.get(cfg.vocab_size, "bias", Init::Zeros)?),
            ),
        })
    }

    pub(crate) fn linears(&mut self) -> Vec<&mut Linear> {
        vec![&mut self.transform.dense, &mut self.decoder]
    }

    /// `[N, H]` or `[B, L, H]` hidden states → vocabulary logits of the same leading shape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.decoder.forward(&self.transform.forward(x)?)
    }
}

/// Oscar's `classifier`: `Linear(in, labels)`, or the MLP `Linear(in, H·s) → ReLU →
/// [LayerNorm(H·s)] → Linear(H·s, labels)` (keys `classifier.0`, `classifier.2`[, `classifier.3`]).
pub enum Classifier {
    Linear(Linear),
    Mlp {
        fc1: Linear,
        norm: Option<LayerNorm>,
        fc2: Linear,
    },
}

impl Classifier {
    pub(crate) fn linears(&mut self) -> Vec<&mut Linear> {
        match self {
            Classifier::Linear(l) => vec![l],
            Classifier::Mlp { fc1, fc2, .. } => vec![fc1, fc2],
        }
    }

    /// `pb` is the builder at `classifier`; `with_norm` adds the NLVR2 LayerNorm.
    pub fn new(
        pb: &ParamBuilder,
        cfg: &OscarConfig,
        in_dim: usize,
        with_norm: bool,
    ) -> Result<Self> {
        let std = cfg.initializer_range;
        Ok(match cfg.classifier {
            ClassifierKind::Linear => {
                Classifier::Linear(Linear::new(pb, in_dim, cfg.num_labels, std)?)
            }
            ClassifierKind::Mlp => {
                let hid = cfg.hidden_size * cfg.cls_hidden_scale;
                let fc1 = Linear::new(&pb.pp("0"), in_dim, hid, std)?;
                if with_norm {
                    let norm = LayerNorm::new(&pb.pp("2"), hid, cfg.layer_norm_eps)?;
                    Classifier::Mlp {
                        fc1,
                        norm: Some(norm),
                        fc2: Linear::new(&pb.pp("3"), hid, cfg.num_labels, std)?,
                    }
                } else {
                    Classifier::Mlp {
                        fc1,
                        norm: None,
                        fc2: Linear::new(&pb.pp("2"), hid, cfg.num_labels, std)?,
                    }
                }
            }
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Classifier::Linear(l) => l.forward(x),
            Classifier::Mlp { fc1, norm, fc2 } => {
                let mut h = fc1.forward(x)?.relu()?;
                if let Some(n) = norm {
                    h = n.forward(&h)?;
                }
                fc2.forward(&h)
            }
        }
    }
}
