//! FID of an image folder against another folder or a statistics file, with the `fid` crate.
//!
//! The pipeline is EDM's `fid.py`: each image (uint8) is resized to 299×299 the StyleGAN3 way and
//! run through TF-Inception 2015-12-05; the 2048-d pool3 features give a mean and covariance; FID
//! is the Fréchet distance between two such Gaussians. Reference statistics can be a second
//! folder (or zip, idx file, CIFAR-10 tarball: anything [`fid::Dataset::open`] reads) or an
//! `.npz` with `mu` and `sigma` (EDM's `fid-refs/*.npz`, or one this example wrote with
//! `--save-stats`).
//!
//! ```sh
//! cargo run --release -p example-fid-folders -- samples/ reference/ --save-stats samples.npz
//! cargo run --release -p example-fid-folders -- more_samples/ samples.npz
//! ```
//!
//! The network is the `inception-2015-12-05` asset (`assets fetch inception-2015-12-05`), or a file
//! given with `--inception`. `--random-inception SEED` uses the same architecture with random
//! weights: the numbers are then not FID, but every step runs without the 87 MB file (the example's
//! test uses it).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use burn::tensor::Device;
use clap::Parser;
use fid::{dataset_stats, frechet_distance, Dataset, InceptionV3, RefStats};

/// burn's CPU backend; the same code runs on CUDA with `burn::backend::Cuda`.
type B = Flex;

#[derive(Parser)]
#[command(about = "FID of an image folder against another folder or an .npz of statistics")]
struct Args {
    /// The images to score: a folder of PNG/JPEG (recursive), a dataset zip, ...
    images: PathBuf,
    /// The reference: another image source, or an `.npz` with `mu` and `sigma`.
    reference: PathBuf,
    /// TF-Inception file (`default_1.pt`, or `.safetensors`); default: the cached asset.
    #[arg(long, conflicts_with = "random_inception")]
    inception: Option<PathBuf>,
    /// Random Inception weights from this seed (a smoke test: the number is not FID).
    #[arg(long)]
    random_inception: Option<u64>,
    /// Use at most this many images of each source (default: all).
    #[arg(long)]
    num: Option<usize>,
    /// Images per network call.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Also write the statistics of IMAGES to this `.npz`, to score against later.
    #[arg(long)]
    save_stats: Option<PathBuf>,
}

fn inception(args: &Args, device: &Device<B>) -> Result<InceptionV3<B>> {
    if let Some(seed) = args.random_inception {
        eprintln!("warning: random Inception weights (seed {seed}); the result is not FID");
        return Ok(InceptionV3::random(seed, device));
    }
    let path = match &args.inception {
        Some(p) => p.clone(),
        None => assets::cached(fid::INCEPTION_ASSET).with_context(|| {
            format!(
                "the {0} asset is not cached: run `cargo run --release -p assets-cli -- fetch {0}` \
                 or give --inception",
                fid::INCEPTION_ASSET
            )
        })?,
    };
    InceptionV3::load(&path, device).with_context(|| format!("loading {}", path.display()))
}

/// Mean and covariance of the pool3 features of an image source.
fn stats_of(
    net: &InceptionV3<B>,
    path: &Path,
    args: &Args,
    device: &Device<B>,
) -> Result<RefStats> {
    let mut data = Dataset::open(path)?;
    let num = args.num.unwrap_or(usize::MAX).min(data.len());
    if num < 2 {
        bail!(
            "{}: {num} images; a covariance needs at least 2",
            path.display()
        );
    }
    let mut done = 0;
    let stats = dataset_stats(net, &mut data, num, args.batch, device, |n| {
        done += n;
        eprint!("\r{}: {done}/{num} images", path.display())
    })?;
    eprintln!();
    Ok(stats.finalize()?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = Default::default();
    let net = inception(&args, &device)?;

    let images = stats_of(&net, &args.images, &args, &device)?;
    if let Some(out) = &args.save_stats {
        images.save_npz(out)?;
        println!(
            "statistics of {} written to {}",
            args.images.display(),
            out.display()
        );
    }
    let is_npz = args.reference.extension().is_some_and(|e| e == "npz");
    let reference = if is_npz {
        RefStats::load_npz(&args.reference)?
    } else {
        stats_of(&net, &args.reference, &args, &device)?
    };
    let fid = frechet_distance(&images, &reference)?;
    println!("FID {fid:.6}");
    Ok(())
}
