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
    for f in [
        "seed000000.png",
        "seed000001.png",
        "seed000002.png",
        "grid.png",
    ] {
        assert!(png.join(f).exists(), "{f}");
    }
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

/// `--batch 0` is refused with a message that names it, before any image is written (it used to
/// run with batch 1 without a word).
#[test]
fn sample_with_batch_zero_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("out.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_edm"))
        .args([
            "sample",
            "--model",
            fixture("edm_ddpmpp_tiny").to_str().unwrap(),
            "--seeds",
            "0-3",
            "--steps",
            "2",
            "--batch",
            "0",
            "--output",
            out_path.to_str().unwrap(),
        ])
        .output()
        .expect("edm runs");
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(101), "a typed error, not a panic");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--batch is 0"), "{err}");
    assert!(!out_path.exists());
}
