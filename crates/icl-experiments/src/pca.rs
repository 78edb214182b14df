//! Experiment 5: geometry of rule vectors. Rule vectors of several tasks (every demonstration of
//! `n_prompts` extraction prompts per task, at one layer) are projected on their first principal
//! components. If a rule vector encodes the rule rather than the demonstration's surface form,
//! the vectors of one task cluster although their inputs and outputs all differ: measured by the
//! share of variance explained by the task label (R²) and by leave-one-out nearest-centroid
//! accuracy in the full space; within each task, R² of the demonstration index says whether the
//! position in the prompt matters.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use icl_tasks::TaskSet;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use super::task_vector::extraction_prompts;
use super::{ExperimentError, Probe, Result, ResultCache, RunConfig};

/// One rule vector's projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaPoint {
    pub task: String,
    pub prompt: usize,
    pub demo: usize,
    pub pc: [f64; 2],
}

/// Result of `run pca`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaResult {
    pub experiment: String,
    pub model: String,
    pub k: usize,
    pub seed: u64,
    pub layer: usize,
    pub tasks: Vec<String>,
    /// Fraction of variance of the first principal components (up to 10).
    pub explained: Vec<f64>,
    /// Between-task sum of squares / total, in the full space.
    pub r2_task: f64,
    /// Leave-one-out nearest-centroid accuracy of the task label, full space.
    pub centroid_accuracy: f64,
    /// Per task: between-demonstration-index sum of squares / total within that task.
    pub r2_demo_index: BTreeMap<String, f64>,
    pub points: Vec<PcaPoint>,
}

/// Principal-component scores (first `m`) and explained-variance fractions of the rows of `x`.
pub fn principal_components(x: &DMatrix<f64>, m: usize) -> (DMatrix<f64>, Vec<f64>) {
    let (n, d) = x.shape();
    let mean = x.row_mean();
    let mut c = x.clone();
    for mut row in c.row_iter_mut() {
        row -= &mean;
    }
    // Eigen-decompose the smaller of the Gram and covariance matrices.
    let (scores, evals) = if n <= d {
        let g = &c * c.transpose();
        let e = g.symmetric_eigen();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| e.eigenvalues[b].total_cmp(&e.eigenvalues[a]));
        let m = m.min(n);
        let mut s = DMatrix::zeros(n, m);
        for (col, &o) in order.iter().take(m).enumerate() {
            let l = e.eigenvalues[o].max(0.0).sqrt();
            for r in 0..n {
                s[(r, col)] = e.eigenvectors[(r, o)] * l;
            }
        }
        (
            s,
            order
                .iter()
                .map(|&o| e.eigenvalues[o].max(0.0))
                .collect::<Vec<_>>(),
        )
    } else {
        let cov = c.transpose() * &c;
        let e = cov.symmetric_eigen();
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| e.eigenvalues[b].total_cmp(&e.eigenvalues[a]));
        let m = m.min(d);
        let mut v = DMatrix::zeros(d, m);
        for (col, &o) in order.iter().take(m).enumerate() {
            v.set_column(col, &e.eigenvectors.column(o));
        }
        (
            &c * v,
            order
                .iter()
                .map(|&o| e.eigenvalues[o].max(0.0))
                .collect::<Vec<_>>(),
        )
    };
    let total: f64 = evals.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let explained = evals.iter().take(10).map(|e| e / total).collect();
    (scores, explained)
}

/// Between-group sum of squares over total sum of squares of the rows of `x`.
pub fn r_squared(x: &DMatrix<f64>, groups: &[usize]) -> f64 {
    let mean = x.row_mean();
    let total: f64 = x.row_iter().map(|r| (r - &mean).norm_squared()).sum();
    let mut by: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &g) in groups.iter().enumerate() {
        by.entry(g).or_default().push(i);
    }
    let mut between = 0.0;
    for rows in by.values() {
        let mut m = x.row(rows[0]).clone_owned() * 0.0;
        for &r in rows {
            m += x.row(r);
        }
        m /= rows.len() as f64;
        between += rows.len() as f64 * (m - &mean).norm_squared();
    }
    if total > 0.0 {
        between / total
    } else {
        0.0
    }
}

/// Leave-one-out nearest-centroid accuracy of `groups` from the rows of `x`.
pub fn centroid_accuracy(x: &DMatrix<f64>, groups: &[usize]) -> f64 {
    let n_groups = groups.iter().max().map_or(0, |m| m + 1);
    let d = x.ncols();
    let mut sums = DMatrix::<f64>::zeros(n_groups, d);
    let mut counts = vec![0usize; n_groups];
    for (i, &g) in groups.iter().enumerate() {
        let mut row = sums.row_mut(g);
        row += x.row(i);
        counts[g] += 1;
    }
    let mut correct = 0;
    for (i, &g) in groups.iter().enumerate() {
        let mut best = (f64::INFINITY, usize::MAX);
        for (c, &count) in counts.iter().enumerate().take(n_groups) {
            let (sum, cnt) = if c == g {
                (sums.row(c) - x.row(i), count - 1)
            } else {
                (sums.row(c).clone_owned(), count)
            };
            if cnt == 0 {
                continue;
            }
            let dist = (sum / cnt as f64 - x.row(i)).norm_squared();
            if dist < best.0 {
                best = (dist, c);
            }
        }
        if best.1 == g {
            correct += 1;
        }
    }
    correct as f64 / groups.len().max(1) as f64
}

/// Experiment 5 over `tasks` at `layer`, `n_prompts` extraction prompts per task, cached.
pub fn run_pca<B: Backend>(
    probe: &Probe<B>,
    tasks: &[TaskSet],
    cfg: &RunConfig,
    layer: usize,
    n_prompts: usize,
    cache: &ResultCache,
) -> Result<PcaResult> {
    if layer > probe.n_layers() {
        return Err(ExperimentError::Invalid(format!(
            "layer {layer} > {} layers",
            probe.n_layers()
        )));
    }
    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let key = format!("k{}_s{}_p{n_prompts}_L{layer}", cfg.k, cfg.seed);
    cache.get_or(&cfg.model_id, &names.join("+"), &key, "pca", || {
        let mut rows: Vec<Vec<f32>> = Vec::new();
        let mut meta: Vec<(usize, usize, usize)> = Vec::new();
        for (ti, task) in tasks.iter().enumerate() {
            let prompts =
                probe.prepare_all(&extraction_prompts(task, cfg.k, n_prompts, cfg.seed)?)?;
            let res = probe.residuals(&prompts, &[layer], |p| p.answer_positions.clone())?;
            for (pi, r) in res.into_iter().enumerate() {
                for (j, v) in r
                    .into_iter()
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                {
                    rows.push(v);
                    meta.push((ti, pi, j));
                }
            }
        }
        if rows.len() < 3 {
            return Err(ExperimentError::Invalid(
                "PCA needs at least 3 rule vectors".into(),
            ));
        }
        let d = rows[0].len();
        let x = DMatrix::from_fn(rows.len(), d, |r, c| rows[r][c] as f64);
        let (scores, explained) = principal_components(&x, 2);
        let task_of: Vec<usize> = meta.iter().map(|m| m.0).collect();
        let mut r2_demo_index = BTreeMap::new();
        for (ti, name) in names.iter().enumerate() {
            let idx: Vec<usize> = (0..meta.len()).filter(|&i| meta[i].0 == ti).collect();
            let sub = x.select_rows(idx.iter());
            let demo: Vec<usize> = idx.iter().map(|&i| meta[i].2).collect();
            r2_demo_index.insert(name.clone(), r_squared(&sub, &demo));
        }
        let points = meta
            .iter()
            .enumerate()
            .map(|(i, &(t, p, j))| PcaPoint {
                task: names[t].clone(),
                prompt: p,
                demo: j,
                pc: [
                    scores[(i, 0)],
                    if scores.ncols() > 1 {
                        scores[(i, 1)]
                    } else {
                        0.0
                    },
                ],
            })
            .collect();
        Ok(PcaResult {
            experiment: "pca".into(),
            model: cfg.model_id.clone(),
            k: cfg.k,
            seed: cfg.seed,
            layer,
            tasks: names.clone(),
            explained,
            r2_task: r_squared(&x, &task_of),
            centroid_accuracy: centroid_accuracy(&x, &task_of),
            r2_demo_index,
            points,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_of_a_line_has_one_component() {
        let x = DMatrix::from_fn(6, 3, |r, c| (r as f64) * [1.0, 2.0, -1.0][c]);
        let (s, e) = principal_components(&x, 2);
        assert!((e[0] - 1.0).abs() < 1e-9, "{e:?}");
        // Scores are the signed distances along the line, centred.
        let step = (s[(1, 0)] - s[(0, 0)]).abs();
        assert!((step - 6f64.sqrt()).abs() < 1e-9);
        // Same answer through the Gram branch (n ≤ d).
        let x2 = DMatrix::from_fn(2, 3, |r, c| (r as f64) * [1.0, 2.0, -1.0][c]);
        let (_, e2) = principal_components(&x2, 2);
        assert!((e2[0] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn r2_and_centroids_separate_clusters() {
        let x = DMatrix::from_row_slice(4, 2, &[0.0, 0.0, 0.1, 0.0, 5.0, 5.0, 5.1, 5.0]);
        let g = [0, 0, 1, 1];
        assert!(r_squared(&x, &g) > 0.99);
        assert_eq!(centroid_accuracy(&x, &g), 1.0);
        assert!(r_squared(&x, &[0, 1, 0, 1]) < 0.01);
    }
}
