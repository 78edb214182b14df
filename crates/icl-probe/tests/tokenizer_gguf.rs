//! Tokenizers rebuilt from GGUF metadata give transformers' ids, string for string.
//!
//! `fixtures/tokenizers/parity.json.gz` (tools/make_tokenizer_fixtures.py) holds ~1,600 strings
//! (unicode scripts, emoji, composed and decomposed accents, RTL, digits and long numbers,
//! whitespace runs, tabs, newlines, code, mixed case, special and added tokens inside text, the 100
//! real ICL prompts) and, per model, the ids transformers gives them
//! (`AutoTokenizer.from_pretrained(folder, gguf_file=…)`, BOS as the file asks).
//!
//! The Qwen2.5-Coder and Gemma 3 vocabularies are also committed as metadata-only GGUFs
//! (`fixtures/tokenizers/*.tokenizer.gguf.gz`: every key/value pair of the real file, no tensors;
//! the script checked that transformers tokenizes every string the same from it as from the real
//! file), so CI proves parity without the model files. When the real files are in the asset cache
//! they are checked too, as is SmolLM2 and the 1.5B Qwen (same `tokenizer.ggml.*` as the 0.5B).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use icl_probe::gguf::GgufFile;
use icl_probe::{load_tokenizer, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Parity {
    categories: Vec<String>,
    strings: Vec<String>,
    models: BTreeMap<String, ModelIds>,
}

#[derive(Deserialize)]
struct ModelIds {
    #[serde(default)]
    ids: Vec<Vec<u32>>,
    gguf_fixture: Option<String>,
    tokenizer_ggml_identical_to: Option<String>,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers")
}

fn gunzip(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    out
}

fn parity() -> Parity {
    serde_json::from_slice(&gunzip("parity.json.gz")).expect("parity.json.gz")
}

/// The tokenizer of a committed metadata-only GGUF, and how long building it took.
fn fixture_tokenizer(name: &str) -> (Tokenizer, f64) {
    let gguf = GgufFile::from_bytes(gunzip(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let start = Instant::now();
    let tok = Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{name}: {e}"));
    (tok, start.elapsed().as_secs_f64())
}

/// Indices of the strings whose ids differ from `want`, after printing a summary.
fn mismatches(label: &str, tok: &Tokenizer, p: &Parity, want: &[Vec<u32>]) -> Vec<usize> {
    assert_eq!(want.len(), p.strings.len(), "{label}: fixture out of step");
    let start = Instant::now();
    let mut bad = Vec::new();
    let mut n_tokens = 0;
    for (i, (text, want)) in p.strings.iter().zip(want).enumerate() {
        let ids = tok.encode(text).unwrap();
        n_tokens += ids.len();
        if &ids != want {
            if bad.len() < 5 {
                println!(
                    "{label}: string {i} ({}) {text:?}\n  ours   {ids:?}\n  theirs {want:?}",
                    p.categories[i]
                );
            }
            bad.push(i);
        }
    }
    let mut per_cat: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &p.categories {
        *per_cat.entry(c).or_default() += 1;
    }
    println!(
        "{label}: {} strings ({per_cat:?}), {n_tokens} tokens in {:.2} s, {} differ from transformers",
        p.strings.len(),
        start.elapsed().as_secs_f64(),
        bad.len()
    );
    bad
}

fn expect_all_equal(label: &str, tok: &Tokenizer, p: &Parity, asset: &str) {
    let bad = mismatches(label, tok, p, &p.models[asset].ids);
    assert!(
        bad.is_empty(),
        "{label}: {} of {} strings tokenized differently from transformers (first: {:?})",
        bad.len(),
        p.strings.len(),
        &bad[..bad.len().min(10)]
    );
}

/// Byte-level BPE loses nothing: decoding the ids without added specials gives the text back.
fn expect_round_trip(label: &str, tok: &Tokenizer, p: &Parity, skip: impl Fn(&str) -> bool) {
    let mut checked = 0;
    for text in p.strings.iter().filter(|t| !skip(t)) {
        let ids = tok.encode_plain(text).unwrap();
        assert_eq!(&tok.decode(&ids).unwrap(), text, "{label}: round trip");
        checked += 1;
    }
    println!("{label}: decode(encode(text)) == text on {checked} strings");
}

#[test]
fn qwen2_fixture_matches_transformers() {
    let p = parity();
    let name = p.models["qwen2.5-coder-0.5b-q4km"]
        .gguf_fixture
        .clone()
        .unwrap();
    let (tok, load_s) = fixture_tokenizer(&name);
    println!("{name}: tokenizer built from GGUF metadata in {load_s:.2} s");
    expect_all_equal(&name, &tok, &p, "qwen2.5-coder-0.5b-q4km");
    expect_round_trip(&name, &tok, &p, |_| false);

    // No BOS (add_bos_token = false); chat markers and added tokens stay whole, near misses don't.
    let im_start = tok.token_to_id("<|im_start|>").unwrap();
    let ids = tok.encode("<|im_start|>user\n<tool_call>x").unwrap();
    assert_eq!(ids[0], im_start);
    assert_eq!(ids[3], tok.token_to_id("<tool_call>").unwrap());
    assert!(!tok.encode("<|im_start|").unwrap().contains(&im_start));
    assert_eq!(tok.encode("12345").unwrap().len(), 5, "digits one by one");
    assert_eq!(tok.bos_id(), Some(151643));
    assert_eq!(tok.eos_id(), Some(151645));
    assert_eq!(tok.pad_id(), 151643);
}

#[test]
fn gemma3_fixture_matches_transformers() {
    let p = parity();
    let name = p.models["gemma-3-270m-q4km"].gguf_fixture.clone().unwrap();
    let (tok, load_s) = fixture_tokenizer(&name);
    println!("{name}: tokenizer built from GGUF metadata in {load_s:.2} s");
    expect_all_equal(&name, &tok, &p, "gemma-3-270m-q4km");
    // `▁` in the text comes back as a space; everything else survives (byte fallback included).
    expect_round_trip(&name, &tok, &p, |t| t.contains('\u{2581}'));

    // BOS (id 2) first, no dummy prefix, spaces as `▁`, rare characters as `<0xNN>` bytes.
    let ids = tok.encode("Hello world").unwrap();
    assert_eq!(ids[0], 2);
    let pieces: Vec<String> = ids[1..]
        .iter()
        .map(|&i| tok.id_to_token(i).unwrap())
        .collect();
    assert_eq!(pieces, ["Hello", "\u{2581}world"]);
    let ids = tok.encode_plain("\u{a66e}").unwrap(); // ꙮ, not in the vocabulary
    let pieces: Vec<String> = ids.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
    assert_eq!(pieces, ["<0xEA>", "<0x99>", "<0xAE>"]);
    assert_eq!(
        tok.encode_plain("<start_of_turn>user").unwrap()[0],
        tok.token_to_id("<start_of_turn>").unwrap()
    );
    assert_eq!((tok.eos_id(), tok.pad_id()), (Some(1), 0));
}

/// The real files, when cached: the same ids, and the load time from the file.
#[test]
fn cached_models_match_transformers() {
    let p = parity();
    let mut checked = 0;
    for (asset, entry) in &p.models {
        let Some(path) = assets::cached(asset) else {
            println!(
                "skipped: {asset} not in the asset cache (`cargo run --release -p assets-cli -- fetch {asset}`)"
            );
            continue;
        };
        let start = Instant::now();
        let tok = load_tokenizer(&path).unwrap_or_else(|e| panic!("{asset}: {e}"));
        println!(
            "{asset}: load_tokenizer (open file + build) {:.2} s",
            start.elapsed().as_secs_f64()
        );
        checked += 1;
        if let Some(base) = &entry.tokenizer_ggml_identical_to {
            // Same tokenizer.ggml.* bytes as `base`: its ids must be the base model's.
            expect_all_equal(asset, &tok, &p, base);
        } else if asset.starts_with("smollm2") {
            smollm2_differs_only_at_numerals(&tok, &p, &entry.ids);
        } else {
            expect_all_equal(asset, &tok, &p, asset);
        }
    }
    println!("{checked} cached models checked");
}

/// SmolLM2 follows its own `tokenizer.json`, which splits off every numeral (`Digits`, any
/// `\p{N}`) before the byte-level regex, while transformers' GGUF loader does not (see
/// `pre_tokenizer_for`): every string without a numeral must match, those with one may differ.
fn smollm2_differs_only_at_numerals(tok: &Tokenizer, p: &Parity, want: &[Vec<u32>]) {
    let bad = mismatches("smollm2-135m-gguf", tok, p, want);
    let has_numeral = |t: &str| t.chars().any(char::is_numeric);
    let unexplained: Vec<usize> = bad
        .iter()
        .copied()
        .filter(|&i| !has_numeral(&p.strings[i]))
        .collect();
    let with_numerals = p.strings.iter().filter(|t| has_numeral(t)).count();
    println!(
        "smollm2-135m-gguf: {} of {with_numerals} strings with numerals differ (numerals split off), \
         {} of {} without differ",
        bad.len() - unexplained.len(),
        unexplained.len(),
        p.strings.len() - with_numerals
    );
    assert!(
        unexplained.is_empty(),
        "smollm2: strings without numerals differ: {unexplained:?}"
    );
}
