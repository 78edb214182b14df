//! Runs the `edm` binary on the golden fixtures of edm-core and checks it reproduces them.

use std::path::{Path, PathBuf};
use std::process::Command;

use edm_core::read_safetensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/edm-core/tests/fixtures")
        .join(name)
}

fn edm(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_edm"))
        .args(args)
        .output()
        .expect("edm runs");
    assert!(
        out.status.success(),
        "edm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn denoise_reproduces_the_fixtures() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["edm_ddpmpp_tiny", "edm_ncsnpp_tiny", "edm_adm_tiny"] {
        let dir = fixture(name);
        let exp = dir.join("expected.safetensors");
        let out = tmp.path().join(format!("{name}_denoised.safetensors"));
        edm(&[
            "denoise",
            "--model",
            dir.to_str().unwrap(),
            "--input",
            exp.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        let got = read_safetensors(&out).unwrap();
        let want = read_safetensors(&exp).unwrap();
        let e = rel_err(&got["denoised"].data, &want["denoised_f64"].data);
        assert!(e <= 1e-5, "{name}: {e}");
    }
}

#[test]
fn sample_reproduces_the_fixtures() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["edm_ddpmpp_tiny", "edm_ncsnpp_tiny", "edm_adm_tiny"] {
        let dir = fixture(name);
        let exp = dir.join("expected.safetensors");
        let want = read_safetensors(&exp).unwrap();
        let traj = &want["heun18_trajectory"].data;
        let per = traj.len() / 19;
        for (solver, reference) in [
            ("heun", &traj[18 * per..]),
            ("euler", &want["euler18_out"].data[..]),
            ("onestep", &want["onestep_out"].data[..]),
        ] {
            let out = tmp.path().join(format!("{name}_{solver}.safetensors"));
            edm(&[
                "sample",
                "--model",
                dir.to_str().unwrap(),
                "--solver",
                solver,
                "--steps",
                "18",
                "--latents",
                exp.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ]);
            let got = read_safetensors(&out).unwrap();
            let e = rel_err(&got["samples"].data, reference);
            assert!(e <= 1e-4, "{name} {solver}: {e}");
        }
    }
}

#[test]
fn sample_from_seeds_writes_pngs_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("edm_ddpmpp_tiny");
    let png = tmp.path().join("png");
    let run = |out: &Path, seeds: &str| {
        edm(&[
            "sample",
            "--model",
            dir.to_str().unwrap(),
            "--solver",
            "stochastic",
            "--steps",
            "3",
            "--seeds",
            seeds,
            "--class",
            "4",
            "--output",
            out.to_str().unwrap(),
            "--png",
            png.to_str().unwrap(),
            "--batch",
            "2",
        ]);
        read_safetensors(out).unwrap()["samples"].clone()
    };
    let a = run(&tmp.path().join("a.safetensors"), "0-2");
    let b = run(&tmp.path().join("b.safetensors"), "2");
    assert_eq!(a.shape, vec![3, 3, 16, 16]);
    // image of seed 2 does not depend on its batch
    assert_eq!(a.data[2 * 768..], b.data[..]);
    for f in ["000000.png", "000001.png", "000002.png"] {
        assert!(png.join(f).exists(), "{f}");
    }
}

/// A command line pasted from EDM's generate.py (underscored sampler options, --network,
/// --outdir, --subdirs) runs: one PNG per seed in per-thousand folders, pixel for pixel the images
/// of this tool's earlier flags (--model, --s-churn, safetensors output); PNGs that exist are kept
/// (their bytes unchanged) and only missing seeds are sampled again.
#[test]
fn an_edm_generate_command_line_runs_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let net = fixture("edm_ddpmpp_tiny");
    let outdir = tmp.path().join("out");
    let edm_style = |extra: &[&str]| {
        let mut args = vec![
            "sample",
            "--network",
            net.to_str().unwrap(),
            "--outdir",
            outdir.to_str().unwrap(),
            "--subdirs",
            "--seeds=998-1001",
            "--batch=3",
            "--steps=3",
            "--sigma_min=0.002",
            "--sigma_max=80",
            "--rho=7",
            "--S_churn=5",
            "--S_min=0.01",
            "--S_max=50",
            "--S_noise=1.003",
            "--class=4",
        ];
        args.extend_from_slice(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_edm"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = edm_style(&["--json"]);
    assert_eq!(first["sampled"], 4, "{first}");
    let paths = [
        "000000/000998.png",
        "000000/000999.png",
        "001000/001000.png",
        "001000/001001.png",
    ];
    let st = tmp.path().join("s.safetensors");
    edm(&[
        "sample",
        "--model",
        net.to_str().unwrap(),
        "--seeds",
        "998-1001",
        "--steps",
        "3",
        "--s-churn",
        "5",
        "--s-min",
        "0.01",
        "--s-max",
        "50",
        "--s-noise",
        "1.003",
        "--class",
        "4",
        "--batch",
        "4",
        "--output",
        st.to_str().unwrap(),
    ]);
    let samples = read_safetensors(&st).unwrap()["samples"].data.clone();
    let samples = &samples;
    let per = 3 * 16 * 16;
    for (i, p) in paths.iter().enumerate() {
        let img = image::open(outdir.join(p)).unwrap().to_rgb8();
        let want: Vec<u8> = (0..16 * 16)
            .flat_map(|px| {
                (0..3).map(move |c| {
                    (samples[i * per + c * 256 + px] * 127.5 + 128.0).clamp(0.0, 255.0) as u8
                })
            })
            .collect();
        // Batches of 3 (the PNGs) and 4 (the safetensors) order the GEMM sums differently: the
        // floats differ in the last bits, which can move a pixel across a rounding edge.
        let got = img.into_raw();
        let off = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .max()
            .unwrap();
        assert!(
            worst <= 1 && off * 100 <= want.len(),
            "{p}: {off} values off, by up to {worst}"
        );
    }
    let kept = std::fs::read(outdir.join(paths[0])).unwrap();
    std::fs::remove_file(outdir.join(paths[2])).unwrap();
    let second = edm_style(&["--json"]);
    assert_eq!(
        (second["sampled"].as_u64(), second["skipped"].as_u64()),
        (Some(1), Some(3))
    );
    assert!(outdir.join(paths[2]).is_file());
    assert_eq!(std::fs::read(outdir.join(paths[0])).unwrap(), kept);
}

/// `--help` lists the closed choices, `--version` and shell completions work.
#[test]
fn help_lists_choices_and_version_and_completions_work() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_edm"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let help = run(&["sample", "--help"]);
    for choice in [
        "heun",
        "euler",
        "stochastic",
        "onestep",
        "--S_churn",
        "--network",
    ] {
        assert!(help.contains(choice), "{choice} missing from:\n{help}");
    }
    assert!(run(&["--version"]).starts_with("edm "));
    assert!(run(&["completions", "bash"]).contains("sample"));
    let bad = Command::new(env!("CARGO_BIN_EXE_edm"))
        .args([
            "sample",
            "--network",
            "x",
            "--outdir",
            "y",
            "--solver",
            "rk4",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("possible values"));
}

#[test]
fn bad_inputs_fail_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_edm"))
        .args([
            "denoise",
            "--model",
            "/nonexistent",
            "--input",
            "x",
            "--output",
            "y",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent"));
}

/// Issue 21: `edm denoise --output MODEL_DIR/model.safetensors` replaced a 4 MB model with 12 KB of
/// output, and `edm sample --png` into the model folder wrote PNGs among the weights. Both are
/// refused before any work, and the model stays byte-identical.
#[test]
fn outputs_over_the_model_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("edm_ddpmpp_tiny").join(f), model.join(f)).unwrap();
    }
    let weights = model.join("model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let input = fixture("edm_ddpmpp_tiny").join("expected.safetensors");
    let (samples, png) = (tmp.path().join("s.safetensors"), model.join("png"));
    let runs: [Vec<&str>; 3] = [
        vec![
            "denoise",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            weights.to_str().unwrap(),
        ],
        vec![
            "sample",
            "--model",
            model.to_str().unwrap(),
            "--steps",
            "2",
            "--seeds",
            "0",
            "--output",
            weights.to_str().unwrap(),
        ],
        vec![
            "sample",
            "--model",
            model.to_str().unwrap(),
            "--steps",
            "2",
            "--seeds",
            "0",
            "--output",
            samples.to_str().unwrap(),
            "--png",
            png.to_str().unwrap(),
        ],
    ];
    for args in runs {
        let out = Command::new(env!("CARGO_BIN_EXE_edm"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains("model"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    assert!(!model.join("png").exists());
}

/// A Fashion-MNIST folder of `n` tiny 28×28 images in idx format (uncompressed: the reader detects
/// gzip by its magic, not by the `.gz` name).
fn tiny_fashion_mnist(dir: &Path, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let mut images = vec![0, 0, 8, 3];
    for d in [n, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    images.extend((0..n * 784).map(|i| (i % 251) as u8));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend(n.to_be_bytes());
    labels.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), images).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), labels).unwrap();
}

/// Issue 21: `edm train --kimg 0` printed "EMA model in …" and wrote nothing. Now a typed error; the
/// same data with a positive duration trains and names a model that exists (so the refusal is about
/// the duration, not the data).
#[test]
fn train_with_zero_kimg_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fmnist");
    tiny_fashion_mnist(&data, 4);
    let train = |run: &str, kimg: &str| {
        Command::new(env!("CARGO_BIN_EXE_edm"))
            .args(["train", "--data", data.to_str().unwrap(), "--out"])
            .arg(tmp.path().join(run))
            .args(["--kimg", kimg, "--batch", "2", "--arch", "tiny"])
            .output()
            .unwrap()
    };
    let out = train("zero", "0");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("0 training steps"), "{err}");
    assert!(!err.contains("EMA model in"), "{err}");
    let out = train("one", "0.002");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("EMA model in"), "{err}");
    assert!(tmp
        .path()
        .join("one/checkpoint/model.safetensors")
        .is_file());
}

/// An EDM train.py command line runs and writes EDM's run folder (stats.jsonl, log.txt, a
/// snapshot); resuming it with another learning rate or batch is refused naming both options and
/// leaves the checkpoint alone; `--force` continues with the saved values; a longer `--duration`
/// is a plain resume.
#[test]
fn train_takes_edm_options_and_refuses_a_changed_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fmnist");
    tiny_fashion_mnist(&data, 4);
    let outdir = tmp.path().join("run");
    // The run's options; an `extra` flag of the same name replaces the base one.
    let train = |extra: &[&str]| {
        let base = [
            "--arch=tiny",
            "--precond=edm",
            "--batch=2",
            "--lr=0.001",
            "--ema=0.0005",
            "--dropout=0.1",
            "--augment=0",
            "--tick=0.002",
            "--snap=1",
            "--seed=1",
        ];
        let name = |a: &str| a.split('=').next().unwrap().to_string();
        let kept = base
            .iter()
            .filter(|b| !extra.iter().any(|e| name(e) == name(b)));
        Command::new(env!("CARGO_BIN_EXE_edm"))
            .args(["train", "--outdir"])
            .arg(&outdir)
            .arg("--data")
            .arg(&data)
            .args(kept)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = train(&["--duration=0.000004", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["step"], 2, "{summary}");
    let stats = std::fs::read_to_string(outdir.join("stats.jsonl")).unwrap();
    let ticks: Vec<serde_json::Value> = stats
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ticks.len(), 2, "{stats}");
    assert_eq!(
        (ticks[1]["tick"].as_u64(), ticks[1]["step"].as_u64()),
        (Some(2), Some(2))
    );
    let log = std::fs::read_to_string(outdir.join("log.txt")).unwrap();
    assert!(
        log.contains("training options") && log.contains("tick 2"),
        "{log}"
    );
    // TensorBoard's copy: a loss per step and a record per tick.
    let events = formats::tfevents::event_files(&outdir).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = formats::read_events(&events[0]).unwrap();
    let steps = |tag: &str| ev.scalars(tag).iter().map(|s| s.0).collect::<Vec<_>>();
    assert_eq!(
        (steps("Loss/step"), steps("Loss/tick_mean").len()),
        (vec![1, 2], 2)
    );
    assert!(outdir
        .join("network-snapshot-000000/model.safetensors")
        .is_file());
    let state = outdir.join("checkpoint/training_state.json");
    let before = std::fs::read(&state).unwrap();

    let out = train(&["--duration=0.000008", "--lr=0.002", "--batch=4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(err.contains("lr (saved 0.001, given 0.002)"), "{err}");
    assert!(err.contains("batch_size (saved 2, given 4)"), "{err}");
    assert_eq!(std::fs::read(&state).unwrap(), before);

    let out = train(&["--duration=0.000006", "--lr=0.002", "--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("--force") && err.contains("lr"), "{err}");
    let out = train(&["--kimg=0.008"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resumed from"), "{err}");
    let log = std::fs::read_to_string(outdir.join("log.txt")).unwrap();
    assert!(log.matches("training options").count() == 3, "{log}");
}
