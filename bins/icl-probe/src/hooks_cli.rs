//! `icl-probe hooks --model M`: every hook name with its shape (TransformerLens's `hook_dict`),
//! read from the model's config alone (no weights are loaded, so it answers at once even for a
//! large GGUF).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use icl_probe::{hook_shape, Model};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model: a Hugging Face folder, a .gguf file, or a repo id in the local hf-hub cache.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt length T in tokens (padded length of the batch) the shapes are given for.
    #[arg(long, default_value_t = 16, conflicts_with = "prompt")]
    pub seq_len: usize,
    /// Give the shapes for this prompt's length instead of --seq-len (tokenized with the model's
    /// tokenizer).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Batch rows B the shapes are given for.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Only hooks whose name matches this `*` glob (e.g. `blocks.0.*`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Print one JSON object {model, batch, seq_len, hooks: [{name, shape}]} instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let spec = a.model.to_string_lossy().into_owned();
    let cfg = icl_probe::load_config(&spec).with_context(|| format!("reading {spec}"))?;
    let seq_len = match &a.prompt {
        Some(p) => {
            let tok = icl_probe::load_tokenizer(&a.model)
                .with_context(|| format!("loading the tokenizer of {spec}"))?;
            tok.encode(p)
                .with_context(|| format!("tokenizing {p:?}"))?
                .len()
        }
        None => a.seq_len,
    };
    let hooks: Vec<(String, Vec<usize>)> = Model::<burn::backend::Flex>::list_hook_names(&cfg)
        .into_iter()
        .filter(|n| {
            a.filter
                .as_deref()
                .is_none_or(|f| icl_probe::hooks::glob_match(f, n))
        })
        .map(|n| {
            let shape = hook_shape(&cfg, &n, a.batch, seq_len)
                .with_context(|| format!("no shape for listed hook {n}"))?;
            Ok((n, shape))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let hooks: Vec<_> = hooks
            .iter()
            .map(|(n, s)| serde_json::json!({"name": n, "shape": s}))
            .collect();
        let v = serde_json::json!({
            "model": spec,
            "batch": a.batch,
            "seq_len": seq_len,
            "hooks": hooks,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let width = hooks.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (n, s) in &hooks {
            writeln!(out, "{n:width$}  {s:?}")?;
        }
    }
    Ok(())
}
