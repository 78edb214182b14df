//! Typed errors of edm-core: every failure names the file, tensor or key it concerns.

use std::path::PathBuf;

/// Everything that can go wrong when reading configs, weights, data or checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum EdmError {
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("unsupported option: {0}")]
    Unsupported(String),
    #[error("missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor { name: String, expected: Vec<usize> },
    #[error("unexpected tensor `{name}` (shape {shape:?}) not used by the network")]
    UnexpectedTensor { name: String, shape: Vec<usize> },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}` has {bad} non-finite values (NaN or infinity) of {total}: the weights are corrupt or come from a diverged run")]
    NonFiniteWeights {
        name: String,
        bad: usize,
        total: usize,
    },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("invalid data file {path}: {message}")]
    Data { path: PathBuf, message: String },
    /// A file format (idx, safetensors) could not be read or written.
    #[error(transparent)]
    Format(#[from] formats::FormatError),
    /// An image could not be encoded or written.
    #[error("image output {path}: {message}")]
    Output { path: PathBuf, message: String },
    /// An EDM snapshot pickle (`edm convert`) that is not what EDM writes.
    #[error("EDM snapshot {path}: {message}")]
    Snapshot { path: PathBuf, message: String },
    /// The pickle reader refused or could not read a snapshot (a forbidden global is code the file
    /// wanted run).
    #[error("EDM snapshot {path}: {source}")]
    Pickle {
        path: PathBuf,
        #[source]
        source: formats::pickle::PickleError,
    },
    /// `edm train` resumed a folder whose saved run has other options ([`formats::compare_options`]).
    #[error(
        "{dir} holds a run started with other options; {changed}. Resume with the same options, \
         start a new --outdir, or pass --force to continue with the saved values"
    )]
    OptionsChanged {
        dir: PathBuf,
        changed: formats::OptionsChanged,
    },
    #[error("training diverged: {0}")]
    NonFinite(String),
    /// Data-parallel training: a peer or node failed, hung past the timeout, or the setup is
    /// inconsistent.
    #[error(transparent)]
    Parallel(#[from] parallel::ParallelError),
}

pub type Result<T, E = EdmError> = std::result::Result<T, E>;

impl EdmError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EdmError::Io {
            path: path.into(),
            source,
        }
    }
}
