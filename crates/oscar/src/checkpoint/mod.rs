//! Checkpoints: reading what users have (`pytorch_model.bin` zip or legacy, `model.safetensors`,
//! a `save_pretrained` directory), applying the reference's loading rules (oscar-spec §1.2
//! "Loading rules", §5), building a model from it with a missing/unexpected key report, and
//! saving as `model.safetensors` + `config.json` + `vocab.txt`, atomically.

pub mod any;
pub mod keys;
pub mod load;
pub mod save;
pub mod torch_pickle;

pub use any::{detect_head, AnyModel};
pub use keys::{normalize_keys, HeadKind};
pub use load::{
    build_fresh, load_model, load_model_at, quantize, quantize_linears, read_checkpoint, Backbone,
    Buildable, Checkpoint, Fresh, Loaded,
};
pub use save::{is_linear_weight, save_pretrained, save_pretrained_int8, write_atomic};
