//! Runs the example on edm-core's tiny DDPM++ fixture and checks what it froze, against the
//! fixture's own parameter names, and that the backward pass left every frozen parameter alone.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/edm-core/tests/fixtures/edm_ddpmpp_tiny")
}

fn run(extra: &[&str], report: &Path) -> (String, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_custom-freeze"))
        .arg(fixture())
        .args(extra)
        .arg("--report")
        .arg(report)
        .output()
        .expect("example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    (stdout, json)
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v["frozen_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn freezes_the_encoder_and_no_frozen_parameter_gets_a_gradient() {
    let tmp = tempfile::tempdir().unwrap();
    let (stdout, all) = run(&[], &tmp.path().join("all.json"));
    println!("{stdout}");
    // The paper's four levels and our row are printed.
    assert!(stdout.contains("| 1 | conv, proj |"), "{stdout}");
    assert!(stdout.contains("| ours | encoder |"), "{stdout}");

    let frozen = names(&all);
    assert!(!frozen.is_empty());
    assert!(
        frozen.iter().all(|n| n.starts_with("model.enc.")),
        "{frozen:?}"
    );
    assert!(frozen.contains(&"model.enc.16x16_block0.conv0.weight".to_string()));
    assert!(frozen.contains(&"model.enc.16x16_block0.norm0.weight".to_string()));
    assert_eq!(all["frozen_with_gradient"], 0);
    let trainable = all["trainable_tensors"].as_u64().unwrap();
    let with_grad = all["trainable_with_gradient"].as_u64().unwrap();
    // Everything the one-step map uses gets a gradient; the only unused tensor of this network
    // is the augmentation embedding (augment_dim 9, no bias), which GDD never feeds.
    assert_eq!(with_grad, trainable - 1, "{stdout}");
    assert!(stdout.contains("map_augment"), "{stdout}");
    assert_eq!(
        all["frozen_params"].as_u64().unwrap() + all["trainable_params"].as_u64().unwrap(),
        all["total_params"].as_u64().unwrap()
    );

    // Keeping the norms trainable removes exactly the encoder's GroupNorm tensors.
    let (_, kept) = run(&["--keep-norms"], &tmp.path().join("kept.json"));
    let kept_names = names(&kept);
    let norms: Vec<&String> = frozen
        .iter()
        .filter(|n| n.rsplit('.').nth(1).unwrap().starts_with("norm"))
        .collect();
    assert!(!norms.is_empty());
    assert_eq!(kept_names.len() + norms.len(), frozen.len());
    assert!(kept_names.iter().all(|n| !norms.contains(&n)));
    assert_eq!(kept["frozen_with_gradient"], 0);

    // On top of GDD-I level 1, decoder convolutions are frozen too.
    let (_, with_l1) = run(&["--gdd-level", "1"], &tmp.path().join("l1.json"));
    let l1 = names(&with_l1);
    assert!(l1.len() > frozen.len());
    assert!(l1
        .iter()
        .any(|n| n.starts_with("model.dec.") && n.contains("conv")));
    assert_eq!(with_l1["frozen_with_gradient"], 0);
}
