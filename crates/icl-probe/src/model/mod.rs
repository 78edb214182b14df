//! The hookable decoder: one block implementation for every architecture, switched by
//! [`ModelConfig`]. Weights live as `[in, out]` matrices so every projection is one batched matmul
//! over all `B·T` tokens; q, k and v share one fused matmul, as do a gated MLP's gate and up.

use std::collections::HashSet;

use burn::tensor::activation::{gelu, gelu_approximate, relu, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::batch::Batch;
use crate::config::{Activation, ModelConfig, NormKind};
use crate::error::{ProbeError, Result};
use crate::hooks::{ActivationCache, HookRunner, HookSpec, LogitsMode};
pub(crate) use crate::linear::HostLinear;
use crate::linear::{weight_bytes, Embedding, HostMatrix, Linear, WeightBytes, WeightStorage};
use crate::rope::RopeTables;
use crate::weights::HostTensor;

fn to_tensor<B: Backend, const D: usize>(t: HostTensor, device: &B::Device) -> Tensor<B, D> {
    let shape: [usize; D] = t.shape.clone().try_into().expect("rank checked by loader");
    Tensor::from_data(TensorData::new(t.data, shape), device)
}

pub(crate) struct HostNorm {
    pub weight: HostTensor,
    pub bias: Option<HostTensor>,
}

/// The norms only some families have (Gemma: after each sublayer, and per q/k head).
#[derive(Default)]
pub(crate) struct HostBlockExtras {
    /// On the attention output before the residual add (`post_attention_layernorm`).
    pub ln1_post: Option<HostNorm>,
    /// On the MLP output before the residual add (`post_feedforward_layernorm`).
    pub ln2_post: Option<HostNorm>,
    /// `[d_head]` RMSNorm weights shared by every query / key head.
    pub q_norm: Option<HostNorm>,
    pub k_norm: Option<HostNorm>,
}

pub(crate) struct HostBlock {
    pub ln1: HostNorm,
    pub ln2: HostNorm,
    /// `[(H + 2·KV)·d_head, d_model]`: q | k | v rows, heads contiguous inside each.
    pub qkv: HostLinear,
    pub o: HostLinear,
    /// Gated: `[2·d_mlp, d_model]` gate | up rows. Plain: `[d_mlp, d_model]`.
    pub mlp_in: HostLinear,
    pub mlp_out: HostLinear,
    pub extras: HostBlockExtras,
}

/// A whole model's weights on the host, as the architecture loaders produce them.
pub(crate) struct HostModel {
    /// `[vocab, d_model]`
    pub embed: HostMatrix,
    pub pos_embed: Option<HostTensor>,
    pub blocks: Vec<HostBlock>,
    pub ln_final: HostNorm,
    /// `[vocab, d_model]` rows (the embedding's when tied)
    pub unembed: HostLinear,
}

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
        let dtype = x.dtype();
        let x = if dtype == DType::F32 {
            x
        } else {
            x.cast(DType::F32)
        };
        let y = match self.kind {
            NormKind::RmsNorm => {
                let ms = (x.clone() * x.clone()).mean_dim(1);
                x * (ms + self.eps).sqrt().recip()
            }
            NormKind::LayerNorm => {
                let xc = x.clone() - x.mean_dim(1);
                let var = (xc.clone() * xc.clone()).mean_dim(1);
                xc * (var + self.eps).sqrt().recip()
            }
        };
        let y = if dtype == DType::F32 {
            y
        } else {
            y.cast(dtype)
        };
        let y = y * self.weight.clone();
        match &self.bias {
            Some(b) => y + b.clone(),
            None => y,
        }
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

    /// A model of this configuration with random weights (seeded): normal(0, 0.02) matrices as in
    /// GPT-2's and Llama's `initializer_range`, norms at weight 1 ± 0.1. For benchmarks and tests
    /// where the real weights are not available (GPT-2 and Pythia cannot be fetched here).
    pub fn random(config: ModelConfig, seed: u64, device: &B::Device) -> Result<Self> {
        use rand::{rngs::StdRng, SeedableRng};
        use rand_distr::{Distribution, Normal};
        config.validate("random model")?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut normal = |shape: Vec<usize>, mean: f32, std: f32| {
            let n: usize = shape.iter().product();
            let d = Normal::new(mean, std).expect("a positive standard deviation");
            let data = (0..n).map(|_| d.sample(&mut rng)).collect();
            HostTensor::new(shape, data)
        };
        let c = &config;
        let d = c.d_model;
        let layer_norm = c.norm == NormKind::LayerNorm;
        let norm_of =
            |normal: &mut dyn FnMut(Vec<usize>, f32, f32) -> HostTensor, d: usize| HostNorm {
                weight: normal(vec![d], 1.0, 0.1),
                bias: layer_norm.then(|| normal(vec![d], 0.0, 0.02)),
            };
        let norm = |normal: &mut dyn FnMut(Vec<usize>, f32, f32) -> HostTensor| norm_of(normal, d);
        let linear = |normal: &mut dyn FnMut(Vec<usize>, f32, f32) -> HostTensor,
                      i: usize,
                      o: usize,
                      bias: bool| HostLinear {
            weight: HostMatrix::from_in_out(normal(vec![i, o], 0.0, 0.02)),
            bias: bias.then(|| normal(vec![o], 0.0, 0.02)),
        };
        let embed = normal(vec![c.vocab_size, d], 0.0, 0.02);
        let pos_embed = c
            .rope
            .is_none()
            .then(|| normal(vec![c.max_positions, d], 0.0, 0.01));
        let qkv_out = (c.n_heads + 2 * c.n_kv_heads) * c.d_head;
        let mlp_in_out = if c.gated_mlp { 2 * c.d_mlp } else { c.d_mlp };
        let blocks = (0..c.n_layers)
            .map(|_| HostBlock {
                ln1: norm(&mut normal),
                ln2: norm(&mut normal),
                qkv: linear(&mut normal, d, qkv_out, c.qkv_bias),
                o: linear(&mut normal, c.n_heads * c.d_head, d, c.o_bias),
                mlp_in: linear(&mut normal, d, mlp_in_out, c.mlp_bias),
                mlp_out: linear(&mut normal, c.d_mlp, d, c.mlp_bias),
                extras: HostBlockExtras {
                    ln1_post: c.extras.post_norms.then(|| norm(&mut normal)),
                    ln2_post: c.extras.post_norms.then(|| norm(&mut normal)),
                    q_norm: c.extras.qk_norm.then(|| norm_of(&mut normal, c.d_head)),
                    k_norm: c.extras.qk_norm.then(|| norm_of(&mut normal, c.d_head)),
                },
            })
            .collect();
        let ln_final = norm(&mut normal);
        let unembed = HostLinear {
            weight: if c.tied_embeddings {
                HostMatrix::Dense(embed.clone())
            } else {
                HostMatrix::from_in_out(normal(vec![d, c.vocab_size], 0.0, 0.02))
            },
            bias: None,
        };
        let host = HostModel {
            embed: HostMatrix::Dense(embed),
            pos_embed,
            blocks,
            ln_final,
            unembed,
        };
        Ok(Self::from_host(config, host, WeightStorage::F32, device))
    }

    /// Casts every weight to `dtype` (float32, float16 or bfloat16), so the residual stream, the
    /// projections and attention run in that precision. Norm statistics stay in float32, logits come
    /// back as float32, and intervention values are cast to the stream's dtype where they are
    /// written. Cached activations keep the stream's dtype.
    pub fn with_dtype(self, dtype: DType) -> Self {
        if dtype == self.dtype {
            return self;
        }
        Self {
            embed: self.embed.cast(dtype),
            pos_embed: self.pos_embed.map(|p| p.cast(dtype)),
            blocks: self
                .blocks
                .into_iter()
                .map(|b| Block {
                    ln1: b.ln1.cast(dtype),
                    ln2: b.ln2.cast(dtype),
                    qkv: b.qkv.cast(dtype),
                    o: b.o.cast(dtype),
                    mlp_in: b.mlp_in.cast(dtype),
                    mlp_out: b.mlp_out.cast(dtype),
                    ln1_post: b.ln1_post.map(|n| n.cast(dtype)),
                    ln2_post: b.ln2_post.map(|n| n.cast(dtype)),
                    q_norm: b.q_norm.map(|n| n.cast(dtype)),
                    k_norm: b.k_norm.map(|n| n.cast(dtype)),
                })
                .collect(),
            ln_final: self.ln_final.cast(dtype),
            unembed: self.unembed.cast(dtype),
            dtype,
            ..self
        }
    }

    /// Expands every packed weight ([`WeightStorage::Compact`]) to a dense device tensor in the
    /// stream's dtype: the model [`WeightStorage::F32`] loads (then cast as by
    /// [`with_dtype`](Self::with_dtype)). A no-op for a model whose weights are all dense.
    pub fn with_dense_weights(self) -> Self {
        let (dtype, device) = (self.dtype, self.device.clone());
        Self {
            embed: self.embed.densify(&device),
            blocks: self
                .blocks
                .into_iter()
                .map(|b| Block {
                    qkv: b.qkv.densify(dtype, &device),
                    o: b.o.densify(dtype, &device),
                    mlp_in: b.mlp_in.densify(dtype, &device),
                    mlp_out: b.mlp_out.densify(dtype, &device),
                    ..b
                })
                .collect(),
            unembed: self.unembed.densify(dtype, &device),
            ..self
        }
    }

    /// Memory held by the weight matrices: dense device tensors and packed host bytes (norms
    /// and position embeddings not counted).
    pub fn weight_bytes(&self) -> WeightBytes {
        let linears = self
            .blocks
            .iter()
            .flat_map(|b| [&b.qkv, &b.o, &b.mlp_in, &b.mlp_out])
            .chain(std::iter::once(&self.unembed));
        weight_bytes(&self.embed, linears)
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

    fn list_hook_names(cfg: &ModelConfig) -> Vec<String> {
        let mut v = vec!["hook_embed".to_string()];
        if cfg.rope.is_none() {
            v.push("hook_pos_embed".into());
        }
        for l in 0..cfg.n_layers {
            let mut push = |s: &str| v.push(format!("blocks.{l}.{s}"));
            push("hook_resid_pre");
            push("ln1.hook_normalized");
            push("attn.hook_q");
            push("attn.hook_k");
            push("attn.hook_v");
            if cfg.extras.qk_norm {
                push("attn.q_norm.hook_normalized");
                push("attn.k_norm.hook_normalized");
            }
            push("attn.hook_attn_scores");
            push("attn.hook_pattern");
            push("attn.hook_z");
            push("hook_attn_out");
            if !cfg.parallel_residual {
                push("hook_resid_mid");
            }
            push("ln2.hook_normalized");
            push("mlp.hook_post");
            push("hook_mlp_out");
            push("hook_resid_post");
        }
        v.push("ln_final.hook_normalized".into());
        v
    }

    /// Run the model on a batch with the given hooks.
    pub fn forward(&self, batch: &Batch, spec: &HookSpec<B>) -> Result<Output<B>> {
        let cfg = &self.config;
        let (b, t) = (batch.len(), batch.seq_len());
        let n = b * t;
        let valid: HashSet<String> = if spec.cache.is_empty()
            && spec.interventions.is_empty()
            && spec.knockouts.is_empty()
        {
            HashSet::new()
        } else {
            self.hook_names.iter().cloned().collect()
        };
        let mut hooks = HookRunner::new(spec, batch, &valid, cfg.n_layers, &self.device)?;

        let ids = batch.padded_ids();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= cfg.vocab_size) {
            return Err(ProbeError::BadInput(format!(
                "token id {bad} ≥ vocab size {}",
                cfg.vocab_size
            )));
        }
        let positions = batch.positions();

        let mut x = self.embed.lookup(&ids, &self.device)?;
        if let Some(s) = cfg.extras.embed_scale {
            // HF multiplies by the scale cast to the weights' dtype (√640 is 25.25 in bf16).
            x = x * round_to(s, self.dtype);
        }
        x = hooks.point_rows(|| "hook_embed".into(), x)?;
        if let Some(pe) = &self.pos_embed {
            if t > cfg.max_positions {
                return Err(ProbeError::BadInput(format!(
                    "sequence length {t} > max positions {}",
                    cfg.max_positions
                )));
            }
            let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
            let pos = Tensor::<B, 1, Int>::from_data(TensorData::new(pos, [n]), &self.device);
            let p = hooks.point_rows(|| "hook_pos_embed".into(), pe.clone().select(0, pos))?;
            x = x + p;
        }
        let rope = cfg
            .rope
            .as_ref()
            .map(|r| RopeTables::<B>::new(r, &positions, b, t, &self.device));
        let mask: Tensor<B, 4> = Tensor::from_data(
            TensorData::new(batch.attention_bias(), [b, 1, t, t]),
            &self.device,
        );
        // Sliding-window layers see their own mask and rotary table (built only if some layer
        // is local).
        let any_local = (0..cfg.n_layers).any(|l| cfg.extras.is_local(l));
        let local = match (any_local, cfg.extras.sliding_window) {
            (true, Some(w)) => {
                let rope_local = match &cfg.extras.rope_local {
                    Some(r) => Some(RopeTables::<B>::new(r, &positions, b, t, &self.device)),
                    None => rope.clone(),
                };
                Some((
                    mask.clone() + window_bias::<B>(t, w, &self.device),
                    rope_local,
                ))
            }
            _ => None,
        };
        let mut global = (mask, rope);
        let mut local = local;
        if self.dtype != DType::F32 {
            // -1e30 overflows float16 to -inf, and a fully masked (padding) row would then give
            // NaN that leaks into real rows; -3e4 still zeroes every masked weight after softmax.
            let cast = |m: Tensor<B, 4>, r: Option<RopeTables<B>>| {
                (
                    m.clamp_min(-3.0e4).cast(self.dtype),
                    r.map(|r| r.cast(self.dtype)),
                )
            };
            global = cast(global.0, global.1);
            local = local.map(|(m, r)| cast(m, r));
        }

        let n_run = spec.stop_at_layer.unwrap_or(cfg.n_layers).min(cfg.n_layers);
        for (l, blk) in self.blocks.iter().enumerate().take(n_run) {
            let (mask, rope) = match &local {
                Some(lo) if cfg.extras.is_local(l) => lo,
                _ => &global,
            };
            x = self.block_forward(l, blk, x, mask, rope.as_ref(), &mut hooks, b, t)?;
        }
        let skip_final = spec.logits == LogitsMode::None && !hooks_wants_final(spec);
        if n_run < cfg.n_layers || skip_final {
            return Ok(Output {
                logits: None,
                cache: hooks.cache,
            });
        }
        let x = self.ln_final.forward(x);
        let x = hooks.point_rows(|| "ln_final.hook_normalized".into(), x)?;
        let v = cfg.vocab_size;
        let logits = match spec.logits {
            LogitsMode::All => Some(self.unembed.forward(x).reshape([b, t, v])),
            LogitsMode::Last => {
                let last: Vec<i32> = (0..b).map(|r| (r * t + t - 1) as i32).collect();
                let last = Tensor::<B, 1, Int>::from_data(TensorData::new(last, [b]), &self.device);
                Some(self.unembed.forward(x.select(0, last)).reshape([b, 1, v]))
            }
            LogitsMode::None => None,
        };
        let logits = match (logits, cfg.extras.final_softcap) {
            (Some(l), Some(c)) => Some(softcap(l, c)),
            (l, _) => l,
        };
        let logits = match logits {
            Some(l) if self.dtype != DType::F32 => Some(l.cast(DType::F32)),
            l => l,
        };
        Ok(Output {
            logits,
            cache: hooks.cache,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn block_forward(
        &self,
        l: usize,
        blk: &Block<B>,
        x: Tensor<B, 2>,
        mask: &Tensor<B, 4>,
        rope: Option<&RopeTables<B>>,
        hooks: &mut HookRunner<'_, B>,
        b: usize,
        t: usize,
    ) -> Result<Tensor<B, 2>> {
        let resid_pre = hooks.point_rows(|| format!("blocks.{l}.hook_resid_pre"), x)?;
        let h = blk.ln1.forward(resid_pre.clone());
        let h = hooks.point_rows(|| format!("blocks.{l}.ln1.hook_normalized"), h)?;
        let attn_out = self.attention(l, blk, h, mask, rope, hooks, b, t)?;
        // Post-sublayer norms (Gemma) come before the hook, so `hook_attn_out` / `hook_mlp_out`
        // are what joins the residual stream, as in TransformerLens.
        let attn_out = match &blk.ln1_post {
            Some(n) => n.forward(attn_out),
            None => attn_out,
        };
        let attn_out = hooks.point_rows(|| format!("blocks.{l}.hook_attn_out"), attn_out)?;
        let (mlp_in, base) = if self.config.parallel_residual {
            // GPT-NeoX: both sublayers read the block input.
            (resid_pre.clone(), resid_pre + attn_out)
        } else {
            let mid = hooks.point_rows(
                || format!("blocks.{l}.hook_resid_mid"),
                resid_pre + attn_out,
            )?;
            (mid.clone(), mid)
        };
        let h = blk.ln2.forward(mlp_in);
        let h = hooks.point_rows(|| format!("blocks.{l}.ln2.hook_normalized"), h)?;
        let mlp_out = self.mlp(l, blk, h, hooks)?;
        let mlp_out = match &blk.ln2_post {
            Some(n) => n.forward(mlp_out),
            None => mlp_out,
        };
        let mlp_out = hooks.point_rows(|| format!("blocks.{l}.hook_mlp_out"), mlp_out)?;
        hooks.point_rows(|| format!("blocks.{l}.hook_resid_post"), base + mlp_out)
    }

    fn mlp(
        &self,
        l: usize,
        blk: &Block<B>,
        h: Tensor<B, 2>,
        hooks: &mut HookRunner<'_, B>,
    ) -> Result<Tensor<B, 2>> {
        let f = self.config.d_mlp;
        let pre = blk.mlp_in.forward(h);
        let post = if self.config.gated_mlp {
            let gate = pre.clone().narrow(1, 0, f);
            let up = pre.narrow(1, f, f);
            act(self.config.activation, gate) * up
        } else {
            act(self.config.activation, pre)
        };
        let post = hooks.point_rows(|| format!("blocks.{l}.mlp.hook_post"), post)?;
        Ok(blk.mlp_out.forward(post))
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        l: usize,
        blk: &Block<B>,
        h: Tensor<B, 2>,
        mask: &Tensor<B, 4>,
        rope: Option<&RopeTables<B>>,
        hooks: &mut HookRunner<'_, B>,
        b: usize,
        t: usize,
    ) -> Result<Tensor<B, 2>> {
        let cfg = &self.config;
        let (nh, nkv, dh) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let qkv = blk.qkv.forward(h);
        let q = qkv.clone().narrow(1, 0, nh * dh).reshape([b, t, nh, dh]);
        let k = qkv
            .clone()
            .narrow(1, nh * dh, nkv * dh)
            .reshape([b, t, nkv, dh]);
        let v = qkv
            .narrow(1, (nh + nkv) * dh, nkv * dh)
            .reshape([b, t, nkv, dh]);
        let q = hooks.point4(|| format!("blocks.{l}.attn.hook_q"), q)?;
        let k = hooks.point4(|| format!("blocks.{l}.attn.hook_k"), k)?;
        let v = hooks.point4(|| format!("blocks.{l}.attn.hook_v"), v)?;
        // q/k RMSNorm over each head's d_head values (Gemma 3), before rotary.
        let q = match &blk.q_norm {
            Some(n) => hooks.point4(
                || format!("blocks.{l}.attn.q_norm.hook_normalized"),
                n.forward(q.reshape([b * t * nh, dh]))
                    .reshape([b, t, nh, dh]),
            )?,
            None => q,
        };
        let k = match &blk.k_norm {
            Some(n) => hooks.point4(
                || format!("blocks.{l}.attn.k_norm.hook_normalized"),
                n.forward(k.reshape([b * t * nkv, dh]))
                    .reshape([b, t, nkv, dh]),
            )?,
            None => k,
        };
        let (mut q, mut k, v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2));
        if let Some(r) = rope {
            q = r.apply(q);
            k = r.apply(k);
        }
        let (k, v) = (repeat_kv(k, nh / nkv), repeat_kv(v, nh / nkv));
        let scale = match cfg.extras.query_pre_attn_scalar {
            Some(s) => 1.0 / s.sqrt(),
            None => 1.0 / (dh as f32).sqrt(),
        };
        let mut scores = exact_f32::matmul(q, k.swap_dims(2, 3)) * scale + mask.clone();
        if let Some(knock) = hooks.knockout_bias(l, nh)? {
            scores = scores + knock.cast(self.dtype);
        }
        let scores = hooks.point4(|| format!("blocks.{l}.attn.hook_attn_scores"), scores)?;
        let pattern = softmax(scores, 3);
        let pattern = hooks.point4(|| format!("blocks.{l}.attn.hook_pattern"), pattern)?;
        let z = exact_f32::matmul(pattern, v).swap_dims(1, 2);
        let z = hooks.point4(|| format!("blocks.{l}.attn.hook_z"), z)?;
        Ok(blk.o.forward(z.reshape([b * t, nh * dh])))
    }

    /// Greedy next token after each row's last token.
    pub fn greedy_next(&self, batch: &Batch) -> Result<Vec<u32>> {
        Ok(self
            .top_k_last(batch, 1)?
            .into_iter()
            .map(|v| v[0].0)
            .collect())
    }

    /// The `k` most likely next tokens (id, logit) after each row's last token, best first.
    pub fn top_k_last(&self, batch: &Batch, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        let out = self.forward(batch, &HookSpec::new().logits(LogitsMode::Last))?;
        let logits = out.logits.expect("LogitsMode::Last gives logits");
        Ok(top_k_rows(logits, k))
    }

    /// Greedy generation of up to `max_new_tokens` per row (stops a row at `stop`, which is not
    /// included). Recomputes the full prefix each step (no KV cache): meant for short answers.
    pub fn generate(
        &self,
        batch: &Batch,
        max_new_tokens: usize,
        stop: Option<u32>,
    ) -> Result<Vec<Vec<u32>>> {
        let mut rows: Vec<Vec<u32>> = batch.rows().to_vec();
        let mut new: Vec<Vec<u32>> = vec![Vec::new(); rows.len()];
        let mut done = vec![false; rows.len()];
        for _ in 0..max_new_tokens {
            if done.iter().all(|&d| d) {
                break;
            }
            let cur = Batch::from_ids(rows.clone(), batch.pad_id())?;
            let next = self.greedy_next(&cur)?;
            for (i, &tok) in next.iter().enumerate() {
                if done[i] {
                    continue;
                }
                if Some(tok) == stop {
                    done[i] = true;
                } else {
                    new[i].push(tok);
                    rows[i].push(tok);
                }
            }
        }
        Ok(new)
    }
}

fn hooks_wants_final<B: Backend>(spec: &HookSpec<B>) -> bool {
    spec.cache
        .iter()
        .any(|c| crate::hooks::glob_match(c, "ln_final.hook_normalized"))
        || spec
            .interventions
            .iter()
            .any(|i| i.hook == "ln_final.hook_normalized")
}

/// Top-`k` (id, logit) of the last position of `[B, T, V]` logits, per row.
pub fn top_k_rows<B: Backend>(logits: Tensor<B, 3>, k: usize) -> Vec<Vec<(u32, f32)>> {
    let [b, t, v] = logits.dims();
    let last = logits.narrow(1, t - 1, 1).reshape([b, v]);
    let data = last.into_data().convert::<f32>();
    let vals = data.as_slice::<f32>().expect("f32 data");
    (0..b)
        .map(|r| {
            let row = &vals[r * v..(r + 1) * v];
            let mut idx: Vec<usize> = (0..v).collect();
            let k = k.min(v);
            // Ties keep the lower id first, as torch.topk does on CPU in practice.
            idx.select_nth_unstable_by(k.saturating_sub(1).min(v - 1), |&a, &b| {
                row[b].total_cmp(&row[a]).then(a.cmp(&b))
            });
            let mut top: Vec<usize> = idx[..k].to_vec();
            top.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            top.into_iter().map(|i| (i as u32, row[i])).collect()
        })
        .collect()
}

/// Soft capping of the logits, `c·tanh(x/c)` (Gemma 2; honoured when a Gemma 3 config sets it).
fn softcap<B: Backend, const D: usize>(x: Tensor<B, D>, c: f32) -> Tensor<B, D> {
    (x / c).tanh() * c
}

/// `s` rounded to `dtype` (so a scale multiplies as it would after HF's `.to(dtype)`).
fn round_to(s: f32, dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => half::bf16::from_f32(s).to_f32(),
        DType::F16 => half::f16::from_f32(s).to_f32(),
        _ => s,
    }
}

/// Additive `[1, 1, T, T]` bias hiding keys at least `window` positions behind the query
/// (HF `sliding_window_overlay`: key `k` visible from query `q` iff `q − k < window`; llama.cpp
/// `is_masked_swa`). Padded coordinates equal position differences here: padding is on the left.
fn window_bias<B: Backend>(t: usize, window: usize, device: &B::Device) -> Tensor<B, 4> {
    let mut bias = vec![0f32; t * t];
    for q in 0..t {
        for k in 0..t {
            if q >= k + window {
                bias[q * t + k] = crate::batch::MASK_VALUE;
            }
        }
    }
    Tensor::from_data(TensorData::new(bias, [1, 1, t, t]), device)
}

fn act<B: Backend>(a: Activation, x: Tensor<B, 2>) -> Tensor<B, 2> {
    match a {
        Activation::Silu => silu(x),
        Activation::Gelu => gelu(x),
        Activation::GeluTanh => gelu_approximate(x),
        Activation::Relu => relu(x),
    }
}

/// Grouped-query attention: key/value head `j` serves query heads `j·g .. (j+1)·g`.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, g: usize) -> Tensor<B, 4> {
    if g == 1 {
        return x;
    }
    let [b, kv, t, dh] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .repeat_dim(2, g)
        .reshape([b, kv * g, t, dh])
}
