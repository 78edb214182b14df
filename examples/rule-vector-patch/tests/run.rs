//! Runs the example on icl-probe's tiny random Gemma 3 GGUF (6 layers, d_model 48, vocabulary 512)
//! with the tiny byte-level BPE tokenizer fixture (300 tokens, so every id fits the model), and
//! checks what it prints: the answer positions the prompt format implies, that the patches move the
//! prediction, and that a patch after the last block cannot. With SmolLM2 cached, a second test
//! checks the real model: antonym rule vectors transplanted into a rule-broken prompt restore the
//! antonym.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/icl-probe/tests/fixtures")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rule-vector-patch"))
        .args(args)
        .output()
        .expect("example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    stdout
}

/// The `ids: before B after A expected E changed C` line.
fn ids(stdout: &str) -> (u32, u32, u32, bool) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ids: "))
        .expect("ids line");
    let w: Vec<&str> = line.split_whitespace().collect();
    (
        w[2].parse().unwrap(),
        w[4].parse().unwrap(),
        w[6].parse().unwrap(),
        w[8].parse().unwrap(),
    )
}

fn delta(stdout: &str) -> f32 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("max |logit change|: "))
        .expect("logit change line")
        .parse()
        .unwrap()
}

#[test]
fn rule_vectors_move_the_tiny_models_answer() {
    let model = fixtures().join("gemma3_tiny/model.gguf");
    let tok = fixtures().join("tokenizer_bpe_tiny.json");
    let base = [
        model.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
    ];

    // Transplant (default) at a middle layer: four rule vectors into the rule-broken prompt.
    let stdout = run(&[&base[..], &["--layer", "3"]].concat());
    // The four default antonym demonstrations: four answer positions, in increasing order.
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("answer positions: "))
        .unwrap();
    let positions: Vec<usize> = line[1..line.find(']').unwrap()]
        .split(", ")
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(positions.len(), 4);
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert!(stdout.contains("blocks.3.hook_resid_pre"));
    assert!(stdout.contains("\"hot -> small\\nbig -> slow"), "{stdout}");
    assert!(delta(&stdout) > 0.1, "{stdout}");

    // At L = 0 the transplant swaps the answer tokens' embeddings back: the answer changes.
    let at0 = run(&[&base[..], &["--layer", "0"]].concat());
    let (before, after, _, changed) = ids(&at0);
    assert!(changed && before != after, "{at0}");

    // After the last block (L = n) no later computation reads the answer positions: the query's
    // logits cannot move at all.
    let at_end = run(&[&base[..], &["--layer", "6"]].concat());
    assert!(at_end.contains("blocks.5.hook_resid_post"));
    assert_eq!(delta(&at_end), 0.0, "{at_end}");

    // Zero-shot: the mean rule vector at the last position of "up ->" changes the answer.
    let zs = run(&[&base[..], &["--layer", "3", "--into", "zero-shot"]].concat());
    assert!(zs.contains("target prompt: \"up ->\""), "{zs}");
    let (before, after, _, changed) = ids(&zs);
    assert!(changed && before != after, "{zs}");
}

#[test]
fn a_layer_past_the_model_is_an_error() {
    let model = fixtures().join("gemma3_tiny/model.gguf");
    let tok = fixtures().join("tokenizer_bpe_tiny.json");
    let out = Command::new(env!("CARGO_BIN_EXE_rule-vector-patch"))
        .args([
            model.to_str().unwrap(),
            "--tokenizer",
            tok.to_str().unwrap(),
            "--layer",
            "7",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 blocks"));
}

#[test]
fn smollm2_antonyms_when_cached() {
    let Some(model) = assets::cached("smollm2-135m-gguf") else {
        println!(
            "skipped: asset smollm2-135m-gguf not in cache, run `cargo run --release -p assets-cli -- fetch smollm2-135m-gguf`"
        );
        return;
    };
    let model = if model.is_dir() {
        std::fs::read_dir(&model)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "gguf"))
            .expect("a .gguf in the asset folder")
    } else {
        model
    };
    // Measured: the rule-broken prompt answers " up"; with the rule vectors of the antonym prompt
    // transplanted at layers 0-16 it answers " down" (from layer 18 on, no longer: by then the
    // query has read the answer positions).
    let stdout = run(&[model.to_str().unwrap(), "--layer", "12"]);
    let (before, after, expected, _) = ids(&stdout);
    assert_ne!(before, expected, "{stdout}");
    assert_eq!(after, expected, "{stdout}");
}
