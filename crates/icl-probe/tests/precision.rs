//! Half-precision runs ([`Model::with_dtype`]) and random-weight models ([`Model::random`]): the
//! same forward in bf16/f16 stays close to float32, interventions and left padding keep working, and
//! a random model is deterministic per seed.

mod common;

use burn::tensor::{DType, Tensor, TensorData};
use common::*;
use icl_probe::{Batch, HookSpec, Intervention, Model, ModelConfig, Op};

fn logits(model: &Model<B>, batch: &Batch, spec: &HookSpec<B>) -> Vec<f32> {
    values(&model.forward(batch, spec).unwrap().logits.unwrap())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs `name` in f32 and in `dtype` on a left-padded batch with an intervention, and returns the max
/// abs logit difference relative to the largest f32 logit.
fn half_vs_f32(name: &str, dtype: DType) -> f32 {
    let device = Default::default();
    let model = Model::<B>::load(fixture(name), &device).unwrap();
    // Left padding (row 1 shorter) exercises the fully masked padding rows.
    let batch = Batch::from_ids(
        vec![vec![5, 17, 42, 8, 99, 3, 77, 12], vec![9, 61, 4, 250, 7]],
        0,
    )
    .unwrap();
    let d = model.config().d_model;
    let v: Vec<f32> = (0..d).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
    let patch = Tensor::<B, 2>::from_data(TensorData::new(v, [1, d]), &device);
    let spec = HookSpec::new()
        .intervene(Intervention::new("blocks.0.hook_resid_post", Op::Replace(patch)).at(vec![-1]));
    let full = logits(&model, &batch, &spec);
    let half = model.with_dtype(dtype);
    assert_eq!(half.dtype(), dtype);
    let out = half.forward(&batch, &spec).unwrap().logits.unwrap();
    assert_eq!(out.dtype(), DType::F32, "logits come back as float32");
    let low = values(&out);
    assert!(
        low.iter().all(|x| x.is_finite()),
        "{name} {dtype:?}: non-finite logits"
    );
    let scale = full.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let e = max_abs_diff(&full, &low) / scale;
    println!("{name} {dtype:?}: max |Δlogit| / max |logit| = {e:.2e}");
    e
}

#[test]
fn bf16_and_f16_stay_close_to_f32() {
    for name in ["llama_tiny", "gpt2_tiny", "qwen2_tiny", "gptneox_tiny"] {
        // bf16 has 8 mantissa bits (relative step 4e-3), f16 11 bits (5e-4); a 2-layer model
        // accumulates a few steps of each.
        assert!(half_vs_f32(name, DType::BF16) < 2e-2, "{name} bf16");
        assert!(half_vs_f32(name, DType::F16) < 3e-3, "{name} f16");
    }
}

#[test]
fn random_models_are_deterministic_and_sized_like_gpt2() {
    let cfg = ModelConfig::gpt2_small();
    assert_eq!(
        (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.vocab_size),
        (12, 768, 12, 50257)
    );
    // A 2-layer, narrow variant keeps the test fast; the constructor is the same.
    let mut small = cfg.clone();
    small.n_layers = 2;
    small.d_model = 64;
    small.n_heads = 4;
    small.n_kv_heads = 4;
    small.d_head = 16;
    small.d_mlp = 256;
    small.vocab_size = 500;
    let device = Default::default();
    let batch = Batch::from_ids(vec![vec![1, 2, 3, 4], vec![7, 8, 9, 10]], 0).unwrap();
    let a = Model::<B>::random(small.clone(), 3, &device).unwrap();
    let b = Model::<B>::random(small.clone(), 3, &device).unwrap();
    let c = Model::<B>::random(small.clone(), 4, &device).unwrap();
    let spec = HookSpec::new();
    let (la, lb, lc) = (
        logits(&a, &batch, &spec),
        logits(&b, &batch, &spec),
        logits(&c, &batch, &spec),
    );
    assert_eq!(la.len(), 2 * 4 * 500);
    assert!(la.iter().all(|x| x.is_finite()));
    assert_eq!(la, lb);
    assert_ne!(la, lc);
    // A bad configuration is a typed error, not a panic.
    let mut bad = small;
    bad.d_head = 0;
    assert!(Model::<B>::random(bad, 0, &device).is_err());
}
