//! EDM's building blocks (`training/networks.py`): Linear, Conv2d with resampling, GroupNorm, the
//! attention op, UNetBlock and the two timestep embeddings.
//!
//! Every layer casts its weights to the input's dtype, as EDM does with `weight.to(x.dtype)`, so the
//! same modules run in float32 or, under [`crate::Precision::F16`]/`BF16`, in half precision.

use burn::module::{Module, Param};
use burn::tensor::activation::silu;
// Convolutions and matmuls go through exact_f32 so `ICLGDD_EXACT_F32=1` can undo TF32 rounding.
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{backend::Backend, DType, Distribution, Tensor};
use exact_f32::{conv2d, conv_transpose2d, matmul};

use crate::error::{EdmError, Result};
use crate::weights::{join, Init, InitMode, TensorRef, TensorSource, VisitNamed};

/// Casts `t` to `dtype` unless it already has it.
pub(crate) fn to_dtype<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(dtype)
    }
}

/// How a layer's weight and bias are initialised (EDM's `init`, `init_zero`, `init_attn` dicts).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InitSpec {
    pub mode: InitMode,
    pub weight: f64,
    pub bias: f64,
}

impl InitSpec {
    pub const fn new(mode: InitMode, weight: f64, bias: f64) -> Self {
        InitSpec { mode, weight, bias }
    }
}

/// Fully-connected layer, weight [out, in].
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub in_features: usize,
}

impl<B: Backend> Linear<B> {
    pub fn new(
        src: &mut TensorSource<'_, B>,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        init: InitSpec,
    ) -> Result<Self> {
        let edm = |scale| Init::Edm {
            mode: init.mode,
            fan_in: in_features,
            fan_out: out_features,
            scale,
        };
        let weight = src.param(
            &join(name, "weight"),
            [out_features, in_features],
            edm(init.weight),
        )?;
        let bias = if bias {
            Some(src.param(&join(name, "bias"), [out_features], edm(init.bias))?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            in_features,
        })
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let dtype = x.dtype();
        let mut y = matmul(x, to_dtype(self.weight.val(), dtype).transpose());
        if let Some(b) = &self.bias {
            y = y + to_dtype(b.val(), dtype).unsqueeze::<2>();
        }
        y
    }
}

impl<B: Backend> VisitNamed<B> for Linear<B> {
    fn visit_named(&self, prefix: &str, f: &mut dyn FnMut(&str, TensorRef<'_, B>)) {
        f(&join(prefix, "weight"), TensorRef::Param2(&self.weight));
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), TensorRef::Param1(b));
        }
    }
}

/// Convolution with optional up/downsampling by a separable FIR `resample_filter` (EDM's `Conv2d`).
/// `kernel == 0` means a pure resampling layer without weights.
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    pub weight: Option<Param<Tensor<B, 4>>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Buffer [1, 1, k, k] = outer(f, f) / sum(f)^2, present only when resampling.
    pub resample_filter: Option<Tensor<B, 4>>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub up: bool,
    pub down: bool,
    pub fused_resample: bool,
}

/// Arguments of [`Conv2d::new`] beyond the channel counts.
#[derive(Clone, Debug)]
pub struct ConvArgs<'a> {
    pub kernel: usize,
    pub bias: bool,
    pub up: bool,
    pub down: bool,
    pub resample_filter: &'a [f64],
    pub fused_resample: bool,
    pub init: InitSpec,
}

impl<'a> ConvArgs<'a> {
    pub fn new(kernel: usize, init: InitSpec) -> Self {
        ConvArgs {
            kernel,
            bias: true,
            up: false,
            down: false,
            resample_filter: &[1.0, 1.0],
            fused_resample: false,
            init,
        }
    }
    pub fn resample(mut self, up: bool, down: bool, filter: &'a [f64]) -> Self {
        self.up = up;
        self.down = down;
        self.resample_filter = filter;
        self
    }
    pub fn fused(mut self) -> Self {
        self.fused_resample = true;
        self
    }
}

/// EDM's `resample_filter` buffer: outer(f, f) / sum(f)^2, computed in float32 as EDM does.
pub fn resample_filter_values(f: &[f64]) -> Vec<f32> {
    let f: Vec<f32> = f.iter().map(|&v| v as f32).collect();
    let s: f32 = f.iter().sum();
    let s2 = s * s;
    let mut out = Vec::with_capacity(f.len() * f.len());
    for a in &f {
        for b in &f {
            out.push(a * b / s2);
        }
    }
    out
}

impl<B: Backend> Conv2d<B> {
    pub fn new(
        src: &mut TensorSource<'_, B>,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        args: ConvArgs<'_>,
    ) -> Result<Self> {
        let k = args.kernel;
        let edm = |scale| Init::Edm {
            mode: args.init.mode,
            fan_in: in_channels * k * k,
            fan_out: out_channels * k * k,
            scale,
        };
        let weight = if k > 0 {
            Some(src.param(
                &join(name, "weight"),
                [out_channels, in_channels, k, k],
                edm(args.init.weight),
            )?)
        } else {
            None
        };
        let bias = if k > 0 && args.bias {
            Some(src.param(&join(name, "bias"), [out_channels], edm(args.init.bias))?)
        } else {
            None
        };
        let resample_filter = if args.up || args.down {
            let n = args.resample_filter.len();
            Some(src.buffer(
                &join(name, "resample_filter"),
                [1, 1, n, n],
                Some(resample_filter_values(args.resample_filter)),
                Init::Constant(0.0),
            )?)
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            resample_filter,
            in_channels,
            out_channels,
            up: args.up,
            down: args.down,
            fused_resample: args.fused_resample,
        })
    }

    /// Depthwise FIR downsampling by 2: each channel filtered by `f` with stride 2.
    fn fir_down(x: Tensor<B, 4>, f: Tensor<B, 4>, padding: usize) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let y = conv2d(
            x.reshape([n * c, 1, h, w]),
            f,
            None,
            ConvOptions::new([2, 2], [padding, padding], [1, 1], 1),
        );
        let [_, _, ho, wo] = y.dims();
        y.reshape([n, c, ho, wo])
    }

    /// Depthwise FIR upsampling by 2: transposed convolution with 4·f, stride 2, per channel.
    fn fir_up(x: Tensor<B, 4>, f: Tensor<B, 4>, padding: usize) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let y = conv_transpose2d(
            x.reshape([n * c, 1, h, w]),
            f.mul_scalar(4.0),
            None,
            ConvTransposeOptions::new([2, 2], [padding, padding], [0, 0], [1, 1], 1),
        );
        let [_, _, ho, wo] = y.dims();
        y.reshape([n, c, ho, wo])
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let dtype = x.dtype();
        let w = self.weight.as_ref().map(|w| to_dtype(w.val(), dtype));
        let f = self
            .resample_filter
            .as_ref()
            .map(|f| to_dtype(f.clone(), dtype));
        let w_pad = w.as_ref().map(|w| w.dims()[3] / 2).unwrap_or(0);
        let f_pad = f.as_ref().map(|f| (f.dims()[3] - 1) / 2).unwrap_or(0);
        let conv = |x: Tensor<B, 4>, w: Tensor<B, 4>, pad: usize| {
            conv2d(x, w, None, ConvOptions::new([1, 1], [pad, pad], [1, 1], 1))
        };

        let mut x = x;
        match (self.fused_resample, w, f) {
            (true, Some(w), Some(f)) if self.up => {
                x = Self::fir_up(x, f, f_pad.saturating_sub(w_pad));
                x = conv(x, w, w_pad.saturating_sub(f_pad));
            }
            (true, Some(w), Some(f)) if self.down => {
                x = conv(x, w, w_pad + f_pad);
                x = Self::fir_down(x, f, 0);
            }
            (_, w, f) => {
                if let Some(f) = f {
                    if self.up {
                        x = Self::fir_up(x, f.clone(), f_pad);
                    }
                    if self.down {
                        x = Self::fir_down(x, f, f_pad);
                    }
                }
                if let Some(w) = w {
                    x = conv(x, w, w_pad);
                }
            }
        }
        if let Some(b) = &self.bias {
            let n = x.dims()[0];
            x = x + exact_f32::per_channel(to_dtype(b.val(), dtype), n);
        }
        x
    }
}

impl<B: Backend> VisitNamed<B> for Conv2d<B> {
    fn visit_named(&self, prefix: &str, f: &mut dyn FnMut(&str, TensorRef<'_, B>)) {
        if let Some(w) = &self.weight {
            f(&join(prefix, "weight"), TensorRef::Param4(w));
        }
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), TensorRef::Param1(b));
        }
        if let Some(r) = &self.resample_filter {
            f(&join(prefix, "resample_filter"), TensorRef::Buffer4(r));
        }
    }
}

/// Group normalisation with EDM's group count `min(num_groups, C / min_channels_per_group)`.
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub num_groups: usize,
    pub eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    /// `GroupNorm(num_channels, num_groups=32, min_channels_per_group=4, eps)`.
    pub fn new(
        src: &mut TensorSource<'_, B>,
        name: &str,
        num_channels: usize,
        eps: f64,
    ) -> Result<Self> {
        let num_groups = 32.min(num_channels / 4).max(1);
        if !num_channels.is_multiple_of(num_groups) {
            // torch.nn.GroupNorm refuses these at construction too, so EDM cannot build such a
            // network; here it is a typed error instead of a reshape panic in the first forward.
            return Err(EdmError::Unsupported(format!(
                "`{name}`: GroupNorm over {num_channels} channels in {num_groups} groups (EDM's \
                 min(32, C / 4)): the channel count must be a multiple of the group count; \
                 change model_channels or channel_mult"
            )));
        }
        Ok(GroupNorm {
            weight: src.param(&join(name, "weight"), [num_channels], Init::Constant(1.0))?,
            bias: src.param(&join(name, "bias"), [num_channels], Init::Constant(0.0))?,
            num_groups,
            eps,
        })
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_act(x, false)
    }

    /// `silu(self.forward(x))`, fused into one pass on the CPU backend: the prologue of every
    /// U-Net block (`conv0(silu(norm0(x)))`).
    pub fn forward_silu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_act(x, true)
    }

    fn forward_act(&self, x: Tensor<B, 4>, act: bool) -> Tensor<B, 4> {
        // On plain Flex in float32, one fused kernel (statistics, affine and SiLU per group, groups
        // in parallel): burn-flex runs the ~10 passes below on one thread (docs/performance.md,
        // issue 18). Every other backend, Autodiff included, and half precision keep the ops below.
        let (weight, bias) = (self.weight.val(), self.bias.val());
        let x = match flex_kernels::norm::try_group_norm(
            x,
            self.num_groups,
            self.eps,
            Some((&weight, &bias)),
            act,
        ) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let dtype = x.dtype();
        let [n, c, h, w] = x.dims();
        let g = self.num_groups;
        let xg = x.reshape([n, g, (c / g) * h * w]);
        let mean = xg.clone().mean_dim(2);
        let xc = xg - mean;
        let var = xc.clone().square().mean_dim(2);
        // One scale and one shift per (sample, channel), applied in two passes over the
        // activation instead of three (divide, scale, shift); `[N, C, 1, 1]` operands take
        // burn-flex's vectorised broadcast (see `exact_f32::per_channel`).
        let inv_std = (var + self.eps)
            .sqrt()
            .recip()
            .repeat_dim(2, c / g)
            .reshape([n, c]);
        let weight = to_dtype(weight, dtype).reshape([1, c]);
        let scale = (inv_std * weight).reshape([n, c, 1, 1]);
        let bias = exact_f32::per_channel(to_dtype(bias, dtype), n);
        let y = xc.reshape([n, c, h, w]) * scale + bias;
        if act {
            silu(y)
        } else {
            y
        }
    }
}

impl<B: Backend> VisitNamed<B> for GroupNorm<B> {
    fn visit_named(&self, prefix: &str, f: &mut dyn FnMut(&str, TensorRef<'_, B>)) {
        f(&join(prefix, "weight"), TensorRef::Param1(&self.weight));
        f(&join(prefix, "bias"), TensorRef::Param1(&self.bias));
    }
}

/// EDM's `AttentionOp`: softmax over keys of qᵀ(k/√C), computed in float32 whatever the input dtype,
/// returned in the input dtype. q, k: [N, C, L] → weights [N, Lq, Lk].
pub fn attention_weights<B: Backend>(q: Tensor<B, 3>, k: Tensor<B, 3>) -> Tensor<B, 3> {
    let dtype = q.dtype();
    let c = k.dims()[1] as f64;
    let q32 = to_dtype(q, DType::F32);
    let k32 = to_dtype(k.div_scalar(c.sqrt()), DType::F32);
    // Softmax over the last dim: flex-kernels' vectorised, row-parallel kernel on plain Flex.
    let w = flex_kernels::softmax::softmax_last(matmul(q32.swap_dims(1, 2), k32));
    to_dtype(w, dtype)
}

/// Inverted dropout, active only when the backend records gradients (training), like burn's Dropout.
pub(crate) fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64) -> Tensor<B, D> {
    if p <= 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    let keep = x.random_like(Distribution::Bernoulli(1.0 - p));
    x * keep / (1.0 - p)
}

/// Configuration of one [`UNetBlock`] (EDM's keyword arguments).
#[derive(Clone, Debug)]
pub struct BlockArgs<'a> {
    pub emb_channels: usize,
    pub up: bool,
    pub down: bool,
    pub attention: bool,
    pub num_heads: Option<usize>,
    pub channels_per_head: usize,
    pub dropout: f64,
    pub skip_scale: f64,
    pub eps: f64,
    pub resample_filter: &'a [f64],
    pub resample_proj: bool,
    pub adaptive_scale: bool,
    pub init: InitSpec,
    pub init_zero: InitSpec,
    pub init_attn: InitSpec,
}

/// The unified residual block of DDPM++, NCSN++ and ADM, with optional up/downsampling and attention.
#[derive(Module, Debug)]
pub struct UNetBlock<B: Backend> {
    pub norm0: GroupNorm<B>,
    pub conv0: Conv2d<B>,
    pub affine: Linear<B>,
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    pub skip: Option<Conv2d<B>>,
    pub norm2: Option<GroupNorm<B>>,
    pub qkv: Option<Conv2d<B>>,
    pub proj: Option<Conv2d<B>>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_heads: usize,
    pub dropout: f64,
    pub skip_scale: f64,
    pub adaptive_scale: bool,
}

impl<B: Backend> UNetBlock<B> {
    pub fn new(
        src: &mut TensorSource<'_, B>,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        a: &BlockArgs<'_>,
    ) -> Result<Self> {
        let num_heads = if !a.attention {
            0
        } else {
            a.num_heads.unwrap_or(out_channels / a.channels_per_head)
        };
        let rf = a.resample_filter;
        let norm0 = GroupNorm::new(src, &join(name, "norm0"), in_channels, a.eps)?;
        let conv0 = Conv2d::new(
            src,
            &join(name, "conv0"),
            in_channels,
            out_channels,
            ConvArgs::new(3, a.init).resample(a.up, a.down, rf),
        )?;
        let affine = Linear::new(
            src,
            &join(name, "affine"),
            a.emb_channels,
            out_channels * if a.adaptive_scale { 2 } else { 1 },
            true,
            a.init,
        )?;
        let norm1 = GroupNorm::new(src, &join(name, "norm1"), out_channels, a.eps)?;
        let conv1 = Conv2d::new(
            src,
            &join(name, "conv1"),
            out_channels,
            out_channels,
            ConvArgs::new(3, a.init_zero),
        )?;
        let skip = if out_channels != in_channels || a.up || a.down {
            let kernel = if a.resample_proj || out_channels != in_channels {
                1
            } else {
                0
            };
            Some(Conv2d::new(
                src,
                &join(name, "skip"),
                in_channels,
                out_channels,
                ConvArgs::new(kernel, a.init).resample(a.up, a.down, rf),
            )?)
        } else {
            None
        };
        let (norm2, qkv, proj) = if num_heads > 0 {
            (
                Some(GroupNorm::new(
                    src,
                    &join(name, "norm2"),
                    out_channels,
                    a.eps,
                )?),
                Some(Conv2d::new(
                    src,
                    &join(name, "qkv"),
                    out_channels,
                    out_channels * 3,
                    ConvArgs::new(1, a.init_attn),
                )?),
                Some(Conv2d::new(
                    src,
                    &join(name, "proj"),
                    out_channels,
                    out_channels,
                    ConvArgs::new(1, a.init_zero),
                )?),
            )
        } else {
            (None, None, None)
        };
        Ok(UNetBlock {
            norm0,
            conv0,
            affine,
            norm1,
            conv1,
            skip,
            norm2,
            qkv,
            proj,
            in_channels,
            out_channels,
            num_heads,
            dropout: a.dropout,
            skip_scale: a.skip_scale,
            adaptive_scale: a.adaptive_scale,
        })
    }

    pub fn forward(&self, x: Tensor<B, 4>, emb: Tensor<B, 2>) -> Tensor<B, 4> {
        let orig = x.clone();
        let mut x = self.conv0.forward(self.norm0.forward_silu(x));
        let [n, c, h, w] = x.dims();

        let params = to_dtype(self.affine.forward(emb), x.dtype());
        let pc = params.dims()[1];
        let params = params.reshape([n, pc, 1, 1]);
        x = if self.adaptive_scale {
            // torch.chunk order: (scale, shift)
            let mut sc = params.chunk(2, 1);
            let shift = sc.pop().expect("two chunks");
            let scale = sc.pop().expect("two chunks");
            flex_kernels::elementwise::silu(shift + self.norm1.forward(x) * (scale + 1.0))
        } else {
            self.norm1.forward_silu(x + params)
        };

        x = self.conv1.forward(dropout(x, self.dropout));
        x = x + match &self.skip {
            Some(skip) => skip.forward(orig),
            None => orig,
        };
        x = x.mul_scalar(self.skip_scale);

        if let (Some(norm2), Some(qkv), Some(proj)) = (&self.norm2, &self.qkv, &self.proj) {
            let heads = self.num_heads;
            let qkv =
                qkv.forward(norm2.forward(x.clone()))
                    .reshape([n * heads, c / heads, 3, h * w]);
            let part = |i: usize| {
                qkv.clone()
                    .narrow(2, i, 1)
                    .reshape([n * heads, c / heads, h * w])
            };
            let (q, k, v) = (part(0), part(1), part(2));
            let wts = attention_weights(q, k);
            // a[n, c, q] = sum_k w[n, q, k] v[n, c, k]
            let a = matmul(v, wts.swap_dims(1, 2));
            x = proj.forward(a.reshape([n, c, h, w])) + x;
            x = x.mul_scalar(self.skip_scale);
        }
        x
    }
}

impl<B: Backend> VisitNamed<B> for UNetBlock<B> {
    fn visit_named(&self, prefix: &str, f: &mut dyn FnMut(&str, TensorRef<'_, B>)) {
        self.norm0.visit_named(&join(prefix, "norm0"), f);
        self.conv0.visit_named(&join(prefix, "conv0"), f);
        self.affine.visit_named(&join(prefix, "affine"), f);
        self.norm1.visit_named(&join(prefix, "norm1"), f);
        self.conv1.visit_named(&join(prefix, "conv1"), f);
        self.skip.visit_named(&join(prefix, "skip"), f);
        self.norm2.visit_named(&join(prefix, "norm2"), f);
        self.qkv.visit_named(&join(prefix, "qkv"), f);
        self.proj.visit_named(&join(prefix, "proj"), f);
    }
}

/// Sinusoidal timestep embedding of DDPM++ and ADM; returns [cos, sin] as EDM does.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionalEmbedding {
    pub num_channels: usize,
    pub max_positions: f64,
    pub endpoint: bool,
}

impl PositionalEmbedding {
    /// Frequencies computed in float32 like EDM's `torch.arange(..., dtype=float32)`.
    pub fn freqs(&self) -> Vec<f32> {
        let half = self.num_channels / 2;
        let denom = (half - usize::from(self.endpoint)) as f32;
        let base = (1.0 / self.max_positions) as f32;
        (0..half).map(|i| base.powf(i as f32 / denom)).collect()
    }

    pub fn forward<B: Backend>(&self, x: Tensor<B, 1>) -> Tensor<B, 2> {
        let freqs = self.freqs();
        let n = freqs.len();
        let f = to_dtype(
            Tensor::<B, 1>::from_floats(freqs.as_slice(), &x.device()),
            x.dtype(),
        );
        let len = x.dims()[0];
        let xf = x.reshape([len, 1]) * f.reshape([1, n]);
        Tensor::cat(vec![xf.clone().cos(), xf.sin()], 1)
    }
}

/// Random Fourier feature embedding of NCSN++ (buffer `freqs`, drawn as randn·scale); returns [cos, sin].
#[derive(Module, Debug)]
pub struct FourierEmbedding<B: Backend> {
    pub freqs: Tensor<B, 1>,
}

impl<B: Backend> FourierEmbedding<B> {
    pub fn new(
        src: &mut TensorSource<'_, B>,
        name: &str,
        num_channels: usize,
        scale: f64,
    ) -> Result<Self> {
        let freqs = src.buffer(
            &join(name, "freqs"),
            [num_channels / 2],
            None,
            Init::Normal(scale),
        )?;
        Ok(FourierEmbedding { freqs })
    }

    pub fn forward(&self, x: Tensor<B, 1>) -> Tensor<B, 2> {
        // (2π·freqs) is formed in the buffer's float32, then cast, as in EDM.
        let f = to_dtype(
            self.freqs.clone().mul_scalar(2.0 * std::f32::consts::PI),
            x.dtype(),
        );
        let n = f.dims()[0];
        let len = x.dims()[0];
        let xf = x.reshape([len, 1]) * f.reshape([1, n]);
        Tensor::cat(vec![xf.clone().cos(), xf.sin()], 1)
    }
}

impl<B: Backend> VisitNamed<B> for FourierEmbedding<B> {
    fn visit_named(&self, prefix: &str, f: &mut dyn FnMut(&str, TensorRef<'_, B>)) {
        f(&join(prefix, "freqs"), TensorRef::Buffer1(&self.freqs));
    }
}
