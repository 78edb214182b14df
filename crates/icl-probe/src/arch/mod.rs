//! Per-architecture weight layouts: each file maps one family's checkpoint names onto the shared
//! block of [`crate::model`]. Matrices are handled as rows `[out, in]` ([`HostMatrix`]), dense or
//! still packed (quantised / half precision, see [`crate::linear`]): fusing stacks rows, and only
//! [`crate::model::Model`] decides whether to expand them.

pub mod gemma3;
pub mod gpt2;
pub mod gpt_neox;
pub mod llama;

use crate::error::Result;
use crate::linear::HostMatrix;
use crate::model::{HostLinear, HostNorm};
use crate::weights::{HostTensor, WeightMap};

/// Stack `[out_i, in]` matrices (or `[out_i]` vectors) along the output dimension.
pub(crate) fn cat_rows(parts: Vec<HostTensor>) -> HostTensor {
    let mut shape = parts[0].shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    let data = parts.into_iter().flat_map(|p| p.data).collect();
    HostTensor::new(shape, data)
}

/// A torch `nn.Linear` (`weight` `[out, in]`), kept as stored.
pub(crate) fn linear(
    w: &mut WeightMap,
    prefix: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<HostLinear> {
    Ok(HostLinear {
        weight: w.take_matrix(&format!("{prefix}.weight"), [out, inp])?,
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
    embed: &HostMatrix,
    tied: bool,
    vocab: usize,
    d: usize,
) -> Result<HostLinear> {
    let head = if w.contains(head_name) || !tied {
        w.take_matrix(head_name, [vocab, d])?
    } else {
        // Packed: shares the embedding's bytes; dense: a copy, as the model transposes it.
        embed.clone()
    };
    Ok(HostLinear {
        weight: head,
        bias: None,
    })
}

/// Concatenate linears along the output dimension (one matmul instead of several): their
/// `[out_i, in]` rows stacked, packed parts kept packed (each with its own ggml type).
///
/// One fused matmul rather than separate ones: with packed weights the decoded parts land in one
/// chunk and one GEMM (fewer, larger matmuls), and hooks slice q, k, v from its output as before.
pub(crate) fn fuse_cols(parts: Vec<HostLinear>) -> Result<HostLinear> {
    let has_bias = parts[0].bias.is_some();
    let (weights, biases): (Vec<_>, Vec<_>) = parts.into_iter().map(|p| (p.weight, p.bias)).unzip();
    let bias = has_bias.then(|| cat_rows(biases.into_iter().flatten().collect()));
    Ok(HostLinear {
        weight: HostMatrix::cat_rows(weights)?,
        bias,
    })
}
