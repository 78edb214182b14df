//! The builders on the real sources from the asset cache (skipped when absent). The cache folder
//! is `$ICLGDD_CACHE` or `~/.cache/icl-gdd/assets` (the `assets` crate's layout).

use std::path::PathBuf;

use icl_tasks::{Sources, TaskBuilder, TASKS};

fn cache_root() -> PathBuf {
    match std::env::var_os("ICLGDD_CACHE").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cache/icl-gdd/assets"),
    }
}

#[test]
fn real_sources_give_at_least_100_test_items() {
    let root = cache_root();
    let mut sources = Sources::default();
    for (name, slot) in [
        ("wordnet-3.0", &mut sources.wordnet),
        ("freedict-eng-fra", &mut sources.freedict),
        ("countryinfo", &mut sources.countryinfo),
    ] {
        let p = root.join(name);
        if !p.exists() {
            println!("skipped: asset {name} not in cache, run `cargo run --release -p assets-cli -- fetch {name}`");
            return;
        }
        *slot = Some(p);
    }
    let mut b = TaskBuilder::new(sources);
    for spec in TASKS {
        let set = b.build(spec.name, 0).unwrap();
        let (tr, dv, te) = set.counts();
        println!("{:16} train {tr:5} dev {dv:4} test {te:4}", spec.name);
        let letters = spec.name.ends_with("_letter");
        if letters {
            assert_eq!(tr + dv + te, 50);
        } else {
            assert!(te >= 100, "{}: only {te} test items", spec.name);
            assert!(tr >= 50 && dv >= 20, "{}: train {tr} dev {dv}", spec.name);
        }
    }
}
