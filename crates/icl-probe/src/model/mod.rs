//! The hookable decoder: one block implementation for every architecture, switched by
//! [`ModelConfig`]. Weights live as `[in, out]` matrices so every projection is one batched matmul
//! over all `B·T` tokens; q, k and v share one fused matmul, as do a gated MLP's gate and up.
//!
//! One file per concern: [`host`] (the weights as the loaders hand them over), this file (the
//! device model and its norms), `random` (seeded random weights), `dtype` (precision casts and
//! dense expansion), `forward` (the hooked forward pass), `generate` (greedy decoding and top-k).

mod dtype;
mod forward;
mod generate;
pub(crate) mod heads;
pub(crate) mod host;
mod random;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::config::{ModelConfig, NormKind};
use crate::error::Result;
use crate::hooks::{hook_shape, ActivationCache, HookRunner};
#[cfg(doc)]
use crate::hooks::{HookSpec, LogitsMode};
use crate::linear::{Embedding, Linear, WeightStorage};

pub use generate::top_k_rows;
pub(crate) use host::{to_tensor, HostBlock, HostBlockExtras, HostLinear, HostModel, HostNorm};

#[derive(Clone, Debug)]
struct Norm<B: Backend> {
    kind: NormKind,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 2>>,
    eps: f32,
}

impl<B: Backend> Norm<B> {
    fn new(h: HostNorm, kind: NormKind, eps: f32, device: &B::Device) -> Self {
        Self {
            kind,
            weight: to_tensor::<B, 1>(h.weight, device).unsqueeze_dim(0),
            bias: h
                .bias
                .map(|b| to_tensor::<B, 1>(b, device).unsqueeze_dim(0)),
            eps,
        }
    }
    fn cast(self, dtype: DType) -> Self {
        Self {
            weight: self.weight.cast(dtype),
            bias: self.bias.map(|b| b.cast(dtype)),
            ..self
        }
    }
    /// Normalise each row of `[N, D]`. The statistics are computed in float32 whatever the stream's
    /// dtype (as HF does for RMSNorm in half precision): a bf16 mean of 768 squares loses digits.
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        // Plain Flex in float32: one fused pass per row (statistics, weight, bias), rows in
        // parallel, the same formula as `forward_scaled` (flex-kernels; docs/performance.md).
        let kind = match self.kind {
            NormKind::RmsNorm => flex_kernels::norm::RowNorm::Rms,
            NormKind::LayerNorm => flex_kernels::norm::RowNorm::Layer,
        };
        let d = self.weight.dims()[1];
        let weight = self.weight.clone().reshape([d]);
        let bias = self.bias.as_ref().map(|b| b.clone().reshape([d]));
        let x = match flex_kernels::norm::try_norm_last(
            x,
            kind,
            Some(&weight),
            bias.as_ref(),
            self.eps,
        ) {
            Ok(y) => return y,
            Err(x) => x,
        };
        // The identity hook returns `Ok`, so there is no error to pass on.
        match self.forward_scaled(x, Ok) {
            Ok(y) => y,
            Err(_) => unreachable!("the identity scale hook cannot fail"),
        }
    }

    /// [`Norm::forward`] with the scale hook point `name` (TransformerLens `hook_scale`,
    /// `[N, 1]` = `sqrt(mean(x²) + eps)` of the (centred) float32 rows), formed only when the
    /// hook is cached or patched; otherwise exactly [`Norm::forward`].
    fn forward_hooked(
        &self,
        x: Tensor<B, 2>,
        hooks: &mut HookRunner<'_, B>,
        name: impl Fn() -> String,
    ) -> Result<Tensor<B, 2>> {
        if !hooks.touches(&name) {
            return Ok(self.forward(x));
        }
        if !hooks.intervenes(&name()) {
            // Only cached: the output is `forward`'s (the fast kernel on Flex), so caching changes
            // no number downstream; the cached scale is the same float32 formula, computed apart.
            let scale = self.scale(x.clone());
            hooks.point_rows(&name, scale)?;
            return Ok(self.forward(x));
        }
        self.forward_scaled(x, |s| hooks.point_rows(&name, s))
    }

    /// The per-row divisor `sqrt(mean(x²) + eps)` (of the centred rows for LayerNorm) in float32,
    /// `[N, 1]`: what the `hook_scale` point holds.
    fn scale(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = if x.dtype() == DType::F32 {
            x
        } else {
            x.cast(DType::F32)
        };
        let x = match self.kind {
            NormKind::RmsNorm => x,
            NormKind::LayerNorm => x.clone() - x.mean_dim(1),
        };
        ((x.clone() * x).mean_dim(1) + self.eps).sqrt()
    }

    /// The norm with `scale_hook` applied to the per-row divisor (the same float32 operations in
    /// the same order as an unhooked norm: the divisor, its reciprocal, one product).
    fn forward_scaled(
        &self,
        x: Tensor<B, 2>,
        scale_hook: impl FnOnce(Tensor<B, 2>) -> Result<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 2>> {
        let dtype = x.dtype();
        let x = if dtype == DType::F32 {
            x
        } else {
            x.cast(DType::F32)
        };
        let y = match self.kind {
            NormKind::RmsNorm => {
                let ms = (x.clone() * x.clone()).mean_dim(1);
                x * scale_hook((ms + self.eps).sqrt())?.recip()
            }
            NormKind::LayerNorm => {
                let xc = x.clone() - x.mean_dim(1);
                let var = (xc.clone() * xc.clone()).mean_dim(1);
                xc * scale_hook((var + self.eps).sqrt())?.recip()
            }
        };
        let y = if dtype == DType::F32 {
            y
        } else {
            y.cast(dtype)
        };
        let y = y * self.weight.clone();
        Ok(match &self.bias {
            Some(b) => y + b.clone(),
            None => y,
        })
    }
}

#[derive(Clone, Debug)]
struct Block<B: Backend> {
    ln1: Norm<B>,
    ln2: Norm<B>,
    qkv: Linear<B>,
    o: Linear<B>,
    mlp_in: Linear<B>,
    mlp_out: Linear<B>,
    ln1_post: Option<Norm<B>>,
    ln2_post: Option<Norm<B>>,
    q_norm: Option<Norm<B>>,
    k_norm: Option<Norm<B>>,
}

/// A decoder-only transformer whose activations can be cached and overwritten by hook name.
#[derive(Clone, Debug)]
pub struct Model<B: Backend> {
    config: ModelConfig,
    device: B::Device,
    embed: Embedding<B>,
    pos_embed: Option<Tensor<B, 2>>,
    blocks: Vec<Block<B>>,
    ln_final: Norm<B>,
    unembed: Linear<B>,
    hook_names: Vec<String>,
    /// The residual stream's dtype (float32 unless [`Model::with_dtype`] changed it).
    dtype: DType,
}

/// Result of a forward pass.
#[derive(Clone, Debug)]
pub struct Output<B: Backend> {
    /// `[B, T, V]` ([`LogitsMode::All`]), `[B, 1, V]` ([`LogitsMode::Last`]), or `None`
    /// ([`LogitsMode::None`] or [`HookSpec::stop_at_layer`]).
    pub logits: Option<Tensor<B, 3>>,
    /// The requested activations (after any interventions at the same hook).
    pub cache: ActivationCache<B>,
}

impl<B: Backend> Model<B> {
    /// `storage` must be resolved ([`WeightStorage::resolve`]): `Compact` or `F32`.
    pub(crate) fn from_host(
        config: ModelConfig,
        host: HostModel,
        storage: WeightStorage,
        device: &B::Device,
    ) -> Self {
        let (kind, eps) = (config.norm, config.norm_eps);
        let blocks = host
            .blocks
            .into_iter()
            .map(|b| Block {
                ln1: Norm::new(b.ln1, kind, eps, device),
                ln2: Norm::new(b.ln2, kind, eps, device),
                qkv: Linear::new(b.qkv, storage, device),
                o: Linear::new(b.o, storage, device),
                mlp_in: Linear::new(b.mlp_in, storage, device),
                mlp_out: Linear::new(b.mlp_out, storage, device),
                ln1_post: b.extras.ln1_post.map(|n| Norm::new(n, kind, eps, device)),
                ln2_post: b.extras.ln2_post.map(|n| Norm::new(n, kind, eps, device)),
                q_norm: b.extras.q_norm.map(|n| Norm::new(n, kind, eps, device)),
                k_norm: b.extras.k_norm.map(|n| Norm::new(n, kind, eps, device)),
            })
            .collect();
        let hook_names = Self::list_hook_names(&config);
        Self {
            device: device.clone(),
            embed: Embedding::new(host.embed, storage, device),
            pos_embed: host.pos_embed.map(|p| to_tensor(p, device)),
            blocks,
            ln_final: Norm::new(host.ln_final, kind, eps, device),
            unembed: Linear::new(host.unembed, storage, device),
            hook_names,
            config,
            dtype: DType::F32,
        }
    }
    /// The residual stream's dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Every hook name this model exposes, in forward order.
    pub fn hook_names(&self) -> &[String] {
        &self.hook_names
    }

    /// Every hook name with its shape for `batch` rows of `seq` padded positions, in forward
    /// order (TransformerLens's `hook_dict`, with shapes).
    pub fn hook_shapes(&self, batch: usize, seq: usize) -> Vec<(String, Vec<usize>)> {
        self.hook_names
            .iter()
            .map(|n| {
                let shape = hook_shape(&self.config, n, batch, seq)
                    .expect("every listed hook has a shape (tested)");
                (n.clone(), shape)
            })
            .collect()
    }

    /// The hook names of a model with this config, in forward order.
    pub fn list_hook_names(cfg: &ModelConfig) -> Vec<String> {
        let mut v = vec!["hook_embed".to_string()];
        if cfg.rope.is_none() {
            v.push("hook_pos_embed".into());
        }
        for l in 0..cfg.n_layers {
            let mut push = |s: &str| v.push(format!("blocks.{l}.{s}"));
            push("hook_resid_pre");
            push("ln1.hook_scale");
            push("ln1.hook_normalized");
            push("attn.hook_q");
            push("attn.hook_k");
            push("attn.hook_v");
            if cfg.extras.qk_norm {
                push("attn.q_norm.hook_normalized");
                push("attn.k_norm.hook_normalized");
            }
            if cfg.rope.is_some() {
                push("attn.hook_rot_q");
                push("attn.hook_rot_k");
            }
            push("attn.hook_attn_scores");
            push("attn.hook_pattern");
            push("attn.hook_z");
            push("attn.hook_result");
            if cfg.extras.post_norms {
                push("ln1_post.hook_scale");
            }
            push("hook_attn_out");
            if !cfg.parallel_residual {
                push("hook_resid_mid");
            }
            push("ln2.hook_scale");
            push("ln2.hook_normalized");
            push("mlp.hook_pre");
            if cfg.gated_mlp {
                push("mlp.hook_pre_linear");
            }
            push("mlp.hook_post");
            if cfg.extras.post_norms {
                push("ln2_post.hook_scale");
            }
            push("hook_mlp_out");
            push("hook_resid_post");
        }
        v.push("ln_final.hook_scale".into());
        v.push("ln_final.hook_normalized".into());
        v
    }
}
