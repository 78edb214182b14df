//! Rule vectors, read and patched by hand (Zheng, Ma, Lin, Yang, "Label Words as Local Task Vectors
//! in In-Context Learning").
//!
//! In a k-shot prompt `"hot -> cold\nbig -> small\n...up ->"`, each demonstration's *answer
//! position* (the first token of its output) carries a *rule vector*: the residual stream there
//! encodes the rule the demonstrations share. This example
//! 1. loads a model (a GGUF file, tokenizer included, or a Hugging Face folder) with `icl-probe`;
//! 2. tokenizes the source prompt and finds its answer positions (`icl-experiments`' [`Probe`],
//!    on `icl-tasks`' prompt format);
//! 3. reads the residual stream at those positions at layer `L` (`blocks.{L}.hook_resid_pre`) and
//!    averages it: the aggregated rule vector;
//! 4. runs the zero-shot target prompt `"{query} ->"` plain, then with its last position's residual
//!    at layer `L` replaced by the rule vector (a hook intervention), and prints the greedy answer
//!    before and after.
//!
//! ```sh
//! cargo run --release -p example-rule-vector-patch -- SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --demo hot=cold --demo big=small --demo fast=slow --demo young=old --query up=down
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use burn::tensor::Device;
use clap::Parser;
use icl_experiments::probe::argmax_f32;
use icl_experiments::{resid_hook, Probe};
use icl_probe::{load_model, load_tokenizer, Model, Tokenizer};
use icl_tasks::{Item, PromptSpec, Split};

/// burn's CPU backend; the same code runs on CUDA with `burn::backend::Cuda`.
type B = Flex;

#[derive(Parser)]
#[command(
    about = "Read rule vectors at a k-shot prompt's answer positions and patch them into a zero-shot prompt"
)]
struct Args {
    /// A `.gguf` file (its tokenizer is used) or a Hugging Face model folder.
    model: PathBuf,
    /// Tokenizer to use instead of the model's own (a `tokenizer.json`, a folder, or a GGUF).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A demonstration `input=output` of the source prompt (repeat; default: four antonyms).
    #[arg(long = "demo")]
    demos: Vec<String>,
    /// The zero-shot query `input=expected output`.
    #[arg(long, default_value = "up=down")]
    query: String,
    /// Layer L to read and patch (0 = embeddings, n = after the last block; default n / 2).
    #[arg(long)]
    layer: Option<usize>,
}

const ANTONYMS: [&str; 4] = ["hot=cold", "big=small", "fast=slow", "young=old"];

fn item(pair: &str) -> Result<Item> {
    let Some((input, output)) = pair.split_once('=') else {
        bail!("`{pair}`: expected input=output");
    };
    Ok(Item {
        input: input.trim().to_string(),
        output: output.trim().to_string(),
        split: Split::Train,
    })
}

fn load(args: &Args, device: &Device<B>) -> Result<(Model<B>, Tokenizer)> {
    Ok(match &args.tokenizer {
        Some(t) => (
            Model::load(&args.model, device)?,
            load_tokenizer(t).or_else(|_| Tokenizer::from_file(t))?,
        ),
        None => load_model(&args.model, device)?,
    })
}

/// A token as text, quoted (` cold` has its leading space).
fn show(tok: &Tokenizer, id: u32) -> String {
    match tok.id_to_token(id) {
        Some(_) => format!("{:?} (id {id})", tok.decode(&[id]).unwrap_or_default()),
        // A model's vocabulary can be larger than its tokenizer's (padding rows).
        None => format!("id {id} (not in the tokenizer)"),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = Default::default();
    let (model, tok) =
        load(&args, &device).with_context(|| format!("loading {}", args.model.display()))?;
    let n_layers = model.config().n_layers;
    let layer = args.layer.unwrap_or(n_layers / 2);
    if layer > n_layers {
        bail!("--layer {layer}: the model has {n_layers} blocks (0..={n_layers})");
    }

    let demo_pairs: Vec<&str> = if args.demos.is_empty() {
        ANTONYMS.to_vec()
    } else {
        args.demos.iter().map(String::as_str).collect()
    };
    let demos = demo_pairs
        .iter()
        .map(|d| item(d))
        .collect::<Result<Vec<_>>>()?;
    let query = item(&args.query)?;
    // The source prompt: k demonstrations and the same query; the rule vectors are read at the
    // demonstrations' answer positions, not at the query.
    let source = PromptSpec {
        demos,
        query: query.clone(),
    };
    // The target: the zero-shot prompt "{query} ->", which on its own shows no rule.
    let target = PromptSpec {
        demos: Vec::new(),
        query,
    };

    let probe = Probe::new(&model, &tok, 1);
    let prepared = probe.prepare_all(&[source.clone(), target])?;
    let (src, tgt) = (&prepared[0], &prepared[1]);
    println!("source prompt: {:?}", source.prompt().text);
    println!(
        "answer positions: {:?} of {} tokens",
        src.answer_positions,
        src.ids.len()
    );

    // Rule vectors: the residual stream at every answer position at layer L...
    let read = probe.residuals(std::slice::from_ref(src), &[layer], |p| {
        p.answer_positions.clone()
    })?;
    let rules = &read[0][0]; // [demonstration][d_model]
                             // ...aggregated by their mean (the paper's aggregation).
    let d = probe.d_model();
    let mut rule_vector = vec![0f32; d];
    for r in rules {
        for (acc, x) in rule_vector.iter_mut().zip(r) {
            *acc += x / rules.len() as f32;
        }
    }
    let norm = rule_vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    println!(
        "rule vector: mean of {} residuals at {} (layer {layer} of {n_layers}), norm {norm:.3}",
        rules.len(),
        resid_hook(n_layers, layer)
    );

    // The zero-shot prompt, plain and patched at its last position.
    let targets = std::slice::from_ref(tgt);
    let before = probe.logits_with(targets, |_, _| Ok(icl_probe::HookSpec::new()))?;
    let after = probe.logits_patched(targets, layer, &[rule_vector])?;
    let (b, a) = (argmax_f32(&before[0]), argmax_f32(&after[0]));
    let delta = before[0]
        .iter()
        .zip(&after[0])
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    println!("target prompt: {:?}", tok.decode(&tgt.ids)?);
    println!("expected answer: {}", show(&tok, tgt.target));
    println!("answer before: {}", show(&tok, b));
    println!("answer after:  {}", show(&tok, a));
    println!("max |logit change|: {delta:.4}");
    println!(
        "ids: before {b} after {a} expected {} changed {}",
        tgt.target,
        a != b
    );
    Ok(())
}
