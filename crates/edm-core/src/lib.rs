//! edm-core: NVlabs/edm's networks (`training/networks.py`), preconditioning, samplers and training
//! loop in burn, computing the same function as the Python reference.
//!
//! - [`EdmPrecond`] wraps a [`SongUNet`] (DDPM++/NCSN++) or [`DhariwalUNet`] (ADM) with EDM, VP or VE
//!   preconditioning; [`load_precond`] reads `config.json` + `model.safetensors` with EDM's names.
//! - [`sampler`]: EDM's time steps, Euler, Heun, the stochastic sampler and the one-step map.
//! - [`generate`]: latents from seeds or a file, batched sampling, denoising a file, PNGs.
//! - [`loss`]: EDM's losses (`loss.py`: EDMLoss, VPLoss, VELoss).
//! - [`train`]: Adam with learning-rate ramp, EMA, atomic resumable checkpoints.

pub mod config;
pub mod convert;
pub mod data;
pub mod dhariwal_unet;
pub mod error;
pub mod generate;
pub mod layers;
pub mod loss;
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
pub use generate::{
    denoise_file, generate_images, image_path, sample_latents, write_png, write_pngs,
    GenerateOptions, GenerateReport, LatentSource, Latents,
};
pub use loss::{
    edm_loss, edm_loss_weight, inverse_variance_loss, DenoisingLoss, EdmLossConfig, VeLossConfig,
    VpLossConfig,
};
pub use precond::{
    load_precond, Denoiser, EdmPrecond, EdmPrecondConfig, Precision, PrecondCoefficients, UNet,
};
pub use sampler::{edm_sigma_steps, nfe, parse_seeds, sample, SamplerConfig, Solver, StackedRng};
pub use song_unet::SongUNet;
pub use train::{
    ema_beta, ema_update, train, train_run, train_run_parallel, StepReport, TickReport, TrainEvent,
    TrainOptions, Trainer, TrainingState, RESUMABLE_OPTIONS,
};
pub use weights::{NamedTensor, TensorRef, VisitNamed};
