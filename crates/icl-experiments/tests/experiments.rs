//! Mechanics of the ICL experiments on the `llama_tiny` fixture (random weights) with the
//! `tokenizer_bpe_tiny` byte-level BPE tokenizer (ids < 300 < the model's vocabulary of 1000).

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use icl_experiments::probe::resid_hook;
use icl_experiments::rule_vector::{aggregate, subset_accuracy};
use icl_experiments::task_vector::extract;
use icl_experiments::{mean_vec, Probe, RunConfig};
use icl_probe::{HookSpec, LogitsMode, Model, Tokenizer};
use icl_tasks::{sample_prompts, Item, Split, TaskSet};

fn fixtures() -> PathBuf {
    // The tiny model and tokenizer fixtures of the model crate.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../icl-probe/tests/fixtures")
}

fn setup() -> (Model<Flex>, Tokenizer) {
    let device = Default::default();
    let model = Model::<Flex>::load(fixtures().join("llama_tiny"), &device).unwrap();
    let tok = Tokenizer::from_file(&fixtures().join("tokenizer_bpe_tiny.json")).unwrap();
    (model, tok)
}

fn toy_task() -> TaskSet {
    let words = [
        "hot", "cold", "big", "small", "up", "down", "wet", "dry", "old", "new", "fast", "slow",
        "dark", "light",
    ];
    let mut items = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let split = match i % 7 {
            0 => Split::Test,
            1 => Split::Dev,
            _ => Split::Train,
        };
        items.push(Item {
            input: w.to_string(),
            output: w.to_uppercase(),
            split,
        });
    }
    TaskSet {
        name: "toy_upper".into(),
        items,
    }
}

fn cfg(k: usize) -> RunConfig {
    RunConfig {
        model_id: "llama_tiny".into(),
        k,
        seed: 3,
        n_test: 4,
        n_dev: 2,
        layers: vec![],
        batch_size: 3,
    }
}

#[test]
fn answer_positions_point_at_the_output_tokens() {
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 4);
    let spec = &sample_prompts(&toy_task(), Split::Test, 3, 1, 0).unwrap()[0];
    let p = probe.prepare(spec).unwrap();
    assert_eq!(p.answer_positions.len(), 3);
    for (j, &pos) in p.answer_positions.iter().enumerate() {
        let piece = tok.decode(&p.ids[pos..pos + 1]).unwrap();
        let out = &spec.demos[j].output;
        assert!(
            out.starts_with(piece.trim_start()),
            "token {piece:?} is not the start of {out:?}"
        );
    }
    assert_eq!(tok.decode(&p.ids[p.last()..]).unwrap().trim(), "->");
    assert_eq!(p.ids, tok.encode(&spec.prompt().text).unwrap());
}

#[test]
fn patching_the_embedding_equals_substituting_the_token() {
    // At L = 0 the residual is the token embedding: writing token t's embedding into the last
    // position by hand must give exactly the run where the last token is t.
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 4);
    let task = toy_task();
    let a = probe
        .prepare_all(&sample_prompts(&task, Split::Test, 2, 2, 1).unwrap())
        .unwrap();
    let mut b = a.clone();
    let substitute = tok.encode(" big").unwrap()[0];
    for p in &mut b {
        *p.ids.last_mut().unwrap() = substitute;
    }
    let emb = probe.residuals(&b, &[0], |p| vec![p.last()]).unwrap();
    let vecs: Vec<Vec<f32>> = emb.iter().map(|r| r[0][0].clone()).collect();
    let patched = probe.logits_patched(&a, 0, &vecs).unwrap();
    let direct = probe.logits_with(&b, |_, _| Ok(HookSpec::new())).unwrap();
    for (x, y) in patched.iter().zip(&direct) {
        let d = x
            .iter()
            .zip(y)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-5, "max |Δlogit| = {d}");
    }
}

#[test]
fn a_patched_run_equals_the_hand_written_intervention() {
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 2);
    let task = toy_task();
    let prompts = probe
        .prepare_all(&sample_prompts(&task, Split::Test, 0, 2, 0).unwrap())
        .unwrap();
    let n_layers = model.config().n_layers;
    let w = model.config().d_model;
    for layer in 0..=n_layers {
        let vecs: Vec<Vec<f32>> = (0..prompts.len())
            .map(|i| (0..w).map(|c| ((c + 7 * i) as f32 * 0.37).sin()).collect())
            .collect();
        let patched = probe.logits_patched(&prompts, layer, &vecs).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            // By hand: one prompt, residual at the last position overwritten with `vecs[i]`.
            let batch = icl_probe::Batch::from_ids(vec![p.ids.clone()], tok.pad_id()).unwrap();
            let value = burn::tensor::Tensor::<Flex, 2>::from_data(
                burn::tensor::TensorData::new(vecs[i].clone(), [1, w]),
                &Default::default(),
            );
            let spec = HookSpec::new()
                .intervene(
                    icl_probe::Intervention::new(
                        resid_hook(n_layers, layer),
                        icl_probe::Op::Replace(value),
                    )
                    .at(vec![p.last() as isize]),
                )
                .logits(LogitsMode::Last);
            let o = model.forward(&batch, &spec).unwrap();
            let hand = o
                .logits
                .unwrap()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap();
            let d = hand
                .iter()
                .zip(&patched[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d <= 1e-5, "layer {layer}, prompt {i}: max |Δlogit| = {d}");
        }
        // Patching a prompt with its own residual changes nothing.
        let own = probe
            .residuals(&prompts, &[layer], |p| vec![p.last()])
            .unwrap();
        let own: Vec<Vec<f32>> = own.iter().map(|r| r[0][0].clone()).collect();
        let same = probe.logits_patched(&prompts, layer, &own).unwrap();
        let plain = probe
            .logits_with(&prompts, |_, _| Ok(HookSpec::new()))
            .unwrap();
        for (x, y) in same.iter().zip(&plain) {
            let d = x
                .iter()
                .zip(y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                d <= 1e-4,
                "layer {layer}: own-residual patch moved logits by {d}"
            );
        }
    }
}

#[test]
fn rule_vectors_and_subset_means_match_manual_reads() {
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 3);
    let task = toy_task();
    let c = cfg(3);
    let ex = extract(&probe, &task, &c).unwrap();
    assert_eq!(ex.layers, (0..=model.config().n_layers).collect::<Vec<_>>());
    assert_eq!(ex.queries.len(), ex.prompts.len());
    // Rule vectors are the residuals at the answer positions, read one prompt at a time.
    let i = ex.n_dev;
    let single = probe.prepare(&ex.prompts[i]).unwrap();
    let li = 1;
    let batch = icl_probe::Batch::from_ids(vec![single.ids.clone()], tok.pad_id()).unwrap();
    let hook = resid_hook(model.config().n_layers, ex.layers[li]);
    let o = model
        .forward(
            &batch,
            &HookSpec::new()
                .cache([hook.clone()])
                .logits(LogitsMode::None),
        )
        .unwrap();
    let t = o.cache.get3(&hook).unwrap();
    let w = model.config().d_model;
    let data = t.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    for (j, &pos) in single.answer_positions.iter().enumerate() {
        let manual = &data[pos * w..(pos + 1) * w];
        let d = manual
            .iter()
            .zip(&ex.rules[i][li][j])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-4, "demo {j}: batched vs single read differ by {d}");
    }
    // Subset aggregation is the plain mean.
    let agg = aggregate(&ex, i, li, &[0, 2]);
    assert_eq!(agg.len(), w);
    for (c, a) in agg.iter().enumerate() {
        let m = (ex.rules[i][li][0][c] + ex.rules[i][li][2][c]) / 2.0;
        assert!((a - m).abs() <= 1e-6);
    }
    // And the subset accuracy patches exactly that mean.
    let test = &ex.queries[ex.n_dev..];
    let manual: Vec<Vec<f32>> = (ex.n_dev..ex.queries.len())
        .map(|q| mean_vec(&[ex.rules[q][li][0].as_slice(), ex.rules[q][li][2].as_slice()]))
        .collect();
    let pred = probe.predict_patched(test, ex.layers[li], &manual).unwrap();
    let targets: Vec<u32> = test.iter().map(|q| q.target).collect();
    let acc =
        pred.iter().zip(&targets).filter(|(a, b)| a == b).count() as f64 / targets.len() as f64;
    assert_eq!(
        subset_accuracy(&probe, &ex, li, |_| vec![0, 2]).unwrap(),
        acc
    );
}

#[test]
fn knockout_of_no_edges_changes_nothing() {
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 4);
    let prompts = probe
        .prepare_all(&sample_prompts(&toy_task(), Split::Test, 3, 2, 0).unwrap())
        .unwrap();
    let plain = probe
        .logits_with(&prompts, |_, _| Ok(HookSpec::new()))
        .unwrap();
    let none = probe
        .predict_knockout(&prompts, &[0, 1], |_| vec![])
        .unwrap();
    let argmax: Vec<u32> = plain
        .iter()
        .map(|l| icl_experiments::probe::argmax_f32(l))
        .collect();
    assert_eq!(none, argmax);
}

#[test]
fn answer_site_patches_write_exactly_the_given_vectors() {
    use icl_experiments::answer_sites::{dummy_prompt, run_answer_sites};
    use icl_experiments::ResultCache;
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 3);
    let task = toy_task();
    let c = cfg(3);
    let ex = extract(&probe, &task, &c).unwrap();
    // The dummy prompt rotates the outputs and keeps the inputs and the query.
    let d = dummy_prompt(&ex.prompts[0], &ex.queries[0].query);
    for j in 0..3 {
        assert_eq!(d.demos[j].input, ex.prompts[0].demos[j].input);
        assert_eq!(d.demos[j].output, ex.prompts[0].demos[(j + 1) % 3].output);
    }
    assert_eq!(d.query, ex.queries[0].query);
    let dummy = probe.prepare(&d).unwrap();

    // Writing a prompt's own residuals back at its answer positions changes nothing...
    let layer = 1;
    let own = probe
        .residuals(std::slice::from_ref(&dummy), &[layer], |p| {
            p.answer_positions.clone()
        })
        .unwrap();
    let plain = probe
        .logits_patched_at(std::slice::from_ref(&dummy), layer, &[vec![]], &[vec![]])
        .unwrap();
    let same = probe
        .logits_patched_at(
            std::slice::from_ref(&dummy),
            layer,
            std::slice::from_ref(&dummy.answer_positions),
            &[own[0][0].clone()],
        )
        .unwrap();
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(diff(&plain[0], &same[0]) <= 1e-5);
    // ...and the patched run equals the hand-written intervention.
    let rules = ex.rules[0][0].clone();
    let li = ex.layers.iter().position(|&l| l == ex.layers[0]).unwrap();
    let patched = probe
        .logits_patched_at(
            std::slice::from_ref(&dummy),
            ex.layers[li],
            std::slice::from_ref(&dummy.answer_positions),
            std::slice::from_ref(&rules),
        )
        .unwrap();
    let w = model.config().d_model;
    let flat: Vec<f32> = rules.concat();
    let value = burn::tensor::Tensor::<Flex, 2>::from_data(
        burn::tensor::TensorData::new(flat, [3, w]),
        &Default::default(),
    );
    let spec = HookSpec::new()
        .intervene(
            icl_probe::Intervention::new(
                resid_hook(model.config().n_layers, ex.layers[li]),
                icl_probe::Op::Replace(value),
            )
            .at(dummy.answer_positions.iter().map(|&p| p as isize).collect()),
        )
        .logits(LogitsMode::Last);
    let batch = icl_probe::Batch::from_ids(vec![dummy.ids.clone()], tok.pad_id()).unwrap();
    let by_hand: Vec<f32> = model
        .forward(&batch, &spec)
        .unwrap()
        .logits
        .unwrap()
        .into_data()
        .into_vec()
        .unwrap();
    assert!(diff(&patched[0], &by_hand) <= 1e-5);
    assert!(
        diff(&patched[0], &plain[0]) > 1e-4,
        "the patch must change something"
    );

    // The experiment end to end: s = 0 is the unpatched dummy, s = 0..=k all present.
    let dir = tempfile::tempdir().unwrap();
    let cache = ResultCache::new(dir.path().join("cache"));
    let r = run_answer_sites(&probe, &task, &c, &cache, Some(&ex)).unwrap();
    assert_eq!(r.by_count.len(), 4);
    assert_eq!(r.by_count[0].accuracy, r.dummy);
    assert_eq!(r.curve.layers, ex.layers);
    // k = 1 cannot break the rule by rotation: a typed error, not a silent no-op.
    let mut c1 = cfg(1);
    c1.seed = 4;
    assert!(run_answer_sites(&probe, &task, &c1, &cache, None).is_err());
}
