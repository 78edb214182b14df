//! The transplant experiment on the `llama_tiny` fixture (random weights) with the
//! `tokenizer_bpe_tiny` tokenizer: the dummies break the rule, the writes land where they should,
//! the run resumes, and the verdicts follow the intervals.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use icl_experiments::transplant::{
    files, p_prompts, q_prompts, rule_outputs, run_transplant, summarize, transplant_logits,
    write_k_sweep, write_transplant_report, Condition, DummyKind, Outcome, Source,
    TransplantConfig, UnitRecord, Verdict,
};
use icl_experiments::{Prepared, Probe};
use icl_probe::{HookSpec, Model, Tokenizer};
use icl_tasks::{Item, Split, TaskSet};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../icl-probe/tests/fixtures")
}

fn setup() -> (Model<Flex>, Tokenizer) {
    let device = Default::default();
    let model = Model::<Flex>::load(fixtures().join("llama_tiny"), &device).unwrap();
    let tok = Tokenizer::from_file(&fixtures().join("tokenizer_bpe_tiny.json")).unwrap();
    (model, tok)
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

fn upper() -> TaskSet {
    task("toy_upper", |_, w| w.to_uppercase())
}

fn reverse() -> TaskSet {
    task("toy_reverse", |_, w| w.chars().rev().collect())
}

/// Two labels, so displayed outputs collide with the rule's often: the hard case for dummies.
fn two_labels() -> TaskSet {
    task("toy_parity", |i, _| {
        if i % 2 == 0 { "even" } else { "odd" }.to_string()
    })
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn every_dummy_demonstration_breaks_the_rule_with_other_items() {
    for (t, k) in [(upper(), 3), (two_labels(), 4)] {
        let truth = rule_outputs(&t);
        let p = p_prompts(&t, k, 2, 5).unwrap();
        for kind in DummyKind::ALL {
            let q = q_prompts(&t, &p, kind, 5).unwrap();
            for (ps, qs) in p.iter().zip(&q) {
                assert_eq!(qs.query, ps.query);
                assert_eq!(qs.demos.len(), k);
                let p_inputs: BTreeSet<&str> = ps.demos.iter().map(|d| d.input.as_str()).collect();
                for d in &qs.demos {
                    assert!(
                        !p_inputs.contains(d.input.as_str()),
                        "{kind:?}: reused item"
                    );
                    assert!(
                        !truth[&d.input].contains(&d.output),
                        "{} {kind:?}: {} -> {} keeps the rule",
                        t.name,
                        d.input,
                        d.output
                    );
                    assert_eq!(d.split, Split::Train);
                }
                if kind != DummyKind::RandomLabels {
                    // Rotated and shuffled show the same multiset of outputs as the rule would.
                    let mut shown: Vec<&str> = qs.demos.iter().map(|d| d.output.as_str()).collect();
                    let mut own: Vec<String> = qs
                        .demos
                        .iter()
                        .map(|d| truth[&d.input].iter().next().unwrap().clone())
                        .collect();
                    shown.sort();
                    own.sort();
                    assert_eq!(shown, own.iter().map(String::as_str).collect::<Vec<_>>());
                }
            }
        }
    }
    // Three demonstrations over two labels cannot be permuted so that none keeps its label:
    // an error, not a dummy that silently keeps the rule.
    let t = two_labels();
    let p = p_prompts(&t, 3, 1, 0).unwrap();
    assert!(q_prompts(&t, &p, DummyKind::Rotated, 0).is_err());
    assert!(q_prompts(&t, &p, DummyKind::Shuffled, 0).is_err());
    assert!(q_prompts(&t, &p, DummyKind::RandomLabels, 0).is_ok());
}

#[test]
fn writing_every_position_of_p_into_an_equal_length_prompt_reproduces_p() {
    // A check that can fail: Q has P's length but other tokens; overwriting Q's whole residual
    // stream at layer L with P's must give P's logits exactly, and Q's own logits differ.
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 2);
    let t = upper();
    let p = probe.prepare_all(&p_prompts(&t, 3, 2, 1).unwrap()).unwrap();
    let q: Vec<Prepared> = p
        .iter()
        .map(|x| {
            let mut y = x.clone();
            y.ids = x.ids.iter().map(|&id| (id * 7 + 13) % 250).collect();
            y
        })
        .collect();
    let plain = |v: &[Prepared]| probe.logits_with(v, |_, _| Ok(HookSpec::new())).unwrap();
    let (lp, lq) = (plain(&p), plain(&q));
    assert!(
        max_diff(&lp[0], &lq[0]) > 1e-3,
        "Q must differ from P to begin with"
    );
    for layer in [0, 1, model.config().n_layers] {
        let all = |x: &Prepared| (0..x.ids.len()).collect::<Vec<_>>();
        let res = probe.residuals(&p, &[layer], all).unwrap();
        let positions: Vec<Vec<usize>> = q.iter().map(all).collect();
        let vectors: Vec<Vec<Vec<f32>>> = res.iter().map(|r| r[0].clone()).collect();
        let got = probe
            .logits_patched_at(&q, layer, &positions, &vectors)
            .unwrap();
        for (g, e) in got.iter().zip(&lp) {
            let d = max_diff(g, e);
            assert!(d <= 1e-4, "layer {layer}: max |Δlogit| = {d}");
        }
    }
}

#[test]
fn the_l0_control_writes_exactly_p_s_answer_token_embeddings() {
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 3);
    let t = upper();
    let ps = p_prompts(&t, 3, 2, 2).unwrap();
    let p = probe.prepare_all(&ps).unwrap();
    let q = probe
        .prepare_all(&q_prompts(&t, &ps, DummyKind::Rotated, 2).unwrap())
        .unwrap();
    let rules = probe
        .residuals(&p, &[0], |x| x.answer_positions.clone())
        .unwrap();
    let vectors: Vec<Vec<Vec<f32>>> = rules.iter().map(|r| r[0].clone()).collect();
    let got = transplant_logits(&probe, &q, 0, &vectors).unwrap();
    // The same as running Q with P's answer tokens substituted at Q's answer positions.
    let substituted: Vec<Prepared> = p
        .iter()
        .zip(&q)
        .map(|(pi, qi)| {
            let mut s = qi.clone();
            for (j, &pos) in qi.answer_positions.iter().enumerate() {
                s.ids[pos] = pi.ids[pi.answer_positions[j]];
            }
            assert_ne!(s.ids, qi.ids, "the substitution must change Q");
            s
        })
        .collect();
    let want = probe
        .logits_with(&substituted, |_, _| Ok(HookSpec::new()))
        .unwrap();
    let plain_q = probe.logits_with(&q, |_, _| Ok(HookSpec::new())).unwrap();
    for i in 0..q.len() {
        assert!(max_diff(&got[i], &want[i]) <= 1e-5);
        assert!(
            max_diff(&got[i], &plain_q[i]) > 1e-4,
            "the write must matter"
        );
    }
}

fn tiny_cfg() -> TransplantConfig {
    TransplantConfig {
        model_id: "llama_tiny".into(),
        k: 3,
        n: 2,
        seeds: vec![0, 1],
        layers: vec![0, 1],
        ab_layers: vec![0, 1],
        dummies: DummyKind::ALL.to_vec(),
    }
}

#[test]
fn a_run_resumes_skipping_done_units_and_recomputing_a_cut_one() {
    let (model, tok) = setup();
    let probe = Probe::new(&model, &tok, 4);
    let tasks = [upper(), reverse()];
    let cfg = tiny_cfg();
    let dir = tempfile::tempdir().unwrap();
    let first = run_transplant(&probe, &tasks, &cfg, dir.path()).unwrap();
    assert_eq!((first.computed, first.skipped), (4, 0));
    let r = &first.records[0];
    assert_eq!(r.other_task.as_deref(), Some("toy_reverse"));
    // zero-shot, P, 3 × (Q + 2 layers), 2 off-diagonal a/b pairs, other task, mean, random × 2.
    assert_eq!(r.outcomes.len(), 2 + 3 * 3 + 2 + 3 * 2);
    assert!(r.outcomes.iter().all(|o| o.correct.len() == 2));

    let again = run_transplant(&probe, &tasks, &cfg, dir.path()).unwrap();
    assert_eq!((again.computed, again.skipped), (0, 4));

    // A kill in the middle of a line: the cut line is dropped and that unit recomputed, equal to
    // the first run's (everything is seeded).
    let path = files(dir.path(), &cfg.model_id, cfg.k).journal();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    let cut = format!(
        "{}\n{}",
        lines[..3].join("\n"),
        &lines[3][..lines[3].len() / 2]
    );
    std::fs::write(&path, cut).unwrap();
    assert_eq!(
        icl_experiments::journal::load::<icl_experiments::transplant::UnitRecord>(&path)
            .unwrap()
            .len(),
        3
    );
    let resumed = run_transplant(&probe, &tasks, &cfg, dir.path()).unwrap();
    assert_eq!((resumed.computed, resumed.skipped), (1, 3));
    let strip = |r: &UnitRecord| (r.task.clone(), r.seed, r.outcomes.clone());
    assert_eq!(strip(&resumed.records[3]), strip(&first.records[3]));

    // Other settings in the same folder are refused rather than mixed.
    let mut other = cfg.clone();
    other.n = 3;
    assert!(run_transplant(&probe, &tasks, &other, dir.path()).is_err());

    let s = summarize(&cfg, &resumed.records, 1.0).unwrap();
    assert_eq!(s.tasks.len(), 2);
    for c in &s.tasks[0].conditions {
        assert_eq!(c.accuracy.n, 4, "{}: 2 queries × 2 seeds", c.label);
    }
    let md = write_transplant_report(&s, dir.path()).unwrap();
    assert!(md.contains("L0 control"));
    for f in [
        "llama_tiny_transplant_k3.json",
        "llama_tiny_transplant_k3.md",
        "plots/llama_tiny_transplant_k3_toy_upper.png",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }

    // A second k in the same folder has its own journal; k = 1 works with random labels only.
    let mut k1 = cfg.clone();
    k1.k = 1;
    assert!(run_transplant(&probe, &tasks, &k1, dir.path()).is_err());
    k1.dummies = vec![DummyKind::RandomLabels];
    let log1 = run_transplant(&probe, &tasks, &k1, dir.path()).unwrap();
    assert_eq!((log1.computed, log1.skipped), (4, 0));
    let s1 = summarize(&k1, &log1.records, 1.0).unwrap();
    let sweep = write_k_sweep(&[s.clone(), s1], dir.path()).unwrap();
    let rows: Vec<&str> = sweep
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 3 |"))
        .collect();
    assert_eq!(rows.len(), 4, "k = 1 and 3 for two tasks:\n{sweep}");
    assert!(sweep.find("| 1 |").unwrap() < sweep.find("| 3 |").unwrap());
    assert!(dir
        .path()
        .join("plots/llama_tiny_transplant_ksweep_toy_upper.png")
        .exists());
}

fn record(outcomes: Vec<(Condition, Vec<bool>)>) -> UnitRecord {
    let mut cfg = tiny_cfg();
    cfg.dummies = vec![DummyKind::Rotated];
    UnitRecord {
        config: cfg,
        task: "t".into(),
        other_task: None,
        seed: 0,
        queries: vec![],
        outcomes: outcomes
            .into_iter()
            .map(|(condition, correct)| Outcome { condition, correct })
            .collect(),
        seconds: 0.0,
    }
}

fn verdict(icl: usize, dummy: usize, l0: usize, l1: usize) -> Verdict {
    let n = 40;
    let v = |c: usize| (0..n).map(|i| i < c).collect::<Vec<_>>();
    let cond = |source, read, write| Condition {
        source,
        dummy: if source == Source::Icl {
            None
        } else {
            Some(DummyKind::Rotated)
        },
        read,
        write,
    };
    let r = record(vec![
        (cond(Source::Icl, None, None), v(icl)),
        (cond(Source::Dummy, None, None), v(dummy)),
        (cond(Source::Transplant, Some(0), Some(0)), v(l0)),
        (cond(Source::Transplant, Some(1), Some(1)), v(l1)),
    ]);
    let s = summarize(&r.config, std::slice::from_ref(&r), 0.0).unwrap();
    s.tasks[0].verdicts[0].verdict
}

#[test]
fn verdicts_follow_the_intervals_against_the_l0_control() {
    // 40 queries: P 36, Q 2; L0 control 4, L1 30: the intervals are far apart.
    assert_eq!(verdict(36, 2, 4, 30), Verdict::Supported);
    // L1 no better than the L0 control.
    assert_eq!(verdict(36, 2, 20, 18), Verdict::NotSupported);
    // Above, but within noise.
    assert_eq!(verdict(36, 2, 10, 13), Verdict::Inconclusive);
    // No room: Q alone as good as P alone.
    assert_eq!(verdict(20, 19, 4, 30), Verdict::Inconclusive);
}
