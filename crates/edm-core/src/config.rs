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

/// The largest `img_resolution` a config may declare (EDM's largest networks are 512²).
pub const MAX_RESOLUTION: usize = 4096;
/// The largest `img_channels` a config may declare.
pub const MAX_CHANNELS: usize = 64;
/// The default largest network, in parameters (2·10⁹, 8 GiB of f32; EDM's largest is 296·10⁶).
pub const MAX_PARAMETERS: u64 = 2_000_000_000;

/// [`MAX_PARAMETERS`] unless `EDM_MAX_PARAMETERS` holds a positive integer.
pub fn max_parameters() -> u64 {
    std::env::var("EDM_MAX_PARAMETERS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(MAX_PARAMETERS)
}

/// The memory one denoiser forward pass may plan: 3/4 of the physical memory (8 GiB when it cannot
/// be read), or `EDM_MAX_MEMORY_BYTES` (`K`/`M`/`G` suffixes accepted).
pub fn max_forward_bytes() -> formats::Limit {
    formats::Limit::from_env(
        "EDM_MAX_MEMORY_BYTES",
        physical_memory().map_or(8 << 30, |m| m / 4 * 3),
    )
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
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

impl UNetConfig {
    /// An upper estimate of the parameter count, from the sizes alone (before anything is
    /// allocated): every block as two 3×3 convolutions at its level's width plus a skip and an
    /// embedding projection, encoder and decoder, and the embedding MLP. Within 2× of the true count
    /// for EDM's networks, which is all a limit needs.
    pub fn parameter_estimate(&self) -> u64 {
        let mc = self.model_channels as u64;
        let emb = mc * self.channel_mult_emb as u64;
        let blocks = self.num_blocks as u64;
        let mut total = emb * (mc * self.channel_mult_noise as u64 + emb) + emb * emb;
        let mut prev = mc;
        for &mult in &self.channel_mult {
            let c = mc * mult as u64;
            let block = 9 * c * (prev.max(c) + c) + prev * c + 2 * emb * c;
            // Encoder blocks plus a downsampling block, decoder blocks plus one and an upsampler.
            total = total.saturating_add(block.saturating_mul(2 * blocks + 3));
            prev = c;
        }
        total.saturating_add(9 * mc * (self.in_channels + self.out_channels) as u64)
    }

    /// An estimate of the activation memory of one forward pass over `n` images, in bytes: at every
    /// level, each block's input, output, skip connection and normalised copies (about six maps of
    /// the level's width), times two for burn's temporaries. Used to refuse a batch up front.
    pub fn forward_bytes(&self, n: usize) -> u64 {
        let mc = self.model_channels as u64;
        let mut res = self.img_resolution as u64;
        let mut per_image: u64 = 0;
        for &mult in &self.channel_mult {
            let c = mc * mult as u64;
            let maps = 6 * (2 * self.num_blocks as u64 + 3);
            per_image = per_image.saturating_add(maps.saturating_mul(c * res * res));
            res = (res / 2).max(1);
        }
        per_image.saturating_mul(4 * 2).saturating_mul(n as u64)
    }
}

impl EdmConfig {
    /// Reads and validates `config.json`.
    ///
    /// `precond` and `model_type` must be present: they pick different networks, and a file that
    /// leaves them out is more likely the wrong file than a wish for EDM's defaults. Every other key
    /// left out takes EDM's default. The file must be a regular file of at most 16 MiB
    /// (`EDM_MAX_CONFIG_BYTES` raises it): a FIFO or `/dev/zero` given as a config is refused.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let limit = formats::Limit::from_env("EDM_MAX_CONFIG_BYTES", 16 << 20);
        let text = formats::read_input_to_string(path, Some(limit))?;
        let config_err = |message: String| EdmError::Config {
            path: path.to_path_buf(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| config_err(e.to_string()))?;
        for (key, choices) in [
            ("precond", "EDMPrecond, VPPrecond or VEPrecond"),
            ("model_type", "SongUNet or DhariwalUNet"),
        ] {
            if value.get(key).is_none() {
                return Err(config_err(format!(
                    "missing `{key}` ({choices}); it is not guessed, because it selects the network"
                )));
            }
        }
        let config: EdmConfig =
            serde_json::from_value(value).map_err(|e| config_err(e.to_string()))?;
        config.validate().map_err(config_err)?;
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

    /// Everything a forward pass or a sampler relies on, checked once: positive sizes, a resolution
    /// the U-Net can halve at every level, finite noise parameters with `sigma_min < sigma_max`,
    /// `sigma_data > 0`, and a network small enough to allocate ([`MAX_PARAMETERS`]).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let u = self.unet();
        if u.img_resolution == 0 || u.in_channels == 0 {
            return Err("img_resolution and img_channels must be positive".into());
        }
        if u.img_resolution > MAX_RESOLUTION || u.in_channels > MAX_CHANNELS {
            return Err(format!(
                "img_resolution {} or img_channels {} is over the limits {MAX_RESOLUTION} and \
                 {MAX_CHANNELS}",
                u.img_resolution, u.in_channels
            ));
        }
        if u.channel_mult.is_empty() || u.model_channels == 0 || u.channel_mult.contains(&0) {
            return Err("model_channels and channel_mult entries must be positive".into());
        }
        if u.channel_mult.len() > 16 || u.num_blocks > 64 {
            return Err(format!(
                "{} levels and {} blocks per level: at most 16 and 64",
                u.channel_mult.len(),
                u.num_blocks
            ));
        }
        let levels = u.channel_mult.len() - 1;
        if !u.img_resolution.is_multiple_of(1 << levels) {
            return Err(format!(
                "img_resolution {} is not divisible by 2^{levels} (channel_mult has {} levels, \
                 each halving the image)",
                u.img_resolution,
                levels + 1
            ));
        }
        if u.channel_mult_emb == 0 || u.channel_mult_noise == 0 {
            return Err("channel_mult_emb and channel_mult_noise must be positive".into());
        }
        if u.resample_filter.is_empty()
            || u.resample_filter.iter().any(|v| !v.is_finite())
            || u.resample_filter.iter().sum::<f64>() == 0.0
        {
            return Err("resample_filter must be finite and non-empty with a non-zero sum".into());
        }
        if !(0.0..1.0).contains(&u.dropout) {
            return Err(format!("dropout {} not in [0, 1)", u.dropout));
        }
        if !(0.0..1.0).contains(&u.label_dropout) {
            return Err(format!("label_dropout {} not in [0, 1)", u.label_dropout));
        }
        if self.model_type == ModelType::SongUNet
            && !(u.model_channels * u.channel_mult_noise).is_multiple_of(2)
        {
            return Err("noise embedding channels must be even".into());
        }
        if !(self.sigma_data.is_finite() && self.sigma_data > 0.0) {
            return Err(format!(
                "sigma_data {} must be a positive finite number (EDM divides by it)",
                self.sigma_data
            ));
        }
        if let Some(lo) = self.sigma_min {
            if lo.is_nan() || lo < 0.0 || lo.is_infinite() {
                return Err(format!("sigma_min {lo} must be finite and >= 0"));
            }
        }
        if let Some(hi) = self.sigma_max {
            if hi.is_nan() || hi <= 0.0 {
                return Err(format!("sigma_max {hi} must be positive"));
            }
            if let Some(lo) = self.sigma_min.filter(|&lo| lo >= hi) {
                return Err(format!(
                    "sigma_min {lo} is not below sigma_max {hi} (an inverted noise range)"
                ));
            }
        }
        for (name, v) in [("beta_d", self.beta_d), ("beta_min", self.beta_min)] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} {v} must be finite and >= 0"));
            }
        }
        if !(self.m.is_finite() && self.m >= 1.0) {
            return Err(format!("M {} must be a finite number >= 1", self.m));
        }
        if !(self.epsilon_t > 0.0 && self.epsilon_t < 1.0) {
            return Err(format!("epsilon_t {} must lie in (0, 1)", self.epsilon_t));
        }
        let params = u.parameter_estimate();
        let limit = max_parameters();
        if params > limit {
            return Err(format!(
                "the network would have about {params} parameters ({:.1} GiB of f32), over the \
                 limit of {limit} (set EDM_MAX_PARAMETERS to raise it)",
                params as f64 * 4.0 / (1u64 << 30) as f64
            ));
        }
        Ok(())
    }

    /// Checks a batch for the denoiser before any tensor is built: `x` `[N, C, H, W]` with the
    /// network's channels and resolution, `sigma` `[N]` positive and finite, and a forward pass whose
    /// estimated memory ([`UNetConfig::forward_bytes`]) fits [`max_forward_bytes`]. Without it, a
    /// wrong channel count or a 1×1 image panics inside a convolution and a 2048² image aborts on
    /// allocation.
    pub fn check_denoise_input(&self, x_shape: &[usize], sigma: &[f32]) -> Result<()> {
        let [n, c, h, w] = x_shape else {
            return Err(EdmError::Input(format!(
                "`x` must have 4 dimensions [N, C, H, W], got {x_shape:?}"
            )));
        };
        let (n, c, h, w) = (*n, *c, *h, *w);
        let res = self.img_resolution;
        if c != self.img_channels || h != res || w != res {
            return Err(EdmError::Input(format!(
                "`x` is [{n}, {c}, {h}, {w}] but the network takes [N, {}, {res}, {res}] images \
                 (img_channels {}, img_resolution {res} in its config.json)",
                self.img_channels, self.img_channels
            )));
        }
        if n == 0 {
            return Err(EdmError::Input("`x` holds no images (N = 0)".into()));
        }
        if sigma.len() != n {
            return Err(EdmError::Input(format!(
                "`sigma` has {} values for {n} images",
                sigma.len()
            )));
        }
        if let Some(i) = sigma.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(EdmError::Input(format!(
                "sigma[{i}] = {} is not a positive finite noise level",
                sigma[i]
            )));
        }
        let need = self.unet().forward_bytes(n);
        let limit = max_forward_bytes();
        if need > limit.bytes {
            return Err(EdmError::Input(format!(
                "a forward pass over {n} images needs about {} of memory, over the limit of {} \
                 (split the input into smaller batches, or set {} to raise it)",
                formats::input::human(need),
                formats::input::human(limit.bytes),
                limit.env
            )));
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

    fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The nonsense the adversarial pass of issue #20 found accepted without a word.
    #[test]
    fn nonsense_configs_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let base = r#""precond": "EDMPrecond", "model_type": "SongUNet", "img_resolution": 32, "img_channels": 3"#;
        let ok = write_config(dir.path(), &format!("{{{base}}}"));
        EdmConfig::from_file(&ok).unwrap();
        for (extra, expect) in [
            (r#""sigma_data": 0"#, "sigma_data 0"),
            (r#""sigma_data": -1"#, "sigma_data -1"),
            (r#""sigma_min": -0.5"#, "sigma_min -0.5"),
            (r#""sigma_min": 5, "sigma_max": 1"#, "inverted"),
            (r#""sigma_max": 0"#, "sigma_max 0"),
            (r#""M": 0"#, "M 0"),
            (r#""epsilon_t": 2"#, "epsilon_t 2"),
            (r#""label_dropout": 1.5"#, "label_dropout"),
            (r#""channel_mult": [1, 2, 2, 2, 2, 2, 2]"#, "not divisible"),
            (r#""model_channels": 1000000"#, "EDM_MAX_PARAMETERS"),
            (r#""resample_filter": [1, -1]"#, "resample_filter"),
            (r#""channel_mult_noise": 0"#, "channel_mult_noise"),
        ] {
            let p = write_config(dir.path(), &format!("{{{base}, {extra}}}"));
            let err = EdmConfig::from_file(&p).unwrap_err().to_string();
            assert!(err.contains(expect), "{extra}: {err}");
            assert!(err.contains("config.json"), "{err}");
        }
        // A missing precond or model_type is not silently defaulted.
        for key in ["precond", "model_type"] {
            let text = format!("{{{base}}}").replace(&format!("\"{key}\""), "\"unused\"");
            let text = text
                .replace(r#""unused": "EDMPrecond", "#, "")
                .replace(r#", "unused": "SongUNet""#, "");
            let p = write_config(dir.path(), &text);
            let err = EdmConfig::from_file(&p).unwrap_err().to_string();
            assert!(err.contains(&format!("missing `{key}`")), "{text}: {err}");
        }
        // A NaN cannot be written in JSON: a string or a bare NaN is a parse error.
        let p = write_config(dir.path(), &format!("{{{base}, \"sigma_data\": NaN}}"));
        assert!(EdmConfig::from_file(&p).is_err());
    }

    #[test]
    fn denoise_inputs_are_checked_against_the_network() {
        let c = EdmConfig::tiny(ModelType::SongUNet, 16, 1, 0);
        c.check_denoise_input(&[2, 1, 16, 16], &[1.0, 0.5]).unwrap();
        for (shape, sigma, expect) in [
            (vec![1, 3, 16, 16], vec![1.0], "[N, 1, 16, 16]"),
            (vec![1, 1, 1, 1], vec![1.0], "[N, 1, 16, 16]"),
            (vec![1, 1, 15, 15], vec![1.0], "[N, 1, 16, 16]"),
            (vec![1, 1, 2048, 2048], vec![1.0], "[N, 1, 16, 16]"),
            (vec![1, 16, 16], vec![1.0], "4 dimensions"),
            (vec![0, 1, 16, 16], vec![], "no images"),
            (vec![1, 1, 16, 16], vec![f32::NAN], "sigma[0]"),
            (vec![1, 1, 16, 16], vec![0.0], "sigma[0]"),
            (vec![2, 1, 16, 16], vec![1.0], "1 values for 2"),
            (vec![1 << 40, 1, 16, 16], vec![1.0; 0], "values for"),
        ] {
            let err = c
                .check_denoise_input(&shape, &sigma)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{shape:?}: {err}");
        }
    }

    #[test]
    fn parameter_estimate_is_within_twice_the_true_count() {
        type B = burn::backend::Flex;
        let dev = Default::default();
        for c in [
            EdmConfig::tiny(ModelType::SongUNet, 16, 1, 0),
            EdmConfig::tiny(ModelType::DhariwalUNet, 16, 3, 10),
        ] {
            let net = crate::precond::EdmPrecond::<B>::init(&c, 0, &dev).unwrap();
            let real: u64 = net
                .named_tensors()
                .iter()
                .map(|t| t.shape.iter().product::<usize>() as u64)
                .sum();
            let est = c.unet().parameter_estimate();
            assert!(est >= real / 2 && est <= real * 2, "{est} vs {real}");
        }
    }

    #[test]
    fn unknown_key_is_an_error() {
        let r: std::result::Result<EdmConfig, _> =
            serde_json::from_str(r#"{"img_resolution": 32, "img_channels": 3, "modle": 1}"#);
        assert!(r.is_err());
    }
}
