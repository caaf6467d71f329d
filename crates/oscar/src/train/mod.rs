//! Training machinery shared by pre-training and every fine-tuning task.

pub mod checkpoint;
pub mod collective;
pub mod optim;
pub mod schedule;
pub mod trainer;
