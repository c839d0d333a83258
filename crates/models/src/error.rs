//! Errors while building a graph: a weight that cannot be read or has the wrong shape (from
//! `animatediff_formats`, naming the file and key), or a write failure.

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Format(#[from] animatediff_formats::Error),
    #[error("writing {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;
