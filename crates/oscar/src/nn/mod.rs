//! Differentiable building blocks on candle: parameters, layers and ops whose backward passes
//! are recorded (candle's fused `LayerNorm` / `softmax_last_dim` are not, rust-stack.md §4.1).

pub mod fused;
pub mod layers;
pub mod ops;
pub mod params;
pub mod sgemm;

pub use layers::{Embedding, LayerNorm, Linear};
pub use params::{Init, LoadReport, ParamBuilder, Params};

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::cell::RefCell;

/// Whether a forward pass trains (dropout on, drawn from a seeded generator) or infers.
pub struct Ctx {
    rng: Option<RefCell<StdRng>>,
}

impl Ctx {
    /// Inference: dropout is the identity.
    pub fn eval() -> Self {
        Ctx { rng: None }
    }

    /// Training: dropout masks come from a generator seeded with `seed`, so runs repeat exactly.
    pub fn train(seed: u64) -> Self {
        Ctx { rng: Some(RefCell::new(StdRng::seed_from_u64(seed))) }
    }

    pub fn is_train(&self) -> bool {
        self.rng.is_some()
    }

    pub(crate) fn rng(&self) -> Option<&RefCell<StdRng>> {
        self.rng.as_ref()
    }
}
