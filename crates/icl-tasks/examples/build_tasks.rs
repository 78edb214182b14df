//! Builds every task from source folders and writes `<out>/<task>.jsonl`, printing split sizes.
//!
//! `cargo run --release -p icl-tasks --example build_tasks -- WORDNET_DIR FREEDICT_DIR COUNTRYINFO_DIR OUT_DIR [SEED]`

use std::path::PathBuf;

use icl_tasks::{Sources, TaskBuilder, TASKS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 {
        return Err(
            "usage: build_tasks WORDNET_DIR FREEDICT_DIR COUNTRYINFO_DIR OUT_DIR [SEED]".into(),
        );
    }
    let seed = a.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let mut b = TaskBuilder::new(Sources {
        wordnet: Some(PathBuf::from(&a[0])),
        freedict: Some(PathBuf::from(&a[1])),
        countryinfo: Some(PathBuf::from(&a[2])),
    });
    let out = PathBuf::from(&a[3]);
    std::fs::create_dir_all(&out)?;
    for t in TASKS {
        let set = b.build(t.name, seed)?;
        let (tr, dv, te) = set.counts();
        println!("{:16} train {tr:5} dev {dv:4} test {te:4}", t.name);
        set.write_jsonl(&out.join(format!("{}.jsonl", t.name)))?;
    }
    Ok(())
}
