//! Issue #13 items 2–5 on the `llama_tiny` fixture (random weights) with the `tokenizer_bpe_tiny`
//! tokenizer: the saliency gradients equal finite differences, the forms renderer reproduces the
//! standard prompt, the dPCA of layer-0 states has the parts token identity predicts, the
//! local→global cosines are exact where they must be, and every run resumes from its journal.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use icl_experiments::dpca::{self, DpcaConfig, INDEX, ITEM, TASK};
use icl_experiments::forms::{self, prepare_in, Form, FormsConfig};
use icl_experiments::local_global::{self, LocalGlobalConfig};
use icl_experiments::saliency::{
    self, loss_with_bump, pattern_grads, PatternGrads, SaliencyConfig,
};
use icl_experiments::transplant::{p_prompts, DummyKind};
use icl_experiments::Probe;
use icl_probe::{Model, Tokenizer};
use icl_tasks::{Item, Split, TaskSet};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../icl-probe/tests/fixtures")
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(&fixtures().join("tokenizer_bpe_tiny.json")).unwrap()
}

fn setup() -> (Model<Flex>, Tokenizer) {
    let device = Default::default();
    let model = Model::<Flex>::load(fixtures().join("llama_tiny"), &device).unwrap();
    (model, tokenizer())
}

const WORDS: [&str; 14] = [
    "hot", "cold", "big", "small", "up", "down", "wet", "dry", "old", "new", "fast", "slow",
    "dark", "light",
];

fn split_of(i: usize) -> Split {
    match i % 7 {
        0 => Split::Test,
        1 => Split::Dev,
        _ => Split::Train,
    }
}

fn task(name: &str, f: impl Fn(usize, &str) -> String) -> TaskSet {
    TaskSet {
        name: name.into(),
        items: WORDS
            .iter()
            .enumerate()
            .map(|(i, w)| Item {
                input: w.to_string(),
                output: f(i, w),
                split: split_of(i),
            })
            .collect(),
    }
}

/// Equal up to the last bits of floats (serde_json's default parser may round the last ulp of an
/// f64 read back from the journal).
fn same<T: serde::Serialize>(a: &T, b: &T) {
    fn eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value::*;
        match (a, b) {
            (Number(x), Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-300)
            }
            (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| eq(x, y)),
            (Object(x), Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| eq(v, w)))
            }
            _ => a == b,
        }
    }
    let (a, b) = (
        serde_json::to_value(a).unwrap(),
        serde_json::to_value(b).unwrap(),
    );
    assert!(eq(&a, &b), "resumed records differ:\n{a}\n{b}");
}

fn upper() -> TaskSet {
    task("toy_upper", |_, w| w.to_uppercase())
}

fn reverse() -> TaskSet {
    task("toy_reverse", |_, w| w.chars().rev().collect())
}

/// Three labels: the symbols form applies.
fn three_labels() -> TaskSet {
    task("toy_class", |i, _| {
        ["cold", "dry", "new"][i % 3].to_string()
    })
}

#[test]
fn saliency_gradients_match_finite_differences() {
    let device = Default::default();
    let ad = Model::<Autodiff<Flex>>::load(fixtures().join("llama_tiny"), &device).unwrap();
    let (plain, tok) = setup();
    let probe = Probe::new(&plain, &tok, 1);
    let p = probe
        .prepare_all(&p_prompts(&upper(), 3, 1, 0).unwrap())
        .unwrap();
    let (ids, target) = (&p[0].ids, p[0].target);
    let pad = tok.pad_id();
    let PatternGrads {
        loss,
        patterns: pats,
        grads,
    } = pattern_grads(&ad, ids, target, pad).unwrap();
    let base = loss_with_bump(&plain, ids, target, pad, (0, 0, 0, 0, 0.0)).unwrap();
    assert!((loss - base).abs() < 1e-4, "loss {loss} vs plain {base}");
    let cfg = plain.config();
    let (nl, nh, t) = (cfg.n_layers, cfg.n_heads, ids.len());
    assert_eq!((pats.len(), grads.len()), (nl, nl));
    // Patterns are softmax rows: causal rows sum to one.
    for h in 0..nh {
        let row: f32 = pats[0][(h * t + t - 1) * t..(h * t + t) * t].iter().sum();
        assert!((row - 1.0).abs() < 1e-4, "row sum {row}");
    }
    let q = t - 1;
    let mut checked = 0;
    let mut largest = 0f64;
    for (layer, grad) in grads.iter().enumerate() {
        for h in 0..nh {
            for &j in &[0, p[0].answer_positions[0], q] {
                let g = f64::from(grad[(h * t + q) * t + j]);
                let eps = 1e-2f32;
                let up = loss_with_bump(&plain, ids, target, pad, (layer, h, q, j, eps)).unwrap();
                let dn = loss_with_bump(&plain, ids, target, pad, (layer, h, q, j, -eps)).unwrap();
                let fd = (up - dn) / (2.0 * f64::from(eps));
                assert!(
                    (g - fd).abs() <= 2e-3 + 2e-2 * fd.abs(),
                    "block {layer} head {h} key {j}: autodiff {g} vs finite difference {fd}"
                );
                largest = largest.max(fd.abs());
                checked += 1;
            }
        }
    }
    assert!(checked >= 6);
    assert!(
        largest > 1e-3,
        "all gradients ~0: the test would not see a wrong one"
    );
    // Earlier query rows too (a row that only reaches the last position through later blocks).
    let i = p[0].answer_positions[1];
    let g = f64::from(grads[0][i * t]);
    let up = loss_with_bump(&plain, ids, target, pad, (0, 0, i, 0, 1e-2)).unwrap();
    let dn = loss_with_bump(&plain, ids, target, pad, (0, 0, i, 0, -1e-2)).unwrap();
    let fd = (up - dn) / 2e-2;
    assert!((g - fd).abs() <= 2e-3 + 2e-2 * fd.abs(), "{g} vs {fd}");
    // The whole run, resumed.
    let dir = tempfile::tempdir().unwrap();
    let adprobe = Probe::new(&ad, &tok, 1);
    let scfg = SaliencyConfig {
        model_id: "tiny".into(),
        k: 3,
        n: 2,
        seeds: vec![0, 1],
    };
    let units = saliency::run_saliency(&adprobe, &[upper()], &scfg, dir.path()).unwrap();
    assert_eq!(units.len(), 2);
    assert_eq!(units[0].flows[0].len(), nl);
    let again = saliency::run_saliency(&adprobe, &[upper()], &scfg, dir.path()).unwrap();
    same(&units, &again);
    let s = saliency::summarize(&scfg, &units).unwrap();
    let md = saliency::write_saliency_report(&s, dir.path()).unwrap();
    assert!(md.contains("S_pq"));
    for b in &s.tasks[0].blocks {
        let sum = b.wp.mean + b.pq.mean + b.ww.mean;
        assert!((sum - 1.0).abs() < 1e-9, "shares sum to {sum}");
    }
}

#[test]
fn the_arrow_form_is_the_standard_prompt_and_every_form_finds_its_answers() {
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 2);
    let specs = p_prompts(&upper(), 3, 2, 4).unwrap();
    for s in &specs {
        assert_eq!(
            prepare_in(&probe, s, Form::Arrow).unwrap(),
            probe.prepare(s).unwrap()
        );
    }
    for f in [Form::Colon, Form::FatArrow, Form::Qa] {
        for s in &specs {
            let p = prepare_in(&probe, s, f).unwrap();
            assert_eq!(p.answer_positions.len(), 3);
            assert_eq!(p.target, probe.prepare(s).unwrap().target);
            // Each answer position is the first token of its output: decoding from there on
            // starts with the output (the tokenizer may fold the leading space into the token).
            for (j, &a) in p.answer_positions.iter().enumerate() {
                let text = tok.decode(&p.ids[a..]).unwrap();
                assert!(
                    text.trim_start().starts_with(&s.demos[j].output),
                    "{f:?}: {text:?} should start with {}",
                    s.demos[j].output
                );
            }
        }
    }
}

#[test]
fn forms_run_resumes_and_judges_each_cross_form_pair() {
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 4);
    let dir = tempfile::tempdir().unwrap();
    let cfg = FormsConfig {
        model_id: "tiny".into(),
        k: 3,
        n: 2,
        seeds: vec![0, 1],
        layers: vec![0, 1],
        forms: vec![Form::Arrow, Form::Colon, Form::Symbols],
        all_pairs: false,
        dummy: DummyKind::RandomLabels,
    };
    let tasks = [upper(), three_labels()];
    let units = forms::run_forms(&probe, &tasks, &cfg, dir.path()).unwrap();
    assert_eq!(units.len(), 4);
    // Symbols only where the outputs are a small shared label set (not 14 distinct capitals).
    assert_eq!(units[0].forms, vec![Form::Arrow, Form::Colon]);
    assert_eq!(units[2].forms, cfg.forms);
    assert_eq!(units[2].transplants.len(), 7 * 2);
    let again = forms::run_forms(&probe, &tasks, &cfg, dir.path()).unwrap();
    same(&units, &again);
    let s = forms::summarize(&cfg, &units).unwrap();
    // Cross-form pairs only: arrow ↔ colon on upper; arrow ↔ colon, arrow ↔ symbols on class.
    assert_eq!(s.tasks[0].verdicts.len(), 2);
    assert_eq!(s.tasks[1].verdicts.len(), 4);
    let md = forms::write_forms_report(&s, dir.path()).unwrap();
    assert!(md.contains("arrow → symbols"));
    let mut other = cfg.clone();
    other.layers = vec![0];
    assert!(forms::run_forms(&probe, &tasks, &other, dir.path()).is_err());
}

#[test]
fn dpca_of_layer_zero_is_token_identity() {
    // At L = 0 an answer-position state is its token's embedding: it cannot depend on the
    // demonstration index or the fillers, so index and trial parts are zero and task + item is
    // everything. Deeper layers see the context: trial noise appears.
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 8);
    let cfg = DpcaConfig {
        model_id: "tiny".into(),
        k: 3,
        items: 3,
        trials: 2,
        seeds: vec![0, 1],
        layers: vec![0, 2],
        tasks: vec!["toy_upper".into(), "toy_reverse".into()],
    };
    let dir = tempfile::tempdir().unwrap();
    let tasks = [upper(), reverse()];
    let units = dpca::run_dpca(&probe, &tasks, &cfg, dir.path()).unwrap();
    assert_eq!(units.len(), 2);
    for u in &units {
        let d0 = &u.answer[0];
        assert!(d0.total > 0.0);
        assert!(d0.noise <= 1e-9 * d0.total, "noise {}", d0.noise);
        for m in [INDEX, TASK | INDEX, ITEM | INDEX, TASK | ITEM | INDEX] {
            assert!(d0.part(m) <= 1e-9 * d0.total, "{m}: {}", d0.part(m));
        }
        let g = d0.grouped();
        assert!((g[0] + g[1] - 1.0).abs() < 1e-6);
        let d2 = &u.answer[1];
        assert!(
            d2.noise > 1e-6 * d2.total,
            "deeper states depend on the fillers"
        );
        let sum: f64 = d2.parts.iter().sum::<f64>() + d2.noise;
        assert!((sum - d2.total).abs() < 1e-6 * d2.total);
    }
    let again = dpca::run_dpca(&probe, &tasks, &cfg, dir.path()).unwrap();
    same(&units, &again);
    let s = dpca::summarize(&cfg, &units).unwrap();
    assert!(dpca::write_dpca_report(&s, dir.path())
        .unwrap()
        .contains("task"));
}

#[test]
fn local_global_cosines_are_exact_at_layer_zero_and_the_run_resumes() {
    // At L = 0 every prompt's last state is the embedding of the same final token, so the task
    // vector (their mean) is that embedding and cos(last, TV) = 1 exactly; deeper it is not.
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 4);
    let n_layers = model.config().n_layers;
    let cfg = LocalGlobalConfig {
        model_id: "tiny".into(),
        k: 3,
        n: 2,
        seeds: vec![0, 1],
        layers: vec![0, n_layers],
        knock_from: vec![0, n_layers - 1],
    };
    let dir = tempfile::tempdir().unwrap();
    let units = local_global::run_local_global(&probe, &[upper()], &cfg, dir.path()).unwrap();
    assert_eq!(units.len(), 2);
    for u in &units {
        for c in &u.cosines[0].last_tv {
            assert!((c - 1.0).abs() < 1e-6, "cos(last, TV) at L0 = {c}");
        }
        assert!(u.cosines[1].last_tv.iter().any(|c| (c - 1.0).abs() > 1e-4));
        // The task vector at L0 is the embedding already at the zero-shot query's last position:
        // patching it changes no prediction.
        assert_eq!(u.tv_patch[0], u.zero_shot);
        assert_eq!(u.knockout.len(), 2);
        assert_eq!(u.knockout[0].answers.len(), 2);
    }
    let again = local_global::run_local_global(&probe, &[upper()], &cfg, dir.path()).unwrap();
    same(&units, &again);
    let s = local_global::summarize(&cfg, &units).unwrap();
    assert_eq!(s.tasks[0].layers.len(), 2);
    assert!(local_global::write_local_global_report(&s, dir.path())
        .unwrap()
        .contains("cos(ans, TV)"));
    // `icl-probe report` folds the summary's tables in, plot links relative to the report.
    let report = icl_experiments::report::write_report(dir.path()).unwrap();
    assert!(report.contains("## Local → global"), "{report}");
    assert!(report.contains("](plots/tiny_local-global_k3_toy_upper_cosines.png)"));
    assert!(dir
        .path()
        .join("plots/tiny_local-global_k3_toy_upper_cosines.png")
        .exists());
}

/// The subset-size transplant at L0 writes exactly P's answer tokens at the chosen demonstrations
/// of Q (and nowhere else); the run resumes from its journal and is judged per task.
#[test]
fn subsets_write_only_the_chosen_positions_and_the_run_resumes() {
    use icl_experiments::subsets::{self, draw_subsets, subset_logits, SubsetsConfig};
    use icl_experiments::transplant::q_prompts;
    use icl_experiments::Prepared;
    use icl_probe::HookSpec;
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 4);
    let t = upper();
    let ps = p_prompts(&t, 3, 2, 1).unwrap();
    let p = probe.prepare_all(&ps).unwrap();
    let q = probe
        .prepare_all(&q_prompts(&t, &ps, DummyKind::RandomLabels, 1).unwrap())
        .unwrap();
    let rules = probe
        .residuals(&p, &[0], |x| x.answer_positions.clone())
        .unwrap();
    let plain_q = probe.logits_with(&q, |_, _| Ok(HookSpec::new())).unwrap();
    for sites in &draw_subsets(3, q.len(), 5)[..2] {
        let v: Vec<Vec<Vec<f32>>> = (0..q.len())
            .map(|i| sites[i].iter().map(|&j| rules[i][0][j].clone()).collect())
            .collect();
        let got = subset_logits(&probe, &q, 0, sites, &v).unwrap();
        let substituted: Vec<Prepared> = (0..q.len())
            .map(|i| {
                let mut s = q[i].clone();
                for &j in &sites[i] {
                    s.ids[q[i].answer_positions[j]] = p[i].ids[p[i].answer_positions[j]];
                }
                s
            })
            .collect();
        let want = probe
            .logits_with(&substituted, |_, _| Ok(HookSpec::new()))
            .unwrap();
        for i in 0..q.len() {
            let d = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max)
            };
            assert!(d(&got[i], &want[i]) <= 1e-5, "subset {:?}", sites[i]);
            assert!(d(&got[i], &plain_q[i]) > 1e-4, "the write must matter");
        }
    }
    // An index beyond the prompt's demonstrations is an error, not a panic.
    let bad = vec![vec![7]; q.len()];
    let v = vec![vec![rules[0][0][0].clone()]; q.len()];
    assert!(subset_logits(&probe, &q, 0, &bad, &v).is_err());

    let dir = tempfile::tempdir().unwrap();
    let cfg = SubsetsConfig {
        model_id: "tiny".into(),
        k: 3,
        n: 2,
        seeds: vec![0, 1],
        layers: vec![0, 1],
        dummy: DummyKind::RandomLabels,
    };
    let tasks = [upper(), reverse()];
    let units = subsets::run_subsets(&probe, &tasks, &cfg, dir.path()).unwrap();
    assert_eq!(units.len(), 4);
    assert_eq!(units[0].outcomes.len(), 2 * 3);
    assert_eq!(units[0].repeated.len(), 2);
    let again = subsets::run_subsets(&probe, &tasks, &cfg, dir.path()).unwrap();
    same(&units, &again);
    let s = subsets::summarize(&cfg, &units).unwrap();
    assert_eq!(s.tasks.len(), 2);
    assert_eq!(s.tasks[0].by_size.len(), 2 * 3);
    assert_eq!(s.tasks[0].best_layer, Some(1));
    let md = subsets::write_subsets_report(&s, dir.path()).unwrap();
    assert!(md.contains("toy_reverse"));
    let mut other = cfg.clone();
    other.layers = vec![0];
    assert!(subsets::run_subsets(&probe, &tasks, &other, dir.path()).is_err());
}
