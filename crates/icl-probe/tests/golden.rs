//! Golden parity with HF transformers on the four random-weight tiny models
//! (fixtures/README.md: logits ≤ 1e-4 absolute; hidden states, attn0_z and patched logits likewise).

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use icl_probe::{Batch, HookSpec, Intervention, Model, Op};

const TOL: f32 = 1e-4;

fn check(name: &str) {
    let dir = fixture(name);
    let device = Default::default();
    let model = Model::<B>::load(&dir, &device).unwrap();
    let exp = load_expected(dir.join("expected.safetensors"));
    let ids = &exp["input_ids"];
    let (b, t) = (ids.shape[0], ids.shape[1]);
    let batch = Batch::from_padded(&ids.i64, b, t, None).unwrap();
    let n = model.config().n_layers;

    let spec = HookSpec::new().cache([
        "blocks.0.hook_resid_pre".to_string(),
        "blocks.*.hook_resid_post".to_string(),
        "ln_final.hook_normalized".to_string(),
        "blocks.0.attn.hook_z".to_string(),
    ]);
    let out = model.forward(&batch, &spec).unwrap();
    let logits = values(&out.logits.unwrap());
    let e = max_abs(&logits, &exp["logits"].f32);
    println!("{name}: logits max abs err {e:.2e}");
    assert!(e <= TOL, "{name} logits err {e}");

    for i in 0..=n {
        let hook = if i == 0 {
            "blocks.0.hook_resid_pre".to_string()
        } else if i == n {
            "ln_final.hook_normalized".to_string()
        } else {
            format!("blocks.{}.hook_resid_post", i - 1)
        };
        let got = values(&out.cache.get3(&hook).unwrap());
        let e = max_abs(&got, &exp[&format!("hidden_states.{i}")].f32);
        println!("{name}: hidden_states.{i} ({hook}) err {e:.2e}");
        assert!(e <= TOL, "{name} hidden_states.{i} err {e}");
    }

    let z = out.cache.get4("blocks.0.attn.hook_z").unwrap();
    let [zb, zt, zh, zd] = z.dims();
    assert_eq!(zh, model.config().n_heads);
    let z = values(&z.reshape([zb, zt, zh * zd]));
    let e = max_abs(&z, &exp["attn0_z"].f32);
    println!("{name}: attn0_z err {e:.2e}");
    assert!(e <= TOL, "{name} attn0_z err {e}");

    let pv = &exp["patch_vector"];
    let d = pv.shape[0];
    let patch = Tensor::<B, 2>::from_data(TensorData::new(pv.f32.clone(), [1, d]), &device);
    let spec = HookSpec::new()
        .intervene(Intervention::new("blocks.0.hook_resid_post", Op::Replace(patch)).at(vec![5]));
    let out = model.forward(&batch, &spec).unwrap();
    let e = max_abs(&values(&out.logits.unwrap()), &exp["patched_logits"].f32);
    println!("{name}: patched_logits err {e:.2e}");
    assert!(e <= TOL, "{name} patched logits err {e}");
}

#[test]
fn llama_tiny_matches_transformers() {
    check("llama_tiny");
}

#[test]
fn qwen2_tiny_matches_transformers() {
    check("qwen2_tiny");
}

#[test]
fn gpt2_tiny_matches_transformers() {
    check("gpt2_tiny");
}

#[test]
fn gptneox_tiny_matches_transformers() {
    check("gptneox_tiny");
}
