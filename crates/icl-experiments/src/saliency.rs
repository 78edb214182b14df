//! `run saliency` (issue #13, item 2): the information flow of Wang et al. 2023 ("Label Words
//! are Anchors: An Information Flow Perspective for Understanding In-Context Learning", eq. 1–4):
//!
//! I_l = Σ_h |A_{h,l} ⊙ ∂L/∂A_{h,l}|,
//!
//! with A_{h,l} the attention pattern of head h in block l (`blocks.{l}.attn.hook_pattern`, after
//! the softmax) and L the cross-entropy of the correct answer token at the query's last position.
//! I_l(i, j) is the flow from key j to query i. Summaries per block (means over their sets):
//! - S_wp: demonstration text → answer positions, {(p_k, j) : j < p_k};
//! - S_pq: answer positions → the last position q, {(q, p_k)};
//! - S_ww: every other causal pair (j < i);
//! - control S_cq: the last input token c_k of each demonstration → q, {(q, c_k)}: as many edges
//!   into q from tokens that are not answers. S_pq above S_cq (paired over prompts) says the query
//!   draws on the answer positions in particular.
//!
//! **Gradients.** The model runs on burn's `Autodiff` backend: every block's pattern gets an added
//! zero tensor marked `require_grad` (an [`Op::Add`] intervention), so ∂L/∂A is that tensor's
//! gradient and A itself is the cached pattern; nothing in the model code changes. The test
//! compares these gradients with central finite differences of L in the same added tensor on the
//! `llama_tiny` fixture.
//!
//! Resumable: one (task, seed) per line of `OUT/<model>_saliency_k<k>.jsonl`.

use std::fmt::Write as _;
use std::path::Path;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use icl_probe::{Batch, HookSpec, Intervention, LogitsMode, Model, Op};
use icl_tasks::TaskSet;
use serde::{Deserialize, Serialize};

use super::journal::{run_task_seeds, RunFiles, UnitLine};
use super::local_global::seed_of;
use super::plot::{interval_plot_y, IntervalSeries};
use super::stats::{
    bootstrap_mean, bootstrap_paired_difference, Interval, BOOTSTRAP_RESAMPLES, LEVEL,
};
use super::transplant::p_prompts;
use super::{ExperimentError, Prepared, Probe, Result};

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| ExperimentError::Invalid(format!("{e:?}")))
}

/// L of one prompt, and per block l its attention pattern A_l and ∂L/∂A_l.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternGrads {
    /// L = −log softmax(logits at the last position)[target].
    pub loss: f64,
    /// Per block, `[H][T][T]` flattened as `(h·T + i)·T + j` (query i, key j).
    pub patterns: Vec<Vec<f32>>,
    /// ∂L/∂A per block, same layout.
    pub grads: Vec<Vec<f32>>,
}

/// Per block l, the attention pattern A_l and ∂L/∂A_l of one prompt, where
/// L = −log softmax(logits at the last position)[target].
pub fn pattern_grads<B: AutodiffBackend>(
    model: &Model<B>,
    ids: &[u32],
    target: u32,
    pad_id: u32,
) -> Result<PatternGrads> {
    let cfg = model.config();
    let (nl, nh, t) = (cfg.n_layers, cfg.n_heads, ids.len());
    let batch = Batch::from_ids(vec![ids.to_vec()], pad_id)?;
    let device = model.device().clone();
    let zs: Vec<Tensor<B, 2>> = (0..nl)
        .map(|_| Tensor::<B, 2>::zeros([t * nh, t], &device).require_grad())
        .collect();
    let mut spec = HookSpec::new().logits(LogitsMode::Last);
    let names: Vec<String> = (0..nl)
        .map(|l| format!("blocks.{l}.attn.hook_pattern"))
        .collect();
    for (l, z) in zs.iter().enumerate() {
        spec = spec.intervene(Intervention::new(names[l].clone(), Op::Add(z.clone())));
    }
    spec = spec.cache(names.clone());
    let out = model.forward(&batch, &spec)?;
    let logits = out
        .logits
        .ok_or_else(|| ExperimentError::Invalid("forward returned no logits".into()))?;
    let v = logits.dims()[2];
    let logp = log_softmax(logits.reshape([1, v]), 1);
    let loss = logp
        .slice([0..1, target as usize..target as usize + 1])
        .neg();
    let loss_val = f64::from(to_vec(loss.clone().inner())?[0]);
    let grads = loss.sum().backward();
    let mut pats = Vec::with_capacity(nl);
    let mut gs = Vec::with_capacity(nl);
    for (l, z) in zs.iter().enumerate() {
        let a = out
            .cache
            .get4(&names[l])
            .ok_or_else(|| ExperimentError::Invalid(format!("{} not cached", names[l])))?;
        pats.push(to_vec(a.inner())?);
        // The added tensor's rows are (position, head) in that order: row p·H + h is
        // ∂L/∂A[h, p, :]. Reorder to [h][p][:].
        let g = match z.grad(&grads) {
            Some(g) => to_vec(g)?,
            None => vec![0f32; t * nh * t],
        };
        let mut hg = vec![0f32; nh * t * t];
        for p in 0..t {
            for h in 0..nh {
                let src = (p * nh + h) * t;
                let dst = (h * t + p) * t;
                hg[dst..dst + t].copy_from_slice(&g[src..src + t]);
            }
        }
        gs.push(hg);
    }
    Ok(PatternGrads {
        loss: loss_val,
        patterns: pats,
        grads: gs,
    })
}

/// L = −log p(target) of one prompt with `eps` added to the pattern of block `layer`, head `h`,
/// query `i`, key `j` (any backend): the finite-difference side of the gradient test.
pub fn loss_with_bump<B: Backend>(
    model: &Model<B>,
    ids: &[u32],
    target: u32,
    pad_id: u32,
    (layer, h, i, j, eps): (usize, usize, usize, usize, f32),
) -> Result<f64> {
    let cfg = model.config();
    let (nh, t) = (cfg.n_heads, ids.len());
    let batch = Batch::from_ids(vec![ids.to_vec()], pad_id)?;
    let mut bump = vec![0f32; t * nh * t];
    bump[(i * nh + h) * t + j] = eps;
    let z = Tensor::<B, 2>::from_data(TensorData::new(bump, [t * nh, t]), model.device());
    let spec = HookSpec::new()
        .logits(LogitsMode::Last)
        .intervene(Intervention::new(
            format!("blocks.{layer}.attn.hook_pattern"),
            Op::Add(z),
        ));
    let out = model.forward(&batch, &spec)?;
    let logits = out
        .logits
        .ok_or_else(|| ExperimentError::Invalid("forward returned no logits".into()))?;
    let v = logits.dims()[2];
    let lp = to_vec(log_softmax(logits.reshape([1, v]), 1))?;
    Ok(-f64::from(lp[target as usize]))
}

/// Wang et al.'s three flows and the control, from the saliency matrix I `[T][T]` (row = query i,
/// column = key j) of one block.
pub fn flows(sal: &[f64], t: usize, answers: &[usize], controls: &[usize]) -> [f64; 4] {
    let q = t - 1;
    let is_answer = |i: usize| answers.contains(&i);
    let (mut wp, mut nwp, mut ww, mut nww) = (0.0, 0usize, 0.0, 0usize);
    for i in 0..t {
        for j in 0..i {
            let v = sal[i * t + j];
            if is_answer(i) {
                wp += v;
                nwp += 1;
            } else if !(i == q && is_answer(j)) {
                ww += v;
                nww += 1;
            }
        }
    }
    let pq: f64 =
        answers.iter().map(|&p| sal[q * t + p]).sum::<f64>() / answers.len().max(1) as f64;
    let cq: f64 =
        controls.iter().map(|&c| sal[q * t + c]).sum::<f64>() / controls.len().max(1) as f64;
    [wp / nwp.max(1) as f64, pq, ww / nww.max(1) as f64, cq]
}

/// I_l = Σ_h |A ⊙ ∂L/∂A| of one block, `[T][T]`.
pub fn saliency(pattern: &[f32], grad: &[f32], nh: usize, t: usize) -> Vec<f64> {
    let mut s = vec![0f64; t * t];
    for h in 0..nh {
        for (x, o) in s.iter_mut().enumerate() {
            let k = h * t * t + x;
            *o += (f64::from(pattern[k]) * f64::from(grad[k])).abs();
        }
    }
    s
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaliencyConfig {
    pub model_id: String,
    pub k: usize,
    pub n: usize,
    pub seeds: Vec<u64>,
}

/// One (task, seed): per prompt, per block, [S_wp, S_pq, S_ww, S_cq].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaliencyUnit {
    pub config: SaliencyConfig,
    pub task: String,
    pub seed: u64,
    pub loss: Vec<f64>,
    pub flows: Vec<Vec<[f64; 4]>>,
    pub seconds: f64,
}

impl UnitLine for SaliencyUnit {
    type Config = SaliencyConfig;
    fn config(&self) -> &SaliencyConfig {
        &self.config
    }
    fn key(&self) -> (String, u64) {
        (self.task.clone(), self.seed)
    }
}

fn input_ends(p: &Prepared) -> Vec<usize> {
    p.input_positions
        .iter()
        .filter_map(|v| v.last().copied())
        .collect()
}

pub fn run_unit<B: AutodiffBackend>(
    probe: &Probe<B>,
    task: &TaskSet,
    cfg: &SaliencyConfig,
    seed: u64,
) -> Result<SaliencyUnit> {
    let t0 = std::time::Instant::now();
    let specs = p_prompts(task, cfg.k, cfg.n, seed)?;
    let prompts = probe.prepare_all(&specs)?;
    let nh = probe.model.config().n_heads;
    let mut loss = Vec::with_capacity(prompts.len());
    let mut all = Vec::with_capacity(prompts.len());
    for p in &prompts {
        let PatternGrads {
            loss: l,
            patterns: pats,
            grads,
        } = pattern_grads(probe.model, &p.ids, p.target, probe.tok.pad_id())?;
        let t = p.ids.len();
        let ends = input_ends(p);
        all.push(
            pats.iter()
                .zip(&grads)
                .map(|(a, g)| flows(&saliency(a, g, nh, t), t, &p.answer_positions, &ends))
                .collect(),
        );
        loss.push(l);
    }
    Ok(SaliencyUnit {
        config: cfg.clone(),
        task: task.name.clone(),
        seed,
        loss,
        flows: all,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Where a run of this experiment writes (`OUT/<model>_saliency_k<k>.*`).
pub fn files(out: &Path, model_id: &str, k: usize) -> RunFiles {
    RunFiles::new(out, "saliency", model_id, k)
}

pub fn run_saliency<B: AutodiffBackend>(
    probe: &Probe<B>,
    tasks: &[TaskSet],
    cfg: &SaliencyConfig,
    out: &Path,
) -> Result<Vec<SaliencyUnit>> {
    let units = run_task_seeds(
        &files(out, &cfg.model_id, cfg.k),
        cfg,
        tasks,
        &cfg.seeds,
        |task, seed, bar| run_unit(&probe.counting(bar), task, cfg, seed),
    )?;
    Ok(units.records)
}

/// Per block: each flow's share of S_wp + S_pq + S_ww (per prompt, then pooled), and the paired
/// S_pq − S_cq relative to the same sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockFlows {
    pub block: usize,
    pub wp: Interval,
    pub pq: Interval,
    pub ww: Interval,
    pub cq: Interval,
    pub pq_minus_cq: Interval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSaliency {
    pub task: String,
    pub seeds: Vec<u64>,
    pub blocks: Vec<BlockFlows>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaliencySummary {
    pub experiment: String,
    pub config: SaliencyConfig,
    pub tasks: Vec<TaskSaliency>,
    pub seconds: f64,
}

pub fn summarize(cfg: &SaliencyConfig, units: &[SaliencyUnit]) -> Result<SaliencySummary> {
    let mut names: Vec<&str> = Vec::new();
    for u in units {
        if !names.contains(&u.task.as_str()) {
            names.push(&u.task);
        }
    }
    let mut tasks = Vec::new();
    for name in names {
        let us: Vec<&SaliencyUnit> = units.iter().filter(|u| u.task == name).collect();
        let nb = us
            .iter()
            .flat_map(|u| u.flows.first().map(Vec::len))
            .next()
            .unwrap_or(0);
        let mut blocks = Vec::new();
        for b in 0..nb {
            let rows: Vec<[f64; 4]> = us
                .iter()
                .flat_map(|u| u.flows.iter().map(move |f| f[b]))
                .collect();
            let share = |x: usize| -> Vec<f64> {
                rows.iter()
                    .map(|r| {
                        let s = r[0] + r[1] + r[2];
                        if s > 0.0 {
                            r[x] / s
                        } else {
                            0.0
                        }
                    })
                    .collect()
            };
            let iv = |v: &[f64], tag: &str| {
                bootstrap_mean(
                    v,
                    BOOTSTRAP_RESAMPLES,
                    LEVEL,
                    seed_of(&format!("{name}/{b}/{tag}")),
                )
            };
            let (wp, pq, ww, cq) = (share(0), share(1), share(2), share(3));
            blocks.push(BlockFlows {
                block: b,
                wp: iv(&wp, "wp")?,
                pq: iv(&pq, "pq")?,
                ww: iv(&ww, "ww")?,
                cq: iv(&cq, "cq")?,
                pq_minus_cq: bootstrap_paired_difference(
                    &pq,
                    &cq,
                    BOOTSTRAP_RESAMPLES,
                    LEVEL,
                    seed_of(&format!("{name}/{b}/d")),
                )?,
            });
        }
        tasks.push(TaskSaliency {
            task: name.to_string(),
            seeds: us.iter().map(|u| u.seed).collect(),
            blocks,
        });
    }
    Ok(SaliencySummary {
        experiment: "saliency".into(),
        config: cfg.clone(),
        tasks,
        seconds: units.iter().map(|u| u.seconds).sum(),
    })
}

pub fn write_saliency_report(s: &SaliencySummary, out: &Path) -> Result<String> {
    let c = &s.config;
    let files = files(out, &c.model_id, c.k);
    let plots = files.write_summary(s)?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Saliency flows (Wang et al. 2023) ({}, k = {}, {} queries × seeds {:?})\n\n\
         I_l = Σ_h |A ⊙ ∂L/∂A|, L the cross-entropy of the answer token. Per block: share of \
         S_wp (text → answer positions), S_pq (answer positions → last), S_ww (rest) in their sum \
         (per prompt, mean with a {:.0} % bootstrap interval over prompts pooled over seeds); \
         control S_cq: last input token of each demonstration → last, same normalisation; \
         `pq − cq` paired.\n",
        c.model_id,
        c.k,
        c.n,
        c.seeds,
        100.0 * LEVEL
    );
    let f = |i: &Interval| format!("{:.2} [{:.2}, {:.2}]", i.mean, i.lo, i.hi);
    for t in &s.tasks {
        let _ = writeln!(
            md,
            "### {}\n\n| block | S_wp | S_pq | S_ww | S_cq (control) | S_pq − S_cq |\n|---|---|---|---|---|---|",
            t.task
        );
        for b in &t.blocks {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                b.block,
                f(&b.wp),
                f(&b.pq),
                f(&b.ww),
                f(&b.cq),
                f(&b.pq_minus_cq)
            );
        }
        let line = |name: &str, g: fn(&BlockFlows) -> Interval| IntervalSeries {
            name: name.into(),
            points: t
                .blocks
                .iter()
                .map(|b| {
                    let i = g(b);
                    (b.block as f64, i.mean, i.lo, i.hi)
                })
                .collect(),
        };
        let file = files.plot_file(&t.task);
        interval_plot_y(
            &plots.join(&file),
            &format!("{} {}: saliency flows", c.model_id, t.task),
            "block l",
            "share of S_wp + S_pq + S_ww",
            (0.0, 1.02),
            &[
                line("S_wp: text → answers", |b| b.wp),
                line("S_pq: answers → last", |b| b.pq),
                line("S_ww: rest", |b| b.ww),
                line("S_cq: input ends → last (control)", |b| b.cq),
            ],
            &[],
        )?;
        let _ = writeln!(md, "\n![{}](plots/{file})\n", t.task);
    }
    let _ = writeln!(md, "Wall time: {:.0} s.", s.seconds);
    files.write_markdown(&md)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_average_the_right_edges() {
        // T = 5, answers at 2, control at 1, q = 4; I(i, j) = 10 i + j.
        let t = 5;
        let sal: Vec<f64> = (0..t * t).map(|x| (10 * (x / t) + x % t) as f64).collect();
        let [wp, pq, ww, cq] = flows(&sal, t, &[2], &[1]);
        assert_eq!(wp, (20.0 + 21.0) / 2.0);
        assert_eq!(pq, 42.0);
        assert_eq!(cq, 41.0);
        // Other causal pairs: (1,0), (3,0..3), (4,0), (4,1), (4,3).
        let rest = [10.0, 30.0, 31.0, 32.0, 40.0, 41.0, 43.0];
        assert_eq!(ww, rest.iter().sum::<f64>() / rest.len() as f64);
    }

    #[test]
    fn saliency_sums_heads_of_absolute_products() {
        let (nh, t) = (2, 2);
        let a = [0.5f32, 0.0, 1.0, -1.0, 0.25, 0.0, 2.0, 3.0];
        let g = [2.0f32, 5.0, -1.0, 1.0, 4.0, 7.0, 0.5, -1.0];
        let s = saliency(&a, &g, nh, t);
        assert_eq!(s, vec![1.0 + 1.0, 0.0, 1.0 + 1.0, 1.0 + 3.0]);
    }
}
