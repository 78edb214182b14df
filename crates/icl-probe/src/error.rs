//! Typed errors: every bad input names what was wrong and where, so a researcher can tell a corrupt
//! download from an unsupported model from a typo in a hook name.

use std::path::PathBuf;

use crate::gguf::GgufError;

/// Everything that can go wrong while loading a model or running it with hooks.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot read {path}: {err}")]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    /// A model or tokenizer path that is not a regular file (a FIFO would block the read forever,
    /// a device could stream without end), refused before it is opened.
    #[error("{path} is {kind}, not a regular file")]
    NotRegularFile { path: PathBuf, kind: &'static str },
    #[error("invalid JSON in {path}: {err}")]
    Json {
        path: PathBuf,
        #[source]
        err: serde_json::Error,
    },
    #[error(
        "unknown architecture `{0}` (supported: llama, mistral, qwen2, gpt2, gpt_neox, gemma3)"
    )]
    UnknownArchitecture(String),
    #[error("bad model config ({origin}): {msg}")]
    Config { origin: String, msg: String },
    #[error("missing tensor `{name}` in {origin}")]
    MissingTensor { name: String, origin: String },
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}` in {origin} has unsupported dtype {dtype}")]
    UnsupportedDtype {
        name: String,
        origin: String,
        dtype: String,
    },
    #[error("safetensors file {path}: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    #[error("GGUF file {path}: {err}")]
    Gguf {
        path: PathBuf,
        #[source]
        err: GgufError,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model not found: {0}")]
    NotFound(String),
    #[error("unknown hook `{name}` (see Model::hook_names for the valid names)")]
    UnknownHook { name: String },
    #[error("invalid intervention on `{hook}`: {msg}")]
    InvalidIntervention { hook: String, msg: String },
    #[error("invalid input: {0}")]
    BadInput(String),
    /// A run refused before it computes, because it would exceed a limit (context length,
    /// memory); `how` says how to raise the limit when the user really means it.
    #[error("{what} {need} exceeds the limit of {limit}; {how}")]
    TooLarge {
        what: String,
        need: String,
        limit: String,
        how: String,
    },
}

pub type Result<T> = std::result::Result<T, ProbeError>;
