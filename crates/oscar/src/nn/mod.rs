//! Differentiable building blocks on candle: parameters, layers and ops whose backward passes
//! are recorded (candle's fused `LayerNorm` / `softmax_last_dim` are not, rust-stack.md §4.1).

pub mod composite;
pub mod fused;
pub mod int8;
pub mod layers;
pub mod ops;
mod par;
pub mod params;
pub mod sgemm;
pub mod vmath;

pub use layers::{Embedding, LayerNorm, Linear};
pub use params::{Init, LoadReport, ParamBuilder, Params};

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::cell::{Cell, RefCell};

thread_local! {
    static NO_GRAD: Cell<bool> = const { Cell::new(false) };
}

/// While alive, the fused ops (every Linear, LayerNorm, softmax and GELU) record no backward on
/// this thread. For inference: otherwise every activation stays referenced by the graph of the
/// output (model weights are variables), so a forward held the memory of a training step and a
/// cached decoder kept every step's graph.
pub struct NoGrad {
    prev: bool,
}

impl NoGrad {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        NoGrad {
            prev: NO_GRAD.replace(true),
        }
    }
}

impl Drop for NoGrad {
    fn drop(&mut self) {
        NO_GRAD.set(self.prev);
    }
}

/// Whether ops record their backward (no [`NoGrad`] alive on this thread).
pub(crate) fn grad_enabled() -> bool {
    !NO_GRAD.get()
}

/// Whether a forward pass trains (dropout on, drawn from a seeded generator) or infers.
pub struct Ctx {
    rng: Option<RefCell<StdRng>>,
    /// Data parallelism: this forward holds rows `lo..hi` of a batch of `total`, and dropout
    /// draws the masks of exactly those rows from the whole batch's stream.
    window: Option<(usize, usize, usize)>,
}

impl Ctx {
    /// Inference: dropout is the identity.
    pub fn eval() -> Self {
        Ctx {
            rng: None,
            window: None,
        }
    }

    /// Training: dropout masks come from a generator seeded with `seed`, so runs repeat exactly.
    pub fn train(seed: u64) -> Self {
        Ctx {
            rng: Some(RefCell::new(StdRng::seed_from_u64(seed))),
            window: None,
        }
    }

    /// Training on rows `lo..hi` of a batch of `total` rows (one rank's part, see
    /// [`crate::train::collective::Replica`]): each dropout mask is the part of the mask
    /// [`Ctx::train`]`(seed)` draws for the whole batch that falls on these rows, so the ranks
    /// together compute what one process computes.
    pub fn train_rows(seed: u64, lo: usize, hi: usize, total: usize) -> Self {
        let mut c = Self::train(seed);
        if (lo, hi) != (0, total) {
            c.window = Some((lo, hi, total));
        }
        c
    }

    pub(crate) fn window(&self) -> Option<(usize, usize, usize)> {
        self.window
    }

    pub fn is_train(&self) -> bool {
        self.rng.is_some()
    }

    pub(crate) fn rng(&self) -> Option<&RefCell<StdRng>> {
        self.rng.as_ref()
    }
}
