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
