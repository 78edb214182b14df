//! Runs the example on real images (the 20 CIFAR-10 and 20 CIFAR-100 test images stored in fid's
//! Inception fixture) with a random-weight Inception (the 87 MB network is an asset CI may lack),
//! and checks the numbers: FID(A, A) ≈ 0, FID(A, B) > 0 and symmetric, and scoring against a saved
//! `.npz` gives the same number as scoring against the folder. With the real network cached, a
//! second test checks the real FID's range.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Images per folder: enough for a well-defined (if singular) covariance, few enough for 2 cores.
const PER_FOLDER: usize = 4;

/// Writes images `range` of the fixture's `images_u8` [40, 3, 32, 32] as PNGs into `dir`.
fn write_folder(dir: &Path, range: std::ops::Range<usize>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/fid/tests/fixtures/inception/expected.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("images_u8").unwrap();
    assert_eq!(t.shape(), [40, 3, 32, 32]);
    let data = t.data();
    std::fs::create_dir_all(dir).unwrap();
    for i in range {
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let px = |c: usize| data[((i * 3 + c) * 32 + y as usize) * 32 + x as usize];
            image::Rgb([px(0), px(1), px(2)])
        });
        img.save(dir.join(format!("{i:02}.png"))).unwrap();
    }
}

fn fid(args: &[&Path], extra: &[&str]) -> f64 {
    let out = Command::new(env!("CARGO_BIN_EXE_fid-folders"))
        .args(args)
        .args(extra)
        .output()
        .expect("example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("FID "))
        .unwrap_or_else(|| panic!("no FID line in {stdout}"))
        .parse()
        .unwrap()
}

fn folders() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("cifar10"), tmp.path().join("cifar100"));
    write_folder(&a, 0..PER_FOLDER);
    write_folder(&b, 20..20 + PER_FOLDER);
    (tmp, a, b)
}

#[test]
fn fid_of_folders_and_of_saved_statistics_with_random_inception() {
    let (tmp, a, b) = folders();
    let random = ["--random-inception", "7"];
    let stats_b = tmp.path().join("b.npz");

    let ab = fid(
        &[&b, &a],
        &[&random[..], &["--save-stats", stats_b.to_str().unwrap()]].concat(),
    );
    assert!(stats_b.is_file());
    let a_vs_saved_b = fid(&[&a, &stats_b], &random);
    let aa = fid(&[&a, &a], &random);

    println!("FID(B, A) {ab}, FID(A, stats of B) {a_vs_saved_b}, FID(A, A) {aa}");
    assert!(ab.is_finite() && ab > 0.0, "{ab}");
    // The Fréchet distance is symmetric, and the .npz holds exactly the folder's statistics.
    assert!(
        (ab - a_vs_saved_b).abs() <= 1e-6 * ab,
        "{ab} vs {a_vs_saved_b}"
    );
    // A folder against itself: zero up to the matrix square root's rounding.
    assert!(aa.abs() <= 1e-3 * ab, "FID(A, A) = {aa}, FID(A, B) = {ab}");
}

#[test]
fn real_inception_when_cached() {
    let Some(net) = assets::cached(fid::INCEPTION_ASSET) else {
        println!(
            "skipped: asset {0} not in cache, run `cargo run --release -p assets-cli -- fetch {0}`",
            fid::INCEPTION_ASSET
        );
        return;
    };
    let (_tmp, a, b) = folders();
    let inception = ["--inception", net.to_str().unwrap()];
    let ab = fid(&[&a, &b], &inception);
    let aa = fid(&[&a, &a], &inception);
    println!("real Inception: FID(A, B) {ab}, FID(A, A) {aa}");
    // 4 CIFAR-10 vs 4 CIFAR-100 images: a large distance (small sets inflate FID), far above the
    // self-distance.
    assert!(ab > 50.0 && ab < 1000.0, "{ab}");
    assert!(aa.abs() <= 1e-3 * ab, "{aa}");
}
