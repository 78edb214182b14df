//! The `icl-probe` command line on the tiny random Llama of the icl-probe fixtures (with the tiny
//! BPE tokenizer as its tokenizer.json): `hooks` lists every hook with its shape, `--help` shows
//! the choices, progress goes to stderr and results to stdout/JSON, bad flags are clap's typed
//! errors (exit code 2) before any work.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/icl-probe/tests/fixtures")
}

/// A model folder: llama_tiny's config and weights plus the tiny tokenizer (vocab 300 < 1000).
fn tiny_model(dir: &Path) -> PathBuf {
    let m = dir.join("llama_tiny");
    std::fs::create_dir(&m).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("llama_tiny").join(f), m.join(f)).unwrap();
    }
    std::fs::copy(
        fixtures().join("tokenizer_bpe_tiny.json"),
        m.join("tokenizer.json"),
    )
    .unwrap();
    m
}

fn icl_probe(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_icl-probe"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn hooks_lists_every_hook_with_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let m = model.to_str().unwrap();
    let out = icl_probe(
        &["hooks", "--model", m, "--seq-len", "7", "--batch", "2"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{table}"))
            .to_string()
    };
    // llama_tiny: d_model 64, 4 heads of 16, 2 key/value heads, d_mlp 128, 2 layers.
    assert!(line("hook_embed").ends_with("[2, 7, 64]"));
    assert!(line("blocks.1.attn.hook_result").ends_with("[2, 7, 4, 64]"));
    assert!(line("blocks.0.attn.hook_rot_k").ends_with("[2, 7, 2, 16]"));
    assert!(line("blocks.0.attn.hook_pattern").ends_with("[2, 4, 7, 7]"));
    assert!(line("blocks.0.mlp.hook_pre_linear").ends_with("[2, 7, 128]"));
    assert!(line("ln_final.hook_scale").ends_with("[2, 7, 1]"));
    assert!(!table.contains("hook_pos_embed"), "rotary model: {table}");

    let out = icl_probe(&["hooks", "--model", m, "--json"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hooks = v["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), table.lines().count());
    assert_eq!(v["seq_len"], 16);
    let result = hooks
        .iter()
        .find(|h| h["name"] == "blocks.0.attn.hook_result")
        .unwrap();
    assert_eq!(result["shape"], serde_json::json!([1, 16, 4, 64]));

    // The prompt's own length, and a filter.
    let out = icl_probe(
        &[
            "hooks",
            "--model",
            m,
            "--prompt",
            "ab ab ab",
            "--filter",
            "blocks.1.*",
            "--json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = v["seq_len"].as_u64().unwrap();
    assert!(t >= 1, "{v}");
    let hooks = v["hooks"].as_array().unwrap();
    assert!(!hooks.is_empty());
    assert!(hooks
        .iter()
        .all(|h| h["name"].as_str().unwrap().starts_with("blocks.1.")));
}

#[test]
fn help_shows_the_choices_and_version_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = icl_probe(&["run", "--help"], dir.path());
    assert!(out.status.success());
    let help = text(&out.stdout);
    for want in [
        "baseline",
        "transplant",
        "random-labels",
        "antonym",
        "--progress <PROGRESS>",
        "always",
        "--quiet",
    ] {
        assert!(help.contains(want), "`run --help` lacks {want}:\n{help}");
    }
    let out = icl_probe(&["--version"], dir.path());
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("icl-probe "));
    let out = icl_probe(&["completions", "bash"], dir.path());
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("icl-probe"));
    // Every flag of every subcommand has help text.
    for sub in ["predict", "forward", "run", "hooks", "demo", "report"] {
        let out = icl_probe(&[sub, "--help"], dir.path());
        let help = text(&out.stdout);
        for l in help.lines() {
            let l = l.trim_start();
            if l.starts_with("--") || l.starts_with('-') && l.chars().nth(1) != Some(' ') {
                // `  --flag <X>  help` on one line, or the help on the next line (long help).
                let (flag, rest) = l.split_once("  ").unwrap_or((l, ""));
                let next = help.lines().skip_while(|x| x.trim_start() != l).nth(1);
                let next_is_help = next.is_some_and(|n| {
                    let n = n.trim_start();
                    !n.is_empty() && !n.starts_with('-')
                });
                assert!(
                    !rest.trim().is_empty() || next_is_help,
                    "{sub}: flag without help: {flag}"
                );
            }
        }
    }
}

fn write_ids(path: &Path) {
    let ids: Vec<i64> = vec![5, 17, 3, 99, 42, 7, 8, 9, 10, 11];
    let bytes: Vec<u8> = ids.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![2, 5], &bytes).unwrap();
    let st = safetensors::serialize([("input_ids", view)], None).unwrap();
    std::fs::write(path, st).unwrap();
}

#[test]
fn progress_goes_to_stderr_and_results_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = tiny_model(d);
    let m = model.to_str().unwrap();
    std::fs::write(
        d.join("prompts.jsonl"),
        "{\"prompt\": \"ab\"}\n{\"prompt\": \"ba ab\"}\n{\"prompt\": \"a\"}\n",
    )
    .unwrap();
    let predict = |extra: &[&str]| {
        let mut args = vec![
            "predict",
            "--model",
            m,
            "--prompts",
            "prompts.jsonl",
            "--output",
            "out.jsonl",
            "--batch-size",
            "1",
        ];
        args.extend_from_slice(extra);
        icl_probe(&args, d)
    };
    let out = predict(&["--progress", "always"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("predict: 3/3 (100%)"), "stderr: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    let results = std::fs::read_to_string(d.join("out.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 3);
    for l in results.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["top5_ids"].as_array().unwrap().len(), 5);
    }
    // Not a terminal and no --progress: nothing on stderr; --quiet: nothing even with always.
    for extra in [&[][..], &["--quiet", "--progress", "always"][..]] {
        let out = predict(extra);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(out.stderr.is_empty(), "{extra:?}: {}", text(&out.stderr));
    }

    write_ids(&d.join("ids.safetensors"));
    let out = icl_probe(
        &[
            "forward",
            "--model",
            m,
            "--input-ids",
            "ids.safetensors",
            "--output",
            "acts.safetensors",
            "--cache",
            "blocks.0.attn.hook_result,ln_final.hook_scale",
            "--json",
            "--progress",
            "always",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("forward: 2/2 (100%)"), "stderr: {err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shapes: Vec<(String, serde_json::Value)> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["shape"].clone()))
        .collect();
    assert!(shapes.contains(&("logits".into(), serde_json::json!([2, 5, 1000]))));
    assert!(shapes.contains(&(
        "blocks.0.attn.hook_result".into(),
        serde_json::json!([2, 5, 4, 64])
    )));
    assert!(shapes.contains(&("ln_final.hook_scale".into(), serde_json::json!([2, 5, 1]))));
    assert!(d.join("acts.safetensors").exists());
}

#[test]
fn bad_flags_are_typed_errors_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = tiny_model(d);
    let m = model.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--progress", "sometimes", "hooks", "--model", m],
            "invalid value 'sometimes' for '--progress <PROGRESS>'",
        ),
        (
            &["run", "sideways", "--model", m],
            "invalid value 'sideways'",
        ),
        (
            &["run", "transplant", "--model", m, "--task", "antonym,nope"],
            "invalid value 'nope' for '--task <TASK>'",
        ),
        (
            &[
                "run",
                "transplant",
                "--model",
                m,
                "--dummies",
                "rotated,upside-down",
            ],
            "invalid value 'upside-down' for '--dummies <DUMMIES>'",
        ),
        (
            &["hooks"],
            "the following required arguments were not provided",
        ),
        (&["completions", "tcsh"], "invalid value 'tcsh'"),
    ];
    for (args, want) in cases {
        let out = icl_probe(args, d);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // The error names the choices.
    let out = icl_probe(&["hooks", "--model", m, "--progress", "x"], d);
    assert!(text(&out.stderr).contains("[possible values: auto, always, never]"));
    // A model path that does not exist is a runtime error (exit 1) naming the path.
    let out = icl_probe(&["hooks", "--model", "no/such/model"], d);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no/such/model"));
}
