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
    /// The disk (or the user's quota) is full. Said plainly, because the same failure surfaces from a
    /// serializer as "invalid value write" or "failed to fill whole buffer".
    #[error("no space left on device: {path} (free some space, then rerun; a resumed run continues from the last complete checkpoint)")]
    NoSpace { path: PathBuf },
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Output(#[from] crate::guard::OutputError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`; a full disk or quota becomes [`FormatError::NoSpace`].
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FormatError + '_ {
    move |source| io_error(path, source)
}

/// [`io_err`] as a plain function, for callers outside this crate that write files themselves.
pub fn io_error(path: &Path, source: std::io::Error) -> FormatError {
    if is_no_space(&source) {
        FormatError::NoSpace {
            path: path.to_path_buf(),
        }
    } else {
        FormatError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Whether an I/O error means the disk or the quota is full (`ENOSPC`, `EDQUOT`), looking through
/// errors that wrap it (a serializer's error turned into `io::Error::other`).
pub fn is_no_space(err: &std::io::Error) -> bool {
    full_in_chain(err)
}

/// Walks an error chain; `io::Error::source` skips the error an `io::Error` wraps, so that one is
/// looked into explicitly.
fn full_in_chain(mut e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    loop {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) {
                return true;
            }
            if io.get_ref().is_some_and(|inner| full_in_chain(inner)) {
                return true;
            }
        }
        match e.source() {
            Some(s) => e = s,
            None => return false,
        }
    }
}
