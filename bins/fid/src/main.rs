//! `fid`: EDM-compatible FID from the command line.
//!
//! ```text
//! fid features --images PATH --output OUT.safetensors   # pool3 [N, 2048], rows in sorted file order
//! fid ref      --data PATH --dest REF.npz               # EDM reference statistics (mu, sigma)
//! fid calc     --images PATH --ref REF.npz [--num 50000] [--json]
//! fid frechet  A.npz B.npz [--json]
//! fid eval     --images PATH [--ref REF.npz] [--real PATH] [--output-layer W.safetensors]
//!              [--pr-real F.safetensors --pr-gen F.safetensors] [--json]   # FID, IS, precision/recall
//! fid completions bash                                  # shell completion script
//! ```
//! Results go to stdout (a bare number, or one JSON object with `--json`); progress and speed to
//! stderr.
//! PATH: an image folder (PNG/JPEG, recursive), an EDM dataset zip, an idx3-ubyte file (Fashion-MNIST)
//! or CIFAR-10's python tarball.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::{Parser, Subcommand};
use device::{BackendTask, DeviceKind};
use fid::evaluator::{dataset_features, dataset_stats};
use fid::inception::FEATURE_DIM;
use fid::{frechet_distance, Dataset, FidError, InceptionV3, RefStats};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "fid",
    version,
    about = "FID equal to EDM's fid.py (TF-Inception 2015-12-05)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where to run the network.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu, global = true)]
    device: DeviceKind,
    /// Images per network batch.
    #[arg(long, default_value_t = 64, global = true)]
    batch: usize,
    /// The network: TorchScript `default_1.pt` or its tensors as `.safetensors` (default: the
    /// `inception-2015-12-05` asset, fetched if missing).
    #[arg(long, global = true)]
    inception: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Write pool3 features of every image to a safetensors file (key `pool3`, f32 [N, 2048]).
    Features {
        /// Images: a folder (PNG/JPEG, recursive), an EDM dataset zip, an idx3-ubyte file or
        /// CIFAR-10's python tarball.
        #[arg(long)]
        images: PathBuf,
        /// The safetensors file to write.
        #[arg(long)]
        output: PathBuf,
        /// Only the first N images.
        #[arg(long)]
        num: Option<usize>,
    },
    /// Compute reference statistics of a dataset (all images) and save them as EDM's .npz.
    Ref {
        /// The dataset (any form `--images` takes).
        #[arg(long)]
        data: PathBuf,
        /// The .npz to write (`mu`, `sigma`, as EDM's fid.py ref).
        #[arg(long)]
        dest: PathBuf,
    },
    /// FID of --num images against reference statistics (EDM's rules: 50,000 by default, fewer images
    /// is an error, more images means a seeded random subset exactly as EDM's dataset picks it).
    Calc {
        /// Generated images (any form `features --images` takes).
        #[arg(long)]
        images: PathBuf,
        /// Reference statistics (.npz with `mu`, `sigma`: `fid ref` or EDM's).
        #[arg(long = "ref")]
        reference: PathBuf,
        /// Images to use (EDM: 50,000).
        #[arg(long, default_value_t = fid::EDM_NUM_IMAGES)]
        num: usize,
        /// Seed for choosing --num images when there are more (EDM's `--seed`).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print `{"fid", "num", "images", "ref", "seconds"}` as one JSON object instead of the number.
        #[arg(long)]
        json: bool,
    },
    /// FID, Inception Score and precision/recall of generated images in one pass (StyleGAN3's
    /// metric suite); each metric runs when its inputs are given, the JSON says which did not.
    Eval(EvalArgs),
    /// Fréchet distance between two statistics files.
    Frechet {
        /// First statistics file (.npz).
        a: PathBuf,
        /// Second statistics file (.npz).
        b: PathBuf,
        /// Print `{"frechet", "a", "b"}` as one JSON object instead of the number.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (e.g. `fid completions bash > /etc/bash_completion.d/fid`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `fid eval`: what each metric needs is optional; at least one metric must be computable.
#[derive(clap::Args)]
struct EvalArgs {
    /// Generated images (any form `features --images` takes).
    #[arg(long)]
    images: PathBuf,
    /// Reference statistics for FID (.npz with `mu`, `sigma`: `fid ref` or EDM's).
    #[arg(long = "ref")]
    reference: Option<PathBuf>,
    /// Real images: FID against their statistics when --ref is absent, and precision/recall on
    /// their pool3 features when --pr-real/--pr-gen are absent.
    #[arg(long)]
    real: Option<PathBuf>,
    /// Generated images to use (EDM: 50,000; more in --images: EDM's seeded subset).
    #[arg(long, default_value_t = fid::EDM_NUM_IMAGES)]
    num: usize,
    /// Seed for choosing --num images when there are more (EDM's `--seed`).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Real images to use (the first ones).
    #[arg(long, default_value_t = fid::EDM_NUM_IMAGES)]
    real_num: usize,
    /// TF-Inception's output layer [1008, 2048] (safetensors: `output.weight` or a single tensor,
    /// e.g. from StyleGAN3's inception-2015-12-05.pkl): enables the Inception Score.
    #[arg(long)]
    output_layer: Option<PathBuf>,
    /// Splits of the Inception Score.
    #[arg(long, default_value_t = 10)]
    is_splits: usize,
    /// Real images' features for precision/recall (safetensors, one [n, dim] tensor; StyleGAN3:
    /// VGG16 fc7). With --pr-gen.
    #[arg(long, requires = "pr_gen")]
    pr_real: Option<PathBuf>,
    /// Generated images' features for precision/recall, as --pr-real.
    #[arg(long, requires = "pr_real")]
    pr_gen: Option<PathBuf>,
    /// Neighbourhood size k of precision/recall.
    #[arg(long, default_value_t = 3)]
    pr_k: usize,
    /// Print the report as one JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    refuse_outputs_over_inputs(&cli)?;
    match &cli.command {
        Command::Frechet { a, b, json } => {
            let d = frechet_distance(&RefStats::load_npz(a)?, &RefStats::load_npz(b)?)?;
            if *json {
                println!("{}", serde_json::json!({"frechet": d, "a": a, "b": b}));
            } else {
                println!("{d}");
            }
            return Ok(());
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut Cli::command(), "fid", &mut std::io::stdout());
            return Ok(());
        }
        _ => {}
    }
    device::dispatch(cli.device, Task(&cli))?
}

/// The parsed command line, run on the backend `--device` chose.
struct Task<'a>(&'a Cli);

impl BackendTask for Task<'_> {
    type Output = Result<()>;
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        run::<B>(self.0, device)
    }
}

fn load_network<B: Backend>(cli: &Cli, device: &B::Device) -> Result<InceptionV3<B>> {
    let path = match &cli.inception {
        Some(p) => p.clone(),
        None => assets::fetch(fid::INCEPTION_ASSET)
            .with_context(|| format!("fetching the {} asset", fid::INCEPTION_ASSET))?,
    };
    Ok(InceptionV3::load(&path, device)?)
}

fn progress(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

fn report_speed(n: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{n} images in {secs:.1} s: {:.2} images/s",
        n as f64 / secs.max(1e-9)
    );
}

fn open(path: &Path) -> Result<Dataset> {
    let ds = Dataset::open(path)?;
    if ds.is_empty() {
        bail!("{}: no images found", path.display());
    }
    let skipped = ds.skipped();
    if skipped.loops + skipped.duplicates > 0 {
        eprintln!(
            "{}: read {} images; skipped {} link(s) to folders already read and {} duplicate \
             file(s) (links to the same image)",
            path.display(),
            ds.len(),
            skipped.loops,
            skipped.duplicates
        );
    }
    Ok(ds)
}

fn run<B: Backend>(cli: &Cli, device: B::Device) -> Result<()> {
    let net = load_network::<B>(cli, &device)?;
    match &cli.command {
        Command::Features {
            images,
            output,
            num,
        } => {
            let mut ds = open(images)?;
            let n = num.unwrap_or(ds.len()).min(ds.len());
            let bar = progress(n, "features");
            let started = Instant::now();
            let mut rows: Vec<f32> = Vec::with_capacity(n * FEATURE_DIM);
            dataset_features(&net, &mut ds, n, cli.batch, &device, |f| {
                rows.extend_from_slice(f);
                bar.inc((f.len() / FEATURE_DIM) as u64);
                Ok(())
            })?;
            bar.finish();
            let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                vec![n, FEATURE_DIM],
                &bytes,
            )
            .context("building the pool3 tensor")?;
            // Through a temporary and a rename: a failed write (a full disk) leaves any old file.
            let encoded = safetensors::serialize([("pool3", view)], None)
                .context("encoding the pool3 tensor")?;
            formats::write_atomic(output, &encoded)?;
            eprintln!("wrote pool3 [{n}, {FEATURE_DIM}] to {}", output.display());
            report_speed(n, started);
        }
        Command::Ref { data, dest } => {
            let mut ds = open(data)?;
            let n = ds.len();
            let bar = progress(n, "reference");
            let started = Instant::now();
            let stats = dataset_stats(&net, &mut ds, n, cli.batch, &device, |k| bar.inc(k as u64))?;
            bar.finish();
            stats.finalize()?.save_npz(dest)?;
            eprintln!("wrote mu, sigma of {n} images to {}", dest.display());
            report_speed(n, started);
        }
        Command::Calc {
            images,
            reference: ref_path,
            num,
            seed,
            json,
        } => {
            let reference = RefStats::load_npz(ref_path)?;
            let mut ds = open(images)?;
            if ds.len() < *num {
                return Err(FidError::TooFewImages {
                    required: *num,
                    found: ds.len(),
                }
                .into());
            }
            // EDM keeps a seeded random subset of --num images when there are more.
            ds.restrict(&fid::data::subset::edm_subset(ds.len(), *num, *seed))?;
            let bar = progress(*num, "calc");
            let started = Instant::now();
            let stats = dataset_stats(&net, &mut ds, *num, cli.batch, &device, |k| {
                bar.inc(k as u64)
            })?;
            bar.finish();
            report_speed(*num, started);
            let d = frechet_distance(&stats.finalize()?, &reference)?;
            if *json {
                let seconds = started.elapsed().as_secs_f64();
                println!(
                    "{}",
                    serde_json::json!({"fid": d, "num": num, "images": images, "ref": ref_path, "seconds": seconds})
                );
            } else {
                println!("{d}");
            }
        }
        Command::Eval(a) => eval::<B>(cli, a, &net, &device)?,
        // Answered in `main` before the network is loaded.
        Command::Frechet { .. } | Command::Completions { .. } => {}
    }
    Ok(())
}

/// An output that is, or resolves to, an input (the images, the dataset, the network), or lies
/// inside an input folder, is refused before any work (#21: `fid ref --dest ds.zip --data ds.zip`
/// replaced the dataset with its statistics).
fn refuse_outputs_over_inputs(cli: &Cli) -> Result<(), formats::OutputError> {
    let network = cli.inception.iter();
    match &cli.command {
        Command::Features { images, output, .. } => {
            formats::check_output(output, network.chain([images]))
        }
        Command::Ref { data, dest } => formats::check_output(dest, network.chain([data])),
        Command::Calc { .. }
        | Command::Eval(_)
        | Command::Frechet { .. }
        | Command::Completions { .. } => Ok(()),
    }
}

/// `fid eval`: [`fid::eval::evaluate`] on the flags' inputs, the report as lines or JSON.
fn eval<B: Backend>(
    cli: &Cli,
    a: &EvalArgs,
    net: &InceptionV3<B>,
    device: &B::Device,
) -> Result<()> {
    use fid::eval::{evaluate, EvalOptions, OutputLayer, PrFeatures};
    let reference = a.reference.as_deref().map(RefStats::load_npz).transpose()?;
    let layer = a
        .output_layer
        .as_deref()
        .map(OutputLayer::load)
        .transpose()?;
    let pr = match (&a.pr_real, &a.pr_gen) {
        (Some(r), Some(g)) => Some(PrFeatures::load(r, g)?),
        _ => None,
    };
    let mut gen = open(&a.images)?;
    let mut real = a.real.as_deref().map(open).transpose()?;
    let opts = EvalOptions {
        num: a.num,
        seed: a.seed,
        real_num: a.real_num,
        batch: cli.batch,
        pr_k: a.pr_k,
        is_splits: a.is_splits,
    };
    let total = a.num + real.as_ref().map_or(0, |r| a.real_num.min(r.len()));
    let bar = progress(total, "eval");
    let started = Instant::now();
    let report = evaluate(
        net,
        &mut gen,
        real.as_mut(),
        reference.as_ref(),
        layer.as_ref(),
        pr.as_ref(),
        &opts,
        device,
        &mut |k| bar.inc(k as u64),
    )?;
    bar.finish();
    report_speed(total, started);
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["images"] = serde_json::json!(a.images);
        v["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
        println!("{v}");
        return Ok(());
    }
    if let Some(f) = report.fid {
        println!("fid {f}");
    }
    if let Some(is) = &report.inception_score {
        println!(
            "inception_score {} +- {} ({} splits)",
            is.mean, is.std, is.splits
        );
    }
    if let Some(pr) = &report.precision_recall {
        println!(
            "precision {} ({} features, k = {})",
            pr.precision, pr.features, pr.k
        );
        println!("recall {}", pr.recall);
    }
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    Ok(())
}
