//! The Oscar model: `BertImgModel` (oscar/modeling/modeling_bert.py) and its task heads.
//! One struct per checkpoint sub-module, so the struct tree is the state-dict key tree.

pub mod bert;
pub mod captioning;
pub mod classification;
pub mod embeddings;
pub mod encoder;
pub mod heads;
pub mod inputs;
pub mod pretraining;

pub use bert::{BertImgModel, EncoderOutput};
pub use captioning::BertForImageCaptioning;
pub use classification::{
    ClassLabels, ImageBertForMultipleChoice, ImageBertForSequenceClassification,
};
pub use encoder::KvCache;
pub use inputs::Inputs;
pub use pretraining::BertImgForPreTraining;
