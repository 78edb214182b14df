//! A model with seeded random weights, for benchmarks and tests without real checkpoints.

use burn::tensor::backend::Backend;

use super::host::{HostBlock, HostBlockExtras, HostLinear, HostModel, HostNorm};
use super::Model;
use crate::config::{ModelConfig, NormKind};
use crate::error::Result;
use crate::linear::{HostMatrix, WeightStorage};
use crate::weights::HostTensor;

impl<B: Backend> Model<B> {
    /// A model of this configuration with random weights (seeded): normal(0, 0.02) matrices as in
    /// GPT-2's and Llama's `initializer_range`, norms at weight 1 ± 0.1. For benchmarks and tests
    /// where the real weights are not available (GPT-2 and Pythia cannot be fetched here).
    pub fn random(config: ModelConfig, seed: u64, device: &B::Device) -> Result<Self> {
        use rand::SeedableRng;
        use rand_chacha::ChaCha12Rng;
        use rand_distr::{Distribution, Normal};
        config.validate("random model")?;
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        let mut normal = |shape: Vec<usize>, mean: f32, std: f32| {
            let n: usize = shape.iter().product();
            let d = Normal::new(mean, std).expect("a positive standard deviation");
            let data = (0..n).map(|_| d.sample(&mut rng)).collect();
            HostTensor::new(shape, data)
        };
        let c = &config;
        let d = c.d_model;
        let layer_norm = c.norm == NormKind::LayerNorm;
        let norm_of =
            |normal: &mut dyn FnMut(Vec<usize>, f32, f32) -> HostTensor, d: usize| HostNorm {
                weight: normal(vec![d], 1.0, 0.1),
                bias: layer_norm.then(|| normal(vec![d], 0.0, 0.02)),
            };
        let norm = |normal: &mut dyn FnMut(Vec<usize>, f32, f32) -> HostTensor| norm_of(normal, d);
        let linear = |normal: &mut dyn FnMut(Vec<usize>, f32, f32) -> HostTensor,
                      i: usize,
                      o: usize,
                      bias: bool| HostLinear {
            weight: HostMatrix::from_in_out(normal(vec![i, o], 0.0, 0.02)),
            bias: bias.then(|| normal(vec![o], 0.0, 0.02)),
        };
        let embed = normal(vec![c.vocab_size, d], 0.0, 0.02);
        let pos_embed = c
            .rope
            .is_none()
            .then(|| normal(vec![c.max_positions, d], 0.0, 0.01));
        let qkv_out = (c.n_heads + 2 * c.n_kv_heads) * c.d_head;
        let mlp_in_out = if c.gated_mlp { 2 * c.d_mlp } else { c.d_mlp };
        let blocks = (0..c.n_layers)
            .map(|_| HostBlock {
                ln1: norm(&mut normal),
                ln2: norm(&mut normal),
                qkv: linear(&mut normal, d, qkv_out, c.qkv_bias),
                o: linear(&mut normal, c.n_heads * c.d_head, d, c.o_bias),
                mlp_in: linear(&mut normal, d, mlp_in_out, c.mlp_bias),
                mlp_out: linear(&mut normal, c.d_mlp, d, c.mlp_bias),
                extras: HostBlockExtras {
                    ln1_post: c.extras.post_norms.then(|| norm(&mut normal)),
                    ln2_post: c.extras.post_norms.then(|| norm(&mut normal)),
                    q_norm: c.extras.qk_norm.then(|| norm_of(&mut normal, c.d_head)),
                    k_norm: c.extras.qk_norm.then(|| norm_of(&mut normal, c.d_head)),
                },
            })
            .collect();
        let ln_final = norm(&mut normal);
        let unembed = HostLinear {
            weight: if c.tied_embeddings {
                HostMatrix::Dense(embed.clone())
            } else {
                HostMatrix::from_in_out(normal(vec![d, c.vocab_size], 0.0, 0.02))
            },
            bias: None,
        };
        let host = HostModel {
            embed: HostMatrix::Dense(embed),
            pos_embed,
            blocks,
            ln_final,
            unembed,
        };
        Ok(Self::from_host(config, host, WeightStorage::F32, device))
    }
}
