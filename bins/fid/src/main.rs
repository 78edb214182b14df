//! `fid`: EDM-compatible FID from the command line.
//!
//! ```text
//! fid features --images PATH --output OUT.safetensors   # pool3 [N, 2048], rows in sorted file order
//! fid ref      --data PATH --dest REF.npz               # EDM reference statistics (mu, sigma)
//! fid calc     --images PATH --ref REF.npz [--num 50000]
//! fid frechet  A.npz B.npz
//! ```
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
        #[arg(long)]
        images: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// Only the first N images.
        #[arg(long)]
        num: Option<usize>,
    },
    /// Compute reference statistics of a dataset (all images) and save them as EDM's .npz.
    Ref {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        dest: PathBuf,
    },
    /// FID of --num images against reference statistics (EDM's rules: 50,000 by default, fewer images
    /// is an error, more images means a seeded random subset exactly as EDM's dataset picks it).
    Calc {
        #[arg(long)]
        images: PathBuf,
        #[arg(long = "ref")]
        reference: PathBuf,
        #[arg(long, default_value_t = fid::EDM_NUM_IMAGES)]
        num: usize,
        /// Seed for choosing --num images when there are more (EDM's `--seed`).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Fréchet distance between two statistics files.
    Frechet { a: PathBuf, b: PathBuf },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    refuse_outputs_over_inputs(&cli)?;
    if let Command::Frechet { a, b } = &cli.command {
        let sa = RefStats::load_npz(a)?;
        let sb = RefStats::load_npz(b)?;
        println!("{}", frechet_distance(&sa, &sb)?);
        return Ok(());
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
            reference,
            num,
            seed,
        } => {
            let reference = RefStats::load_npz(reference)?;
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
            println!("{d}");
        }
        Command::Frechet { .. } => unreachable!("handled before the network is loaded"),
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
        Command::Calc { .. } | Command::Frechet { .. } => Ok(()),
    }
}
