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
    /// A FIFO, device, socket or folder where a file was expected (reading it could block forever).
    #[error("{path} is {kind}, not a regular file (FIFOs, devices and sockets are refused: reading them can block forever or never end); give the path of a file")]
    NotRegularFile { path: PathBuf, kind: &'static str },
    /// A size over a limit that guards the memory; `env` raises it.
    #[error("{path}: {what} is {size}, over the limit of {limit} (set {env}=BYTES, e.g. {env}=8G, if you really mean it)")]
    TooLarge {
        path: PathBuf,
        what: String,
        size: String,
        limit: String,
        env: &'static str,
    },
    /// An allocation the machine cannot make (refused with `try_reserve` instead of aborting).
    #[error("{path}: {what} needs {need} of memory, which cannot be allocated on this machine")]
    OutOfMemory {
        path: PathBuf,
        what: String,
        need: String,
    },
    #[error("{path}: {what} is corrupt: {reason}")]
    Corrupt {
        path: PathBuf,
        what: String,
        reason: String,
    },
    #[error("{path} changed size while it was being read")]
    Changed { path: PathBuf },
    #[error("{path} is not UTF-8 text (invalid byte at offset {offset})")]
    NotText { path: PathBuf, offset: usize },
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
