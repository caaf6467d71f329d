//! oscar-world: a small, honest stand-in for COCO + VQA + NLVR2 that a fresh install can
//! generate in seconds (DESIGN.md, "The synthetic world"). Scenes of objects with categories,
//! colours, sizes and boxes; detector-like region features; detector tags with realistic errors;
//! grammar captions; VQA with 10 noisy answers; NLVR2 statements over image pairs; a held-out
//! category split for novel-object captioning; a pre-training corpus; a WordPiece vocabulary —
//! all written in the real Oscar/VinVL formats, so the same readers serve real data.

pub mod files;
pub mod language;
pub mod render;
pub mod scene;
pub mod write;

pub use scene::{generate, Scene, World, WorldConfig};

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("{path}: {err}")]
    Io {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, WorldError>;
