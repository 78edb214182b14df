//! `run forms` (issue #13, item 4): do rule vectors encode the rule abstractly, or the surface
//! form they were read in? The same rule is shown in several surface forms:
//!
//! | form | demonstration | query |
//! |---|---|---|
//! | `arrow` | `"{in} -> {out}\n"` | `"{q} ->"` |
//! | `colon` | `"{in}: {out}\n"` | `"{q}:"` |
//! | `fat-arrow` | `"{in} => {out}\n"` | `"{q} =>"` |
//! | `qa` | `"Q: {in}\nA: {out}\n\n"` | `"Q: {q}\nA:"` |
//! | `symbols` | `arrow` with every label word replaced by a neutral symbol (`A`, `B`, … in sorted label order) | `"{q} ->"` |
//!
//! (`symbols` exists only for tasks with at most 26 distinct outputs, i.e. categorisations.) In
//! every form the model must answer `" " + output` next.
//!
//! For each (task, seed) the prompts P (k demonstrations, the test query) and the rule-breaking
//! dummies Q (other items, one [`DummyKind`], the same query) of `transplant` are rendered in every
//! form: the items are the same across forms, only the surface changes. Rule vectors read in form
//! F1 at layer L are written at Q's answer positions rendered in form F2 at the same layer
//! (the transplant of [`crate::transplant`]). F1 = F2 is the same-form transplant; F1 ≠ F2 is the
//! test; the **cross-form L0 control** (F1's answer-token embeddings written into the F2 dummy)
//! rules out that the tokens carry it. Claim (4), per ordered pair F1 ≠ F2: *supported* when some
//! L ≥ 1's cross-form interval clears the cross-form L0 control's; *not supported* when no L ≥ 1
//! beats it in the point estimate; *inconclusive* otherwise, and when P in F2 does not clear Q in
//! F2 (no room).
//!
//! Resumable: one (task, seed) per line of `OUT/<model>_forms_k<k>.jsonl`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use burn::tensor::backend::Backend;
use icl_tasks::prompt::{answer_token, tokenize_prompt, DemoSpans, Prompt};
use icl_tasks::{Item, PromptSpec, TaskSet};
use serde::{Deserialize, Serialize};

use super::journal::{run_task_seeds, RunFiles, UnitLine};
use super::local_global::seed_of;
use super::plot::{interval_plot, IntervalSeries};
use super::stats::{
    accuracy_interval, best_by_mean, bootstrap_paired_difference, Interval, BOOTSTRAP_RESAMPLES,
    LEVEL,
};
use super::transplant::{p_prompts, q_prompts, transplant_logits, DummyKind, Verdict};
use super::{ExperimentError, Prepared, Probe, ProbeTokenizer, Result};

/// A surface form of the prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    Arrow,
    Colon,
    FatArrow,
    Qa,
    Symbols,
}

/// Most distinct outputs a task may have for the `symbols` form (one capital letter each).
pub const MAX_SYMBOLS: usize = 26;

impl Form {
    pub const ALL: [Form; 5] = [
        Form::Arrow,
        Form::Colon,
        Form::FatArrow,
        Form::Qa,
        Form::Symbols,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Form::Arrow => "arrow",
            Form::Colon => "colon",
            Form::FatArrow => "fat-arrow",
            Form::Qa => "qa",
            Form::Symbols => "symbols",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                ExperimentError::Invalid(format!(
                    "unknown form {s:?} (arrow, colon, fat-arrow, qa, symbols)"
                ))
            })
    }

    /// (before the input, between input and separator, separator, after the output).
    fn parts(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Form::Arrow | Form::Symbols => ("", " ", "->", "\n"),
            Form::Colon => ("", "", ":", "\n"),
            Form::FatArrow => ("", " ", "=>", "\n"),
            Form::Qa => ("Q: ", "\n", "A:", "\n\n"),
        }
    }

    /// The prompt text of `demos` and `query` in this form, with the byte spans of every part
    /// (the separator in the place of `icl_tasks`' arrow). Outputs are taken as given: the
    /// `symbols` relabelling is applied to the task beforehand ([`relabel`]).
    pub fn render(self, demos: &[(&str, &str)], query: &str) -> Prompt {
        let (pre, mid, sep, post) = self.parts();
        let mut text = String::new();
        let mut spans = Vec::with_capacity(demos.len());
        for (input, output) in demos {
            text.push_str(pre);
            let i0 = text.len();
            text.push_str(input);
            let input_r = i0..text.len();
            text.push_str(mid);
            let a0 = text.len();
            text.push_str(sep);
            let arrow = a0..text.len();
            text.push(' ');
            let o0 = text.len();
            text.push_str(output);
            let output_r = o0..text.len();
            let n0 = text.len();
            text.push_str(post);
            spans.push(DemoSpans {
                input: input_r,
                arrow,
                output: output_r,
                newline: n0..text.len(),
            });
        }
        text.push_str(pre);
        let q0 = text.len();
        text.push_str(query);
        let query_r = q0..text.len();
        text.push_str(mid);
        let a0 = text.len();
        text.push_str(sep);
        let query_arrow = a0..text.len();
        Prompt {
            text,
            demos: spans,
            query: query_r,
            query_arrow,
        }
    }
}

/// The label → symbol map of the `symbols` form: the task's distinct outputs in sorted order to
/// `A`, `B`, …; an error unless the task is a categorisation: at most [`MAX_SYMBOLS`] labels, each
/// shared by two items on average (a word → word map such as to-upper has no label words).
pub fn symbol_map(task: &TaskSet) -> Result<BTreeMap<String, String>> {
    let labels: BTreeSet<&str> = task.items.iter().map(|i| i.output.as_str()).collect();
    if labels.len() > MAX_SYMBOLS || 2 * labels.len() > task.items.len() {
        return Err(ExperimentError::Invalid(format!(
            "task {}: {} distinct outputs over {} items; the symbols form takes a categorisation \
             (at most {MAX_SYMBOLS} labels, each shared by two items on average)",
            task.name,
            labels.len(),
            task.items.len()
        )));
    }
    Ok(labels
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l.to_string(), char::from(b'A' + i as u8).to_string()))
        .collect())
}

/// The task with every output replaced by its symbol.
pub fn relabel(task: &TaskSet, map: &BTreeMap<String, String>) -> TaskSet {
    TaskSet {
        name: task.name.clone(),
        items: task
            .items
            .iter()
            .map(|i| Item {
                input: i.input.clone(),
                output: map
                    .get(&i.output)
                    .cloned()
                    .unwrap_or_else(|| i.output.clone()),
                split: i.split,
            })
            .collect(),
    }
}

fn relabel_spec(s: &PromptSpec, map: &BTreeMap<String, String>) -> PromptSpec {
    let m = |i: &Item| Item {
        input: i.input.clone(),
        output: map
            .get(&i.output)
            .cloned()
            .unwrap_or_else(|| i.output.clone()),
        split: i.split,
    };
    PromptSpec {
        demos: s.demos.iter().map(m).collect(),
        query: m(&s.query),
    }
}

/// Tokenizes `spec` rendered in `form` (outputs as given) into the experiments' [`Prepared`].
pub fn prepare_in<B: Backend>(probe: &Probe<B>, spec: &PromptSpec, form: Form) -> Result<Prepared> {
    let tok = ProbeTokenizer(probe.tok);
    let d: Vec<(&str, &str)> = spec
        .demos
        .iter()
        .map(|i| (i.input.as_str(), i.output.as_str()))
        .collect();
    let t = tokenize_prompt(&tok, &form.render(&d, &spec.query.input))?;
    Ok(Prepared {
        answer_positions: t.answer_positions(),
        input_positions: t.demos.iter().map(|x| x.input.clone()).collect(),
        ids: t.ids,
        target: answer_token(&tok, &spec.query.output)?,
        query: spec.query.clone(),
    })
}

/// Settings of a forms run (stored with every unit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormsConfig {
    pub model_id: String,
    pub k: usize,
    pub n: usize,
    pub seeds: Vec<u64>,
    /// Layers L (read = write); 0 is the L0 control.
    pub layers: Vec<usize>,
    /// Forms; pairs are every form to itself and, unless `all_pairs`, the first form to every
    /// other and back.
    pub forms: Vec<Form>,
    pub all_pairs: bool,
    pub dummy: DummyKind,
}

impl FormsConfig {
    /// The ordered (read form, write form) pairs of the run among `usable` forms.
    pub fn pairs(&self, usable: &[Form]) -> Vec<(Form, Form)> {
        let mut v = Vec::new();
        for &a in usable {
            for &b in usable {
                let star = a == b || a == self.forms[0] || b == self.forms[0];
                if self.all_pairs || star {
                    v.push((a, b));
                }
            }
        }
        v
    }
}

/// One transplant condition's outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairOutcome {
    pub read: Form,
    pub write: Form,
    pub layer: usize,
    pub correct: Vec<bool>,
}

/// One (task, seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormsUnit {
    pub config: FormsConfig,
    pub task: String,
    pub seed: u64,
    /// Forms this task admits (`symbols` only with few labels).
    pub forms: Vec<Form>,
    pub queries: Vec<String>,
    /// Per form: P alone and Q alone.
    pub p_alone: Vec<(Form, Vec<bool>)>,
    pub q_alone: Vec<(Form, Vec<bool>)>,
    pub transplants: Vec<PairOutcome>,
    pub seconds: f64,
}

impl UnitLine for FormsUnit {
    type Config = FormsConfig;
    fn config(&self) -> &FormsConfig {
        &self.config
    }
    fn key(&self) -> (String, u64) {
        (self.task.clone(), self.seed)
    }
}

/// Computes one (task, seed).
pub fn run_unit<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &FormsConfig,
    seed: u64,
) -> Result<FormsUnit> {
    let t0 = std::time::Instant::now();
    if cfg.forms.is_empty() {
        return Err(ExperimentError::Invalid("no forms given".into()));
    }
    if let Some(&l) = cfg.layers.iter().find(|&&l| l >= probe.n_layers()) {
        return Err(ExperimentError::Invalid(format!(
            "layer {l}: a write at or after the last block ({}) cannot reach the query",
            probe.n_layers()
        )));
    }
    let symbols = symbol_map(task).ok();
    let forms: Vec<Form> = cfg
        .forms
        .iter()
        .copied()
        .filter(|&f| f != Form::Symbols || symbols.is_some())
        .collect();
    let p_specs = p_prompts(task, cfg.k, cfg.n, seed)?;
    let q_specs = q_prompts(task, &p_specs, cfg.dummy, seed)?;
    let mut p = BTreeMap::new();
    let mut q = BTreeMap::new();
    for &f in &forms {
        let (ps, qs): (Vec<PromptSpec>, Vec<PromptSpec>) = match (&symbols, f) {
            (Some(m), Form::Symbols) => (
                p_specs.iter().map(|s| relabel_spec(s, m)).collect(),
                q_specs.iter().map(|s| relabel_spec(s, m)).collect(),
            ),
            _ => (p_specs.clone(), q_specs.clone()),
        };
        let pp: Vec<Prepared> = ps
            .iter()
            .map(|s| prepare_in(probe, s, f))
            .collect::<Result<_>>()?;
        let qp: Vec<Prepared> = qs
            .iter()
            .map(|s| prepare_in(probe, s, f))
            .collect::<Result<_>>()?;
        if let Some(x) = pp
            .iter()
            .chain(&qp)
            .find(|x| x.answer_positions.len() != cfg.k)
        {
            return Err(ExperimentError::Invalid(format!(
                "task {} form {}: a prompt with {} answer positions, expected {}",
                task.name,
                f.name(),
                x.answer_positions.len(),
                cfg.k
            )));
        }
        p.insert(f, pp);
        q.insert(f, qp);
    }
    let correct = |pred: Vec<u32>, ps: &[Prepared]| -> Vec<bool> {
        pred.iter().zip(ps).map(|(a, x)| *a == x.target).collect()
    };
    let mut p_alone = Vec::new();
    let mut q_alone = Vec::new();
    let mut rules = BTreeMap::new();
    for &f in &forms {
        p_alone.push((f, correct(probe.predict(&p[&f])?, &p[&f])));
        q_alone.push((f, correct(probe.predict(&q[&f])?, &q[&f])));
        rules.insert(
            f,
            probe.residuals(&p[&f], &cfg.layers, |x| x.answer_positions.clone())?,
        );
    }
    let mut transplants = Vec::new();
    for (a, b) in cfg.pairs(&forms) {
        for (li, &layer) in cfg.layers.iter().enumerate() {
            let v: Vec<Vec<Vec<f32>>> = rules[&a].iter().map(|r| r[li].clone()).collect();
            let logits = transplant_logits(probe, &q[&b], layer, &v)?;
            let pred: Vec<u32> = logits.iter().map(|l| super::probe::argmax_f32(l)).collect();
            transplants.push(PairOutcome {
                read: a,
                write: b,
                layer,
                correct: correct(pred, &q[&b]),
            });
        }
    }
    Ok(FormsUnit {
        config: cfg.clone(),
        task: task.name.clone(),
        seed,
        forms,
        queries: p_specs.iter().map(|s| s.query.input.clone()).collect(),
        p_alone,
        q_alone,
        transplants,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Where a run of this experiment writes (`OUT/<model>_forms_k<k>.*`).
pub fn files(out: &Path, model_id: &str, k: usize) -> RunFiles {
    RunFiles::new(out, "forms", model_id, k)
}

/// Runs (or resumes) every (task, seed).
pub fn run_forms<B: Backend>(
    probe: &Probe<B>,
    tasks: &[TaskSet],
    cfg: &FormsConfig,
    out: &Path,
) -> Result<Vec<FormsUnit>> {
    let units = run_task_seeds(
        &files(out, &cfg.model_id, cfg.k),
        cfg,
        tasks,
        &cfg.seeds,
        |task, seed, bar| run_unit(&probe.counting(bar), task, cfg, seed),
    )?;
    Ok(units.records)
}

/// The claim-(4) test of one ordered pair of forms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairVerdict {
    pub read: Form,
    pub write: Form,
    /// P alone and Q alone in the write form.
    pub p_alone: Interval,
    pub q_alone: Interval,
    /// Cross-form transplant at L = 0: the control.
    pub l0_control: Interval,
    pub best_layer: Option<usize>,
    pub best: Option<Interval>,
    /// Paired interval of best − L0 on the same queries.
    pub best_minus_l0: Option<Interval>,
    /// The same-form transplant into the write form at the same best layer.
    pub same_form_at_best: Option<Interval>,
    pub verdict: Verdict,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskForms {
    pub task: String,
    pub seeds: Vec<u64>,
    pub forms: Vec<Form>,
    pub p_alone: Vec<(Form, Interval)>,
    pub q_alone: Vec<(Form, Interval)>,
    /// (read, write, layer, accuracy).
    pub transplants: Vec<(Form, Form, usize, Interval)>,
    pub verdicts: Vec<PairVerdict>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormsSummary {
    pub experiment: String,
    pub config: FormsConfig,
    pub level: f64,
    pub resamples: usize,
    pub tasks: Vec<TaskForms>,
    pub seconds: f64,
}

/// Picks a unit's per-form outcomes (P alone or Q alone).
type PerForm = fn(&FormsUnit) -> &Vec<(Form, Vec<bool>)>;

fn f64s(v: &[bool]) -> Vec<f64> {
    v.iter().map(|&c| f64::from(u8::from(c))).collect()
}

/// Pools the units of each task over seeds, with intervals and the claim-(4) verdicts.
pub fn summarize(cfg: &FormsConfig, units: &[FormsUnit]) -> Result<FormsSummary> {
    let mut names: Vec<&str> = Vec::new();
    for u in units {
        if !names.contains(&u.task.as_str()) {
            names.push(&u.task);
        }
    }
    let mut tasks = Vec::new();
    for name in names {
        let us: Vec<&FormsUnit> = units.iter().filter(|u| u.task == name).collect();
        let forms = us[0].forms.clone();
        let alone = |which: PerForm, f: Form| -> Vec<bool> {
            us.iter()
                .flat_map(|u| {
                    which(u)
                        .iter()
                        .find(|x| x.0 == f)
                        .map(|x| x.1.clone())
                        .unwrap_or_default()
                })
                .collect()
        };
        let tr = |a: Form, b: Form, l: usize| -> Vec<bool> {
            us.iter()
                .flat_map(|u| {
                    u.transplants
                        .iter()
                        .find(|t| t.read == a && t.write == b && t.layer == l)
                        .map(|t| t.correct.clone())
                        .unwrap_or_default()
                })
                .collect()
        };
        let mut p_alone = Vec::new();
        let mut q_alone = Vec::new();
        for &f in &forms {
            p_alone.push((
                f,
                accuracy_interval(
                    &alone(|u| &u.p_alone, f),
                    seed_of(&format!("{name}/P/{f:?}")),
                )?,
            ));
            q_alone.push((
                f,
                accuracy_interval(
                    &alone(|u| &u.q_alone, f),
                    seed_of(&format!("{name}/Q/{f:?}")),
                )?,
            ));
        }
        let mut transplants = Vec::new();
        for (a, b) in cfg.pairs(&forms) {
            for &l in &cfg.layers {
                let v = tr(a, b, l);
                if !v.is_empty() {
                    transplants.push((
                        a,
                        b,
                        l,
                        accuracy_interval(&v, seed_of(&format!("{name}/{a:?}/{b:?}/{l}")))?,
                    ));
                }
            }
        }
        let get = |a: Form, b: Form, l: usize| {
            transplants
                .iter()
                .find(|t| t.0 == a && t.1 == b && t.2 == l)
                .map(|t| t.3)
        };
        let mut verdicts = Vec::new();
        for (a, b) in cfg.pairs(&forms).into_iter().filter(|(a, b)| a != b) {
            let (Some(pa), Some(qa)) = (
                p_alone.iter().find(|x| x.0 == b).map(|x| x.1),
                q_alone.iter().find(|x| x.0 == b).map(|x| x.1),
            ) else {
                continue;
            };
            let Some(l0) = get(a, b, 0) else { continue };
            let swept: Vec<(usize, Interval)> = cfg
                .layers
                .iter()
                .filter(|&&l| l >= 1)
                .filter_map(|&l| get(a, b, l).map(|iv| (l, iv)))
                .collect();
            let any_clears = swept.iter().any(|(_, iv)| iv.clears(&l0));
            let best = best_by_mean(swept);
            let best_minus_l0 = match best {
                Some((l, _)) => Some(bootstrap_paired_difference(
                    &f64s(&tr(a, b, l)),
                    &f64s(&tr(a, b, 0)),
                    BOOTSTRAP_RESAMPLES,
                    LEVEL,
                    seed_of(&format!("{name}/{a:?}/{b:?}/{l}-0")),
                )?),
                None => None,
            };
            let (verdict, why) = if !pa.clears(&qa) {
                (
                    Verdict::Inconclusive,
                    format!(
                        "no room: P alone {} does not clear Q alone {} in {}",
                        pa.show(),
                        qa.show(),
                        b.name()
                    ),
                )
            } else {
                match best {
                    None => (Verdict::Inconclusive, "no layer L ≥ 1".into()),
                    Some((l, x)) if any_clears => (
                        Verdict::Supported,
                        format!("L{l} {} clears the L0 control {}", x.show(), l0.show()),
                    ),
                    Some((l, x)) if x.mean <= l0.mean => (
                        Verdict::NotSupported,
                        format!(
                            "best L ≥ 1 (L{l}) {} no better than the L0 control {}",
                            x.show(),
                            l0.show()
                        ),
                    ),
                    Some((l, x)) => (
                        Verdict::Inconclusive,
                        format!(
                            "best L ≥ 1 (L{l}) {} above the L0 control {} but overlapping",
                            x.show(),
                            l0.show()
                        ),
                    ),
                }
            };
            verdicts.push(PairVerdict {
                read: a,
                write: b,
                p_alone: pa,
                q_alone: qa,
                l0_control: l0,
                best_layer: best.map(|x| x.0),
                best: best.map(|x| x.1),
                best_minus_l0,
                same_form_at_best: best.and_then(|(l, _)| get(b, b, l)),
                verdict,
                why,
            });
        }
        tasks.push(TaskForms {
            task: name.to_string(),
            seeds: us.iter().map(|u| u.seed).collect(),
            forms,
            p_alone,
            q_alone,
            transplants,
            verdicts,
        });
    }
    Ok(FormsSummary {
        experiment: "forms".into(),
        config: cfg.clone(),
        level: LEVEL,
        resamples: BOOTSTRAP_RESAMPLES,
        tasks,
        seconds: units.iter().map(|u| u.seconds).sum(),
    })
}

/// Writes `OUT/<stem>.json`, `OUT/<stem>.md` and a plot per task; returns the Markdown.
pub fn write_forms_report(s: &FormsSummary, out: &Path) -> Result<String> {
    let files = files(out, &s.config.model_id, s.config.k);
    let plots = files.write_summary(s)?;
    let c = &s.config;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Rule vectors across surface forms ({}, k = {}, {} queries × seeds {:?}, {} dummies)\n\n\
         Rule vectors read in form F1 at layer L written at the answer positions of a \
         rule-breaking dummy rendered in form F2 (same items in every form). Control: the \
         cross-form transplant at L0 (F1's answer-token embeddings). Accuracy in % under the rule \
         in F2, {:.0} % bootstrap intervals.\n",
        c.model_id,
        c.k,
        c.n,
        c.seeds,
        c.dummy.name(),
        100.0 * s.level
    );
    let _ = writeln!(
        md,
        "| task | F1 → F2 | P alone (F2) | Q alone (F2) | L0 control | best L ≥ 1 | best − L0 (paired) | same form F2 → F2 at that L | verdict (4) |\n|---|---|---|---|---|---|---|---|---|"
    );
    for t in &s.tasks {
        for v in &t.verdicts {
            let _ = writeln!(
                md,
                "| {} | {} → {} | {} | {} | {} | {} | {} | {} | **{}** |",
                t.task,
                v.read.name(),
                v.write.name(),
                v.p_alone.pct(),
                v.q_alone.pct(),
                v.l0_control.pct(),
                match (v.best_layer, &v.best) {
                    (Some(l), Some(b)) => format!("L{l}: {}", b.pct()),
                    _ => "–".into(),
                },
                v.best_minus_l0.as_ref().map_or("–".into(), Interval::pct),
                v.same_form_at_best
                    .as_ref()
                    .map_or("–".into(), Interval::pct),
                v.verdict.name()
            );
        }
    }
    md.push('\n');
    for t in &s.tasks {
        let _ = writeln!(md, "### {} (seeds {:?})\n", t.task, t.seeds);
        let _ = writeln!(
            md,
            "P alone / Q alone per form: {}.\n",
            t.forms
                .iter()
                .map(|f| format!(
                    "{} {} / {}",
                    f.name(),
                    t.p_alone
                        .iter()
                        .find(|x| x.0 == *f)
                        .map_or("–".into(), |x| x.1.pct()),
                    t.q_alone
                        .iter()
                        .find(|x| x.0 == *f)
                        .map_or("–".into(), |x| x.1.pct())
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let mut h = String::from("| F1 → F2 |");
        let mut sp = String::from("|---|");
        for l in &c.layers {
            let _ = write!(h, " L{l} |");
            sp.push_str("---|");
        }
        let _ = writeln!(md, "{h}\n{sp}");
        let mut series = Vec::new();
        for (a, b) in c.pairs(&t.forms) {
            let mut row = format!("| {} → {} |", a.name(), b.name());
            let mut pts = Vec::new();
            for &l in &c.layers {
                match t
                    .transplants
                    .iter()
                    .find(|x| x.0 == a && x.1 == b && x.2 == l)
                {
                    Some(x) => {
                        let _ = write!(row, " {} |", x.3.pct());
                        pts.push((l as f64, x.3.mean, x.3.lo, x.3.hi));
                    }
                    None => row.push_str(" – |"),
                }
            }
            let _ = writeln!(md, "{row}");
            // Plot the hub's pairs: hub → hub and hub ↔ every other form.
            if a == c.forms[0] || b == c.forms[0] {
                series.push(IntervalSeries {
                    name: format!("{} → {}", a.name(), b.name()),
                    points: pts,
                });
            }
        }
        let file = files.plot_file(&t.task);
        interval_plot(
            &plots.join(&file),
            &format!(
                "{} {}: rule vectors across forms (k = {})",
                c.model_id, t.task, c.k
            ),
            "layer L (read = write; 0 = the L0 control)",
            &series,
            &[],
        )?;
        let _ = writeln!(md, "\n![{}](plots/{file})\n", t.task);
    }
    let _ = writeln!(md, "Wall time of the units: {:.0} s.", s.seconds);
    files.write_markdown(&md)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_renders_spans_that_cut_out_its_parts() {
        for f in Form::ALL {
            let p = f.render(&[("hot", "cold"), ("up", "down")], "big");
            assert_eq!(&p.text[p.demos[0].input.clone()], "hot");
            assert_eq!(&p.text[p.demos[1].output.clone()], "down");
            assert_eq!(&p.text[p.query.clone()], "big");
            assert!(p.text.ends_with(&p.text[p.query_arrow.clone()]));
            // The output always follows "<separator> ", so the target is " " + output.
            assert_eq!(
                &p.text[p.demos[0].output.start - 1..p.demos[0].output.start],
                " "
            );
        }
        assert_eq!(
            Form::Qa.render(&[("hot", "cold")], "big").text,
            "Q: hot\nA: cold\n\nQ: big\nA:"
        );
        assert_eq!(Form::Colon.render(&[("a", "b")], "c").text, "a: b\nc:");
        assert_eq!(
            Form::FatArrow.render(&[("a", "b")], "c").text,
            "a => b\nc =>"
        );
        assert_eq!(Form::Arrow.render(&[("a", "b")], "c").text, "a -> b\nc ->");
    }

    #[test]
    fn symbols_map_labels_in_sorted_order_and_refuse_open_vocabularies() {
        let items = |outs: &[&str]| -> Vec<Item> {
            outs.iter()
                .enumerate()
                .map(|(i, o)| Item {
                    input: format!("w{i}"),
                    output: (*o).into(),
                    split: icl_tasks::Split::Train,
                })
                .collect()
        };
        let t = TaskSet {
            name: "cat".into(),
            items: items(&["plant", "animal", "plant", "tool", "tool", "animal"]),
        };
        let m = symbol_map(&t).unwrap();
        assert_eq!(m["animal"], "A");
        assert_eq!(m["plant"], "B");
        assert_eq!(m["tool"], "C");
        let r = relabel(&t, &m);
        assert_eq!(
            r.items
                .iter()
                .map(|i| i.output.as_str())
                .collect::<Vec<_>>(),
            ["B", "A", "B", "C", "C", "A"]
        );
        let many: Vec<String> = (0..27).map(|i| format!("l{i}")).collect();
        let big = TaskSet {
            name: "open".into(),
            items: items(&many.iter().map(String::as_str).collect::<Vec<_>>()),
        };
        assert!(symbol_map(&big).is_err());
        // Few labels but one per item: a word map, not a categorisation.
        let word_map = TaskSet {
            name: "upper".into(),
            items: items(&["A", "B", "C"]),
        };
        assert!(symbol_map(&word_map).is_err());
    }

    #[test]
    fn pairs_are_a_star_around_the_first_form_unless_all() {
        let mut cfg = FormsConfig {
            model_id: "m".into(),
            k: 2,
            n: 1,
            seeds: vec![0],
            layers: vec![0],
            forms: vec![Form::Arrow, Form::Colon, Form::Qa],
            all_pairs: false,
            dummy: DummyKind::RandomLabels,
        };
        let p = cfg.pairs(&cfg.forms.clone());
        assert_eq!(p.len(), 7);
        assert!(!p.contains(&(Form::Colon, Form::Qa)));
        cfg.all_pairs = true;
        assert_eq!(cfg.pairs(&cfg.forms.clone()).len(), 9);
    }
}
