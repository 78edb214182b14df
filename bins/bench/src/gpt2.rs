//! The GPT-2 row: a forward of GPT-2 small (124M, random weights) through icl-probe's hookable model,
//! with full logits, optionally caching every block's residual stream (what rule-vector experiments do).

use burn::tensor::backend::Backend;
use burn::tensor::DType;
use icl_probe::{Batch, HookSpec, Model, ModelConfig};

use crate::timing::{rate, row, Timer};
use crate::Precision;

pub fn run<B: Backend>(
    device: &B::Device,
    t: &Timer,
    batch: usize,
    tokens: usize,
    p: Precision,
    cache_residuals: bool,
) -> anyhow::Result<()> {
    let cfg = ModelConfig::gpt2_small();
    let vocab = cfg.vocab_size as u64;
    let model = Model::<B>::random(cfg, 0, device)?.with_dtype(match p {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
        Precision::Bf16 => DType::BF16,
    });
    // Deterministic pseudo-random ids (Knuth's multiplicative hash), all rows full length.
    let rows: Vec<Vec<u32>> = (0..batch)
        .map(|r| {
            (0..tokens)
                .map(|i| (((r * tokens + i) as u64 * 2_654_435_761) % vocab) as u32)
                .collect()
        })
        .collect();
    let ids = Batch::from_ids(rows, 0)?;
    let spec = if cache_residuals {
        HookSpec::new().cache(["blocks.*.hook_resid_post".to_string()])
    } else {
        HookSpec::new()
    };
    let time = t.median::<B, _>(device, || model.forward(&ids, &spec).expect("forward"));
    row(
        &format!(
            "GPT-2 124M forward{}",
            if cache_residuals {
                ", all residuals cached"
            } else {
                ""
            }
        ),
        &format!("{batch} × {tokens} tokens, full logits"),
        &format!("{p:?}").to_lowercase(),
        time,
        &rate((batch * tokens) as f64 / time.as_secs_f64(), "tok/s"),
    );
    Ok(())
}
