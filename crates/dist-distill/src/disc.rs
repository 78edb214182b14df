//! GDD's projected discriminator (Projected GAN, Sauer et al. 2021, as configured by Zyriix/GDD).
//!
//! `x ∈ [-1, 1]` → bilinear resize to `input_res` (224 in the reference) → frozen EfficientNet-Lite0
//! (its normalisation is mean 0.5 / std 0.5, which maps `(x+1)/2` back to `x`) → four feature maps
//! → fixed random **cross-channel mixing** (CCM: 1×1 convs to 64·[1,2,4,8] channels) → fixed random
//! **cross-scale mixing** (CSM: top-down add, ×2 bilinear upsampling with aligned corners, 1×1 conv
//! halving the channels) → four trainable **multi-scale heads** ([`MiniDisc`]), each a stack of
//! spectral-norm 4×4 stride-2 conv + batch norm + LeakyReLU(0.2) blocks down to 8×8 (nominal), then a
//! spectral-norm 4×4 conv to one logit per position, or, when labels exist, to a 64-d map projected
//! onto a class embedding (`SingleDiscCond`).
//!
//! The feature network is a [`BackboneKind`]: EfficientNet-Lite0 (every reference setting) or
//! torchvision's vgg16_bn ([`crate::vgg`], which the reference's CIFAR-10 setting `--backbone=1` uses
//! beside Lite0, with ImageNet input normalisation instead of Lite0's identity). The heads take the
//! CSM output, whose widths do not depend on the backbone, so [`MultiScaleD`] is the same for both.
//!
//! The feature network, CCM and CSM are frozen ([`ProjectedFeatures`]); only [`MultiScaleD`] is
//! trained. Random mixing weights use PyTorch's default conv init (U(±1/√fan_in)) from a seeded RNG.

use burn::module::{Module, Param};
use burn::tensor::activation::leaky_relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};
use exact_f32::{conv2d, matmul};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use std::path::Path;

use crate::effnet::EfficientNetLite0;
use crate::error::{DistillError, Result};
use crate::vgg::{Vgg16Bn, IMAGENET_MEAN, IMAGENET_STD};

/// Which frozen feature network the discriminator projects from (GDD's `backbones`, timm /
/// torchvision names in JSON).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum BackboneKind {
    /// timm's `tf_efficientnet_lite0` (the asset `efficientnet-lite0`).
    #[default]
    #[serde(rename = "tf_efficientnet_lite0")]
    EfficientNetLite0,
    /// torchvision's `vgg16_bn`, from a user-supplied state dict.
    #[serde(rename = "vgg16_bn")]
    Vgg16Bn,
}

impl BackboneKind {
    /// The reference's name (`tf_efficientnet_lite0`, `vgg16_bn`).
    pub fn name(self) -> &'static str {
        match self {
            Self::EfficientNetLite0 => "tf_efficientnet_lite0",
            Self::Vgg16Bn => "vgg16_bn",
        }
    }

    /// Parses a reference name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "tf_efficientnet_lite0" => Ok(Self::EfficientNetLite0),
            "vgg16_bn" => Ok(Self::Vgg16Bn),
            other => Err(DistillError::Config(format!(
                "unknown discriminator backbone `{other}` (known: tf_efficientnet_lite0, vgg16_bn)"
            ))),
        }
    }
}

/// A loaded frozen feature network: four feature maps (finest first) of an image in [-1, 1].
// One value per discriminator: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum FeatureNet<B: Backend> {
    EfficientNetLite0(EfficientNetLite0<B>),
    Vgg16Bn(Vgg16Bn<B>),
}

impl<B: Backend> From<EfficientNetLite0<B>> for FeatureNet<B> {
    fn from(n: EfficientNetLite0<B>) -> Self {
        Self::EfficientNetLite0(n)
    }
}

impl<B: Backend> From<Vgg16Bn<B>> for FeatureNet<B> {
    fn from(n: Vgg16Bn<B>) -> Self {
        Self::Vgg16Bn(n)
    }
}

/// The loaded feature networks of a run, one per discriminator, in the order of
/// [`DiscConfig::backbones`]. A single network converts into a one-element list, so callers with
/// one backbone pass it as before.
#[derive(Clone, Debug)]
pub struct Backbones<B: Backend>(pub Vec<FeatureNet<B>>);

impl<B: Backend> From<Vec<FeatureNet<B>>> for Backbones<B> {
    fn from(v: Vec<FeatureNet<B>>) -> Self {
        Self(v)
    }
}

impl<B: Backend> From<FeatureNet<B>> for Backbones<B> {
    fn from(n: FeatureNet<B>) -> Self {
        Self(vec![n])
    }
}

impl<B: Backend> From<EfficientNetLite0<B>> for Backbones<B> {
    fn from(n: EfficientNetLite0<B>) -> Self {
        Self(vec![n.into()])
    }
}

impl<B: Backend> From<Vgg16Bn<B>> for Backbones<B> {
    fn from(n: Vgg16Bn<B>) -> Self {
        Self(vec![n.into()])
    }
}

impl<B: Backend> FeatureNet<B> {
    /// Loads the backbone `kind` from `weights`. EfficientNet-Lite0 falls back to the cached asset
    /// `efficientnet-lite0` when `weights` is `None`; vgg16_bn has no asset (its torchvision weights
    /// are the user's), so `None` is a [`DistillError::Config`] saying which file to pass. File
    /// errors name the file (see [`Vgg16Bn::load_pth`]).
    pub fn load(kind: BackboneKind, weights: Option<&Path>, device: &B::Device) -> Result<Self> {
        match kind {
            BackboneKind::EfficientNetLite0 => Ok(EfficientNetLite0::load(weights, device)?.into()),
            BackboneKind::Vgg16Bn => {
                let p = weights.ok_or_else(|| {
                    DistillError::Config(
                        "the vgg16_bn discriminator backbone needs torchvision's vgg16_bn state \
                         dict (e.g. vgg16_bn-6c64b313.pth); none was given"
                            .into(),
                    )
                })?;
                Ok(Vgg16Bn::load_pth(p, device)?.into())
            }
        }
    }

    pub fn kind(&self) -> BackboneKind {
        match self {
            Self::EfficientNetLite0(_) => BackboneKind::EfficientNetLite0,
            Self::Vgg16Bn(_) => BackboneKind::Vgg16Bn,
        }
    }

    /// Channels of the four feature maps.
    pub fn channels(&self) -> [usize; 4] {
        match self {
            Self::EfficientNetLite0(_) => crate::effnet::EFFNET_CHANNELS,
            Self::Vgg16Bn(n) => n.feature_channels(),
        }
    }

    /// GDD's per-backbone input normalisation of `(x + 1) / 2` for `x` in [-1, 1]: Lite0's
    /// mean 0.5 / std 0.5 is the identity on `x`; torchvision's ImageNet statistics give
    /// `x·0.5/std + (0.5 − mean)/std` per channel. (It commutes with the bilinear resize, which is
    /// a convex combination of pixels, so its place before or after the resize does not matter.)
    pub fn normalise(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::EfficientNetLite0(_) => x,
            Self::Vgg16Bn(_) => {
                let [n, c, _, _] = x.dims();
                let device = x.device();
                let scale: Vec<f32> = IMAGENET_STD.iter().map(|s| (0.5 / s) as f32).collect();
                let shift: Vec<f32> = IMAGENET_MEAN
                    .iter()
                    .zip(IMAGENET_STD)
                    .map(|(m, s)| ((0.5 - m) / s) as f32)
                    .collect();
                let t = |v: Vec<f32>| {
                    let v = Tensor::<B, 1>::from_data(TensorData::new(v, [3]), &device);
                    exact_f32::per_channel(v, n)
                };
                debug_assert_eq!(c, 3, "RGB input");
                x * t(scale) + t(shift)
            }
        }
    }

    /// Four feature maps of an already normalised input ([`Self::normalise`]).
    pub fn forward(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 4] {
        match self {
            Self::EfficientNetLite0(n) => n.forward(x),
            Self::Vgg16Bn(n) => n.forward(x),
        }
    }
}

/// Discriminator configuration (defaults = the reference's CIFAR-10 setting).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DiscConfig {
    /// Side the image is resized to before the feature network (reference: 224).
    pub input_res: usize,
    /// CCM base width (reference: 64, expanded ×1,×2,×4,×8).
    pub cout: usize,
    /// Number of class labels (0 = unconditional heads).
    pub label_dim: usize,
    /// Width of the conditional projection map (reference: 64).
    pub cmap_dim: usize,
    /// Dimension of the class embedding (reference: 320, ImageNet embeddings of EfficientNet-Lite0).
    pub embed_dim: usize,
    /// Seed of the fixed random CCM/CSM weights and of the heads' initialisation.
    pub seed: u64,
    /// The frozen feature network (absent in configurations saved before it existed: Lite0).
    #[serde(default)]
    pub backbone: BackboneKind,
    /// Further feature networks, each with a projected discriminator of its own whose losses are
    /// added to the first one's (the reference's CIFAR-10 setting pairs vgg16_bn with
    /// EfficientNet-Lite0). Empty for one backbone, and then not written, so single-backbone
    /// configurations serialise as before and old checkpoints resume unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_backbones: Vec<BackboneKind>,
}

impl Default for DiscConfig {
    fn default() -> Self {
        Self {
            input_res: 224,
            cout: 64,
            label_dim: 0,
            cmap_dim: 64,
            embed_dim: 320,
            seed: 0,
            backbone: BackboneKind::EfficientNetLite0,
            extra_backbones: Vec::new(),
        }
    }
}

impl DiscConfig {
    /// Every feature network, in discriminator order: [`Self::backbone`], then
    /// [`Self::extra_backbones`].
    pub fn backbones(&self) -> Vec<BackboneKind> {
        std::iter::once(self.backbone)
            .chain(self.extra_backbones.iter().copied())
            .collect()
    }

    /// Sets the feature networks (first = [`Self::backbone`]). An empty list or one naming a
    /// backbone twice is a [`DistillError::Config`]: the reference keys its discriminators by
    /// backbone name, so a repeated one would silently collapse there.
    pub fn set_backbones(&mut self, list: &[BackboneKind]) -> Result<()> {
        let Some((&first, rest)) = list.split_first() else {
            return Err(DistillError::Config(
                "the discriminator needs at least one backbone".into(),
            ));
        };
        if let Some((i, k)) = list
            .iter()
            .enumerate()
            .find(|(i, k)| list[..*i].contains(k))
        {
            return Err(DistillError::Config(format!(
                "discriminator backbone {} is listed twice (at {} and {i})",
                k.name(),
                list.iter().position(|x| x == k).unwrap_or(0)
            )));
        }
        self.backbone = first;
        self.extra_backbones = rest.to_vec();
        Ok(())
    }

    /// The configuration of discriminator `i` alone (its backbone, no extras). Its random CCM/CSM
    /// and head initialisation are drawn from `seed + i`, so the first discriminator of a
    /// multi-backbone run is exactly that of the single-backbone run with the same seed, and the
    /// others differ from it as the reference's (drawn one after the other from one RNG) do.
    pub fn member(&self, i: usize) -> DiscConfig {
        let backbones = self.backbones();
        DiscConfig {
            backbone: backbones[i.min(backbones.len() - 1)],
            extra_backbones: Vec::new(),
            seed: self.seed.wrapping_add(i as u64),
            ..self.clone()
        }
    }

    /// The resolution the reference *assumes* when sizing the heads: with 224 inputs GDD passes
    /// `im_res = 256` (powers of two), so the heads' down-block count is computed from 256.
    pub fn nominal_res(&self) -> usize {
        self.input_res.next_power_of_two()
    }

    /// Nominal per-scale resolutions after CSM (= 2× the backbone's strides 4..32).
    pub fn head_resolutions(&self) -> [usize; 4] {
        let r = self.nominal_res();
        [r / 2, r / 4, r / 8, r / 16]
    }

    /// Channels after CCM (expand) and after CSM.
    pub fn ccm_channels(&self) -> [usize; 4] {
        let c = self.cout;
        [c, 2 * c, 4 * c, 8 * c]
    }

    pub fn head_channels(&self) -> [usize; 4] {
        let c = self.cout;
        [c, c, 2 * c, 4 * c]
    }

    /// Sides of the backbone's four feature maps for an `input_res` input: Lite0's TensorFlow
    /// "same" stride-2 layers round up (strides 4..32), vgg16_bn's max-pools round down (2..16).
    pub fn feature_sizes(&self) -> [usize; 4] {
        let r = self.input_res;
        match self.backbone {
            BackboneKind::EfficientNetLite0 => [4, 8, 16, 32].map(|s| r.div_ceil(s)),
            BackboneKind::Vgg16Bn => [2, 4, 8, 16].map(|s| r / s),
        }
    }

    /// Checks that the discriminator can run at `input_res`: CSM adds each map to the ×2 upsampled
    /// next coarser one, so every map must be exactly twice the next (true at the reference's 224;
    /// e.g. 112 fails for Lite0, whose maps are 28, 14, 7, 4), and each head's last conv must fit in
    /// what its down blocks leave. A typed error here instead of a shape panic in the first step.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DistillError::Config(m));
        if self.input_res == 0 || self.cout == 0 {
            return bad("discriminator input_res and cout must be > 0".into());
        }
        if self.label_dim > 0 && (self.cmap_dim == 0 || self.embed_dim == 0) {
            return bad("a conditional discriminator needs cmap_dim and embed_dim > 0".into());
        }
        let sizes = self.feature_sizes();
        if sizes[3] == 0 || (0..3).any(|i| sizes[i] != 2 * sizes[i + 1]) {
            return bad(format!(
                "discriminator input {0}x{0}: the {1} feature maps are {sizes:?} pixels, and cross-scale \
                 mixing needs each to be twice the next; use a side such as {2}",
                self.input_res,
                self.backbone.name(),
                match self.backbone {
                    BackboneKind::EfficientNetLite0 => "224, 192, 128 or 96 (a multiple of 32)",
                    BackboneKind::Vgg16Bn => "224, 128 or 64 (a multiple of 16, at least 32)",
                }
            ));
        }
        // Heads: input 2x the map (CSM upsamples), down blocks (4x4, stride 2, padding 1) halve it
        // (rounding down) until the nominal end size, then a k x k valid conv.
        let res = self.head_resolutions();
        let end_sz = if res[3] >= 8 { 8 } else { res[3] };
        let kernel = if end_sz >= 8 { 4 } else { (end_sz / 2).max(1) };
        for i in 0..4 {
            let (mut side, mut nominal) = (2 * sizes[i], res[i]);
            while nominal > end_sz {
                side /= 2;
                nominal /= 2;
            }
            if side < kernel {
                return bad(format!(
                    "discriminator input {0}x{0}: head {i} is left {side}x{side} for its {kernel}x{kernel} \
                     output conv; use a larger input_res",
                    self.input_res
                ));
            }
        }
        Ok(())
    }
}

fn uniform_vec(rng: &mut ChaCha12Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random::<f64>() * 2.0 - 1.0) * bound)
        .map(|v| v as f32)
        .collect()
}

fn normal_vec(rng: &mut ChaCha12Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect()
}

/// Plain conv with bias, PyTorch default init.
#[derive(Module, Debug)]
pub struct PlainConv<B: Backend> {
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> PlainConv<B> {
    fn new(rng: &mut ChaCha12Rng, cin: usize, cout: usize, k: usize, device: &B::Device) -> Self {
        let fan_in = cin * k * k;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let w = uniform_vec(rng, cout * fan_in, bound);
        let b = uniform_vec(rng, cout, bound);
        Self {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [cout, cin, k, k]),
                device,
            )),
            bias: Param::from_tensor(Tensor::from_data(TensorData::new(b, [cout]), device)),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let k = self.weight.dims()[2];
        conv2d(
            x,
            self.weight.val(),
            Some(self.bias.val()),
            ConvOptions::new([1, 1], [k / 2, k / 2], [1, 1], 1),
        )
    }
}

/// Frozen part: backbone + CCM + CSM.
#[derive(Module, Debug)]
pub struct ProjectedFeatures<B: Backend> {
    pub backbone: FeatureNet<B>,
    pub ccm: Vec<PlainConv<B>>,
    pub csm: Vec<PlainConv<B>>,
    pub input_res: usize,
}

impl<B: Backend> ProjectedFeatures<B> {
    /// Wraps a loaded backbone with fixed random mixing layers drawn from `cfg.seed`. The backbone
    /// given decides the CCM input widths and the normalisation; `cfg.backbone` is not consulted
    /// ([`Self::try_new`] checks that they agree).
    pub fn new(backbone: impl Into<FeatureNet<B>>, cfg: &DiscConfig, device: &B::Device) -> Self {
        let backbone = backbone.into();
        let mut rng = ChaCha12Rng::seed_from_u64(cfg.seed ^ 0x00cc_aa11);
        let ccm_ch = cfg.ccm_channels();
        let in_ch = backbone.channels();
        let ccm = (0..4)
            .map(|i| PlainConv::new(&mut rng, in_ch[i], ccm_ch[i], 1, device))
            .collect();
        // layer3_csm, layer2_csm, layer1_csm expand (halve); layer0_csm keeps its width.
        let csm = (0..4)
            .map(|i| {
                let cin = ccm_ch[i];
                let cout = if i == 0 { cin } else { cin / 2 };
                PlainConv::new(&mut rng, cin, cout, 1, device)
            })
            .collect();
        Self {
            backbone,
            ccm,
            csm,
            input_res: cfg.input_res,
        }
        .no_grad()
    }

    /// [`Self::new`], refusing a backbone other than `cfg.backbone` and a configuration that
    /// [`DiscConfig::validate`] rejects.
    pub fn try_new(
        backbone: impl Into<FeatureNet<B>>,
        cfg: &DiscConfig,
        device: &B::Device,
    ) -> Result<Self> {
        let backbone = backbone.into();
        cfg.validate()?;
        if backbone.kind() != cfg.backbone {
            return Err(DistillError::Config(format!(
                "the discriminator is configured for backbone {} but {} was loaded",
                cfg.backbone.name(),
                backbone.kind().name()
            )));
        }
        Ok(Self::new(backbone, cfg, device))
    }

    /// The backbone's four raw feature maps of an image batch in [-1, 1]: normalised for the
    /// backbone, resized to `input_res` (bilinear, no corner alignment) when it differs.
    pub fn backbone_features(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 4] {
        let [_, _, h, w] = x.dims();
        let x = self.backbone.normalise(x);
        let x = if h != self.input_res || w != self.input_res {
            interpolate(
                x,
                [self.input_res, self.input_res],
                InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
            )
        } else {
            x
        };
        self.backbone.forward(x)
    }

    /// Features for the four heads, finest first. `x` is an image batch in [-1, 1].
    pub fn forward(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 4] {
        let feats = self.backbone_features(x);
        let mixed: Vec<Tensor<B, 4>> = feats
            .into_iter()
            .zip(&self.ccm)
            .map(|(f, c)| c.forward(f))
            .collect();
        let up = |t: Tensor<B, 4>| {
            let [_, _, h, w] = t.dims();
            interpolate(
                t,
                [2 * h, 2 * w],
                InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(true),
            )
        };
        let s3 = self.csm[3].forward(up(mixed[3].clone()));
        let s2 = self.csm[2].forward(up(s3.clone() + mixed[2].clone()));
        let s1 = self.csm[1].forward(up(s2.clone() + mixed[1].clone()));
        let s0 = self.csm[0].forward(up(s1.clone() + mixed[0].clone()));
        [s0, s1, s2, s3]
    }
}

/// Spectral-normalised convolution (`torch.nn.utils.spectral_norm`, one power iteration).
///
/// `u`, `v` are the power-iteration vectors (frozen params, i.e. buffers); the weight used is
/// `W / σ` with `σ = uᵀ W v`, the gradient flowing through `W` only, as in PyTorch.
#[derive(Module, Debug)]
pub struct SnConv<B: Backend> {
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub u: Param<Tensor<B, 1>>,
    pub v: Param<Tensor<B, 1>>,
    pub stride: usize,
    pub padding: usize,
}

/// A fresh leaf tensor with the same values (Params must wrap leaves on autodiff backends).
fn leaf<B: Backend>(t: Tensor<B, 1>) -> Tensor<B, 1> {
    let device = t.device();
    Tensor::from_data(t.into_data(), &device)
}

fn l2_normalize<B: Backend>(t: Tensor<B, 1>) -> Tensor<B, 1> {
    let n = t.clone().square().sum().sqrt().clamp_min(1e-12);
    t / n
}

impl<B: Backend> SnConv<B> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        rng: &mut ChaCha12Rng,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        let fan_in = cin * k * k;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let w = uniform_vec(rng, cout * fan_in, bound);
        let b = bias.then(|| uniform_vec(rng, cout, bound));
        let u = normal_vec(rng, cout);
        let v = normal_vec(rng, fan_in);
        let mut conv = Self {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [cout, cin, k, k]),
                device,
            )),
            bias: b
                .map(|b| Param::from_tensor(Tensor::from_data(TensorData::new(b, [cout]), device))),
            u: Param::from_tensor(leaf(l2_normalize(Tensor::from_data(
                TensorData::new(u, [cout]),
                device,
            ))))
            .set_require_grad(false),
            v: Param::from_tensor(leaf(l2_normalize(Tensor::from_data(
                TensorData::new(v, [fan_in]),
                device,
            ))))
            .set_require_grad(false),
            stride,
            padding,
        };
        // PyTorch runs 15 power iterations at registration time.
        for _ in 0..15 {
            conv = conv.power_iteration();
        }
        conv
    }

    /// One power iteration (no gradient): `v ← normalize(Wᵀu)`, `u ← normalize(W v)`.
    pub fn power_iteration(self) -> Self {
        let w = self.weight.val().detach();
        let [co, ci, kh, kw] = w.dims();
        let wm = w.reshape([co, ci * kh * kw]);
        let u = self.u.val().detach();
        let v = l2_normalize(
            wm.clone()
                .transpose()
                .matmul(u.unsqueeze_dim(1))
                .squeeze_dim(1),
        );
        let u = l2_normalize(wm.matmul(v.clone().unsqueeze_dim(1)).squeeze_dim(1));
        Self {
            u: Param::initialized(self.u.id, leaf(u)).set_require_grad(false),
            v: Param::initialized(self.v.id, leaf(v)).set_require_grad(false),
            ..self
        }
    }

    /// Largest singular value estimate σ = uᵀ W v (differentiable in W).
    pub fn sigma(&self) -> Tensor<B, 1> {
        let w = self.weight.val();
        let [co, ci, kh, kw] = w.dims();
        let wm = w.reshape([co, ci * kh * kw]);
        let wv = wm
            .matmul(self.v.val().detach().unsqueeze_dim(1))
            .squeeze_dim(1);
        (self.u.val().detach() * wv).sum()
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let sigma = self.sigma();
        let w = self.weight.val() / sigma.reshape([1, 1, 1, 1]);
        conv2d(
            x,
            w,
            self.bias.as_ref().map(|b| b.val()),
            ConvOptions::new(
                [self.stride, self.stride],
                [self.padding, self.padding],
                [1, 1],
                1,
            ),
        )
    }
}

/// Batch norm in training mode (batch statistics, biased variance, eps 1e-5). GDD's discriminator
/// is never switched to eval mode, so running statistics are never used and are not kept.
#[derive(Module, Debug)]
pub struct BatchNormTrain<B: Backend> {
    pub gamma: Param<Tensor<B, 1>>,
    pub beta: Param<Tensor<B, 1>>,
}

impl<B: Backend> BatchNormTrain<B> {
    fn new(c: usize, device: &B::Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([c], device)),
            beta: Param::from_tensor(Tensor::zeros([c], device)),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let flat = x.clone().swap_dims(0, 1).reshape([c, n * h * w]);
        let mean = flat.clone().mean_dim(1);
        let var = (flat - mean.clone()).square().mean_dim(1);
        // Per-channel operands as [N, C, 1, 1] (see `exact_f32::per_channel`: burn-flex runs a
        // [1, C, 1, 1] broadcast element by element) and one scale per channel: three passes
        // over the activation instead of four.
        let scale = (var.reshape([c]) + 1e-5).sqrt().recip() * self.gamma.val();
        let per_channel = |v: Tensor<B, 1>| exact_f32::per_channel(v, n);
        (x - per_channel(mean.reshape([c]))) * per_channel(scale) + per_channel(self.beta.val())
    }
}

/// `DownBlock`: SN conv 4×4 stride 2 (bias) → batch norm → LeakyReLU(0.2).
#[derive(Module, Debug)]
pub struct DownBlock<B: Backend> {
    pub conv: SnConv<B>,
    pub norm: BatchNormTrain<B>,
}

impl<B: Backend> DownBlock<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        leaky_relu(self.norm.forward(self.conv.forward(x)), 0.2)
    }
}

/// Class-conditional projection of `SingleDiscCond`: embedding → StyleGAN2 FC (equalised lr,
/// LeakyReLU with gain √2) → inner product with the head's `cmap_dim` output map.
#[derive(Module, Debug)]
pub struct ClassProjection<B: Backend> {
    /// Class embedding table [label_dim, embed_dim], N(0,1) init.
    pub embed: Param<Tensor<B, 2>>,
    /// FC weight [cmap_dim, embed_dim], N(0,1) init, scaled by 1/√embed_dim at run time.
    pub fc_weight: Param<Tensor<B, 2>>,
    pub fc_bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> ClassProjection<B> {
    /// `labels` one-hot [N, label_dim] → cmap [N, cmap_dim].
    pub fn cmap(&self, labels: Tensor<B, 2>) -> Tensor<B, 2> {
        let embed_dim = self.embed.dims()[1];
        let e = matmul(labels, self.embed.val());
        let w = self
            .fc_weight
            .val()
            .mul_scalar(1.0 / (embed_dim as f64).sqrt());
        let y = matmul(e, w.transpose()) + self.fc_bias.val().unsqueeze_dim(0);
        leaky_relu(y, 0.2).mul_scalar(2f64.sqrt())
    }
}

/// One multi-scale head (`SingleDisc` / `SingleDiscCond`).
#[derive(Module, Debug)]
pub struct MiniDisc<B: Backend> {
    pub down: Vec<DownBlock<B>>,
    pub out: SnConv<B>,
    pub proj: Option<ClassProjection<B>>,
}

/// Channel widths keyed by nominal resolution (Projected GAN's `nfc_midas`).
fn nfc(res: usize) -> usize {
    match res {
        1 => 2048,
        2 => 1024,
        4 | 8 => 512,
        16 => 256,
        32 => 128,
        64 | 128 => 64,
        256 => 32,
        512 => 16,
        _ => 8,
    }
}

impl<B: Backend> MiniDisc<B> {
    fn new(
        rng: &mut ChaCha12Rng,
        cin: usize,
        start_sz: usize,
        end_sz: usize,
        cfg: &DiscConfig,
        device: &B::Device,
    ) -> Self {
        let mut down = Vec::new();
        let mut sz = start_sz;
        let mut c = cin;
        while sz > end_sz {
            let co = nfc(sz / 2);
            down.push(DownBlock {
                conv: SnConv::new(rng, c, co, 4, 2, 1, true, device),
                norm: BatchNormTrain::new(co, device),
            });
            c = co;
            sz /= 2;
        }
        let kernel = if end_sz >= 8 { 4 } else { (end_sz / 2).max(1) };
        let out_dim = if cfg.label_dim > 0 { cfg.cmap_dim } else { 1 };
        let out = SnConv::new(rng, c, out_dim, kernel, 1, 0, false, device);
        let proj = (cfg.label_dim > 0).then(|| ClassProjection {
            embed: Param::from_tensor(Tensor::from_data(
                TensorData::new(
                    normal_vec(rng, cfg.label_dim * cfg.embed_dim),
                    [cfg.label_dim, cfg.embed_dim],
                ),
                device,
            )),
            fc_weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(
                    normal_vec(rng, cfg.cmap_dim * cfg.embed_dim),
                    [cfg.cmap_dim, cfg.embed_dim],
                ),
                device,
            )),
            fc_bias: Param::from_tensor(Tensor::zeros([cfg.cmap_dim], device)),
        });
        Self { down, out, proj }
    }

    /// Logits [N, positions].
    pub fn forward(&self, x: Tensor<B, 4>, labels: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        let mut h = x;
        for d in &self.down {
            h = d.forward(h);
        }
        let h = self.out.forward(h);
        let [n, c, hh, ww] = h.dims();
        match (&self.proj, labels) {
            (Some(p), Some(l)) => {
                let cmap = p.cmap(l).reshape([n, c, 1, 1]);
                (h * cmap)
                    .sum_dim(1)
                    .mul_scalar(1.0 / (c as f64).sqrt())
                    .reshape([n, hh * ww])
            }
            _ => h.reshape([n, c * hh * ww]),
        }
    }

    fn power_iteration(self) -> Self {
        Self {
            down: self
                .down
                .into_iter()
                .map(|d| DownBlock {
                    conv: d.conv.power_iteration(),
                    norm: d.norm,
                })
                .collect(),
            out: self.out.power_iteration(),
            proj: self.proj,
        }
    }
}

/// The four trainable heads (`MultiScaleD`).
#[derive(Module, Debug)]
pub struct MultiScaleD<B: Backend> {
    pub heads: Vec<MiniDisc<B>>,
}

impl<B: Backend> MultiScaleD<B> {
    pub fn new(cfg: &DiscConfig, device: &B::Device) -> Self {
        let mut rng = ChaCha12Rng::seed_from_u64(cfg.seed ^ 0xd15c_0000);
        let res = cfg.head_resolutions();
        let ch = cfg.head_channels();
        let end_sz = if res[3] >= 8 { 8 } else { res[3] };
        let heads = (0..4)
            .map(|i| MiniDisc::new(&mut rng, ch[i], res[i], end_sz, cfg, device))
            .collect();
        Self { heads }
    }

    /// Logits of every head concatenated per sample: [N, total positions] (the reference's
    /// `torch.cat(all_logits, dim=1)`).
    pub fn forward(&self, feats: &[Tensor<B, 4>; 4], labels: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        let logits: Vec<Tensor<B, 2>> = self
            .heads
            .iter()
            .zip(feats.iter())
            .map(|(h, f)| h.forward(f.clone(), labels.clone()))
            .collect();
        Tensor::cat(logits, 1)
    }

    /// [`Self::forward`] with the batch-norm statistics taken over consecutive groups of `group`
    /// samples ("ghost" batches; 0 or ≥ N: the whole batch). Under PyTorch DDP the reference's
    /// batch norms see each GPU's batch only; a group of batch/GPUs reproduces that on one device.
    pub fn forward_grouped(
        &self,
        feats: &[Tensor<B, 4>; 4],
        labels: Option<Tensor<B, 2>>,
        group: usize,
    ) -> Tensor<B, 2> {
        let n = feats[0].dims()[0];
        if group == 0 || group >= n {
            return self.forward(feats, labels);
        }
        let chunks: Vec<Tensor<B, 2>> = (0..n)
            .step_by(group)
            .map(|s| {
                let e = (s + group).min(n);
                let f = feats.clone().map(|t| t.narrow(0, s, e - s));
                self.forward(&f, labels.clone().map(|l| l.narrow(0, s, e - s)))
            })
            .collect();
        Tensor::cat(chunks, 0)
    }

    /// One spectral-norm power iteration for every layer (done once per training step).
    pub fn power_iteration(self) -> Self {
        Self {
            heads: self
                .heads
                .into_iter()
                .map(|h| h.power_iteration())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn spectral_norm_sigma_converges_to_top_singular_value() {
        let dev = Default::default();
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        let mut c = SnConv::<Flex>::new(&mut rng, 3, 5, 3, 1, 1, true, &dev);
        for _ in 0..200 {
            c = c.power_iteration();
        }
        // Largest singular value via power iteration on WᵀW computed independently in f64.
        let w: Vec<f32> = c.weight.val().into_data().into_vec().unwrap();
        let (m, n) = (5usize, 27usize);
        let mut v = vec![1.0f64; n];
        let mut s = 0.0;
        for _ in 0..500 {
            let wv: Vec<f64> = (0..m)
                .map(|i| (0..n).map(|j| w[i * n + j] as f64 * v[j]).sum())
                .collect();
            let wtwv: Vec<f64> = (0..n)
                .map(|j| (0..m).map(|i| w[i * n + j] as f64 * wv[i]).sum())
                .collect();
            let norm = wtwv.iter().map(|x| x * x).sum::<f64>().sqrt();
            v = wtwv.iter().map(|x| x / norm).collect();
            s = norm.sqrt();
        }
        let sigma: f32 = c.sigma().into_scalar();
        assert!((sigma as f64 - s).abs() < 1e-4 * s, "{sigma} vs {s}");
    }

    #[test]
    fn head_geometry_matches_reference_at_224() {
        let cfg = DiscConfig::default();
        assert_eq!(cfg.head_resolutions(), [128, 64, 32, 16]);
        let d = MultiScaleD::<Flex>::new(&cfg, &Default::default());
        let downs: Vec<usize> = d.heads.iter().map(|h| h.down.len()).collect();
        assert_eq!(downs, vec![4, 3, 2, 1]);
        // Head 0: 64 -> 64 -> 128 -> 256 -> 512 channels, final conv 512 -> 1, kernel 4.
        let widths: Vec<usize> = d.heads[0]
            .down
            .iter()
            .map(|b| b.conv.weight.dims()[0])
            .collect();
        assert_eq!(widths, vec![64, 128, 256, 512]);
        assert_eq!(d.heads[0].out.weight.dims(), [1, 512, 4, 4]);
        assert_eq!(d.heads[3].down[0].conv.weight.dims(), [512, 256, 4, 4]);
    }

    /// `validate` accepts exactly the input sides at which the whole discriminator runs.
    #[test]
    fn validate_matches_what_runs() {
        use crate::vgg::{Vgg16Bn, VggConfig};
        let dev = Default::default();
        let cases: [(BackboneKind, &[usize]); 2] = [
            (BackboneKind::EfficientNetLite0, &[64, 72, 96, 112]),
            (BackboneKind::Vgg16Bn, &[24, 32, 33, 36, 48, 64]),
        ];
        let mut seen = [0usize; 2]; // (accepted, refused)
        for (kind, sides) in cases {
            for &r in sides {
                let cfg = DiscConfig {
                    input_res: r,
                    cout: 4,
                    backbone: kind,
                    ..DiscConfig::default()
                };
                let net: FeatureNet<Flex> = match kind {
                    BackboneKind::EfficientNetLite0 => EfficientNetLite0::random(0, &dev).into(),
                    BackboneKind::Vgg16Bn => {
                        Vgg16Bn::random(&VggConfig::width_divided(16), 0, &dev).into()
                    }
                };
                let ok = cfg.validate().is_ok();
                let runs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let pf = ProjectedFeatures::new(net, &cfg, &dev);
                    let d = MultiScaleD::<Flex>::new(&cfg, &dev);
                    let x = Tensor::<Flex, 4>::zeros([2, 3, r, r], &dev);
                    d.forward(&pf.forward(x), None).dims()
                }))
                .is_ok();
                assert_eq!(
                    ok,
                    runs,
                    "{} at {r}: validate {ok}, runs {runs}",
                    kind.name()
                );
                seen[usize::from(!ok)] += 1;
            }
        }
        // Both outcomes occur, so the comparison could fail either way.
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
        assert!(DiscConfig::default().validate().is_ok());
        let vgg224 = DiscConfig {
            backbone: BackboneKind::Vgg16Bn,
            ..DiscConfig::default()
        };
        assert_eq!(vgg224.feature_sizes(), [112, 56, 28, 14]);
        assert!(vgg224.validate().is_ok());
    }

    #[test]
    fn batchnorm_uses_batch_statistics() {
        let dev = Default::default();
        let bn = BatchNormTrain::<Flex>::new(2, &dev);
        let x = Tensor::<Flex, 4>::from_data(
            TensorData::new((0..16).map(|v| v as f32).collect::<Vec<_>>(), [2, 2, 2, 2]),
            &dev,
        );
        let y: Vec<f32> = bn.forward(x).into_data().into_vec().unwrap();
        // channel 0 holds 0,1,2,3,8,9,10,11: mean 5.5, biased var 17.25
        let expect = (0.0 - 5.5) / (17.25f64 + 1e-5).sqrt();
        assert!((y[0] as f64 - expect).abs() < 1e-5);
    }
}
