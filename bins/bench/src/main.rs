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
mod primitives;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

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
}

fn run<B: AutodiffBackend>(cli: &Cli, device: B::Device) {
    let t = timing::Timer {
        runs: cli.runs,
        warmup: cli.warmup,
    };
    match &cli.command {
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
}

fn main() {
    let cli = Cli::parse();
    println!("| workload | shape | precision | median time | throughput |");
    println!("|---|---|---|---|---|");
    match cli.device {
        DeviceKind::Cpu => run::<Autodiff<burn::backend::Flex>>(&cli, Default::default()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => run::<Autodiff<burn::backend::Cuda>>(&cli, Default::default()),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => {
            eprintln!("error: this binary was built without CUDA; rebuild with `--features cuda`");
            std::process::exit(2);
        }
    }
}
