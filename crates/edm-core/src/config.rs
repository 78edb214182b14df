//! `config.json`: the keyword arguments of EDM's preconditioner and U-Net, with EDM's own names.
//!
//! One flat object, as `EDMPrecond(**kwargs)` receives it: `precond`, `model_type`, the preconditioner's
//! arguments (`img_resolution`, `img_channels`, `label_dim`, `use_fp16`, `sigma_min`, ...) and the U-Net's
//! (`model_channels`, `channel_mult`, ...). Keys left out take EDM's defaults for the chosen `model_type`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EdmError, Result};

/// Which preconditioning wraps the U-Net (EDM's class names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PrecondKind {
    #[default]
    EDMPrecond,
    VPPrecond,
    VEPrecond,
}

/// Which U-Net (EDM's class names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ModelType {
    #[default]
    SongUNet,
    DhariwalUNet,
}

/// Timestep embedding of SongUNet: `positional` (DDPM++) or `fourier` (NCSN++).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingType {
    #[default]
    Positional,
    Fourier,
}

/// SongUNet encoder: `standard` (DDPM++), `skip`, or `residual` (NCSN++).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EncoderType {
    #[default]
    Standard,
    Skip,
    Residual,
}

/// SongUNet decoder: `standard` or `skip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DecoderType {
    #[default]
    Standard,
    Skip,
}

/// The whole network description, exactly the keyword arguments EDM's constructors take.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdmConfig {
    #[serde(default)]
    pub precond: PrecondKind,
    #[serde(default)]
    pub model_type: ModelType,
    pub img_resolution: usize,
    pub img_channels: usize,
    #[serde(default)]
    pub label_dim: usize,
    /// EDM runs the U-Net in float16 on CUDA when set; see [`crate::Precision`] for what this crate does.
    #[serde(default)]
    pub use_fp16: bool,

    // Preconditioner arguments (defaults depend on `precond`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_max: Option<f64>,
    #[serde(default = "default_sigma_data")]
    pub sigma_data: f64,
    #[serde(default = "default_beta_d")]
    pub beta_d: f64,
    #[serde(default = "default_beta_min")]
    pub beta_min: f64,
    #[serde(rename = "M", default = "default_m")]
    pub m: f64,
    #[serde(default = "default_epsilon_t")]
    pub epsilon_t: f64,

    // U-Net arguments (defaults depend on `model_type`).
    #[serde(default)]
    pub augment_dim: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_channels: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_mult: Option<Vec<usize>>,
    #[serde(default = "default_channel_mult_emb")]
    pub channel_mult_emb: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_blocks: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_resolutions: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    #[serde(default)]
    pub label_dropout: f64,
    #[serde(default)]
    pub embedding_type: EmbeddingType,
    #[serde(default = "default_channel_mult_noise")]
    pub channel_mult_noise: usize,
    #[serde(default)]
    pub encoder_type: EncoderType,
    #[serde(default)]
    pub decoder_type: DecoderType,
    #[serde(default = "default_resample_filter")]
    pub resample_filter: Vec<f64>,
}

fn default_sigma_data() -> f64 {
    0.5
}
fn default_beta_d() -> f64 {
    19.9
}
fn default_beta_min() -> f64 {
    0.1
}
fn default_m() -> f64 {
    1000.0
}
fn default_epsilon_t() -> f64 {
    1e-5
}
fn default_channel_mult_emb() -> usize {
    4
}
fn default_channel_mult_noise() -> usize {
    1
}
fn default_resample_filter() -> Vec<f64> {
    vec![1.0, 1.0]
}

/// Resolved U-Net hyper-parameters (EDM's defaults filled in).
#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub img_resolution: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub label_dim: usize,
    pub augment_dim: usize,
    pub model_channels: usize,
    pub channel_mult: Vec<usize>,
    pub channel_mult_emb: usize,
    pub num_blocks: usize,
    pub attn_resolutions: Vec<usize>,
    pub dropout: f64,
    pub label_dropout: f64,
    pub embedding_type: EmbeddingType,
    pub channel_mult_noise: usize,
    pub encoder_type: EncoderType,
    pub decoder_type: DecoderType,
    pub resample_filter: Vec<f64>,
}

impl EdmConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| EdmError::io(path, e))?;
        let config: EdmConfig = serde_json::from_str(&text).map_err(|e| EdmError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| EdmError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Writes `config.json` (pretty-printed).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).expect("config serialises");
        formats::write_atomic(path, text.as_bytes())?;
        Ok(())
    }

    /// EDM's DDPM++ CIFAR-10 network (`train.py --arch=ddpmpp --precond=edm`, 55.7M parameters).
    pub fn ddpmpp_cifar10() -> Self {
        let mut c = Self::tiny(ModelType::SongUNet, 32, 3, 0);
        c.augment_dim = 9;
        c.model_channels = Some(128);
        c.channel_mult = Some(vec![2, 2, 2]);
        c.num_blocks = Some(4);
        c.attn_resolutions = Some(vec![16]);
        c.dropout = Some(0.13);
        c
    }

    /// EDM's NCSN++ CIFAR-10 network (`train.py --arch=ncsnpp --precond=edm`: SongUNet with a Fourier
    /// noise embedding, residual encoder, [1,3,3,1] resampling filter, 2× noise channels; otherwise
    /// DDPM++'s sizes, 56.0M parameters).
    pub fn ncsnpp_cifar10() -> Self {
        let mut c = Self::ddpmpp_cifar10();
        c.embedding_type = EmbeddingType::Fourier;
        c.encoder_type = EncoderType::Residual;
        c.decoder_type = DecoderType::Standard;
        c.channel_mult_noise = 2;
        c.resample_filter = vec![1.0, 3.0, 3.0, 1.0];
        c
    }

    /// The NCSN++ CIFAR-10 network exactly as GDD's `train.py --arch=ncsnpp` builds it: EDM's
    /// [`Self::ncsnpp_cifar10`] without augmentation labels and with dropout 0 (GDD fine-tunes the
    /// released EDM checkpoint, whose `augment_dim` it drops and whose dropout it turns off).
    pub fn gdd_ncsnpp_cifar10() -> Self {
        let mut c = Self::ncsnpp_cifar10();
        c.augment_dim = 0;
        c.dropout = Some(0.0);
        c
    }

    /// EDM's ADM network at 64×64 (`train.py --arch=adm`, ImageNet-64): DhariwalUNet with its
    /// defaults (192 channels, ×[1,2,3,4], 3 blocks, attention at 32/16/8), 1000 classes, dropout 0.1.
    pub fn adm_imagenet64() -> Self {
        let mut c = Self::tiny(ModelType::DhariwalUNet, 64, 3, 1000);
        c.model_channels = None;
        c.channel_mult = None;
        c.num_blocks = None;
        c.attn_resolutions = None;
        c.dropout = Some(0.1);
        c
    }

    /// The networks `edm train` trains on Fashion-MNIST padded to 32×32 (1 channel, `label_dim` 10
    /// when class-conditional, 0 otherwise): `tiny` ([`Self::tiny`], 32 channels) or `ddpmpp`
    /// ([`Self::ddpmpp_cifar10`] without augmentation labels: this crate has no `AugmentPipe`).
    /// `None` for any other name.
    pub fn fashion_mnist(arch: &str, label_dim: usize) -> Option<Self> {
        match arch {
            "tiny" => Some(Self::tiny(ModelType::SongUNet, 32, 1, label_dim)),
            "ddpmpp" => {
                let mut c = Self::ddpmpp_cifar10();
                c.img_channels = 1;
                c.label_dim = label_dim;
                c.augment_dim = 0;
                Some(c)
            }
            _ => None,
        }
    }

    /// A small config of the given architecture (model_channels 32, channel_mult [1,2], 2 blocks, attention
    /// at half resolution): handy for tests and CPU training.
    pub fn tiny(
        model_type: ModelType,
        img_resolution: usize,
        img_channels: usize,
        label_dim: usize,
    ) -> Self {
        EdmConfig {
            precond: PrecondKind::EDMPrecond,
            model_type,
            img_resolution,
            img_channels,
            label_dim,
            use_fp16: false,
            sigma_min: None,
            sigma_max: None,
            sigma_data: 0.5,
            beta_d: default_beta_d(),
            beta_min: default_beta_min(),
            m: default_m(),
            epsilon_t: default_epsilon_t(),
            augment_dim: 0,
            model_channels: Some(32),
            channel_mult: Some(vec![1, 2]),
            channel_mult_emb: 4,
            num_blocks: Some(2),
            attn_resolutions: Some(vec![img_resolution / 2]),
            dropout: Some(0.0),
            label_dropout: 0.0,
            embedding_type: EmbeddingType::Positional,
            channel_mult_noise: 1,
            encoder_type: EncoderType::Standard,
            decoder_type: DecoderType::Standard,
            resample_filter: vec![1.0, 1.0],
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let u = self.unet();
        if u.img_resolution == 0 || u.in_channels == 0 {
            return Err("img_resolution and img_channels must be positive".into());
        }
        if u.channel_mult.is_empty() || u.model_channels == 0 || u.channel_mult.contains(&0) {
            return Err("model_channels and channel_mult entries must be positive".into());
        }
        if !u
            .img_resolution
            .is_multiple_of(1 << (u.channel_mult.len() - 1))
        {
            return Err(format!(
                "img_resolution {} is not divisible by 2^{}",
                u.img_resolution,
                u.channel_mult.len() - 1
            ));
        }
        if u.resample_filter.is_empty() || u.resample_filter.iter().sum::<f64>() == 0.0 {
            return Err("resample_filter must be non-empty with a non-zero sum".into());
        }
        if !(0.0..1.0).contains(&u.dropout) {
            return Err(format!("dropout {} not in [0, 1)", u.dropout));
        }
        if self.model_type == ModelType::SongUNet
            && !(u.model_channels * u.channel_mult_noise).is_multiple_of(2)
        {
            return Err("noise embedding channels must be even".into());
        }
        Ok(())
    }

    /// The U-Net's hyper-parameters with EDM's per-architecture defaults.
    pub fn unet(&self) -> UNetConfig {
        let song = self.model_type == ModelType::SongUNet;
        UNetConfig {
            img_resolution: self.img_resolution,
            in_channels: self.img_channels,
            out_channels: self.img_channels,
            label_dim: self.label_dim,
            augment_dim: self.augment_dim,
            model_channels: self.model_channels.unwrap_or(if song { 128 } else { 192 }),
            channel_mult: self.channel_mult.clone().unwrap_or(if song {
                vec![1, 2, 2, 2]
            } else {
                vec![1, 2, 3, 4]
            }),
            channel_mult_emb: self.channel_mult_emb,
            num_blocks: self.num_blocks.unwrap_or(if song { 4 } else { 3 }),
            attn_resolutions: self.attn_resolutions.clone().unwrap_or(if song {
                vec![16]
            } else {
                vec![32, 16, 8]
            }),
            dropout: self.dropout.unwrap_or(0.10),
            label_dropout: self.label_dropout,
            embedding_type: self.embedding_type,
            channel_mult_noise: self.channel_mult_noise,
            encoder_type: self.encoder_type,
            decoder_type: self.decoder_type,
            resample_filter: self.resample_filter.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_edm() {
        let c: EdmConfig =
            serde_json::from_str(r#"{"img_resolution": 32, "img_channels": 3}"#).unwrap();
        assert_eq!(c.precond, PrecondKind::EDMPrecond);
        let u = c.unet();
        assert_eq!(u.model_channels, 128);
        assert_eq!(u.channel_mult, vec![1, 2, 2, 2]);
        assert_eq!(u.resample_filter, vec![1.0, 1.0]);
        let c: EdmConfig = serde_json::from_str(
            r#"{"img_resolution": 64, "img_channels": 3, "model_type": "DhariwalUNet"}"#,
        )
        .unwrap();
        assert_eq!(c.unet().attn_resolutions, vec![32, 16, 8]);
    }

    /// The reference configs differ from DDPM++ exactly where EDM's `train.py` says, and all validate.
    #[test]
    fn reference_configs_follow_train_py() {
        let dd = EdmConfig::ddpmpp_cifar10();
        let nc = EdmConfig::ncsnpp_cifar10();
        assert_eq!((dd.augment_dim, dd.dropout), (9, Some(0.13)));
        assert_eq!(nc.unet().channel_mult, dd.unet().channel_mult);
        assert_eq!(nc.embedding_type, EmbeddingType::Fourier);
        assert_eq!(nc.encoder_type, EncoderType::Residual);
        assert_eq!(nc.resample_filter, vec![1.0, 3.0, 3.0, 1.0]);
        let gdd = EdmConfig::gdd_ncsnpp_cifar10();
        assert_eq!((gdd.augment_dim, gdd.dropout), (0, Some(0.0)));
        let adm = EdmConfig::adm_imagenet64().unet();
        assert_eq!((adm.model_channels, adm.num_blocks), (192, 3));
        assert_eq!(adm.channel_mult, vec![1, 2, 3, 4]);
        let fm = EdmConfig::fashion_mnist("ddpmpp", 10).unwrap();
        assert_eq!((fm.img_channels, fm.label_dim, fm.augment_dim), (1, 10, 0));
        assert_eq!(
            EdmConfig::fashion_mnist("tiny", 0).unwrap().img_resolution,
            32
        );
        assert!(EdmConfig::fashion_mnist("unet", 0).is_none());
        for c in [dd, nc, gdd, EdmConfig::adm_imagenet64(), fm] {
            c.validate().unwrap();
        }
    }

    #[test]
    fn unknown_key_is_an_error() {
        let r: std::result::Result<EdmConfig, _> =
            serde_json::from_str(r#"{"img_resolution": 32, "img_channels": 3, "modle": 1}"#);
        assert!(r.is_err());
    }
}
