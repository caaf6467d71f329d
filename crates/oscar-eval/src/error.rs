//! Errors: each names the file (and line or id) and what was expected.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: {what}")]
    BadFile { path: PathBuf, what: String },
    #[error("{0}")]
    Invalid(String),
    /// An external tool (Java, the METEOR jar) is missing or failed.
    #[error("{0}")]
    Tool(String),
}

impl EvalError {
    pub fn bad_file(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        EvalError::BadFile {
            path: path.into(),
            what: what.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, EvalError>;
