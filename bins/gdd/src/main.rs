//! `gdd`: GDD / GDD-I one-step distillation of EDM teachers (train, sample, FID, freezing report,
//! innate one-step analysis). Argument parsing over dist-distill: training is
//! [`dist_distill::train::run`], evaluation [`dist_distill::eval`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::{Parser, Subcommand};
use device::{BackendTask, DeviceKind};
use dist_distill::disc::DiscConfig;
use dist_distill::effnet::EfficientNetLite0;
use dist_distill::eval::{self, Sampler};
use dist_distill::freeze::FreezeReport;
use dist_distill::generator::OneStep;
use dist_distill::loss::LossType;
use dist_distill::train::{FidSchedule, GddConfig, RunEvent, RunOptions};
use dist_distill::DistillError;
use edm_core::{EdmConfig, EdmPrecond, ImageDataset};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "gdd",
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
    /// Distil a one-step generator from an EDM teacher (resumes from OUT/checkpoint if present).
    Train(TrainArgs),
    /// Run the orchestrator of a multi-node `gdd train` / `edm train` (until killed).
    Orchestrator {
        /// Port to listen on (all interfaces); nodes pass --orchestrator HOST:PORT.
        #[arg(long, default_value_t = 29500)]
        port: u16,
    },
    /// Write a PNG grid of samples (one-step generator, or the teacher's Heun sampler).
    Sample {
        /// EDM network folder (config.json + model.safetensors), e.g. OUT/checkpoint/ema.
        #[arg(long)]
        net: PathBuf,
        /// 0 = one-step map at sigma 80 (GDD); N > 0 = EDM Heun with N steps (18 = Heun-35).
        #[arg(long, default_value_t = 0)]
        heun_steps: usize,
        #[arg(long, default_value_t = 64)]
        num: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// FID of a network's samples against a Fashion-MNIST split's own statistics.
    Fid {
        #[arg(long)]
        net: PathBuf,
        /// Fashion-MNIST folder (the asset `fashion-mnist`).
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
        #[arg(long)]
        teacher: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 16)]
        num: usize,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Teacher folder (config.json + model.safetensors; `DIR/checkpoint` also accepted).
    #[arg(long)]
    teacher: PathBuf,
    /// Fashion-MNIST folder with the four idx .gz files.
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// GDD-I freezing level 0..3 (0 = GDD).
    #[arg(long, default_value_t = 0)]
    freeze: u8,
    #[arg(long)]
    kimg: f64,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long, default_value_t = 1e-4)]
    dlr: f64,
    /// ns (non-saturating) or hinge.
    #[arg(long, default_value = "ns")]
    loss: String,
    #[arg(long, default_value_t = 1e-4)]
    r1_gamma: f64,
    #[arg(long, default_value_t = 16)]
    r1_interval: usize,
    /// EMA half-life in kimg (reference: 500) with ramp-up ratio 0.05.
    #[arg(long, default_value_t = 500.0)]
    ema_kimg: f64,
    /// Side the discriminator resizes images to (reference: 224).
    #[arg(long, default_value_t = 224)]
    d_res: usize,
    /// Class-conditional (uses the dataset labels and the teacher's label_dim).
    #[arg(long)]
    cond: bool,
    /// f32, f16 or bf16 (half types on CUDA only).
    #[arg(long, default_value = "f32")]
    precision: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images.
    #[arg(long)]
    limit: Option<usize>,
    /// EfficientNet-Lite0 .pth (default: the cached asset `efficientnet-lite0`).
    #[arg(long)]
    effnet: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 100)]
    grid_every: u64,
    /// FID of the EMA generator every N steps (0 = only at the end; needs the Inception asset).
    #[arg(long, default_value_t = 0)]
    fid_every: u64,
    #[arg(long, default_value_t = 1000)]
    fid_num: usize,
    #[arg(long, default_value_t = 5000)]
    fid_ref_num: usize,
    /// Skip FID entirely.
    #[arg(long)]
    no_fid: bool,
    #[command(flatten)]
    parallel: parallel::ParallelArgs,
    /// Discriminator batch-norm statistics over groups of this many samples (0: each device's whole
    /// share). The reference normalises per GPU: batch / its GPU count reproduces that.
    #[arg(long, default_value_t = 0)]
    d_batch_group: usize,
}

fn main() {
    let cli = Cli::parse();
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
            Command::Sample {
                net,
                heun_steps,
                num,
                seed,
                out,
            } => {
                // A grid written over the network's own files would destroy it (issue 21).
                formats::check_output(&out, [&net])?;
                let net = load_net::<B>(&net, device)?;
                let x = eval::draw(
                    &net,
                    sampler(heun_steps, OneStep::default().eps),
                    seed,
                    num,
                    device,
                )?;
                eval::write_grid(x, (num as f64).sqrt().ceil() as usize, &out)?;
                eprintln!("wrote {}", out.display());
                Ok(())
            }
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
                let ds = ImageDataset::fashion_mnist(&data, true, res, Some(ref_num))?;
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
            Command::Analyze { teacher, out, num } => {
                let net = load_net::<B>(&teacher, device)?;
                std::fs::create_dir_all(&out)?;
                let report = dist_distill::analyze::innate_one_step(&net, num, 0, device)?;
                report.write(&out)?;
                eprintln!("wrote {}/innate.{{md,json,png}}", out.display());
                Ok(())
            }
        }
    }
}

fn train<B: Backend>(a: TrainArgs, device: &B::Device) -> Result<()> {
    let loss: LossType = a.loss.parse().map_err(anyhow::Error::msg)?;
    if a.freeze > 3 {
        bail!("--freeze must be 0..3");
    }
    // The run folder must not be (or lie inside) the data, the teacher or the backbone (issue 21).
    formats::check_output(
        &a.out,
        [Some(&a.data), Some(&a.teacher), a.effnet.as_ref()]
            .into_iter()
            .flatten(),
    )?;
    let teacher = load_net::<Autodiff<B>>(&a.teacher, device)?;
    let backbone = EfficientNetLite0::<Autodiff<B>>::load(a.effnet.as_deref(), device)?;
    let res = teacher.config.img_resolution;
    let data = ImageDataset::fashion_mnist(&a.data, true, res, a.limit)?;
    let config = GddConfig {
        batch_size: a.batch,
        total_kimg: a.kimg,
        lr: a.lr,
        dlr: a.dlr,
        loss,
        r1_gamma: a.r1_gamma,
        r1_interval: a.r1_interval,
        ema_halflife_kimg: a.ema_kimg,
        freeze: a.freeze,
        disc: DiscConfig {
            input_res: a.d_res,
            seed: a.seed,
            ..DiscConfig::default()
        },
        seed: a.seed,
        cond: a.cond,
        precision: a.precision.clone(),
        d_batch_group: a.d_batch_group,
        ..GddConfig::default()
    };
    let fid = if a.no_fid {
        None
    } else {
        std::fs::create_dir_all(&a.out)?;
        let cache = a.out.join("ref_stats.npz");
        let ds = ImageDataset::fashion_mnist(&a.data, true, res, Some(a.fid_ref_num))?;
        if !cache.exists() {
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
        teacher, backbone, config, &data, &options, device, on_event,
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
    Ok(())
}
