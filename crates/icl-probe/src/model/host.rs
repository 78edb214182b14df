//! A model's weights on the host, as the architecture loaders produce them, before they become
//! device tensors ([`super::Model::from_host`]).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

pub(crate) use crate::linear::HostLinear;
use crate::linear::HostMatrix;
use crate::weights::HostTensor;

pub(crate) fn to_tensor<B: Backend, const D: usize>(
    t: HostTensor,
    device: &B::Device,
) -> Tensor<B, D> {
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
