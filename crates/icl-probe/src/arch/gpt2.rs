//! GPT-2: learned absolute positions, pre-norm LayerNorm blocks, GELU (tanh) MLP, tied unembedding.
//! Its Conv1D layers store weights `[in, out]` already, with q | k | v fused in `c_attn`.

use crate::arch::{norm, unembed};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::linear::HostMatrix;
use crate::model::{HostBlock, HostLinear, HostModel};
use crate::weights::WeightMap;

/// A Conv1D layer: weight `[in, out]` as stored, bias `[out]`.
fn conv1d(w: &mut WeightMap, prefix: &str, inp: usize, out: usize) -> Result<HostLinear> {
    Ok(HostLinear {
        weight: HostMatrix::from_in_out(w.take(&format!("{prefix}.weight"), &[inp, out])?),
        bias: Some(w.take(&format!("{prefix}.bias"), &[out])?),
    })
}

pub(crate) fn load(cfg: &ModelConfig, w: &mut WeightMap) -> Result<HostModel> {
    let (d, v, f) = (cfg.d_model, cfg.vocab_size, cfg.d_mlp);
    // `GPT2LMHeadModel` checkpoints prefix everything with `transformer.`; bare `GPT2Model` ones do not.
    let pre = if w.contains("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let embed = w.take_matrix(&format!("{pre}wte.weight"), [v, d])?;
    let pos_embed = w.take(&format!("{pre}wpe.weight"), &[cfg.max_positions, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("{pre}h.{l}");
        blocks.push(HostBlock {
            ln1: norm(w, &format!("{p}.ln_1"), d, true)?,
            ln2: norm(w, &format!("{p}.ln_2"), d, true)?,
            qkv: conv1d(w, &format!("{p}.attn.c_attn"), d, 3 * d)?,
            o: conv1d(w, &format!("{p}.attn.c_proj"), d, d)?,
            mlp_in: conv1d(w, &format!("{p}.mlp.c_fc"), d, f)?,
            mlp_out: conv1d(w, &format!("{p}.mlp.c_proj"), f, d)?,
            extras: Default::default(),
        });
    }
    let ln_final = norm(w, &format!("{pre}ln_f"), d, true)?;
    let unembed = unembed(w, "lm_head.weight", &embed, true, v, d)?;
    Ok(HostModel {
        embed,
        pos_embed: Some(pos_embed),
        blocks,
        ln_final,
        unembed,
    })
}
