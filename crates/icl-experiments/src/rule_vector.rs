//! Experiment 3: rule vectors (Zheng et al.'s local task vectors). The residual at demonstration
//! `j`'s answer position (the first token of its output) at layer `L` of the extraction prompt
//! paired with a query is that demonstration's rule vector. An aggregate — the mean of a subset
//! `S` of the `k` rule vectors — replaces the residual at the last position (`->`) of the
//! zero-shot prompt `"{query} ->"` at layer `L`, the same site as the task vector, so the two are
//! directly comparable.
//!
//! Reported: accuracy per layer of the mean of all `k` and of one random rule vector; at the layer
//! chosen on dev for the mean, accuracy on test per subset size `|S| = 1..k` (random subsets,
//! several draws), per single demonstration `j`, and leaving demonstration `j` out.

use burn::tensor::backend::Backend;
use icl_tasks::TaskSet;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use super::task_vector::{cached_on_extraction, task_vector_curves, Extraction, LayerCurve};
use super::{accuracy, mean_vec, Probe, Result, ResultCache, RunConfig};

/// Random subsets drawn per query and size.
pub const SUBSET_DRAWS: usize = 2;

/// Test accuracy of one aggregation at the chosen layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetAccuracy {
    /// Subset size, or demonstration index for singles / leave-one-out.
    pub size: usize,
    pub accuracy: f64,
}

/// Result of `run rule-vector`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleVectorResult {
    pub experiment: String,
    pub model: String,
    pub task: String,
    pub k: usize,
    pub seed: u64,
    pub n_dev: usize,
    pub n_test: usize,
    pub zero_shot: f64,
    pub icl: f64,
    /// `rule vector (mean of k)`, `rule vector (single)`, and the task-vector curves of the same
    /// extraction for comparison.
    pub curves: Vec<LayerCurve>,
    /// The layer where the subsets are evaluated (best dev accuracy of the mean of k).
    pub layer: usize,
    /// Accuracy per subset size 1..=k (random subsets, averaged over draws).
    pub by_size: Vec<SubsetAccuracy>,
    /// Accuracy of demonstration j's rule vector alone.
    pub singles: Vec<SubsetAccuracy>,
    /// Accuracy of the mean of all but demonstration j.
    pub leave_one_out: Vec<SubsetAccuracy>,
}

/// Mean of the rule vectors `subset` of query `i` at layer index `li`.
pub fn aggregate(ex: &Extraction, i: usize, li: usize, subset: &[usize]) -> Vec<f32> {
    mean_vec(
        &subset
            .iter()
            .map(|&j| ex.rules[i][li][j].as_slice())
            .collect::<Vec<_>>(),
    )
}

/// Test accuracy at layer index `li` of the aggregate over `subset(i)` for each test query.
pub fn subset_accuracy<B: Backend>(
    probe: &Probe<B>,
    ex: &Extraction,
    li: usize,
    subset: impl Fn(usize) -> Vec<usize>,
) -> Result<f64> {
    let test = &ex.queries[ex.n_dev..];
    let vecs: Vec<Vec<f32>> = (ex.n_dev..ex.queries.len())
        .map(|i| aggregate(ex, i, li, &subset(i)))
        .collect();
    let pred = probe.predict_patched(test, ex.layers[li], &vecs)?;
    let targets: Vec<u32> = test.iter().map(|q| q.target).collect();
    Ok(accuracy(&pred, &targets))
}

/// Experiment 3, cached per (model, task, k, seed, sizes).
pub fn run_rule_vector<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &RunConfig,
    cache: &ResultCache,
    extraction: Option<&Extraction>,
) -> Result<RuleVectorResult> {
    cached_on_extraction(
        probe,
        task,
        cfg,
        cache,
        extraction,
        "rule_vector",
        |zero_shot, icl, ex| {
            let k = cfg.k;
            let all: Vec<usize> = (0..k).collect();
            let mean = ex.sweep(probe, "rule vector (mean of k)", |i, li| {
                aggregate(ex, i, li, &all)
            })?;
            // One random demonstration per query (fixed across layers).
            let mut rng = ChaCha12Rng::seed_from_u64(cfg.seed ^ 0x5106_1e00);
            let pick: Vec<usize> = (0..ex.queries.len())
                .map(|_| rng.random_range(0..k))
                .collect();
            let single = ex.sweep(probe, "rule vector (single)", |i, li| {
                aggregate(ex, i, li, &[pick[i]])
            })?;
            let mut curves = vec![mean.clone(), single];
            curves.extend(task_vector_curves(probe, ex)?);

            let li = ex
                .layers
                .iter()
                .position(|&l| l == mean.best_layer)
                .unwrap_or(0);
            let mut by_size = Vec::with_capacity(k);
            for s in 1..=k {
                let draws = if s == k { 1 } else { SUBSET_DRAWS };
                let mut acc = 0.0;
                for d in 0..draws {
                    let seed = cfg.seed ^ ((s as u64) << 8) ^ (d as u64) ^ 0x0005_0b5e;
                    let subsets: Vec<Vec<usize>> = {
                        let mut rng = ChaCha12Rng::seed_from_u64(seed);
                        (0..ex.queries.len())
                            .map(|_| sample(&mut rng, k, s).into_vec())
                            .collect()
                    };
                    acc += subset_accuracy(probe, ex, li, |i| subsets[i].clone())?;
                }
                by_size.push(SubsetAccuracy {
                    size: s,
                    accuracy: acc / draws as f64,
                });
            }
            let mut singles = Vec::with_capacity(k);
            let mut leave_one_out = Vec::with_capacity(k);
            for j in 0..k {
                singles.push(SubsetAccuracy {
                    size: j,
                    accuracy: subset_accuracy(probe, ex, li, |_| vec![j])?,
                });
                if k > 1 {
                    let rest: Vec<usize> = (0..k).filter(|&x| x != j).collect();
                    leave_one_out.push(SubsetAccuracy {
                        size: j,
                        accuracy: subset_accuracy(probe, ex, li, |_| rest.clone())?,
                    });
                }
            }
            Ok(RuleVectorResult {
                experiment: "rule-vector".into(),
                model: cfg.model_id.clone(),
                task: task.name.clone(),
                k,
                seed: cfg.seed,
                n_dev: ex.n_dev,
                n_test: ex.queries.len() - ex.n_dev,
                zero_shot,
                icl,
                curves,
                layer: mean.best_layer,
                by_size,
                singles,
                leave_one_out,
            })
        },
    )
}
