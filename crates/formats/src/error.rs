//! One error type for every reader. Each variant names the file and, where one is at fault, the key,
//! and says what was expected against what was found, so a user can act on it.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },

    #[error("{path}: not a valid PyTorch checkpoint (zip + pickle): {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    #[error(
        "{path}: refusing to load: the pickle asks for the Python global `{global}`, which could run \
         code. Only tensor-rebuild globals are accepted; convert the file to .safetensors with a tool you trust"
    )]
    DisallowedGlobal { path: PathBuf, global: String },

    #[error("{path}: tensor `{key}` has dtype {dtype}, which is not supported (expected one of: F32, F16, BF16, F64)")]
    UnsupportedDtype { path: PathBuf, key: String, dtype: String },

    #[error("{path}: missing tensor `{key}`{context}")]
    MissingKey { path: PathBuf, key: String, context: String },

    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected}")]
    Shape { path: PathBuf, key: String, expected: String, found: Vec<usize> },

    #[error("{path}: {reason}")]
    Layout { path: PathBuf, reason: String },

    #[error("{path}: {reason}")]
    MotionModule { path: PathBuf, reason: String },

    #[error("{path}: {reason}")]
    Lora { path: PathBuf, reason: String },

    #[error("{path}: {reason}")]
    Arch { path: PathBuf, reason: String },

    /// A textual-inversion embedding that cannot be used (see [`crate::embedding`]).
    #[error("embedding {path}: {reason}")]
    Embedding { path: PathBuf, reason: String },

    /// A weight holds NaN or infinite values (or a LoRA merge makes it so): the file is corrupt
    /// or the merge overflows. `build-graph --allow-nonfinite` builds anyway.
    #[error(
        "{path}: tensor `{key}` {what} {count} NaN or infinite values (the first, {first}, at index {index}); \
         the file is corrupt or the merge overflows (build-graph --allow-nonfinite builds anyway)"
    )]
    NonFinite { path: PathBuf, key: String, what: &'static str, count: usize, first: f32, index: usize },
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }

    /// `Ok` when every value is finite, else [`Error::NonFinite`] for tensor `key` of `path`,
    /// which `what` ("holds", "would hold after merging ...") describes.
    pub fn check_finite(values: &[f32], path: &Path, key: &str, what: &'static str) -> Result<()> {
        let Some(index) = values.iter().position(|v| !v.is_finite()) else { return Ok(()) };
        let count = values[index..].iter().filter(|v| !v.is_finite()).count();
        Err(Error::NonFinite { path: path.to_path_buf(), key: key.to_owned(), what, count, first: values[index], index })
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Io { path, .. }
            | Error::Safetensors { path, .. }
            | Error::Checkpoint { path, .. }
            | Error::DisallowedGlobal { path, .. }
            | Error::UnsupportedDtype { path, .. }
            | Error::MissingKey { path, .. }
            | Error::Shape { path, .. }
            | Error::Layout { path, .. }
            | Error::MotionModule { path, .. }
            | Error::Lora { path, .. }
            | Error::Arch { path, .. }
            | Error::Embedding { path, .. }
            | Error::NonFinite { path, .. } => path,
        }
    }
}
