//! Rule vectors, read and patched by hand (Zheng, Ma, Lin, Yang, "Label Words as Local Task Vectors
//! in In-Context Learning").
//!
//! In a k-shot prompt `"hot -> cold\nbig -> small\n...up ->"`, each demonstration's *answer
//! position* (the first token of its output) carries a *rule vector*: the residual stream there
//! encodes the rule the demonstrations share. This example
//! 1. loads a model (a GGUF file, tokenizer included, or a Hugging Face folder) with `icl-probe`;
//! 2. tokenizes the source prompt and finds its answer positions (`icl-experiments`' [`Probe`],
//!    on `icl-tasks`' prompt format);
//! 3. reads the residual stream at those positions at layer `L` (`blocks.{L}.hook_resid_pre`): one
//!    rule vector per demonstration;
//! 4. runs a target prompt plain, then with rule vectors written into its residual stream at layer
//!    `L` (a hook intervention), and prints the greedy answer before and after. The target is by
//!    default the same prompt with the rule broken (outputs rotated), each rule vector written at
//!    its answer position (`--into transplant`); or the zero-shot `"{query} ->"` with their mean at
//!    the last position (`--into zero-shot`).
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
    /// Where the rule vectors go.
    #[arg(long, value_enum, default_value = "transplant")]
    into: Into,
}

/// The prompt that receives the rule vectors.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Into {
    /// The same demonstrations with their outputs rotated (the rule broken), at its answer positions.
    Transplant,
    /// The zero-shot prompt "{query} ->", their mean at its last position.
    ZeroShot,
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
    // The target, which on its own does not show the rule:
    // - transplant: the same inputs with the outputs rotated by one ("hot -> small", ...), so no
    //   demonstration follows the rule; each of P's rule vectors replaces the residual at the
    //   corresponding answer position of this prompt (the paper's transplant experiment);
    // - zero-shot: "{query} ->", whose last position receives the mean of P's rule vectors.
    let target = match args.into {
        Into::Transplant => {
            let n = source.demos.len();
            PromptSpec {
                demos: (0..n)
                    .map(|i| Item {
                        output: source.demos[(i + 1) % n].output.clone(),
                        ..source.demos[i].clone()
                    })
                    .collect(),
                query: query.clone(),
            }
        }
        Into::ZeroShot => PromptSpec {
            demos: Vec::new(),
            query,
        },
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

    // Rule vectors: the residual stream at every answer position at layer L.
    let read = probe.residuals(std::slice::from_ref(src), &[layer], |p| {
        p.answer_positions.clone()
    })?;
    let rules = read[0][0].clone(); // [demonstration][d_model]
    println!(
        "rule vectors: {} residuals at {} (layer {layer} of {n_layers})",
        rules.len(),
        resid_hook(n_layers, layer)
    );

    let targets = std::slice::from_ref(tgt);
    let before = probe.logits_with(targets, |_, _| Ok(icl_probe::HookSpec::new()))?;
    let after = match args.into {
        // One rule vector per answer position, in order.
        Into::Transplant => probe.logits_patched_at(
            targets,
            layer,
            std::slice::from_ref(&tgt.answer_positions),
            &[rules],
        )?,
        // Their mean (the paper's aggregation) at the last position.
        Into::ZeroShot => {
            let mut mean = vec![0f32; probe.d_model()];
            for r in &rules {
                for (acc, x) in mean.iter_mut().zip(r) {
                    *acc += x / rules.len() as f32;
                }
            }
            probe.logits_patched(targets, layer, &[mean])?
        }
    };
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
