//! torchvision's `vgg16_bn`, the second feature network of GDD's projected discriminator.
//!
//! Zyriix/GDD's CIFAR-10 setting (`train.py --backbone=1`) pairs `vgg16_bn` with
//! EfficientNet-Lite0. Its `_make_pretrained('vgg16_bn')` splits torchvision's `features` at module
//! indices [13, 23, 33, 43]:
//!
//! | scale | torchvision modules | content                                   | channels | stride |
//! |-------|---------------------|-------------------------------------------|----------|--------|
//! | 0     | features[0:13]      | 2×conv64, max-pool, 2×conv128             | 128      | 2      |
//! | 1     | features[13:23]     | max-pool, 3×conv256                       | 256      | 4      |
//! | 2     | features[23:33]     | max-pool, 3×conv512                       | 512      | 8      |
//! | 3     | features[33:43]     | max-pool, 3×conv512 (last pool not run)   | 512      | 16     |
//!
//! Every conv is 3×3, padding 1, with bias, followed by batch norm (eps 1e-5) and ReLU; every pool is
//! 2×2 stride 2 (floor). The network is frozen in eval mode, so each batch norm is folded into its
//! conv at load time. Its input is the ImageNet-normalised image (`Normalize(mean, std)((x+1)/2)`,
//! GDD's `get_backbone_normstats`), which [`crate::disc::FeatureNet`] applies.
//!
//! Weights come from a torchvision state dict (`vgg16_bn-6c64b313.pth` or any
//! `torch.save(model.state_dict())`, zip or legacy format) through [`crate::pth`], which never runs
//! anything in the file. The stage widths are a [`VggConfig`] so that a width-reduced network of the
//! same structure can stand in for the 528 MB original in tests.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};
use exact_f32::conv2d;
use serde::{Deserialize, Serialize};

use crate::error::{DistillError, Result};
use crate::pth::{fold_batch_norm, tensor_checked, PthSource, TensorSource};

/// Batch-norm epsilon of torchvision's `BatchNorm2d`.
const BN_EPS: f32 = 1e-5;

/// Convs per stage of VGG-16 (torchvision cfg 'D').
const STAGE_CONVS: [usize; 5] = [2, 2, 3, 3, 3];

/// torchvision's VGG-16 stage widths.
pub const VGG16_WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];

/// ImageNet normalisation of torchvision backbones (GDD's `NORMALIZED_IMAGENET`).
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// Stage widths of a VGG16-BN. [`VggConfig::vgg16_bn`] is the real network; other widths keep the
/// structure (module indices, tensor names, split points) and exist for small test fixtures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VggConfig {
    pub widths: [usize; 5],
}

impl VggConfig {
    /// torchvision's `vgg16_bn`.
    pub fn vgg16_bn() -> Self {
        Self {
            widths: VGG16_WIDTHS,
        }
    }

    /// The VGG16-BN structure with every width divided by `divisor` (the test fixture uses 16).
    pub fn width_divided(divisor: usize) -> Self {
        Self {
            widths: VGG16_WIDTHS.map(|w| (w / divisor.max(1)).max(1)),
        }
    }

    /// Channels of the four feature scales GDD projects from.
    pub fn feature_channels(&self) -> [usize; 4] {
        let w = self.widths;
        [w[1], w[2], w[3], w[4]]
    }

    /// `(conv index, bn index, cin, cout)` in torchvision's `features` numbering, per stage.
    fn layout(&self) -> Vec<Vec<(usize, usize, usize, usize)>> {
        let mut idx = 0;
        let mut cin = 3;
        let mut stages = Vec::with_capacity(5);
        for (s, &n) in STAGE_CONVS.iter().enumerate() {
            let mut convs = Vec::with_capacity(n);
            for _ in 0..n {
                let cout = self.widths[s];
                convs.push((idx, idx + 1, cin, cout));
                cin = cout;
                idx += 3; // conv, bn, relu
            }
            stages.push(convs);
            idx += 1; // max-pool
        }
        stages
    }

    /// Every tensor name and shape the network reads (`features.N.*`).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for (conv, bn, cin, cout) in self.layout().into_iter().flatten() {
            out.push((format!("features.{conv}.weight"), vec![cout, cin, 3, 3]));
            out.push((format!("features.{conv}.bias"), vec![cout]));
            for leaf in ["weight", "bias", "running_mean", "running_var"] {
                out.push((format!("features.{bn}.{leaf}"), vec![cout]));
            }
        }
        out
    }
}

impl Default for VggConfig {
    fn default() -> Self {
        Self::vgg16_bn()
    }
}

/// 3×3 conv (padding 1) with its batch norm folded in, then ReLU.
#[derive(Module, Debug)]
pub struct VggConv<B: Backend> {
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> VggConv<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = conv2d(
            x,
            self.weight.val(),
            Some(self.bias.val()),
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        burn::tensor::activation::relu(y)
    }
}

/// The frozen VGG16-BN trunk (13 folded convs), returning GDD's four feature scales.
#[derive(Module, Debug)]
pub struct Vgg16Bn<B: Backend> {
    /// The convs in order, [`STAGE_CONVS`] per stage.
    pub convs: Vec<VggConv<B>>,
}

impl<B: Backend> Vgg16Bn<B> {
    /// Loads torchvision's `vgg16_bn` from a state dict file (zip or legacy `torch.save`). Errors
    /// name the file: [`DistillError::Io`] when it cannot be read, [`DistillError::Pytorch`] when it
    /// is not a state dict, [`DistillError::MissingTensor`] / [`DistillError::Shape`] when a tensor
    /// is absent or has another shape (e.g. a VGG of another depth or width).
    pub fn load_pth(path: &Path, device: &B::Device) -> Result<Self> {
        Self::load_pth_with(path, &VggConfig::vgg16_bn(), device)
    }

    /// [`Self::load_pth`] for the widths of `cfg`.
    pub fn load_pth_with(path: &Path, cfg: &VggConfig, device: &B::Device) -> Result<Self> {
        let mut src = PthSource::open(path)?;
        Self::from_source(&mut src, cfg, device).map_err(|e| match e {
            DistillError::Shape {
                name,
                found,
                expected,
            } => DistillError::Shape {
                name: format!("{name}` in `{}", path.display()),
                found,
                expected,
            },
            other => other,
        })
    }

    /// A random-weight network with the structure of `cfg` (tests and benchmarks).
    pub fn random(cfg: &VggConfig, seed: u64, device: &B::Device) -> Self {
        Self::from_source(&mut RandomVggSource::new(cfg, seed), cfg, device)
            .expect("the random source has the configuration's shapes")
    }

    /// Builds the trunk from named tensors (`features.N.weight`, ...), checking every shape and
    /// folding each batch norm into its conv: `w·γ/√(var+ε)`, `(b − mean)·γ/√(var+ε) + β`.
    pub fn from_source(
        src: &mut dyn TensorSource,
        cfg: &VggConfig,
        device: &B::Device,
    ) -> Result<Self> {
        let mut convs = Vec::with_capacity(13);
        for (conv, bn, cin, cout) in cfg.layout().into_iter().flatten() {
            let mut w =
                tensor_checked(src, &format!("features.{conv}.weight"), &[cout, cin, 3, 3])?;
            let b = tensor_checked(src, &format!("features.{conv}.bias"), &[cout])?;
            let bias = fold_batch_norm(
                src,
                &format!("features.{bn}"),
                &mut w,
                Some(&b),
                cout,
                BN_EPS,
            )?;
            convs.push(VggConv {
                weight: Param::from_tensor(Tensor::from_data(
                    TensorData::new(w, [cout, cin, 3, 3]),
                    device,
                ))
                .set_require_grad(false),
                bias: Param::from_tensor(Tensor::from_data(TensorData::new(bias, [cout]), device))
                    .set_require_grad(false),
            });
        }
        Ok(Self { convs })
    }

    /// Channels of the four feature scales (from the loaded weights).
    pub fn feature_channels(&self) -> [usize; 4] {
        let last_of_stage = |s: usize| -> usize {
            let end: usize = STAGE_CONVS[..=s].iter().sum();
            self.convs[end - 1].weight.dims()[0]
        };
        [1, 2, 3, 4].map(last_of_stage)
    }

    /// The four feature maps (strides 2, 4, 8, 16) of an ImageNet-normalised input.
    pub fn forward(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 4] {
        let pool = |t: Tensor<B, 4>| max_pool2d(t, [2, 2], [2, 2], [0, 0], [1, 1], false);
        let mut convs = self.convs.iter();
        let mut stage = |mut h: Tensor<B, 4>, s: usize| {
            for _ in 0..STAGE_CONVS[s] {
                h = convs.next().expect("13 convs").forward(h);
            }
            h
        };
        let h = stage(x, 0);
        let f0 = stage(pool(h), 1);
        let f1 = stage(pool(f0.clone()), 2);
        let f2 = stage(pool(f1.clone()), 3);
        let f3 = stage(pool(f2.clone()), 4);
        [f0, f1, f2, f3]
    }
}

/// Random tensors with a VGG16-BN's names and shapes: He-uniform convs, batch norms with positive
/// variances, so activations stay O(1) through 13 layers.
pub struct RandomVggSource {
    rng: rand_chacha::ChaCha12Rng,
    shapes: std::collections::HashMap<String, Vec<usize>>,
}

impl RandomVggSource {
    pub fn new(cfg: &VggConfig, seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            rng: rand_chacha::ChaCha12Rng::seed_from_u64(seed),
            shapes: cfg.tensor_shapes().into_iter().collect(),
        }
    }
}

impl TensorSource for RandomVggSource {
    fn tensor(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        use rand::Rng;
        let shape = self
            .shapes
            .get(name)
            .cloned()
            .ok_or_else(|| DistillError::MissingTensor {
                name: name.to_string(),
                source_name: "random VGG16-BN".into(),
            })?;
        let n: usize = shape.iter().product();
        let v: Vec<f32> = if name.ends_with("running_var") {
            (0..n).map(|_| self.rng.random_range(0.5f32..1.5)).collect()
        } else if shape.len() == 4 {
            let b = (6.0 / (shape[1] * 9) as f32).sqrt();
            (0..n).map(|_| self.rng.random_range(-b..b)).collect()
        } else if name.ends_with(".weight") {
            (0..n).map(|_| self.rng.random_range(0.8f32..1.2)).collect()
        } else {
            (0..n)
                .map(|_| self.rng.random_range(-0.1f32..0.1))
                .collect()
        };
        Ok((shape, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn layout_matches_torchvision_indices() {
        let cfg = VggConfig::vgg16_bn();
        let convs: Vec<usize> = cfg.layout().into_iter().flatten().map(|c| c.0).collect();
        // torchvision vgg16_bn: convs at 0,3 | 7,10 | 14,17,20 | 24,27,30 | 34,37,40; the split
        // points 13, 23, 33, 43 are the pools after stages 1..4.
        assert_eq!(convs, vec![0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]);
        assert_eq!(cfg.feature_channels(), [128, 256, 512, 512]);
        assert_eq!(cfg.tensor_shapes().len(), 13 * 6);
    }

    #[test]
    fn folded_batch_norm_matches_formula() {
        // conv weight 0.5, conv bias 0.25; bn γ 2, β −0.75, mean 0.5, var 3.
        struct Consts(std::collections::HashMap<String, Vec<usize>>, Vec<usize>);
        impl TensorSource for Consts {
            fn tensor(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
                let s = self.0[name].clone();
                let idx: usize = name.split('.').nth(1).unwrap().parse().unwrap();
                let conv = self.1.contains(&idx);
                let v = match (conv, name.rsplit('.').next().unwrap()) {
                    (true, "weight") => 0.5,
                    (true, "bias") => 0.25,
                    (false, "weight") => 2.0,
                    (false, "bias") => -0.75,
                    (false, "running_mean") => 0.5,
                    (false, "running_var") => 3.0,
                    _ => unreachable!("{name}"),
                };
                let n = s.iter().product();
                Ok((s, vec![v; n]))
            }
        }
        let cfg = VggConfig::width_divided(16);
        let convs = cfg.layout().into_iter().flatten().map(|c| c.0).collect();
        let mut src = Consts(cfg.tensor_shapes().into_iter().collect(), convs);
        let net = Vgg16Bn::<Flex>::from_source(&mut src, &cfg, &Default::default()).unwrap();
        assert_eq!(net.feature_channels(), [8, 16, 32, 32]);
        let scale = 2.0 / (3.0f32 + BN_EPS).sqrt();
        for c in &net.convs {
            let b: Vec<f32> = c.bias.val().into_data().into_vec().unwrap();
            let w: Vec<f32> = c.weight.val().into_data().into_vec().unwrap();
            assert!(b
                .iter()
                .all(|v| (v - ((0.25 - 0.5) * scale - 0.75)).abs() < 1e-6));
            assert!(w.iter().all(|v| (v - 0.5 * scale).abs() < 1e-6));
        }
    }
}
