//! Issue #20's fuzz suite for EDM inputs: `config.json`, denoiser inputs, seed lists and sampler
//! settings. The property that matters: whatever passes validation runs without a panic, and
//! whatever would panic, abort or mean nothing is refused with a typed error first.
//!
//! Case counts (`PROPTEST_CASES` raises them): 40 random networks built and run, 300 of each other
//! property; about 10 s in release on 2 cores.

use std::panic::{catch_unwind, AssertUnwindSafe};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use edm_core::{parse_seeds, EdmConfig, EdmPrecond, ModelType, SamplerConfig};
use proptest::prelude::*;

type B = Flex;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Any JSON number a careless user could write, including the hostile ones.
fn number() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        (-3i64..40).prop_map(serde_json::Value::from),
        prop::sample::select(vec![0.0, -0.5, 0.5, 1e-9, 1e300, -1e300, 80.0, 0.002])
            .prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("NaN")),
        Just(serde_json::Value::Null),
    ]
}

fn write_json(dir: &std::path::Path, v: &serde_json::Value) -> std::path::PathBuf {
    let p = dir.join("config.json");
    std::fs::write(&p, serde_json::to_string(v).unwrap()).unwrap();
    p
}

/// A small valid network's input: N images of its shape.
fn input(c: &EdmConfig, n: usize) -> Tensor<B, 4> {
    let (ch, r) = (c.img_channels, c.img_resolution);
    let data: Vec<f32> = (0..n * ch * r * r)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    Tensor::from_data(TensorData::new(data, [n, ch, r, r]), &Default::default())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), failure_persistence: None, ..ProptestConfig::default() })]

    /// Any value in any noise or size key: `from_file` returns a typed result, never a panic; an
    /// accepted config has a finite positive sigma_data and an ordered sigma range.
    #[test]
    fn fuzz_config_json(keys in proptest::collection::vec((prop::sample::select(vec![
        "sigma_data", "sigma_min", "sigma_max", "M", "epsilon_t", "beta_d", "beta_min", "dropout",
        "label_dropout", "img_resolution", "img_channels", "model_channels", "num_blocks",
        "channel_mult_noise", "channel_mult_emb", "precond", "model_type", "channel_mult",
        "resample_filter", "attn_resolutions"]), number()), 0..6)) {
        let mut v = serde_json::json!({"precond": "EDMPrecond", "model_type": "SongUNet",
            "img_resolution": 16, "img_channels": 1, "model_channels": 8, "channel_mult": [1, 2]});
        for (k, value) in keys {
            let value = match k {
                "channel_mult" | "resample_filter" | "attn_resolutions" => serde_json::json!([value]),
                _ => value,
            };
            if value.is_null() { v.as_object_mut().unwrap().remove(k); } else { v[k] = value; }
        }
        let dir = tempfile::tempdir().unwrap();
        if let Ok(c) = EdmConfig::from_file(write_json(dir.path(), &v)) {
            prop_assert!(c.sigma_data > 0.0 && c.sigma_data.is_finite());
            if let (Some(lo), Some(hi)) = (c.sigma_min, c.sigma_max) { prop_assert!(lo < hi); }
        }
    }

    /// Any shape and noise level against a fixed network: `check_denoise_input` decides, and what
    /// it accepts the network runs.
    #[test]
    fn fuzz_denoise_shapes(n in 0usize..3, ch in 0usize..4, h in 0usize..20, w in 0usize..20,
                           sigma in prop::sample::select(vec![1.0f32, 0.0, -1.0, f32::NAN, f32::INFINITY, 80.0])) {
        let c = EdmConfig::tiny(ModelType::SongUNet, 8, 2, 0);
        let sig = vec![sigma; n];
        if c.check_denoise_input(&[n, ch, h, w], &sig).is_ok() {
            let net = EdmPrecond::<B>::init(&c, 0, &Default::default()).unwrap();
            let out = net.forward(input(&c, n), Tensor::from_data(TensorData::new(sig, [n]), &Default::default()), None);
            prop_assert_eq!(out.dims(), [n, ch, h, w]);
        }
    }

    /// Any seed list: a typed result, never more than the limit, never a huge allocation.
    #[test]
    fn fuzz_seed_lists(s in "[0-9a-z,\\- ]{0,24}", a in any::<u64>(), b in any::<u64>()) {
        if let Ok(v) = parse_seeds(&s) { prop_assert!(!v.is_empty() && v.len() <= 10_000_000); }
        let _ = parse_seeds(&format!("{a}-{b}"));
        let _ = parse_seeds(&format!("{a},{b}-{a}"));
    }

    /// Any sampler settings: validation decides, and an accepted config has ordered finite sigmas.
    #[test]
    fn fuzz_sampler_settings(steps in prop::sample::select(vec![0usize, 1, 18, 100_000, 100_001, 2_000_000_000]),
                             lo in prop::sample::select(vec![0.002f64, 0.0, -1.0, f64::NAN, f64::INFINITY, 100.0]),
                             hi in prop::sample::select(vec![80.0f64, 0.0, 0.001, f64::NAN, f64::INFINITY]),
                             rho in prop::sample::select(vec![7.0f64, 0.0, -1.0, f64::NAN])) {
        let c = SamplerConfig { num_steps: steps, sigma_min: lo, sigma_max: hi, rho, ..Default::default() };
        if c.validate().is_ok() {
            prop_assert!(c.sigma_min > 0.0 && c.sigma_min < c.sigma_max && c.sigma_max.is_finite());
            prop_assert!((1..=100_000).contains(&c.num_steps));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(40), failure_persistence: None, ..ProptestConfig::default() })]

    /// Random small architectures: every config that validates builds and runs a forward pass on
    /// an input that `check_denoise_input` accepts, without a panic (caught and reported as a
    /// failure). This is what makes validation the complete guard in front of the network.
    #[test]
    fn fuzz_valid_networks_run(song in any::<bool>(), res in 1usize..17, ch in 1usize..4,
                               mc in 1usize..5, mult in proptest::collection::vec(1usize..3, 1..4),
                               blocks in 0usize..3, attn in proptest::collection::vec(1usize..17, 0..2),
                               label_dim in 0usize..3) {
        let mt = if song { ModelType::SongUNet } else { ModelType::DhariwalUNet };
        let mut c = EdmConfig::tiny(mt, res, ch, label_dim);
        c.model_channels = Some(2 * mc);
        c.channel_mult = Some(mult);
        c.num_blocks = Some(blocks);
        c.attn_resolutions = Some(attn);
        let dir = tempfile::tempdir().unwrap();
        let v = serde_json::to_value(&c).unwrap();
        let Ok(c) = EdmConfig::from_file(write_json(dir.path(), &v)) else { return Ok(()); };
        c.check_denoise_input(&[2, ch, res, res], &[1.0, 0.5]).unwrap();
        let run = catch_unwind(AssertUnwindSafe(|| {
            let dev = Default::default();
            // A network that cannot be built (say, a GroupNorm whose channels do not split
            // into its groups, which torch refuses too) must say so as a typed error at
            // construction, before any forward: that counts as refused, not as a panic.
            let Ok(net) = EdmPrecond::<B>::init(&c, 0, &dev) else { return None; };
            let labels = (label_dim > 0).then(|| Tensor::<B, 2>::zeros([2, label_dim], &dev));
            Some(net.forward(input(&c, 2), Tensor::from_data(TensorData::new(vec![1.0f32, 0.5], [2]), &dev), labels).dims())
        }));
        prop_assert!(run.is_ok(), "a validated config panicked: {:?}", serde_json::to_string(&c));
    }
}

/// A proptest case that panicked in the first forward (18 channels, 4 groups): now a typed
/// error when the network is built.
#[test]
fn regression_groupnorm_channels_not_a_multiple_of_groups() {
    let mut c = EdmConfig::tiny(ModelType::SongUNet, 8, 3, 0);
    c.model_channels = Some(18);
    c.channel_mult = Some(vec![1]);
    c.num_blocks = Some(1);
    c.attn_resolutions = Some(vec![]);
    let Err(err) = EdmPrecond::<B>::init(&c, 0, &Default::default()) else {
        panic!("refused at construction")
    };
    let err = err.to_string();
    assert!(err.contains("GroupNorm") && err.contains("groups"), "{err}");
}

/// #20's panics: wrong channel count, 1×1 and 15×15 inputs, and the 2048² abort, refused by
/// `denoise_file` before the network runs, the message naming the shape the network takes.
#[test]
fn regression_denoise_inputs_the_network_cannot_take() {
    let dir = tempfile::tempdir().unwrap();
    let c = EdmConfig::tiny(ModelType::SongUNet, 16, 3, 0);
    let dev = Default::default();
    let net = EdmPrecond::<B>::init(&c, 0, &dev).unwrap();
    for shape in [
        vec![1, 1, 16, 16],
        vec![1, 3, 1, 1],
        vec![1, 3, 15, 15],
        vec![1, 3, 2048, 2048],
    ] {
        let n: usize = shape.iter().product();
        let input = dir.path().join("in.safetensors");
        edm_core::write_safetensors(
            &input,
            &[
                ("x".into(), shape.clone(), vec![0.0; n]),
                ("sigma".into(), vec![1], vec![1.0]),
            ],
        )
        .unwrap();
        let out = dir.path().join("out.safetensors");
        let err = edm_core::denoise_file(&net, &input, &out, &dev).unwrap_err();
        assert!(
            err.to_string().contains("[N, 3, 16, 16]"),
            "{shape:?}: {err}"
        );
        assert!(!out.exists());
    }
}

/// #20: all-NaN weights are refused at load, naming the tensor.
#[test]
fn regression_all_nan_weights_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let c = EdmConfig::tiny(ModelType::SongUNet, 8, 1, 0);
    let net = EdmPrecond::<B>::init(&c, 0, &Default::default()).unwrap();
    net.save(dir.path()).unwrap();
    let w = dir.path().join("model.safetensors");
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = edm_core::read_safetensors(&w)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            let n = v.data.len();
            (k, v.shape, vec![f32::NAN; n])
        })
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    edm_core::write_safetensors(&w, &t).unwrap();
    let Err(err) = edm_core::load_precond::<B>(dir.path(), &Default::default()) else {
        panic!("NaN weights loaded")
    };
    assert!(err.to_string().contains("non-finite"), "{err}");
}

/// #20: `--seeds 0-4000000000` (a capacity overflow panic) and `--steps 2000000000` (a 16 GB
/// allocation) are typed errors naming the variables that raise the limits.
#[test]
fn regression_huge_seed_ranges_and_step_counts() {
    let err = parse_seeds("0-4000000000").unwrap_err().to_string();
    assert!(err.contains("EDM_MAX_SEEDS"), "{err}");
    let cfg = SamplerConfig {
        num_steps: 2_000_000_000,
        ..Default::default()
    };
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("EDM_MAX_STEPS"));
    let inverted = SamplerConfig {
        sigma_min: 5.0,
        sigma_max: 1.0,
        ..Default::default()
    };
    assert!(inverted.validate().is_err());
}
