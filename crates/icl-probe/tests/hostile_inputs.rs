//! Model files a careless or hostile user might hand to icl-probe (issue #20): absurd head counts
//! and rotary sizes, metadata nested until the stack breaks, counts larger than the file, paths
//! that are FIFOs or devices. Each must be a typed error naming what is wrong and where — never a
//! panic, an abort or a hang. The files are built here, a few hundred bytes each.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use icl_probe::gguf::{GgufError, GgufFile, MAX_ARRAY_DEPTH};
use icl_probe::{load_config, ModelConfig, ProbeError};

/// One metadata value for [`gguf`].
enum Meta {
    U32(u32),
    Str(&'static str),
}

/// A metadata-only GGUF (version 3, no tensors) with these key/value pairs.
fn gguf(kv: &[(&str, Meta)]) -> Vec<u8> {
    let mut b = vec![];
    b.extend(0x4655_4747u32.to_le_bytes());
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        b.extend((k.len() as u64).to_le_bytes());
        b.extend(k.as_bytes());
        match v {
            Meta::U32(x) => {
                b.extend(4u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            Meta::Str(s) => {
                b.extend(8u32.to_le_bytes());
                b.extend((s.len() as u64).to_le_bytes());
                b.extend(s.as_bytes());
            }
        }
    }
    b
}

/// A small, valid llama GGUF header with `key` set to `value` (or added).
fn llama_with(key: &str, value: u32) -> Vec<u8> {
    let mut kv: Vec<(&str, Meta)> = vec![
        ("general.architecture", Meta::Str("llama")),
        ("llama.embedding_length", Meta::U32(64)),
        ("llama.attention.head_count", Meta::U32(4)),
        ("llama.attention.head_count_kv", Meta::U32(2)),
        ("llama.block_count", Meta::U32(2)),
        ("llama.feed_forward_length", Meta::U32(128)),
        ("llama.vocab_size", Meta::U32(100)),
        ("llama.context_length", Meta::U32(256)),
    ];
    match kv.iter_mut().find(|(k, _)| *k == key) {
        Some(e) => e.1 = Meta::U32(value),
        None => kv.push((key, Meta::U32(value))),
    }
    gguf(&kv)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `load_config` on a path, the config error's (origin, message) expected.
fn config_error(path: &Path) -> (String, String) {
    match load_config(path.to_str().unwrap()) {
        Err(ProbeError::Config { origin, msg }) => (origin, msg),
        other => panic!("{}: expected a config error, got {other:?}", path.display()),
    }
}

#[test]
fn the_valid_tiny_gguf_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "ok.gguf", &llama_with("llama.block_count", 2));
    let c = load_config(p.to_str().unwrap()).unwrap();
    assert_eq!((c.n_heads, c.n_kv_heads, c.d_head), (4, 2, 16));
    assert_eq!(c.rope.unwrap().rotary_dim, 16);
}

/// Zero heads used to divide by zero (`d_model / n_heads`) before anything was validated.
#[test]
fn gguf_zero_or_mismatched_heads_and_sizes_are_config_errors_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value, expect) in [
        (
            "llama.attention.head_count",
            0,
            "`llama.attention.head_count` is 0",
        ),
        (
            "llama.attention.head_count",
            3,
            "not a multiple of `llama.attention.head_count` 3",
        ),
        (
            "llama.attention.head_count_kv",
            0,
            "n_kv_heads (key/value heads) is 0",
        ),
        (
            "llama.attention.head_count_kv",
            3,
            "not a multiple of n_kv_heads 3",
        ),
        ("llama.block_count", 0, "n_layers (layers) is 0"),
        ("llama.vocab_size", 0, "vocab_size (vocabulary size) is 0"),
        ("llama.embedding_length", 0, "d_model (model width) is 0"),
        ("llama.feed_forward_length", 0, "d_mlp (MLP width) is 0"),
        ("llama.attention.key_length", 0, "d_head (head size) is 0"),
    ] {
        let p = write(dir.path(), "m.gguf", &llama_with(key, value));
        let (origin, msg) = config_error(&p);
        assert!(msg.contains(expect), "{key}={value}: {msg}");
        assert!(origin.contains(&p.display().to_string()), "{origin}");
    }
}

/// Rotary dimension 0 built an empty frequency table and panicked in the forward pass.
#[test]
fn gguf_bad_rope_dimension_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    for dim in [0, 3, 18] {
        let p = write(
            dir.path(),
            "m.gguf",
            &llama_with("llama.rope.dimension_count", dim),
        );
        let (_, msg) = config_error(&p);
        assert!(
            msg.contains(&format!(
                "rotary dim {dim} must be even, > 0 and ≤ head dim 16"
            )),
            "{dim}: {msg}"
        );
    }
}

/// The same checks on Hugging Face configs, for every family that derives the head size.
#[test]
fn hf_zero_heads_are_config_errors_in_every_family() {
    let dir = tempfile::tempdir().unwrap();
    for (cfg, expect) in [
        (
            serde_json::json!({"model_type": "llama", "vocab_size": 10, "hidden_size": 8,
                "num_attention_heads": 0, "num_hidden_layers": 1, "intermediate_size": 16}),
            "`num_attention_heads` is 0",
        ),
        (
            serde_json::json!({"model_type": "gpt2", "vocab_size": 10, "n_embd": 8,
                "n_head": 0, "n_layer": 1}),
            "`n_head` is 0",
        ),
        (
            serde_json::json!({"model_type": "gpt2", "vocab_size": 10, "n_embd": 8,
                "n_head": 3, "n_layer": 1}),
            "`n_embd` 8 is not a multiple of `n_head` 3",
        ),
        (
            serde_json::json!({"model_type": "gpt_neox", "vocab_size": 10, "hidden_size": 8,
                "num_attention_heads": 0, "num_hidden_layers": 1, "intermediate_size": 16}),
            "`num_attention_heads` is 0",
        ),
        (
            serde_json::json!({"model_type": "gemma3_text", "vocab_size": 10, "hidden_size": 8,
                "num_attention_heads": 0, "num_hidden_layers": 1, "intermediate_size": 16,
                "head_dim": 4}),
            "n_heads (attention heads) is 0",
        ),
        (
            serde_json::json!({"model_type": "gemma3_text", "vocab_size": 10, "hidden_size": 8,
                "num_attention_heads": 2, "num_hidden_layers": 4_000_000_000u64,
                "intermediate_size": 16, "head_dim": 4}),
            "`num_hidden_layers` is 4000000000",
        ),
        (
            serde_json::json!({"model_type": "llama", "vocab_size": 0, "hidden_size": 8,
                "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 16}),
            "vocab_size (vocabulary size) is 0",
        ),
    ] {
        let m = dir.path().join("model");
        std::fs::create_dir_all(&m).unwrap();
        let p = write(&m, "config.json", cfg.to_string().as_bytes());
        let (origin, msg) = config_error(&m);
        assert!(msg.contains(expect), "{cfg}: {msg}");
        assert_eq!(origin, p.display().to_string());
        // And through the parser alone (no file): the same refusal.
        assert!(ModelConfig::from_hf_json(&cfg).is_err());
    }
}

/// A file of nothing but nested array headers used to recurse once per level until the stack
/// overflowed (exit 134).
#[test]
fn deeply_nested_metadata_arrays_are_refused_at_the_depth_limit() {
    let mut b = vec![];
    b.extend(0x4655_4747u32.to_le_bytes());
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    let key = b"deep";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key);
    b.extend(9u32.to_le_bytes());
    for _ in 0..200_000 {
        b.extend(9u32.to_le_bytes()); // element type: array
        b.extend(1u64.to_le_bytes()); // one element
    }
    match GgufFile::from_bytes(b) {
        Err(e @ GgufError::TooDeep { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("`deep`") && msg.contains(&MAX_ARRAY_DEPTH.to_string()),
                "{msg}"
            );
        }
        Err(e) => panic!("expected TooDeep, got {e}"),
        Ok(_) => panic!("expected TooDeep, got a file"),
    }
}

/// Counts checked against the bytes they would need before anything is allocated.
#[test]
fn counts_larger_than_the_file_are_truncation_errors() {
    // 2^40 u64 elements declared in a file of 60 bytes.
    let mut b = vec![];
    b.extend(0x4655_4747u32.to_le_bytes());
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.push(b'k');
    b.extend(9u32.to_le_bytes());
    b.extend(10u32.to_le_bytes());
    b.extend((1u64 << 40).to_le_bytes());
    b.extend([0u8; 16]);
    assert!(matches!(
        GgufFile::from_bytes(b),
        Err(GgufError::Truncated { what, .. }) if what.contains("count 1099511627776")
    ));
    // A tensor count that the 48 bytes after it cannot hold (each info needs ≥ 24 bytes).
    let mut b = vec![];
    b.extend(0x4655_4747u32.to_le_bytes());
    b.extend(3u32.to_le_bytes());
    b.extend(3u64.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend([0u8; 40]);
    assert!(matches!(
        GgufFile::from_bytes(b),
        Err(GgufError::Truncated { what, .. }) if what.contains("tensor count")
    ));
    // Tensor dimensions whose product overflows usize.
    let mut b = vec![];
    b.extend(0x4655_4747u32.to_le_bytes());
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.push(b't');
    b.extend(2u32.to_le_bytes());
    b.extend((1u64 << 40).to_le_bytes());
    b.extend((1u64 << 40).to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    assert!(matches!(
        GgufFile::from_bytes(b),
        Err(GgufError::Metadata { key, msg }) if key == "t" && msg.contains("overflow")
    ));
}

/// Run `f` on another thread, failing (not hanging) if it takes more than 10 s: a FIFO that is
/// opened for reading blocks until a writer appears.
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("blocked: the path was opened instead of refused")
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "mkfifo {}", path.display());
}

#[cfg(unix)]
#[test]
fn fifos_and_devices_as_model_paths_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO named like a GGUF.
    let fifo = dir.path().join("model.gguf");
    mkfifo(&fifo);
    let spec = fifo.to_str().unwrap().to_string();
    let r = within_10s(move || load_config(&spec).map(|_| ()));
    assert!(
        matches!(&r, Err(ProbeError::NotRegularFile { kind, .. }) if kind.contains("FIFO")),
        "{r:?}"
    );
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("model.gguf") && msg.contains("not a regular file"),
        "{msg}"
    );

    // A model folder whose config.json is a FIFO.
    let m = dir.path().join("hf");
    std::fs::create_dir(&m).unwrap();
    mkfifo(&m.join("config.json"));
    let spec = m.to_str().unwrap().to_string();
    let r = within_10s(move || load_config(&spec).map(|_| ()));
    assert!(
        matches!(&r, Err(ProbeError::NotRegularFile { path, .. }) if path.ends_with("config.json")),
        "{r:?}"
    );

    // A device.
    let r = within_10s(|| load_config("/dev/zero").map(|_| ()));
    assert!(
        matches!(&r, Err(ProbeError::NotRegularFile { kind, .. }) if kind.contains("device")),
        "{r:?}"
    );

    // A folder where a config file is expected.
    let m = dir.path().join("hf2");
    std::fs::create_dir_all(m.join("config.json")).unwrap();
    let r = load_config(m.to_str().unwrap());
    assert!(
        matches!(
            &r,
            Err(ProbeError::NotRegularFile {
                kind: "a folder",
                ..
            })
        ),
        "{r:?}"
    );
}

/// The forward pass checks a batch before it builds anything: a million-token prompt used to
/// allocate a `T × T` attention mask (terabytes) and abort the process.
#[test]
fn forward_refuses_a_prompt_past_the_context_before_allocating() {
    use icl_probe::{Batch, HookSpec, LogitsMode, Model};
    let cfg = ModelConfig::from_hf_json(&serde_json::json!({
        "model_type": "llama", "vocab_size": 100, "hidden_size": 64,
        "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 128,
        "max_position_embeddings": 256
    }))
    .unwrap();
    let model = Model::<burn::backend::Flex>::random(cfg, 0, &Default::default()).unwrap();
    let spec = HookSpec::new().logits(LogitsMode::Last);
    let fits = Batch::from_ids(vec![vec![1; 256]], 0).unwrap();
    assert!(model.forward(&fits, &spec).is_ok());
    let huge = Batch::from_ids(vec![vec![1; 1_000_000]], 0).unwrap();
    let Err(err) = model.forward(&huge, &spec) else {
        panic!("a million-token prompt was run");
    };
    assert!(
        matches!(&err, ProbeError::TooLarge { .. }) && err.to_string().contains("256 tokens"),
        "{err}"
    );
}
