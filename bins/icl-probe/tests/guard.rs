//! `icl-probe` refuses outputs that would overwrite its inputs (#21: `forward --output` overwrote a
//! model shard).

use std::process::Command;

#[test]
fn forward_and_predict_refuse_to_write_over_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("hf-model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("model-00001-of-00002.safetensors"), b"shard one").unwrap();
    std::fs::write(d.join("model.gguf"), b"GGUF weights").unwrap();
    std::fs::write(d.join("ids.safetensors"), b"ids").unwrap();
    std::fs::write(d.join("prompts.jsonl"), b"{\"prompt\": \"a\"}\n").unwrap();
    for args in [
        vec![
            "forward",
            "--model",
            "hf-model",
            "--input-ids",
            "ids.safetensors",
            "--output",
            "hf-model/model-00001-of-00002.safetensors",
        ],
        vec![
            "forward",
            "--model",
            "model.gguf",
            "--input-ids",
            "ids.safetensors",
            "--output",
            "model.gguf",
        ],
        vec![
            "forward",
            "--model",
            "model.gguf",
            "--input-ids",
            "ids.safetensors",
            "--output",
            "ids.safetensors",
        ],
        vec![
            "predict",
            "--model",
            "model.gguf",
            "--prompts",
            "prompts.jsonl",
            "--output",
            "./model.gguf",
        ],
        vec![
            "run",
            "baseline",
            "--model",
            "hf-model",
            "--task",
            "antonym",
            "--out",
            "hf-model/results",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_icl-probe"))
            .args(&args)
            .current_dir(d)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(err.contains("refusing to write"), "{args:?}: {err}");
    }
    assert_eq!(
        std::fs::read(model.join("model-00001-of-00002.safetensors")).unwrap(),
        b"shard one"
    );
    assert_eq!(
        std::fs::read(d.join("model.gguf")).unwrap(),
        b"GGUF weights"
    );
    assert!(!model.join("results").exists());
}
