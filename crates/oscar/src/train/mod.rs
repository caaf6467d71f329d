//! Training machinery shared by pre-training and every fine-tuning task.

pub mod optim;
pub mod schedule;
