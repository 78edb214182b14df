//! The rule-vector experiments (Zheng, Ma, Lin, Yang, "Label Words as Local Task Vectors in
//! In-Context Learning", first titled "Distributed Rule Vectors is a Key Mechanism in Large
//! Language Models' In-Context Learning"; Hendel et al., "In-Context Learning Creates Task
//! Vectors"), on any model [`icl_probe::load_model`] loads.
//!
//! Conventions (see `docs/icl-experiments.md`):
//! - Prompts are `"{input} -> {output}\n"` per demonstration, then `"{query} ->"`; a prediction is
//!   correct when the greedy next token is the first token of `" " + output`.
//! - Layer `L = 0` is the embedding output, `L = l` the output of block `l − 1`
//!   (`blocks.{L}.hook_resid_pre`, and `blocks.{n−1}.hook_resid_post` for `L = n`).
//! - A *task vector* is the residual at the last position (the `->` of a dummy query) of k-shot
//!   prompts, averaged over prompts; a *rule vector* is the residual at one demonstration's answer
//!   position (the first token of its output). Both are patched into the last position of the
//!   zero-shot prompt `"{query} ->"` at the same layer they were read from.
//!
//! Every experiment returns a serde result, cached as JSON per (model, task, k, seed, sizes) so
//! reruns are cheap; [`report`] turns a folder of results into Markdown tables and PNG plots.

pub mod answer_sites;
pub mod baseline;
pub mod cache;
pub mod dpca;
pub mod forms;
pub mod journal;
pub mod knockout;
pub mod local_global;
pub mod pca;
pub mod plot;
pub mod probe;
pub mod progress;
pub mod report;
pub mod rule_vector;
pub mod saliency;
pub mod stats;
pub mod subsets;
pub mod suite;
pub mod task_vector;
pub mod transplant;

use std::path::PathBuf;

pub use cache::ResultCache;
pub use probe::{resid_hook, Prepared, Probe, ProbeTokenizer};
pub use progress::{progress_mode, set_progress_mode, Progress, ProgressMode};

/// Errors of the experiments: the model, the task data, files, plots.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error(transparent)]
    Probe(#[from] icl_probe::ProbeError),
    #[error(transparent)]
    Task(#[from] icl_tasks::TaskError),
    #[error(transparent)]
    Format(#[from] formats::FormatError),
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid result JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("plot {path}: {msg}")]
    Plot { path: PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, ExperimentError>;

/// Sizes and seeds shared by the experiments.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RunConfig {
    /// A short name of the model (file or folder stem), used in cache keys and reports.
    pub model_id: String,
    /// Number of demonstrations.
    pub k: usize,
    /// Seed of prompt sampling (queries, demonstrations, subsets).
    pub seed: u64,
    /// Test queries scored (fewer if the split is smaller).
    pub n_test: usize,
    /// Dev queries used to choose the layer.
    pub n_dev: usize,
    /// Layers swept (`0..=n_layers`); empty = all.
    pub layers: Vec<usize>,
    /// Prompts per forward pass.
    pub batch_size: usize,
}

impl RunConfig {
    /// The layers to sweep for a model with `n_layers` blocks.
    pub fn layer_list(&self, n_layers: usize) -> Vec<usize> {
        if self.layers.is_empty() {
            (0..=n_layers).collect()
        } else {
            self.layers
                .iter()
                .copied()
                .filter(|&l| l <= n_layers)
                .collect()
        }
    }

    /// Cache key of results that depend on these sizes.
    pub fn key(&self, layers: &[usize]) -> String {
        let l = if self.layers.is_empty() {
            "all".to_string()
        } else {
            layers
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join("-")
        };
        format!(
            "k{}_s{}_t{}_d{}_L{}",
            self.k, self.seed, self.n_test, self.n_dev, l
        )
    }
}

/// Fraction of `pred[i] == target[i]`.
pub fn accuracy(pred: &[u32], target: &[u32]) -> f64 {
    if pred.is_empty() {
        return 0.0;
    }
    pred.iter().zip(target).filter(|(p, t)| p == t).count() as f64 / pred.len() as f64
}

/// Index of the best value (first on ties).
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// Mean of vectors (all of the same length).
pub fn mean_vec(vs: &[&[f32]]) -> Vec<f32> {
    let mut out = vec![0f32; vs.first().map_or(0, |v| v.len())];
    for v in vs {
        for (o, x) in out.iter_mut().zip(v.iter()) {
            *o += x;
        }
    }
    let n = vs.len().max(1) as f32;
    out.iter_mut().for_each(|o| *o /= n);
    out
}
