//! Experiment 1: zero-shot and k-shot (ICL) accuracy on the test queries. The queries are the same
//! for every k (see `icl_tasks::sample_prompts`), so the accuracies are paired.

use burn::tensor::backend::Backend;
use icl_tasks::{sample_prompts, Split, TaskSet};
use serde::{Deserialize, Serialize};

use super::{accuracy, Probe, Result, ResultCache, RunConfig};

/// Accuracy with `k` demonstrations (`k = 0`: zero-shot).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShotAccuracy {
    pub k: usize,
    pub accuracy: f64,
    pub n: usize,
}

/// Result of `run baseline` (k = 0) and `run icl` (k ∈ shots).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyResult {
    pub experiment: String,
    pub model: String,
    pub task: String,
    pub seed: u64,
    pub shots: Vec<ShotAccuracy>,
}

/// Accuracy of `k`-shot prompts on up to `n` queries of `split`, cached.
#[allow(clippy::too_many_arguments)]
pub fn shot_accuracy<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    split: Split,
    k: usize,
    n: usize,
    seed: u64,
    model_id: &str,
    cache: &ResultCache,
) -> Result<ShotAccuracy> {
    let key = format!("acc_s{seed}");
    cache.get_or(
        model_id,
        &task.name,
        &key,
        &format!("{}_k{k}_n{n}", split.as_str()),
        || {
            let prompts = probe.prepare_all(&sample_prompts(task, split, k, n, seed)?)?;
            let pred = probe.predict(&prompts)?;
            let target: Vec<u32> = prompts.iter().map(|p| p.target).collect();
            Ok(ShotAccuracy {
                k,
                accuracy: accuracy(&pred, &target),
                n: prompts.len(),
            })
        },
    )
}

/// Zero-shot (`shots = [0]`) or ICL accuracies on the test split.
pub fn run_accuracy<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &RunConfig,
    shots: &[usize],
    cache: &ResultCache,
) -> Result<AccuracyResult> {
    let shots = shots
        .iter()
        .map(|&k| {
            shot_accuracy(
                probe,
                task,
                Split::Test,
                k,
                cfg.n_test,
                cfg.seed,
                &cfg.model_id,
                cache,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let experiment = if shots.iter().all(|s| s.k == 0) {
        "baseline"
    } else {
        "icl"
    };
    Ok(AccuracyResult {
        experiment: experiment.into(),
        model: cfg.model_id.clone(),
        task: task.name.clone(),
        seed: cfg.seed,
        shots,
    })
}
