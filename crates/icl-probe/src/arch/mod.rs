//! Per-architecture weight layouts: each file maps one family's checkpoint names onto the shared
//! block of [`crate::model`] (fused `[in, out]` matrices).

pub mod gemma3;
pub mod gpt2;
pub mod gpt_neox;
pub mod llama;

use crate::error::Result;
use crate::model::{HostLinear, HostNorm};
use crate::weights::{HostTensor, WeightMap};

/// Stack `[out_i, in]` matrices (or `[out_i]` vectors) along the output dimension.
pub(crate) fn cat_rows(parts: Vec<HostTensor>) -> HostTensor {
    let mut shape = parts[0].shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    let data = parts.into_iter().flat_map(|p| p.data).collect();
    HostTensor::new(shape, data)
}

/// A torch `nn.Linear` (`weight` `[out, in]`), transposed to `[in, out]`.
pub(crate) fn linear(
    w: &mut WeightMap,
    prefix: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<HostLinear> {
    Ok(HostLinear {
        weight: w
            .take(&format!("{prefix}.weight"), &[out, inp])?
            .transposed(),
        bias: if bias {
            Some(w.take(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        },
    })
}

pub(crate) fn norm(w: &mut WeightMap, prefix: &str, d: usize, bias: bool) -> Result<HostNorm> {
    Ok(HostNorm {
        weight: w.take(&format!("{prefix}.weight"), &[d])?,
        bias: if bias {
            Some(w.take(&format!("{prefix}.bias"), &[d])?)
        } else {
            None
        },
    })
}

/// Output projection: an untied `lm_head`-style matrix `[V, D]` if present, else the (tied)
/// embedding.
pub(crate) fn unembed(
    w: &mut WeightMap,
    head_name: &str,
    embed: &HostTensor,
    tied: bool,
    vocab: usize,
    d: usize,
) -> Result<HostLinear> {
    let head = match w.take_opt(head_name, &[vocab, d])? {
        Some(h) => h,
        None if tied => embed.clone(),
        None => w.take(head_name, &[vocab, d])?,
    };
    Ok(HostLinear {
        weight: head.transposed(),
        bias: None,
    })
}

/// Concatenate `[in, out_i]` linears along the output dimension (one matmul instead of several).
pub(crate) fn fuse_cols(parts: Vec<HostLinear>) -> HostLinear {
    let inp = parts[0].weight.shape[0];
    let total: usize = parts.iter().map(|p| p.weight.shape[1]).sum();
    let mut data = Vec::with_capacity(inp * total);
    for i in 0..inp {
        for p in &parts {
            let o = p.weight.shape[1];
            data.extend_from_slice(&p.weight.data[i * o..(i + 1) * o]);
        }
    }
    let has_bias = parts[0].bias.is_some();
    let bias = has_bias.then(|| cat_rows(parts.into_iter().filter_map(|p| p.bias).collect()));
    HostLinear {
        weight: HostTensor::new(vec![inp, total], data),
        bias,
    }
}
