//! The hooked forward pass: embedding, blocks (attention and MLP), final norm and logits, with
//! every TransformerLens hook point cached or overwritten as the [`HookSpec`] asks.

use std::collections::HashSet;

use burn::tensor::activation::{gelu, relu};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::{Block, Model, Norm, Output};
use crate::batch::{Batch, RunLimits};
use crate::config::Activation;
use crate::error::{ProbeError, Result};
use crate::hooks::{HookRunner, HookSpec, LogitsMode};
use crate::rope::RopeTables;

impl<B: Backend> Model<B> {
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
        let limits = RunLimits::from_env()?;
        let all_logits = spec.logits == LogitsMode::All;
        batch.check_fits(cfg, &limits, &spec.cache, &self.hook_names, all_logits)?;

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
        let x = self
            .ln_final
            .forward_hooked(x, &mut hooks, || "ln_final.hook_scale".into())?;
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
        let h = blk.ln1.forward_hooked(resid_pre.clone(), hooks, || {
            format!("blocks.{l}.ln1.hook_scale")
        })?;
        let h = hooks.point_rows(|| format!("blocks.{l}.ln1.hook_normalized"), h)?;
        let attn_out = self.attention(l, blk, h, mask, rope, hooks, b, t)?;
        // Post-sublayer norms (Gemma) come before the hook, so `hook_attn_out` / `hook_mlp_out`
        // are what joins the residual stream, as in TransformerLens.
        let attn_out = match &blk.ln1_post {
            Some(n) => n.forward_hooked(attn_out, hooks, || {
                format!("blocks.{l}.ln1_post.hook_scale")
            })?,
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
        let h = blk
            .ln2
            .forward_hooked(mlp_in, hooks, || format!("blocks.{l}.ln2.hook_scale"))?;
        let h = hooks.point_rows(|| format!("blocks.{l}.ln2.hook_normalized"), h)?;
        let mlp_out = self.mlp(l, blk, h, hooks)?;
        let mlp_out = match &blk.ln2_post {
            Some(n) => {
                n.forward_hooked(mlp_out, hooks, || format!("blocks.{l}.ln2_post.hook_scale"))?
            }
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
        // TransformerLens: `hook_pre` is what the activation function reads (a gated MLP's gate
        // projection), `hook_pre_linear` a gated MLP's up projection.
        let touched = || {
            hooks.touches(|| format!("blocks.{l}.mlp.hook_pre"))
                || hooks.touches(|| format!("blocks.{l}.mlp.hook_pre_linear"))
        };
        let post = if self.config.gated_mlp && !touched() {
            // act(gate)·up in one pass over the fused projection (same numbers as below).
            match super::heads::gated_act(self.config.activation, pre, f) {
                Ok(post) => post,
                Err(pre) => {
                    act(self.config.activation, pre.clone().narrow(1, 0, f)) * pre.narrow(1, f, f)
                }
            }
        } else if self.config.gated_mlp {
            let gate = pre.clone().narrow(1, 0, f);
            let up = pre.narrow(1, f, f);
            let gate = hooks.point_rows(|| format!("blocks.{l}.mlp.hook_pre"), gate)?;
            let up = hooks.point_rows(|| format!("blocks.{l}.mlp.hook_pre_linear"), up)?;
            act(self.config.activation, gate) * up
        } else {
            let pre = hooks.point_rows(|| format!("blocks.{l}.mlp.hook_pre"), pre)?;
            act(self.config.activation, pre)
        };
        let post = hooks.point_rows(|| format!("blocks.{l}.mlp.hook_post"), post)?;
        Ok(blk.mlp_out.forward(post))
    }

    /// q, k, v as `[b, heads, t, dh]` through their TransformerLens hook points (`[b, t, heads,
    /// dh]`), with Gemma's q/k RMSNorm and its hooks: the path when some head hook is cached or
    /// patched.
    fn heads_hooked(
        &self,
        l: usize,
        blk: &Block<B>,
        qkv: Tensor<B, 2>,
        hooks: &mut HookRunner<'_, B>,
        b: usize,
        t: usize,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> {
        let cfg = &self.config;
        let (nh, nkv, dh) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
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
        Ok((q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2)))
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
        let head_hooks = [
            "attn.hook_q",
            "attn.hook_k",
            "attn.hook_v",
            "attn.q_norm.hook_normalized",
            "attn.k_norm.hook_normalized",
        ];
        let (q, k, v) = if head_hooks
            .iter()
            .any(|p| hooks.touches(|| format!("blocks.{l}.{p}")))
        {
            self.heads_hooked(l, blk, qkv, hooks, b, t)?
        } else {
            // No hook on the heads: each of q, k, v is copied once, straight into the
            // [b, heads, t, dh] order attention multiplies (one pass of whole d_head rows on plain
            // Flex float32), and q/k RMSNorm runs over those rows in that order.
            let split =
                |h0: usize, n: usize| super::heads::heads_first(qkv.clone(), b, t, h0, n, dh);
            let norm = |x: Tensor<B, 4>, n: Option<&Norm<B>>, heads: usize| match n {
                Some(n) => n
                    .forward(x.reshape([b * heads * t, dh]))
                    .reshape([b, heads, t, dh]),
                None => x,
            };
            (
                norm(split(0, nh), blk.q_norm.as_ref(), nh),
                norm(split(nh, nkv), blk.k_norm.as_ref(), nkv),
                split(nh + nkv, nkv),
            )
        };
        let (mut q, mut k) = (q, k);
        if let Some(r) = rope {
            q = r.apply(q);
            k = r.apply(k);
            // The rotated heads are hooked in TransformerLens's [B, T, H, d_head] order; the
            // transposes are done only when the hook is cached or patched.
            if hooks.touches(|| format!("blocks.{l}.attn.hook_rot_q")) {
                let name = || format!("blocks.{l}.attn.hook_rot_q");
                q = hooks.point4(name, q.swap_dims(1, 2))?.swap_dims(1, 2);
            }
            if hooks.touches(|| format!("blocks.{l}.attn.hook_rot_k")) {
                let name = || format!("blocks.{l}.attn.hook_rot_k");
                k = hooks.point4(name, k.swap_dims(1, 2))?.swap_dims(1, 2);
            }
        }
        let scale = match cfg.extras.query_pre_attn_scalar {
            Some(s) => 1.0 / s.sqrt(),
            None => 1.0 / (dh as f32).sqrt(),
        };
        // Grouped-query attention without copying keys and values per query head: the g = nh/nkv
        // query heads that share key/value head j are stacked along the row axis, so each group is
        // one (g·t × dh)·(dh × t) product (taller, so better for the GEMM kernel), and the scores
        // are read back as [b, nh, t, t] (a free reshape of the contiguous product).
        let g = nh / nkv;
        let mut scores = super::heads::scale_add_mask(
            exact_f32::matmul(q.reshape([b, nkv, g * t, dh]), k.swap_dims(2, 3))
                .reshape([b, nh, t, t]),
            scale,
            mask,
        );
        if let Some(knock) = hooks.knockout_bias(l, nh)? {
            scores = scores + knock.cast(self.dtype);
        }
        let scores = hooks.point4(|| format!("blocks.{l}.attn.hook_attn_scores"), scores)?;
        // flex-kernels' vectorised, row-parallel softmax on plain Flex; burn's elsewhere.
        let pattern = flex_kernels::softmax::softmax_last(scores);
        let pattern = hooks.point4(|| format!("blocks.{l}.attn.hook_pattern"), pattern)?;
        let z = super::heads::tokens_first(
            exact_f32::matmul(pattern.reshape([b, nkv, g * t, t]), v).reshape([b, nh, t, dh]),
        );
        let z = hooks.point4(|| format!("blocks.{l}.attn.hook_z"), z)?;
        let result_name = || format!("blocks.{l}.attn.hook_result");
        if !hooks.touches(result_name) {
            return Ok(blk.o.forward(z.reshape([b * t, nh * dh])));
        }
        // Per-head outputs [B, T, H, W] (TransformerLens `hook_result`, no bias). When only cached,
        // the output is still the one fused projection, so caching changes no number downstream;
        // when patched, the output is their sum over heads plus the bias.
        let d = cfg.d_model;
        let result = blk
            .o
            .forward_split(z.clone().reshape([b * t, nh, dh]))
            .reshape([b, t, nh, d]);
        let patched = hooks.intervenes(&result_name());
        let result = hooks.point4(result_name, result)?;
        if !patched {
            return Ok(blk.o.forward(z.reshape([b * t, nh * dh])));
        }
        let summed = result.sum_dim(2).reshape([b * t, d]);
        Ok(match blk.o.bias() {
            Some(bias) => summed + bias.clone(),
            None => summed,
        })
    }
}

fn hooks_wants_final<B: Backend>(spec: &HookSpec<B>) -> bool {
    const FINAL: [&str; 2] = ["ln_final.hook_scale", "ln_final.hook_normalized"];
    spec.cache
        .iter()
        .any(|c| FINAL.iter().any(|f| crate::hooks::glob_match(c, f)))
        || spec
            .interventions
            .iter()
            .any(|i| FINAL.contains(&i.hook.as_str()))
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
        Activation::Silu => flex_kernels::elementwise::silu(x),
        Activation::Gelu => gelu(x),
        Activation::GeluTanh => gelu_tanh(x),
        Activation::Relu => relu(x),
    }
}

/// GELU's tanh approximation (HF `gelu_new`) as `x·σ(2y)`, `y = √(2/π)(x + 0.044715x³)`, which
/// equals `0.5x(1 + tanh y)` exactly. burn 0.21's `gelu_approximate` computes `x³` with `powf` and then
/// `tanh`, element by element on one thread under burn-flex: 19 % of a GPT-2 forward in a profile
/// (docs/performance.md). Here `x³` is two multiplications.
fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // One vectorised, parallel pass on plain Flex; the same formula with burn's ops elsewhere.
    flex_kernels::elementwise::gelu_tanh(x)
}

#[cfg(test)]
mod gelu_tests {
    use super::*;
    use burn::backend::Flex;

    /// Equal to burn's `gelu_approximate` (the formula HF's `gelu_new` uses) to float rounding
    /// over the range activations take, including large |x| where σ saturates.
    #[test]
    fn gelu_tanh_equals_the_tanh_formula() {
        let dev = Default::default();
        let v: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.01).collect();
        let n = v.len();
        let x = Tensor::<Flex, 1>::from_data(TensorData::new(v, [n]), &dev);
        let want: Vec<f32> = burn::tensor::activation::gelu_approximate(x.clone())
            .into_data()
            .into_vec()
            .unwrap();
        let got: Vec<f32> = gelu_tanh(x).into_data().into_vec().unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "worst relative difference {worst}");
    }
}
