//! Running experiments over tasks and writing their results where `report` finds them:
//! `OUT/<model>_<task>_<experiment>_k<k>_s<seed>.json`, with the cache in `OUT/cache`.

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::Backend;
use icl_tasks::TaskSet;
use serde::Serialize;

use super::answer_sites::run_answer_sites;
use super::baseline::run_accuracy;
use super::cache::{sanitize, write_json};
use super::knockout::run_knockout;
use super::pca::run_pca;
use super::rule_vector::run_rule_vector;
use super::task_vector::{extract, run_task_vector};
use super::{Probe, Progress, Result, ResultCache, RunConfig};

/// One experiment of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Experiment {
    Baseline,
    Icl,
    TaskVector,
    RuleVector,
    /// Rule vectors written back at the answer positions of dummy demonstrations.
    RuleVectorSites,
    Knockout,
    Pca,
}

impl Experiment {
    pub fn name(self) -> &'static str {
        match self {
            Experiment::Baseline => "baseline",
            Experiment::Icl => "icl",
            Experiment::TaskVector => "task-vector",
            Experiment::RuleVector => "rule-vector",
            Experiment::RuleVectorSites => "rule-vector-sites",
            Experiment::Knockout => "knockout",
            Experiment::Pca => "pca",
        }
    }
}

/// Options beyond [`RunConfig`].
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Shots of the ICL experiment.
    pub shots: Vec<usize>,
    /// Blocks per knockout window.
    pub window: usize,
    /// PCA layer (`None`: two thirds of the depth).
    pub pca_layer: Option<usize>,
    /// Extraction prompts per task for the PCA.
    pub pca_prompts: usize,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        Self {
            shots: vec![1, 3, 5, 10],
            window: 5,
            pca_layer: None,
            pca_prompts: 20,
        }
    }
}

fn save<T: Serialize>(
    out: &Path,
    cfg: &RunConfig,
    task: &str,
    exp: Experiment,
    v: &T,
) -> Result<()> {
    let file = format!(
        "{}_{}_{}_k{}_s{}.json",
        sanitize(&cfg.model_id),
        sanitize(task),
        exp.name(),
        cfg.k,
        cfg.seed
    );
    write_json(&out.join(file), v)
}

/// Runs `experiments` on every task (PCA once, across all tasks), writing results under `out`.
pub fn run_experiments<B: Backend>(
    probe: &Probe<B>,
    tasks: &[TaskSet],
    cfg: &RunConfig,
    opts: &SuiteOptions,
    experiments: &[Experiment],
    out: &Path,
) -> Result<()> {
    let cache = ResultCache::new(out.join("cache"));
    // One item per (task, experiment) cell, plus the PCA over all tasks.
    let per_task = experiments
        .iter()
        .filter(|&&e| e != Experiment::Pca)
        .count();
    let has_pca = experiments.contains(&Experiment::Pca);
    let bar = Progress::new(
        format!("[{}]", cfg.model_id),
        (tasks.len() * per_task + usize::from(has_pca)) as u64,
    );
    let probe = &probe.counting(&bar);
    for task in tasks {
        let t0 = Instant::now();
        let mut extraction = None;
        for &exp in experiments {
            let t = Instant::now();
            bar.set_message(format!("{} {}", task.name, exp.name()));
            match exp {
                Experiment::Baseline => save(
                    out,
                    cfg,
                    &task.name,
                    exp,
                    &run_accuracy(probe, task, cfg, &[0], &cache)?,
                )?,
                Experiment::Icl => save(
                    out,
                    cfg,
                    &task.name,
                    exp,
                    &run_accuracy(probe, task, cfg, &opts.shots, &cache)?,
                )?,
                Experiment::TaskVector | Experiment::RuleVector | Experiment::RuleVectorSites => {
                    // One extraction serves all three, made only if one of them is not cached.
                    let cached = cache_has(out, cfg, &task.name, exp, probe.n_layers());
                    if extraction.is_none() && !cached {
                        extraction = Some(extract(probe, task, cfg)?);
                    }
                    let ex = extraction.as_ref();
                    match exp {
                        Experiment::TaskVector => save(
                            out,
                            cfg,
                            &task.name,
                            exp,
                            &run_task_vector(probe, task, cfg, &cache, ex)?,
                        )?,
                        Experiment::RuleVector => save(
                            out,
                            cfg,
                            &task.name,
                            exp,
                            &run_rule_vector(probe, task, cfg, &cache, ex)?,
                        )?,
                        _ => save(
                            out,
                            cfg,
                            &task.name,
                            exp,
                            &run_answer_sites(probe, task, cfg, &cache, ex)?,
                        )?,
                    }
                }
                Experiment::Knockout => save(
                    out,
                    cfg,
                    &task.name,
                    exp,
                    &run_knockout(probe, task, cfg, opts.window, &cache)?,
                )?,
                Experiment::Pca => continue,
            }
            bar.log(format!(
                "[{}] {} {}: {:.1}s",
                cfg.model_id,
                task.name,
                exp.name(),
                t.elapsed().as_secs_f64()
            ));
            bar.inc(1);
        }
        bar.log(format!(
            "[{}] {} done in {:.1}s",
            cfg.model_id,
            task.name,
            t0.elapsed().as_secs_f64()
        ));
    }
    if experiments.contains(&Experiment::Pca) {
        let t = Instant::now();
        bar.set_message(format!("pca over {} tasks", tasks.len()));
        let layer = opts.pca_layer.unwrap_or(probe.n_layers() * 2 / 3);
        let r = run_pca(probe, tasks, cfg, layer, opts.pca_prompts, &cache)?;
        let name = if tasks.len() == 1 {
            tasks[0].name.clone()
        } else {
            format!("{}tasks", tasks.len())
        };
        save(out, cfg, &name, Experiment::Pca, &r)?;
        bar.log(format!(
            "[{}] pca over {} tasks: {:.1}s",
            cfg.model_id,
            tasks.len(),
            t.elapsed().as_secs_f64()
        ));
        bar.inc(1);
    }
    bar.finish();
    Ok(())
}

fn cache_has(out: &Path, cfg: &RunConfig, task: &str, exp: Experiment, n_layers: usize) -> bool {
    let layers = cfg.layer_list(n_layers);
    let name = match exp {
        Experiment::TaskVector => "task_vector",
        Experiment::RuleVectorSites => "rule_vector_sites",
        _ => "rule_vector",
    };
    out.join("cache")
        .join(sanitize(&cfg.model_id))
        .join(sanitize(task))
        .join(cfg.key(&layers))
        .join(format!("{name}.json"))
        .exists()
}
