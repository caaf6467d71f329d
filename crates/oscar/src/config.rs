//! `OscarConfig`: one serde struct mirroring Oscar's `config.json`
//! (HF `BertConfig` / `PretrainedConfig` fields plus the attributes Oscar's scripts set;
//! oscar-spec §5). Unknown fields are kept in `extra` and written back unchanged.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Which classifier a sequence-classification or multiple-choice head uses
/// (`config.classifier` in `ImageBertForSequenceClassification`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierKind {
    #[default]
    Linear,
    Mlp,
}

/// Loss of a classification head (`config.loss_type`; oscar-spec §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LossType {
    /// Binary cross-entropy on soft targets, times `num_labels` (VQA).
    Bce,
    /// KL divergence between a target distribution and `log_softmax(logits)`.
    Kl,
    /// Cross-entropy on a class index (GQA, retrieval, NLVR2).
    #[default]
    Xe,
    /// The reference's alias for cross-entropy.
    Sfmx,
}

fn d_vocab() -> usize {
    30522
}
fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_inter() -> usize {
    3072
}
fn d_act() -> String {
    "gelu".into()
}
fn d_drop() -> f64 {
    0.1
}
fn d_maxpos() -> usize {
    512
}
fn d_types() -> usize {
    2
}
fn d_init() -> f64 {
    0.02
}
fn d_eps() -> f64 {
    1e-12
}
fn d_img_dim() -> usize {
    2054
}
fn d_img_type() -> String {
    "faster_r-cnn".into()
}
fn d_contrast() -> usize {
    2
}
fn d_scale() -> usize {
    2
}
fn d_choice() -> usize {
    2
}
fn d_labels() -> usize {
    2
}

/// Mirror of Oscar's `config.json`. Field names are the JSON keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OscarConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_drop")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "d_drop")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "d_maxpos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_types")]
    pub type_vocab_size: usize,
    #[serde(default = "d_init")]
    pub initializer_range: f64,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_labels")]
    pub num_labels: usize,
    #[serde(default)]
    pub finetuning_task: Option<String>,

    // ---- Oscar attributes (oscar-spec §5) ----
    #[serde(default = "d_img_dim")]
    pub img_feature_dim: usize,
    #[serde(default = "d_img_type")]
    pub img_feature_type: String,
    /// `None` when the file does not say: the loader then infers it from `bert.LayerNorm.*`.
    #[serde(
        default,
        deserialize_with = "de_flag",
        skip_serializing_if = "Option::is_none"
    )]
    pub use_img_layernorm: Option<bool>,
    #[serde(default = "d_eps")]
    pub img_layer_norm_eps: f64,
    #[serde(default = "d_contrast")]
    pub num_contrast_classes: usize,
    #[serde(default)]
    pub classifier: ClassifierKind,
    #[serde(default = "d_scale")]
    pub cls_hidden_scale: usize,
    #[serde(default = "d_choice")]
    pub num_choice: usize,
    #[serde(default)]
    pub loss_type: LossType,
    #[serde(default, deserialize_with = "de_flag_false")]
    pub tie_weights: bool,
    #[serde(default, deserialize_with = "de_flag_false")]
    pub freeze_embedding: bool,
    #[serde(default)]
    pub label_smoothing: f64,
    #[serde(default)]
    pub drop_worst_ratio: f64,
    #[serde(default)]
    pub drop_worst_after: usize,

    /// Every other key of the file (`architectures`, `output_attentions`, `pruned_heads`, …),
    /// kept so that a converted checkpoint writes them back.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Oscar's scripts store flags as `0/1` ints or as booleans; accept both.
fn flag_value(v: serde_json::Value) -> std::result::Result<Option<bool>, String> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Bool(b) => Ok(Some(b)),
        serde_json::Value::Number(n) => match n.as_f64().map(|x| (x == 0.0, x == 1.0)) {
            Some((true, _)) => Ok(Some(false)),
            Some((_, true)) => Ok(Some(true)),
            _ => Err(format!("expected 0, 1, true or false, got {n}")),
        },
        other => Err(format!("expected 0, 1, true or false, got {other}")),
    }
}

fn de_flag<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<bool>, D::Error> {
    flag_value(serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_flag_false<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(de_flag(d)?.unwrap_or(false))
}

impl Default for OscarConfig {
    fn default() -> Self {
        Self::oscar_base()
    }
}

impl OscarConfig {
    /// Oscar-B: BERT-base (H 768, 12 layers, 12 heads, FFN 3072) with 2054-d regions.
    pub fn oscar_base() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }

    /// Oscar-L: BERT-large (H 1024, 24 layers, 16 heads, FFN 4096).
    pub fn oscar_large() -> Self {
        Self {
            hidden_size: 1024,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            intermediate_size: 4096,
            ..Self::oscar_base()
        }
    }

    /// The demo's size (world-prototype.md): H 64, 2 layers, 2 heads, FFN 256, image LayerNorm.
    pub fn small(vocab_size: usize, img_feature_dim: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 256,
            // BERT's 0.02 is set for width 768; at width 64 it leaves attention uniform for
            // long, and the masked words never learn to read the tags within the world's
            // budgets (README, "What the world shows"). 0.1 keeps about BERT-base's per-unit variance.
            initializer_range: 0.1,
            img_feature_dim,
            use_img_layernorm: Some(true),
            ..Self::oscar_base()
        }
    }

    /// The tests' size (HF's `BertModelTester` shape): H 32, 2 layers, 4 heads, FFN 37.
    pub fn tiny(vocab_size: usize, img_feature_dim: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 37,
            max_position_embeddings: 128,
            img_feature_dim,
            ..Self::oscar_base()
        }
    }

    /// Reads a `config.json`; errors name the file and the offending key.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| Error::bad_file(path, e))
    }

    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let cfg: Self =
            serde_json::from_str(text).map_err(|e| format!("not a valid config.json: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the relations between fields that the model relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let nz = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
            ("img_feature_dim", self.img_feature_dim),
            ("num_labels", self.num_labels),
        ];
        for (name, v) in nz {
            if v == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "`hidden_size` {} is not a multiple of `num_attention_heads` {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !matches!(
            self.hidden_act.as_str(),
            "gelu" | "relu" | "gelu_new" | "tanh"
        ) {
            return Err(format!(
                "`hidden_act` {:?} is not supported (expected gelu, relu, gelu_new or tanh)",
                self.hidden_act
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
            ("label_smoothing", self.label_smoothing),
            ("drop_worst_ratio", self.drop_worst_ratio),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("`{name}` {p} must be in [0, 1)"));
            }
        }
        if !(2..=3).contains(&self.num_contrast_classes) {
            return Err(format!(
                "`num_contrast_classes` {} must be 2 (Oscar) or 3 (Oscar+)",
                self.num_contrast_classes
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Whether the region embedding has its LayerNorm (`bert.LayerNorm`); false when unset.
    pub fn img_layernorm(&self) -> bool {
        self.use_img_layernorm.unwrap_or(false)
    }

    /// The JSON written next to a converted checkpoint: our fields, the kept extras, and the
    /// keys HF transformers needs to load the encoder back (`model_type`).
    pub fn to_json_pretty(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serializes");
        if let serde_json::Value::Object(map) = &mut v {
            map.entry("model_type").or_insert_with(|| "bert".into());
            // Written explicitly so that readers never have to infer it again.
            map.insert("use_img_layernorm".into(), self.img_layernorm().into());
        }
        serde_json::to_string_pretty(&v).expect("config serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_oscar_style_config_and_keeps_unknown_fields() {
        let text = r#"{"hidden_size": 32, "num_attention_heads": 4, "use_img_layernorm": 1,
            "classifier": "mlp", "loss_type": "bce", "tie_weights": 0, "code_voc": 512,
            "architectures": ["BertForImageCaptioning"], "img_feature_dim": 2054}"#;
        let cfg = OscarConfig::from_json(text).unwrap();
        assert_eq!(cfg.hidden_size, 32);
        assert_eq!(cfg.use_img_layernorm, Some(true));
        assert_eq!(cfg.classifier, ClassifierKind::Mlp);
        assert_eq!(cfg.loss_type, LossType::Bce);
        assert!(!cfg.tie_weights);
        assert_eq!(cfg.extra["code_voc"], 512);
        let back = OscarConfig::from_json(&cfg.to_json_pretty()).unwrap();
        assert_eq!(back.extra["code_voc"], 512);
        assert_eq!(back.extra["architectures"][0], "BertForImageCaptioning");
    }

    #[test]
    fn presets_and_validation() {
        assert_eq!(OscarConfig::oscar_base().hidden_size, 768);
        assert_eq!(OscarConfig::oscar_large().num_hidden_layers, 24);
        assert_eq!(OscarConfig::oscar_base().img_feature_dim, 2054);
        let err =
            OscarConfig::from_json(r#"{"hidden_size": 30, "num_attention_heads": 4}"#).unwrap_err();
        assert!(err.contains("not a multiple"), "{err}");
        let err = OscarConfig::from_json(r#"{"use_img_layernorm": "yes"}"#).unwrap_err();
        assert!(
            err.contains("use_img_layernorm") || err.contains("expected 0, 1"),
            "{err}"
        );
        let err = OscarConfig::from_json(r#"{"loss_type": "hinge"}"#).unwrap_err();
        assert!(err.contains("hinge"), "{err}");
    }
}
