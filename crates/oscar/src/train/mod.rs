//! Training machinery shared by pre-training and every fine-tuning task.

pub mod checkpoint;
pub mod optim;
pub mod pretrain;
pub mod schedule;
