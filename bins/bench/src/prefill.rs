//! The prefill row: a real GGUF model through icl-probe's normal loader, timed on one full-sequence
//! forward of `batch × tokens` prompt tokens with last-position logits (what a prompt costs before the
//! first generated token; llama.cpp calls it "prompt eval"). The load is timed once, separately.
//!
//! The token ids are deterministic pseudo-random ids below the vocabulary size (Knuth's
//! multiplicative hash, as in the GPT-2 row), so `tools/prefill_side_by_side.py` can give transformers
//! and llama.cpp exactly the same ids; attention and matmul cost do not depend on which ids they are.

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::Backend;
use icl_probe::{Batch, HookSpec, LogitsMode, Model, WeightStorage};

use crate::timing::{rate, row, Timer};

/// Id `i` of row `r`: the formula `tools/prefill_side_by_side.py` repeats.
pub fn prefill_ids(batch: usize, tokens: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|r| {
            (0..tokens)
                .map(|i| (((r * tokens + i) as u64 * 2_654_435_761) % vocab as u64) as u32)
                .collect()
        })
        .collect()
}

/// What one prefill measurement found (printed as a table row, or as JSON for the side-by-side
/// script).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrefillResult {
    pub model: String,
    pub architecture: String,
    pub vocab: usize,
    pub batch: usize,
    pub tokens: usize,
    pub threads: usize,
    /// `Compact` or `F32` (`ICLGDD_WEIGHTS` decides; compact on the CPU by default).
    pub weights: String,
    /// Bytes of the embedding and linear maps as stored (dense + packed), in MiB.
    pub weight_mib: f64,
    pub load_s: f64,
    pub median_s: f64,
    pub tok_per_s: f64,
}

pub fn run<B: Backend>(
    device: &B::Device,
    t: &Timer,
    model_path: &Path,
    batch: usize,
    tokens: usize,
    threads: Option<usize>,
    json: bool,
) -> anyhow::Result<PrefillResult> {
    anyhow::ensure!(
        batch > 0 && tokens > 0,
        "prefill needs --batch and --tokens of at least 1 (got {batch} × {tokens})"
    );
    // Flex's kernels and its GEMM run on rayon's global pool: sizing it sets the thread count.
    let threads = match threads {
        Some(n) => {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .map_err(|e| anyhow::anyhow!("setting {n} threads: {e}"))?;
            n
        }
        None => rayon::current_num_threads(),
    };
    // What `Model::load` will pick (Auto resolves the same way inside it), for the report.
    let storage = WeightStorage::Auto
        .resolve::<B>(device)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = Instant::now();
    let model = Model::<B>::load(model_path, device)
        .map_err(|e| anyhow::anyhow!("loading {}: {e}", model_path.display()))?;
    B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
    let load_s = start.elapsed().as_secs_f64();
    let cfg = model.config();
    let bytes = model.weight_bytes();
    let ids = Batch::from_ids(prefill_ids(batch, tokens, cfg.vocab_size), 0)?;
    let spec = HookSpec::new().logits(LogitsMode::Last);
    let time = t.median::<B, _>(device, || model.forward(&ids, &spec).expect("forward"));
    let name = model_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| model_path.display().to_string());
    let result = PrefillResult {
        model: name,
        architecture: format!("{:?}", cfg.architecture),
        vocab: cfg.vocab_size,
        batch,
        tokens,
        threads,
        weights: format!("{storage:?}"),
        weight_mib: (bytes.dense + bytes.packed) as f64 / (1024.0 * 1024.0),
        load_s,
        median_s: time.as_secs_f64(),
        tok_per_s: (batch * tokens) as f64 / time.as_secs_f64(),
    };
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        row(
            &format!("{} prefill (load {:.1} s)", result.model, load_s),
            &format!("{batch} × {tokens} tokens, last logits, {threads} threads"),
            &format!(
                "f32 compute, {} weights ({:.0} MiB)",
                result.weights, result.weight_mib
            ),
            time,
            &rate(result.tok_per_s, "tok/s"),
        );
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_stay_below_the_vocabulary_and_differ_between_rows() {
        let ids = super::prefill_ids(2, 5, 100);
        assert!(ids.iter().flatten().all(|&i| i < 100));
        assert_ne!(ids[0], ids[1]);
        // The formula the Python side repeats: (r·T + i)·2654435761 mod V.
        assert_eq!(ids[1][0], ((5u64 * 2_654_435_761) % 100) as u32);
    }
}
