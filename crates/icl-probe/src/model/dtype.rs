//! Precision and storage of a built model: casts to float16/bfloat16, expansion of packed weights,
//! and the memory the weights hold.

use burn::tensor::backend::Backend;
use burn::tensor::DType;

use super::{Block, Model};
use crate::linear::{weight_bytes, WeightBytes};

impl<B: Backend> Model<B> {
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
}
