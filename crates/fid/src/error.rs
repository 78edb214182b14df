//! One error type for the whole crate. Every variant names the file (or the tensor, or the opcode) it is
//! about, because the person reading it usually has several datasets and checkpoints in flight.

use std::path::PathBuf;

/// Everything that can go wrong while reading inputs, loading the Inception network or computing FID.
#[derive(Debug, thiserror::Error)]
pub enum FidError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid zip archive: {reason}")]
    Zip { path: PathBuf, reason: String },
    #[error("{path}: missing `{member}`")]
    MissingMember { path: PathBuf, member: String },
    #[error("pickle `{what}`: {source}")]
    Pickle {
        what: String,
        #[source]
        source: crate::pickle::PickleError,
    },
    #[error("{what}: unexpected structure: {reason}")]
    Structure { what: String, reason: String },
    #[error("{what}: expected {expected} tensors, found {found}")]
    TensorCount {
        what: String,
        expected: usize,
        found: usize,
    },
    #[error("{what}: missing tensor `{name}`")]
    MissingTensor { what: String, name: String },
    #[error("{what}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        what: String,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{what}: storage `{key}` holds {available} bytes, the tensor needs {needed}")]
    StorageTooSmall {
        what: String,
        key: String,
        available: usize,
        needed: usize,
    },
    /// A file format (idx, safetensors, npz) could not be read or written.
    #[error(transparent)]
    Format(#[from] formats::FormatError),
    #[error("{path}: cannot decode image: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Dataset { path: PathBuf, reason: String },
    #[error("{path}: bad statistics file: {reason}")]
    Npz { path: PathBuf, reason: String },
    #[error("{path}: bad safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("statistics: {0}")]
    Stats(String),
    #[error("images: expected uint8-range tensor [N, 1|3, H, W], got shape {0:?}")]
    ImageShape(Vec<usize>),
    #[error(
        "need at least {required} images for FID (EDM's rule), found {found}; pass --num to use fewer"
    )]
    TooFewImages { required: usize, found: usize },
}

pub type Result<T, E = FidError> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FidError {
    let path = path.into();
    move |source| FidError::Io { path, source }
}
