//! Experiment 2: task vectors (Hendel et al.). For every dev/test query an extraction prompt of
//! `k` train demonstrations and a *dummy* query (another train item) is run; the residual at its
//! last position (the dummy query's `->`) at layer `L` is the per-prompt task vector, their mean
//! over all extraction prompts the (global) task vector. It replaces the residual at the last
//! position of the zero-shot prompt `"{query} ->"` at the same layer. The layer is chosen on dev,
//! the accuracy reported on test.
//!
//! The same extraction prompts give the rule vectors (residuals at the demonstrations' answer
//! positions), so both are read in one pass ([`Extraction`]).

use burn::tensor::backend::Backend;
use icl_tasks::{sample_prompts, PromptSpec, Split, TaskSet};
use serde::{Deserialize, Serialize};

use super::baseline::shot_accuracy;
use super::{accuracy, argmax, mean_vec, Prepared, Probe, Result, ResultCache, RunConfig};

/// Zero-shot queries of dev and test, each paired with an extraction prompt.
pub struct Extraction {
    pub layers: Vec<usize>,
    /// Zero-shot prompts `"{query} ->"`: dev first, then test.
    pub queries: Vec<Prepared>,
    pub n_dev: usize,
    /// Extraction prompts (k demonstrations + dummy query), `prompts[i]` paired with `queries[i]`.
    pub prompts: Vec<PromptSpec>,
    /// `last[i][layer]`: residual at the last position of extraction prompt `i`.
    pub last: Vec<Vec<Vec<f32>>>,
    /// `rules[i][layer][j]`: residual at the answer position of demonstration `j` of prompt `i`.
    pub rules: Vec<Vec<Vec<Vec<f32>>>>,
}

impl Extraction {
    pub fn targets(&self) -> Vec<u32> {
        self.queries.iter().map(|q| q.target).collect()
    }

    /// Accuracy on dev and test of patching `vector(i, layer_index)` into query `i`, per layer.
    pub fn sweep<B: Backend>(
        &self,
        probe: &Probe<B>,
        name: &str,
        vector: impl Fn(usize, usize) -> Vec<f32>,
    ) -> Result<LayerCurve> {
        let targets = self.targets();
        let (mut dev, mut test) = (Vec::new(), Vec::new());
        for (li, &layer) in self.layers.iter().enumerate() {
            let vecs: Vec<Vec<f32>> = (0..self.queries.len()).map(|i| vector(i, li)).collect();
            let pred = probe.predict_patched(&self.queries, layer, &vecs)?;
            dev.push(accuracy(&pred[..self.n_dev], &targets[..self.n_dev]));
            test.push(accuracy(&pred[self.n_dev..], &targets[self.n_dev..]));
        }
        Ok(LayerCurve::new(name, self.layers.clone(), dev, test))
    }
}

/// `n` extraction prompts with dummy queries from train, cycling through the train split with
/// fresh demonstrations when it has fewer than `n` items.
pub fn extraction_prompts(
    task: &TaskSet,
    k: usize,
    n: usize,
    seed: u64,
) -> Result<Vec<PromptSpec>> {
    let mut out = Vec::with_capacity(n);
    let mut round = 0u64;
    while out.len() < n {
        let got = sample_prompts(
            task,
            Split::Train,
            k,
            n - out.len(),
            seed.wrapping_add(1000 + round),
        )?;
        if got.is_empty() {
            return Err(super::ExperimentError::Invalid(format!(
                "task {}: empty train split",
                task.name
            )));
        }
        out.extend(got);
        round += 1;
    }
    Ok(out)
}

/// Runs the extraction prompts for the dev/test queries of `cfg`.
pub fn extract<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &RunConfig,
) -> Result<Extraction> {
    let layers = cfg.layer_list(probe.n_layers());
    let dev = sample_prompts(task, Split::Dev, 0, cfg.n_dev, cfg.seed)?;
    let test = sample_prompts(task, Split::Test, 0, cfg.n_test, cfg.seed)?;
    let n_dev = dev.len();
    let queries = probe.prepare_all(&[dev, test].concat())?;
    let prompts = extraction_prompts(task, cfg.k, queries.len(), cfg.seed)?;
    let prepared = probe.prepare_all(&prompts)?;
    let res = probe.residuals(&prepared, &layers, |p| {
        let mut pos = p.answer_positions.clone();
        pos.push(p.last());
        pos
    })?;
    let k = cfg.k;
    let mut last = Vec::with_capacity(res.len());
    let mut rules = Vec::with_capacity(res.len());
    for r in res {
        last.push(r.iter().map(|per_pos| per_pos[k].clone()).collect());
        rules.push(
            r.into_iter()
                .map(|mut per_pos| {
                    per_pos.truncate(k);
                    per_pos
                })
                .collect(),
        );
    }
    Ok(Extraction {
        layers,
        queries,
        n_dev,
        prompts,
        last,
        rules,
    })
}

/// Accuracy per layer on dev and test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCurve {
    pub name: String,
    pub layers: Vec<usize>,
    pub dev: Vec<f64>,
    pub test: Vec<f64>,
    /// The layer with the best dev accuracy (first on ties).
    pub best_layer: usize,
    /// Test accuracy at `best_layer`.
    pub test_at_best: f64,
}

impl LayerCurve {
    pub fn new(name: &str, layers: Vec<usize>, dev: Vec<f64>, test: Vec<f64>) -> Self {
        let b = argmax(&dev);
        Self {
            name: name.into(),
            best_layer: layers[b],
            test_at_best: test[b],
            layers,
            dev,
            test,
        }
    }
}

/// Result of `run task-vector`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskVectorResult {
    pub experiment: String,
    pub model: String,
    pub task: String,
    pub k: usize,
    pub seed: u64,
    pub n_dev: usize,
    pub n_test: usize,
    /// Test accuracy without intervention, zero-shot and with `k` demonstrations.
    pub zero_shot: f64,
    pub icl: f64,
    /// `task vector (mean)`: the global mean; `task vector (per prompt)`: each query's own.
    pub curves: Vec<LayerCurve>,
}

/// The shared frame of the experiments that work on an [`Extraction`]: the result is cached as
/// `name` per (model, task, k, seed, sizes); on a miss, `body(zero_shot, icl, extraction)` runs on
/// `extraction` if the caller already has one (the suite shares it between experiments), else on a
/// fresh one.
pub fn cached_on_extraction<B: Backend, T: Serialize + serde::de::DeserializeOwned>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &RunConfig,
    cache: &ResultCache,
    extraction: Option<&Extraction>,
    name: &str,
    body: impl FnOnce(f64, f64, &Extraction) -> Result<T>,
) -> Result<T> {
    let layers = cfg.layer_list(probe.n_layers());
    cache.get_or(&cfg.model_id, &task.name, &cfg.key(&layers), name, || {
        let (zero_shot, icl) = reference_lines(probe, task, cfg, cache)?;
        match extraction {
            Some(ex) => body(zero_shot, icl, ex),
            None => body(zero_shot, icl, &extract(probe, task, cfg)?),
        }
    })
}

/// Zero-shot and k-shot test accuracies for the reference lines.
pub fn reference_lines<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &RunConfig,
    cache: &ResultCache,
) -> Result<(f64, f64)> {
    let z = shot_accuracy(
        probe,
        task,
        Split::Test,
        0,
        cfg.n_test,
        cfg.seed,
        &cfg.model_id,
        cache,
    )?;
    let i = shot_accuracy(
        probe,
        task,
        Split::Test,
        cfg.k,
        cfg.n_test,
        cfg.seed,
        &cfg.model_id,
        cache,
    )?;
    Ok((z.accuracy, i.accuracy))
}

/// The task-vector sweep on an existing extraction.
pub fn task_vector_curves<B: Backend>(
    probe: &Probe<B>,
    ex: &Extraction,
) -> Result<Vec<LayerCurve>> {
    let n_layers = ex.layers.len();
    let global: Vec<Vec<f32>> = (0..n_layers)
        .map(|li| mean_vec(&ex.last.iter().map(|p| p[li].as_slice()).collect::<Vec<_>>()))
        .collect();
    let mean = ex.sweep(probe, "task vector (mean)", |_, li| global[li].clone())?;
    let local = ex.sweep(probe, "task vector (per prompt)", |i, li| {
        ex.last[i][li].clone()
    })?;
    Ok(vec![mean, local])
}

/// Experiment 2, cached per (model, task, k, seed, sizes).
pub fn run_task_vector<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &RunConfig,
    cache: &ResultCache,
    extraction: Option<&Extraction>,
) -> Result<TaskVectorResult> {
    cached_on_extraction(
        probe,
        task,
        cfg,
        cache,
        extraction,
        "task_vector",
        |zero_shot, icl, ex| {
            Ok(TaskVectorResult {
                experiment: "task-vector".into(),
                model: cfg.model_id.clone(),
                task: task.name.clone(),
                k: cfg.k,
                seed: cfg.seed,
                n_dev: ex.n_dev,
                n_test: ex.queries.len() - ex.n_dev,
                zero_shot,
                icl,
                curves: task_vector_curves(probe, ex)?,
            })
        },
    )
}
