//! Fine-tuning tasks built on the model, the data readers and the training machinery.

pub mod retrieval;
