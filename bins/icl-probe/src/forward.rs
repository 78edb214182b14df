//! `icl-probe forward`: logits and cached activations for a `[B, T]` id matrix.

use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use icl_probe::{Batch, HookSpec, Model};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::backend::{BackendTask, DeviceArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model: a Hugging Face folder, a .gguf file, or a repo id in the local hf-hub cache.
    #[arg(long)]
    pub model: PathBuf,
    /// safetensors with `input_ids` [B, T] (int64 or int32) and optionally `attention_mask`
    /// [B, T] (left padding: 0 = pad).
    #[arg(long)]
    pub input_ids: PathBuf,
    /// safetensors written with `logits` [B, T, V] and every cached hook under its name.
    #[arg(long)]
    pub output: PathBuf,
    /// Comma-separated hook names to cache (`*` globs allowed, e.g. `blocks.*.hook_resid_post`).
    #[arg(long, value_delimiter = ',')]
    pub cache: Vec<String>,
    /// Print {output, tensors: [{name, shape}]} as JSON on stdout when done.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn ints(st: &SafeTensors, name: &str) -> anyhow::Result<Option<(Vec<usize>, Vec<i64>)>> {
    let Ok(v) = st.tensor(name) else {
        return Ok(None);
    };
    let d = v.data();
    let vals: Vec<i64> = match v.dtype() {
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
            .collect(),
        other => bail!("`{name}` must be int64 or int32, got {other:?}"),
    };
    Ok(Some((v.shape().to_vec(), vals)))
}

impl BackendTask for Args {
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        // A FIFO or device here would block the open or never end the read.
        icl_probe::loader::check_regular_file(&self.input_ids)?;
        let bytes = std::fs::read(&self.input_ids)
            .with_context(|| format!("reading {}", self.input_ids.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("parsing {}", self.input_ids.display()))?;
        let (shape, ids) = ints(&st, "input_ids")?.context("no `input_ids` tensor")?;
        if shape.len() != 2 {
            bail!("input_ids must be [B, T], got {shape:?}");
        }
        let mask = ints(&st, "attention_mask")?;
        if let Some((ms, _)) = &mask {
            if *ms != shape {
                bail!("attention_mask shape {ms:?} differs from input_ids {shape:?}");
            }
        }
        let batch = Batch::from_padded(&ids, shape[0], shape[1], mask.as_ref().map(|m| &m.1[..]))?;
        // Two steps (load, forward) on stderr; see `--progress`.
        let bar = icl_experiments::Progress::new("forward", 2);
        bar.set_message(format!("loading {}", self.model.display()));
        let model = Model::<B>::load(&self.model, &device)
            .with_context(|| format!("loading {}", self.model.display()))?;
        bar.inc(1);
        bar.set_message(format!("{} × {} tokens", batch.len(), batch.seq_len()));
        let out = model.forward(&batch, &HookSpec::new().cache(self.cache.clone()))?;
        bar.add_prompts(batch.len() as u64);
        bar.inc(1);
        bar.finish();

        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let to_bytes = |v: Vec<f32>| {
            v.into_iter()
                .flat_map(f32::to_le_bytes)
                .collect::<Vec<u8>>()
        };
        if let Some(l) = out.logits {
            let data = l.into_data().convert::<f32>();
            let shape = data.shape.to_vec();
            tensors.push((
                "logits".into(),
                shape,
                to_bytes(data.into_vec::<f32>().unwrap()),
            ));
        }
        for name in out.cache.names() {
            let (shape, v) = out.cache.get(&name).expect("listed").to_vec();
            tensors.push((name, shape, to_bytes(v)));
        }
        let views = tensors
            .iter()
            .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Through a temporary and a rename: a failed or killed run never leaves a truncated file
        // under the final name, and a full disk is reported as such (issue 21).
        let bytes = safetensors::serialize(views, None)
            .with_context(|| format!("encoding {}", self.output.display()))?;
        formats::write_atomic(&self.output, &bytes)?;
        if self.json {
            let listed: Vec<_> = tensors
                .iter()
                .map(|(n, s, _)| serde_json::json!({"name": n, "shape": s}))
                .collect();
            let v = serde_json::json!({"output": self.output, "tensors": listed});
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Ok(())
    }
}
