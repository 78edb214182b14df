//! `icl-gdd-bench`: the throughput figures of the performance table (docs/performance.md), one row per
//! subcommand, printed as Markdown table rows so `scripts/gpu-check.sh` can stack them into one table.
//!
//! Every figure is the median of timed runs after warm-up, with the device synchronised around each run
//! (GPU work is asynchronous: without the sync we would time the launch, not the work).

mod timing;

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use clap::{Parser, Subcommand, ValueEnum};

mod edm;
mod gpt2;
mod icl_prompts;
mod inception;
mod parity;
mod prefill;
mod primitives;

use std::path::PathBuf;

use device::DeviceKind;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

#[derive(Parser)]
#[command(
    name = "icl-gdd-bench",
    about = "Throughput of the networks and primitives, as Markdown table rows"
)]
struct Cli {
    #[arg(long, value_enum, default_value = "cpu", global = true)]
    device: DeviceKind,
    /// Timed runs (after warm-up); the median is reported.
    #[arg(long, default_value_t = 10, global = true)]
    runs: usize,
    /// Warm-up runs (kernel compilation and autotune happen here on CUDA).
    #[arg(long, default_value_t = 2, global = true)]
    warmup: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// matmul n×n, conv3x3 (c→c channels, s×s, batch b), GroupNorm(32)+SiLU on the conv's shape.
    Primitives {
        #[arg(long, value_enum, default_value = "f32")]
        precision: Precision,
        #[arg(long, default_value_t = 4096)]
        n: usize,
        #[arg(long, default_value_t = 256)]
        channels: usize,
        #[arg(long, default_value_t = 32)]
        size: usize,
        #[arg(long, default_value_t = 256)]
        batch: usize,
    },
    /// EDM networks at their real sizes (random weights): one-step, Heun, or a training step.
    Edm {
        #[arg(long, value_enum, default_value = "ddpmpp")]
        net: edm::Net,
        #[arg(long, value_enum, default_value = "onestep")]
        mode: edm::Mode,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Sampler steps (Heun: NFE = 2·steps − 1).
        #[arg(long, default_value_t = 18)]
        steps: usize,
        #[arg(long, value_enum, default_value = "f32")]
        precision: Precision,
    },
    /// EDM's FID network: uint8 images → resize to 299 → pool3 (random weights unless --weights).
    Inception {
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Input resolution before the resize to 299 (CIFAR: 32).
        #[arg(long, default_value_t = 32)]
        resolution: usize,
        /// `default_1.pt` for the real weights (same speed; random weights need no file).
        #[arg(long)]
        weights: Option<PathBuf>,
    },
    /// GPT-2 small (124M, random weights) forward with full logits.
    Gpt2 {
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        #[arg(long, value_enum, default_value = "f32")]
        precision: Precision,
        /// Also cache every block's residual stream (`blocks.*.hook_resid_post`).
        #[arg(long)]
        cache_residuals: bool,
    },
    /// A real GGUF model (weights through icl-probe's loader): load time, then prompt (prefill)
    /// tokens/s of one full-sequence forward with last-position logits.
    Prefill {
        /// The `.gguf` file (or any model icl-probe loads).
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// CPU threads (the rayon pool Flex and its matmuls run on); default: all cores.
        #[arg(long)]
        threads: Option<usize>,
        /// Print one JSON object instead of a table row (for tools/prefill_side_by_side.py).
        #[arg(long)]
        json: bool,
    },
    /// Export real k-shot ICL test prompts (text only) from the task builders, as JSON.
    IclPrompts {
        /// Tasks, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "country_capital,list_first,to_upper,category"
        )]
        tasks: Vec<String>,
        #[arg(long, default_value_t = 25)]
        per_task: usize,
        #[arg(long, default_value_t = 5)]
        shots: usize,
        /// Seed of query and demonstration sampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Seed of the tasks' train/dev/test split.
        #[arg(long, default_value_t = 0)]
        data_seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// The golden fixtures re-checked on this device (TF32 limits on CUDA); exits 1 on a failure.
    Parity {
        /// The repository's `crates` folder (fixtures under `*/tests/fixtures`).
        #[arg(long, default_value = "crates")]
        fixtures: PathBuf,
        /// `default_1.pt` for the pool3 check (default: the asset cache, if it holds it).
        #[arg(long)]
        inception: Option<PathBuf>,
        /// `efficientnet-lite0-57934424.pth` (default: the asset cache, if it holds it).
        #[arg(long)]
        effnet: Option<PathBuf>,
    },
}

fn run<B: AutodiffBackend>(cli: &Cli, device: B::Device) -> anyhow::Result<()> {
    let t = timing::Timer {
        runs: cli.runs,
        warmup: cli.warmup,
    };
    if let Command::Parity {
        fixtures,
        inception,
        effnet,
    } = &cli.command
    {
        let opts = parity::Options {
            fixtures: fixtures.clone(),
            inception: inception
                .clone()
                .or_else(|| assets::cached("inception-2015-12-05")),
            effnet: effnet
                .clone()
                .or_else(|| assets::cached("efficientnet-lite0")),
            // Exact mode (ICLGDD_EXACT_F32=1) undoes TF32 rounding: hold CUDA to the CPU limits then.
            tf32: cli.device == DeviceKind::Cuda && !exact_f32::enabled(),
        };
        let checks = parity::run::<B::InnerBackend>(&device, &opts)?;
        if !parity::print(&checks) {
            anyhow::bail!("parity: some checks exceed their limits");
        }
        return Ok(());
    }
    if let Command::IclPrompts {
        tasks,
        per_task,
        shots,
        seed,
        data_seed,
        out,
    } = &cli.command
    {
        return icl_prompts::run(tasks, *per_task, *shots, *seed, *data_seed, out);
    }
    if let Command::Prefill {
        model,
        tokens,
        batch,
        threads,
        json,
    } = &cli.command
    {
        if !json {
            println!("| workload | shape | precision | median time | throughput |");
            println!("|---|---|---|---|---|");
        }
        prefill::run::<B::InnerBackend>(&device, &t, model, *batch, *tokens, *threads, *json)?;
        return Ok(());
    }
    println!("| workload | shape | precision | median time | throughput |");
    println!("|---|---|---|---|---|");
    match &cli.command {
        Command::Parity { .. } | Command::IclPrompts { .. } | Command::Prefill { .. } => {
            unreachable!("handled above")
        }
        Command::Inception {
            batch,
            resolution,
            weights,
        } => {
            inception::run::<B::InnerBackend>(&device, &t, *batch, *resolution, weights.as_deref())?
        }
        Command::Gpt2 {
            batch,
            tokens,
            precision,
            cache_residuals,
        } => gpt2::run::<B::InnerBackend>(
            &device,
            &t,
            *batch,
            *tokens,
            *precision,
            *cache_residuals,
        )?,
        Command::Primitives {
            precision,
            n,
            channels,
            size,
            batch,
        } => primitives::run::<B::InnerBackend>(
            &device, &t, *precision, *n, *channels, *size, *batch,
        ),
        Command::Edm {
            net,
            mode: edm::Mode::Train,
            batch,
            precision,
            ..
        } => edm::run_train::<B>(&device, &t, *net, *batch, *precision),
        Command::Edm {
            net,
            mode,
            batch,
            steps,
            precision,
        } => edm::run_sampling::<B::InnerBackend>(
            &device, &t, *net, *mode, *batch, *steps, *precision,
        ),
    }
    Ok(())
}

/// The parsed command line, run with autodiff on the backend `--device` chose.
struct Task<'a>(&'a Cli);

impl device::BackendTask for Task<'_> {
    type Output = anyhow::Result<()>;
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> anyhow::Result<()> {
        run::<Autodiff<B>>(self.0, device)
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match device::dispatch(cli.device, Task(&cli)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
