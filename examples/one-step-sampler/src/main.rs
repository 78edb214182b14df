//! One-step sampling from a GDD checkpoint, as a downstream user would write it.
//!
//! GDD's generator is an EDM network evaluated once at σ = 80 on `80·z` (with GDD's ε = 2e-3 in
//! `c_skip` and `c_out`), so sampling is one network call per batch. This example:
//! 1. finds the EDM-format network in a GDD run folder (`RUN/checkpoint/ema`, what `gdd train`
//!    writes), a checkpoint folder (`…/ema`) or any EDM folder (`config.json` + `model.safetensors`;
//!    an undistilled EDM teacher is the generator at step 0);
//! 2. loads it with `edm_core::load_precond`;
//! 3. draws one standard-normal latent per seed (`dist_distill::train::sample_one_step`, the same
//!    noise `gdd train` uses for its sample grids) and runs the one-step map;
//! 4. writes `seed{NNNN}.png` per image and `grid.png` with `dist_distill::eval::write_grid`.
//!
//! ```sh
//! cargo run --release -p example-one-step-sampler -- RUN_DIR --seeds 0-15 --out samples/
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use burn::tensor::Tensor;
use clap::Parser;
use dist_distill::eval::write_grid;
use dist_distill::generator::OneStep;
use dist_distill::train::sample_one_step;

/// burn's CPU backend; the same code runs on CUDA with `burn::backend::Cuda`.
type B = Flex;

#[derive(Parser)]
#[command(about = "One-step samples from a GDD checkpoint, written as PNGs")]
struct Args {
    /// A GDD run folder, a checkpoint folder, or an EDM network folder (config.json +
    /// model.safetensors).
    net: PathBuf,
    /// Seeds, EDM style: "0-15", "1,2,5-10". One image per seed; an image depends only on its seed.
    #[arg(long, default_value = "0-7")]
    seeds: String,
    /// Class of every image (class-conditional networks; unconditional ones ignore it).
    #[arg(long)]
    class: Option<usize>,
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
}

/// The EDM-format network inside what the user pointed at: `gdd train` keeps the EMA generator
/// as `checkpoint/ema/{config.json, model.safetensors}`.
fn network_dir(p: &Path) -> Result<PathBuf> {
    for dir in [p.to_path_buf(), p.join("ema"), p.join("checkpoint/ema")] {
        if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() {
            return Ok(dir);
        }
    }
    bail!(
        "{}: no config.json + model.safetensors here, in ema/ or in checkpoint/ema/",
        p.display()
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = Default::default();

    let dir = network_dir(&args.net)?;
    let g = edm_core::load_precond::<B>(&dir, &device)
        .with_context(|| format!("loading the generator from {}", dir.display()))?;
    let c = &g.config;
    println!(
        "generator: {:?} ({}x{}x{}, {} classes) from {}",
        c.model_type,
        c.img_channels,
        c.img_resolution,
        c.img_resolution,
        c.label_dim,
        dir.display()
    );

    let seeds = edm_core::parse_seeds(&args.seeds)?;
    let labels = match args.class {
        Some(k) if c.label_dim > 0 && k >= c.label_dim => {
            bail!("--class {k}: the network has {} classes", c.label_dim)
        }
        Some(k) => Some(vec![k; seeds.len()]),
        None => None,
    };
    // σ = 80, ε = 2e-3: GDD's generator. Without `--class` a conditional network gets an all-zero
    // label vector (no class), as EDM's networks do when given no labels.
    let images: Tensor<B, 4> =
        sample_one_step(&g, &seeds, labels.as_deref(), &OneStep::default(), &device);

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // Images come out in the data range [-1, 1]; write_grid maps them to 0..255 as EDM does.
    for (i, seed) in seeds.iter().enumerate() {
        let one = images.clone().narrow(0, i, 1);
        write_grid(one, 1, &args.out.join(format!("seed{seed:04}.png")))?;
    }
    let cols = (seeds.len() as f64).sqrt().ceil() as usize;
    write_grid(images, cols, &args.out.join("grid.png"))?;
    println!(
        "wrote {} images and grid.png ({cols} columns) to {}",
        seeds.len(),
        args.out.display()
    );
    Ok(())
}
