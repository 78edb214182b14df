//! The TransformerLens hooks beyond the residual stream (`ln*.hook_scale`, `attn.hook_rot_q/k`,
//! `attn.hook_result`, `mlp.hook_pre`, `mlp.hook_pre_linear`) against TransformerLens 4.3 itself
//! (`tools/make_tl_hook_fixtures.py` → `fixtures/<model>/tl_hooks.safetensors`): cached values,
//! and logits when TL's forward hooks and our interventions overwrite the same activation.
//! Also: every listed hook has the shape `hook_shape` promises, and caching every hook changes no
//! logit; the compact (packed GGUF) path on real weights hits the same hooks as the dense one.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use icl_probe::{
    hook_shape, Batch, HookSpec, Intervention, LoadOptions, LogitsMode, Model, Op, WeightStorage,
};

const MODELS: [&str; 5] = [
    "llama_tiny",
    "qwen2_tiny",
    "gpt2_tiny",
    "gptneox_tiny",
    "gemma3_tiny",
];

fn rows_of(r: &Ref) -> Vec<Vec<u32>> {
    let t = r.shape[1];
    (0..r.shape[0])
        .map(|b| {
            r.i64[b * t..(b + 1) * t]
                .iter()
                .map(|&x| x as u32)
                .collect()
        })
        .collect()
}

/// ‖a − b‖ / ‖b‖.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f32 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-30)).sqrt()
}

/// The last `tail` positions of `[B, T, V]` logits.
fn tail_logits(l: &[f32], shape: &[usize], tail: usize) -> Vec<f32> {
    let (b, t, v) = (shape[0], shape[1], shape[2]);
    (0..b)
        .flat_map(|r| l[(r * t + t - tail) * v..(r + 1) * t * v].to_vec())
        .collect()
}

fn load(path: &Path) -> Model<B> {
    Model::<B>::load(path, &Default::default()).unwrap()
}

fn check_cached_values(name: &str, model_path: &Path) {
    let refs = load_expected(fixture(name).join("tl_hooks.safetensors"));
    let model = load(model_path);
    let batch = Batch::from_ids(rows_of(&refs["input_ids"]), 0).unwrap();
    let wanted: Vec<String> = refs
        .keys()
        .filter_map(|k| k.strip_prefix("cache."))
        .map(str::to_string)
        .collect();
    assert!(wanted.len() >= 11, "{name}: only {} TL hooks", wanted.len());
    let out = model
        .forward(&batch, &HookSpec::new().cache(wanted.clone()))
        .unwrap();
    for hook in &wanted {
        let want = &refs[&format!("cache.{hook}")];
        let got = out
            .cache
            .get(hook)
            .unwrap_or_else(|| panic!("{name}: {hook} not cached"));
        let (shape, v) = got.to_vec();
        assert_eq!(shape, want.shape, "{name}: {hook} shape");
        let e = rel_err(&v, &want.f32);
        assert!(e < 1e-5, "{name}: {hook} relative error {e:.2e}");
    }
    // TL's unpatched logits, as a check that the fixture and the model agree at all.
    let logits = out.logits.unwrap();
    let got = tail_logits(&values(&logits), &logits.dims(), 4);
    assert!(max_abs(&got, &refs["logits"].f32) < 1e-4, "{name}: logits");
}

#[test]
fn new_hooks_cache_what_transformer_lens_caches() {
    for name in MODELS {
        check_cached_values(name, &fixture(name));
    }
    check_cached_values("gemma3_tiny", &fixture("gemma3_tiny/model.gguf"));
}

#[test]
fn every_transformer_lens_hook_of_these_kinds_is_listed() {
    // The fixture holds every hook of these kinds that TL fires at layers 0 and last; the model
    // must list exactly those, no more (e.g. no hook_rot_q without rotary, no hook_pre_linear
    // without a gate).
    let kinds = [
        "hook_scale",
        "hook_rot_q",
        "hook_rot_k",
        "hook_result",
        "mlp.hook_pre",
        "mlp.hook_pre_linear",
    ];
    for name in MODELS {
        let refs = load_expected(fixture(name).join("tl_hooks.safetensors"));
        let model = load(&fixture(name));
        let last = model.config().n_layers - 1;
        let ours: Vec<&String> = model
            .hook_names()
            .iter()
            .filter(|n| kinds.iter().any(|k| n.ends_with(k)))
            .filter(|n| {
                !n.starts_with("blocks.")
                    || n.starts_with("blocks.0.")
                    || n.starts_with(&format!("blocks.{last}."))
            })
            .collect();
        let mut theirs: Vec<String> = refs
            .keys()
            .filter_map(|k| k.strip_prefix("cache."))
            .filter(|n| kinds.iter().any(|k| n.ends_with(k)))
            .map(str::to_string)
            .collect();
        theirs.sort();
        let mut ours: Vec<String> = ours.into_iter().cloned().collect();
        ours.sort();
        // TL 4.3's GPT-NeoX bridge does not fire the rotary hooks; ours are checked against
        // the definition in `rotated_heads_are_what_the_scores_are_made_of`.
        if name == "gptneox_tiny" {
            ours.retain(|n| !n.contains("hook_rot_"));
        }
        assert_eq!(ours, theirs, "{name}");
    }
}

/// Our equivalent of each TL patch in the fixture (tools/make_tl_hook_fixtures.py `patches`).
fn patch(name: &str, n_layers: usize) -> Intervention<B> {
    let last = n_layers - 1;
    match name {
        "result" => Intervention::new("blocks.0.attn.hook_result", Op::ZeroAblate).heads(vec![1]),
        "ln2_scale" => Intervention::new("blocks.0.ln2.hook_scale", Op::Scale(2.0)).at(vec![5]),
        "ln1_scale" => {
            Intervention::new(format!("blocks.{last}.ln1.hook_scale"), Op::Scale(2.0)).at(vec![5])
        }
        "mlp_pre" => {
            Intervention::new(format!("blocks.{last}.mlp.hook_pre"), Op::ZeroAblate).at(vec![9])
        }
        "ln_final_scale" => Intervention::new("ln_final.hook_scale", Op::Scale(3.0)),
        "rot_q" => Intervention::new("blocks.0.attn.hook_rot_q", Op::Scale(0.5)).heads(vec![0]),
        "rot_k" => Intervention::new("blocks.0.attn.hook_rot_k", Op::Scale(0.5)).heads(vec![0]),
        other => panic!("no patch {other}"),
    }
}

#[test]
fn patching_new_hooks_matches_transformer_lens_hooks() {
    for name in MODELS {
        let refs = load_expected(fixture(name).join("tl_hooks.safetensors"));
        let model = load(&fixture(name));
        let batch = Batch::from_ids(rows_of(&refs["input_ids"]), 0).unwrap();
        let clean = values(
            &model
                .forward(&batch, &HookSpec::new())
                .unwrap()
                .logits
                .unwrap(),
        );
        let patches: Vec<&str> = refs
            .keys()
            .filter_map(|k| k.strip_prefix("patch."))
            .collect();
        assert!(patches.len() >= 5, "{name}: {patches:?}");
        for p in patches {
            let iv = patch(p, model.config().n_layers);
            let logits = model
                .forward(&batch, &HookSpec::new().intervene(iv))
                .unwrap()
                .logits
                .unwrap();
            let dims = logits.dims();
            let got = tail_logits(&values(&logits), &dims, 4);
            let want = &refs[&format!("patch.{p}")].f32;
            let e = max_abs(&got, want);
            assert!(e < 1e-4, "{name}: patch {p}: max |Δlogit| {e:.2e}");
            // The patch did something (so agreement is not the clean run twice).
            let moved = max_abs(&got, &tail_logits(&clean, &dims, 4));
            assert!(moved > 1e-3, "{name}: patch {p} changed nothing");
        }
    }
}

#[test]
fn every_hook_has_its_listed_shape_and_caching_changes_nothing() {
    for name in MODELS {
        let model = load(&fixture(name));
        let refs = load_expected(fixture(name).join("tl_hooks.safetensors"));
        let rows = rows_of(&refs["input_ids"]);
        // Left padding in row 1, so padded shapes are exercised.
        let batch = Batch::from_ids(vec![rows[0].clone(), rows[1][..7].to_vec()], 0).unwrap();
        let plain = model.forward(&batch, &HookSpec::new()).unwrap();
        let all = model
            .forward(&batch, &HookSpec::new().cache(["*"]))
            .unwrap();
        assert_eq!(all.cache.len(), model.hook_names().len(), "{name}");
        let shapes: HashMap<String, Vec<usize>> = model
            .hook_shapes(batch.len(), batch.seq_len())
            .into_iter()
            .collect();
        for hook in model.hook_names() {
            let got = all.cache.get(hook).unwrap().dims();
            assert_eq!(got, shapes[hook], "{name}: {hook}");
            assert_eq!(
                Some(got),
                hook_shape(model.config(), hook, batch.len(), batch.seq_len())
            );
        }
        let e = max_abs(
            &values(&plain.logits.unwrap()),
            &values(&all.logits.unwrap()),
        );
        assert!(
            e < 1e-6,
            "{name}: caching every hook moved a logit by {e:.2e}"
        );
    }
    // Names that are not hooks have no shape.
    let model = load(&fixture("gpt2_tiny"));
    for bad in [
        "blocks.0.attn.hook_rot_q", // GPT-2 has no rotary
        "blocks.2.hook_resid_pre",  // two layers
        "blocks.00.hook_resid_pre",
        "hook_resid_pre",
        "blocks.0.mlp.hook_pre_linear", // no gate
    ] {
        assert_eq!(hook_shape(model.config(), bad, 1, 3), None, "{bad}");
    }
}

#[test]
fn rotated_heads_are_what_the_scores_are_made_of() {
    // For every rotary model, including GPT-NeoX's partial rotary: scores = rot_q·rot_kᵀ·scale +
    // causal mask, with each query head reading key head h / (H / H_kv).
    for name in ["llama_tiny", "qwen2_tiny", "gptneox_tiny", "gemma3_tiny"] {
        let model = load(&fixture(name));
        let refs = load_expected(fixture(name).join("tl_hooks.safetensors"));
        let batch = Batch::from_ids(rows_of(&refs["input_ids"]), 0).unwrap();
        let l = model.config().n_layers - 1;
        let names = [
            format!("blocks.{l}.attn.hook_rot_q"),
            format!("blocks.{l}.attn.hook_rot_k"),
            format!("blocks.{l}.attn.hook_attn_scores"),
        ];
        let out = model
            .forward(&batch, &HookSpec::new().cache(names.clone()))
            .unwrap();
        let (qs, q) = out.cache.get(&names[0]).unwrap().to_vec();
        let (ks, k) = out.cache.get(&names[1]).unwrap().to_vec();
        let (_, s) = out.cache.get(&names[2]).unwrap().to_vec();
        let (b, t, h, dh) = (qs[0], qs[1], qs[2], qs[3]);
        let kv = ks[2];
        let scale = match model.config().extras.query_pre_attn_scalar {
            Some(s) => 1.0 / s.sqrt(),
            None => 1.0 / (dh as f32).sqrt(),
        };
        let mut worst = 0f32;
        for r in 0..b {
            for hq in 0..h {
                let hk = hq / (h / kv);
                for i in 0..t {
                    for j in 0..=i {
                        let dot: f32 = (0..dh)
                            .map(|d| {
                                q[((r * t + i) * h + hq) * dh + d]
                                    * k[((r * t + j) * kv + hk) * dh + d]
                            })
                            .sum();
                        let got = s[((r * h + hq) * t + i) * t + j];
                        if got > -1e20 {
                            worst = worst.max((got - dot * scale).abs());
                        }
                    }
                }
            }
        }
        assert!(worst < 1e-4, "{name}: scores vs rot_q·rot_k: {worst:.2e}");
    }
}

/// The real SmolLM2 Q4_1 GGUF, packed (compact) against expanded to float32: the same hooks, the
/// same values (both decode the same blocks), and the heads' results sum to the attention output.
#[test]
fn compact_weights_hit_every_new_hook() {
    let Some(dir) = assets::cached("smollm2-135m-gguf") else {
        eprintln!("skipped: smollm2-135m-gguf not in the asset cache (ICLGDD_CACHE)");
        return;
    };
    let device = Default::default();
    let load_as = |weights| Model::<B>::load_with(&dir, &device, &LoadOptions { weights }).unwrap();
    let compact = load_as(WeightStorage::Compact);
    let dense = load_as(WeightStorage::F32);
    let batch = Batch::from_ids(vec![vec![1, 504, 3303, 281, 9616, 30, 260, 2372]], 0).unwrap();
    let new_kinds = [
        "hook_scale",
        "hook_rot_q",
        "hook_rot_k",
        "hook_result",
        "mlp.hook_pre",
        "mlp.hook_pre_linear",
    ];
    let mut names: Vec<String> = ["blocks.0.", "blocks.29."]
        .iter()
        .flat_map(|p| new_kinds.iter().map(move |k| format!("{p}*{k}")))
        .collect();
    names.push("ln_final.hook_scale".into());
    names.push("blocks.29.hook_attn_out".into());
    let spec = HookSpec::new().cache(names).logits(LogitsMode::Last);
    let a = compact.forward(&batch, &spec).unwrap();
    let b = dense.forward(&batch, &spec).unwrap();
    assert_eq!(a.cache.names(), b.cache.names());
    assert_eq!(a.cache.len(), 2 * 7 + 2, "{:?}", a.cache.names());
    for n in a.cache.names() {
        let (sa, va) = a.cache.get(&n).unwrap().to_vec();
        let (sb, vb) = b.cache.get(&n).unwrap().to_vec();
        assert_eq!(sa, sb, "{n}");
        let e = rel_err(&va, &vb);
        assert!(e < 1e-5, "{n}: compact vs f32 relative error {e:.2e}");
    }
    // Σ_h result_h (+ no bias in Llama) = hook_attn_out.
    let (rs, r) = a.cache.get("blocks.29.attn.hook_result").unwrap().to_vec();
    let (_, out) = a.cache.get("blocks.29.hook_attn_out").unwrap().to_vec();
    let (h, d) = (rs[2], rs[3]);
    let summed: Vec<f32> = (0..rs[0] * rs[1])
        .flat_map(|p| {
            let r = &r;
            (0..d).map(move |j| (0..h).map(|hh| r[(p * h + hh) * d + j]).sum::<f32>())
        })
        .collect();
    let e = rel_err(&summed, &out);
    assert!(e < 1e-5, "Σ heads vs hook_attn_out: {e:.2e}");
}
