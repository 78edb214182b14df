//! The one error type of the formats crate: every variant names the file it is about, because the
//! person reading it usually has several datasets and checkpoints in flight.

use std::path::{Path, PathBuf};

/// What can go wrong while reading or writing a file format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: bad idx file: {reason}")]
    Idx { path: PathBuf, reason: String },
    #[error("{path}: bad safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype}")]
    DType {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{path}: bad npz file: {reason}")]
    Npz { path: PathBuf, reason: String },
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FormatError + '_ {
    move |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    }
}
