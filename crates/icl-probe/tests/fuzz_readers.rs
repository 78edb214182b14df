//! Issue #20's fuzz suite for the model readers: GGUF headers, metadata and tensor infos (random,
//! mutated, and with hostile values in every size key) and Hugging Face `config.json` (any value in
//! any size key). Everything is a typed result, never a panic, abort or hang; an accepted config has
//! sizes a forward pass can use. The named regressions live in `hostile_inputs.rs`.
//!
//! Case counts: 300 per property (`PROPTEST_CASES` raises them); about a second in release.

use icl_probe::gguf::GgufFile;
use icl_probe::load_config;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// A metadata-only llama GGUF with these u32 keys (plus the architecture string).
fn gguf(kv: &[(&str, u32)], tensors: u64) -> Vec<u8> {
    let mut b = vec![];
    b.extend(0x4655_4747u32.to_le_bytes());
    b.extend(3u32.to_le_bytes());
    b.extend(tensors.to_le_bytes());
    b.extend((kv.len() as u64 + 1).to_le_bytes());
    let arch = "general.architecture";
    b.extend((arch.len() as u64).to_le_bytes());
    b.extend(arch.as_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(5u64.to_le_bytes());
    b.extend(b"llama");
    for (k, v) in kv {
        b.extend((k.len() as u64).to_le_bytes());
        b.extend(k.as_bytes());
        b.extend(4u32.to_le_bytes());
        b.extend(v.to_le_bytes());
    }
    b
}

const KEYS: [&str; 9] = [
    "llama.embedding_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.block_count",
    "llama.feed_forward_length",
    "llama.vocab_size",
    "llama.context_length",
    "llama.rope.dimension_count",
    "llama.attention.key_length",
];

fn size() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        1u32..130,
        Just(u32::MAX),
        Just(1 << 20),
        Just(3),
        Just(64)
    ]
}

fn check_accepted(c: &icl_probe::ModelConfig) -> Result<(), TestCaseError> {
    prop_assert!(c.n_heads > 0 && c.n_kv_heads > 0 && c.d_head > 0 && c.n_layers > 0);
    prop_assert!(c.n_heads.is_multiple_of(c.n_kv_heads));
    if let Some(r) = &c.rope {
        prop_assert!(r.rotary_dim > 0 && r.rotary_dim <= c.d_head && r.rotary_dim % 2 == 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Hostile values in every size key of a GGUF: a config error or a usable config.
    #[test]
    fn fuzz_gguf_sizes(values in proptest::collection::vec(size(), KEYS.len())) {
        let kv: Vec<(&str, u32)> = KEYS.iter().copied().zip(values).collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, gguf(&kv, 0)).unwrap();
        if let Ok(c) = load_config(p.to_str().unwrap()) {
            check_accepted(&c)?;
        }
    }

    /// Random bytes and mutations (flip, insert, delete, truncate) of a valid header, tensor count
    /// included: the parser returns, whatever the counts claim.
    #[test]
    fn fuzz_gguf_bytes(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..8),
                       random in proptest::collection::vec(any::<u8>(), 0..256),
                       tensors in prop::sample::select(vec![0u64, 1, 1 << 40, u64::MAX])) {
        let _ = GgufFile::from_bytes(random);
        let kv: Vec<(&str, u32)> = KEYS.iter().map(|k| (*k, 64)).collect();
        let mut b = gguf(&kv, tensors);
        for (pos, byte, kind) in edits {
            if b.is_empty() { break; }
            let i = pos % b.len();
            match kind {
                0 => b[i] = byte,
                1 => b.insert(i, byte),
                2 => { b.remove(i); }
                _ => b.truncate(i),
            }
        }
        if let Ok(g) = GgufFile::from_bytes(b) {
            let _ = icl_probe::arch::llama::config_from_gguf(&g);
        }
    }

    /// Any value in any size key of an HF config.json (numbers, 0, negatives, huge, strings,
    /// null): a config error or a usable config.
    #[test]
    fn fuzz_hf_config(edits in proptest::collection::vec((prop::sample::select(vec![
        "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
        "num_hidden_layers", "intermediate_size", "vocab_size", "max_position_embeddings",
        "rms_norm_eps", "partial_rotary_factor", "rope_theta"]),
        prop_oneof![(-2i64..200).prop_map(serde_json::Value::from),
                    Just(serde_json::Value::from(u64::MAX)), Just(serde_json::Value::from(1e300)),
                    Just(serde_json::Value::from("NaN")), Just(serde_json::Value::Null)]), 0..5)) {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama_tiny/config.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
        for (k, value) in edits { v[k] = value; }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
        if let Ok(c) = load_config(dir.path().to_str().unwrap()) {
            check_accepted(&c)?;
        }
    }
}
