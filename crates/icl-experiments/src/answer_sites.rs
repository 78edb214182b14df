//! Experiment 3b: rule vectors written back where they were read — at the answer positions of
//! demonstrations that no longer carry the rule.
//!
//! Patching a rule vector into the query's last position (experiment 3) asks it to do a task
//! vector's job; in the distributed picture the query *reads* the rule from the answer positions
//! through attention, so the test of "the rule lives at the answer positions" is to put the rule
//! vectors back there. For each query we take its paired extraction prompt (k train
//! demonstrations), build a *dummy* prompt from the same demonstration inputs with their outputs
//! rotated by one (demonstration j shows demonstration j+1's output, so the input→output rule is
//! broken while the answer tokens stay in-distribution), end it with the real query, and at layer
//! L replace the residual at dummy answer position j by the extraction prompt's rule vector r_j.
//!
//! Reported: the dummy prompt's accuracy without a patch, accuracy per layer with all k rule
//! vectors written back, and at the layer chosen on dev (among L ≥ 1), accuracy when only s of the
//! k are written back (s = 0..k, random subsets): does restoring more rule vectors restore more of
//! the rule? At L = 0 the patch only swaps the first output tokens back: a token-level control,
//! reported in the curve but never chosen.

use burn::tensor::backend::Backend;
use icl_tasks::{PromptSpec, TaskSet};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use super::rule_vector::SubsetAccuracy;
use super::task_vector::{cached_on_extraction, Extraction, LayerCurve};
use super::{accuracy, ExperimentError, Prepared, Probe, Result, ResultCache, RunConfig};

/// Random subsets drawn per query and size.
pub const SITE_DRAWS: usize = 2;

/// Result of `run rule-vector-sites`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerSiteResult {
    pub experiment: String,
    pub model: String,
    pub task: String,
    pub k: usize,
    pub seed: u64,
    pub n_dev: usize,
    pub n_test: usize,
    pub zero_shot: f64,
    pub icl: f64,
    /// Test accuracy of the dummy prompts (outputs rotated), no patch.
    pub dummy: f64,
    /// `rule vectors at answer positions (all k)` per layer.
    pub curve: LayerCurve,
    /// Layer chosen on dev.
    pub layer: usize,
    /// Test accuracy with s = 0..=k rule vectors written back (random subsets).
    pub by_count: Vec<SubsetAccuracy>,
}

/// The dummy prompt of extraction prompt `spec` for `query`: outputs rotated by one.
pub fn dummy_prompt(spec: &PromptSpec, query: &icl_tasks::Item) -> PromptSpec {
    let k = spec.demos.len();
    let demos = (0..k)
        .map(|j| {
            let mut d = spec.demos[j].clone();
            d.output = spec.demos[(j + 1) % k].output.clone();
            d
        })
        .collect();
    PromptSpec {
        demos,
        query: query.clone(),
    }
}

fn patched_accuracy<B: Backend>(
    probe: &Probe<B>,
    ex: &Extraction,
    dummies: &[Prepared],
    range: std::ops::Range<usize>,
    li: usize,
    subset: impl Fn(usize) -> Vec<usize>,
) -> Result<f64> {
    let prompts = &dummies[range.clone()];
    let (mut positions, mut vectors) = (Vec::new(), Vec::new());
    for i in range.clone() {
        let s = subset(i);
        positions.push(s.iter().map(|&j| dummies[i].answer_positions[j]).collect());
        vectors.push(s.iter().map(|&j| ex.rules[i][li][j].clone()).collect());
    }
    let logits = probe.logits_patched_at(prompts, ex.layers[li], &positions, &vectors)?;
    let pred: Vec<u32> = logits.iter().map(|l| super::probe::argmax_f32(l)).collect();
    let targets: Vec<u32> = prompts.iter().map(|p| p.target).collect();
    Ok(accuracy(&pred, &targets))
}

/// Experiment 3b, cached per (model, task, k, seed, sizes).
pub fn run_answer_sites<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &RunConfig,
    cache: &ResultCache,
    extraction: Option<&Extraction>,
) -> Result<AnswerSiteResult> {
    cached_on_extraction(
        probe,
        task,
        cfg,
        cache,
        extraction,
        "rule_vector_sites",
        |zero_shot, icl, ex| {
            let k = cfg.k;
            if k < 2 {
                return Err(ExperimentError::Invalid(
                    "rule-vector-sites needs k ≥ 2 (rotating one output breaks nothing)".into(),
                ));
            }
            let specs: Vec<PromptSpec> = ex
                .prompts
                .iter()
                .zip(&ex.queries)
                .map(|(p, q)| dummy_prompt(p, &q.query))
                .collect();
            let dummies = probe.prepare_all(&specs)?;
            if let Some(d) = dummies.iter().find(|d| d.answer_positions.len() != k) {
                return Err(ExperimentError::Invalid(format!(
                    "dummy prompt with {} answer positions, expected {k}",
                    d.answer_positions.len()
                )));
            }
            let n = dummies.len();
            let (dev, test) = (0..ex.n_dev, ex.n_dev..n);
            let all: Vec<usize> = (0..k).collect();
            let none = |_: usize| Vec::new();
            let dummy = patched_accuracy(probe, ex, &dummies, test.clone(), 0, none)?;
            let (mut dev_acc, mut test_acc) = (Vec::new(), Vec::new());
            for li in 0..ex.layers.len() {
                dev_acc.push(patched_accuracy(
                    probe,
                    ex,
                    &dummies,
                    dev.clone(),
                    li,
                    |_| all.clone(),
                )?);
                test_acc.push(patched_accuracy(
                    probe,
                    ex,
                    &dummies,
                    test.clone(),
                    li,
                    |_| all.clone(),
                )?);
            }
            let mut curve = LayerCurve::new(
                "rule vectors at answer positions (all k)",
                ex.layers.clone(),
                dev_acc,
                test_acc,
            );
            // At L = 0 the patch only swaps the output tokens back (the control), so the layer is
            // chosen among L ≥ 1 whenever the sweep has such layers (first best on dev).
            let mut best: Option<usize> = None;
            for (i, &l) in curve.layers.iter().enumerate() {
                if l > 0 && best.is_none_or(|b| curve.dev[i] > curve.dev[b]) {
                    best = Some(i);
                }
            }
            if let Some(b) = best {
                curve.best_layer = curve.layers[b];
                curve.test_at_best = curve.test[b];
            }
            let li = ex
                .layers
                .iter()
                .position(|&l| l == curve.best_layer)
                .unwrap_or(0);
            let mut by_count = vec![SubsetAccuracy {
                size: 0,
                accuracy: dummy,
            }];
            for s in 1..=k {
                let draws = if s == k { 1 } else { SITE_DRAWS };
                let mut acc = 0.0;
                for d in 0..draws {
                    let mut rng = ChaCha12Rng::seed_from_u64(
                        cfg.seed ^ ((s as u64) << 12) ^ (d as u64) ^ 0x517e,
                    );
                    let subsets: Vec<Vec<usize>> =
                        (0..n).map(|_| sample(&mut rng, k, s).into_vec()).collect();
                    acc += patched_accuracy(probe, ex, &dummies, test.clone(), li, |i| {
                        subsets[i].clone()
                    })?;
                }
                by_count.push(SubsetAccuracy {
                    size: s,
                    accuracy: acc / draws as f64,
                });
            }
            Ok(AnswerSiteResult {
                experiment: "rule-vector-sites".into(),
                model: cfg.model_id.clone(),
                task: task.name.clone(),
                k,
                seed: cfg.seed,
                n_dev: ex.n_dev,
                n_test: n - ex.n_dev,
                zero_shot,
                icl,
                dummy,
                layer: curve.best_layer,
                curve,
                by_count,
            })
        },
    )
}
