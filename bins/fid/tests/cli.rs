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
