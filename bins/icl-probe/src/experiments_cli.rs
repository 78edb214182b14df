//! The experiment subcommands: `run {baseline,icl,task-vector,rule-vector,knockout,pca,transplant,all}`,
//! `tasks build`, `report` and `demo` (see docs/icl-experiments.md).

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::Backend;
use icl_experiments::report::write_report;
use icl_experiments::suite::{run_experiments, Experiment, SuiteOptions};
use icl_experiments::transplant::{
    run_transplant, summarize, write_k_sweep, write_transplant_report, DummyKind, TransplantConfig,
};
use icl_experiments::{Probe, RunConfig};
use icl_tasks::{Sources, TaskBuilder, TaskSet, TASKS};

use crate::backend::{BackendTask, DeviceArgs};

/// Where the task data come from.
#[derive(clap::Args, Clone, Debug)]
pub struct DataArgs {
    /// Task name(s), comma-separated, or `all` (built from the asset cache).
    #[arg(long, conflicts_with = "data", value_parser = crate::choices::task_list())]
    pub task: Option<String>,
    /// A task JSONL file (`input`, `output`, `split` per line) instead of a built task.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Seed of the train/dev/test split when building tasks.
    #[arg(long, default_value_t = 0)]
    pub data_seed: u64,
}

/// Source folders from the asset cache (`assets::cached`), as far as present.
fn sources() -> Sources {
    Sources {
        wordnet: assets::cached("wordnet-3.0"),
        freedict: assets::cached("freedict-eng-fra"),
        countryinfo: assets::cached("countryinfo"),
    }
}

fn load_tasks(d: &DataArgs) -> anyhow::Result<Vec<TaskSet>> {
    if let Some(p) = &d.data {
        return Ok(vec![TaskSet::read_jsonl(p)?]);
    }
    let names: Vec<String> = match d.task.as_deref() {
        None | Some("all") => TASKS.iter().map(|t| t.name.to_string()).collect(),
        Some(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
    };
    let mut b = TaskBuilder::new(sources());
    names
        .iter()
        .map(|n| b.build(n, d.data_seed).with_context(|| format!("building task {n} (fetch the data with `cargo run --release -p assets-cli -- fetch`)")))
        .collect()
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Baseline,
    Icl,
    TaskVector,
    RuleVector,
    /// Rule vectors written back at the answer positions of dummy demonstrations.
    RuleVectorSites,
    Knockout,
    Pca,
    /// P's rule vectors written into rule-breaking dummy prompts, with the L0 and other controls,
    /// over several seeds with bootstrap intervals (resumable).
    Transplant,
    /// baseline, icl, rule-vector (with the task-vector curves), rule-vector-sites, knockout, pca.
    All,
    /// Issue #13 item 5: per layer, cosines of answer-position states to the query's last state
    /// and to the task vector, and the knockout of last → answers from block l on (resumable).
    LocalGlobal,
    /// Issue #13 item 4: rule vectors read in one surface form (`->`, `:`, `=>`, Q:/A:, neutral
    /// symbols) transplanted into a rule-breaking dummy in another (resumable).
    Forms,
    /// Issue #13 item 3: dPCA marginalisations (task, item, demonstration index) of
    /// answer-position states by layer (resumable).
    Dpca,
    /// Issue #13 item 2: saliency flows I = Σ_h |A ⊙ ∂L/∂A| (Wang et al.), gradients through
    /// burn's Autodiff backend (resumable).
    Saliency,
    /// Issue #13 claim 3: P's rule vectors written at s = 1..k of the dummy's answer positions,
    /// with the L0 control at each s and one vector repeated at all k (resumable).
    Subsets,
}

/// `icl-probe run EXPERIMENT --model PATH --task NAME|--data FILE --shots K --seed S --out DIR`
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Which experiment to run.
    #[arg(value_enum)]
    pub experiment: Which,
    /// A `.gguf` file or a Hugging Face model folder.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Demonstrations per prompt (for `icl` and `transplant`: a comma-separated list).
    #[arg(long, default_value = "5")]
    pub shots: String,
    /// Seed of the demonstration draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder of the result JSON files, the result cache and the report.
    #[arg(long, default_value = "out/icl")]
    pub out: PathBuf,
    /// Test queries per task.
    #[arg(long, default_value_t = 100)]
    pub n_test: usize,
    /// Dev queries (layer selection).
    #[arg(long, default_value_t = 50)]
    pub n_dev: usize,
    /// Layers to sweep, comma-separated, or `every:N` (default: all).
    #[arg(long)]
    pub layers: Option<String>,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Blocks per knockout window.
    #[arg(long, default_value_t = 5)]
    pub window: usize,
    /// PCA layer (default: two thirds of the depth).
    #[arg(long)]
    pub pca_layer: Option<usize>,
    /// Extraction prompts per task for the PCA.
    #[arg(long, default_value_t = 20)]
    pub pca_prompts: usize,
    /// Write the Markdown report and plots into OUT afterwards.
    #[arg(long)]
    pub report: bool,
    /// `transplant`: seeds of the demonstration draws, comma-separated.
    #[arg(long, default_value = "0,1,2")]
    pub seeds: String,
    /// `transplant`: layers of the read-at-a / write-at-b grid (default: every other layer of
    /// `--layers`; `none` for no grid).
    #[arg(long)]
    pub ab_layers: Option<String>,
    /// `transplant`: dummy kinds, comma-separated (rotated, shuffled, random-labels); the first
    /// one also serves the a/b grid and the other-task, mean and random controls.
    #[arg(long, default_value = "rotated,shuffled,random-labels", value_parser = crate::choices::dummy_list())]
    pub dummies: String,
    /// `forms`: surface forms, comma-separated (arrow, colon, fat-arrow, qa, symbols); the first
    /// is the hub of the pairs unless `--all-pairs`.
    #[arg(long, default_value = "arrow,colon,fat-arrow,qa,symbols")]
    pub forms: String,
    /// `forms`: every ordered pair of forms instead of the first form to every other and back.
    #[arg(long)]
    pub all_pairs: bool,
    /// `local-global`: first blocked block l of the knockout from l on (comma-separated; default
    /// every 3rd block).
    #[arg(long)]
    pub knock_from: Option<String>,
    /// `dpca`: items per task and trials (fresh fillers) per (task, item, index) cell.
    #[arg(long, default_value_t = 6)]
    pub dpca_items: usize,
    /// `dpca`: trials (fresh fillers) per (task, item, index) cell.
    #[arg(long, default_value_t = 2)]
    pub dpca_trials: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub(crate) fn parse_layers(s: Option<&str>, n_layers: usize) -> anyhow::Result<Vec<usize>> {
    let Some(s) = s else { return Ok(Vec::new()) };
    if let Some(step) = s.strip_prefix("every:") {
        let step: usize = step.parse().context("--layers every:N")?;
        let mut v: Vec<usize> = (0..=n_layers).step_by(step.max(1)).collect();
        if v.last() != Some(&n_layers) {
            v.push(n_layers);
        }
        return Ok(v);
    }
    s.split(',')
        .map(|x| x.trim().parse::<usize>().context("--layers"))
        .collect()
}

pub(crate) fn model_id(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// `run transplant`: the layers default to every 6th and never include the last one (the residual
/// at an answer position after the last block reaches no later position, so a write there cannot
/// change the query's prediction). Several `--shots` run one after the other (k = 1 keeps only
/// the random-label dummy: one demonstration cannot be rotated or shuffled), then the k sweep.
fn transplant<B: Backend>(
    a: &RunArgs,
    model: &icl_probe::Model<B>,
    tok: &icl_probe::Tokenizer,
    tasks: &[TaskSet],
) -> anyhow::Result<()> {
    let n_layers = model.config().n_layers;
    let mut layers = parse_layers(Some(a.layers.as_deref().unwrap_or("every:6")), n_layers)?;
    layers.retain(|&l| l < n_layers);
    let ab_layers = match a.ab_layers.as_deref() {
        Some("none") => Vec::new(),
        Some(s) => parse_layers(Some(s), n_layers)?,
        None => layers.iter().copied().step_by(2).collect(),
    };
    let ks: Vec<usize> = a
        .shots
        .split(',')
        .map(|x| x.trim().parse())
        .collect::<Result<_, _>>()
        .context("--shots")?;
    let seeds: Vec<u64> = a
        .seeds
        .split(',')
        .map(|x| x.trim().parse())
        .collect::<Result<_, _>>()
        .context("--seeds")?;
    let dummies: Vec<DummyKind> = a
        .dummies
        .split(',')
        .map(|x| DummyKind::parse(x.trim()))
        .collect::<Result<_, _>>()?;
    std::fs::create_dir_all(&a.out)?;
    let probe = Probe::new(model, tok, a.batch_size);
    let mut summaries = Vec::new();
    for &k in &ks {
        let usable: Vec<DummyKind> = dummies
            .iter()
            .copied()
            .filter(|&d| k >= 2 || d == DummyKind::RandomLabels)
            .collect();
        if usable.is_empty() {
            eprintln!(
                "transplant k = {k}: no dummy kind of {:?} works with one demonstration; skipped",
                a.dummies
            );
            continue;
        }
        let cfg = TransplantConfig {
            model_id: model_id(&a.model),
            k,
            n: a.n_test,
            seeds: seeds.clone(),
            layers: layers.clone(),
            ab_layers: ab_layers.clone(),
            dummies: usable,
        };
        let t = std::time::Instant::now();
        let log = run_transplant(&probe, tasks, &cfg, &a.out)?;
        eprintln!(
            "transplant k = {k}: {} units computed, {} already done, {:.1}s",
            log.computed,
            log.skipped,
            t.elapsed().as_secs_f64()
        );
        let seconds = log.records.iter().map(|r| r.seconds).sum();
        let summary = summarize(&cfg, &log.records, seconds)?;
        println!("{}", write_transplant_report(&summary, &a.out)?);
        summaries.push(summary);
    }
    if summaries.len() > 1 {
        println!("{}", write_k_sweep(&summaries, &a.out)?);
    }
    Ok(())
}

impl BackendTask for RunArgs {
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let tasks = load_tasks(&self.data)?;
        let t = std::time::Instant::now();
        let (model, tok) = icl_probe::load_model::<B>(&self.model, &device)?;
        eprintln!(
            "loaded {} in {:.1}s",
            self.model.display(),
            t.elapsed().as_secs_f64()
        );
        let shots: Vec<usize> = self
            .shots
            .split(',')
            .map(|x| x.trim().parse())
            .collect::<Result<_, _>>()
            .context("--shots")?;
        let k = if self.experiment == Which::Icl {
            5
        } else {
            shots[0]
        };
        let cfg = RunConfig {
            model_id: model_id(&self.model),
            k,
            seed: self.seed,
            n_test: self.n_test,
            n_dev: self.n_dev,
            layers: parse_layers(self.layers.as_deref(), model.config().n_layers)?,
            batch_size: self.batch_size,
        };
        let icl_shots = if self.experiment == Which::Icl {
            shots
        } else {
            vec![1, 3, 5, 10]
        };
        let opts = SuiteOptions {
            shots: icl_shots,
            window: self.window,
            pca_layer: self.pca_layer,
            pca_prompts: self.pca_prompts,
        };
        let exps = match self.experiment {
            Which::Baseline => vec![Experiment::Baseline],
            Which::Icl => vec![Experiment::Icl],
            Which::TaskVector => vec![Experiment::TaskVector],
            Which::RuleVector => vec![Experiment::RuleVector],
            Which::RuleVectorSites => vec![Experiment::RuleVectorSites],
            Which::Knockout => vec![Experiment::Knockout],
            Which::Pca => vec![Experiment::Pca],
            Which::Transplant => return transplant(&self, &model, &tok, &tasks),
            Which::LocalGlobal | Which::Forms | Which::Dpca | Which::Subsets => {
                return crate::issue13_cli::run(&self, &model, &tok, &tasks)
            }
            Which::Saliency => {
                drop(model);
                return crate::issue13_cli::saliency::<B>(&self, &tasks, &device);
            }
            Which::All => vec![
                Experiment::Baseline,
                Experiment::Icl,
                Experiment::RuleVector,
                Experiment::RuleVectorSites,
                Experiment::Knockout,
                Experiment::Pca,
            ],
        };
        std::fs::create_dir_all(&self.out)?;
        let probe = Probe::new(&model, &tok, self.batch_size);
        run_experiments(&probe, &tasks, &cfg, &opts, &exps, &self.out)?;
        eprintln!(
            "all done in {:.1}s; results in {}",
            t.elapsed().as_secs_f64(),
            self.out.display()
        );
        if self.report {
            write_report(&self.out)?;
            eprintln!("report: {}", self.out.join("report.md").display());
        }
        Ok(())
    }
}

/// `icl-probe tasks build --out DIR`
#[derive(clap::Args, Clone, Debug)]
pub struct TasksArgs {
    #[command(subcommand)]
    pub cmd: TasksCmd,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum TasksCmd {
    /// Build every task from the asset cache into OUT/<task>.jsonl.
    Build {
        /// Folder the task files are written into.
        #[arg(long, default_value = "out/tasks")]
        out: PathBuf,
        /// Seed of the train/dev/test split.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Only these tasks (comma-separated).
        #[arg(long, value_parser = crate::choices::task_list())]
        task: Option<String>,
        /// Print the counts as one JSON array [{task, train, dev, test, path}] instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn tasks(a: TasksArgs) -> anyhow::Result<()> {
    let TasksCmd::Build {
        out,
        seed,
        task,
        json,
    } = a.cmd;
    std::fs::create_dir_all(&out)?;
    let sets = load_tasks(&DataArgs {
        task,
        data: None,
        data_seed: seed,
    })?;
    let mut listed = Vec::new();
    for s in sets {
        let (tr, dv, te) = s.counts();
        let p = out.join(format!("{}.jsonl", s.name));
        s.write_jsonl(&p)?;
        if json {
            listed.push(serde_json::json!({
                "task": s.name, "train": tr, "dev": dv, "test": te, "path": p,
            }));
        } else {
            println!(
                "{:16} train {tr:5} dev {dv:4} test {te:4}  {}",
                s.name,
                p.display()
            );
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
    }
    Ok(())
}

/// `icl-probe report DIR`
#[derive(clap::Args, Clone, Debug)]
pub struct ReportArgs {
    /// Folder of results written by `icl-probe run` (report.md and the plots go there too).
    pub dir: PathBuf,
}

pub fn report(a: ReportArgs) -> anyhow::Result<()> {
    write_report(&a.dir)?;
    println!("{}", a.dir.join("report.md").display());
    Ok(())
}

/// `icl-probe demo --model PATH --out DIR`: a few minutes on a CPU: one task, a few layers, every
/// experiment but the PCA.
#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// A `.gguf` file or a Hugging Face model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Folder of the results and the report.
    #[arg(long, default_value = "out/icl-demo")]
    pub out: PathBuf,
    /// The one task the demo runs.
    #[arg(long, default_value = "list_first", value_parser = crate::choices::one_task())]
    pub task: String,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl BackendTask for DemoArgs {
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let tasks = load_tasks(&DataArgs {
            task: Some(self.task),
            data: None,
            data_seed: 0,
        })?;
        let t = std::time::Instant::now();
        let (model, tok) = icl_probe::load_model::<B>(&self.model, &device)?;
        // 24 test and 12 dev queries, k = 5, every 6th layer, ICL at k ∈ {1, 5}, knockout in
        // windows of 10 blocks: a few minutes for SmolLM2-135M on two CPU cores.
        let cfg = RunConfig {
            model_id: model_id(&self.model),
            k: 5,
            seed: 0,
            n_test: 24,
            n_dev: 12,
            layers: parse_layers(Some("every:6"), model.config().n_layers)?,
            batch_size: 24,
        };
        let opts = SuiteOptions {
            shots: vec![1, 5],
            window: 10,
            pca_layer: None,
            pca_prompts: 8,
        };
        let exps = [
            Experiment::Baseline,
            Experiment::Icl,
            Experiment::RuleVector,
            Experiment::RuleVectorSites,
            Experiment::Knockout,
        ];
        std::fs::create_dir_all(&self.out)?;
        let probe = Probe::new(&model, &tok, cfg.batch_size);
        run_experiments(&probe, &tasks, &cfg, &opts, &exps, &self.out)?;
        let md = write_report(&self.out)?;
        println!("{md}");
        eprintln!(
            "demo done in {:.1}s; report in {}",
            t.elapsed().as_secs_f64(),
            self.out.join("report.md").display()
        );
        Ok(())
    }
}
