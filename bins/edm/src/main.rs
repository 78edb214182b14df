//! `edm`: denoise, sample and train EDM networks from the command line. Argument parsing over
//! edm-core: [`edm_core::denoise_file`], [`edm_core::sample_latents`], [`edm_core::train`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::{Parser, Subcommand};
use device::{BackendTask, DeviceKind};
use edm_core::{
    load_precond, nfe, parse_seeds, write_safetensors, EdmConfig, EdmPrecond, GenerateOptions,
    ImageDataset, LatentSource, Latents, Precision, SamplerConfig, Solver, TrainEvent,
    TrainOptions,
};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "edm",
    version,
    about = "EDM (Karras et al. 2022) networks in Rust: denoise, sample, train"
)]
struct Cli {
    /// Compute device (cuda needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu, global = true)]
    device: DeviceKind,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an NVlabs/edm snapshot (network-snapshot-*.pkl) into OUTDIR/config.json +
    /// model.safetensors, without Python: the pickle is read as data, its embedded code never runs.
    Convert {
        pkl: PathBuf,
        outdir: PathBuf,
        /// The snapshot entry holding the network (EDM's snapshots: ema).
        #[arg(long, default_value = "ema")]
        key: String,
    },
    /// D(x; sigma): IN holds `x` [N,C,H,W], `sigma` [N], optional `class_labels` [N,L]; OUT gets `denoised`.
    Denoise {
        /// Network folder (config.json + model.safetensors with EDM's parameter names).
        #[arg(long = "network", visible_alias = "model")]
        model: PathBuf,
        /// Safetensors file with the inputs.
        #[arg(long)]
        input: PathBuf,
        /// Safetensors file to write (`denoised`).
        #[arg(long)]
        output: PathBuf,
        /// Run the U-Net in float16 when the config says `use_fp16` (CUDA only, like EDM).
        #[arg(long)]
        fp16: bool,
    },
    /// Generate images (EDM's generate.py options): one PNG per seed in --outdir, written batch by
    /// batch; a PNG that exists is kept and its seed skipped, so a stopped run continues.
    Sample(SampleArgs),
    /// Print a shell completion script (e.g. `edm completions bash > /etc/bash_completion.d/edm`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Train an EDM network (EDM loss, Adam, EMA) on Fashion-MNIST padded to 32x32 (EDM's train.py
    /// options); resumes from OUTDIR/checkpoint when the saved options match.
    Train(TrainArgs),
}

/// `edm sample`: EDM's `generate.py` names (`--network --outdir --seeds --subdirs --batch --steps
/// --sigma_min --sigma_max --rho --S_churn --S_min --S_max --S_noise --class`), this tool's earlier
/// names as aliases.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("dest").required(true).multiple(true).args(["outdir", "output"])))]
struct SampleArgs {
    /// Network folder (config.json + model.safetensors with EDM's parameter names).
    #[arg(long, visible_alias = "model")]
    network: PathBuf,
    /// Folder for one PNG per image, named as EDM names them (`000012.png`).
    #[arg(long, visible_alias = "png")]
    outdir: Option<PathBuf>,
    /// Put each image in a folder per thousand seeds (`000000/`, `001000/`, ...), as EDM's --subdirs.
    #[arg(long)]
    subdirs: bool,
    /// Also write every image to this safetensors file (`samples` [N,C,H,W]); holds all images in
    /// memory and samples every seed (no skipping).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Random seeds, one image each (EDM's syntax: `0-63`, `0-999,2000`).
    #[arg(long, default_value = "0-63", conflicts_with = "latents")]
    seeds: String,
    /// Read `latents` [N,C,H,W] (and `class_labels` if present) from this safetensors file instead
    /// of seeds; image i is named and seeded by i.
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Class label of every image (conditional networks); drawn per seed when omitted.
    #[arg(long = "class")]
    class: Option<usize>,
    /// Maximum images per network batch (EDM's --batch); images do not depend on it.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// ODE solver; heun with --S_churn > 0 is EDM's stochastic sampler.
    #[arg(long, value_enum, default_value_t = SolverArg::Heun)]
    solver: SolverArg,
    /// Number of sampling steps (NFE = 2*steps - 1 for heun).
    #[arg(long, default_value_t = 18)]
    steps: usize,
    /// Lowest noise level (clamped to the network's).
    #[arg(long = "sigma_min", alias = "sigma-min", default_value_t = 0.002)]
    sigma_min: f64,
    /// Highest noise level (clamped to the network's).
    #[arg(long = "sigma_max", alias = "sigma-max", default_value_t = 80.0)]
    sigma_max: f64,
    /// Time-step exponent.
    #[arg(long, default_value_t = 7.0)]
    rho: f64,
    /// Stochasticity strength (0: deterministic).
    #[arg(long = "S_churn", alias = "s-churn", default_value_t = 0.0)]
    s_churn: f64,
    /// Stochasticity only at noise levels >= this.
    #[arg(long = "S_min", alias = "s-min", default_value_t = 0.0)]
    s_min: f64,
    /// Stochasticity only at noise levels <= this.
    #[arg(long = "S_max", alias = "s-max", default_value_t = f64::INFINITY)]
    s_max: f64,
    /// Noise inflation of the stochastic sampler.
    #[arg(long = "S_noise", alias = "s-noise", default_value_t = 1.0)]
    s_noise: f64,
    /// Run the U-Net in float16 when its config says `use_fp16` (CUDA only, like EDM).
    #[arg(long)]
    fp16: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// `edm train`: EDM's `train.py` names (`--outdir --data --cond --arch --precond --duration --batch
/// --lr --ema --dropout --augment --fp16 --tick --snap --dump --seed --resume`), this tool's earlier
/// names as aliases or kimg twins.
#[derive(clap::Args)]
struct TrainArgs {
    /// Run folder: checkpoint/ (resumable; its config.json + model.safetensors are the EMA model),
    /// stats.jsonl, log.txt, network-snapshot-KKKKKK/.
    #[arg(long, visible_alias = "out")]
    outdir: PathBuf,
    /// Folder with Fashion-MNIST's four idx .gz files (`assets fetch fashion-mnist`).
    #[arg(long)]
    data: PathBuf,
    /// Class-conditional (label_dim 10).
    #[arg(long)]
    cond: bool,
    /// Network: `tiny` (DDPM++, 32 channels), `ddpmpp` (EDM's CIFAR-10 DDPM++) or a config.json path.
    #[arg(long, default_value = "tiny")]
    arch: String,
    /// Preconditioning and loss (EDM's vp and ve are not implemented by this trainer).
    #[arg(long, value_enum, default_value_t = PrecondArg::Edm)]
    precond: PrecondArg,
    /// Training duration in Mimg (EDM's unit); default 0.2 (= --kimg 200).
    #[arg(long, conflicts_with = "kimg")]
    duration: Option<f64>,
    /// Training duration in kimg.
    #[arg(long)]
    kimg: Option<f64>,
    /// Total batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning-rate ramp-up in kimg.
    #[arg(long, default_value_t = 10.0)]
    lr_rampup_kimg: f64,
    /// EMA half-life in Mimg (EDM's unit); default 0.05 (= --ema-kimg 50).
    #[arg(long, conflicts_with = "ema_kimg")]
    ema: Option<f64>,
    /// EMA half-life in kimg.
    #[arg(long = "ema-kimg", visible_alias = "ema-halflife-kimg")]
    ema_kimg: Option<f64>,
    /// EMA ramp-up ratio (0: none).
    #[arg(long, default_value_t = 0.05)]
    ema_rampup_ratio: f64,
    /// Dropout probability of the U-Net's residual blocks (default: the architecture's).
    #[arg(long)]
    dropout: Option<f64>,
    /// Augment probability: only 0 (this trainer has no AugmentPipe; EDM's CIFAR-10 recipe uses 0.12).
    #[arg(long, default_value_t = 0.0)]
    augment: f64,
    /// Mark the network `use_fp16` (EDM's --fp16), so `edm sample --fp16 --device cuda` runs it in
    /// float16; this trainer itself computes in float32.
    #[arg(long)]
    fp16: bool,
    /// kimg per progress tick: one stats.jsonl record and one log.txt line each.
    #[arg(long, default_value_t = 50.0)]
    tick: f64,
    /// Ticks per network snapshot (network-snapshot-KKKKKK/, the EMA network; 0: none).
    #[arg(long, default_value_t = 50)]
    snap: usize,
    /// Ticks per resumable checkpoint (EDM's --dump); overrides --checkpoint-every.
    #[arg(long, conflicts_with = "checkpoint_every")]
    dump: Option<usize>,
    /// Steps per resumable checkpoint (and one at the end).
    #[arg(long, default_value_t = 200)]
    checkpoint_every: usize,
    /// Random seed (initialisation, batches, noise).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue the run in this folder (or its checkpoint/) in --outdir; without it a run resumes
    /// from --outdir's own checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Resume even when the saved run's options differ from these (the saved values are kept and
    /// the differences logged).
    #[arg(long)]
    force: bool,
    /// Use only the first N training images.
    #[arg(long)]
    limit: Option<usize>,
    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Data-parallel: `--devices N` peers on this node, `--nodes/--node-rank/--orchestrator`
    /// (or NNODES, NODE_RANK, ORCHESTRATOR) across processes started with `gdd orchestrator`.
    #[command(flatten)]
    parallel: parallel::ParallelArgs,
}

/// The preconditionings `edm train --precond` offers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PrecondArg {
    /// EDM's preconditioning and loss (Karras et al. 2022).
    Edm,
}

/// The samplers `--solver` offers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SolverArg {
    /// EDM's 2nd-order Heun (Algorithm 1; with --S_churn > 0 Algorithm 2).
    Heun,
    /// 1st-order Euler.
    Euler,
    /// EDM's stochastic sampler (Algorithm 2) even with --S_churn 0.
    Stochastic,
    /// One evaluation: D(z*sigma_max; sigma_max).
    Onestep,
}

impl SolverArg {
    /// EDM's sampler applies churn whenever S_churn > 0: Heun with churn is its stochastic sampler.
    fn solver(self, s_churn: f64) -> Solver {
        match self {
            SolverArg::Heun if s_churn > 0.0 => Solver::Stochastic,
            SolverArg::Heun => Solver::Heun,
            SolverArg::Euler => Solver::Euler,
            SolverArg::Stochastic => Solver::Stochastic,
            SolverArg::Onestep => Solver::OneStep,
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "edm", &mut std::io::stdout());
        return Ok(());
    }
    if let Command::Convert { pkl, outdir, key } = &cli.command {
        for name in ["config.json", "model.safetensors"] {
            formats::check_output(&outdir.join(name), [pkl])?;
        }
        let r = edm_core::convert::convert(pkl, outdir, key)?;
        println!(
            "{}/{:?}: {} tensors, {} parameters -> {}",
            r.class_name,
            r.model_type,
            r.tensors,
            r.parameters,
            outdir.display()
        );
        return Ok(());
    }
    let cuda = cli.device == DeviceKind::Cuda;
    device::dispatch(cli.device, Task(cli.command, cuda))?
}

/// A subcommand and whether it runs on CUDA (where `--fp16` takes effect, as in EDM).
struct Task(Command, bool);

fn bar(len: u64, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let template =
        format!("{{bar:40}} {{pos}}/{{len}} {unit}[{{elapsed_precise}} < {{eta_precise}}] {{msg}}");
    pb.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    pb
}

/// Loads a network; with `fp16`, runs its U-Net in float16 when its config says `use_fp16` and the
/// device is CUDA (EDM's behaviour).
fn load<B: Backend>(
    model: &Path,
    fp16: bool,
    cuda: bool,
    device: &B::Device,
) -> Result<EdmPrecond<B>> {
    let net =
        load_precond::<B>(model, device).with_context(|| format!("loading {}", model.display()))?;
    let p = if fp16 && net.config.use_fp16 && cuda {
        Precision::F16
    } else {
        Precision::F32
    };
    Ok(net.with_precision(p))
}

impl BackendTask for Task {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let (device, cuda) = (&device, self.1);
        match self.0 {
            Command::Denoise {
                model,
                input,
                output,
                fp16,
            } => {
                // An output over the model or the input would destroy it (issue 21).
                formats::check_output(&output, [&model, &input])?;
                let net = load::<B>(&model, fp16, cuda, device)?;
                edm_core::denoise_file(&net, &input, &output, device)?;
                eprintln!("wrote {}", output.display());
                Ok(())
            }
            Command::Sample(a) => sample::<B>(a, cuda, device),
            // Printed in `main` before a device is chosen.
            Command::Completions { .. } | Command::Convert { .. } => Ok(()),
            Command::Train(a) => train::<B>(a, device),
        }
    }
}

/// `edm sample`: flags to [`edm_core::generate_images`].
fn sample<B: Backend>(a: SampleArgs, cuda: bool, device: &B::Device) -> Result<()> {
    let mut inputs = vec![a.network.clone()];
    inputs.extend(a.latents.iter().cloned());
    let guard = formats::OutputGuard::new(&inputs);
    for out in a.output.iter().chain(&a.outdir) {
        guard.check(out)?;
    }
    let net = load::<B>(&a.network, a.fp16, cuda, device)?;
    let solver = a.solver.solver(a.s_churn);
    let cfg = SamplerConfig {
        num_steps: a.steps,
        sigma_min: a.sigma_min,
        sigma_max: a.sigma_max,
        rho: a.rho,
        s_churn: a.s_churn,
        s_min: a.s_min,
        s_max: a.s_max,
        s_noise: a.s_noise,
    };
    let source = match &a.latents {
        Some(path) => LatentSource::File(Latents::from_file(&net.config, path, a.class)?),
        None => LatentSource::Seeds {
            seeds: parse_seeds(&a.seeds)?,
            class: a.class,
        },
    };
    let opts = GenerateOptions {
        batch: a.batch,
        outdir: a.outdir.clone(),
        subdirs: a.subdirs,
        keep_samples: a.output.is_some(),
        skip_existing: true,
    };
    let n = source.seeds().iter().filter(|&&s| !opts.skips(s)).count();
    let pb = bar(
        (n.div_ceil(a.batch.max(1)) * nfe(solver, a.steps)) as u64,
        "NFE ",
    );
    let report = edm_core::generate_images(
        &net,
        &source,
        solver,
        &cfg,
        &opts,
        device,
        &mut |evals, done| {
            pb.inc(evals as u64);
            if evals == 0 {
                pb.set_message(format!("{done}/{n} images"));
            }
        },
    )?;
    pb.finish();
    let [ch, res] = [net.config.img_channels, net.config.img_resolution];
    if let (Some(path), Some(samples)) = (&a.output, &report.samples) {
        let n = source.seeds().len();
        write_safetensors(
            path,
            &[("samples".into(), vec![n, ch, res, res], samples.clone())],
        )?;
        eprintln!("wrote {} ({n} images)", path.display());
    }
    let sigma_max = cfg.clamped(&net).1;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "sampled": report.sampled,
                "skipped": report.skipped,
                "outdir": a.outdir,
                "output": a.output,
                "sigma_max": sigma_max,
                "nfe_per_image": nfe(solver, a.steps),
            })
        );
    }
    if let Some(dir) = &a.outdir {
        eprintln!(
            "{} images sampled, {} existing PNGs kept, in {} (sigma_max {sigma_max})",
            report.sampled,
            report.skipped,
            dir.display()
        );
    }
    Ok(())
}

/// `edm train`: flags to [`edm_core::train_run`].
fn train<B: Backend>(a: TrainArgs, device: &B::Device) -> Result<()> {
    // The run folder must not be (or lie inside) the data (issue 21).
    formats::check_output(&a.outdir, [&a.data])?;
    if a.augment != 0.0 {
        bail!(
            "--augment {}: this trainer has no AugmentPipe; use --augment 0",
            a.augment
        );
    }
    let label_dim = if a.cond { 10 } else { 0 };
    let mut config = match EdmConfig::fashion_mnist(&a.arch, label_dim) {
        Some(c) => c,
        None => EdmConfig::from_file(&a.arch)?,
    };
    if let Some(p) = a.dropout {
        config.dropout = Some(p);
    }
    config.use_fp16 |= a.fp16;
    let dataset = ImageDataset::fashion_mnist(&a.data, true, config.img_resolution, a.limit)
        .with_context(|| format!("reading Fashion-MNIST from {}", a.data.display()))?;
    let total_kimg = match (a.duration, a.kimg) {
        (Some(mimg), _) => mimg * 1000.0,
        (None, Some(kimg)) => kimg,
        (None, None) => 200.0,
    };
    let checkpoint_every = match a.dump {
        // Ticks to steps: a checkpoint at the first step boundary after every `dump` ticks.
        Some(ticks) => ((ticks as f64 * a.tick * 1000.0) / a.batch.max(1) as f64).ceil() as usize,
        None => a.checkpoint_every,
    };
    let options = TrainOptions {
        batch_size: a.batch,
        total_kimg,
        lr: a.lr,
        lr_rampup_kimg: a.lr_rampup_kimg,
        ema_halflife_kimg: a.ema.map_or(a.ema_kimg.unwrap_or(50.0), |m| m * 1000.0),
        ema_rampup_ratio: (a.ema_rampup_ratio > 0.0).then_some(a.ema_rampup_ratio),
        seed: a.seed,
        checkpoint_every: checkpoint_every.max(1),
        tick_kimg: a.tick,
        snap_ticks: a.snap,
        ..Default::default()
    };
    if let Some(from) = &a.resume {
        adopt_checkpoint(from, &a.outdir)?;
    }
    let pb = bar(options.total_steps() as u64, "steps ");
    let started = std::time::Instant::now();
    let trainer = edm_core::train_run_parallel::<Autodiff<B>>(
        &config,
        &dataset,
        options,
        &a.outdir,
        a.force,
        &a.parallel.config()?,
        device,
        &mut |e| match e {
            TrainEvent::Step(r) => {
                pb.set_position(r.step as u64);
                pb.set_message(format!(
                    "loss {:.4} lr {:.2e} {:.1} kimg",
                    r.loss,
                    r.lr,
                    r.cur_nimg as f64 / 1000.0
                ));
            }
            // Not `println`: a hidden bar (stderr not a terminal) would drop the line.
            TrainEvent::Log(line) => pb.suspend(|| eprintln!("{line}")),
            TrainEvent::Tick(_) => {}
        },
    )?;
    pb.finish();
    // No success message without the file it names (issue 21).
    let checkpoint = a.outdir.join("checkpoint");
    if !checkpoint.join("model.safetensors").is_file() {
        bail!(
            "training stopped at step {} but {} holds no model",
            trainer.state.step,
            checkpoint.display()
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "step": trainer.state.step,
                "kimg": trainer.state.cur_nimg as f64 / 1000.0,
                "last_loss": trainer.state.last_loss,
                "seconds": seconds,
                "model": checkpoint,
            })
        );
    }
    eprintln!(
        "trained to step {} ({:.1} kimg) in {seconds:.1}s; EMA model in {}",
        trainer.state.step,
        trainer.state.cur_nimg as f64 / 1000.0,
        checkpoint.display()
    );
    Ok(())
}

/// `--resume FROM`: copies FROM's checkpoint (FROM is a run folder or its `checkpoint/`) into
/// `outdir/checkpoint` through a temporary folder and a rename, so `train_run` resumes from it. A
/// FROM that is `outdir` itself is the default resume; an `outdir` with a checkpoint of its own is
/// refused rather than overwritten.
fn adopt_checkpoint(from: &Path, outdir: &Path) -> Result<()> {
    let src = if from.join("training_state.json").is_file() {
        from.to_path_buf()
    } else {
        from.join("checkpoint")
    };
    let dst = outdir.join("checkpoint");
    if !src.join("training_state.json").is_file() {
        bail!(
            "--resume {}: no checkpoint (training_state.json) there",
            from.display()
        );
    }
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if same(&src, &dst) {
        return Ok(());
    }
    if dst.exists() || outdir.join("checkpoint.old").exists() {
        bail!(
            "--resume {}: {} already holds a checkpoint; resume that run without --resume or pick a new --outdir",
            from.display(),
            outdir.display()
        );
    }
    let tmp = outdir.join("checkpoint.adopt");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for entry in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), tmp.join(entry.file_name()))
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    std::fs::rename(&tmp, &dst)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
    eprintln!(
        "resuming from a copy of {} in {}",
        src.display(),
        dst.display()
    );
    Ok(())
}
