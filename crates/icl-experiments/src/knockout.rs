//! Experiment 4: information flow by attention knockout (Wang et al.'s method, used by Zheng et
//! al.). In k-shot prompts with the real test query, the attention edges from the last position
//! (the query's `->`, where the answer is predicted) to every demonstration's answer position are
//! blocked in all heads of the blocks of one layer window; the accuracy drop says whether the
//! query reads the demonstrations' information from their answer positions in that window. The
//! control blocks as many edges to random tokens of the demonstrations' inputs instead.

use burn::tensor::backend::Backend;
use icl_tasks::{sample_prompts, Split, TaskSet};
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use super::{accuracy, Probe, Result, ResultCache, RunConfig};

/// Accuracy with the edges blocked in blocks `start..end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnockoutWindow {
    pub start: usize,
    pub end: usize,
    /// Edges last position → answer positions blocked.
    pub answer: f64,
    /// Edges last position → as many random demonstration-input tokens blocked.
    pub control: f64,
    /// Fraction of predictions that changed when the answer edges were blocked.
    pub answer_changed: f64,
    pub control_changed: f64,
}

/// Result of `run knockout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnockoutResult {
    pub experiment: String,
    pub model: String,
    pub task: String,
    pub k: usize,
    pub seed: u64,
    pub n_test: usize,
    pub zero_shot: f64,
    pub icl: f64,
    pub window: usize,
    pub windows: Vec<KnockoutWindow>,
}

fn changed(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len().max(1) as f64
}

/// Experiment 4 with non-overlapping windows of `window` blocks, cached.
pub fn run_knockout<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &RunConfig,
    window: usize,
    cache: &ResultCache,
) -> Result<KnockoutResult> {
    let n_layers = probe.n_layers();
    let window = window.clamp(1, n_layers);
    let key = format!("k{}_s{}_t{}_w{window}", cfg.k, cfg.seed, cfg.n_test);
    cache.get_or(&cfg.model_id, &task.name, &key, "knockout", || {
        let prompts = probe.prepare_all(&sample_prompts(
            task,
            Split::Test,
            cfg.k,
            cfg.n_test,
            cfg.seed,
        )?)?;
        let zero =
            probe.prepare_all(&sample_prompts(task, Split::Test, 0, cfg.n_test, cfg.seed)?)?;
        let targets: Vec<u32> = prompts.iter().map(|p| p.target).collect();
        let base = probe.predict(&prompts)?;
        let zero_pred = probe.predict(&zero)?;
        // Control keys: as many random input tokens as there are answer positions, fixed per prompt.
        let mut rng = ChaCha12Rng::seed_from_u64(cfg.seed ^ 0xc0_27_01);
        let control: Vec<Vec<usize>> = prompts
            .iter()
            .map(|p| {
                let inputs: Vec<usize> = p.input_positions.iter().flatten().copied().collect();
                inputs
                    .choose_multiple(&mut rng, p.answer_positions.len())
                    .copied()
                    .collect()
            })
            .collect();
        let index_of =
            |p: &super::Prepared| prompts.iter().position(|q| std::ptr::eq(q, p)).unwrap_or(0);
        let mut windows = Vec::new();
        let mut start = 0;
        while start < n_layers {
            let end = (start + window).min(n_layers);
            let layers: Vec<usize> = (start..end).collect();
            let a = probe.predict_knockout(&prompts, &layers, |p| p.answer_positions.clone())?;
            let c = probe.predict_knockout(&prompts, &layers, |p| control[index_of(p)].clone())?;
            windows.push(KnockoutWindow {
                start,
                end,
                answer: accuracy(&a, &targets),
                control: accuracy(&c, &targets),
                answer_changed: changed(&a, &base),
                control_changed: changed(&c, &base),
            });
            start = end;
        }
        Ok(KnockoutResult {
            experiment: "knockout".into(),
            model: cfg.model_id.clone(),
            task: task.name.clone(),
            k: cfg.k,
            seed: cfg.seed,
            n_test: prompts.len(),
            zero_shot: accuracy(
                &zero_pred,
                &zero.iter().map(|p| p.target).collect::<Vec<_>>(),
            ),
            icl: accuracy(&base, &targets),
            window,
            windows,
        })
    })
}
