//! `edm`: denoise, sample and train EDM networks from the command line. Argument parsing over
//! edm-core: [`edm_core::denoise_file`], [`edm_core::sample_latents`], [`edm_core::train`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::{Parser, Subcommand};
use device::{BackendTask, DeviceKind};
use edm_core::{
    load_precond, nfe, parse_seeds, write_safetensors, EdmConfig, EdmPrecond, ImageDataset,
    Latents, Precision, SamplerConfig, Solver, TrainOptions,
};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "edm",
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
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// Run the U-Net in float16 when the config says `use_fp16` (CUDA only, like EDM).
        #[arg(long)]
        fp16: bool,
    },
    /// Generate images with EDM's samplers; OUT gets `samples` [N,C,H,W].
    Sample {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value = "heun")]
        solver: String,
        #[arg(long, default_value_t = 18)]
        steps: usize,
        /// Read `latents` (and `class_labels` if present) from this safetensors file.
        #[arg(long, conflicts_with = "seeds")]
        latents: Option<PathBuf>,
        /// Seeds, e.g. 0-63 or 1,2,5-10 (one image per seed, reproducible).
        #[arg(long, default_value = "0-15")]
        seeds: String,
        /// Class label for every image (conditional networks); random per seed if omitted.
        #[arg(long)]
        class: Option<usize>,
        #[arg(long)]
        output: PathBuf,
        /// Write one PNG per image and grid.png into this folder.
        #[arg(long)]
        png: Option<PathBuf>,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 0.002)]
        sigma_min: f64,
        #[arg(long, default_value_t = 80.0)]
        sigma_max: f64,
        #[arg(long, default_value_t = 7.0)]
        rho: f64,
        #[arg(long, default_value_t = 0.0)]
        s_churn: f64,
        #[arg(long, default_value_t = 0.0)]
        s_min: f64,
        #[arg(long, default_value_t = f64::INFINITY)]
        s_max: f64,
        #[arg(long, default_value_t = 1.0)]
        s_noise: f64,
        #[arg(long)]
        fp16: bool,
    },
    /// Train an EDM network (EDM loss, Adam, EMA) on Fashion-MNIST padded to 32x32; resumable.
    Train {
        /// Folder with Fashion-MNIST's four idx .gz files (`assets-cli fetch fashion-mnist`).
        #[arg(long)]
        data: PathBuf,
        /// Output folder: checkpoint/ (resumable; its config.json + model.safetensors are the EMA model).
        #[arg(long)]
        out: PathBuf,
        /// Network: `tiny` (DDPM++, 32 channels), `ddpmpp` (EDM's CIFAR-10 DDPM++) or a config.json path.
        #[arg(long, default_value = "tiny")]
        arch: String,
        /// Class-conditional (label_dim 10).
        #[arg(long)]
        cond: bool,
        #[arg(long, default_value_t = 200.0)]
        kimg: f64,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        #[arg(long, default_value_t = 10.0)]
        lr_rampup_kimg: f64,
        #[arg(long, default_value_t = 50.0)]
        ema_halflife_kimg: f64,
        #[arg(long, default_value_t = 0.05)]
        ema_rampup_ratio: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Use only the first N training images.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value_t = 200)]
        checkpoint_every: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
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
            Command::Convert { .. } => Ok(()),
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
            Command::Sample {
                model,
                solver,
                steps,
                latents,
                seeds,
                class,
                output,
                png,
                batch,
                sigma_min,
                sigma_max,
                rho,
                s_churn,
                s_min,
                s_max,
                s_noise,
                fp16,
            } => {
                let mut inputs = vec![model.clone()];
                inputs.extend(latents.iter().cloned());
                let guard = formats::OutputGuard::new(&inputs);
                guard.check(&output)?;
                if let Some(dir) = &png {
                    guard.check(dir)?;
                }
                let net = load::<B>(&model, fp16, cuda, device)?;
                let solver: Solver = solver.parse()?;
                let cfg = SamplerConfig {
                    num_steps: steps,
                    sigma_min,
                    sigma_max,
                    rho,
                    s_churn,
                    s_min,
                    s_max,
                    s_noise,
                };
                let latents = match &latents {
                    Some(path) => Latents::from_file(&net.config, path, class)?,
                    None => {
                        Latents::from_seeds::<B>(&net.config, &parse_seeds(&seeds)?, class, device)?
                    }
                };
                let n = latents.len();
                let pb = bar(
                    (n.div_ceil(batch.max(1)) * nfe(solver, steps)) as u64,
                    "NFE ",
                );
                let samples = edm_core::sample_latents(
                    &net,
                    &latents,
                    solver,
                    &cfg,
                    batch,
                    device,
                    &mut |evals, done| {
                        pb.inc(evals as u64);
                        if evals == 0 {
                            pb.set_message(format!("{done}/{n} images"));
                        }
                    },
                )?;
                pb.finish();
                let [ch, res, _] = latents.chw;
                write_safetensors(
                    &output,
                    &[("samples".into(), vec![n, ch, res, res], samples.clone())],
                )?;
                eprintln!(
                    "wrote {} ({n} images, sigma_max {})",
                    output.display(),
                    cfg.clamped(&net).1
                );
                if let Some(dir) = png {
                    edm_core::write_pngs(&dir, &samples, &latents.names, ch, res)?;
                    eprintln!("wrote {n} PNGs and grid.png to {}", dir.display());
                }
                Ok(())
            }
            Command::Train {
                data,
                out,
                arch,
                cond,
                kimg,
                batch,
                lr,
                lr_rampup_kimg,
                ema_halflife_kimg,
                ema_rampup_ratio,
                seed,
                limit,
                checkpoint_every,
            } => {
                // The run folder must not be (or lie inside) the data (issue 21).
                formats::check_output(&out, [&data])?;
                let label_dim = if cond { 10 } else { 0 };
                let config = match EdmConfig::fashion_mnist(&arch, label_dim) {
                    Some(c) => c,
                    None => EdmConfig::from_file(&arch)?,
                };
                let dataset =
                    ImageDataset::fashion_mnist(&data, true, config.img_resolution, limit)
                        .with_context(|| {
                            format!("reading Fashion-MNIST from {}", data.display())
                        })?;
                let options = TrainOptions {
                    batch_size: batch,
                    total_kimg: kimg,
                    lr,
                    lr_rampup_kimg,
                    ema_halflife_kimg,
                    ema_rampup_ratio: (ema_rampup_ratio > 0.0).then_some(ema_rampup_ratio),
                    seed,
                    checkpoint_every,
                    ..Default::default()
                };
                let pb = bar(options.total_steps() as u64, "steps ");
                let started = std::time::Instant::now();
                let mut avg = f64::NAN;
                let trainer = edm_core::train::<Autodiff<B>>(
                    &config,
                    &dataset,
                    options,
                    &out,
                    device,
                    &mut |r| {
                        avg = if avg.is_nan() {
                            r.loss
                        } else {
                            0.98 * avg + 0.02 * r.loss
                        };
                        pb.set_position(r.step as u64);
                        pb.set_message(format!(
                            "loss {:.4} (avg {avg:.4}) lr {:.2e} {:.1} kimg",
                            r.loss,
                            r.lr,
                            r.cur_nimg as f64 / 1000.0
                        ));
                    },
                )?;
                pb.finish();
                // No success message without the file it names (issue 21).
                let checkpoint = out.join("checkpoint");
                if !checkpoint.join("model.safetensors").is_file() {
                    bail!(
                        "training stopped at step {} but {} holds no model",
                        trainer.state.step,
                        checkpoint.display()
                    );
                }
                eprintln!(
                    "trained to step {} ({:.1} kimg) in {:.1}s; EMA model in {}",
                    trainer.state.step,
                    trainer.state.cur_nimg as f64 / 1000.0,
                    started.elapsed().as_secs_f64(),
                    out.join("checkpoint").display()
                );
                Ok(())
            }
        }
    }
}
