//! GDD / GDD-I: one-step generation by exclusive distributional (GAN) distillation of an EDM
//! teacher (Zheng & Yang, "Diffusion Models Are Innate One-Step Generators"; reference code
//! Zyriix/GDD).
//!
//! - [`effnet`]: frozen EfficientNet-Lite0 trunk loaded from the real `.pth` asset.
//! - [`disc`]: the projected discriminator (CCM, CSM, four spectral-norm multi-scale heads).
//! - [`loss`]: non-saturating / hinge losses, lazy Adam adjustment.
//! - [`r1`]: the R1 penalty with a first-order (finite-difference) parameter gradient.
//! - [`freeze`]: GDD-I's freezing policies by EDM parameter name and the frozen-fraction report.

pub mod analyze;
pub mod data;
pub mod disc;
pub mod effnet;
pub mod error;
pub mod eval;
pub mod freeze;
pub mod generator;
pub mod loss;
pub mod presets;
pub mod pth;
pub mod r1;
pub mod train;
pub mod vgg;

pub use error::{DistillError, Result};
