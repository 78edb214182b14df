//! Batched forwards for the experiments: scoring, reading residuals at chosen positions, and
//! patching or knocking out at chosen layers. Prompts are tokenized once ([`Prepared`]).

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use icl_tasks::{answer_token, tokenize_prompt, Item, PromptSpec, TokenizeOffsets};

use super::{ExperimentError, Progress, Result};
use icl_probe::{
    AttentionKnockout, Batch, HookSpec, Intervention, LogitsMode, Model, Op, Tokenizer,
};

/// The residual stream at layer `l` of an `n_layers` model: `L = 0` is the embedding output and
/// `L = l` the output of block `l − 1`, i.e. `blocks.{l}.hook_resid_pre`, and for `l = n_layers`
/// `blocks.{n_layers − 1}.hook_resid_post`.
pub fn resid_hook(n_layers: usize, l: usize) -> String {
    if l < n_layers {
        format!("blocks.{l}.hook_resid_pre")
    } else {
        format!("blocks.{}.hook_resid_post", n_layers - 1)
    }
}

/// `icl-tasks`' tokenizer interface over the model's tokenizer: ids with the special tokens the
/// tokenizer adds (as [`Tokenizer::encode`]) and byte offsets into the text.
pub struct ProbeTokenizer<'a>(pub &'a Tokenizer);

impl TokenizeOffsets for ProbeTokenizer<'_> {
    fn tokenize_offsets(
        &self,
        text: &str,
    ) -> std::result::Result<Vec<(u32, Range<usize>)>, String> {
        let enc = self
            .0
            .inner()
            .encode(text, true)
            .map_err(|e| e.to_string())?;
        Ok(enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .map(|(&id, &(s, e))| (id, s..e))
            .collect())
    }
}

/// A tokenized prompt with what the experiments need from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub ids: Vec<u32>,
    /// Answer position (first output token) of each demonstration.
    pub answer_positions: Vec<usize>,
    /// Token positions of each demonstration's input.
    pub input_positions: Vec<Vec<usize>>,
    /// The token to predict after the prompt: the first token of `" " + output`.
    pub target: u32,
    /// The query item.
    pub query: Item,
}

impl Prepared {
    pub fn last(&self) -> usize {
        self.ids.len() - 1
    }
}

/// A model and its tokenizer, run in batches of `batch_size` prompts.
pub struct Probe<'a, B: Backend> {
    pub model: &'a Model<B>,
    pub tok: &'a Tokenizer,
    pub batch_size: usize,
    /// Where forward passes are counted ([`Probe::with_progress`]); none by default.
    progress: Option<&'a Progress>,
}

impl<'a, B: Backend> Probe<'a, B> {
    pub fn new(model: &'a Model<B>, tok: &'a Tokenizer, batch_size: usize) -> Self {
        Self {
            model,
            tok,
            batch_size: batch_size.max(1),
            progress: None,
        }
    }

    /// Count every prompt this probe runs in `progress`'s message (prompts and prompts/s), so a
    /// bar over coarse work items still shows the model moving.
    pub fn with_progress(mut self, progress: &'a Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// This probe with its forward passes counted in `progress` (for a function that was handed
    /// a `&Probe` and makes its own bar).
    pub fn counting<'b>(&'b self, progress: &'b Progress) -> Probe<'b, B> {
        Probe {
            model: self.model,
            tok: self.tok,
            batch_size: self.batch_size,
            progress: Some(progress),
        }
    }

    fn ran(&self, prompts: usize) {
        if let Some(p) = self.progress {
            p.add_prompts(prompts as u64);
        }
    }

    pub fn n_layers(&self) -> usize {
        self.model.config().n_layers
    }

    pub fn d_model(&self) -> usize {
        self.model.config().d_model
    }

    /// Tokenizes a prompt and finds its answer positions and target token.
    pub fn prepare(&self, spec: &PromptSpec) -> Result<Prepared> {
        let tok = ProbeTokenizer(self.tok);
        let t = tokenize_prompt(&tok, &spec.prompt())?;
        Ok(Prepared {
            answer_positions: t.answer_positions(),
            input_positions: t.demos.iter().map(|d| d.input.clone()).collect(),
            ids: t.ids,
            target: answer_token(&tok, &spec.query.output)?,
            query: spec.query.clone(),
        })
    }

    pub fn prepare_all(&self, specs: &[PromptSpec]) -> Result<Vec<Prepared>> {
        specs.iter().map(|s| self.prepare(s)).collect()
    }

    fn batch(&self, prompts: &[Prepared]) -> Result<Batch> {
        Ok(Batch::from_ids(
            prompts.iter().map(|p| p.ids.clone()).collect(),
            self.tok.pad_id(),
        )?)
    }

    /// Next-token logits `[V]` after the last token of every prompt, with hooks built per chunk
    /// by `spec(chunk_start, chunk)`.
    pub fn logits_with(
        &self,
        prompts: &[Prepared],
        spec: impl Fn(usize, &[Prepared]) -> Result<HookSpec<B>>,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(prompts.len());
        for (c, chunk) in prompts.chunks(self.batch_size).enumerate() {
            let batch = self.batch(chunk)?;
            let hooks = spec(c * self.batch_size, chunk)?.logits(LogitsMode::Last);
            let o = self.model.forward(&batch, &hooks)?;
            self.ran(chunk.len());
            let logits = o
                .logits
                .ok_or_else(|| ExperimentError::Invalid("forward returned no logits".into()))?;
            let [b, _, v] = logits.dims();
            let data = logits
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| ExperimentError::Invalid(format!("{e:?}")))?;
            out.extend((0..b).map(|r| data[r * v..(r + 1) * v].to_vec()));
        }
        Ok(out)
    }

    /// Greedy next token of every prompt, with hooks built per chunk by `spec(chunk_start, chunk)`.
    pub fn predict_with(
        &self,
        prompts: &[Prepared],
        spec: impl Fn(usize, &[Prepared]) -> Result<HookSpec<B>>,
    ) -> Result<Vec<u32>> {
        Ok(self
            .logits_with(prompts, spec)?
            .iter()
            .map(|l| argmax_f32(l))
            .collect())
    }

    /// Greedy next token of every prompt, no intervention.
    pub fn predict(&self, prompts: &[Prepared]) -> Result<Vec<u32>> {
        self.predict_with(prompts, |_, _| Ok(HookSpec::new()))
    }

    /// Greedy next token with the residual at `layer`, last position, replaced by `vectors[i]`
    /// for prompt `i` (each of length `d_model`).
    pub fn predict_patched(
        &self,
        prompts: &[Prepared],
        layer: usize,
        vectors: &[Vec<f32>],
    ) -> Result<Vec<u32>> {
        Ok(self
            .logits_patched(prompts, layer, vectors)?
            .iter()
            .map(|l| argmax_f32(l))
            .collect())
    }

    /// Next-token logits with the residual at `layer`, last position, replaced by `vectors[i]`.
    pub fn logits_patched(
        &self,
        prompts: &[Prepared],
        layer: usize,
        vectors: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>> {
        if vectors.len() != prompts.len() {
            return Err(ExperimentError::Invalid(format!(
                "{} patch vectors for {} prompts",
                vectors.len(),
                prompts.len()
            )));
        }
        let positions: Vec<Vec<usize>> = prompts.iter().map(|p| vec![p.last()]).collect();
        let vectors: Vec<Vec<Vec<f32>>> = vectors.iter().map(|v| vec![v.clone()]).collect();
        self.logits_patched_at(prompts, layer, &positions, &vectors)
    }

    /// Next-token logits with the residual at `layer` replaced, in prompt `i`, at each position
    /// `positions[i][m]` by `vectors[i][m]` (any number of positions per prompt, none included).
    pub fn logits_patched_at(
        &self,
        prompts: &[Prepared],
        layer: usize,
        positions: &[Vec<usize>],
        vectors: &[Vec<Vec<f32>>],
    ) -> Result<Vec<Vec<f32>>> {
        if positions.len() != prompts.len() || vectors.len() != prompts.len() {
            return Err(ExperimentError::Invalid(format!(
                "{} position lists and {} vector lists for {} prompts",
                positions.len(),
                vectors.len(),
                prompts.len()
            )));
        }
        let (w, hook) = (self.d_model(), resid_hook(self.n_layers(), layer));
        let device = self.model.device().clone();
        self.logits_with(prompts, |start, chunk| {
            let n = chunk.len();
            let mut flat = Vec::new();
            let mut per_row = Vec::with_capacity(n);
            for i in start..start + n {
                if positions[i].len() != vectors[i].len() {
                    return Err(ExperimentError::Invalid(format!(
                        "prompt {i}: {} positions, {} vectors",
                        positions[i].len(),
                        vectors[i].len()
                    )));
                }
                for v in &vectors[i] {
                    if v.len() != w {
                        return Err(ExperimentError::Invalid(format!(
                            "patch vector of length {}, d_model {w}",
                            v.len()
                        )));
                    }
                    flat.extend_from_slice(v);
                }
                per_row.push(positions[i].iter().map(|&p| p as isize).collect());
            }
            let rows = flat.len() / w;
            if rows == 0 {
                return Ok(HookSpec::new());
            }
            let value = Tensor::<B, 2>::from_data(TensorData::new(flat, [rows, w]), &device);
            Ok(HookSpec::new()
                .intervene(Intervention::new(hook.clone(), Op::Replace(value)).per_row(per_row)))
        })
    }

    /// Greedy next token with attention from the last position to `keys(prompt)` blocked at every
    /// layer in `layers` (all heads).
    pub fn predict_knockout(
        &self,
        prompts: &[Prepared],
        layers: &[usize],
        keys: impl Fn(&Prepared) -> Vec<usize>,
    ) -> Result<Vec<u32>> {
        self.predict_with(prompts, |_, chunk| {
            let mut spec = HookSpec::new();
            for &l in layers {
                let per_row = chunk
                    .iter()
                    .map(|p| {
                        (
                            vec![p.last() as isize],
                            keys(p).into_iter().map(|k| k as isize).collect(),
                        )
                    })
                    .collect();
                spec = spec.knockout(AttentionKnockout::from_sets(l, per_row));
            }
            Ok(spec)
        })
    }

    /// Residual vectors at `layers` and at `positions(prompt)`: `out[prompt][layer][position]`.
    pub fn residuals(
        &self,
        prompts: &[Prepared],
        layers: &[usize],
        positions: impl Fn(&Prepared) -> Vec<usize>,
    ) -> Result<Vec<Vec<Vec<Vec<f32>>>>> {
        let n_layers = self.n_layers();
        let names: Vec<String> = layers.iter().map(|&l| resid_hook(n_layers, l)).collect();
        let mut out = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(self.batch_size) {
            let batch = self.batch(chunk)?;
            let spec = HookSpec::new()
                .cache(names.clone())
                .logits(LogitsMode::None);
            let o = self.model.forward(&batch, &spec)?;
            self.ran(chunk.len());
            let mut per_layer = Vec::with_capacity(names.len());
            for name in &names {
                let t = o
                    .cache
                    .get3(name)
                    .ok_or_else(|| ExperimentError::Invalid(format!("hook {name} not cached")))?;
                let [_, tt, w] = t.dims();
                let data = t
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| ExperimentError::Invalid(format!("{e:?}")))?;
                per_layer.push((data, tt, w));
            }
            for (b, p) in chunk.iter().enumerate() {
                let pos = positions(p);
                let mut layers_out = Vec::with_capacity(names.len());
                for (data, tt, w) in &per_layer {
                    let mut vecs = Vec::with_capacity(pos.len());
                    for &q in &pos {
                        let t = batch.resolve(b, q as isize).ok_or_else(|| {
                            ExperimentError::Invalid(format!(
                                "position {q} outside a prompt of {} tokens",
                                p.ids.len()
                            ))
                        })?;
                        let off = (b * tt + t) * w;
                        vecs.push(data[off..off + w].to_vec());
                    }
                    layers_out.push(vecs);
                }
                out.push(layers_out);
            }
        }
        Ok(out)
    }
}

/// Index of the largest value (first on ties; NaN never wins).
pub fn argmax_f32(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}
