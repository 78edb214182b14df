//! Tokenizers give exactly transformers' ids: tokenizer.json (fixture tokenizer_bpe_tiny) and the
//! tokenizer rebuilt from the SmolLM2 GGUF's metadata (when the asset is cached).

mod common;

use common::fixture;
use icl_probe::Tokenizer;

#[test]
fn tokenizer_json_matches_transformers() {
    let tok = Tokenizer::from_file(&fixture("tokenizer_bpe_tiny.json")).unwrap();
    let exp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tokenizer_bpe_tiny_expected.json")).unwrap(),
    )
    .unwrap();
    for case in exp.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids, want, "{text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), case["decoded"].as_str().unwrap());
    }
}

#[test]
fn gguf_tokenizer_matches_transformers() {
    let Some(path) = assets::cached("smollm2-135m-gguf") else {
        println!("skipped: asset smollm2-135m-gguf not in cache, run `cargo run --release -p assets-cli -- fetch smollm2-135m-gguf`");
        return;
    };
    let tok = icl_probe::load_tokenizer(&path).unwrap();
    let exp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("smollm2_gguf/expected.json")).unwrap(),
    )
    .unwrap();
    for p in exp["prompts"].as_array().unwrap() {
        let want: Vec<u32> = p["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let text = p["prompt"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
        let toks: Vec<String> = want.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
        let exp_toks: Vec<String> = p["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(toks, exp_toks);
        assert_eq!(tok.decode(&want).unwrap(), text);
    }
    // Control tokens stay whole; no BOS is added (add_bos_token = false).
    let ids = tok.encode("<|im_start|>user").unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(tok.decode(&ids).unwrap(), "<|im_start|>user");
    // SmolLM2's own tokenizer splits digits one by one.
    let ids = tok.encode("2024").unwrap();
    assert_eq!(ids.len(), 4);
}
