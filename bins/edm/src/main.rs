//! `edm`: denoise, sample and train EDM networks from the command line (thin wrapper over edm-core).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use clap::{Parser, Subcommand, ValueEnum};
use edm_core::{
    load_precond, nfe, parse_seeds, read_safetensors, sample, write_safetensors, EdmConfig,
    ImageDataset, ModelType, Precision, SamplerConfig, Solver, StackedRng, TrainOptions,
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

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum DeviceKind {
    Cpu,
    Cuda,
}

#[derive(Subcommand)]
enum Command {
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
    match cli.device {
        DeviceKind::Cpu => run::<Flex>(cli.command, &Default::default(), false),
        DeviceKind::Cuda => {
            #[cfg(feature = "cuda")]
            {
                run::<burn::backend::Cuda>(cli.command, &Default::default(), true)
            }
            #[cfg(not(feature = "cuda"))]
            bail!("this `edm` was built without CUDA; rebuild with `--features cuda`")
        }
    }
}

fn tensor<B: Backend, const D: usize>(
    t: &edm_core::HostTensor,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("float tensor")
}

fn precision(config: &EdmConfig, fp16: bool, cuda: bool) -> Precision {
    if fp16 && config.use_fp16 && cuda {
        Precision::F16
    } else {
        Precision::F32
    }
}

fn run<B: Backend>(command: Command, device: &B::Device, cuda: bool) -> Result<()> {
    match command {
        Command::Denoise {
            model,
            input,
            output,
            fp16,
        } => {
            let net = load_precond::<B>(&model, device)
                .with_context(|| format!("loading {}", model.display()))?;
            let net = {
                let p = precision(&net.config, fp16, cuda);
                net.with_precision(p)
            };
            let inp = read_safetensors(&input)?;
            let x = inp.get("x").context("input has no tensor `x`")?;
            let sigma = inp.get("sigma").context("input has no tensor `sigma`")?;
            if x.shape.len() != 4 || sigma.shape != [x.shape[0]] {
                bail!(
                    "`x` must be [N,C,H,W] and `sigma` [N]; got {:?} and {:?}",
                    x.shape,
                    sigma.shape
                );
            }
            let labels = match inp.get("class_labels") {
                Some(l) if net.config.label_dim > 0 => {
                    if l.shape != [x.shape[0], net.config.label_dim] {
                        bail!(
                            "`class_labels` must be [N, {}], got {:?}",
                            net.config.label_dim,
                            l.shape
                        );
                    }
                    Some(tensor::<B, 2>(l, device))
                }
                _ => None,
            };
            let out = net.forward(
                tensor::<B, 4>(x, device),
                tensor::<B, 1>(sigma, device),
                labels,
            );
            write_safetensors(
                &output,
                &[("denoised".into(), x.shape.clone(), to_vec(out))],
            )?;
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
            let net = load_precond::<B>(&model, device)
                .with_context(|| format!("loading {}", model.display()))?;
            let net = {
                let p = precision(&net.config, fp16, cuda);
                net.with_precision(p)
            };
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
            let c = &net.config;
            let (ch, res, label_dim) = (c.img_channels, c.img_resolution, c.label_dim);
            if let Some(k) = class {
                if k >= label_dim {
                    bail!("--class {k} but the network has label_dim {label_dim}");
                }
            }
            let onehot = |k: usize| {
                let mut v = vec![0f32; label_dim];
                v[k] = 1.0;
                v
            };

            // (latents, labels, names, per-image seeds for the stochastic sampler)
            let (z_all, labels_all, names, seed_list): (
                Vec<f32>,
                Option<Vec<f32>>,
                Vec<String>,
                Vec<u64>,
            ) = if let Some(path) = &latents {
                let f = read_safetensors(path)?;
                let z = f
                    .get("latents")
                    .context("latents file has no tensor `latents`")?;
                if z.shape.len() != 4 || z.shape[1..] != [ch, res, res] {
                    bail!("`latents` must be [N,{ch},{res},{res}], got {:?}", z.shape);
                }
                let n = z.shape[0];
                let labels = if label_dim == 0 {
                    None
                } else if let Some(k) = class {
                    Some((0..n).flat_map(|_| onehot(k)).collect())
                } else {
                    match f.get("class_labels") {
                        Some(l) if l.shape == [n, label_dim] => Some(l.data.clone()),
                        Some(l) => bail!(
                            "`class_labels` must be [{n}, {label_dim}], got {:?}",
                            l.shape
                        ),
                        None => None,
                    }
                };
                let names = (0..n).map(|i| format!("{i:06}")).collect();
                (z.data.clone(), labels, names, (0..n as u64).collect())
            } else {
                let seeds = parse_seeds(&seeds)?;
                let mut rng = StackedRng::new(&seeds);
                let z = to_vec(rng.randn::<B>([ch, res, res], device));
                let labels = if label_dim == 0 {
                    None
                } else {
                    let classes = match class {
                        Some(k) => vec![k; seeds.len()],
                        None => rng.randint(label_dim),
                    };
                    Some(classes.into_iter().flat_map(onehot).collect())
                };
                let names = seeds.iter().map(|s| format!("seed{s:06}")).collect();
                (z, labels, names, seeds)
            };

            let n = names.len();
            let per = ch * res * res;
            let batch = batch.max(1);
            let pb = ProgressBar::new((n.div_ceil(batch) * nfe(solver, steps)) as u64);
            pb.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} NFE [{elapsed_precise} < {eta_precise}] {msg}",
                )
                .expect("valid template"),
            );
            let mut samples = Vec::with_capacity(n * per);
            for start in (0..n).step_by(batch) {
                let end = (start + batch).min(n);
                let m = end - start;
                let z = Tensor::<B, 4>::from_data(
                    TensorData::new(z_all[start * per..end * per].to_vec(), [m, ch, res, res]),
                    device,
                );
                let labels = labels_all.as_ref().map(|l| {
                    Tensor::<B, 2>::from_data(
                        TensorData::new(
                            l[start * label_dim..end * label_dim].to_vec(),
                            [m, label_dim],
                        ),
                        device,
                    )
                });
                let mut noise = StackedRng::new(
                    &seed_list[start..end]
                        .iter()
                        .map(|s| s ^ 0x5EED)
                        .collect::<Vec<_>>(),
                );
                let per_step = if solver == Solver::Euler || solver == Solver::OneStep {
                    1
                } else {
                    2
                };
                let out = sample(
                    &net,
                    z,
                    labels,
                    solver,
                    &cfg,
                    Some(&mut noise),
                    &mut |i, _| {
                        pb.inc(if i == steps { 1 } else { per_step });
                    },
                )?;
                samples.extend(to_vec(out));
                pb.set_message(format!("{end}/{n} images"));
            }
            pb.finish();
            write_safetensors(
                &output,
                &[("samples".into(), vec![n, ch, res, res], samples.clone())],
            )?;
            eprintln!(
                "wrote {} ({} images, sigma_max {})",
                output.display(),
                n,
                cfg.clamped(&net).1
            );
            if let Some(dir) = png {
                write_pngs(&dir, &samples, &names, ch, res)?;
                eprintln!("wrote {} PNGs and grid.png to {}", n, dir.display());
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
            let label_dim = if cond { 10 } else { 0 };
            let config = match arch.as_str() {
                "tiny" => EdmConfig::tiny(ModelType::SongUNet, 32, 1, label_dim),
                "ddpmpp" => {
                    let mut c = EdmConfig::ddpmpp_cifar10();
                    c.img_channels = 1;
                    c.label_dim = label_dim;
                    c.augment_dim = 0;
                    c
                }
                path => EdmConfig::from_file(path)?,
            };
            let dataset = ImageDataset::fashion_mnist(&data, true, config.img_resolution, limit)
                .with_context(|| format!("reading Fashion-MNIST from {}", data.display()))?;
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
            let total = options.total_steps();
            let pb = ProgressBar::new(total as u64);
            pb.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}",
                )
                .expect("valid template"),
            );
            let started = std::time::Instant::now();
            let mut ema_loss = f64::NAN;
            let trainer = edm_core::train::<Autodiff<B>>(
                &config,
                &dataset,
                options,
                &out,
                device,
                &mut |r| {
                    ema_loss = if ema_loss.is_nan() {
                        r.loss
                    } else {
                        0.98 * ema_loss + 0.02 * r.loss
                    };
                    pb.set_position(r.step as u64);
                    pb.set_message(format!(
                        "loss {:.4} (avg {:.4}) lr {:.2e} {:.1} kimg",
                        r.loss,
                        ema_loss,
                        r.lr,
                        r.cur_nimg as f64 / 1000.0
                    ));
                },
            )?;
            pb.finish();
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

/// EDM's image conversion: (x·127.5 + 128) clipped to [0, 255], one PNG per image plus a grid.
fn write_pngs(dir: &Path, samples: &[f32], names: &[String], ch: usize, res: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let per = ch * res * res;
    let to_u8 = |v: f32| (v * 127.5 + 128.0).clamp(0.0, 255.0) as u8;
    let n = names.len();
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols);
    let mut grid = image::RgbImage::new((cols * res) as u32, (rows * res) as u32);
    for (i, name) in names.iter().enumerate() {
        let img = &samples[i * per..(i + 1) * per];
        let mut rgb = image::RgbImage::new(res as u32, res as u32);
        for y in 0..res {
            for x in 0..res {
                let px = |c: usize| to_u8(img[c.min(ch - 1) * res * res + y * res + x]);
                let p = if ch >= 3 {
                    [px(0), px(1), px(2)]
                } else {
                    [px(0); 3]
                };
                rgb.put_pixel(x as u32, y as u32, image::Rgb(p));
                grid.put_pixel(
                    ((i % cols) * res + x) as u32,
                    ((i / cols) * res + y) as u32,
                    image::Rgb(p),
                );
            }
        }
        if ch == 1 {
            image::DynamicImage::ImageRgb8(rgb)
                .to_luma8()
                .save(dir.join(format!("{name}.png")))?;
        } else {
            rgb.save(dir.join(format!("{name}.png")))?;
        }
    }
    grid.save(dir.join("grid.png"))?;
    Ok(())
}
