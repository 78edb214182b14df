//! The real model: SmolLM2-135M-Instruct Q4_1 GGUF from the asset cache must give the ids, logits
//! (≤ 1e-3 absolute), hidden states and top-5 that transformers computed from the same file
//! (fixtures/smollm2_gguf). Skips with a message when the asset is not cached.

mod common;

use common::*;
use icl_probe::{load_model, Batch, HookSpec, LogitsMode};

const ASSET: &str = "smollm2-135m-gguf";

#[test]
fn smollm2_gguf_matches_transformers() {
    let Some(path) = assets::cached(ASSET) else {
        println!(
            "skipped: asset {ASSET} not in cache, run `cargo run --release -p assets-cli -- fetch {ASSET}`"
        );
        return;
    };
    let device = Default::default();
    let (model, tok) = load_model::<B>(&path, &device).unwrap();
    let cfg = model.config();
    assert_eq!(
        (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads),
        (30, 576, 9, 3)
    );
    assert!(cfg.tied_embeddings);

    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("smollm2_gguf/expected.json")).unwrap(),
    )
    .unwrap();
    let exp = load_expected(fixture("smollm2_gguf/expected.safetensors"));
    let prompts: Vec<String> = meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["prompt"].as_str().unwrap().to_string())
        .collect();

    for (k, prompt) in prompts.iter().enumerate() {
        let ids = tok.encode(prompt).unwrap();
        let want: Vec<u32> = exp[&format!("prompt{k}.input_ids")]
            .i64
            .iter()
            .map(|&x| x as u32)
            .collect();
        assert_eq!(ids, want, "prompt {k} ids");

        let batch = Batch::from_ids(vec![ids], tok.pad_id()).unwrap();
        let spec = HookSpec::new().cache([
            "blocks.0.hook_resid_pre",
            "blocks.0.hook_resid_post",
            "blocks.14.hook_resid_post",
            "ln_final.hook_normalized",
        ]);
        let out = model.forward(&batch, &spec).unwrap();
        let logits = out.logits.unwrap();
        let e = max_abs(&values(&logits), &exp[&format!("prompt{k}.logits")].f32);
        println!("prompt {k}: logits max abs err {e:.2e}");
        assert!(e <= 1e-3, "prompt {k} logits err {e}");
        for (i, hook) in [
            (0, "blocks.0.hook_resid_pre"),
            (1, "blocks.0.hook_resid_post"),
            (15, "blocks.14.hook_resid_post"),
            (30, "ln_final.hook_normalized"),
        ] {
            // The residual stream carries a few huge coordinates (|x| in the thousands), so
            // f32 rounding alone gives absolute errors above 1e-3 there: compare relative to
            // the largest reference magnitude.
            let got = values(&out.cache.get3(hook).unwrap());
            let want = &exp[&format!("prompt{k}.hidden_states.{i}")].f32;
            let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
            let e = max_abs(&got, want);
            println!("prompt {k}: hidden_states.{i} err {e:.2e} (max |ref| {scale:.1})");
            assert!(
                e <= 1e-3f32.max(1e-6 * scale),
                "prompt {k} hidden {i} err {e}"
            );
        }
        let top: Vec<u32> = icl_probe::top_k_rows(logits, 5)[0]
            .iter()
            .map(|x| x.0)
            .collect();
        let want_top: Vec<u32> = exp[&format!("prompt{k}.top5_ids")]
            .i64
            .iter()
            .map(|&x| x as u32)
            .collect();
        assert_eq!(top, want_top, "prompt {k} top-5");
        let decoded = tok.decode(&top[..1]).unwrap();
        assert_eq!(
            decoded,
            meta["prompts"][k]["top5_decoded"][0].as_str().unwrap()
        );
    }

    // Both prompts batched (same length here; a padded case is in tests/batching.rs) give the
    // same greedy answers.
    let batch = Batch::from_prompts(&tok, &[prompts[0].as_str(), prompts[1].as_str()]).unwrap();
    let next = model.greedy_next(&batch).unwrap();
    assert_eq!(next, vec![2890, 7268]);
    let out = model
        .forward(&batch, &HookSpec::new().logits(LogitsMode::Last))
        .unwrap();
    assert_eq!(out.logits.unwrap().dims(), [2, 1, 49152]);
}
