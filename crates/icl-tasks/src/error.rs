//! Typed errors: every failure names the file (and line) and what was wrong with it.

use std::path::PathBuf;

/// Errors from parsing source data, building tasks, or reading/writing task files.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: malformed {format} record: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        format: &'static str,
        reason: String,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("unknown task `{0}` (known: {1})")]
    UnknownTask(String, String),
    #[error("task `{task}` needs data source `{source_name}`, which was not given")]
    MissingSource {
        task: String,
        source_name: &'static str,
    },
    #[error("task `{task}`: only {found} usable items after filtering (need at least {needed})")]
    TooFewItems {
        task: String,
        found: usize,
        needed: usize,
    },
    #[error(
        "WordNet: class `{label}` refers to `{lemma}` sense {sense}, which is not in index.noun"
    )]
    MissingClass {
        label: String,
        lemma: String,
        sense: usize,
    },
    #[error("prompt: {0}")]
    Prompt(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl TaskError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TaskError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse(
        path: impl Into<PathBuf>,
        line: usize,
        format: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        TaskError::Parse {
            path: path.into(),
            line,
            format,
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, TaskError>;
