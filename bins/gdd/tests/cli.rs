//! Runs the `gdd` binary on edm-core's tiny fixture network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/edm-core/tests/fixtures")
        .join(name)
}

fn gdd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gdd"))
        .args(args)
        .output()
        .expect("gdd runs")
}

/// A one-step grid is written as a PNG of the grid's size; the same command with `--out` over the
/// network's weights (issue 21: it wrote a PNG over them) is refused and the weights stay intact.
#[test]
fn sample_writes_a_grid_and_never_over_the_network() {
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("net");
    std::fs::create_dir(&net).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("edm_ddpmpp_tiny").join(f), net.join(f)).unwrap();
    }
    let grid = tmp.path().join("grid.png");
    let out = gdd(&[
        "sample",
        "--net",
        net.to_str().unwrap(),
        "--num",
        "4",
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (w, h) = image::image_dimensions(&grid).unwrap();
    assert!(w >= 2 * 16 && h >= 2 * 16 && w == h, "{w}x{h}");

    let weights = net.join("model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let out = gdd(&[
        "sample",
        "--net",
        net.to_str().unwrap(),
        "--num",
        "4",
        "--out",
        weights.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(err.contains("model.safetensors"), "{err}");
    assert_eq!(std::fs::read(&weights).unwrap(), before);
}

/// A run folder inside the teacher's folder would mix checkpoints into the network (issue 21): refused
/// before anything is loaded or created.
#[test]
fn train_refuses_a_run_folder_inside_its_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = fixture("edm_ddpmpp_tiny");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for out in [teacher.join("run"), data.join("run")] {
        let o = gdd(&[
            "train",
            "--teacher",
            teacher.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--kimg",
            "1",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "accepted {}: {err}", out.display());
        assert!(err.contains("inside"), "{err}");
        assert!(!out.exists());
    }
}
