//! `run transplant`: rule vectors moved into a prompt whose demonstrations break the rule, with
//! controls that token identity alone would pass.
//!
//! Prompt P shows rule R on items X (k train demonstrations, then the test query). A *dummy*
//! prompt Q shows k *other* train items whose displayed outputs break R, then the same query. The
//! residuals at P's answer positions (the first token of each demonstration's output) at layer a
//! are written at the same-index answer positions of Q at layer b, and the query is scored under R.
//! At a = b = 0 the residual is the token embedding, so the transplant only writes P's answer
//! *tokens* beside Q's inputs: the L0 control. Restoring R above that control means the
//! answer-position states carry the rule, not the tokens (claim 2 of the distributed-rule-vector
//! paper). The other controls: vectors from another task, the mean rule vector over the other P of
//! the run (rule without items), random vectors of the same norm (any large write). The protocol
//! and what each control rules out are in `docs/icl-experiments.md`.
//!
//! The run is resumable: one unit of work is (task, seed); its per-query outcomes are appended as
//! one JSON line to `OUT/<model>_transplant_k<k>.jsonl` and skipped on the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use burn::tensor::backend::Backend;
use icl_tasks::prompt::leaks;
use icl_tasks::{sample_prompts, Item, PromptSpec, Split, TaskSet};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use super::cache::sanitize;
use super::journal::{run_units, task_seed_keys, RunFiles, UnitLine, Units};
use super::plot::{interval_plot, IntervalSeries};
use super::stats::{
    accuracy_interval, best_by_mean, bootstrap_paired_difference, Interval, BOOTSTRAP_RESAMPLES,
    LEVEL,
};
use super::{ExperimentError, Prepared, Probe, Result};

/// Draws of Q's items before a dummy that breaks the rule is given up.
pub const DUMMY_ATTEMPTS: usize = 200;

/// How a dummy prompt's displayed outputs break the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DummyKind {
    /// Demonstration j shows demonstration (j + r) mod k's output, the smallest shift r ≥ 1 that
    /// breaks the rule at every demonstration.
    Rotated,
    /// A random permutation of the demonstrations' own outputs that breaks the rule everywhere.
    Shuffled,
    /// Each demonstration shows the output of a random other train item (not its own rule output).
    RandomLabels,
}

impl DummyKind {
    pub const ALL: [DummyKind; 3] = [
        DummyKind::Rotated,
        DummyKind::Shuffled,
        DummyKind::RandomLabels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DummyKind::Rotated => "rotated",
            DummyKind::Shuffled => "shuffled",
            DummyKind::RandomLabels => "random-labels",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                ExperimentError::Invalid(format!(
                    "unknown dummy kind {s:?} (rotated, shuffled, random-labels)"
                ))
            })
    }

    fn salt(self) -> u64 {
        match self {
            DummyKind::Rotated => 0x0707,
            DummyKind::Shuffled => 0x5a5a,
            DummyKind::RandomLabels => 0xa1a1,
        }
    }
}

/// Every output each input has in the task (some inputs have several, e.g. antonyms both ways):
/// a displayed output breaks the rule only when it is none of them.
pub fn rule_outputs(task: &TaskSet) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for it in &task.items {
        m.entry(it.input.clone())
            .or_default()
            .insert(it.output.clone());
    }
    m
}

/// Whether every demonstration of `demos` shows an output the rule does not give its input.
pub fn breaks_rule(rule: &BTreeMap<String, BTreeSet<String>>, demos: &[Item]) -> bool {
    demos
        .iter()
        .all(|d| !rule.get(&d.input).is_some_and(|o| o.contains(&d.output)))
}

/// The dummy demonstrations for prompt `p`: k train items other than P's demonstrations (never
/// leaking the query), their displayed outputs chosen by `kind` so that each breaks the rule.
pub fn dummy_demos(
    task: &TaskSet,
    rule: &BTreeMap<String, BTreeSet<String>>,
    p: &PromptSpec,
    kind: DummyKind,
    rng: &mut ChaCha12Rng,
) -> Result<Vec<Item>> {
    let k = p.demos.len();
    if k < 2 && kind != DummyKind::RandomLabels {
        return Err(ExperimentError::Invalid(format!(
            "a {} dummy needs k ≥ 2 demonstrations",
            kind.name()
        )));
    }
    let used: BTreeSet<&str> = p.demos.iter().map(|d| d.input.as_str()).collect();
    let train = task.split(Split::Train);
    let pool: Vec<&Item> = train
        .iter()
        .copied()
        .filter(|d| !used.contains(d.input.as_str()) && !leaks(d, &p.query))
        .collect();
    let labels: Vec<&str> = train
        .iter()
        .map(|d| d.output.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if pool.len() < k {
        return Err(ExperimentError::Invalid(format!(
            "task {}: {} train items besides P's demonstrations, need {k} for the dummy",
            task.name,
            pool.len()
        )));
    }
    let shows = |items: &[&Item], outputs: &[&str]| -> Vec<Item> {
        items
            .iter()
            .zip(outputs)
            .map(|(it, o)| Item {
                input: it.input.clone(),
                output: (*o).to_string(),
                split: it.split,
            })
            .collect()
    };
    for _ in 0..DUMMY_ATTEMPTS {
        let items: Vec<&Item> = pool.choose_multiple(rng, k).copied().collect();
        let own: Vec<&str> = items.iter().map(|i| i.output.as_str()).collect();
        let candidate = match kind {
            DummyKind::Rotated => (1..k)
                .map(|r| {
                    let o: Vec<&str> = (0..k).map(|j| own[(j + r) % k]).collect();
                    shows(&items, &o)
                })
                .find(|d| breaks_rule(rule, d)),
            DummyKind::Shuffled => (0..20)
                .map(|_| {
                    let mut o = own.clone();
                    o.shuffle(rng);
                    shows(&items, &o)
                })
                .find(|d| breaks_rule(rule, d)),
            DummyKind::RandomLabels => {
                let mut o = Vec::with_capacity(k);
                for it in &items {
                    let ok: Vec<&str> = labels
                        .iter()
                        .copied()
                        .filter(|l| !rule.get(&it.input).is_some_and(|s| s.contains(*l)))
                        .collect();
                    match ok.choose(rng) {
                        Some(l) => o.push(*l),
                        None => break,
                    }
                }
                (o.len() == k).then(|| shows(&items, &o))
            }
        };
        if let Some(d) = candidate {
            return Ok(d);
        }
    }
    Err(ExperimentError::Invalid(format!(
        "task {}: no {} dummy that breaks the rule in {DUMMY_ATTEMPTS} draws",
        task.name,
        kind.name()
    )))
}

/// Sizes and grids of a transplant run (stored with every unit, so a resumed run cannot mix
/// settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransplantConfig {
    pub model_id: String,
    /// Demonstrations per prompt.
    pub k: usize,
    /// Test queries per (task, seed).
    pub n: usize,
    /// Seeds of the demonstration (and query) draws.
    pub seeds: Vec<u64>,
    /// Layers of the a = b sweep (0 = the L0 control).
    pub layers: Vec<usize>,
    /// Layers of the coarse read-at-a / write-at-b grid (off-diagonal pairs, first dummy kind).
    pub ab_layers: Vec<usize>,
    pub dummies: Vec<DummyKind>,
}

/// Where the vectors written into Q come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `"{query} ->"`, no demonstrations.
    ZeroShot,
    /// P alone: the ceiling.
    Icl,
    /// Q alone: the baseline.
    Dummy,
    /// P's own rule vectors (read at a, written at b).
    Transplant,
    /// Rule vectors of a prompt of another task (same k, same index).
    OtherTask,
    /// Per demonstration index, the mean rule vector over the run's other P prompts of this task.
    MeanRule,
    /// Gaussian vectors scaled to the norm of the rule vector they replace.
    Random,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::ZeroShot => "zero-shot",
            Source::Icl => "P alone (ICL)",
            Source::Dummy => "Q alone",
            Source::Transplant => "transplant",
            Source::OtherTask => "other task's rule vectors",
            Source::MeanRule => "mean rule vector",
            Source::Random => "random, matched norm",
        }
    }
}

/// One condition: what is written, into which dummy, read at which layer and written at which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Condition {
    pub source: Source,
    pub dummy: Option<DummyKind>,
    pub read: Option<usize>,
    pub write: Option<usize>,
}

impl Condition {
    fn plain(source: Source, dummy: Option<DummyKind>) -> Self {
        Self {
            source,
            dummy,
            read: None,
            write: None,
        }
    }

    fn patch(source: Source, dummy: DummyKind, read: usize, write: usize) -> Self {
        Self {
            source,
            dummy: Some(dummy),
            read: Some(read),
            write: Some(write),
        }
    }

    /// `transplant (rotated) a=6 b=6`.
    pub fn label(&self) -> String {
        let mut s = self.source.name().to_string();
        if let Some(d) = self.dummy {
            let _ = write!(s, " ({})", d.name());
        }
        if let (Some(a), Some(b)) = (self.read, self.write) {
            let _ = write!(s, " a={a} b={b}");
        }
        s
    }
}

/// Per-query outcomes of one condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub condition: Condition,
    pub correct: Vec<bool>,
}

/// One unit of work: a task at one seed, as appended to the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub config: TransplantConfig,
    pub task: String,
    /// The task whose rule vectors the `other-task` condition writes (none with a single task).
    pub other_task: Option<String>,
    pub seed: u64,
    /// The query inputs, in outcome order.
    pub queries: Vec<String>,
    pub outcomes: Vec<Outcome>,
    /// Wall time of the unit.
    pub seconds: f64,
}

fn correct_of(pred: &[u32], prompts: &[Prepared]) -> Vec<bool> {
    pred.iter()
        .zip(prompts)
        .map(|(p, q)| *p == q.target)
        .collect()
}

/// Greedy predictions of `q` with `vectors[i][j]` written at answer position j of `q[i]` at
/// `layer`: the transplant itself.
pub fn transplant_logits<B: Backend>(
    probe: &Probe<B>,
    q: &[Prepared],
    layer: usize,
    vectors: &[Vec<Vec<f32>>],
) -> Result<Vec<Vec<f32>>> {
    let positions: Vec<Vec<usize>> = q
        .iter()
        .zip(vectors)
        .map(|(p, v)| p.answer_positions[..v.len().min(p.answer_positions.len())].to_vec())
        .collect();
    probe.logits_patched_at(q, layer, &positions, vectors)
}

fn transplant_correct<B: Backend>(
    probe: &Probe<B>,
    q: &[Prepared],
    layer: usize,
    vectors: &[Vec<Vec<f32>>],
) -> Result<Vec<bool>> {
    let logits = transplant_logits(probe, q, layer, vectors)?;
    let pred: Vec<u32> = logits.iter().map(|l| super::probe::argmax_f32(l)).collect();
    Ok(correct_of(&pred, q))
}

/// P's prompts of one (task, seed): the first `n` test queries of the seeded shuffle, each with k
/// train demonstrations.
pub fn p_prompts(task: &TaskSet, k: usize, n: usize, seed: u64) -> Result<Vec<PromptSpec>> {
    Ok(sample_prompts(task, Split::Test, k, n, seed)?)
}

/// The dummy prompts Q of `kind` for P's prompts (same query, other items, rule broken).
pub fn q_prompts(
    task: &TaskSet,
    p: &[PromptSpec],
    kind: DummyKind,
    seed: u64,
) -> Result<Vec<PromptSpec>> {
    let rule = rule_outputs(task);
    p.iter()
        .enumerate()
        .map(|(i, ps)| {
            let mut rng =
                ChaCha12Rng::seed_from_u64(seed ^ kind.salt() ^ ((i as u64) << 20) ^ 0xd0_d0);
            Ok(PromptSpec {
                demos: dummy_demos(task, &rule, ps, kind, &mut rng)?,
                query: ps.query.clone(),
            })
        })
        .collect()
}

fn check_sites(prompts: &[Prepared], k: usize, what: &str) -> Result<()> {
    match prompts.iter().find(|p| p.answer_positions.len() != k) {
        Some(p) => Err(ExperimentError::Invalid(format!(
            "{what} prompt with {} answer positions, expected {k}",
            p.answer_positions.len()
        ))),
        None => Ok(()),
    }
}

/// Runs every condition of one (task, seed).
pub fn run_unit<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    other: Option<&TaskSet>,
    cfg: &TransplantConfig,
    seed: u64,
) -> Result<UnitRecord> {
    let t0 = std::time::Instant::now();
    let k = cfg.k;
    if cfg.dummies.is_empty() {
        return Err(ExperimentError::Invalid("no dummy kinds given".into()));
    }
    if let Some(&l) = cfg
        .layers
        .iter()
        .chain(&cfg.ab_layers)
        .find(|&&l| l > probe.n_layers())
    {
        return Err(ExperimentError::Invalid(format!(
            "layer {l} beyond the model's {} blocks",
            probe.n_layers()
        )));
    }
    let p_specs = p_prompts(task, k, cfg.n, seed)?;
    let p = probe.prepare_all(&p_specs)?;
    check_sites(&p, k, "P")?;
    let zero = probe.prepare_all(
        &p_specs
            .iter()
            .map(|s| s.with_demos(&[]))
            .collect::<Vec<_>>(),
    )?;
    let mut qs = Vec::with_capacity(cfg.dummies.len());
    for &kind in &cfg.dummies {
        let q = probe.prepare_all(&q_prompts(task, &p_specs, kind, seed)?)?;
        check_sites(&q, k, kind.name())?;
        qs.push((kind, q));
    }
    let read: Vec<usize> = cfg
        .layers
        .iter()
        .chain(&cfg.ab_layers)
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let li = |l: usize| read.iter().position(|&x| x == l).unwrap_or(0);
    // rules[i][layer index][j]
    let rules = probe.residuals(&p, &read, |x| x.answer_positions.clone())?;
    let n = p.len();

    let mut outcomes = Vec::new();
    let mut push = |c: Condition, correct: Vec<bool>| {
        outcomes.push(Outcome {
            condition: c,
            correct,
        })
    };
    push(
        Condition::plain(Source::ZeroShot, None),
        correct_of(&probe.predict(&zero)?, &zero),
    );
    push(
        Condition::plain(Source::Icl, None),
        correct_of(&probe.predict(&p)?, &p),
    );
    for (kind, q) in &qs {
        push(
            Condition::plain(Source::Dummy, Some(*kind)),
            correct_of(&probe.predict(q)?, q),
        );
        for &l in &cfg.layers {
            let v: Vec<Vec<Vec<f32>>> = (0..n).map(|i| rules[i][li(l)].clone()).collect();
            push(
                Condition::patch(Source::Transplant, *kind, l, l),
                transplant_correct(probe, q, l, &v)?,
            );
        }
    }
    let (kind0, q0) = (qs[0].0, &qs[0].1);
    for &a in &cfg.ab_layers {
        for &b in &cfg.ab_layers {
            if a != b {
                let v: Vec<Vec<Vec<f32>>> = (0..n).map(|i| rules[i][li(a)].clone()).collect();
                push(
                    Condition::patch(Source::Transplant, kind0, a, b),
                    transplant_correct(probe, q0, b, &v)?,
                );
            }
        }
    }
    if let Some(o) = other {
        let os = p_prompts(o, k, cfg.n, seed)?;
        let op = probe.prepare_all(&os)?;
        check_sites(&op, k, "other task's")?;
        if op.is_empty() {
            return Err(ExperimentError::Invalid(format!(
                "task {}: no test queries",
                o.name
            )));
        }
        let orules = probe.residuals(&op, &cfg.layers, |x| x.answer_positions.clone())?;
        for (oi, &l) in cfg.layers.iter().enumerate() {
            let v: Vec<Vec<Vec<f32>>> = (0..n).map(|i| orules[i % op.len()][oi].clone()).collect();
            push(
                Condition::patch(Source::OtherTask, kind0, l, l),
                transplant_correct(probe, q0, l, &v)?,
            );
        }
    }
    if n >= 2 {
        for &l in &cfg.layers {
            let d = probe.d_model();
            // Leave-one-out mean per demonstration index: the rule without P_i's own items.
            let mut sum = vec![vec![0f32; d]; k];
            for r in &rules {
                for (s, x) in sum.iter_mut().zip(&r[li(l)]) {
                    s.iter_mut().zip(x).for_each(|(a, b)| *a += b);
                }
            }
            let v: Vec<Vec<Vec<f32>>> = (0..n)
                .map(|i| {
                    (0..k)
                        .map(|j| {
                            sum[j]
                                .iter()
                                .zip(&rules[i][li(l)][j])
                                .map(|(s, own)| (s - own) / (n - 1) as f32)
                                .collect()
                        })
                        .collect()
                })
                .collect();
            push(
                Condition::patch(Source::MeanRule, kind0, l, l),
                transplant_correct(probe, q0, l, &v)?,
            );
        }
    }
    for &l in &cfg.layers {
        let mut rng = ChaCha12Rng::seed_from_u64(seed ^ ((l as u64) << 24) ^ 0x7a_d0);
        let v: Vec<Vec<Vec<f32>>> = (0..n)
            .map(|i| {
                rules[i][li(l)]
                    .iter()
                    .map(|r| random_like(r, &mut rng))
                    .collect()
            })
            .collect();
        push(
            Condition::patch(Source::Random, kind0, l, l),
            transplant_correct(probe, q0, l, &v)?,
        );
    }
    Ok(UnitRecord {
        config: cfg.clone(),
        task: task.name.clone(),
        other_task: other.map(|o| o.name.clone()),
        seed,
        queries: p_specs.iter().map(|s| s.query.input.clone()).collect(),
        outcomes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A Gaussian direction (uniform on the sphere) scaled to `r`'s Euclidean norm. The normal draws
/// are Box–Muller over `rand`'s uniform stream: one formula, not worth a `rand_distr` dependency.
pub fn random_like(r: &[f32], rng: &mut ChaCha12Rng) -> Vec<f32> {
    let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
    let g: Vec<f32> = (0..r.len())
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    let gn = g
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    g.iter().map(|x| x * norm / gn).collect()
}

impl UnitLine for UnitRecord {
    type Config = TransplantConfig;
    fn config(&self) -> &TransplantConfig {
        &self.config
    }
    fn key(&self) -> (String, u64) {
        (self.task.clone(), self.seed)
    }
}

/// Where a transplant run writes (`OUT/<model>_transplant_k<k>.*`).
pub fn files(out: &Path, model_id: &str, k: usize) -> RunFiles {
    RunFiles::new(out, "transplant", model_id, k)
}

/// Runs every (task, seed) unit not yet in the journal, appending each as it finishes. The
/// `other-task` condition of task t uses the next task of `tasks` (cyclically).
pub fn run_transplant<B: Backend>(
    probe: &Probe<B>,
    tasks: &[TaskSet],
    cfg: &TransplantConfig,
    out: &Path,
) -> Result<Units<UnitRecord>> {
    let n_seeds = cfg.seeds.len();
    run_units(
        &files(out, &cfg.model_id, cfg.k),
        cfg,
        &task_seed_keys(tasks, &cfg.seeds),
        |i, seed, bar| {
            let ti = i / n_seeds;
            let other = (tasks.len() > 1).then(|| &tasks[(ti + 1) % tasks.len()]);
            run_unit(&probe.counting(bar), &tasks[ti], other, cfg, seed)
        },
    )
}

/// One condition's accuracy over all seeds of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionSummary {
    pub condition: Condition,
    pub label: String,
    pub accuracy: Interval,
}

/// Verdict on claim (2) for one task and dummy kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Some layer L ≥ 1's interval clears the L0 control's.
    Supported,
    /// No layer L ≥ 1 beats the L0 control even in its point estimate.
    NotSupported,
    /// Above the control in the point estimate but the intervals overlap, or no room (Q alone is
    /// not below P alone).
    Inconclusive,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Supported => "supported",
            Verdict::NotSupported => "not supported",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The claim-(2) test of one task and dummy kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindVerdict {
    pub dummy: DummyKind,
    pub icl: Interval,
    pub dummy_alone: Interval,
    /// a = b = 0.
    pub l0_control: Interval,
    /// The layer L ≥ 1 with the highest transplant accuracy, and that accuracy.
    pub best_layer: Option<usize>,
    pub best: Option<Interval>,
    /// Paired bootstrap interval of (best layer − L0 control) on the same queries.
    pub best_minus_l0: Option<Interval>,
    pub verdict: Verdict,
    pub why: String,
}

/// All conditions and verdicts of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub task: String,
    pub other_task: Option<String>,
    pub seeds: Vec<u64>,
    pub conditions: Vec<ConditionSummary>,
    pub verdicts: Vec<KindVerdict>,
}

/// The whole run: written as `OUT/<model>_transplant_k<k>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransplantSummary {
    pub experiment: String,
    pub config: TransplantConfig,
    pub level: f64,
    pub resamples: usize,
    pub tasks: Vec<TaskSummary>,
    pub seconds: f64,
}

fn outcomes_of(records: &[&UnitRecord], c: &Condition) -> Vec<bool> {
    let mut v = Vec::new();
    for r in records {
        if let Some(o) = r.outcomes.iter().find(|o| o.condition == *c) {
            v.extend_from_slice(&o.correct);
        }
    }
    v
}

fn f64s(v: &[bool]) -> Vec<f64> {
    v.iter().map(|&c| f64::from(u8::from(c))).collect()
}

/// Bootstrap seed of a condition's interval: fixed per (task, condition) so summaries reproduce.
fn interval_seed(task: &str, c: &Condition) -> u64 {
    let s = format!("{task}|{}", c.label());
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Pools the units' outcomes over seeds per task and condition, with intervals and verdicts.
pub fn summarize(
    cfg: &TransplantConfig,
    records: &[UnitRecord],
    seconds: f64,
) -> Result<TransplantSummary> {
    let mut task_names: Vec<&str> = Vec::new();
    for r in records {
        if !task_names.contains(&r.task.as_str()) {
            task_names.push(&r.task);
        }
    }
    let mut tasks = Vec::new();
    for name in task_names {
        let mut recs: Vec<&UnitRecord> = records.iter().filter(|r| r.task == name).collect();
        recs.sort_by_key(|r| r.seed);
        let conds: BTreeSet<Condition> = recs
            .iter()
            .flat_map(|r| r.outcomes.iter().map(|o| o.condition))
            .collect();
        let mut conditions = Vec::new();
        for c in &conds {
            let v = outcomes_of(&recs, c);
            if v.is_empty() {
                continue;
            }
            conditions.push(ConditionSummary {
                condition: *c,
                label: c.label(),
                accuracy: accuracy_interval(&v, interval_seed(name, c))?,
            });
        }
        let get = |c: &Condition| {
            conditions
                .iter()
                .find(|s| s.condition == *c)
                .map(|s| s.accuracy)
        };
        let icl = get(&Condition::plain(Source::Icl, None));
        let mut verdicts = Vec::new();
        for &kind in &cfg.dummies {
            let (Some(icl), Some(dummy_alone), Some(l0)) = (
                icl,
                get(&Condition::plain(Source::Dummy, Some(kind))),
                get(&Condition::patch(Source::Transplant, kind, 0, 0)),
            ) else {
                continue;
            };
            let swept: Vec<(usize, Interval)> = cfg
                .layers
                .iter()
                .filter(|&&l| l >= 1)
                .filter_map(|&l| {
                    get(&Condition::patch(Source::Transplant, kind, l, l)).map(|iv| (l, iv))
                })
                .collect();
            let any_clears = swept.iter().any(|(_, iv)| iv.clears(&l0));
            let best = best_by_mean(swept);
            let best_minus_l0 = match best {
                Some((l, _)) => {
                    let a = outcomes_of(&recs, &Condition::patch(Source::Transplant, kind, l, l));
                    let b = outcomes_of(&recs, &Condition::patch(Source::Transplant, kind, 0, 0));
                    Some(bootstrap_paired_difference(
                        &f64s(&a),
                        &f64s(&b),
                        BOOTSTRAP_RESAMPLES,
                        LEVEL,
                        interval_seed(name, &Condition::patch(Source::Transplant, kind, l, 0)),
                    )?)
                }
                None => None,
            };
            let (verdict, why) = if !icl.clears(&dummy_alone) {
                (
                    Verdict::Inconclusive,
                    format!(
                        "no room: P alone {} does not clear Q alone {}",
                        icl.show(),
                        dummy_alone.show()
                    ),
                )
            } else {
                match best {
                    None => (Verdict::Inconclusive, "no layer L ≥ 1 in the sweep".into()),
                    Some((l, b)) if any_clears => (
                        Verdict::Supported,
                        format!("L{l} {} clears the L0 control {}", b.show(), l0.show()),
                    ),
                    Some((l, b)) if b.mean <= l0.mean => (
                        Verdict::NotSupported,
                        format!(
                            "best L ≥ 1 (L{l}) {} is no better than the L0 control {}",
                            b.show(),
                            l0.show()
                        ),
                    ),
                    Some((l, b)) => (
                        Verdict::Inconclusive,
                        format!(
                            "best L ≥ 1 (L{l}) {} above the L0 control {} but the intervals overlap",
                            b.show(),
                            l0.show()
                        ),
                    ),
                }
            };
            verdicts.push(KindVerdict {
                dummy: kind,
                icl,
                dummy_alone,
                l0_control: l0,
                best_layer: best.map(|b| b.0),
                best: best.map(|b| b.1),
                best_minus_l0,
                verdict,
                why,
            });
        }
        tasks.push(TaskSummary {
            task: name.to_string(),
            other_task: recs.first().and_then(|r| r.other_task.clone()),
            seeds: recs.iter().map(|r| r.seed).collect(),
            conditions,
            verdicts,
        });
    }
    Ok(TransplantSummary {
        experiment: "transplant".into(),
        config: cfg.clone(),
        level: LEVEL,
        resamples: BOOTSTRAP_RESAMPLES,
        tasks,
        seconds,
    })
}

/// Writes `OUT/<stem>.json`, `OUT/<stem>.md` ([`files`]) and one plot per task under
/// `OUT/plots/`; returns the Markdown.
pub fn write_transplant_report(s: &TransplantSummary, out: &Path) -> Result<String> {
    let files = files(out, &s.config.model_id, s.config.k);
    let plots = files.write_summary(s)?;
    let c = &s.config;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Transplants of rule vectors into rule-breaking dummies ({})\n",
        c.model_id
    );
    let _ = writeln!(
        md,
        "k = {}, {} queries × seeds {:?} per task; accuracy in % on the query under the rule, with \
         {:.0} % percentile-bootstrap intervals ({} resamples over queries). Layers a = b: {:?}; \
         read-at-a / write-at-b grid on {:?} ({} dummy). `L0 control` = transplant at a = b = 0 \
         (P's answer-token embeddings written into Q).\n",
        c.k,
        c.n,
        c.seeds,
        100.0 * s.level,
        s.resamples,
        c.layers,
        c.ab_layers,
        c.dummies.first().map_or("–", |d| d.name())
    );
    let _ = writeln!(md, "### Claim (2), against the L0 control\n");
    let _ = writeln!(md, "| task | dummy | P alone | Q alone | L0 control | best L ≥ 1 | best − L0 (paired) | verdict |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for t in &s.tasks {
        for v in &t.verdicts {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | **{}** |",
                t.task,
                v.dummy.name(),
                v.icl.pct(),
                v.dummy_alone.pct(),
                v.l0_control.pct(),
                match (v.best_layer, &v.best) {
                    (Some(l), Some(b)) => format!("L{l}: {}", b.pct()),
                    _ => "–".into(),
                },
                v.best_minus_l0.as_ref().map_or("–".into(), Interval::pct),
                v.verdict.name()
            );
        }
    }
    md.push('\n');
    for t in &s.tasks {
        let get = |c: &Condition| {
            t.conditions
                .iter()
                .find(|x| x.condition == *c)
                .map(|x| x.accuracy)
        };
        let _ = writeln!(
            md,
            "### {} (other task: {}; seeds {:?})\n",
            t.task,
            t.other_task.as_deref().unwrap_or("–"),
            t.seeds
        );
        let kind0 = c.dummies[0];
        let mut header = String::from("| L (a = b) |");
        let mut sep = String::from("|---|");
        for d in &c.dummies {
            let _ = write!(header, " transplant ({}) |", d.name());
            sep.push_str("---|");
        }
        let _ = write!(
            header,
            " other task ({0}) | mean rule vector ({0}) | random, matched norm ({0}) |",
            kind0.name()
        );
        sep.push_str("---|---|---|");
        let _ = writeln!(md, "{header}\n{sep}");
        let cellf = |iv: Option<Interval>| iv.map_or("–".into(), |x| x.pct());
        for &l in &c.layers {
            let mut row = format!("| {l}{} |", if l == 0 { " (L0 control)" } else { "" });
            for &d in &c.dummies {
                let _ = write!(
                    row,
                    " {} |",
                    cellf(get(&Condition::patch(Source::Transplant, d, l, l)))
                );
            }
            for src in [Source::OtherTask, Source::MeanRule, Source::Random] {
                let _ = write!(
                    row,
                    " {} |",
                    cellf(get(&Condition::patch(src, kind0, l, l)))
                );
            }
            let _ = writeln!(md, "{row}");
        }
        let _ = writeln!(
            md,
            "\nReferences: zero-shot {}, P alone {}; Q alone: {}.\n",
            cellf(get(&Condition::plain(Source::ZeroShot, None))),
            cellf(get(&Condition::plain(Source::Icl, None))),
            c.dummies
                .iter()
                .map(|&d| format!(
                    "{} {}",
                    d.name(),
                    cellf(get(&Condition::plain(Source::Dummy, Some(d))))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if c.ab_layers.len() > 1 {
            let _ = writeln!(
                md,
                "Read at a (rows), written at b (columns), {} dummy:\n",
                kind0.name()
            );
            let mut h = String::from("| a \\ b |");
            let mut sp = String::from("|---|");
            for b in &c.ab_layers {
                let _ = write!(h, " {b} |");
                sp.push_str("---|");
            }
            let _ = writeln!(md, "{h}\n{sp}");
            for &a in &c.ab_layers {
                let mut row = format!("| {a} |");
                for &b in &c.ab_layers {
                    let _ = write!(
                        row,
                        " {} |",
                        cellf(get(&Condition::patch(Source::Transplant, kind0, a, b)))
                    );
                }
                let _ = writeln!(md, "{row}");
            }
            md.push('\n');
        }
        // Plot: accuracy against layer with intervals.
        let series_of = |src: Source, d: DummyKind, name: String| IntervalSeries {
            name,
            points: c
                .layers
                .iter()
                .filter_map(|&l| {
                    get(&Condition::patch(src, d, l, l)).map(|iv| (l as f64, iv.mean, iv.lo, iv.hi))
                })
                .collect(),
        };
        let mut series: Vec<IntervalSeries> = c
            .dummies
            .iter()
            .map(|&d| series_of(Source::Transplant, d, format!("transplant ({})", d.name())))
            .collect();
        for src in [Source::OtherTask, Source::MeanRule, Source::Random] {
            series.push(series_of(
                src,
                kind0,
                format!("{} ({})", src.name(), kind0.name()),
            ));
        }
        series.retain(|s| !s.points.is_empty());
        let mut refs = Vec::new();
        if let Some(iv) = get(&Condition::plain(Source::Icl, None)) {
            refs.push(("P alone".to_string(), iv.mean));
        }
        if let Some(iv) = get(&Condition::plain(Source::Dummy, Some(kind0))) {
            refs.push((format!("Q alone ({})", kind0.name()), iv.mean));
        }
        let file = files.plot_file(&t.task);
        interval_plot(
            &plots.join(&file),
            &format!(
                "{} {}: transplant into dummies (k = {})",
                c.model_id, t.task, c.k
            ),
            "layer L (a = b; 0 = embeddings: the L0 control)",
            &series,
            &refs,
        )?;
        let _ = writeln!(md, "![{}](plots/{file})\n", t.task);
    }
    let _ = writeln!(md, "Wall time of the units: {:.0} s.", s.seconds);
    files.write_markdown(&md)?;
    Ok(md)
}

/// The claim-(2) test against k (item 6 of the issue: multi-demonstration rules need several
/// demonstrations): per task, P alone, Q alone, the L0 control and the best layer L ≥ 1 at every k
/// of `summaries` (first dummy kind of each run), as `OUT/<model>_transplant_ksweep.md` and one
/// plot per task. Returns the Markdown.
pub fn write_k_sweep(summaries: &[TransplantSummary], out: &Path) -> Result<String> {
    let Some(first) = summaries.first() else {
        return Err(ExperimentError::Invalid("k sweep of no runs".into()));
    };
    // Not one k: `OUT/<model>_transplant_ksweep.md` and its plots.
    let files = RunFiles {
        out: out.to_path_buf(),
        stem: format!("{}_transplant_ksweep", sanitize(&first.config.model_id)),
        label: format!("[{}] transplant k sweep", first.config.model_id),
    };
    let mut runs: Vec<&TransplantSummary> = summaries.iter().collect();
    runs.sort_by_key(|s| s.config.k);
    let mut task_names: Vec<&str> = Vec::new();
    for s in &runs {
        for t in &s.tasks {
            if !task_names.contains(&t.task.as_str()) {
                task_names.push(&t.task);
            }
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Transplants against the number of demonstrations k ({})\n\n\
         Per k the first dummy kind of that run (k = 1 admits only random labels); best L ≥ 1 is \
         the best layer of the sweep at that k. Accuracy in % with {:.0} % bootstrap intervals.\n",
        first.config.model_id,
        100.0 * first.level
    );
    let plots = files.plots_dir()?;
    for task in task_names {
        let _ = writeln!(md, "### {task}\n");
        let _ = writeln!(
            md,
            "| k | dummy | P alone | Q alone | L0 control | best L ≥ 1 | verdict |\n|---|---|---|---|---|---|---|"
        );
        let mut series: Vec<IntervalSeries> = ["P alone", "Q alone", "L0 control", "best L ≥ 1"]
            .iter()
            .map(|n| IntervalSeries {
                name: (*n).to_string(),
                points: Vec::new(),
            })
            .collect();
        for s in &runs {
            let Some(v) = s
                .tasks
                .iter()
                .find(|t| t.task == task)
                .and_then(|t| t.verdicts.first())
            else {
                continue;
            };
            let k = s.config.k;
            let _ = writeln!(
                md,
                "| {k} | {} | {} | {} | {} | {} | **{}** |",
                v.dummy.name(),
                v.icl.pct(),
                v.dummy_alone.pct(),
                v.l0_control.pct(),
                match (v.best_layer, &v.best) {
                    (Some(l), Some(b)) => format!("L{l}: {}", b.pct()),
                    _ => "–".into(),
                },
                v.verdict.name()
            );
            let x = k as f64;
            for (i, iv) in [Some(v.icl), Some(v.dummy_alone), Some(v.l0_control), v.best]
                .into_iter()
                .enumerate()
            {
                if let Some(iv) = iv {
                    series[i].points.push((x, iv.mean, iv.lo, iv.hi));
                }
            }
        }
        let file = files.plot_file(task);
        interval_plot(
            &plots.join(&file),
            &format!("{} {task}: transplant against k", first.config.model_id),
            "k (demonstrations)",
            &series,
            &[],
        )?;
        let _ = writeln!(md, "\n![{task}](plots/{file})\n");
    }
    files.write_markdown(&md)?;
    Ok(md)
}
