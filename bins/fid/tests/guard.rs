//! `fid` refuses outputs that would overwrite its inputs (#21): `fid ref --dest ds.zip --data ds.zip`
//! replaced the dataset with its statistics.

use std::process::Command;

#[test]
fn an_output_over_an_input_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds.zip");
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    std::fs::write(&ds, b"PK\x05\x06 stands in for a dataset zip").unwrap();
    std::fs::write(imgs.join("a.png"), b"an image").unwrap();
    let before = std::fs::read(&ds).unwrap();
    // The real network when cached (so that, unguarded, the command would run to the end).
    let net = assets::cached(fid::INCEPTION_ASSET).unwrap_or_else(|| dir.path().join("none.pt"));
    let link = dir.path().join("stats.npz");
    std::os::unix::fs::symlink(&ds, &link).unwrap();
    for args in [
        vec!["ref", "--data", "ds.zip", "--dest", "ds.zip"],
        vec!["ref", "--data", "ds.zip", "--dest", "./stats.npz"],
        vec![
            "features",
            "--images",
            "imgs",
            "--output",
            "imgs/f.safetensors",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fid"))
            .arg("--inception")
            .arg(&net)
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(err.contains("refusing to write"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(&ds).unwrap(), before);
    assert!(!imgs.join("f.safetensors").exists());
}
