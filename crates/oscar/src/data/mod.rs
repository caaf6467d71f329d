//! Turning examples into model inputs.

pub mod tensorize;
