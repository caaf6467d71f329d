//! Library error type: every failure names the file, line or key involved and what was expected.

use std::path::PathBuf;

/// Errors raised by the oscar library. Input problems are values, never panics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shape mismatch inside the model, allocation, …).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// A file could not be opened, read or written.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },

    /// A file was read but its content is not what was expected.
    #[error("{path}: {what}")]
    BadFile { path: PathBuf, what: String },

    /// A checkpoint's keys or shapes do not fit the model being built.
    #[error("{path}: checkpoint does not fit the model:\n{details}")]
    CheckpointMismatch { path: PathBuf, details: String },

    /// An argument given by the caller is out of range or inconsistent.
    #[error("invalid input: {0}")]
    Invalid(String),

    /// The object detector refused an image or its files.
    #[error("{0}")]
    Detect(#[from] oscar_detect::Error),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
    pub fn bad_file(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.into(),
            what: what.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
