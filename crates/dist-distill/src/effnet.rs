//! EfficientNet-Lite0, the frozen feature network of GDD's projected discriminator.
//!
//! This is timm's `tf_efficientnet_lite0` (what Zyriix/GDD's `_make_pretrained` builds): TensorFlow
//! "same" padding (asymmetric on stride-2 layers, because the weights come from TensorFlow), batch
//! norm with eps 1e-3, ReLU6, no squeeze-excitation. Only the four feature maps that GDD's
//! `_make_efficientnet` splits out are computed (the classifier head is never used):
//!
//! | scale | timm modules                     | flat .pth blocks | channels | stride |
//! |-------|----------------------------------|------------------|----------|--------|
//! | 0     | conv_stem, bn1, blocks[0:2]      | 0..=2            | 24       | 4      |
//! | 1     | blocks[2:3]                      | 3..=4            | 40       | 8      |
//! | 2     | blocks[3:5]                      | 5..=10           | 112      | 16     |
//! | 3     | blocks[5:9] (= stages 5, 6)      | 11..=15          | 320      | 32     |
//!
//! The network is frozen and always in eval mode, so every batch norm is folded into the preceding
//! convolution at load time (weight·γ/√(var+eps), bias β − mean·γ/√(var+eps)): one conv per layer.
//! Weights are read from the real asset `efficientnet-lite0-57934424.pth` (PyTorch's legacy pre-1.6
//! format, lukemelas-style names `_blocks.N._expand_conv.weight`) with [`crate::pth`], a pickle
//! reader that only interprets data opcodes (nothing in the file is executed) and honours strides.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Tensor, TensorData};
use exact_f32::conv2d;

use crate::error::{DistillError, Result};

/// The asset holding the ImageNet-trained weights (`assets fetch efficientnet-lite0`).
pub const EFFNET_ASSET: &str = "efficientnet-lite0";

/// Batch-norm epsilon of the TensorFlow EfficientNet weights.
const BN_EPS: f32 = 1e-3;

/// Stride of each of the 16 MBConv blocks (first block of each stage strides; lite0 layout).
const BLOCK_STRIDES: [usize; 16] = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1];

/// Last flat block index (inclusive) of each of GDD's four feature scales.
const SCALE_ENDS: [usize; 4] = [2, 4, 10, 15];

/// Output channels of the four feature scales.
pub const EFFNET_CHANNELS: [usize; 4] = [24, 40, 112, 320];

/// A convolution with its batch norm folded in, optionally followed by ReLU6.
#[derive(Module, Debug)]
pub struct FoldedConv<B: Backend> {
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Param<Tensor<B, 1>>,
    pub stride: usize,
    pub groups: usize,
    pub relu6: bool,
}

/// TensorFlow "same" padding for one spatial dimension: (before, after).
pub fn tf_same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

impl<B: Backend> FoldedConv<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let k = self.weight.dims()[2];
        let (pt, pb) = tf_same_padding(h, k, self.stride);
        let (pl, pr) = tf_same_padding(w, k, self.stride);
        let x = if pt + pb + pl + pr > 0 {
            x.pad((pl, pr, pt, pb), PadMode::Constant(0.0))
        } else {
            x
        };
        let y = conv2d(
            x,
            self.weight.val(),
            Some(self.bias.val()),
            ConvOptions::new([self.stride; 2], [0, 0], [1, 1], self.groups),
        );
        if self.relu6 {
            y.clamp(0.0, 6.0)
        } else {
            y
        }
    }
}

/// One MBConv block: optional 1×1 expansion, depthwise k×k, 1×1 projection, identity skip when
/// the shape is preserved.
#[derive(Module, Debug)]
pub struct MbConv<B: Backend> {
    pub expand: Option<FoldedConv<B>>,
    pub depthwise: FoldedConv<B>,
    pub project: FoldedConv<B>,
    pub skip: bool,
}

impl<B: Backend> MbConv<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        let h = self.project.forward(self.depthwise.forward(h));
        if self.skip {
            h + x
        } else {
            h
        }
    }
}

/// EfficientNet-Lite0 trunk returning GDD's four feature scales.
#[derive(Module, Debug)]
pub struct EfficientNetLite0<B: Backend> {
    pub stem: FoldedConv<B>,
    pub blocks: Vec<MbConv<B>>,
}

// The tensor sources live beside the `.pth` reader (shared with `vgg`); re-exported here, where
// they were first defined.
pub use crate::pth::{PthSource, TensorSource};

/// Output channels, depthwise kernel and expansion of the 16 MBConv blocks of Lite0.
const BLOCK_OUT: [usize; 16] = [
    16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320,
];
const BLOCK_KERNEL: [usize; 16] = [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3];

/// Random tensors with Lite0's shapes (tests and benchmarks without the real asset): conv weights
/// N(0, 1/fan_in)·2, batch norms with positive variances, so activations stay O(1).
pub struct RandomLite0Source {
    rng: rand_chacha::ChaCha12Rng,
    shapes: std::collections::HashMap<String, Vec<usize>>,
}

impl RandomLite0Source {
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        let mut shapes = std::collections::HashMap::new();
        let mut conv = |c: &str, bn: &str, shape: Vec<usize>| {
            let co = shape[0];
            shapes.insert(format!("{c}.weight"), shape);
            for leaf in ["weight", "bias", "running_mean", "running_var"] {
                shapes.insert(format!("{bn}.{leaf}"), vec![co]);
            }
        };
        conv("_conv_stem", "_bn0", vec![32, 3, 3, 3]);
        let mut cin = 32;
        for i in 0..16 {
            let p = format!("_blocks.{i}");
            let hidden = if i == 0 { cin } else { cin * 6 };
            if i > 0 {
                conv(
                    &format!("{p}._expand_conv"),
                    &format!("{p}._bn0"),
                    vec![hidden, cin, 1, 1],
                );
            }
            let k = BLOCK_KERNEL[i];
            conv(
                &format!("{p}._depthwise_conv"),
                &format!("{p}._bn1"),
                vec![hidden, 1, k, k],
            );
            conv(
                &format!("{p}._project_conv"),
                &format!("{p}._bn2"),
                vec![BLOCK_OUT[i], hidden, 1, 1],
            );
            cin = BLOCK_OUT[i];
        }
        Self {
            rng: rand_chacha::ChaCha12Rng::seed_from_u64(seed),
            shapes,
        }
    }
}

impl TensorSource for RandomLite0Source {
    fn tensor(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        use rand::Rng;
        let shape = self
            .shapes
            .get(name)
            .cloned()
            .ok_or_else(|| DistillError::MissingTensor {
                name: name.to_string(),
                source_name: "random Lite0".into(),
            })?;
        let n: usize = shape.iter().product();
        let v: Vec<f32> = if name.ends_with("running_var") {
            (0..n).map(|_| self.rng.random_range(0.5f32..1.5)).collect()
        } else if shape.len() == 4 {
            let fan_in = (shape[1] * shape[2] * shape[3]) as f32;
            let b = (3.0 / fan_in).sqrt() * 1.4;
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

/// Loads `{conv}.weight` and batch norm `{bn}.*`, folds them, returns a [`FoldedConv`].
#[allow(clippy::too_many_arguments)]
fn load_folded<B: Backend>(
    src: &mut dyn TensorSource,
    conv: &str,
    bn: &str,
    cin_per_group: usize,
    cout: Option<usize>,
    stride: usize,
    depthwise: bool,
    relu6: bool,
    device: &B::Device,
) -> Result<FoldedConv<B>> {
    let wname = format!("{conv}.weight");
    let (wshape, mut w) = src.tensor(&wname)?;
    if wshape.len() != 4 || wshape[1] != cin_per_group || wshape[2] != wshape[3] {
        return Err(DistillError::Shape {
            name: wname,
            found: wshape,
            expected: vec![cout.unwrap_or(0), cin_per_group, 0, 0],
        });
    }
    if let Some(c) = cout {
        if wshape[0] != c {
            return Err(DistillError::Shape {
                name: wname,
                found: wshape.clone(),
                expected: vec![c, cin_per_group, wshape[2], wshape[3]],
            });
        }
    }
    let co = wshape[0];
    let bias = crate::pth::fold_batch_norm(src, bn, &mut w, None, co, BN_EPS)?;
    let weight = Tensor::from_data(TensorData::new(w, wshape.clone()), device);
    let bias = Tensor::from_data(TensorData::new(bias, vec![co]), device);
    Ok(FoldedConv {
        weight: Param::from_tensor(weight).set_require_grad(false),
        bias: Param::from_tensor(bias).set_require_grad(false),
        stride,
        groups: if depthwise { co } else { 1 },
        relu6,
    })
}

impl<B: Backend> EfficientNetLite0<B> {
    /// Loads the trunk from the lukemelas-style state dict of `efficientnet-lite0-57934424.pth`.
    pub fn load_pth(path: &Path, device: &B::Device) -> Result<Self> {
        let mut src = PthSource::open(path)?;
        Self::from_source(&mut src, device)
    }

    /// Loads the trunk from `path`, or from the cached asset `efficientnet-lite0` when `path` is
    /// `None` ([`DistillError::MissingAsset`] when it is not cached).
    pub fn load(path: Option<&Path>, device: &B::Device) -> Result<Self> {
        match path {
            Some(p) => Self::load_pth(p, device),
            None => {
                let p = assets::cached(EFFNET_ASSET)
                    .ok_or_else(|| DistillError::MissingAsset(EFFNET_ASSET.to_string()))?;
                Self::load_pth(&p, device)
            }
        }
    }

    /// A random-weight trunk with the real architecture (for tests without the asset).
    pub fn random(seed: u64, device: &B::Device) -> Self {
        Self::from_source(&mut RandomLite0Source::new(seed), device).expect("shapes are consistent")
    }

    /// Builds the trunk from any named tensor source (checks every shape).
    pub fn from_source(src: &mut dyn TensorSource, device: &B::Device) -> Result<Self> {
        let stem = load_folded(
            src,
            "_conv_stem",
            "_bn0",
            3,
            Some(32),
            2,
            false,
            true,
            device,
        )?;
        let mut blocks = Vec::with_capacity(16);
        let mut cin = 32;
        for (i, &stride) in BLOCK_STRIDES.iter().enumerate() {
            let p = format!("_blocks.{i}");
            let (expand, hidden) = if i == 0 {
                (None, cin)
            } else {
                let e = load_folded(
                    src,
                    &format!("{p}._expand_conv"),
                    &format!("{p}._bn0"),
                    cin,
                    None,
                    1,
                    false,
                    true,
                    device,
                )?;
                let hidden = e.weight.dims()[0];
                (Some(e), hidden)
            };
            let depthwise = load_folded(
                src,
                &format!("{p}._depthwise_conv"),
                &format!("{p}._bn1"),
                1,
                Some(hidden),
                stride,
                true,
                true,
                device,
            )?;
            let project = load_folded(
                src,
                &format!("{p}._project_conv"),
                &format!("{p}._bn2"),
                hidden,
                None,
                1,
                false,
                false,
                device,
            )?;
            let cout = project.weight.dims()[0];
            blocks.push(MbConv {
                expand,
                depthwise,
                project,
                skip: stride == 1 && cin == cout,
            });
            cin = cout;
        }
        let found: Vec<usize> = SCALE_ENDS
            .iter()
            .map(|&e| blocks[e].project.weight.dims()[0])
            .collect();
        if found != EFFNET_CHANNELS {
            return Err(DistillError::Shape {
                name: "feature scale channels".into(),
                found,
                expected: EFFNET_CHANNELS.to_vec(),
            });
        }
        Ok(Self { stem, blocks })
    }

    /// The four feature maps (strides 4, 8, 16, 32) for an input already normalised to the
    /// network's statistics (GDD: mean 0.5, std 0.5, i.e. the [-1, 1] image itself).
    pub fn forward(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 4] {
        let mut h = self.stem.forward(x);
        let mut out: Vec<Tensor<B, 4>> = Vec::with_capacity(4);
        let mut scale = 0;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(h);
            if i == SCALE_ENDS[scale] {
                out.push(h.clone());
                scale += 1;
            }
        }
        let [a, b, c, d]: [Tensor<B, 4>; 4] = out.try_into().expect("four scales");
        [a, b, c, d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_padding_matches_tensorflow() {
        // 224, k3, s2: out 112, total pad 1 -> (0, 1); k5, s2: total 3 -> (1, 2).
        assert_eq!(tf_same_padding(224, 3, 2), (0, 1));
        assert_eq!(tf_same_padding(224, 5, 2), (1, 2));
        // Odd input 9, k3, s2: out 5, total 2 -> symmetric.
        assert_eq!(tf_same_padding(9, 3, 2), (1, 1));
        // Stride 1 is symmetric k/2.
        assert_eq!(tf_same_padding(7, 5, 1), (2, 2));
    }
}
