//! GPT-NeoX / Pythia: LayerNorm, rotary on the first `rotary_pct` of each head, parallel residual
//! (`x + attn(ln1(x)) + mlp(ln2(x))`), untied `embed_out`.
//! `query_key_value` interleaves per head (`[H, 3, d_head]` output rows); we regroup it to
//! q | k | v so the shared block can slice it.

use crate::arch::{linear, norm, unembed};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::linear::HostMatrix;
use crate::model::{HostBlock, HostLinear, HostModel};
use crate::weights::{HostTensor, WeightMap};

/// Rows `[H, 3, dh, ...]` → `[3, H, dh, ...]` (`cols` = 1 for the bias).
fn regroup_qkv(t: &HostTensor, h: usize, dh: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; t.data.len()];
    for head in 0..h {
        for part in 0..3 {
            for i in 0..dh {
                let src = (head * 3 + part) * dh + i;
                let dst = (part * h + head) * dh + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

pub(crate) fn load(cfg: &ModelConfig, w: &mut WeightMap) -> Result<HostModel> {
    let (d, v, f) = (cfg.d_model, cfg.vocab_size, cfg.d_mlp);
    let (h, dh) = (cfg.n_heads, cfg.d_head);
    let embed = w.take_matrix("gpt_neox.embed_in.weight", [v, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("gpt_neox.layers.{l}");
        let qkv_w = w.take(
            &format!("{p}.attention.query_key_value.weight"),
            &[3 * d, d],
        )?;
        let qkv_w = HostMatrix::Dense(HostTensor::new(
            vec![3 * d, d],
            regroup_qkv(&qkv_w, h, dh, d),
        ));
        let qkv_b = if cfg.qkv_bias {
            let b = w.take(&format!("{p}.attention.query_key_value.bias"), &[3 * d])?;
            Some(HostTensor::new(vec![3 * d], regroup_qkv(&b, h, dh, 1)))
        } else {
            None
        };
        blocks.push(HostBlock {
            ln1: norm(w, &format!("{p}.input_layernorm"), d, true)?,
            ln2: norm(w, &format!("{p}.post_attention_layernorm"), d, true)?,
            qkv: HostLinear {
                weight: qkv_w,
                bias: qkv_b,
            },
            o: linear(w, &format!("{p}.attention.dense"), d, d, cfg.o_bias)?,
            mlp_in: linear(w, &format!("{p}.mlp.dense_h_to_4h"), f, d, true)?,
            mlp_out: linear(w, &format!("{p}.mlp.dense_4h_to_h"), d, f, true)?,
            extras: Default::default(),
        });
    }
    let ln_final = norm(w, "gpt_neox.final_layer_norm", d, true)?;
    let unembed = unembed(w, "embed_out.weight", &embed, cfg.tied_embeddings, v, d)?;
    Ok(HostModel {
        embed,
        pos_embed: None,
        blocks,
        ln_final,
        unembed,
    })
}
