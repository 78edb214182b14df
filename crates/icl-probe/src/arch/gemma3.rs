//! Gemma 3 (text): the shared block with [`BlockExtras`] switched on — RMSNorm with weight `1 + w`,
//! a norm before and after each sublayer, embeddings × √d_model, GeGLU with tanh GELU, q/k RMSNorm
//! per head, `query_pre_attn_scalar^-1/2` attention scale, and sliding-window local layers with
//! their own RoPE base between global ones.
//!
//! Checked against transformers' `modeling_gemma3.py` (`Gemma3RMSNorm`, `Gemma3DecoderLayer`,
//! `Gemma3TextScaledWordEmbedding`, `Gemma3Attention`) and llama.cpp's `gemma3` graph and
//! hyper-parameter loader.
//!
//! Norm weights: Hugging Face checkpoints store `w` and the model multiplies by `1 + w`;
//! llama.cpp's converter stores `1 + w` in the GGUF. The block multiplies by its stored weight, so
//! [`load`] adds 1 to every norm weight, and [`hf_name`]'s caller ([`super::llama::gguf_weights`])
//! first subtracts 1 from the GGUF norms, as transformers' GGUF loader does, so the one loader
//! serves both (in float32, `(v − 1) + 1 = v` exactly for every `v ≥ ½`, and within one rounding
//! of 1.0 otherwise: the same numbers transformers computes).

use crate::arch::{fuse_cols, linear, norm, unembed};
use crate::config::{
    implied_head_dim, layer_count, layer_pattern, Activation, Architecture, BlockExtras,
    LayerAttention, ModelConfig, NormKind, RopeConfig, RopeScaling, GEMMA3_SLIDING_WINDOW_PATTERN,
};
use crate::error::{ProbeError, Result};
use crate::gguf::{GgufFile, GgufValue};
use crate::model::{HostBlock, HostBlockExtras, HostModel, HostNorm};
use crate::weights::WeightMap;

/// Where the text model's tensors live: `Gemma3ForCausalLM` (`model.`), or the multimodal
/// `Gemma3ForConditionalGeneration` (`model.language_model.` since transformers 4.52,
/// `language_model.model.` before).
const PREFIXES: [&str; 3] = ["model.", "model.language_model.", "language_model.model."];

/// A Gemma RMSNorm: the checkpoint's `w`, applied as `1 + w`.
fn gemma_norm(w: &mut WeightMap, prefix: &str, d: usize) -> Result<HostNorm> {
    let mut n = norm(w, prefix, d, false)?;
    n.weight.data.iter_mut().for_each(|x| *x += 1.0);
    Ok(n)
}

/// Map Hugging Face Gemma 3 names onto the shared block.
pub(crate) fn load(cfg: &ModelConfig, w: &mut WeightMap) -> Result<HostModel> {
    let (d, v, f, dh) = (cfg.d_model, cfg.vocab_size, cfg.d_mlp, cfg.d_head);
    let (hq, hkv) = (cfg.n_heads * dh, cfg.n_kv_heads * dh);
    let pre = PREFIXES
        .into_iter()
        .find(|p| w.contains(&format!("{p}embed_tokens.weight")))
        .unwrap_or(PREFIXES[0]);
    let embed = w.take_matrix(&format!("{pre}embed_tokens.weight"), [v, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("{pre}layers.{l}");
        let a = format!("{p}.self_attn");
        let q = linear(w, &format!("{a}.q_proj"), hq, d, cfg.qkv_bias)?;
        let k = linear(w, &format!("{a}.k_proj"), hkv, d, cfg.qkv_bias)?;
        let vv = linear(w, &format!("{a}.v_proj"), hkv, d, cfg.qkv_bias)?;
        let gate = linear(w, &format!("{p}.mlp.gate_proj"), f, d, false)?;
        let up = linear(w, &format!("{p}.mlp.up_proj"), f, d, false)?;
        blocks.push(HostBlock {
            ln1: gemma_norm(w, &format!("{p}.input_layernorm"), d)?,
            ln2: gemma_norm(w, &format!("{p}.pre_feedforward_layernorm"), d)?,
            qkv: fuse_cols(vec![q, k, vv])?,
            o: linear(w, &format!("{a}.o_proj"), d, hq, cfg.o_bias)?,
            mlp_in: fuse_cols(vec![gate, up])?,
            mlp_out: linear(w, &format!("{p}.mlp.down_proj"), d, f, false)?,
            extras: HostBlockExtras {
                ln1_post: Some(gemma_norm(w, &format!("{p}.post_attention_layernorm"), d)?),
                ln2_post: Some(gemma_norm(
                    w,
                    &format!("{p}.post_feedforward_layernorm"),
                    d,
                )?),
                q_norm: Some(gemma_norm(w, &format!("{a}.q_norm"), dh)?),
                k_norm: Some(gemma_norm(w, &format!("{a}.k_norm"), dh)?),
            },
        });
    }
    let ln_final = gemma_norm(w, &format!("{pre}norm"), d)?;
    let head = if w.contains("language_model.lm_head.weight") {
        "language_model.lm_head.weight"
    } else {
        "lm_head.weight"
    };
    let unembed = unembed(w, head, &embed, cfg.tied_embeddings, v, d)?;
    Ok(HostModel {
        embed,
        pos_embed: None,
        blocks,
        ln_final,
        unembed,
    })
}

/// HF name of a llama.cpp `gemma3` tensor name (`None` for tensors the text model does not use).
pub(crate) fn hf_name(gguf_name: &str) -> Option<String> {
    match gguf_name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf_tail = match tail {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "post_attention_norm.weight" => "post_attention_layernorm.weight",
        // In Gemma's sandwich the MLP's input norm is `ffn_norm` (HF `pre_feedforward_layernorm`).
        "ffn_norm.weight" => "pre_feedforward_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf_tail}"))
}

/// Whether a (HF-named) tensor is an RMSNorm weight, stored as `1 + w` in GGUF files.
pub(crate) fn is_norm(hf_name: &str) -> bool {
    hf_name.ends_with("norm.weight")
}

fn meta_err(msg: String) -> ProbeError {
    ProbeError::Config {
        origin: "GGUF metadata".into(),
        msg,
    }
}

/// Per-layer attention kinds from the GGUF: `{arch}.attention.sliding_window_pattern` when the file
/// has it (an integer period, or one bool per layer, true = sliding), else Gemma 3's documented
/// 5 local : 1 global pattern ([`GEMMA3_SLIDING_WINDOW_PATTERN`]), which is what llama.cpp
/// hard-codes for `gemma3`.
fn layer_kinds(g: &GgufFile, a: &str, n_layers: usize) -> Result<Vec<LayerAttention>> {
    let key = format!("{a}.attention.sliding_window_pattern");
    match g.get(&key) {
        None => Ok(layer_pattern(n_layers, GEMMA3_SLIDING_WINDOW_PATTERN)),
        Some(GgufValue::Array(flags)) => {
            if flags.len() != n_layers {
                return Err(meta_err(format!(
                    "`{key}` has {} entries for {n_layers} layers",
                    flags.len()
                )));
            }
            flags
                .iter()
                .map(|f| match f.as_bool() {
                    Some(true) => Ok(LayerAttention::Local),
                    Some(false) => Ok(LayerAttention::Global),
                    None => Err(meta_err(format!("`{key}` holds a non-bool"))),
                })
                .collect()
        }
        Some(x) => match x.as_u64() {
            Some(p) => Ok(layer_pattern(n_layers, p as usize)),
            None => Err(meta_err(format!("`{key}` is neither an integer nor bools"))),
        },
    }
}

/// Build a Gemma 3 config from GGUF metadata (`gemma3.*`).
///
/// Two numbers are not in llama.cpp's GGUF files, and are taken as llama.cpp takes them: the local
/// layers' RoPE base (10,000, unless `{arch}.rope.freq_base_swa` is present) and the attention
/// scale: GGUF carries no `query_pre_attn_scalar`; llama.cpp (after gemma_pytorch's config) uses
/// `d_head` except for the 62-layer 27B model, where it is `d_model / n_heads` (168); Hugging Face's
/// configs agree (256 for the 270M, 1B, 4B and 12B models).
pub fn config_from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    let a = "gemma3";
    let u = |k: &str| {
        g.get(&format!("{a}.{k}"))
            .and_then(GgufValue::as_u64)
            .map(|v| v as usize)
    };
    let need = |k: &str| u(k).ok_or_else(|| meta_err(format!("missing integer `{a}.{k}`")));
    let f = |k: &str| g.get(&format!("{a}.{k}")).and_then(GgufValue::as_f64);
    let d_model = need("embedding_length")?;
    let n_layers = layer_count(need("block_count")?, "gemma3.block_count", "GGUF metadata")?;
    let n_heads = need("attention.head_count")?;
    let n_kv_heads = u("attention.head_count_kv").unwrap_or(n_heads);
    let implied = || {
        implied_head_dim(
            d_model,
            n_heads,
            "gemma3.embedding_length",
            "gemma3.attention.head_count",
            "GGUF metadata",
        )
    };
    let d_head = match u("attention.key_length") {
        Some(d) => d,
        None => implied()?,
    };
    let vocab_size = match u("vocab_size") {
        Some(v) => v,
        None => g
            .tensor_info("token_embd.weight")
            .and_then(|t| t.shape().first().copied())
            .ok_or_else(|| meta_err("no vocab size and no token_embd.weight".into()))?,
    };
    let scaling = match g
        .get(&format!("{a}.rope.scaling.type"))
        .and_then(GgufValue::as_str)
    {
        Some("linear") => RopeScaling::Linear {
            factor: f("rope.scaling.factor").unwrap_or(1.0) as f32,
        },
        Some("none") | None => RopeScaling::None,
        Some(other) => return Err(meta_err(format!("unsupported rope scaling `{other}`"))),
    };
    let rotary_dim = u("rope.dimension_count").unwrap_or(d_head);
    // llama.cpp: no window (or 0) means every layer is global.
    let sliding_window = u("attention.sliding_window").filter(|&w| w > 0);
    let layer_attention = match sliding_window {
        Some(_) => layer_kinds(g, a, n_layers)?,
        None => vec![LayerAttention::Global; n_layers],
    };
    let query_pre_attn_scalar = if n_layers == 62 {
        implied()? as f32
    } else {
        d_head as f32
    };
    let softcap = |k: &str| f(k).filter(|&c| c > 0.0).map(|c| c as f32);
    let id = |k: &str| g.get(k).and_then(GgufValue::as_u64).map(|v| v as u32);
    let cfg = ModelConfig {
        architecture: Architecture::Gemma3,
        n_layers,
        d_model,
        n_heads,
        n_kv_heads,
        d_head,
        d_mlp: need("feed_forward_length")?,
        vocab_size,
        max_positions: u("context_length").unwrap_or(131_072),
        norm: NormKind::RmsNorm,
        norm_eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-6) as f32,
        activation: Activation::GeluTanh,
        gated_mlp: true,
        rope: Some(RopeConfig {
            theta: f("rope.freq_base").unwrap_or(1_000_000.0) as f32,
            rotary_dim,
            scaling,
        }),
        parallel_residual: false,
        qkv_bias: g.tensor_info("blk.0.attn_q.bias").is_some(),
        o_bias: false,
        mlp_bias: false,
        tied_embeddings: g.tensor_info("output.weight").is_none(),
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_id: id("tokenizer.ggml.eos_token_id"),
        extras: BlockExtras {
            post_norms: true,
            qk_norm: true,
            embed_scale: Some((d_model as f64).sqrt() as f32),
            query_pre_attn_scalar: Some(query_pre_attn_scalar),
            final_softcap: softcap("final_logit_softcapping"),
            sliding_window,
            layer_attention,
            rope_local: Some(RopeConfig {
                theta: f("rope.freq_base_swa").unwrap_or(10_000.0) as f32,
                rotary_dim,
                scaling: RopeScaling::None,
            }),
        },
    };
    cfg.validate("GGUF metadata")?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_the_sandwich() {
        assert_eq!(
            hf_name("blk.3.ffn_norm.weight").as_deref(),
            Some("model.layers.3.pre_feedforward_layernorm.weight")
        );
        assert_eq!(
            hf_name("blk.0.post_ffw_norm.weight").as_deref(),
            Some("model.layers.0.post_feedforward_layernorm.weight")
        );
        assert_eq!(
            hf_name("blk.17.attn_k_norm.weight").as_deref(),
            Some("model.layers.17.self_attn.k_norm.weight")
        );
        assert_eq!(hf_name("rope_freqs.weight"), None);
        assert!(is_norm("model.layers.1.self_attn.q_norm.weight"));
        assert!(!is_norm("model.layers.1.self_attn.q_proj.weight"));
    }

    #[test]
    fn default_pattern_is_five_local_one_global() {
        let p = layer_pattern(13, GEMMA3_SLIDING_WINDOW_PATTERN);
        let globals: Vec<usize> = (0..13)
            .filter(|&l| p[l] == LayerAttention::Global)
            .collect();
        assert_eq!(globals, vec![5, 11]);
    }
}
