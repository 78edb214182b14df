//! Errors of the distillation crate: every failure names what and where.

use std::path::PathBuf;

/// Everything that can go wrong while loading, training or evaluating a GDD generator.
#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The PyTorch checkpoint could not be parsed (corrupt, truncated, not a state dict).
    #[error("cannot read PyTorch checkpoint {path}: {message}")]
    Pytorch { path: PathBuf, message: String },
    /// A tensor the architecture needs is absent from a checkpoint.
    #[error("tensor `{name}` missing from {source_name}")]
    MissingTensor { name: String, source_name: String },
    /// A tensor exists but has the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// Malformed dataset (idx file, image folder).
    #[error("bad dataset {path}: {message}")]
    Dataset { path: PathBuf, message: String },
    /// Invalid configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Training diverged: a loss or score was not finite.
    #[error("non-finite {what} at step {step}; last good checkpoint: {last_good}")]
    NonFinite {
        what: String,
        step: u64,
        last_good: String,
    },
    /// `gdd train` resumed a folder whose saved run has another configuration
    /// ([`crate::train::check_resume`]).
    #[error(
        "{dir} holds a run started with other options; {changed}. Resume with the same options, \
         start a new --outdir, or pass --force to continue with the saved values"
    )]
    OptionsChanged {
        dir: PathBuf,
        changed: formats::OptionsChanged,
    },
    /// Checkpoint (de)serialisation failed.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// A file format (idx, safetensors, checkpoint folders) could not be read or written.
    #[error(transparent)]
    Format(#[from] formats::FormatError),
    /// An error from the EDM crate (teacher loading, sampling, saving the EMA).
    #[error(transparent)]
    Edm(#[from] edm_core::EdmError),
    /// An error from the FID crate (Inception, statistics).
    #[error(transparent)]
    Fid(#[from] fid::FidError),
    /// Data-parallel training: a peer or node failed, hung past the timeout, or the setup is
    /// inconsistent.
    #[error(transparent)]
    Parallel(#[from] parallel::ParallelError),
    /// An asset the evaluation needs is not in the asset cache.
    #[error("asset {0} not in cache, run `cargo run --release -p assets-cli -- fetch {0}`")]
    MissingAsset(String),
    /// Plotting or image encoding failed.
    #[error("image/plot output {path}: {message}")]
    Output { path: PathBuf, message: String },
}

impl DistillError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Crate-wide result alias.
pub type Result<T> = std::result::Result<T, DistillError>;
