//! End-to-end checks of the `fid` binary.

use std::path::Path;
use std::process::Command;

use fid::RefStats;

fn fid_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fid"));
    c.env("RUST_BACKTRACE", "0");
    c
}

#[test]
fn frechet_prints_the_distance() {
    let dir = tempfile::tempdir().unwrap();
    let a = RefStats {
        mu: vec![0.0, 0.0],
        sigma: vec![1.0, 0.0, 0.0, 1.0],
    };
    let mut b = a.clone();
    b.mu = vec![3.0, 4.0];
    a.save_npz(dir.path().join("a.npz")).unwrap();
    b.save_npz(dir.path().join("b.npz")).unwrap();
    let out = fid_bin()
        .args(["frechet", "a.npz", "b.npz"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!((d - 25.0).abs() < 1e-9, "{d}");
    // --json: the same number in one JSON object on stdout.
    let out = fid_bin()
        .args(["frechet", "a.npz", "b.npz", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!((v["frechet"].as_f64().unwrap() - 25.0).abs() < 1e-9, "{v}");
    assert_eq!(v["a"], "a.npz");
}

/// `--version`, shell completions, and a help text on every flag of `calc`.
#[test]
fn version_completions_and_help() {
    let run = |args: &[&str]| {
        let out = fid_bin().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run(&["--version"]).starts_with("fid "));
    assert!(run(&["completions", "zsh"]).contains("frechet"));
    let help = run(&["calc", "-h"]);
    for flag in ["--images", "--ref", "--num", "--seed", "--json"] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap();
        assert!(
            line.trim().len() > flag.len() + 8,
            "{flag} has no help: {line}"
        );
    }
}

#[test]
fn features_and_calc_follow_edm_rules() {
    let (Some(net), Some(cifar)) = (
        assets::cached(fid::INCEPTION_ASSET),
        assets::cached("foolbox-cifar"),
    ) else {
        println!("skipped: assets inception-2015-12-05 / foolbox-cifar not in cache, run `cargo run --release -p assets-cli -- fetch <name>`");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for name in [
        "cifar100_00_49.png",
        "cifar100_01_33.png",
        "cifar100_02_72.png",
    ] {
        std::fs::copy(cifar.join(name), imgs.join(name)).unwrap();
    }
    let out_st = dir.path().join("f.safetensors");
    let out = fid_bin()
        .arg("--inception")
        .arg(&net)
        .args(["features", "--images"])
        .arg(&imgs)
        .arg("--output")
        .arg(&out_st)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("images/s"));
    let bytes = std::fs::read(&out_st).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("pool3").unwrap();
    assert_eq!(t.shape(), &[3, 2048]);
    // Rows in sorted file order: they match PyTorch's features of the first three fixture images.
    let fx = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../crates/fid/tests/fixtures/inception/expected.safetensors"),
    )
    .unwrap();
    let fx = safetensors::SafeTensors::deserialize(&fx).unwrap();
    let want = fx.tensor("pool3").unwrap();
    let f = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let (got, want) = (f(t.data()), f(&want.data()[..3 * 2048 * 4]));
    for i in 0..3 {
        let (g, w) = (
            &got[i * 2048..(i + 1) * 2048],
            &want[i * 2048..(i + 1) * 2048],
        );
        let num: f32 = g.iter().zip(w).map(|(a, b)| (a - b).powi(2)).sum();
        let den: f32 = w.iter().map(|b| b * b).sum();
        assert!((num / den).sqrt() < 1e-4, "row {i}");
    }

    // calc: fewer images than --num (default 50,000) is an error, as in EDM.
    let r = dir.path().join("r.npz");
    RefStats {
        mu: vec![0.0; 2048],
        sigma: vec![0.0; 2048 * 2048],
    }
    .save_npz(&r)
    .unwrap();
    let out = fid_bin()
        .arg("--inception")
        .arg(&net)
        .args(["calc", "--images"])
        .arg(&imgs)
        .arg("--ref")
        .arg(&r)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("need at least 50000 images") && err.contains("found 3"),
        "{err}"
    );
}

/// Rows of the single tensor `pool3` that `fid features` wrote.
fn pool3(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("pool3").unwrap();
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `fid eval` equals the crate's metric functions on the features `fid features` writes: FID against
/// the real images' statistics, the Inception Score through a supplied output layer, precision/
/// recall on pool3 (labelled as such) or on supplied features; a metric without its inputs is
/// named in the notes, and nothing to compute or too few images are errors.
#[test]
fn eval_reports_fid_is_and_precision_recall() {
    let (Some(net), Some(cifar)) = (
        assets::cached(fid::INCEPTION_ASSET),
        assets::cached("foolbox-cifar"),
    ) else {
        println!("skipped: assets inception-2015-12-05 / foolbox-cifar not in cache, run `cargo run --release -p assets-cli -- fetch <name>`");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (gen, real) = (dir.path().join("gen"), dir.path().join("real"));
    for (d, prefix) in [(&gen, "cifar10_0"), (&real, "cifar100_0")] {
        std::fs::create_dir(d).unwrap();
        for i in 0..8 {
            let name = format!("{prefix}{i}_");
            let f = std::fs::read_dir(&cifar)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .find(|n| n.starts_with(&name))
                .unwrap();
            std::fs::copy(cifar.join(&f), d.join(&f)).unwrap();
        }
    }
    let run = |args: &[&str]| {
        fid_bin()
            .arg("--inception")
            .arg(&net)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let json = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    for (d, f) in [("gen", "fg.safetensors"), ("real", "fr.safetensors")] {
        let out = run(&["features", "--images", d, "--output", f]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (fg, fr) = (
        pool3(&dir.path().join("fg.safetensors")),
        pool3(&dir.path().join("fr.safetensors")),
    );
    // A seeded random output layer [1008, 2048].
    let mut s = 12345u64;
    let w: Vec<f32> = (0..1008 * 2048)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05
        })
        .collect();
    let wb: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1008, 2048], &wb)
        .unwrap();
    std::fs::write(
        dir.path().join("w.safetensors"),
        safetensors::serialize([("output.weight", view)], None).unwrap(),
    )
    .unwrap();

    let want_fid = {
        let stats = |rows: &[f32]| {
            let mut s = fid::FeatureStats::new(2048);
            s.update(rows).unwrap();
            s.finalize().unwrap()
        };
        fid::frechet_distance(&stats(&fg), &stats(&fr)).unwrap()
    };
    let logits = fid::inception_score::logits_from_pool3(&fg, &w, 2048).unwrap();
    let (is_mean, is_std) = fid::inception_score::inception_score(&logits, 1008, 2).unwrap();
    let (p, r) = fid::precision_recall::precision_recall(&fr, &fg, 2048, 3).unwrap();

    let v = json(&[
        "eval",
        "--images",
        "gen",
        "--real",
        "real",
        "--num",
        "8",
        "--real-num",
        "8",
        "--output-layer",
        "w.safetensors",
        "--is-splits",
        "2",
        "--json",
    ]);
    let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * b.abs().max(1.0);
    assert!(
        close(v["fid"].as_f64().unwrap(), want_fid, 1e-6),
        "{v} vs {want_fid}"
    );
    assert_eq!(v["fid_against"], "real images");
    assert!(
        close(
            v["inception_score"]["mean"].as_f64().unwrap(),
            is_mean,
            1e-9
        ),
        "{v}"
    );
    assert!(
        close(v["inception_score"]["std"].as_f64().unwrap(), is_std, 1e-9),
        "{v}"
    );
    let pr = &v["precision_recall"];
    assert_eq!(
        (pr["precision"].as_f64(), pr["recall"].as_f64()),
        (Some(p), Some(r)),
        "{v}"
    );
    assert_eq!(pr["features"], "inception-pool3");
    assert!(v["notes"].to_string().contains("VGG16"), "{v}");

    let v = json(&[
        "eval",
        "--images",
        "gen",
        "--num",
        "8",
        "--pr-real",
        "fr.safetensors",
        "--pr-gen",
        "fg.safetensors",
        "--json",
    ]);
    assert!(v["fid"].is_null() && v["inception_score"].is_null(), "{v}");
    assert_eq!(v["precision_recall"]["precision"].as_f64(), Some(p));
    assert!(v["precision_recall"]["features"]
        .as_str()
        .unwrap()
        .starts_with("supplied"));
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("FID") && notes.contains("output layer"),
        "{notes}"
    );

    let out = run(&["eval", "--images", "gen", "--num", "8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nothing to compute"),
        "{err}"
    );
    let out = run(&["eval", "--images", "gen", "--real", "real", "--num", "9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains('9'), "{err}");
}
