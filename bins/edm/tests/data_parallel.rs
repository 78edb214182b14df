//! `edm train --devices 2` (two local peers, crate `parallel`) against `--devices 1` on the same
//! global batch, through the built binary.

use burn::backend::Flex;
use parallel::testing::max_abs_diff;
use std::path::Path;
use std::process::Command;

/// A Fashion-MNIST folder of `n` 28x28 images in idx format (uncompressed; the reader detects gzip
/// by its magic), with varied pixels so that the loss depends on which images a step draws.
fn fashion_mnist(dir: &Path, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let mut images = vec![0, 0, 8, 3];
    for d in [n, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    images.extend((0..n as usize * 784).map(|i| ((i * 7919) % 253) as u8));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend(n.to_be_bytes());
    labels.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), images).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), labels).unwrap();
}

fn flat(dir: &Path) -> Vec<f32> {
    edm_core::load_precond::<Flex>(dir, &Default::default())
        .unwrap()
        .flat_parameters()
}

/// 3 steps of a global batch of 4 (`--arch tiny`, lr ramp off): 2 peers end with the EMA model
/// within 1e-4 of one device's and the last loss within 1e-5 relative, rank 0 alone logging; a run
/// on a batch of 2 (what one peer would do without the all-reduce) ends farther away than that.
#[test]
fn two_devices_match_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fmnist");
    fashion_mnist(&data, 16);
    let train = |run: &str, devices: &str, batch: &str, kimg: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_edm"))
            .args(["train", "--data", data.to_str().unwrap(), "--outdir"])
            .arg(tmp.path().join(run))
            .args(["--arch", "tiny", "--batch", batch, "--kimg", kimg])
            .args(["--lr-rampup-kimg", "0", "--devices", devices, "--json"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["step"].as_u64(), Some(3), "{v}");
        (v["last_loss"].as_f64().unwrap(), err)
    };
    let (l2, err2) = train("two", "2", "4", "0.012");
    let (l1, _) = train("one", "1", "4", "0.012");
    let (lh, _) = train("half", "1", "2", "0.006");
    assert!(err2.contains("data-parallel over 2 devices"), "{err2}");
    let log = std::fs::read_to_string(tmp.path().join("two/log.txt")).unwrap();
    assert_eq!(log.matches("training options").count(), 1, "{log}");
    let ck = |run: &str| flat(&tmp.path().join(run).join("checkpoint"));
    let (two, one, half) = (ck("two"), ck("one"), ck("half"));
    let (d, dh) = (max_abs_diff(&two, &one), max_abs_diff(&half, &one));
    let rel = (l2 - l1).abs() / l1.abs();
    eprintln!(
        "edm train --devices 2 vs 1, 3 steps: EMA max |diff| {d:e}, last loss {l2} vs {l1} \
         (rel {rel:e}); batch 2 alone: {dh:e}, loss {lh}"
    );
    assert!(d <= 1e-4 && rel <= 1e-5, "{d:e} {rel:e}");
    assert!(dh > 1e-4, "control too close: {dh:e}");
}
