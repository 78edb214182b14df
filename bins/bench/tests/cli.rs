//! The benchmark binary end to end on the CPU: `parity` passes on the golden fixtures, and the GPT-2 and
//! Inception rows print a well-formed table row (tiny shapes; speed is not asserted here).

use std::process::Command;

fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_icl-gdd-bench"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(args)
        .output()
        .expect("run icl-gdd-bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn parity_passes_on_the_cpu() {
    let (ok, stdout, stderr) = bench(&["parity", "--fixtures", "crates"]);
    println!("{stdout}\n{stderr}");
    assert!(ok, "parity failed");
    let passed = stdout.lines().filter(|l| l.ends_with("| yes |")).count();
    // 3 EDM nets × 3 checks, 4 LMs × 2, the resize; pool3 and EfficientNet when the assets are cached.
    assert!(passed >= 18, "{passed} checks passed");
    assert!(!stdout.contains("**NO**"));
}

#[test]
fn parity_reports_a_missing_fixture_folder() {
    let (ok, _, stderr) = bench(&["parity", "--fixtures", "no/such/folder"]);
    assert!(!ok);
    assert!(stderr.contains("no/such/folder"), "{stderr}");
}

#[test]
fn gpt2_and_inception_rows() {
    for args in [
        &[
            "--runs", "1", "--warmup", "0", "gpt2", "--batch", "1", "--tokens", "8",
        ][..],
        &[
            "--runs",
            "1",
            "--warmup",
            "0",
            "gpt2",
            "--batch",
            "1",
            "--tokens",
            "8",
            "--precision",
            "bf16",
            "--cache-residuals",
        ],
        &["--runs", "1", "--warmup", "0", "inception", "--batch", "1"],
    ] {
        let (ok, stdout, stderr) = bench(args);
        assert!(ok, "{args:?}: {stderr}");
        let row = stdout.lines().last().unwrap_or_default();
        println!("{row}");
        assert!(
            row.ends_with("tok/s |") || row.ends_with("img/s |"),
            "{row}"
        );
    }
}
