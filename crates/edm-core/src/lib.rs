//! edm-core: NVlabs/edm's networks (`training/networks.py`), preconditioning, samplers and training
//! loop in burn, computing the same function as the Python reference.
//!
//! - [`EdmPrecond`] wraps a [`SongUNet`] (DDPM++/NCSN++) or [`DhariwalUNet`] (ADM) with EDM, VP or VE
//!   preconditioning; [`load_precond`] reads `config.json` + `model.safetensors` with EDM's names.
//! - [`sampler`]: EDM's time steps, Euler, Heun, the stochastic sampler and the one-step map.
//! - [`train`]: EDM's loss, Adam with learning-rate ramp, EMA, atomic resumable checkpoints.

pub mod config;
pub mod data;
pub mod dhariwal_unet;
pub mod error;
pub mod layers;
pub mod precond;
pub mod sampler;
pub mod song_unet;
pub mod train;
pub mod weights;

pub use config::{DecoderType, EdmConfig, EmbeddingType, EncoderType, ModelType, PrecondKind};
pub use data::ImageDataset;
pub use dhariwal_unet::DhariwalUNet;
pub use error::{EdmError, Result};
pub use formats::{read_idx, read_safetensors, write_safetensors, HostTensor};
pub use precond::{
    load_precond, Denoiser, EdmPrecond, EdmPrecondConfig, Precision, PrecondCoefficients, UNet,
};
pub use sampler::{edm_sigma_steps, nfe, parse_seeds, sample, SamplerConfig, Solver, StackedRng};
pub use song_unet::SongUNet;
pub use train::{
    edm_loss, edm_loss_weight, ema_beta, ema_update, train, EdmLossConfig, StepReport,
    TrainOptions, Trainer, TrainingState,
};
pub use weights::{NamedTensor, TensorRef, VisitNamed};
