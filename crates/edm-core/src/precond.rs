//! Preconditioning (EDM's `EDMPrecond`, `VPPrecond`, `VEPrecond`) around a U-Net, loading, saving and
//! parameter listing by EDM name.
//!
//! D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)), with the coefficients of the chosen
//! formulation. The preconditioning always runs in float32; the U-Net runs in the [`Precision`] chosen.

use std::collections::HashSet;
use std::path::Path;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::{backend::Backend, DType, Tensor};

use crate::config::{EdmConfig, ModelType, PrecondKind};
use crate::dhariwal_unet::DhariwalUNet;
use crate::error::{EdmError, Result};
use crate::layers::to_dtype;
use crate::song_unet::SongUNet;
use crate::weights::{NamedTensor, TensorRef, TensorSource, VisitNamed};
use formats::{read_safetensors, write_atomic, write_safetensors, HostTensor};

/// The configuration of an [`EdmPrecond`]: `config.json` with EDM's keyword names.
pub type EdmPrecondConfig = EdmConfig;

/// Floating-point precision of the U-Net body.
///
/// EDM's `use_fp16` runs the U-Net in float16 on CUDA only (never on CPU) with the preconditioning, the
/// embeddings and the attention softmax in float32. Here the caller chooses: [`Precision::F32`] is the
/// default everywhere (burn's CPU backend Flex is float32-only); `F16`/`BF16` cast the U-Net input and,
/// layer by layer, the weights, like EDM's `weight.to(x.dtype)`, on backends that support those dtypes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    F16,
    BF16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::BF16 => DType::BF16,
        }
    }
}

/// The U-Net inside a preconditioner.
// Variants are built once and never moved in hot loops; burn's Module derive needs them unboxed.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum UNet<B: Backend> {
    Song(SongUNet<B>),
    Dhariwal(DhariwalUNet<B>),
}

impl<B: Backend> UNet<B> {
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        noise_labels: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
        augment_labels: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 4> {
        match self {
            UNet::Song(m) => m.forward(x, noise_labels, class_labels, augment_labels),
            UNet::Dhariwal(m) => m.forward(x, noise_labels, class_labels, augment_labels),
        }
    }
}

impl<B: Backend> VisitNamed<B> for UNet<B> {
    fn visit_named(&self, prefix: &str, f: &mut dyn FnMut(&str, TensorRef<'_, B>)) {
        match self {
            UNet::Song(m) => m.visit_named(prefix, f),
            UNet::Dhariwal(m) => m.visit_named(prefix, f),
        }
    }
}

/// Anything that denoises: D(x; σ, labels) → x̂₀. Samplers and distillation code take this.
pub trait Denoiser<B: Backend> {
    /// x [N,C,H,W], sigma [N], class_labels [N,label_dim] (None = unconditional / zeros).
    fn denoise(
        &self,
        x: Tensor<B, 4>,
        sigma: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 4>;
    /// Smallest noise level the network supports (EDM's `net.sigma_min`).
    fn sigma_min(&self) -> f64;
    /// Largest noise level the network supports (EDM's `net.sigma_max`).
    fn sigma_max(&self) -> f64;
}

/// A preconditioned U-Net: EDM's `EDMPrecond`, `VPPrecond` or `VEPrecond` as `config.precond` says.
#[derive(Module, Debug)]
pub struct EdmPrecond<B: Backend> {
    pub model: UNet<B>,
    #[module(skip)]
    pub config: EdmConfig,
    #[module(skip)]
    pub precision: Precision,
}

/// c_skip, c_out, c_in, c_noise for a batch of sigmas (each [N,1,1,1] except c_noise [N]).
pub struct PrecondCoefficients<B: Backend> {
    pub c_skip: Tensor<B, 4>,
    pub c_out: Tensor<B, 4>,
    pub c_in: Tensor<B, 4>,
    pub c_noise: Tensor<B, 1>,
}

impl<B: Backend> EdmPrecond<B> {
    /// Builds the network from a tensor source (a state_dict or a fresh initialisation).
    pub fn build(config: &EdmConfig, src: &mut TensorSource<'_, B>) -> Result<Self> {
        let unet = config.unet();
        let model = match config.model_type {
            ModelType::SongUNet => UNet::Song(SongUNet::new(src, "model", &unet)?),
            ModelType::DhariwalUNet => UNet::Dhariwal(DhariwalUNet::new(src, "model", &unet)?),
        };
        Ok(EdmPrecond {
            model,
            config: config.clone(),
            precision: Precision::F32,
        })
    }

    /// A freshly initialised network, initialised the way EDM initialises it, from `seed`.
    pub fn init(config: &EdmConfig, seed: u64, device: &B::Device) -> Result<Self> {
        let mut src = TensorSource::random(seed, device);
        Self::build(config, &mut src)
    }

    /// Loads a state_dict (EDM names); a missing, extra or mis-shaped tensor is an error naming it.
    pub fn from_tensors(
        config: &EdmConfig,
        tensors: std::collections::BTreeMap<String, HostTensor>,
        device: &B::Device,
    ) -> Result<Self> {
        let mut src = TensorSource::from_tensors(tensors, device);
        let net = Self::build(config, &mut src)?;
        src.finish()?;
        Ok(net)
    }

    /// Selects the precision of the U-Net body (see [`Precision`]).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    pub fn sigma_data(&self) -> f64 {
        self.config.sigma_data
    }

    fn vp_sigma(&self, t: f64) -> f64 {
        let c = &self.config;
        ((0.5 * c.beta_d * t * t + c.beta_min * t).exp() - 1.0).sqrt()
    }

    /// EDM's preconditioning coefficients for sigma [N].
    pub fn coefficients(&self, sigma: Tensor<B, 1>) -> PrecondCoefficients<B> {
        let n = sigma.dims()[0];
        let s = sigma.clone().reshape([n, 1, 1, 1]);
        let c = &self.config;
        match c.precond {
            PrecondKind::EDMPrecond => {
                let sd = c.sigma_data;
                let s2 = s.clone().square() + sd * sd;
                PrecondCoefficients {
                    c_skip: s2.clone().recip().mul_scalar(sd * sd),
                    c_out: s.clone().mul_scalar(sd) / s2.clone().sqrt(),
                    c_in: s2.sqrt().recip(),
                    c_noise: sigma.log().div_scalar(4.0),
                }
            }
            PrecondKind::VPPrecond => {
                let (bd, bm) = (c.beta_d, c.beta_min);
                // sigma_inv(σ) = (sqrt(β_min² + 2β_d ln(1+σ²)) − β_min) / β_d
                let t = ((sigma.clone().square() + 1.0).log().mul_scalar(2.0 * bd) + bm * bm)
                    .sqrt()
                    .sub_scalar(bm)
                    .div_scalar(bd);
                PrecondCoefficients {
                    c_skip: s.ones_like(),
                    c_out: s.clone().neg(),
                    c_in: (s.square() + 1.0).sqrt().recip(),
                    c_noise: t.mul_scalar(c.m - 1.0),
                }
            }
            PrecondKind::VEPrecond => PrecondCoefficients {
                c_skip: s.ones_like(),
                c_out: s.clone(),
                c_in: s.ones_like(),
                c_noise: sigma.mul_scalar(0.5).log(),
            },
        }
    }

    /// D(x; σ) with optional augmentation labels (training with EDM's augment pipe).
    pub fn forward_with_augment(
        &self,
        x: Tensor<B, 4>,
        sigma: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
        augment_labels: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 4> {
        let n = x.dims()[0];
        let label_dim = self.config.label_dim;
        let class_labels = if label_dim == 0 {
            None
        } else {
            Some(class_labels.unwrap_or_else(|| Tensor::zeros([n, label_dim], &x.device())))
        };
        let k = self.coefficients(sigma);
        let dtype = self.precision.dtype();
        let f_x = self.model.forward(
            to_dtype(k.c_in * x.clone(), dtype),
            k.c_noise,
            class_labels,
            augment_labels,
        );
        k.c_skip * x + k.c_out * to_dtype(f_x, DType::F32)
    }

    /// D(x; σ, class_labels): EDM's `EDMPrecond.forward`.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        sigma: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 4> {
        self.forward_with_augment(x, sigma, class_labels, None)
    }

    /// The raw U-Net output F(c_in·x, c_noise, labels) (for parity checks and analysis).
    pub fn raw(
        &self,
        x: Tensor<B, 4>,
        sigma: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 4> {
        let k = self.coefficients(sigma);
        let class_labels = if self.config.label_dim == 0 {
            None
        } else {
            class_labels
        };
        self.model
            .forward(k.c_in * x, k.c_noise, class_labels, None)
    }

    /// Every parameter and buffer by EDM state_dict name, in EDM's registration order.
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        self.visit_named("", &mut |name, t| {
            out.push(NamedTensor {
                name: name.to_string(),
                shape: t.shape(),
                param_id: t.param_id(),
            })
        });
        out
    }

    /// Only the trainable parameters (EDM's `named_parameters()`; buffers left out).
    pub fn named_parameters(&self) -> Vec<NamedTensor> {
        self.named_tensors()
            .into_iter()
            .filter(|t| t.param_id.is_some())
            .collect()
    }

    /// Burn parameter ids of the parameters whose EDM name satisfies `pred`.
    pub fn param_ids_where(&self, pred: impl Fn(&str) -> bool) -> Vec<ParamId> {
        self.named_parameters()
            .into_iter()
            .filter(|t| pred(&t.name))
            .filter_map(|t| t.param_id)
            .collect()
    }

    /// Marks the parameters whose EDM name satisfies `pred` as not requiring gradients (frozen).
    pub fn freeze_where(self, pred: impl Fn(&str) -> bool) -> Self {
        let ids: HashSet<ParamId> = self.param_ids_where(pred).into_iter().collect();
        self.map(&mut Freezer { ids })
    }

    /// The state_dict as (name, shape, float32 values), EDM names.
    pub fn state_dict(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        self.visit_named("", &mut |name, t| {
            out.push((name.to_string(), t.shape(), t.to_vec()))
        });
        out
    }

    /// Every float of the network in state-dict order: one vector to compare two runs' weights.
    pub fn flat_parameters(&self) -> Vec<f32> {
        let mut out = Vec::new();
        self.visit_named("", &mut |_, t| out.extend(t.to_vec()));
        out
    }

    /// Writes the state_dict (EDM names, float32) to a safetensors file, atomically.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(write_safetensors(path.as_ref(), &self.state_dict())?)
    }

    /// Writes `model.safetensors` and `config.json` into `dir` (created if needed).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| EdmError::io(dir, e))?;
        self.save_safetensors(dir.join("model.safetensors"))?;
        let text = serde_json::to_string_pretty(&self.config).expect("config serialises");
        Ok(write_atomic(&dir.join("config.json"), text.as_bytes())?)
    }
}

struct Freezer {
    ids: HashSet<ParamId>,
}

impl<B: Backend> ModuleMapper<B> for Freezer {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.ids.contains(&param.id) {
            param.set_require_grad(false)
        } else {
            param
        }
    }
}

impl<B: Backend> VisitNamed<B> for EdmPrecond<B> {
    fn visit_named(&self, prefix: &str, f: &mut dyn FnMut(&str, TensorRef<'_, B>)) {
        self.model
            .visit_named(&crate::weights::join(prefix, "model"), f)
    }
}

impl<B: Backend> Denoiser<B> for EdmPrecond<B> {
    fn denoise(
        &self,
        x: Tensor<B, 4>,
        sigma: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 4> {
        self.forward(x, sigma, class_labels)
    }

    fn sigma_min(&self) -> f64 {
        let c = &self.config;
        match c.precond {
            PrecondKind::EDMPrecond => c.sigma_min.unwrap_or(0.0),
            PrecondKind::VEPrecond => c.sigma_min.unwrap_or(0.02),
            PrecondKind::VPPrecond => self.vp_sigma(c.epsilon_t),
        }
    }

    fn sigma_max(&self) -> f64 {
        let c = &self.config;
        match c.precond {
            PrecondKind::EDMPrecond => c.sigma_max.unwrap_or(f64::INFINITY),
            PrecondKind::VEPrecond => c.sigma_max.unwrap_or(100.0),
            PrecondKind::VPPrecond => self.vp_sigma(1.0),
        }
    }
}

/// Loads `DIR/config.json` + `DIR/model.safetensors` (EDM state_dict names) onto `device`.
pub fn load_precond<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<EdmPrecond<B>> {
    let dir = dir.as_ref();
    let config = EdmConfig::from_file(dir.join("config.json"))?;
    let tensors = read_safetensors(&dir.join("model.safetensors"))?;
    EdmPrecond::from_tensors(&config, tensors, device)
}
