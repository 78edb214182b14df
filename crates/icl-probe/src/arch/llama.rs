//! Llama family (Llama 2/3, TinyLlama, SmolLM, Mistral) and Qwen2: pre-norm RMSNorm blocks,
//! rotary attention with grouped-query heads, SwiGLU MLP; Qwen2 adds q/k/v biases.
//! Also reads these models from GGUF (llama.cpp names, Q/K rows permuted for GGML rope).

use crate::arch::{fuse_cols, linear, norm, unembed};
use crate::config::{
    implied_head_dim, Activation, Architecture, ModelConfig, NormKind, RopeConfig, RopeScaling,
};
use crate::error::{ProbeError, Result};
use std::sync::Arc;

use crate::gguf::{qk_row_order, GgufError, GgufFile, GgufValue};
use crate::linear::{PackedMatrix, SharedBytes};
use crate::model::{HostBlock, HostModel};
use crate::weights::{HostTensor, WeightMap};

/// Map Hugging Face Llama/Qwen2 names onto the shared block.
pub(crate) fn load(cfg: &ModelConfig, w: &mut WeightMap) -> Result<HostModel> {
    let (d, v, f) = (cfg.d_model, cfg.vocab_size, cfg.d_mlp);
    let (hq, hkv) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
    let embed = w.take_matrix("model.embed_tokens.weight", [v, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let q = linear(w, &format!("{p}.self_attn.q_proj"), hq, d, cfg.qkv_bias)?;
        let k = linear(w, &format!("{p}.self_attn.k_proj"), hkv, d, cfg.qkv_bias)?;
        let vv = linear(w, &format!("{p}.self_attn.v_proj"), hkv, d, cfg.qkv_bias)?;
        let gate = linear(w, &format!("{p}.mlp.gate_proj"), f, d, cfg.mlp_bias)?;
        let up = linear(w, &format!("{p}.mlp.up_proj"), f, d, cfg.mlp_bias)?;
        blocks.push(HostBlock {
            ln1: norm(w, &format!("{p}.input_layernorm"), d, false)?,
            ln2: norm(w, &format!("{p}.post_attention_layernorm"), d, false)?,
            qkv: fuse_cols(vec![q, k, vv])?,
            o: linear(w, &format!("{p}.self_attn.o_proj"), d, hq, cfg.o_bias)?,
            mlp_in: fuse_cols(vec![gate, up])?,
            mlp_out: linear(w, &format!("{p}.mlp.down_proj"), d, f, cfg.mlp_bias)?,
            extras: Default::default(),
        });
    }
    let ln_final = norm(w, "model.norm", d, false)?;
    let unembed = unembed(w, "lm_head.weight", &embed, cfg.tied_embeddings, v, d)?;
    Ok(HostModel {
        embed,
        pos_embed: None,
        blocks,
        ln_final,
        unembed,
    })
}

fn meta_u(g: &GgufFile, key: &str) -> Result<usize> {
    g.get(key)
        .and_then(GgufValue::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| ProbeError::Config {
            origin: "GGUF metadata".into(),
            msg: format!("missing integer `{key}`"),
        })
}

/// Build the config from GGUF metadata (`{arch}.block_count`, `.embedding_length`, ...).
pub fn config_from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    let arch_name = g
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| ProbeError::Config {
            origin: "GGUF metadata".into(),
            msg: "missing general.architecture".into(),
        })?;
    let architecture = match arch_name {
        "llama" | "mistral" => Architecture::Llama,
        "qwen2" => Architecture::Qwen2,
        "gemma3" => return crate::arch::gemma3::config_from_gguf(g),
        other => return Err(ProbeError::UnknownArchitecture(format!("{other} (GGUF)"))),
    };
    let a = arch_name;
    let d_model = meta_u(g, &format!("{a}.embedding_length"))?;
    let n_heads = meta_u(g, &format!("{a}.attention.head_count"))?;
    let n_kv_heads = meta_u(g, &format!("{a}.attention.head_count_kv")).unwrap_or(n_heads);
    let d_head = match meta_u(g, &format!("{a}.attention.key_length")) {
        Ok(d) => d,
        Err(_) => implied_head_dim(
            d_model,
            n_heads,
            &format!("{a}.embedding_length"),
            &format!("{a}.attention.head_count"),
            "GGUF metadata",
        )?,
    };
    let vocab_size = match meta_u(g, &format!("{a}.vocab_size")) {
        Ok(v) => v,
        Err(_) => g
            .tensor_info("token_embd.weight")
            .and_then(|t| t.shape().first().copied())
            .ok_or_else(|| ProbeError::Config {
                origin: "GGUF metadata".into(),
                msg: "no vocab size and no token_embd.weight".into(),
            })?,
    };
    let f = |k: &str| g.get(&format!("{a}.{k}")).and_then(GgufValue::as_f64);
    let scaling = match g
        .get(&format!("{a}.rope.scaling.type"))
        .and_then(GgufValue::as_str)
    {
        Some("linear") => RopeScaling::Linear {
            factor: f("rope.scaling.factor").unwrap_or(1.0) as f32,
        },
        Some("none") | None => RopeScaling::None,
        Some(other) => {
            return Err(ProbeError::Config {
                origin: "GGUF metadata".into(),
                msg: format!("unsupported rope scaling `{other}`"),
            })
        }
    };
    let id = |k: &str| g.get(k).and_then(GgufValue::as_u64).map(|v| v as u32);
    let cfg = ModelConfig {
        architecture,
        n_layers: meta_u(g, &format!("{a}.block_count"))?,
        d_model,
        n_heads,
        n_kv_heads,
        d_head,
        d_mlp: meta_u(g, &format!("{a}.feed_forward_length"))?,
        vocab_size,
        max_positions: meta_u(g, &format!("{a}.context_length")).unwrap_or(4096),
        norm: NormKind::RmsNorm,
        norm_eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
        activation: Activation::Silu,
        gated_mlp: true,
        rope: Some(RopeConfig {
            theta: f("rope.freq_base").unwrap_or(10000.0) as f32,
            rotary_dim: meta_u(g, &format!("{a}.rope.dimension_count")).unwrap_or(d_head),
            scaling,
        }),
        parallel_residual: false,
        qkv_bias: architecture == Architecture::Qwen2,
        o_bias: false,
        mlp_bias: false,
        tied_embeddings: g.tensor_info("output.weight").is_none(),
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_id: id("tokenizer.ggml.eos_token_id"),
        extras: Default::default(),
    };
    cfg.validate("GGUF metadata")?;
    Ok(cfg)
}

/// HF name of a llama.cpp tensor name (`None` for tensors the model does not use).
fn hf_name(gguf_name: &str) -> Option<String> {
    let fixed = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf_tail = match tail {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf_tail}"))
}

/// A GGUF's tensors under HF names: matrices packed (their blocks borrowed from the mapped
/// file, see [`crate::linear`]), vectors dequantised to f32. Undoes llama.cpp's Q/K row
/// permutation for the `llama` architecture by reordering whole rows (Qwen2 is stored unpermuted:
/// llama.cpp uses NeoX rope for it).
pub fn gguf_weights(g: &Arc<GgufFile>, cfg: &ModelConfig, origin: &str) -> Result<WeightMap> {
    let gerr = |err| ProbeError::Gguf {
        path: origin.into(),
        err,
    };
    let mut w = WeightMap::new(origin);
    let permuted = cfg.architecture == Architecture::Llama;
    let gemma = cfg.architecture == Architecture::Gemma3;
    let file: Arc<dyn AsRef<[u8]> + Send + Sync> = g.clone();
    for info in &g.tensors {
        let name = if gemma {
            crate::arch::gemma3::hf_name(&info.name)
        } else {
            hf_name(&info.name)
        };
        let Some(name) = name else {
            continue;
        };
        let shape = info.shape();
        if let &[rows, cols] = &shape[..] {
            let ty = g.tensor_type(info).map_err(gerr)?;
            let bytes = g.tensor_bytes(info).map_err(gerr)?;
            let bytes = SharedBytes::within(file.clone(), bytes).ok_or_else(|| {
                gerr(GgufError::Metadata {
                    key: info.name.clone(),
                    msg: "tensor bytes outside the mapped file".into(),
                })
            })?;
            let mut m = PackedMatrix::new(ty, rows, cols, bytes)?;
            if permuted && info.name.ends_with("attn_q.weight") {
                m = m.permute_rows(&qk_row_order(rows, cfg.n_heads))?;
            } else if permuted && info.name.ends_with("attn_k.weight") {
                m = m.permute_rows(&qk_row_order(rows, cfg.n_kv_heads))?;
            }
            w.insert_packed(name, m);
            continue;
        }
        let mut data = g.dequantize(info).map_err(gerr)?;
        if gemma && crate::arch::gemma3::is_norm(&name) {
            // llama.cpp stores Gemma's norms as 1 + w; the HF-name loader adds the 1 (as
            // transformers' GGUF loader does: subtract here, add back there).
            data.iter_mut().for_each(|x| *x -= 1.0);
        }
        w.insert(name, HostTensor::new(shape, data));
    }
    Ok(w)
}
