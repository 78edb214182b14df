//! The four real GGUF models against transformers on ~100 real 5-shot ICL prompts.
//!
//! `fixtures/real_models/prompts.json` holds 100 test prompts (country → capital, list first, to
//! upper, category; 25 each) exported by `icl-gdd-bench icl-prompts` from the task builders the
//! experiments use. `fixtures/real_models/<asset>.json` holds, per model, what transformers computed
//! from the same GGUF file dequantised to float32 (tools/real_model_reference.py): the token ids of
//! each prompt, and the top-20 (id, logit) of the next-token logits after its last token.
//!
//! Each model is loaded with icl-probe's normal loader and run on the recorded ids in left-padded
//! batches of [`BATCH`], as the experiments run them. The weights are the same numbers on both
//! sides, so the logits differ only by float summation order; we require:
//! - top-1 agreement with transformers on at least 97 % of the prompts (the bar; a prompt
//!   whose top two logits lie within the reordering noise may flip),
//! - the largest |Δ logit| over the recorded top-20 of every prompt within [`REL_TOL`] of the
//!   largest recorded |logit| (measured values are printed),
//! - when the GGUF's tokenizer loads, our ids equal transformers' on every prompt.
//!
//! Models are found through the asset cache (`assets::cached`), or, for local runs before an asset
//! is in the catalogue, as `$ICLGDD_MODEL_DIR/<asset>.gguf`. A missing model skips with a message.
//! Run: `cargo test --release -p icl-probe --test real_models -- --nocapture`.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use common::*;
use icl_probe::{load_tokenizer, Batch, HookSpec, LogitsMode, Model};
use serde::Deserialize;

/// Prompts per forward pass (left-padded, as `experiments::Probe` batches them).
const BATCH: usize = 8;
/// Required top-1 agreement with transformers.
const MIN_AGREEMENT: f64 = 0.97;
/// Allowed max |Δ logit| over the recorded top-20, relative to the largest recorded |logit|.
/// Measured (2026-12-02, Flex, batches of 8): 1.8e-6 to 3.2e-6 on the four models (|Δ| ≤ 7.1e-5
/// at logits up to 30): float reordering only. The bound leaves a ~6× margin for other summation
/// orders (thread counts, matmul kernels) while a wrong weight, norm or mask shows up far above it.
const REL_TOL: f32 = 2e-5;

/// One model at a time: the 1.5B model alone takes gigabytes, and two forwards in parallel on a
/// small machine only slow each other down.
static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Deserialize)]
struct PromptFile {
    prompts: Vec<PromptText>,
}

#[derive(Deserialize)]
struct PromptText {
    task: String,
    text: String,
}

#[derive(Deserialize)]
struct Reference {
    vocab_size: usize,
    pad_token_id: Option<u32>,
    load_s: f64,
    peak_rss_mb: f64,
    prompts: Vec<RefPrompt>,
}

#[derive(Deserialize)]
struct RefPrompt {
    task: String,
    ids: Vec<u32>,
    top1: u32,
    top20: Vec<(u32, f32)>,
    target: u32,
}

fn read_json<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The model file: the asset cache first, then `$ICLGDD_MODEL_DIR/<asset>.gguf`.
fn model_file(asset: &str) -> Option<PathBuf> {
    assets::cached(asset).or_else(|| {
        let dir = std::env::var_os("ICLGDD_MODEL_DIR")?;
        let p = PathBuf::from(dir).join(format!("{asset}.gguf"));
        p.is_file().then_some(p)
    })
}

/// Resident and peak resident memory of this process in MiB (Linux; `None` elsewhere).
fn rss_mib() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn check_model(asset: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(path) = model_file(asset) else {
        println!(
            "skipped: {asset} not in the asset cache (`cargo run --release -p assets-cli -- fetch {asset}`) \
             and not at $ICLGDD_MODEL_DIR/{asset}.gguf"
        );
        return;
    };
    let texts: PromptFile = read_json("real_models/prompts.json");
    let reference: Reference = read_json(&format!("real_models/{asset}.json"));
    assert_eq!(texts.prompts.len(), reference.prompts.len());
    for (t, r) in texts.prompts.iter().zip(&reference.prompts) {
        assert_eq!(t.task, r.task, "prompts.json and {asset}.json out of step");
    }

    // The tokenizer is checked when it loads; the logits use the recorded ids either way, so this
    // test measures the network alone.
    let pad_id = match load_tokenizer(&path) {
        Ok(tok) => {
            let mut wrong = Vec::new();
            for (k, (t, r)) in texts.prompts.iter().zip(&reference.prompts).enumerate() {
                let ids = tok.encode(&t.text).unwrap();
                if ids != r.ids {
                    wrong.push((k, ids, &r.ids));
                }
            }
            if let Some((k, ours, theirs)) = wrong.first() {
                panic!(
                    "{asset}: token ids differ from transformers' on {} of {} prompts; first, prompt {k} \
                     {:?}:\n ours   {ours:?}\n theirs {theirs:?}",
                    wrong.len(),
                    texts.prompts.len(),
                    texts.prompts[*k].text
                );
            }
            println!(
                "{asset}: tokenizer from the GGUF gives transformers' ids on all {} prompts",
                texts.prompts.len()
            );
            tok.pad_id()
        }
        Err(e) => {
            println!("{asset}: tokenizer does not load ({e}); running the recorded ids");
            reference.pad_token_id.unwrap_or(0)
        }
    };

    let device = Default::default();
    let start = Instant::now();
    let model = Model::<B>::load(&path, &device)
        .unwrap_or_else(|e| panic!("{asset}: loading {}: {e}", path.display()));
    let load_s = start.elapsed().as_secs_f64();
    let rss = rss_mib()
        .map(|(now, peak)| {
            format!("RSS {now:.0} MiB after load (process peak so far {peak:.0} MiB)")
        })
        .unwrap_or_default();
    println!(
        "{asset}: loaded in {load_s:.1} s, {rss}; transformers took {:.1} s, peak RSS {:.0} MB",
        reference.load_s, reference.peak_rss_mb
    );
    assert_eq!(
        model.config().vocab_size,
        reference.vocab_size,
        "{asset}: vocabulary size"
    );

    let spec = HookSpec::new().logits(LogitsMode::Last);
    let (mut agree, mut ours_right, mut theirs_right) = (0usize, 0usize, 0usize);
    let (mut max_d, mut max_d_at, mut scale) = (0.0f32, 0usize, 0.0f32);
    let start = Instant::now();
    let mut n_tokens = 0;
    for (c, chunk) in reference.prompts.chunks(BATCH).enumerate() {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|p| p.ids.clone()).collect();
        n_tokens += rows.iter().map(Vec::len).sum::<usize>();
        let batch = Batch::from_ids(rows, pad_id).unwrap();
        let logits = model.forward(&batch, &spec).unwrap().logits.unwrap();
        let [b, _, v] = logits.dims();
        let vals = values(&logits);
        for (r, p) in chunk.iter().enumerate() {
            let k = c * BATCH + r;
            let row = &vals[r * v..(r + 1) * v];
            assert!(
                b == chunk.len() && row.iter().all(|x| x.is_finite()),
                "{asset}: prompt {k} logits"
            );
            let top1 = (0..v)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                .unwrap() as u32;
            if top1 == p.top1 {
                agree += 1;
            } else {
                let gap = p.top20[0].1 - p.top20.get(1).map_or(f32::NEG_INFINITY, |x| x.1);
                println!(
                    "{asset}: prompt {k} ({}) top-1 ours {top1} (logit {:.4}), transformers {} \
                     (logit {:.4}, ours {:.4}; transformers' top-2 gap {gap:.4})",
                    p.task, row[top1 as usize], p.top1, p.top20[0].1, row[p.top1 as usize]
                );
            }
            ours_right += usize::from(top1 == p.target);
            theirs_right += usize::from(p.top1 == p.target);
            for &(id, want) in &p.top20 {
                scale = scale.max(want.abs());
                let d = (row[id as usize] - want).abs();
                if d > max_d {
                    (max_d, max_d_at) = (d, k);
                }
            }
        }
    }
    let fwd_s = start.elapsed().as_secs_f64();
    if let Some((_, peak)) = rss_mib() {
        // The weights are mapped, not read: pages come in during the first forward, so the peak
        // after it is the one to compare (tests run one model at a time in one process: the peak
        // is the largest so far).
        println!("{asset}: process peak RSS after the forward passes {peak:.0} MiB");
    }
    let n = reference.prompts.len();
    let agreement = agree as f64 / n as f64;
    println!(
        "{asset}: top-1 agreement {agree}/{n} = {agreement:.3}; max |Δ logit| over the top-20 {max_d:.2e} \
         (prompt {max_d_at}; largest |logit| {scale:.2}, relative {:.2e}); answer accuracy ours {ours_right}/{n}, \
         transformers {theirs_right}/{n}; forward of {n_tokens} tokens in batches of {BATCH}: {fwd_s:.1} s",
        max_d / scale
    );
    assert!(
        agreement >= MIN_AGREEMENT,
        "{asset}: top-1 agreement {agreement:.3} < {MIN_AGREEMENT}"
    );
    assert!(
        max_d <= REL_TOL * scale,
        "{asset}: max |Δ logit| {max_d:.3e} > {REL_TOL} × {scale:.2}"
    );
}

#[test]
fn smollm2_135m_matches_transformers_on_icl_prompts() {
    check_model("smollm2-135m-gguf");
}

#[test]
fn qwen25_coder_05b_matches_transformers_on_icl_prompts() {
    check_model("qwen2.5-coder-0.5b-q4km");
}

#[test]
fn qwen25_coder_15b_matches_transformers_on_icl_prompts() {
    check_model("qwen2.5-coder-1.5b-q4km");
}

#[test]
fn gemma3_270m_matches_transformers_on_icl_prompts() {
    check_model("gemma-3-270m-q4km");
}
