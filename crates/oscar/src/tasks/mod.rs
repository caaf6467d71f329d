//! Fine-tuning tasks built on the model, the data readers and the training machinery.

pub mod caption;
pub mod finetune;
pub mod first_stage;
pub mod nlvr2;
pub mod pretrain;
pub mod qa;
pub mod retrieval;
