//! `gdd`: GDD / GDD-I one-step distillation of EDM teachers (train, sample, FID, freezing report,
//! innate one-step analysis). A thin wrapper over the dist-distill crate.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use clap::{Parser, Subcommand, ValueEnum};
use dist_distill::disc::DiscConfig;
use dist_distill::effnet::EfficientNetLite0;
use dist_distill::eval::{self, Sampler};
use dist_distill::freeze::FreezeReport;
use dist_distill::generator::OneStep;
use dist_distill::loss::LossType;
use dist_distill::train::{GddConfig, GddTrainer};
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

#[derive(Clone, Copy, ValueEnum)]
enum DeviceKind {
    Cpu,
    Cuda,
}

#[derive(Subcommand)]
enum Command {
    /// Distil a one-step generator from an EDM teacher (resumes from OUT/checkpoint if present).
    Train(TrainArgs),
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
    /// Data-parallel over this many devices of the chosen kind (CUDA: devices 0..N), one process;
    /// each step's batch is split across them and the gradients summed on device 0.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Discriminator batch-norm statistics over groups of this many samples (0: each device's whole
    /// share). The reference normalises per GPU: batch / its GPU count reproduces that.
    #[arg(long, default_value_t = 0)]
    d_batch_group: usize,
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.device {
        DeviceKind::Cpu => run::<Flex>(cli.command, &Default::default()),
        DeviceKind::Cuda => {
            #[cfg(feature = "cuda")]
            {
                run::<burn::backend::Cuda>(cli.command, &Default::default())
            }
            #[cfg(not(feature = "cuda"))]
            {
                Err(anyhow::anyhow!("built without the `cuda` feature"))
            }
        }
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(match e.downcast_ref::<DistillError>() {
            Some(DistillError::NonFinite { .. }) => 3,
            _ => 1,
        });
    }
}

fn teacher_dir(p: &Path) -> PathBuf {
    if p.join("config.json").exists() {
        p.to_path_buf()
    } else if p.join("checkpoint/config.json").exists() {
        p.join("checkpoint")
    } else {
        p.to_path_buf()
    }
}

fn load_net<B: Backend>(p: &Path, device: &B::Device) -> Result<EdmPrecond<B>> {
    let dir = teacher_dir(p);
    edm_core::load_precond(&dir, device)
        .with_context(|| format!("loading EDM network from {}", dir.display()))
}

fn bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    pb
}

fn ref_stats<B: Backend>(
    inception: &fid::InceptionV3<B>,
    data: &ImageDataset,
    num: usize,
    cache: Option<&Path>,
    device: &B::Device,
) -> Result<fid::RefStats> {
    if let Some(c) = cache {
        if c.exists() {
            return Ok(fid::RefStats::load_npz(c)?);
        }
    }
    eprintln!(
        "computing reference statistics of {} images...",
        num.min(data.len)
    );
    let s = eval::reference_stats(inception, data, num, 50, device)?;
    if let Some(c) = cache {
        s.save_npz(c)?;
    }
    Ok(s)
}

fn run<B: Backend>(cmd: Command, device: &B::Device) -> Result<()> {
    match cmd {
        Command::Train(a) => train::<B>(a, device),
        Command::Sample {
            net,
            heun_steps,
            num,
            seed,
            out,
        } => {
            let net = load_net::<B>(&net, device)?;
            let sampler = if heun_steps == 0 {
                Sampler::OneStep(OneStep::default())
            } else {
                Sampler::Heun(heun_steps)
            };
            let x = eval::draw(&net, sampler, seed, num, device)?;
            let cols = (num as f64).sqrt().ceil() as usize;
            eval::write_grid(x, cols, &out)?;
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
            let ds =
                ImageDataset::fashion_mnist(&data, true, net.config.img_resolution, Some(ref_num))?;
            let inception = eval::load_inception::<B>(device)?;
            let stats = ref_stats(&inception, &ds, ref_num, ref_cache.as_deref(), device)?;
            let evaluator = fid::FidEvaluator::new(inception, stats)?;
            let sampler = if heun_steps == 0 {
                Sampler::OneStep(OneStep {
                    eps,
                    ..OneStep::default()
                })
            } else {
                Sampler::Heun(heun_steps)
            };
            let t0 = std::time::Instant::now();
            let f = eval::fid_of_net(&evaluator, &net, sampler, num, batch, device)?;
            println!(
                "{}",
                serde_json::json!({"fid": f, "num": num, "ref_num": ref_num, "heun_steps": heun_steps, "eps": eps, "seconds": t0.elapsed().as_secs_f64()})
            );
            Ok(())
        }
        Command::ReportFreeze { teacher, json } => {
            let net = match teacher {
                Some(t) => load_net::<B>(&t, device)?,
                None => EdmPrecond::<B>::init(&ncsnpp_cifar10(), 0, device)?,
            };
            let params = net.named_parameters();
            println!("| freeze | keywords | total | trainable | frozen | frozen % |");
            println!("|---|---|---|---|---|---|");
            let mut reports = Vec::new();
            for level in 0..=3u8 {
                let r =
                    FreezeReport::new(params.iter().map(|t| (t.name.as_str(), t.numel())), level);
                println!("{}", r.markdown_row());
                reports.push(r);
            }
            if let Some(j) = json {
                std::fs::write(&j, serde_json::to_vec_pretty(&reports)?)?;
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

/// EDM's `ncsnpp` CIFAR-10 network as GDD's `train.py` builds it (32×32×3, unconditional).
fn ncsnpp_cifar10() -> EdmConfig {
    dist_distill::analyze::ncsnpp_cifar10_config()
}

fn train<B: Backend>(a: TrainArgs, device: &B::Device) -> Result<()> {
    let loss: LossType = a.loss.parse().map_err(anyhow::Error::msg)?;
    if a.freeze > 3 {
        bail!("--freeze must be 0..3");
    }
    let teacher = load_net::<Autodiff<B>>(&a.teacher, device)?;
    let effnet_path = match &a.effnet {
        Some(p) => p.clone(),
        None => assets::cached("efficientnet-lite0").context(
            "asset efficientnet-lite0 not in cache, run `cargo run --release -p assets-cli -- fetch efficientnet-lite0`",
        )?,
    };
    let backbone = EfficientNetLite0::<Autodiff<B>>::load_pth(&effnet_path, device)?;
    let data = ImageDataset::fashion_mnist(&a.data, true, teacher.config.img_resolution, a.limit)?;
    std::fs::create_dir_all(&a.out)?;
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
    let resumed = a.out.join("checkpoint/state.json").exists()
        || a.out.join("checkpoint.old/state.json").exists();
    let mut tr = if resumed {
        let mut t = GddTrainer::resume(&a.out, teacher, backbone, device)?;
        t.state.config.total_kimg = a.kimg;
        eprintln!(
            "resumed at step {} ({:.2} kimg)",
            t.state.step,
            t.state.cur_nimg as f64 / 1000.0
        );
        t
    } else {
        GddTrainer::new(teacher, backbone, config, device)?
    };
    if a.devices > 1 {
        use burn::tensor::backend::{Device as _, DeviceOps};
        let id = device.id();
        let available = <Autodiff<B> as Backend>::device_count(id.type_id);
        if a.devices > available {
            bail!(
                "--devices {}: only {available} device(s) of this kind",
                a.devices
            );
        }
        let devices: Vec<B::Device> = (0..a.devices)
            .map(|i| {
                B::Device::from_id(burn::tensor::backend::DeviceId {
                    type_id: id.type_id,
                    index_id: i as u16,
                })
            })
            .collect();
        tr.set_devices(devices)?;
        eprintln!(
            "data-parallel over {} devices: {:?}",
            a.devices,
            tr.devices()
        );
    }
    let fr = &tr.freeze_report;
    eprintln!(
        "generator: {} parameters, {} trainable, {} frozen ({:.1} %, freeze={})",
        fr.total_params, fr.trainable_params, fr.frozen_params, fr.frozen_percent, fr.level
    );
    std::fs::write(
        a.out.join("freeze_report.json"),
        serde_json::to_vec_pretty(fr)?,
    )?;
    std::fs::write(
        a.out.join("config.json"),
        serde_json::to_vec_pretty(&tr.state.config)?,
    )?;

    let evaluator = if a.no_fid {
        None
    } else {
        let inception = eval::load_inception::<B>(device)?;
        let ds = ImageDataset::fashion_mnist(
            &a.data,
            true,
            tr.g.config.img_resolution,
            Some(a.fid_ref_num),
        )?;
        let stats = ref_stats(
            &inception,
            &ds,
            a.fid_ref_num,
            Some(&a.out.join("ref_stats.npz")),
            device,
        )?;
        Some(fid::FidEvaluator::new(inception, stats)?)
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.out.join("metrics.jsonl"))?;
    let total = tr.state.config.total_steps();
    let pb = bar(total);
    pb.set_position(tr.state.step);
    let grid_seeds: Vec<u64> = (0..64).collect();
    let run_fid = |tr: &GddTrainer<Autodiff<B>>, log: &mut std::fs::File| -> Result<()> {
        if let Some(ev) = &evaluator {
            let t0 = std::time::Instant::now();
            let one = tr.state.config.one_step()?;
            let f = eval::fid_of_net(ev, &tr.ema, Sampler::OneStep(one), a.fid_num, 50, device)?;
            let rec = serde_json::json!({"step": tr.state.step, "kimg": tr.state.cur_nimg as f64 / 1000.0, "fid_ema": f, "fid_num": a.fid_num, "fid_seconds": t0.elapsed().as_secs_f64()});
            writeln!(log, "{rec}")?;
            eprintln!("step {}: FID {f:.2} ({} samples)", tr.state.step, a.fid_num);
        }
        Ok(())
    };
    let started = std::time::Instant::now();
    if tr.state.step == 0 {
        eval::write_grid(
            tr.sample_ema(&grid_seeds, None),
            8,
            &a.out.join("grid-000000.png"),
        )?;
        run_fid(&tr, &mut log)?;
    }
    while tr.state.step < total {
        let m = match tr.step(&data) {
            Ok(m) => m,
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
        writeln!(log, "{}", serde_json::to_string(&m)?)?;
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
        let s = tr.state.step;
        if s.is_multiple_of(a.grid_every.max(1)) || s == total {
            eval::write_grid(
                tr.sample_ema(&grid_seeds, None),
                8,
                &a.out.join(format!("grid-{s:06}.png")),
            )?;
        }
        if s.is_multiple_of(a.checkpoint_every.max(1)) || s == total {
            tr.checkpoint(&a.out)?;
        }
        if (a.fid_every > 0 && s.is_multiple_of(a.fid_every)) || s == total {
            run_fid(&tr, &mut log)?;
        }
    }
    pb.finish();
    let _ = tr.g.valid();
    eprintln!(
        "done: {} steps, {:.2} kimg in {:.1}s; EMA generator in {}",
        tr.state.step,
        tr.state.cur_nimg as f64 / 1000.0,
        started.elapsed().as_secs_f64(),
        a.out.join("checkpoint/ema").display()
    );
    Ok(())
}
