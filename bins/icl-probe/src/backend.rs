//! Backend selection: one generic code path, instantiated for the CPU (`Flex`) or, with
//! `--features cuda`, for CUDA.

use burn::tensor::backend::Backend;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

/// `--device cpu|cuda`, flattened into each subcommand's arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where to run (cuda needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
}

/// A subcommand that runs on any backend.
pub trait BackendTask {
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()>;
}

pub fn dispatch<T: BackendTask>(kind: DeviceKind, task: T) -> anyhow::Result<()> {
    match kind {
        DeviceKind::Cpu => task.run::<burn::backend::Flex>(Default::default()),
        DeviceKind::Cuda => {
            #[cfg(feature = "cuda")]
            {
                task.run::<burn::backend::Cuda>(Default::default())
            }
            #[cfg(not(feature = "cuda"))]
            {
                anyhow::bail!("this binary was built without CUDA; rebuild with `--features cuda`")
            }
        }
    }
}
