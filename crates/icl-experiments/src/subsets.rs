//! `run subsets` (issue #13, claim 3): do the rule vectors feed the output *together*?
//!
//! The transplant of [`crate::transplant`] writes all k of P's answer-position states into a
//! rule-breaking dummy Q at once. Here only s of them are written, s = 1..k: for each query a
//! random subset S of size s of the demonstration indices, P's rule vector r_j(L) written at Q's
//! answer position j for j ∈ S (Q's own states stay at the others). The same subsets are used at
//! every layer, so the layer-L and L0 curves are paired query by query.
//!
//! Controls, each an accuracy on the same queries:
//! - the **L0 control at each s**: the same subset written at L = 0, i.e. P's answer *tokens* beside
//!   Q's inputs; what the tokens alone restore at that subset size;
//! - **one vector repeated**: a single r_j (random j per query) written at *all* k positions at
//!   layer L. Writing more vectors also overwrites more of Q's rule-breaking labels; if that were
//!   all that grows with s, k copies of one rule vector would restore as much as k distinct ones.
//!
//! Verdict on "together", per task, at the layer L* ≥ 1 where writing all k does best:
//! *supported* when all k at L* clears both one vector at L* (s = 1) and the repeated vector at L*,
//! and all k at L* clears the L0 control at s = k (there is a transplant effect to split);
//! *not supported* when s = 1 or the repeated vector is at least as good as all k in the point
//! estimate (one answer position's state suffices); *inconclusive* otherwise. The paired interval
//! of the growth beyond the tokens, [acc(L*, k) − acc(0, k)] − [acc(L*, 1) − acc(0, 1)], is reported
//! beside it.
//!
//! Resumable: one (task, seed) per line of `OUT/<model>_subsets_k<k>.jsonl`.

use std::fmt::Write as _;
use std::path::Path;

use burn::tensor::backend::Backend;
use icl_tasks::TaskSet;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use super::journal::{run_task_seeds, RunFiles, UnitLine};
use super::local_global::seed_of;
use super::plot::{interval_plot, IntervalSeries};
use super::stats::{
    accuracy_interval, best_by_mean, bootstrap_mean, Interval, BOOTSTRAP_RESAMPLES, LEVEL,
};
use super::transplant::{p_prompts, q_prompts, DummyKind, Verdict};
use super::{ExperimentError, Prepared, Probe, Result};

/// Settings of a subsets run (stored with every unit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetsConfig {
    pub model_id: String,
    pub k: usize,
    pub n: usize,
    pub seeds: Vec<u64>,
    /// Layers L (read = write); must hold 0, the L0 control.
    pub layers: Vec<usize>,
    pub dummy: DummyKind,
}

/// Accuracy of one (layer, subset size) on the unit's queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeOutcome {
    pub layer: usize,
    pub size: usize,
    pub correct: Vec<bool>,
}

/// One (task, seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetsUnit {
    pub config: SubsetsConfig,
    pub task: String,
    pub seed: u64,
    pub queries: Vec<String>,
    pub p_alone: Vec<bool>,
    pub q_alone: Vec<bool>,
    /// `subsets[s − 1][i]`: the demonstration indices written for query i at size s.
    pub subsets: Vec<Vec<Vec<usize>>>,
    pub outcomes: Vec<SizeOutcome>,
    /// The index j whose vector is repeated at every position, per query.
    pub repeated_index: Vec<usize>,
    /// One vector repeated at all k positions, per layer (`size` = k).
    pub repeated: Vec<SizeOutcome>,
    pub seconds: f64,
}

impl UnitLine for SubsetsUnit {
    type Config = SubsetsConfig;
    fn config(&self) -> &SubsetsConfig {
        &self.config
    }
    fn key(&self) -> (String, u64) {
        (self.task.clone(), self.seed)
    }
}

/// The random subsets of one (task, seed): for each size s = 1..k and query i, s distinct indices
/// of 0..k in increasing order (s = k is every index). Deterministic in `seed`.
pub fn draw_subsets(k: usize, n: usize, seed: u64) -> Vec<Vec<Vec<usize>>> {
    (1..=k)
        .map(|s| {
            (0..n)
                .map(|i| {
                    let mut rng = ChaCha12Rng::seed_from_u64(
                        seed ^ 0x5b5e_7000 ^ ((i as u64) << 20) ^ ((s as u64) << 8),
                    );
                    let mut v = sample(&mut rng, k, s).into_vec();
                    v.sort_unstable();
                    v
                })
                .collect()
        })
        .collect()
}

fn correct_of(pred: &[u32], prompts: &[Prepared]) -> Vec<bool> {
    pred.iter()
        .zip(prompts)
        .map(|(p, q)| *p == q.target)
        .collect()
}

/// Next-token logits of `q` with `vectors[i][m]` written at the answer position of
/// demonstration `sites[i][m]` of `q[i]` at `layer` (the other answer positions keep Q's states).
pub fn subset_logits<B: Backend>(
    probe: &Probe<B>,
    q: &[Prepared],
    layer: usize,
    sites: &[Vec<usize>],
    vectors: &[Vec<Vec<f32>>],
) -> Result<Vec<Vec<f32>>> {
    if sites.len() != q.len() {
        return Err(ExperimentError::Invalid(format!(
            "{} subsets for {} prompts",
            sites.len(),
            q.len()
        )));
    }
    let mut positions = Vec::with_capacity(q.len());
    for (p, s) in q.iter().zip(sites) {
        let mut v = Vec::with_capacity(s.len());
        for &j in s {
            v.push(*p.answer_positions.get(j).ok_or_else(|| {
                ExperimentError::Invalid(format!(
                    "demonstration index {j} of a prompt with {} answer positions",
                    p.answer_positions.len()
                ))
            })?);
        }
        positions.push(v);
    }
    probe.logits_patched_at(q, layer, &positions, vectors)
}

/// Greedy correctness under [`subset_logits`].
fn write_at<B: Backend>(
    probe: &Probe<B>,
    q: &[Prepared],
    layer: usize,
    sites: &[Vec<usize>],
    vectors: &[Vec<Vec<f32>>],
) -> Result<Vec<bool>> {
    let logits = subset_logits(probe, q, layer, sites, vectors)?;
    let pred: Vec<u32> = logits.iter().map(|l| super::probe::argmax_f32(l)).collect();
    Ok(correct_of(&pred, q))
}

/// Computes one (task, seed).
pub fn run_unit<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &SubsetsConfig,
    seed: u64,
) -> Result<SubsetsUnit> {
    let t0 = std::time::Instant::now();
    let k = cfg.k;
    if k < 2 {
        return Err(ExperimentError::Invalid(
            "a subset-size transplant needs k ≥ 2 demonstrations".into(),
        ));
    }
    if !cfg.layers.contains(&0) {
        return Err(ExperimentError::Invalid(
            "the layers must include 0 (the L0 control)".into(),
        ));
    }
    if let Some(&l) = cfg.layers.iter().find(|&&l| l >= probe.n_layers()) {
        return Err(ExperimentError::Invalid(format!(
            "layer {l}: a write at or after the last block ({}) cannot reach the query",
            probe.n_layers()
        )));
    }
    let p_specs = p_prompts(task, k, cfg.n, seed)?;
    let q_specs = q_prompts(task, &p_specs, cfg.dummy, seed)?;
    let p = probe.prepare_all(&p_specs)?;
    let q = probe.prepare_all(&q_specs)?;
    if let Some(x) = p.iter().chain(&q).find(|x| x.answer_positions.len() != k) {
        return Err(ExperimentError::Invalid(format!(
            "task {}: a prompt with {} answer positions, expected {k}",
            task.name,
            x.answer_positions.len()
        )));
    }
    let n = p.len();
    // rules[i][layer index][j]
    let rules = probe.residuals(&p, &cfg.layers, |x| x.answer_positions.clone())?;
    let subsets = draw_subsets(k, n, seed);
    let mut rng = ChaCha12Rng::seed_from_u64(seed ^ 0x7e9e_a7ed);
    let repeated_index: Vec<usize> = (0..n).map(|_| rng.random_range(0..k)).collect();
    let mut outcomes = Vec::new();
    let mut repeated = Vec::new();
    for (li, &layer) in cfg.layers.iter().enumerate() {
        for (si, sites) in subsets.iter().enumerate() {
            let v: Vec<Vec<Vec<f32>>> = (0..n)
                .map(|i| sites[i].iter().map(|&j| rules[i][li][j].clone()).collect())
                .collect();
            outcomes.push(SizeOutcome {
                layer,
                size: si + 1,
                correct: write_at(probe, &q, layer, sites, &v)?,
            });
        }
        let all: Vec<Vec<usize>> = (0..n).map(|_| (0..k).collect()).collect();
        let v: Vec<Vec<Vec<f32>>> = (0..n)
            .map(|i| vec![rules[i][li][repeated_index[i]].clone(); k])
            .collect();
        repeated.push(SizeOutcome {
            layer,
            size: k,
            correct: write_at(probe, &q, layer, &all, &v)?,
        });
    }
    Ok(SubsetsUnit {
        config: cfg.clone(),
        task: task.name.clone(),
        seed,
        queries: p_specs.iter().map(|s| s.query.input.clone()).collect(),
        p_alone: correct_of(&probe.predict(&p)?, &p),
        q_alone: correct_of(&probe.predict(&q)?, &q),
        subsets,
        outcomes,
        repeated_index,
        repeated,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Where a run of this experiment writes (`OUT/<model>_subsets_k<k>.*`).
pub fn files(out: &Path, model_id: &str, k: usize) -> RunFiles {
    RunFiles::new(out, "subsets", model_id, k)
}

/// Runs (or resumes) every (task, seed).
pub fn run_subsets<B: Backend>(
    probe: &Probe<B>,
    tasks: &[TaskSet],
    cfg: &SubsetsConfig,
    out: &Path,
) -> Result<Vec<SubsetsUnit>> {
    let units = run_task_seeds(
        &files(out, &cfg.model_id, cfg.k),
        cfg,
        tasks,
        &cfg.seeds,
        |task, seed, bar| run_unit(&probe.counting(bar), task, cfg, seed),
    )?;
    Ok(units.records)
}

/// The pooled result of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSubsets {
    pub task: String,
    pub seeds: Vec<u64>,
    pub p_alone: Interval,
    pub q_alone: Interval,
    /// (layer, size, accuracy).
    pub by_size: Vec<(usize, usize, Interval)>,
    /// (layer, accuracy of one vector repeated at all k positions).
    pub repeated: Vec<(usize, Interval)>,
    /// The layer L ≥ 1 where all k written does best.
    pub best_layer: Option<usize>,
    /// Paired [acc(L*, k) − acc(0, k)] − [acc(L*, 1) − acc(0, 1)].
    pub growth_beyond_tokens: Option<Interval>,
    pub verdict: Verdict,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetsSummary {
    pub experiment: String,
    pub config: SubsetsConfig,
    pub level: f64,
    pub resamples: usize,
    pub tasks: Vec<TaskSubsets>,
    pub seconds: f64,
}

fn f64s(v: &[bool]) -> Vec<f64> {
    v.iter().map(|&c| f64::from(u8::from(c))).collect()
}

/// The claim-(3) verdict from the pooled intervals (see the module docs): `all_k`, `one` and
/// `repeated` at the best layer L* ≥ 1, `l0_all_k` the L0 control with all k written.
pub fn together_verdict(
    all_k: &Interval,
    one: &Interval,
    repeated: &Interval,
    l0_all_k: &Interval,
) -> (Verdict, String) {
    if !all_k.clears(l0_all_k) {
        return (
            Verdict::Inconclusive,
            format!(
                "no transplant effect to split: all k {} does not clear the L0 control {}",
                all_k.show(),
                l0_all_k.show()
            ),
        );
    }
    if one.mean >= all_k.mean || repeated.mean >= all_k.mean {
        return (
            Verdict::NotSupported,
            format!(
                "one vector suffices: s = 1 {} or one vector repeated {} vs all k {}",
                one.show(),
                repeated.show(),
                all_k.show()
            ),
        );
    }
    if all_k.clears(one) && all_k.clears(repeated) {
        return (
            Verdict::Supported,
            format!(
                "all k {} clears s = 1 {} and one vector repeated {}",
                all_k.show(),
                one.show(),
                repeated.show()
            ),
        );
    }
    (
        Verdict::Inconclusive,
        format!(
            "all k {} above s = 1 {} and one vector repeated {}, intervals overlapping",
            all_k.show(),
            one.show(),
            repeated.show()
        ),
    )
}

/// Pools the units of each task over seeds, with intervals and the claim-(3) verdicts.
pub fn summarize(cfg: &SubsetsConfig, units: &[SubsetsUnit]) -> Result<SubsetsSummary> {
    let mut names: Vec<&str> = Vec::new();
    for u in units {
        if !names.contains(&u.task.as_str()) {
            names.push(&u.task);
        }
    }
    let k = cfg.k;
    let mut tasks = Vec::new();
    for name in names {
        let us: Vec<&SubsetsUnit> = units.iter().filter(|u| u.task == name).collect();
        let pool = |f: &dyn Fn(&SubsetsUnit) -> Option<Vec<bool>>| -> Result<Vec<bool>> {
            let mut v = Vec::new();
            for u in &us {
                v.extend(f(u).ok_or_else(|| {
                    ExperimentError::Invalid(format!(
                        "task {name} seed {}: a condition is missing from the journal",
                        u.seed
                    ))
                })?);
            }
            Ok(v)
        };
        let at = |l: usize, s: usize| {
            pool(&|u| {
                u.outcomes
                    .iter()
                    .find(|o| o.layer == l && o.size == s)
                    .map(|o| o.correct.clone())
            })
        };
        let rep = |l: usize| {
            pool(&|u| {
                u.repeated
                    .iter()
                    .find(|o| o.layer == l)
                    .map(|o| o.correct.clone())
            })
        };
        let iv = |v: &[bool], what: &str| accuracy_interval(v, seed_of(&format!("{name}/{what}")));
        let p_alone = iv(&pool(&|u| Some(u.p_alone.clone()))?, "P")?;
        let q_alone = iv(&pool(&|u| Some(u.q_alone.clone()))?, "Q")?;
        let mut by_size = Vec::new();
        let mut repeated = Vec::new();
        for &l in &cfg.layers {
            for s in 1..=k {
                by_size.push((l, s, iv(&at(l, s)?, &format!("{l}/{s}"))?));
            }
            repeated.push((l, iv(&rep(l)?, &format!("{l}/rep"))?));
        }
        let get = |l: usize, s: usize| by_size.iter().find(|x| x.0 == l && x.1 == s).map(|x| x.2);
        let best = best_by_mean(
            cfg.layers
                .iter()
                .filter(|&&l| l >= 1)
                .filter_map(|&l| get(l, k).map(|x| (l, x))),
        );
        let (verdict, why, growth) = match (best, get(0, k), get(0, 1)) {
            (Some((l, all_k)), Some(l0k), Some(_)) => {
                let one = get(l, 1).unwrap_or(all_k);
                let rp = repeated.iter().find(|x| x.0 == l).map_or(all_k, |x| x.1);
                let (v, w) = together_verdict(&all_k, &one, &rp, &l0k);
                let (lk, l1, zk, z1) = (
                    f64s(&at(l, k)?),
                    f64s(&at(l, 1)?),
                    f64s(&at(0, k)?),
                    f64s(&at(0, 1)?),
                );
                let did: Vec<f64> = (0..lk.len())
                    .map(|i| (lk[i] - zk[i]) - (l1[i] - z1[i]))
                    .collect();
                let g = bootstrap_mean(
                    &did,
                    BOOTSTRAP_RESAMPLES,
                    LEVEL,
                    seed_of(&format!("{name}/growth")),
                )?;
                (v, w, Some(g))
            }
            _ => (
                Verdict::Inconclusive,
                "no layer L ≥ 1 or no L0 control".to_string(),
                None,
            ),
        };
        tasks.push(TaskSubsets {
            task: name.to_string(),
            seeds: us.iter().map(|u| u.seed).collect(),
            p_alone,
            q_alone,
            by_size,
            repeated,
            best_layer: best.map(|b| b.0),
            growth_beyond_tokens: growth,
            verdict,
            why,
        });
    }
    Ok(SubsetsSummary {
        experiment: "subsets".into(),
        config: cfg.clone(),
        level: LEVEL,
        resamples: BOOTSTRAP_RESAMPLES,
        tasks,
        seconds: units.iter().map(|u| u.seconds).sum(),
    })
}

/// Writes `OUT/<stem>.json`, `OUT/<stem>.md` and a plot per task; returns the Markdown.
pub fn write_subsets_report(s: &SubsetsSummary, out: &Path) -> Result<String> {
    let files = files(out, &s.config.model_id, s.config.k);
    let plots = files.write_summary(s)?;
    let k = s.config.k;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Subset-size transplant: do the rule vectors act together? ({})\n\n\
         k = {k}, {} queries × seeds {:?} per task, {} dummy; P's rule vectors written at s of Q's k \
         answer positions (random subset per query, the same at every layer). Accuracy in % with 95 % \
         percentile-bootstrap intervals ({} resamples). L0 = the token control; `repeated` = one rule \
         vector written at all k positions.\n",
        s.config.model_id,
        s.config.n,
        s.config.seeds,
        s.config.dummy.name(),
        s.resamples
    );
    let _ = writeln!(
        md,
        "| task | P alone | Q alone | L* | s = 1 at L* | all k at L* | repeated at L* | L0, s = 1 | L0, all k | growth beyond tokens (paired) | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for t in &s.tasks {
        let get = |l: usize, sz: usize| {
            t.by_size
                .iter()
                .find(|x| x.0 == l && x.1 == sz)
                .map_or("–".to_string(), |x| x.2.pct())
        };
        let (lstar, one, allk, rep) = match t.best_layer {
            Some(l) => (
                format!("L{l}"),
                get(l, 1),
                get(l, k),
                t.repeated
                    .iter()
                    .find(|x| x.0 == l)
                    .map_or("–".into(), |x| x.1.pct()),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {lstar} | {one} | {allk} | {rep} | {} | {} | {} | **{}** |",
            t.task,
            t.p_alone.pct(),
            t.q_alone.pct(),
            get(0, 1),
            get(0, k),
            t.growth_beyond_tokens
                .as_ref()
                .map_or("–".into(), Interval::pct),
            t.verdict.name()
        );
    }
    for t in &s.tasks {
        let _ = writeln!(md, "\n### {}\n\n{}\n", t.task, t.why);
        let _ = write!(md, "| L \\ s |");
        for sz in 1..=k {
            let _ = write!(md, " {sz} |");
        }
        let _ = writeln!(md, " repeated |");
        let _ = writeln!(md, "|---|{}---|", "---|".repeat(k));
        for &l in &s.config.layers {
            let _ = write!(md, "| {l}{} |", if l == 0 { " (L0 control)" } else { "" });
            for sz in 1..=k {
                let cell = t
                    .by_size
                    .iter()
                    .find(|x| x.0 == l && x.1 == sz)
                    .map_or("–".into(), |x| x.2.pct());
                let _ = write!(md, " {cell} |");
            }
            let rep = t
                .repeated
                .iter()
                .find(|x| x.0 == l)
                .map_or("–".into(), |x| x.1.pct());
            let _ = writeln!(md, " {rep} |");
        }
        let series: Vec<IntervalSeries> = s
            .config
            .layers
            .iter()
            .map(|&l| IntervalSeries {
                name: if l == 0 {
                    "L0 control (tokens)".into()
                } else {
                    format!("L{l}")
                },
                points: t
                    .by_size
                    .iter()
                    .filter(|x| x.0 == l)
                    .map(|x| (x.1 as f64, x.2.mean, x.2.lo, x.2.hi))
                    .collect(),
            })
            .collect();
        let file = files.plot_file(&t.task);
        interval_plot(
            &plots.join(&file),
            &format!(
                "{}: {} rule vectors written of {k}",
                s.config.model_id, t.task
            ),
            "rule vectors written (s)",
            &series,
            &[
                ("P alone".into(), t.p_alone.mean),
                ("Q alone".into(), t.q_alone.mean),
            ],
        )?;
        let _ = writeln!(md, "\n![{}](plots/{file})", t.task);
    }
    files.write_markdown(&md)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(mean: f64, lo: f64, hi: f64) -> Interval {
        Interval {
            mean,
            lo,
            hi,
            n: 48,
        }
    }

    #[test]
    fn subsets_have_the_right_sizes_and_are_deterministic() {
        let s = draw_subsets(5, 7, 3);
        assert_eq!(s.len(), 5);
        for (si, per_query) in s.iter().enumerate() {
            assert_eq!(per_query.len(), 7);
            for sub in per_query {
                assert_eq!(sub.len(), si + 1);
                assert!(sub.windows(2).all(|w| w[0] < w[1]), "{sub:?}");
                assert!(sub.iter().all(|&j| j < 5));
            }
        }
        assert!(s[4].iter().all(|sub| *sub == vec![0, 1, 2, 3, 4]));
        assert_eq!(s, draw_subsets(5, 7, 3));
        assert_ne!(s, draw_subsets(5, 7, 4));
        // Single indices vary across queries (not always the same position).
        let firsts: std::collections::BTreeSet<usize> = s[0].iter().map(|v| v[0]).collect();
        assert!(firsts.len() > 1, "{firsts:?}");
    }

    #[test]
    fn the_verdict_needs_all_k_to_clear_one_and_the_repeated_vector() {
        let l0 = iv(0.05, 0.0, 0.12);
        let (v, _) = together_verdict(
            &iv(0.8, 0.7, 0.9),
            &iv(0.2, 0.1, 0.3),
            &iv(0.3, 0.2, 0.4),
            &l0,
        );
        assert_eq!(v, Verdict::Supported);
        // One vector repeated restores as much: not distributed.
        let (v, _) = together_verdict(
            &iv(0.8, 0.7, 0.9),
            &iv(0.2, 0.1, 0.3),
            &iv(0.85, 0.75, 0.95),
            &l0,
        );
        assert_eq!(v, Verdict::NotSupported);
        // A single written vector does as well as all k.
        let (v, _) = together_verdict(
            &iv(0.8, 0.7, 0.9),
            &iv(0.8, 0.7, 0.9),
            &iv(0.3, 0.2, 0.4),
            &l0,
        );
        assert_eq!(v, Verdict::NotSupported);
        // Growing but overlapping.
        let (v, _) = together_verdict(
            &iv(0.8, 0.7, 0.9),
            &iv(0.65, 0.55, 0.75),
            &iv(0.3, 0.2, 0.4),
            &l0,
        );
        assert_eq!(v, Verdict::Inconclusive);
        // No transplant effect at all.
        let (v, _) = together_verdict(
            &iv(0.1, 0.05, 0.2),
            &iv(0.0, 0.0, 0.0),
            &iv(0.0, 0.0, 0.0),
            &l0,
        );
        assert_eq!(v, Verdict::Inconclusive);
    }
}
