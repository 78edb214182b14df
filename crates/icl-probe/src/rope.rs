//! Rotary position embedding (HF "rotate_half" convention: dimension i pairs with i + rotary_dim/2).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::config::{RopeConfig, RopeScaling};

/// Inverse frequencies, computed in f32 as transformers does.
pub fn inv_freq(cfg: &RopeConfig) -> Vec<f32> {
    let dim = cfg.rotary_dim;
    let mut inv: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / cfg.theta.powf((2 * i) as f32 / dim as f32))
        .collect();
    match cfg.scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => inv.iter_mut().for_each(|f| *f /= factor),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            for f in inv.iter_mut() {
                let wavelen = 2.0 * std::f32::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= factor;
                } else if wavelen >= high_wavelen {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
    }
    inv
}

/// cos/sin tables for one batch, `[B, 1, T, rotary_dim]`, broadcast over heads.
#[derive(Clone, Debug)]
pub struct RopeTables<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    rotary_dim: usize,
}

impl<B: Backend> RopeTables<B> {
    /// `positions` is the row-major `[B·T]` position ids of the batch.
    pub fn new(
        cfg: &RopeConfig,
        positions: &[usize],
        b: usize,
        t: usize,
        device: &B::Device,
    ) -> Self {
        let rot = cfg.rotary_dim;
        let half = rot / 2;
        let inv = inv_freq(cfg);
        let mut cos = vec![0f32; b * t * rot];
        let mut sin = vec![0f32; b * t * rot];
        for (i, &p) in positions.iter().enumerate() {
            for (j, &f) in inv.iter().enumerate() {
                let a = p as f32 * f;
                let (s, c) = a.sin_cos();
                cos[i * rot + j] = c;
                cos[i * rot + j + half] = c;
                sin[i * rot + j] = s;
                sin[i * rot + j + half] = s;
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [b, 1, t, rot]), device),
            sin: Tensor::from_data(TensorData::new(sin, [b, 1, t, rot]), device),
            rotary_dim: rot,
        }
    }

    /// Rotate the first `rotary_dim` dims of `x` `[B, H, T, d_head]`; the rest pass through.
    /// The tables in another float dtype (to match a half-precision stream).
    pub fn cast(self, dtype: burn::tensor::DType) -> Self {
        Self {
            cos: self.cos.cast(dtype),
            sin: self.sin.cast(dtype),
            ..self
        }
    }

    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        // One pass over a contiguous buffer on plain Flex float32 (the same arithmetic).
        let x = match crate::model::heads::rope_flex(x, &self.cos, &self.sin) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let [_, _, _, dh] = x.dims();
        let rot = self.rotary_dim;
        let half = rot / 2;
        let (x_rot, x_pass) = if rot == dh {
            (x, None)
        } else {
            (
                x.clone().narrow(3, 0, rot),
                Some(x.narrow(3, rot, dh - rot)),
            )
        };
        let x1 = x_rot.clone().narrow(3, 0, half);
        let x2 = x_rot.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        let out = x_rot * self.cos.clone() + rotated * self.sin.clone();
        match x_pass {
            None => out,
            Some(p) => Tensor::cat(vec![out, p], 3),
        }
    }
}
