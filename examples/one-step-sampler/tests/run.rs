//! Runs the example on edm-core's tiny DDPM++ fixture (16×16 RGB, 10 classes, random weights: an
//! undistilled network is the GDD generator at step 0) and checks the PNGs it writes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/edm-core/tests/fixtures/edm_ddpmpp_tiny")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_one-step-sampler"))
        .args(args)
        .output()
        .expect("example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

#[test]
fn writes_one_png_per_seed_and_a_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("samples");
    let stdout = run(&[
        fixture().to_str().unwrap(),
        "--seeds",
        "0-3",
        "--class",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    println!("{stdout}");
    assert!(stdout.contains("16x16"), "{stdout}");

    let mut images = Vec::new();
    for seed in 0..4 {
        let img = rgb(&out.join(format!("seed{seed:04}.png")));
        assert_eq!(img.dimensions(), (16, 16));
        // A real sample, not a constant frame: the pixel values spread out.
        let px: Vec<f64> = img.as_raw().iter().map(|&v| v as f64).collect();
        let mean = px.iter().sum::<f64>() / px.len() as f64;
        let std = (px.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / px.len() as f64).sqrt();
        assert!(std > 5.0, "seed {seed}: pixel std {std}");
        images.push(img);
    }
    // Different seeds, different images.
    assert_ne!(images[0], images[1]);
    // 4 images → a 2×2 grid whose cells are the single images.
    let grid = rgb(&out.join("grid.png"));
    assert_eq!(grid.dimensions(), (32, 32));
    for (i, img) in images.iter().enumerate() {
        let (gx, gy) = ((i % 2) as u32 * 16, (i / 2) as u32 * 16);
        for (x, y, p) in img.enumerate_pixels() {
            assert_eq!(
                grid.get_pixel(gx + x, gy + y),
                p,
                "grid cell {i} at ({x},{y})"
            );
        }
    }

    // An image depends only on its seed: seed 2 alone is seed 2 of the batch.
    let alone = tmp.path().join("alone");
    run(&[
        fixture().to_str().unwrap(),
        "--seeds",
        "2",
        "--class",
        "3",
        "--out",
        alone.to_str().unwrap(),
    ]);
    assert_eq!(rgb(&alone.join("seed0002.png")), images[2]);
}

#[test]
fn a_folder_without_a_network_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_one-step-sampler"))
        .args([
            tmp.path().to_str().unwrap(),
            "--out",
            tmp.path().join("o").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no config.json"), "{err}");
}
