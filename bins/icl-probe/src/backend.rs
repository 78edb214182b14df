//! Backend selection through the shared `device` crate: one generic code path, instantiated for the
//! CPU (`Flex`) or, with `--features cuda`, for CUDA. The subcommands implement [`BackendTask`]
//! (returning `anyhow::Result<()>`); [`dispatch`] hands them to [`device::dispatch`].

use burn::tensor::backend::Backend;

pub use device::{DeviceArgs, DeviceKind};

/// A subcommand that runs on any backend.
pub trait BackendTask {
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()>;
}

/// Adapts a subcommand to the device crate's task trait.
struct Task<T>(T);

impl<T: BackendTask> device::BackendTask for Task<T> {
    type Output = anyhow::Result<()>;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        self.0.run::<B>(device)
    }
}

pub fn dispatch<T: BackendTask>(kind: DeviceKind, task: T) -> anyhow::Result<()> {
    device::dispatch(kind, Task(task))?
}
