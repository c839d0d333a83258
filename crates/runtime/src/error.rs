//! Runtime errors: each says what is wrong with which file or value, and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    Artifact { path: PathBuf, reason: String },
    #[error("{0}")]
    Input(String),
    #[error("execution provider `{requested}` is not available: {reason}. Available here: {available}{hint}")]
    ProviderUnavailable { requested: String, reason: String, available: String, hint: String },
    #[error("{runtime} failed on {graph}: {reason}")]
    Runtime { runtime: &'static str, graph: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
