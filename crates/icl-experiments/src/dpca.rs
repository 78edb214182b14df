//! `run dpca` (issue #13, item 3): the variance of answer-position states split into the
//! marginalisations of demixed PCA (Kobak et al. 2016, "Demixed principal component analysis of
//! neural population data", eLife 5:e10989): task (the rule), item, demonstration index and their
//! interactions, per layer.
//!
//! **Design.** For each seed, each task t of the run contributes I train items; item i of task t
//! is placed at demonstration index j (j = 0..k) of a k-shot prompt whose other k − 1
//! demonstrations are random train items of the same task and whose query is a random test item,
//! R times with fresh fillers (trials r). The state read is the residual at demonstration j's answer
//! position (and, as a control, at the last token of its input) at every layer of the grid: a
//! balanced array x[t, i, j, r] ∈ R^D. Items are nested in tasks (each task has its own inputs), so
//! the item effect is the item-within-task marginalisation {i, ti}.
//!
//! **Marginalisation** (Kobak et al., section "Marginalization procedure"): with ⟨x⟩_S the average
//! over the axes in S (trials always averaged), the part of x that depends exactly on the factor
//! set φ ⊆ {t, i, j} is, by inclusion–exclusion,
//!
//! x_φ = Σ_{ψ ⊆ φ} (−1)^{|φ| − |ψ|} ⟨x⟩_{all axes ∉ ψ},
//!
//! e.g. x_t = ⟨x⟩_{ijr} − ⟨x⟩_{tijr}, x_tj = ⟨x⟩_{ir} − ⟨x⟩_{tir} − ⟨x⟩_{ijr} + ⟨x⟩_{tijr}, and
//! the trial noise x_ε = x − ⟨x⟩_r. For a balanced design the parts are orthogonal, so
//! ‖x − ⟨x⟩‖² = Σ_{φ ≠ ∅} ‖x_φ‖² + ‖x_ε‖² exactly (all norms over every cell and feature, each
//! x_φ broadcast over the axes it does not depend on). The fraction ‖x_φ‖² / ‖x − ⟨x⟩‖² is the
//! "variance explained per marginalisation" of the paper's Fig. 1/2 bars. Grouped as reported:
//! task = {t}; item = {i, ti}; demonstration index = {j, tj}; item × index = {ij, tij}; trial
//! noise. The regularised decoder/encoder fit of dPCA proper (their eq. 4–6) is not implemented:
//! the issue asks for the variance per marginalisation by layer, which needs only the
//! decomposition.
//!
//! **Control.** At L = 0 an answer-position state is the output token's embedding, and outputs
//! differ by task (capitals, French words, class names): the L0 row is the token-identity level of
//! the task fraction. The same decomposition at the last input token of the demonstration says
//! how much task variance any position of the prompt carries.
//!
//! Resumable: one seed per line of `OUT/<model>_dpca_k<k>.jsonl`.

use std::fmt::Write as _;
use std::path::Path;

use burn::tensor::backend::Backend;
use icl_tasks::{Item, PromptSpec, Split, TaskSet};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use super::journal::{run_units, RunFiles, UnitLine};
use super::local_global::seed_of;
use super::plot::{interval_plot_y, IntervalSeries};
use super::stats::{bootstrap_mean, Interval, BOOTSTRAP_RESAMPLES, LEVEL};
use super::{ExperimentError, Probe, Result};

/// Factor axes, as bits of a marginalisation mask.
pub const TASK: u8 = 1;
pub const ITEM: u8 = 2;
pub const INDEX: u8 = 4;

/// Name of a marginalisation mask (`t`, `ti`, `tij`, …).
pub fn mask_name(m: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [(TASK, 't'), (ITEM, 'i'), (INDEX, 'j')] {
        if m & bit != 0 {
            s.push(c);
        }
    }
    if s.is_empty() {
        s.push('∅');
    }
    s
}

/// A balanced design: `dims = [T, I, J]` factor levels, `trials` repetitions per cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Design {
    pub dims: [usize; 3],
    pub trials: usize,
}

impl Design {
    pub fn cells(&self) -> usize {
        self.dims.iter().product()
    }
    /// Flat index of sample (t, i, j, r): r fastest.
    pub fn index(&self, t: usize, i: usize, j: usize, r: usize) -> usize {
        ((t * self.dims[1] + i) * self.dims[2] + j) * self.trials + r
    }
}

/// Squared norms of the parts of a decomposition (summed over every cell, trial and feature).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decomposition {
    /// ‖x − ⟨x⟩‖².
    pub total: f64,
    /// ‖x_φ‖² for φ = every non-empty mask 1..=7 (index m − 1).
    pub parts: Vec<f64>,
    /// ‖x − ⟨x⟩_r‖²: trial-to-trial variance.
    pub noise: f64,
}

impl Decomposition {
    pub fn part(&self, m: u8) -> f64 {
        self.parts[usize::from(m) - 1]
    }
    /// Fractions of the total: task, item {i, ti}, index {j, tj}, item × index {ij, tij}, noise.
    pub fn grouped(&self) -> [f64; 5] {
        let f = |v: f64| {
            if self.total > 0.0 {
                v / self.total
            } else {
                0.0
            }
        };
        [
            f(self.part(TASK)),
            f(self.part(ITEM) + self.part(TASK | ITEM)),
            f(self.part(INDEX) + self.part(TASK | INDEX)),
            f(self.part(ITEM | INDEX) + self.part(TASK | ITEM | INDEX)),
            f(self.noise),
        ]
    }
}

/// Names of [`Decomposition::grouped`]'s entries.
pub const GROUPS: [&str; 5] = [
    "task",
    "item (i + ti)",
    "demo index (j + tj)",
    "item × index",
    "trial noise",
];

/// The marginalisation of `x` (one `D`-vector per sample, in [`Design::index`] order).
#[allow(clippy::needless_range_loop)] // a cell index addresses all eight marginal-mean arrays at once
pub fn decompose(x: &[Vec<f32>], design: Design) -> Result<Decomposition> {
    let n = design.cells() * design.trials;
    if n == 0 || x.len() != n {
        return Err(ExperimentError::Invalid(format!(
            "dPCA: {} samples for a design of {:?} × {} trials",
            x.len(),
            design.dims,
            design.trials
        )));
    }
    let d = x[0].len();
    if let Some(v) = x.iter().find(|v| v.len() != d) {
        return Err(ExperimentError::Invalid(format!(
            "dPCA: samples of {} and {d} features",
            v.len()
        )));
    }
    let [nt, ni, nj] = design.dims;
    let r = design.trials;
    // Cell means ⟨x⟩_r, [T·I·J][D].
    let mut cell = vec![vec![0f64; d]; design.cells()];
    let mut noise = 0f64;
    for t in 0..nt {
        for i in 0..ni {
            for j in 0..nj {
                let c = (t * ni + i) * nj + j;
                for q in 0..r {
                    let v = &x[design.index(t, i, j, q)];
                    cell[c]
                        .iter_mut()
                        .zip(v)
                        .for_each(|(a, b)| *a += f64::from(*b));
                }
                cell[c].iter_mut().for_each(|a| *a /= r as f64);
                for q in 0..r {
                    let v = &x[design.index(t, i, j, q)];
                    noise += v
                        .iter()
                        .zip(&cell[c])
                        .map(|(a, m)| (f64::from(*a) - m).powi(2))
                        .sum::<f64>();
                }
            }
        }
    }
    // Marginal means M_m: the cell means averaged over the factor axes not in m, stored as a
    // full [T·I·J][D] array (broadcast), for all 8 masks.
    let coord = |c: usize| (c / (ni * nj), (c / nj) % ni, c % nj);
    let mut means: Vec<Vec<Vec<f64>>> = Vec::with_capacity(8);
    for m in 0u8..8 {
        let kept = |(t, i, j): (usize, usize, usize)| {
            (
                if m & TASK != 0 { t } else { 0 },
                if m & ITEM != 0 { i } else { 0 },
                if m & INDEX != 0 { j } else { 0 },
            )
        };
        let size = |bit: u8, n: usize| if m & bit != 0 { n } else { 1 };
        let (st, si, sj) = (size(TASK, nt), size(ITEM, ni), size(INDEX, nj));
        let count = (design.cells() / (st * si * sj)) as f64;
        let mut red = vec![vec![0f64; d]; st * si * sj];
        for (c, v) in cell.iter().enumerate() {
            let (t, i, j) = kept(coord(c));
            red[(t * si + i) * sj + j]
                .iter_mut()
                .zip(v)
                .for_each(|(a, b)| *a += b);
        }
        red.iter_mut()
            .for_each(|v| v.iter_mut().for_each(|a| *a /= count));
        means.push(
            (0..design.cells())
                .map(|c| {
                    let (t, i, j) = kept(coord(c));
                    red[(t * si + i) * sj + j].clone()
                })
                .collect(),
        );
    }
    let mut parts = Vec::with_capacity(7);
    for phi in 1u8..8 {
        let mut sq = 0f64;
        for c in 0..design.cells() {
            let mut v = vec![0f64; d];
            // Σ over ψ ⊆ φ of (−1)^{|φ|−|ψ|} M_ψ.
            let mut psi = phi;
            loop {
                let sign = if (phi.count_ones() - psi.count_ones()) % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                v.iter_mut()
                    .zip(&means[usize::from(psi)][c])
                    .for_each(|(a, b)| *a += sign * b);
                if psi == 0 {
                    break;
                }
                psi = (psi - 1) & phi;
            }
            sq += v.iter().map(|a| a * a).sum::<f64>();
        }
        parts.push(sq * r as f64);
    }
    let grand = &means[0][0];
    let total = x
        .iter()
        .map(|v| {
            v.iter()
                .zip(grand)
                .map(|(a, g)| (f64::from(*a) - g).powi(2))
                .sum::<f64>()
        })
        .sum();
    Ok(Decomposition {
        total,
        parts,
        noise,
    })
}

/// Settings of a dPCA run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpcaConfig {
    pub model_id: String,
    pub k: usize,
    /// Items per task (I).
    pub items: usize,
    /// Trials per (task, item, index) cell (R ≥ 2 so that trial noise is defined).
    pub trials: usize,
    pub seeds: Vec<u64>,
    pub layers: Vec<usize>,
    /// The tasks of the design, in order.
    pub tasks: Vec<String>,
}

/// One seed: the decompositions per layer at the answer positions and at the input ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpcaUnit {
    pub config: DpcaConfig,
    pub seed: u64,
    pub answer: Vec<Decomposition>,
    pub input: Vec<Decomposition>,
    pub seconds: f64,
}

impl UnitLine for DpcaUnit {
    type Config = DpcaConfig;
    fn config(&self) -> &DpcaConfig {
        &self.config
    }
    fn key(&self) -> (String, u64) {
        ("all".into(), self.seed)
    }
}

/// The design's prompts of one seed, in [`Design::index`] order.
pub fn design_prompts(tasks: &[TaskSet], cfg: &DpcaConfig, seed: u64) -> Result<Vec<PromptSpec>> {
    let (k, ni, r) = (cfg.k, cfg.items, cfg.trials);
    let mut out = Vec::with_capacity(tasks.len() * ni * k * r);
    for (ti, task) in tasks.iter().enumerate() {
        let mut rng = ChaCha12Rng::seed_from_u64(seed ^ ((ti as u64) << 32) ^ 0xd_bca);
        let train = task.split(Split::Train);
        let test = task.split(Split::Test);
        if train.len() < ni.max(k) + 1 || test.is_empty() {
            return Err(ExperimentError::Invalid(format!(
                "task {}: {} train / {} test items, the dPCA design needs more than {} train",
                task.name,
                train.len(),
                test.len(),
                ni.max(k)
            )));
        }
        let items: Vec<&Item> = train.choose_multiple(&mut rng, ni).copied().collect();
        for item in &items {
            for j in 0..k {
                for _ in 0..r {
                    let query = (*test.choose(&mut rng).expect("checked non-empty")).clone();
                    let mut fill: Vec<&Item> = train
                        .iter()
                        .copied()
                        .filter(|x| x.input != item.input && !icl_tasks::prompt::leaks(x, &query))
                        .collect();
                    if fill.len() < k - 1 {
                        return Err(ExperimentError::Invalid(format!(
                            "task {}: too few filler demonstrations",
                            task.name
                        )));
                    }
                    fill.shuffle(&mut rng);
                    let mut demos: Vec<Item> = fill[..k - 1].iter().map(|x| (*x).clone()).collect();
                    demos.insert(j, (*item).clone());
                    out.push(PromptSpec { demos, query });
                }
            }
        }
    }
    Ok(out)
}

/// Computes one seed.
pub fn run_unit<B: Backend>(
    probe: &Probe<B>,
    tasks: &[TaskSet],
    cfg: &DpcaConfig,
    seed: u64,
) -> Result<DpcaUnit> {
    let t0 = std::time::Instant::now();
    if cfg.trials < 2 || cfg.items < 1 || cfg.k < 1 {
        return Err(ExperimentError::Invalid(
            "dPCA needs k ≥ 1, items ≥ 1 and trials ≥ 2".into(),
        ));
    }
    if let Some(&l) = cfg.layers.iter().find(|&&l| l > probe.n_layers()) {
        return Err(ExperimentError::Invalid(format!(
            "layer {l} beyond the model's {} blocks",
            probe.n_layers()
        )));
    }
    let design = Design {
        dims: [tasks.len(), cfg.items, cfg.k],
        trials: cfg.trials,
    };
    let specs = design_prompts(tasks, cfg, seed)?;
    let prompts = probe.prepare_all(&specs)?;
    // The sample's demonstration index j, from its place in the design order.
    let j_of = |s: usize| (s / cfg.trials) % cfg.k;
    let index_of = |p: &super::Prepared| prompts.iter().position(|q| std::ptr::eq(p, q));
    let states = probe.residuals(&prompts, &cfg.layers, |p| {
        let j = j_of(index_of(p).unwrap_or(0));
        let ans = p.answer_positions.get(j).copied().unwrap_or(0);
        let inp = p
            .input_positions
            .get(j)
            .and_then(|v| v.last().copied())
            .unwrap_or(0);
        vec![ans, inp]
    })?;
    if let Some(p) = prompts.iter().find(|p| p.answer_positions.len() != cfg.k) {
        return Err(ExperimentError::Invalid(format!(
            "a design prompt with {} answer positions, expected {}",
            p.answer_positions.len(),
            cfg.k
        )));
    }
    let mut answer = Vec::with_capacity(cfg.layers.len());
    let mut input = Vec::with_capacity(cfg.layers.len());
    for li in 0..cfg.layers.len() {
        let a: Vec<Vec<f32>> = states.iter().map(|s| s[li][0].clone()).collect();
        let b: Vec<Vec<f32>> = states.iter().map(|s| s[li][1].clone()).collect();
        answer.push(decompose(&a, design)?);
        input.push(decompose(&b, design)?);
    }
    Ok(DpcaUnit {
        config: cfg.clone(),
        seed,
        answer,
        input,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Where a run of this experiment writes (`OUT/<model>_dpca_k<k>.*`).
pub fn files(out: &Path, model_id: &str, k: usize) -> RunFiles {
    RunFiles::new(out, "dpca", model_id, k)
}

/// Runs (or resumes) every seed.
pub fn run_dpca<B: Backend>(
    probe: &Probe<B>,
    tasks: &[TaskSet],
    cfg: &DpcaConfig,
    out: &Path,
) -> Result<Vec<DpcaUnit>> {
    let keys: Vec<(String, u64)> = cfg.seeds.iter().map(|&s| ("all".into(), s)).collect();
    let units = run_units(
        &files(out, &cfg.model_id, cfg.k),
        cfg,
        &keys,
        |_, seed, bar| run_unit(&probe.counting(bar), tasks, cfg, seed),
    )?;
    Ok(units.records)
}

/// Fractions per layer and group, pooled over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpcaLayer {
    pub layer: usize,
    /// [`GROUPS`] order; the interval is a bootstrap over the seeds' fractions.
    pub answer: Vec<Interval>,
    pub input: Vec<Interval>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpcaSummary {
    pub experiment: String,
    pub config: DpcaConfig,
    pub groups: Vec<String>,
    pub layers: Vec<DpcaLayer>,
    pub seconds: f64,
}

pub fn summarize(cfg: &DpcaConfig, units: &[DpcaUnit]) -> Result<DpcaSummary> {
    let mut layers = Vec::new();
    for (li, &layer) in cfg.layers.iter().enumerate() {
        let ivs = |f: fn(&DpcaUnit) -> &Vec<Decomposition>, what: &str| -> Result<Vec<Interval>> {
            (0..GROUPS.len())
                .map(|g| {
                    let v: Vec<f64> = units.iter().map(|u| f(u)[li].grouped()[g]).collect();
                    bootstrap_mean(
                        &v,
                        BOOTSTRAP_RESAMPLES,
                        LEVEL,
                        seed_of(&format!("dpca/{what}/{layer}/{g}")),
                    )
                })
                .collect()
        };
        layers.push(DpcaLayer {
            layer,
            answer: ivs(|u| &u.answer, "a")?,
            input: ivs(|u| &u.input, "i")?,
        });
    }
    Ok(DpcaSummary {
        experiment: "dpca".into(),
        config: cfg.clone(),
        groups: GROUPS.iter().map(|s| s.to_string()).collect(),
        layers,
        seconds: units.iter().map(|u| u.seconds).sum(),
    })
}

/// Writes `OUT/<stem>.json`, `.md` and the plot; returns the Markdown.
pub fn write_dpca_report(s: &DpcaSummary, out: &Path) -> Result<String> {
    let c = &s.config;
    let files = files(out, &c.model_id, c.k);
    let plots = files.write_summary(s)?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## dPCA marginalisations of answer-position states ({}, k = {})\n\n\
         Tasks {:?}, {} items per task, every item at every demonstration index, {} trials with \
         fresh fillers; seeds {:?}. Fraction of the total variance (‖x − ⟨x⟩‖²) per \
         marginalisation, mean over seeds with a bootstrap interval over seeds (few seeds: read the \
         interval as a spread). Control: the same at the last input token of the demonstration \
         (`inp`); L0 is the token-identity level.\n",
        c.model_id, c.k, c.tasks, c.items, c.trials, c.seeds
    );
    let mut h = String::from("| L |");
    let mut sp = String::from("|---|");
    for g in GROUPS {
        let _ = write!(h, " {g} |");
        sp.push_str("---|");
    }
    let _ = write!(h, " task (inp) | item (inp) |");
    sp.push_str("---|---|");
    let _ = writeln!(md, "{h}\n{sp}");
    let f = |i: &Interval| format!("{:.2} [{:.2}, {:.2}]", i.mean, i.lo, i.hi);
    for l in &s.layers {
        let mut row = format!("| {} |", l.layer);
        for iv in &l.answer {
            let _ = write!(row, " {} |", f(iv));
        }
        let _ = write!(row, " {} | {} |", f(&l.input[0]), f(&l.input[1]));
        let _ = writeln!(md, "{row}");
    }
    let mut series: Vec<IntervalSeries> = GROUPS
        .iter()
        .enumerate()
        .map(|(g, name)| IntervalSeries {
            name: (*name).to_string(),
            points: s
                .layers
                .iter()
                .map(|l| {
                    (
                        l.layer as f64,
                        l.answer[g].mean,
                        l.answer[g].lo,
                        l.answer[g].hi,
                    )
                })
                .collect(),
        })
        .collect();
    series.push(IntervalSeries {
        name: "task at the input end (control)".into(),
        points: s
            .layers
            .iter()
            .map(|l| {
                (
                    l.layer as f64,
                    l.input[0].mean,
                    l.input[0].lo,
                    l.input[0].hi,
                )
            })
            .collect(),
    });
    let file = format!("{}.png", files.stem);
    interval_plot_y(
        &plots.join(&file),
        &format!(
            "{}: variance per marginalisation (answer positions)",
            c.model_id
        ),
        "layer L",
        "fraction of variance",
        (0.0, 1.02),
        &series,
        &[],
    )?;
    let _ = writeln!(
        md,
        "\n![dPCA](plots/{file})\n\nWall time: {:.0} s.",
        s.seconds
    );
    files.write_markdown(&md)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn gauss(rng: &mut ChaCha12Rng) -> f32 {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Planted signals with no noise: x = a_t·e0 + b_j·e1 + c_{t,i}·e2 + d_{t,j}·e3 + 5 (offset),
    /// each coefficient set zero-mean over its own axis, so every part is known in closed form.
    #[test]
    fn planted_marginals_are_recovered_exactly() {
        let design = Design {
            dims: [3, 4, 5],
            trials: 2,
        };
        let [nt, ni, nj] = design.dims;
        let a = [1.0f32, -2.0, 1.0];
        let b = [2.0f32, -1.0, 0.0, 1.0, -2.0];
        // c[t][i] zero-mean over i for every t (item within task, no main item effect).
        let c = [
            [1.0f32, -1.0, 2.0, -2.0],
            [0.5, 0.5, -0.5, -0.5],
            [3.0, -1.0, -1.0, -1.0],
        ];
        // d[t][j] zero-mean over t and over j: a pure task × index interaction.
        let d = [
            [1.0f32, -1.0, 0.0, 0.0, 0.0],
            [-1.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
        ];
        let mut x = vec![Vec::new(); design.cells() * design.trials];
        for t in 0..nt {
            for i in 0..ni {
                for j in 0..nj {
                    for r in 0..design.trials {
                        x[design.index(t, i, j, r)] = vec![a[t], b[j], c[t][i], d[t][j], 5.0];
                    }
                }
            }
        }
        let dec = decompose(&x, design).unwrap();
        let rep = |over: usize| (over * design.trials) as f64;
        let sq = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>();
        let want_t = rep(ni * nj) * sq(&a);
        let want_j = rep(nt * ni) * sq(&b);
        let want_ti = rep(nj) * c.iter().map(|r| sq(r)).sum::<f64>();
        let want_tj = rep(ni) * d.iter().map(|r| sq(r)).sum::<f64>();
        let close = |g: f64, w: f64| (g - w).abs() <= 1e-6 * w.max(1.0);
        assert!(close(dec.part(TASK), want_t), "{} {want_t}", dec.part(TASK));
        assert!(close(dec.part(INDEX), want_j));
        // c is zero-mean over i but not over t: its mean over tasks is an item main effect, the
        // rest the task × item interaction; together the item-within-task variance.
        let cbar: Vec<f64> = (0..ni)
            .map(|i| c.iter().map(|r| f64::from(r[i])).sum::<f64>() / nt as f64)
            .collect();
        let want_i = rep(nt * nj) * cbar.iter().map(|v| v * v).sum::<f64>();
        assert!(want_i > 0.0);
        assert!(close(dec.part(ITEM), want_i));
        assert!(close(dec.part(ITEM) + dec.part(TASK | ITEM), want_ti));
        assert!(close(dec.part(TASK | INDEX), want_tj));
        for m in [ITEM | INDEX, TASK | ITEM | INDEX] {
            assert!(
                dec.part(m).abs() < 1e-9,
                "{} = {}",
                mask_name(m),
                dec.part(m)
            );
        }
        assert!(dec.noise.abs() < 1e-9);
        assert!(close(dec.total, want_t + want_j + want_ti + want_tj));
        let g = dec.grouped();
        assert!((g[1] - want_ti / dec.total).abs() < 1e-9);
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    /// Pure iid noise: each part's expected share is its degrees of freedom over the total's
    /// (Π_{a∈φ}(n_a − 1) for φ; T·I·J·(R − 1) for the trial noise; N − 1 in all), and the parts
    /// always add up to the total (orthogonality of the marginalisation).
    #[test]
    fn iid_noise_splits_by_degrees_of_freedom() {
        let design = Design {
            dims: [4, 5, 3],
            trials: 3,
        };
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        let n = design.cells() * design.trials;
        let dfeat = 400;
        let x: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..dfeat).map(|_| gauss(&mut rng)).collect())
            .collect();
        let dec = decompose(&x, design).unwrap();
        let sum: f64 = dec.parts.iter().sum::<f64>() + dec.noise;
        assert!(
            (sum - dec.total).abs() < 1e-6 * dec.total,
            "{sum} vs {}",
            dec.total
        );
        let [nt, ni, nj] = design.dims;
        let df_total = (n - 1) as f64;
        for m in 1u8..8 {
            let mut df = 1.0;
            for (bit, k) in [(TASK, nt), (ITEM, ni), (INDEX, nj)] {
                if m & bit != 0 {
                    df *= (k - 1) as f64;
                }
            }
            let share = dec.part(m) / dec.total;
            let want = df / df_total;
            // 400 features × df ≥ 2 per part: relative sd of a chi-square share ≤ 1/sqrt(400) = 5 %.
            assert!(
                (share - want).abs() < 0.2 * want,
                "{}: {share} vs {want}",
                mask_name(m)
            );
        }
        let want_noise = (design.cells() * (design.trials - 1)) as f64 / df_total;
        assert!((dec.noise / dec.total - want_noise).abs() < 0.05 * want_noise);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let design = Design {
            dims: [2, 2, 2],
            trials: 2,
        };
        assert!(decompose(&vec![vec![0.0; 3]; 15], design).is_err());
        let mut x = vec![vec![0.0; 3]; 16];
        x[3] = vec![0.0; 2];
        assert!(decompose(&x, design).is_err());
    }

    #[test]
    fn mask_names() {
        assert_eq!(mask_name(TASK | INDEX), "tj");
        assert_eq!(mask_name(0), "∅");
    }
}
