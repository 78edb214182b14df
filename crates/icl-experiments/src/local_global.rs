//! `run local-global` (issue #13, item 5): where the local rule vectors at the answer positions
//! turn into a global, task-vector-like state at the query, and from which block on the query no
//! longer needs to read the answer positions.
//!
//! Per layer L, on k-shot prompts P with the real test query:
//! - `cos(answer, last)`: cosine of each answer-position state (first output token of a
//!   demonstration) with the same prompt's last-position state (the query's `->`), averaged over
//!   the k demonstrations;
//! - `cos(answer, TV)`: with the Hendel task vector at L, defined as in [`crate::task_vector`]: the
//!   mean over extraction prompts (k train demonstrations and a dummy train query) of their
//!   last-position state;
//! - `cos(last, TV)`: how task-vector-like the query's own last state is;
//! - the control for both answer cosines: the same cosines at the *last input token* of each
//!   demonstration. Residual streams share large common directions, so raw cosines are high
//!   everywhere; only the answer-minus-input difference (paired over prompts) says that answer
//!   positions in particular carry what the query holds.
//!
//! And the knockout "from block l on": attention from the last position to every answer position
//! is blocked in all heads of blocks l..n (Wang et al.'s edge knockout, here in every later block
//! at once); control: as many random demonstration-input tokens blocked instead. The answer
//! positions *matter from l on* when the control's accuracy interval clears the answer knockout's;
//! the first l where they no longer do is where the query has finished reading them.
//!
//! Resumable like `transplant`: one (task, seed) per JSONL line in
//! `OUT/<model>_local-global_k<k>.jsonl`.

use std::fmt::Write as _;
use std::path::Path;

use burn::tensor::backend::Backend;
use icl_tasks::TaskSet;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use super::journal::{run_task_seeds, RunFiles, UnitLine};
use super::plot::{interval_plot, interval_plot_y, IntervalSeries};
use super::stats::{
    accuracy_interval, best_by_mean, bootstrap_mean, bootstrap_paired_difference, Interval,
    BOOTSTRAP_RESAMPLES, LEVEL,
};
use super::task_vector::extraction_prompts;
use super::transplant::p_prompts;
use super::{ExperimentError, Prepared, Probe, Result};

/// Settings of a local→global run (stored with every unit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalGlobalConfig {
    pub model_id: String,
    pub k: usize,
    /// Test queries (and extraction prompts for the task vector) per (task, seed).
    pub n: usize,
    pub seeds: Vec<u64>,
    /// Residual layers of the cosine curves (0 = embeddings).
    pub layers: Vec<usize>,
    /// Blocks l of the knockout "from block l on" (l..n_layers blocked).
    pub knock_from: Vec<usize>,
}

/// Per-prompt cosines at one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCosines {
    pub layer: usize,
    pub answer_last: Vec<f64>,
    pub answer_tv: Vec<f64>,
    pub input_last: Vec<f64>,
    pub input_tv: Vec<f64>,
    pub last_tv: Vec<f64>,
}

/// Per-query outcomes of the knockout from block `from` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnockFrom {
    pub from: usize,
    pub answers: Vec<bool>,
    pub control: Vec<bool>,
}

/// One (task, seed) as appended to the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalGlobalUnit {
    pub config: LocalGlobalConfig,
    pub task: String,
    pub seed: u64,
    pub queries: Vec<String>,
    pub icl: Vec<bool>,
    /// `"{query} ->"` alone.
    pub zero_shot: Vec<bool>,
    /// Per layer of `config.layers`: the task vector written at the zero-shot query's last
    /// position (Hendel et al.'s patch; claim 1: is one global vector enough?).
    pub tv_patch: Vec<Vec<bool>>,
    pub cosines: Vec<LayerCosines>,
    pub knockout: Vec<KnockFrom>,
    pub seconds: f64,
}

impl UnitLine for LocalGlobalUnit {
    type Config = LocalGlobalConfig;
    fn config(&self) -> &LocalGlobalConfig {
        &self.config
    }
    fn key(&self) -> (String, u64) {
        (self.task.clone(), self.seed)
    }
}

/// Cosine similarity (0 when either vector is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The last token of each demonstration's input: the control positions of the cosines.
fn input_ends(p: &Prepared) -> Result<Vec<usize>> {
    p.input_positions
        .iter()
        .map(|ip| {
            ip.last().copied().ok_or_else(|| {
                ExperimentError::Invalid("a demonstration input covered by no token".into())
            })
        })
        .collect()
}

/// Computes one (task, seed).
pub fn run_unit<B: Backend>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &LocalGlobalConfig,
    seed: u64,
) -> Result<LocalGlobalUnit> {
    let t0 = std::time::Instant::now();
    let n_layers = probe.n_layers();
    if let Some(&l) = cfg.layers.iter().find(|&&l| l > n_layers) {
        return Err(ExperimentError::Invalid(format!(
            "layer {l} beyond the model's {n_layers} blocks"
        )));
    }
    if let Some(&l) = cfg.knock_from.iter().find(|&&l| l >= n_layers) {
        return Err(ExperimentError::Invalid(format!(
            "knockout from block {l}: the model has blocks 0..{n_layers}"
        )));
    }
    let specs = p_prompts(task, cfg.k, cfg.n, seed)?;
    let p = probe.prepare_all(&specs)?;
    if let Some(x) = p.iter().find(|x| x.answer_positions.len() != cfg.k) {
        return Err(ExperimentError::Invalid(format!(
            "task {}: a prompt with {} answer positions, expected {}",
            task.name,
            x.answer_positions.len(),
            cfg.k
        )));
    }
    let ext = probe.prepare_all(&extraction_prompts(task, cfg.k, cfg.n.max(1), seed)?)?;
    let ext_last = probe.residuals(&ext, &cfg.layers, |x| vec![x.last()])?;
    let d = probe.d_model();
    let tvs: Vec<Vec<f32>> = (0..cfg.layers.len())
        .map(|li| {
            let mut s = vec![0f32; d];
            for e in &ext_last {
                s.iter_mut().zip(&e[li][0]).for_each(|(a, b)| *a += b);
            }
            s.iter().map(|x| x / ext_last.len() as f32).collect()
        })
        .collect();
    let ends: Vec<Vec<usize>> = p.iter().map(input_ends).collect::<Result<_>>()?;
    // Positions read per prompt: k answers, k input ends, the last position.
    let k = cfg.k;
    let states = probe.residuals(&p, &cfg.layers, |x| {
        let i = p.iter().position(|y| std::ptr::eq(x, y)).unwrap_or(0);
        let mut v = x.answer_positions.clone();
        v.extend(&ends[i]);
        v.push(x.last());
        v
    })?;
    let mut cosines = Vec::with_capacity(cfg.layers.len());
    for (li, &layer) in cfg.layers.iter().enumerate() {
        let mut c = LayerCosines {
            layer,
            answer_last: Vec::new(),
            answer_tv: Vec::new(),
            input_last: Vec::new(),
            input_tv: Vec::new(),
            last_tv: Vec::new(),
        };
        for s in &states {
            let v = &s[li];
            let last = &v[2 * k];
            let tv = &tvs[li];
            c.answer_last.push(mean(
                &v[..k].iter().map(|a| cosine(a, last)).collect::<Vec<_>>(),
            ));
            c.answer_tv.push(mean(
                &v[..k].iter().map(|a| cosine(a, tv)).collect::<Vec<_>>(),
            ));
            c.input_last.push(mean(
                &v[k..2 * k]
                    .iter()
                    .map(|a| cosine(a, last))
                    .collect::<Vec<_>>(),
            ));
            c.input_tv.push(mean(
                &v[k..2 * k]
                    .iter()
                    .map(|a| cosine(a, tv))
                    .collect::<Vec<_>>(),
            ));
            c.last_tv.push(cosine(last, tv));
        }
        cosines.push(c);
    }
    let correct =
        |pred: &[u32]| -> Vec<bool> { pred.iter().zip(&p).map(|(a, x)| *a == x.target).collect() };
    let icl = correct(&probe.predict(&p)?);
    let zero = probe.prepare_all(&specs.iter().map(|s| s.with_demos(&[])).collect::<Vec<_>>())?;
    let zcorrect = |pred: &[u32]| -> Vec<bool> {
        pred.iter()
            .zip(&zero)
            .map(|(a, x)| *a == x.target)
            .collect()
    };
    let zero_shot = zcorrect(&probe.predict(&zero)?);
    let mut tv_patch = Vec::with_capacity(cfg.layers.len());
    for (li, &layer) in cfg.layers.iter().enumerate() {
        let v = vec![tvs[li].clone(); zero.len()];
        tv_patch.push(zcorrect(&probe.predict_patched(&zero, layer, &v)?));
    }
    let mut rng = ChaCha12Rng::seed_from_u64(seed ^ 0x10ca_1910);
    let control: Vec<Vec<usize>> = p
        .iter()
        .map(|x| {
            let inputs: Vec<usize> = x.input_positions.iter().flatten().copied().collect();
            inputs
                .choose_multiple(&mut rng, x.answer_positions.len())
                .copied()
                .collect()
        })
        .collect();
    let index_of = |x: &Prepared| p.iter().position(|y| std::ptr::eq(x, y)).unwrap_or(0);
    let mut knockout = Vec::with_capacity(cfg.knock_from.len());
    for &from in &cfg.knock_from {
        let blocks: Vec<usize> = (from..n_layers).collect();
        let a = probe.predict_knockout(&p, &blocks, |x| x.answer_positions.clone())?;
        let c = probe.predict_knockout(&p, &blocks, |x| control[index_of(x)].clone())?;
        knockout.push(KnockFrom {
            from,
            answers: correct(&a),
            control: correct(&c),
        });
    }
    Ok(LocalGlobalUnit {
        config: cfg.clone(),
        task: task.name.clone(),
        seed,
        queries: specs.iter().map(|s| s.query.input.clone()).collect(),
        icl,
        zero_shot,
        tv_patch,
        cosines,
        knockout,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Where a run of this experiment writes (`OUT/<model>_local-global_k<k>.*`).
pub fn files(out: &Path, model_id: &str, k: usize) -> RunFiles {
    RunFiles::new(out, "local-global", model_id, k)
}

/// Runs (or resumes) every (task, seed).
pub fn run_local_global<B: Backend>(
    probe: &Probe<B>,
    tasks: &[TaskSet],
    cfg: &LocalGlobalConfig,
    out: &Path,
) -> Result<Vec<LocalGlobalUnit>> {
    let units = run_task_seeds(
        &files(out, &cfg.model_id, cfg.k),
        cfg,
        tasks,
        &cfg.seeds,
        |task, seed, bar| run_unit(&probe.counting(bar), task, cfg, seed),
    )?;
    Ok(units.records)
}

/// A stable seed for the bootstrap of one statistic (FNV-1a of its name).
pub fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Intervals of one layer, pooled over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    pub layer: usize,
    /// Accuracy of the zero-shot query with the task vector patched at its last position.
    pub tv_patch: Interval,
    pub answer_last: Interval,
    pub answer_tv: Interval,
    pub input_last: Interval,
    pub input_tv: Interval,
    pub last_tv: Interval,
    /// Paired over prompts: answer − input, to the last state and to the task vector.
    pub answer_minus_input_last: Interval,
    pub answer_minus_input_tv: Interval,
}

/// Knockout from one block on, pooled over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnockSummary {
    pub from: usize,
    pub answers: Interval,
    pub control: Interval,
    /// The control's interval clears the answer knockout's: the query still needs the answer
    /// positions in blocks `from..n`.
    pub answers_matter: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskLocalGlobal {
    pub task: String,
    pub seeds: Vec<u64>,
    pub icl: Interval,
    pub zero_shot: Interval,
    /// Claim (1) for this task: the best layer's task-vector patch (best of the sweep on the same
    /// data, which favours the task vector) and whether P alone's interval clears it, i.e. one
    /// global vector at the query does not carry what the demonstrations do.
    pub tv_best_layer: usize,
    pub tv_best: Interval,
    pub icl_clears_tv: bool,
    pub layers: Vec<LayerSummary>,
    pub knockout: Vec<KnockSummary>,
    /// Largest `from` at which the answer positions still matter (none: never).
    pub last_block_needed: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalGlobalSummary {
    pub experiment: String,
    pub config: LocalGlobalConfig,
    pub level: f64,
    pub resamples: usize,
    pub tasks: Vec<TaskLocalGlobal>,
    pub seconds: f64,
}

fn iv(v: &[f64], name: &str) -> Result<Interval> {
    bootstrap_mean(v, BOOTSTRAP_RESAMPLES, LEVEL, seed_of(name))
}

/// Pools the units of each task over seeds into intervals.
pub fn summarize(cfg: &LocalGlobalConfig, units: &[LocalGlobalUnit]) -> Result<LocalGlobalSummary> {
    let mut names: Vec<&str> = Vec::new();
    for u in units {
        if !names.contains(&u.task.as_str()) {
            names.push(&u.task);
        }
    }
    let mut tasks = Vec::new();
    for name in names {
        let us: Vec<&LocalGlobalUnit> = units.iter().filter(|u| u.task == name).collect();
        let pool = |f: &dyn Fn(&LocalGlobalUnit) -> Vec<f64>| -> Vec<f64> {
            us.iter().flat_map(|u| f(u)).collect()
        };
        let icl: Vec<bool> = us.iter().flat_map(|u| u.icl.clone()).collect();
        let mut layers = Vec::new();
        for (li, &layer) in cfg.layers.iter().enumerate() {
            let get = |f: fn(&LayerCosines) -> &Vec<f64>| pool(&|u| f(&u.cosines[li]).clone());
            let (al, at, il, it, lt) = (
                get(|c| &c.answer_last),
                get(|c| &c.answer_tv),
                get(|c| &c.input_last),
                get(|c| &c.input_tv),
                get(|c| &c.last_tv),
            );
            let tag = |m: &str| format!("{name}/{layer}/{m}");
            let tvp: Vec<bool> = us.iter().flat_map(|u| u.tv_patch[li].clone()).collect();
            layers.push(LayerSummary {
                layer,
                tv_patch: accuracy_interval(&tvp, seed_of(&tag("tvp")))?,
                answer_last: iv(&al, &tag("al"))?,
                answer_tv: iv(&at, &tag("at"))?,
                input_last: iv(&il, &tag("il"))?,
                input_tv: iv(&it, &tag("it"))?,
                last_tv: iv(&lt, &tag("lt"))?,
                answer_minus_input_last: bootstrap_paired_difference(
                    &al,
                    &il,
                    BOOTSTRAP_RESAMPLES,
                    LEVEL,
                    seed_of(&tag("dl")),
                )?,
                answer_minus_input_tv: bootstrap_paired_difference(
                    &at,
                    &it,
                    BOOTSTRAP_RESAMPLES,
                    LEVEL,
                    seed_of(&tag("dt")),
                )?,
            });
        }
        let mut knockout = Vec::new();
        for (ki, &from) in cfg.knock_from.iter().enumerate() {
            let a: Vec<bool> = us
                .iter()
                .flat_map(|u| u.knockout[ki].answers.clone())
                .collect();
            let c: Vec<bool> = us
                .iter()
                .flat_map(|u| u.knockout[ki].control.clone())
                .collect();
            let a = accuracy_interval(&a, seed_of(&format!("{name}/k{from}/a")))?;
            let c = accuracy_interval(&c, seed_of(&format!("{name}/k{from}/c")))?;
            knockout.push(KnockSummary {
                from,
                answers: a,
                control: c,
                answers_matter: c.clears(&a),
            });
        }
        let zs: Vec<bool> = us.iter().flat_map(|u| u.zero_shot.clone()).collect();
        let icl_iv = accuracy_interval(&icl, seed_of(&format!("{name}/icl")))?;
        let (tv_best_layer, tv_best) =
            best_by_mean(layers.iter().map(|l| (l.layer, l.tv_patch)))
                .ok_or_else(|| ExperimentError::Invalid("local-global with no layers".into()))?;
        tasks.push(TaskLocalGlobal {
            task: name.to_string(),
            seeds: us.iter().map(|u| u.seed).collect(),
            icl: icl_iv,
            zero_shot: accuracy_interval(&zs, seed_of(&format!("{name}/zs")))?,
            tv_best_layer,
            tv_best,
            icl_clears_tv: icl_iv.clears(&tv_best),
            last_block_needed: knockout
                .iter()
                .filter(|k| k.answers_matter)
                .map(|k| k.from)
                .max(),
            layers,
            knockout,
        });
    }
    Ok(LocalGlobalSummary {
        experiment: "local-global".into(),
        config: cfg.clone(),
        level: LEVEL,
        resamples: BOOTSTRAP_RESAMPLES,
        tasks,
        seconds: units.iter().map(|u| u.seconds).sum(),
    })
}

fn f2(i: &Interval) -> String {
    format!("{:.2} [{:.2}, {:.2}]", i.mean, i.lo, i.hi)
}

/// Writes `OUT/<stem>.json`, `OUT/<stem>.md` and two plots per task; returns the Markdown.
pub fn write_local_global_report(s: &LocalGlobalSummary, out: &Path) -> Result<String> {
    let files = files(out, &s.config.model_id, s.config.k);
    let plots = files.write_summary(s)?;
    let c = &s.config;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Local → global ({}, k = {}, {} queries × seeds {:?})\n\n\
         Cosines per layer (mean over prompts pooled over seeds, {:.0} % bootstrap intervals): \
         answer positions vs the query's last state and vs the task vector (mean last state of \
         extraction prompts), with the last input token of each demonstration as control; \
         `ans − inp` is the paired difference. Knockout: attention last → answer positions blocked \
         in blocks l..n; control: as many random input tokens. *matters* = the control's interval \
         clears the knockout's.\n",
        c.model_id,
        c.k,
        c.n,
        c.seeds,
        100.0 * s.level
    );
    for t in &s.tasks {
        let _ = writeln!(
            md,
            "### {} (P alone {}, zero-shot {}; task vector at the query, best L{}: {}{})\n",
            t.task,
            t.icl.pct(),
            t.zero_shot.pct(),
            t.tv_best_layer,
            t.tv_best.pct(),
            if t.icl_clears_tv {
                " — P alone clears it"
            } else {
                ""
            }
        );
        let _ = writeln!(
            md,
            "| L | TV patched at the query | cos(ans, last) | cos(inp, last) | ans − inp (last) | cos(ans, TV) | cos(inp, TV) | ans − inp (TV) | cos(last, TV) |\n|---|---|---|---|---|---|---|---|---|"
        );
        for l in &t.layers {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                l.layer,
                l.tv_patch.pct(),
                f2(&l.answer_last),
                f2(&l.input_last),
                f2(&l.answer_minus_input_last),
                f2(&l.answer_tv),
                f2(&l.input_tv),
                f2(&l.answer_minus_input_tv),
                f2(&l.last_tv)
            );
        }
        let _ = writeln!(
            md,
            "\n| knockout from block | answers blocked | control blocked | answers matter |\n|---|---|---|---|"
        );
        for k in &t.knockout {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                k.from,
                k.answers.pct(),
                k.control.pct(),
                if k.answers_matter { "**yes**" } else { "no" }
            );
        }
        let _ = writeln!(
            md,
            "\nAnswer positions still needed from block: {}.\n",
            t.last_block_needed
                .map_or("none of the tested blocks".into(), |b| b.to_string())
        );
        let line = |name: &str, f: fn(&LayerSummary) -> Interval| IntervalSeries {
            name: name.into(),
            points: t
                .layers
                .iter()
                .map(|l| {
                    let i = f(l);
                    (l.layer as f64, i.mean, i.lo, i.hi)
                })
                .collect(),
        };
        let series = vec![
            line("cos(answer, last)", |l| l.answer_last),
            line("cos(input, last)", |l| l.input_last),
            line("cos(answer, TV)", |l| l.answer_tv),
            line("cos(input, TV)", |l| l.input_tv),
            line("cos(last, TV)", |l| l.last_tv),
        ];
        let lo = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.2))
            .fold(0.0f64, f64::min);
        let f1 = files.plot_file(&format!("{}_cosines", t.task));
        interval_plot_y(
            &plots.join(&f1),
            &format!("{} {}: local → global (k = {})", c.model_id, t.task, c.k),
            "layer L",
            "cosine (95 % interval)",
            (lo.min(0.0) - 0.02, 1.02),
            &series,
            &[],
        )?;
        let kser = |name: &str, f: fn(&KnockSummary) -> Interval| IntervalSeries {
            name: name.into(),
            points: t
                .knockout
                .iter()
                .map(|k| {
                    let i = f(k);
                    (k.from as f64, i.mean, i.lo, i.hi)
                })
                .collect(),
        };
        let f2n = files.plot_file(&format!("{}_knockout", t.task));
        interval_plot(
            &plots.join(&f2n),
            &format!(
                "{} {}: last → answers blocked from block l on",
                c.model_id, t.task
            ),
            "first blocked block l",
            &[
                kser("answer positions blocked", |k| k.answers),
                kser("control: input tokens blocked", |k| k.control),
            ],
            &[("P alone".into(), t.icl.mean)],
        )?;
        let _ = writeln!(
            md,
            "![{0} cosines](plots/{f1})\n\n![{0} knockout](plots/{f2n})\n",
            t.task
        );
    }
    let _ = writeln!(md, "Wall time of the units: {:.0} s.", s.seconds);
    files.write_markdown(&md)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-12);
        assert!((cosine(&[1.0, 1.0], &[-2.0, -2.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn bootstrap_seeds_differ_by_name() {
        assert_ne!(seed_of("a/1/al"), seed_of("a/1/at"));
        assert_eq!(seed_of("x"), seed_of("x"));
    }
}
