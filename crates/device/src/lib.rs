//! The device selector every binary shares: `--device cpu|cuda` as a clap value, one dispatch that
//! instantiates a backend-generic task for the chosen burn backend, and one typed error for a CUDA
//! request in a build without CUDA.
//!
//! Why a crate: each binary used to carry its own enum, its own `#[cfg(feature = "cuda")]` match and
//! its own wording of the "no CUDA" message. Here the `cuda` feature is decided once: a binary's
//! `cuda` feature forwards to `device/cuda`, which enables `burn/cuda`.
//!
//! ```
//! use burn::tensor::backend::Backend;
//! use device::{dispatch, BackendTask, DeviceKind};
//!
//! struct Zeros(usize);
//! impl BackendTask for Zeros {
//!     type Output = usize;
//!     fn run<B: Backend>(self, device: B::Device) -> usize {
//!         burn::tensor::Tensor::<B, 1>::zeros([self.0], &device).dims()[0]
//!     }
//! }
//! assert_eq!(dispatch(DeviceKind::Cpu, Zeros(3)).unwrap(), 3);
//! ```

use burn::tensor::backend::Backend;

/// Where a binary runs its networks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceKind {
    /// burn's CPU backend (`Flex`).
    #[default]
    Cpu,
    /// burn's CUDA backend, device 0 (needs a build with `--features cuda`).
    Cuda,
}

impl DeviceKind {
    /// Whether this build can run on `self` (CUDA only with the `cuda` feature).
    pub fn available(self) -> bool {
        match self {
            DeviceKind::Cpu => true,
            DeviceKind::Cuda => cfg!(feature = "cuda"),
        }
    }
}

/// `--device cpu|cuda` as a clap argument group, for binaries that flatten it into each subcommand
/// (`#[command(flatten)] device: DeviceArgs`).
#[derive(clap::Args, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceArgs {
    /// Where to run (cuda needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
}

/// Why a backend could not be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// `--device cuda` in a binary compiled without the `cuda` feature.
    #[error("this binary was built without CUDA; rebuild with `--features cuda`")]
    NoCuda,
}

/// A piece of work written once for any burn backend; [`dispatch`] picks the backend.
pub trait BackendTask {
    type Output;
    /// Runs on backend `B`, on `device` (the backend's default device).
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

/// Runs `task` on the backend `kind` names: `Flex` for the CPU, `Cuda` (device 0) for CUDA when
/// compiled with the `cuda` feature, [`DeviceError::NoCuda`] otherwise.
pub fn dispatch<T: BackendTask>(kind: DeviceKind, task: T) -> Result<T::Output, DeviceError> {
    match kind {
        DeviceKind::Cpu => Ok(task.run::<burn::backend::Flex>(Default::default())),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Ok(task.run::<burn::backend::Cuda>(Default::default())),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(DeviceError::NoCuda),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Reports the backend it was instantiated with.
    struct Name;
    impl BackendTask for Name {
        type Output = String;
        fn run<B: Backend>(self, _device: B::Device) -> String {
            std::any::type_name::<B>().to_string()
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        device: DeviceArgs,
    }

    #[test]
    fn cpu_runs_on_flex() {
        assert!(dispatch(DeviceKind::Cpu, Name).unwrap().contains("Flex"));
    }

    #[test]
    fn cuda_is_a_typed_error_without_the_feature() {
        let r = dispatch(DeviceKind::Cuda, Name);
        if cfg!(feature = "cuda") {
            assert!(r.unwrap().contains("Cuda"));
        } else {
            assert_eq!(r, Err(DeviceError::NoCuda));
            assert!(!DeviceKind::Cuda.available());
            assert!(DeviceError::NoCuda.to_string().contains("--features cuda"));
        }
    }

    #[test]
    fn parses_like_every_binary_did() {
        let c = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(c.device.device, DeviceKind::Cpu);
        let c = Cli::try_parse_from(["x", "--device", "cuda"]).unwrap();
        assert_eq!(c.device.device, DeviceKind::Cuda);
        assert!(Cli::try_parse_from(["x", "--device", "tpu"]).is_err());
    }
}
