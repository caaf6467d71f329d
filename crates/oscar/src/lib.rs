//! oscar-rs: Oscar (Object-Semantics Aligned Pre-training, Li et al. ECCV 2020) and Oscar+
//! (VinVL) on candle. See `DESIGN.md` in the repository for the architecture.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod infer;
pub mod model;
pub mod nn;
pub mod plot;
pub mod tasks;
pub mod tokenizer;
pub mod train;

pub use config::OscarConfig;
pub use error::{Error, Result};
