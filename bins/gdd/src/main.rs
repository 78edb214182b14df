//! `gdd`: GDD / GDD-I one-step distillation of EDM teachers (train, sample, FID, freezing report,
//! innate one-step analysis). Argument parsing over dist-distill: training is
//! [`dist_distill::train::run`], evaluation [`dist_distill::eval`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::{Parser, Subcommand};
use device::{BackendTask, DeviceKind};
use dist_distill::data::{load_training, DataOptions};
use dist_distill::disc::{BackboneKind, DiscConfig, FeatureNet};
use dist_distill::eval::{self, Sampler};
use dist_distill::freeze::FreezeReport;
use dist_distill::generator::OneStep;
use dist_distill::loss::LossType;
use dist_distill::train::{FidSchedule, GddConfig, RunEvent, RunOptions};
use dist_distill::DistillError;
use edm_core::{EdmConfig, EdmPrecond};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "gdd",
    version,
    about = "GDD / GDD-I: one-step generators distilled from EDM teachers"
)]
struct Cli {
    /// cpu (burn Flex) or cuda (needs the `cuda` feature).
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu, global = true)]
    device: DeviceKind,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the `Train` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Print a shell completion script (e.g. `gdd completions bash > /etc/bash_completion.d/gdd`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Distil a one-step generator from an EDM teacher (resumes from OUT/checkpoint if present).
    Train(TrainArgs),
    /// Run the orchestrator of a multi-node `gdd train` / `edm train` (until killed).
    Orchestrator {
        /// Port to listen on (all interfaces); nodes pass --orchestrator HOST:PORT.
        #[arg(long, default_value_t = 29500)]
        port: u16,
    },
    /// Sample a network with EDM's generate.py options: one PNG per seed in --outdir (existing
    /// PNGs kept, so a stopped run continues) and/or one grid PNG (--grid).
    Sample(SampleArgs),
    /// FID of a network's samples against a Fashion-MNIST split's own statistics.
    Fid {
        /// EDM network folder (config.json + model.safetensors), e.g. OUTDIR/checkpoint/ema.
        #[arg(long = "network", visible_alias = "net")]
        net: PathBuf,
        /// Reference images: any `gdd train --data` source (zip, folder, CIFAR-10, idx, Fashion-MNIST).
        #[arg(long)]
        data: PathBuf,
        /// 0 = one-step map; N > 0 = Heun with N steps.
        #[arg(long, default_value_t = 0)]
        heun_steps: usize,
        #[arg(long, default_value_t = 1000)]
        num: usize,
        /// Reference images (first N of the training split).
        #[arg(long, default_value_t = 5000)]
        ref_num: usize,
        /// Cache file of the reference statistics (.npz).
        #[arg(long)]
        ref_cache: Option<PathBuf>,
        #[arg(long, default_value_t = 50)]
        batch: usize,
        /// GDD's epsilon for the one-step map (2e-3; 0 reproduces EDM's own D(80z; 80)).
        #[arg(long, default_value_t = 2e-3)]
        eps: f64,
    },
    /// The reference's training configurations (train.sh), usable as `gdd train --preset NAME`.
    Presets {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Trainable vs frozen generator parameters under GDD-I's freezing levels.
    ReportFreeze {
        /// Teacher folder; default: the reference's CIFAR-10 NCSN++ (random init, names only).
        #[arg(long)]
        teacher: Option<PathBuf>,
        /// Also write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The "innate one-step" analysis: per-block activation similarity of the teacher across sigma.
    Analyze {
        /// Teacher folder (a SongUNet: DDPM++ or NCSN++).
        #[arg(long)]
        teacher: PathBuf,
        /// Output folder for innate.md, innate.json and innate.png.
        #[arg(long = "outdir", visible_alias = "out")]
        out: PathBuf,
        /// Real images noised to each sigma (the paper's setting; any `gdd train --data` source);
        /// without it the teacher sees pure noise sigma·n at every sigma.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Images analysed.
        #[arg(long, default_value_t = 16)]
        num: usize,
        /// Noise of image i from seed SEED + i.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Noise levels, comma-separated; activations are compared with those at the first (80: the
        /// generator's). Default: the analysis' standard ladder.
        #[arg(long, value_delimiter = ',')]
        sigmas: Option<Vec<f64>>,
        /// Images per forward pass.
        #[arg(long, default_value_t = 16)]
        batch: usize,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Teacher folder (config.json + model.safetensors; `DIR/checkpoint` also accepted).
    #[arg(long)]
    teacher: PathBuf,
    /// Training images: an EDM/StyleGAN dataset zip or image folder (labels from dataset.json),
    /// CIFAR-10's python tarball, an idx image file, or a Fashion-MNIST folder (padded to the teacher's
    /// resolution).
    #[arg(long)]
    data: PathBuf,
    /// Run folder: checkpoint/ (resumable; checkpoint/ema is the EMA generator), metrics.jsonl,
    /// grids, ref_stats.npz.
    #[arg(long = "outdir", visible_alias = "out")]
    out: PathBuf,
    /// Resume even when the saved run's configuration differs from this one (the saved values are
    /// kept and the differences printed).
    #[arg(long)]
    force: bool,
    /// Double the data with left-right mirrored copies (EDM's --xflip).
    #[arg(long)]
    xflip: bool,
    /// GDD-I freezing level 0..3 (0 = GDD).
    #[arg(long, default_value_t = 0)]
    freeze: u8,
    /// Training length in kimg (may grow on resume).
    #[arg(long, required_unless_present = "preset")]
    kimg: Option<f64>,
    /// A reference configuration (`gdd presets` lists them): sets batch, lr, dlr, kimg, EMA, freeze,
    /// cond, precision, R1 gamma, seed and the discriminator's batch-norm groups, except where a flag
    /// is given on the command line.
    #[arg(long)]
    preset: Option<String>,
    /// Total batch size.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Generator learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Discriminator learning rate (before the lazy-R1 adjustment).
    #[arg(long, default_value_t = 1e-4)]
    dlr: f64,
    /// Adversarial loss: ns (non-saturating logistic) or hinge.
    #[arg(long, default_value = "ns", value_parser = ["ns", "hinge"])]
    loss: String,
    /// R1 penalty weight gamma.
    #[arg(long, default_value_t = 1e-4)]
    r1_gamma: f64,
    /// Lazy R1 every this many steps (0: no R1).
    #[arg(long, default_value_t = 16)]
    r1_interval: usize,
    /// EMA half-life in kimg (reference: 500) with ramp-up ratio 0.05.
    #[arg(long, visible_alias = "ema-halflife-kimg", default_value_t = 500.0)]
    ema_kimg: f64,
    /// Side the discriminator resizes images to (reference: 224).
    #[arg(long, default_value_t = 224)]
    d_res: usize,
    /// Class-conditional (uses the dataset labels and the teacher's label_dim).
    #[arg(long)]
    cond: bool,
    /// Precision of the generator's U-Net body (half types on CUDA only).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    precision: String,
    /// Random seed (discriminator initialisation, batches, noise).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images.
    #[arg(long)]
    limit: Option<usize>,
    /// EfficientNet-Lite0 .pth (default: the cached asset `efficientnet-lite0`).
    #[arg(long)]
    effnet: Option<PathBuf>,
    /// The discriminators' frozen feature networks, one projected discriminator each, losses
    /// summed (the reference's CIFAR-10 setting: vgg16_bn,tf_efficientnet_lite0); comma-separated
    /// or repeated. Default: vgg16_bn when --vgg16-bn is given, else tf_efficientnet_lite0; with
    /// --preset, the preset's (both where it lists vgg16_bn and --vgg16-bn is given).
    #[arg(long, value_delimiter = ',', value_parser = ["tf_efficientnet_lite0", "efficientnet_lite0", "vgg16_bn"])]
    backbone: Vec<String>,
    /// torchvision's vgg16_bn state dict (e.g. vgg16_bn-6c64b313.pth), for `--backbone vgg16_bn`
    /// (the reference's CIFAR-10 discriminator).
    #[arg(long = "vgg16-bn")]
    vgg16_bn: Option<PathBuf>,
    /// Steps per resumable checkpoint (and one at the end).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// Steps per 8x8 sample grid of the EMA generator (grid-NNNNNN.png).
    #[arg(long, default_value_t = 100)]
    grid_every: u64,
    /// FID of the EMA generator every N steps (0 = only at the end; needs the Inception asset).
    #[arg(long, default_value_t = 0)]
    fid_every: u64,
    /// Generated images per FID.
    #[arg(long, default_value_t = 1000)]
    fid_num: usize,
    /// Reference images of the FID (the first N of the training data; cached as ref_stats.npz,
    /// keyed by the images it was made from).
    #[arg(long, default_value_t = 5000)]
    fid_ref_num: usize,
    /// Skip FID entirely.
    #[arg(long)]
    no_fid: bool,
    /// Print a summary (steps, kimg, seconds, EMA folder) as one JSON object on stdout at the end.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    parallel: parallel::ParallelArgs,
    /// Discriminator batch-norm statistics over groups of this many samples (0: each device's whole
    /// share). The reference normalises per GPU: batch / its GPU count reproduces that.
    #[arg(long, default_value_t = 0)]
    d_batch_group: usize,
}

fn main() {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Train(a), Some(m)) = (&mut cli.command, matches.subcommand_matches("train")) {
        if let Err(e) = apply_preset(a, m) {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "gdd", &mut std::io::stdout());
        return;
    }
    let res = device::dispatch(cli.device, cli.command)
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(match e.downcast_ref::<DistillError>() {
            Some(DistillError::NonFinite { .. }) => 3,
            _ => 1,
        });
    }
}

/// `gdd sample`: EDM's generate.py names (`--network --outdir --seeds --subdirs --batch --steps
/// --class`), the earlier `--net --heun-steps --num --seed --out` as aliases.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("dest").required(true).multiple(true).args(["outdir", "grid"])))]
struct SampleArgs {
    /// EDM network folder (config.json + model.safetensors), e.g. OUTDIR/checkpoint/ema.
    #[arg(long, visible_alias = "net")]
    network: PathBuf,
    /// 0: GDD's one-step map at sigma 80; N > 0: EDM's Heun sampler with N steps (18 = Heun-35).
    #[arg(long, visible_alias = "heun-steps", default_value_t = 0)]
    steps: usize,
    /// Random seeds, one image each (EDM's syntax: `0-63`, `0-999,2000`); default 0-63.
    #[arg(long, conflicts_with_all = ["num", "seed"])]
    seeds: Option<String>,
    /// Number of images, seeds --seed..--seed+N (the earlier form of --seeds).
    #[arg(long)]
    num: Option<usize>,
    /// First seed with --num.
    #[arg(long, requires = "num")]
    seed: Option<u64>,
    /// Folder for one PNG per image, named as EDM names them (`000012.png`).
    #[arg(long)]
    outdir: Option<PathBuf>,
    /// Put each image in a folder per thousand seeds (`000000/`, `001000/`, ...), as EDM's --subdirs.
    #[arg(long)]
    subdirs: bool,
    /// Also write all images as one PNG grid (ceil(sqrt(N)) columns) to this file.
    #[arg(long, visible_alias = "out")]
    grid: Option<PathBuf>,
    /// Images per network batch; images do not depend on it.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Class of every image (conditional networks); drawn per seed when omitted.
    #[arg(long = "class")]
    class: Option<usize>,
    /// GDD's epsilon of the one-step map (0 reproduces EDM's own D(80z; 80)).
    #[arg(long, default_value_t = 2e-3)]
    eps: f64,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// `gdd sample`: flags to [`eval::sample_to_dir`] and [`eval::write_grid`].
fn sample<B: Backend>(a: SampleArgs, device: &B::Device) -> Result<()> {
    // Images written over the network's own files would destroy it (issue 21).
    let guard = formats::OutputGuard::new([&a.network]);
    for out in a.outdir.iter().chain(&a.grid) {
        guard.check(out)?;
    }
    let seeds: Vec<u64> = match (&a.seeds, a.num) {
        (_, Some(n)) => {
            let s0 = a.seed.unwrap_or(0);
            (s0..s0 + n as u64).collect()
        }
        (Some(list), None) => edm_core::parse_seeds(list)?,
        (None, None) => (0..64).collect(),
    };
    let net = load_net::<B>(&a.network, device)?;
    let how = sampler(a.steps, a.eps);
    let mut summary = serde_json::json!({"images": seeds.len()});
    if let Some(dir) = &a.outdir {
        let pb = ProgressBar::new(seeds.len() as u64);
        let r = eval::sample_to_dir(
            &net,
            how,
            &seeds,
            a.class,
            a.batch,
            dir,
            a.subdirs,
            device,
            &mut |done, _| pb.set_position(done as u64),
        )?;
        pb.finish_and_clear();
        eprintln!(
            "{} images sampled, {} existing PNGs kept, in {}",
            r.sampled,
            r.skipped,
            dir.display()
        );
        summary["sampled"] = r.sampled.into();
        summary["skipped"] = r.skipped.into();
    }
    if let Some(grid) = &a.grid {
        let x = eval::draw_seeds(&net, how, &seeds, a.class, device)?;
        eval::write_grid(x, (seeds.len() as f64).sqrt().ceil() as usize, grid)?;
        eprintln!("wrote {}", grid.display());
        summary["grid"] = serde_json::json!(grid);
    }
    if a.json {
        println!("{summary}");
    }
    Ok(())
}

fn load_net<B: Backend>(p: &Path, device: &B::Device) -> Result<EdmPrecond<B>> {
    dist_distill::generator::load_net(p, device)
        .with_context(|| format!("loading EDM network from {}", p.display()))
}

fn sampler(heun_steps: usize, eps: f64) -> Sampler {
    match heun_steps {
        0 => Sampler::OneStep(OneStep {
            eps,
            ..OneStep::default()
        }),
        n => Sampler::Heun(n),
    }
}

impl BackendTask for Command {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let device = &device;
        match self {
            Command::Train(a) => train::<B>(a, device),
            Command::Orchestrator { port } => Ok(parallel::run_orchestrator(port)?),
            Command::Sample(a) => sample::<B>(a, device),
            // Printed in `main` before a device is chosen.
            Command::Completions { .. } => Ok(()),
            Command::Fid {
                net,
                data,
                heun_steps,
                num,
                ref_num,
                ref_cache,
                batch,
                eps,
            } => {
                let net = load_net::<B>(&net, device)?;
                let res = net.config.img_resolution;
                let opts = DataOptions {
                    resolution: res,
                    cond: false,
                    xflip: false,
                    limit: Some(ref_num),
                };
                let ds = load_training(&data, &opts)?;
                if !ref_cache.as_ref().is_some_and(|c| c.exists()) {
                    eprintln!("computing reference statistics of {} images...", ds.len);
                }
                let ev = eval::fid_evaluator::<B>(&ds, ref_num, ref_cache.as_deref(), device)?;
                let t0 = std::time::Instant::now();
                let f = eval::fid_of_net(&ev, &net, sampler(heun_steps, eps), num, batch, device)?;
                println!(
                    "{}",
                    serde_json::json!({"fid": f, "num": num, "ref_num": ref_num, "heun_steps": heun_steps, "eps": eps, "seconds": t0.elapsed().as_secs_f64()})
                );
                Ok(())
            }
            Command::ReportFreeze { teacher, json } => {
                let net = match teacher {
                    Some(t) => load_net::<B>(&t, device)?,
                    None => EdmPrecond::<B>::init(&EdmConfig::gdd_ncsnpp_cifar10(), 0, device)?,
                };
                let params = net.named_parameters();
                let params: Vec<(&str, usize)> = params
                    .iter()
                    .map(|t| (t.name.as_str(), t.numel()))
                    .collect();
                let reports = FreezeReport::all_levels(&params);
                print!("{}", FreezeReport::markdown_table(&reports));
                if let Some(j) = json {
                    formats::write_atomic(&j, &serde_json::to_vec_pretty(&reports)?)?;
                }
                Ok(())
            }
            Command::Presets { json } => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&dist_distill::presets::all())?
                    );
                } else {
                    print!("{}", dist_distill::presets::table());
                }
                Ok(())
            }
            Command::Analyze {
                teacher,
                out,
                data,
                num,
                seed,
                sigmas,
                batch,
            } => {
                use dist_distill::analyze::{AnalysisConfig, AnalysisInput};
                formats::check_output(&out, [Some(&teacher), data.as_ref()].into_iter().flatten())?;
                let net = load_net::<B>(&teacher, device)?;
                std::fs::create_dir_all(&out)?;
                let cfg = AnalysisConfig {
                    input: match data {
                        Some(path) => AnalysisInput::Dataset { path },
                        None => AnalysisInput::PureNoise,
                    },
                    num,
                    seed,
                    sigmas: sigmas.unwrap_or_else(|| AnalysisConfig::default().sigmas),
                    batch,
                };
                let report = dist_distill::analyze::innate_one_step_analysis(&net, &cfg, device)?;
                report.write(&out)?;
                eprintln!("wrote {}/innate.{{md,json,png}}", out.display());
                Ok(())
            }
        }
    }
}

/// Fills the flags a `--preset` sets from it, leaving those given on the command line.
fn apply_preset(a: &mut TrainArgs, m: &clap::ArgMatches) -> Result<()> {
    let Some(name) = &a.preset else {
        return Ok(());
    };
    let p = dist_distill::presets::get(name)?;
    let c = p.gdd_config();
    let unset = |id: &str| m.value_source(id) != Some(clap::parser::ValueSource::CommandLine);
    if unset("batch") {
        a.batch = c.batch_size;
    }
    if unset("lr") {
        a.lr = c.lr;
    }
    if unset("dlr") {
        a.dlr = c.dlr;
    }
    if unset("kimg") {
        a.kimg = Some(c.total_kimg);
    }
    if unset("ema_kimg") {
        a.ema_kimg = c.ema_halflife_kimg;
    }
    if unset("freeze") {
        a.freeze = c.freeze;
    }
    if unset("cond") {
        a.cond = c.cond;
    }
    if unset("precision") {
        a.precision = c.precision.clone();
    }
    if unset("r1_gamma") {
        a.r1_gamma = c.r1_gamma;
    }
    if unset("seed") {
        a.seed = c.seed;
    }
    if unset("d_batch_group") {
        a.d_batch_group = c.d_batch_group;
    }
    if unset("backbone") {
        a.backbone = p
            .disc_backbones(a.vgg16_bn.is_some())
            .iter()
            .map(|k| k.name().to_string())
            .collect();
    }
    let uses_vgg = a.backbone.iter().any(|b| b == "vgg16_bn");
    eprintln!(
        "preset {name} ({}, teacher {}, data {}; the reference's discriminator backbones {}; this run \
         projects {}, one discriminator per backbone{})",
        p.method,
        p.teacher,
        p.dataset,
        p.backbones.join(" + "),
        a.backbone.join(" + "),
        if p.backbones.contains(&"vgg16_bn") && !uses_vgg {
            ": give --vgg16-bn FILE for the reference's vgg16_bn"
        } else {
            ""
        }
    );
    Ok(())
}

fn train<B: Backend>(a: TrainArgs, device: &B::Device) -> Result<()> {
    let loss: LossType = a.loss.parse().map_err(anyhow::Error::msg)?;
    if a.freeze > 3 {
        bail!("--freeze must be 0..3");
    }
    // The run folder must not be (or lie inside) the data, the teacher or the backbone (issue 21).
    formats::check_output(
        &a.out,
        [
            Some(&a.data),
            Some(&a.teacher),
            a.effnet.as_ref(),
            a.vgg16_bn.as_ref(),
        ]
        .into_iter()
        .flatten(),
    )?;
    let backbone_kinds: Vec<BackboneKind> = match (a.backbone.is_empty(), &a.vgg16_bn) {
        (true, Some(_)) => vec![BackboneKind::Vgg16Bn],
        (true, None) => vec![BackboneKind::EfficientNetLite0],
        (false, _) => {
            let mut kinds = Vec::with_capacity(a.backbone.len());
            for b in &a.backbone {
                // timm's name, or the short one issue 14 uses.
                let timm = if b == "efficientnet_lite0" {
                    "tf_efficientnet_lite0"
                } else {
                    b
                };
                kinds.push(BackboneKind::from_name(timm)?);
            }
            kinds
        }
    };
    let mut disc = DiscConfig {
        input_res: a.d_res,
        seed: a.seed,
        ..DiscConfig::default()
    };
    disc.set_backbones(&backbone_kinds)?;
    let config = GddConfig {
        batch_size: a.batch,
        total_kimg: a.kimg.context("--kimg (or --preset) is required")?,
        lr: a.lr,
        dlr: a.dlr,
        loss,
        r1_gamma: a.r1_gamma,
        r1_interval: a.r1_interval,
        ema_halflife_kimg: a.ema_kimg,
        freeze: a.freeze,
        disc,
        seed: a.seed,
        cond: a.cond,
        precision: a.precision.clone(),
        d_batch_group: a.d_batch_group,
        ..GddConfig::default()
    };
    // A resume with other options is refused before anything is loaded or computed.
    if let Some(changed) = dist_distill::train::check_resume(&a.out, &config, a.force)? {
        eprintln!("--force: continuing with the saved values; {changed}");
    }
    let teacher = load_net::<Autodiff<B>>(&a.teacher, device)?;
    let mut backbones: Vec<FeatureNet<Autodiff<B>>> = Vec::with_capacity(backbone_kinds.len());
    for &kind in &backbone_kinds {
        let weights = match kind {
            BackboneKind::Vgg16Bn => a.vgg16_bn.as_deref(),
            BackboneKind::EfficientNetLite0 => a.effnet.as_deref(),
        };
        backbones.push(FeatureNet::<Autodiff<B>>::load(kind, weights, device)?);
    }
    let res = teacher.config.img_resolution;
    let opts = DataOptions {
        resolution: res,
        cond: a.cond,
        xflip: a.xflip,
        limit: a.limit,
    };
    let data = load_training(&a.data, &opts)?;
    if a.cond && data.num_classes > teacher.config.label_dim {
        bail!(
            "the data has {} classes, the teacher's label_dim is {}",
            data.num_classes,
            teacher.config.label_dim
        );
    }
    let fid = if a.no_fid {
        None
    } else {
        std::fs::create_dir_all(&a.out)?;
        let cache = a.out.join("ref_stats.npz");
        let ref_opts = DataOptions {
            cond: false,
            xflip: false,
            limit: Some(a.fid_ref_num),
            ..opts
        };
        let ds = load_training(&a.data, &ref_opts)?;
        if !eval::RefStatsKey::of(&ds, a.fid_ref_num).matches(&cache) {
            eprintln!("computing reference statistics of {} images...", ds.len);
        }
        Some(FidSchedule {
            evaluator: eval::fid_evaluator::<B>(&ds, a.fid_ref_num, Some(&cache), device)?,
            every: a.fid_every,
            num: a.fid_num,
        })
    };
    let options = RunOptions {
        out_dir: a.out.clone(),
        checkpoint_every: a.checkpoint_every,
        grid_every: a.grid_every,
        parallel: a.parallel.config()?,
        fid,
    };
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    let started = std::time::Instant::now();
    let on_event = &mut |e: RunEvent<'_>| match e {
        RunEvent::Start {
            step,
            total_steps,
            resumed,
            cur_nimg,
            freeze: fr,
            devices,
        } => {
            if resumed {
                eprintln!(
                    "resumed at step {step} ({:.2} kimg)",
                    cur_nimg as f64 / 1000.0
                );
            }
            if devices > 1 {
                eprintln!("data-parallel over {devices} devices");
            }
            eprintln!(
                "generator: {} parameters, {} trainable, {} frozen ({:.1} %, freeze={})",
                fr.total_params, fr.trainable_params, fr.frozen_params, fr.frozen_percent, fr.level
            );
            pb.set_length(total_steps);
            pb.set_position(step);
        }
        RunEvent::Step(m) => {
            pb.set_position(m.step);
            pb.set_message(format!(
                "G {:.3} D {:.3}/{:.3} s(real) {:.2} s(fake) {:.2} {:.1} img/s",
                m.g_loss,
                m.d_loss_real,
                m.d_loss_fake,
                m.d_real_score,
                m.d_fake_score,
                m.images_per_sec
            ));
        }
        RunEvent::Fid(r) => {
            pb.println(format!(
                "step {}: FID {:.2} ({} samples)",
                r.step, r.fid_ema, r.fid_num
            ));
        }
    };
    let tr = match dist_distill::train::run(
        teacher, backbones, config, &data, &options, device, on_event,
    ) {
        Ok(tr) => tr,
        Err(e @ DistillError::NonFinite { .. }) => {
            pb.abandon();
            eprintln!(
                "training stopped: {e}. The last good checkpoint is {}",
                a.out.join("checkpoint").display()
            );
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    pb.finish();
    eprintln!(
        "done: {} steps, {:.2} kimg in {:.1}s; EMA generator in {}",
        tr.state.step,
        tr.state.cur_nimg as f64 / 1000.0,
        started.elapsed().as_secs_f64(),
        a.out.join("checkpoint/ema").display()
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "step": tr.state.step,
                "kimg": tr.state.cur_nimg as f64 / 1000.0,
                "seconds": started.elapsed().as_secs_f64(),
                "ema": a.out.join("checkpoint/ema"),
            })
        );
    }
    Ok(())
}
