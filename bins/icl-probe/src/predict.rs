//! `icl-probe predict`: top-5 next tokens for prompts from a JSONL file.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::Backend;
use icl_probe::{load_model, top_k_rows, Batch, HookSpec, LogitsMode};

use crate::backend::{BackendTask, DeviceArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model: a Hugging Face folder, a .gguf file, or a repo id in the local hf-hub cache.
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL input, one `{"prompt": ...}` object per line (other fields are kept).
    #[arg(long)]
    pub prompts: PathBuf,
    /// JSONL output: each input object plus input_ids, top5_ids, top5_logits, top1.
    #[arg(long)]
    pub output: PathBuf,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl BackendTask for Args {
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let (model, tok) = load_model::<B>(&self.model, &device)
            .with_context(|| format!("loading {}", self.model.display()))?;
        // A FIFO or device here would block the open or never end the read.
        icl_probe::loader::check_regular_file(&self.prompts)?;
        let input = std::fs::File::open(&self.prompts)
            .with_context(|| format!("opening {}", self.prompts.display()))?;
        let mut records = Vec::new();
        for (i, line) in std::io::BufReader::new(input).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", self.prompts.display(), i + 1))?;
            let prompt = v
                .get("prompt")
                .and_then(|p| p.as_str())
                .with_context(|| format!("line {}: no string field \"prompt\"", i + 1))?
                .to_string();
            records.push((v, prompt));
        }
        let mut out = BufWriter::new(
            std::fs::File::create(&self.output)
                .with_context(|| format!("creating {}", self.output.display()))?,
        );
        // Progress in prompts (stderr; see `--progress`), the model's rate in the message.
        let bar = icl_experiments::Progress::new("predict", records.len() as u64);
        for chunk in records.chunks(self.batch_size.max(1)) {
            let prompts: Vec<&str> = chunk.iter().map(|(_, p)| p.as_str()).collect();
            let batch = Batch::from_prompts(&tok, &prompts)?;
            let logits = model
                .forward(&batch, &HookSpec::new().logits(LogitsMode::Last))?
                .logits
                .context("no logits")?;
            let top = top_k_rows(logits, 5);
            for (r, (v, _)) in chunk.iter().enumerate() {
                let mut v = v.clone();
                let ids: Vec<u32> = top[r].iter().map(|x| x.0).collect();
                let obj = v
                    .as_object_mut()
                    .context("each line must be a JSON object")?;
                obj.insert("input_ids".into(), serde_json::json!(batch.rows()[r]));
                obj.insert("top5_ids".into(), serde_json::json!(ids));
                obj.insert(
                    "top5_logits".into(),
                    serde_json::json!(top[r].iter().map(|x| x.1).collect::<Vec<_>>()),
                );
                obj.insert("top1".into(), serde_json::json!(tok.decode(&ids[..1])?));
                writeln!(out, "{}", serde_json::to_string(&v)?)?;
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish();
        out.flush()?;
        Ok(())
    }
}
