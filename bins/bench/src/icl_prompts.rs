//! `icl-prompts`: real k-shot ICL prompts, exported as JSON for the real-model parity fixtures
//! (crates/icl-probe/tests/fixtures/real_models/prompts.json, made by tools/real_model_reference.py).
//!
//! The prompts come from the same code the experiments use: the task builders of `icl-tasks` on the
//! cached data (WordNet, countryinfo), `sample_prompts` on the test split and `PromptSpec::prompt`'s
//! `"{in} -> {out}\n"` formatting, so the parity test checks the model on exactly the inputs the
//! rule-vector experiments feed it. Only the text is exported: tokenisation is per model.

use std::path::Path;

use icl_tasks::{sample_prompts, Sources, Split, TaskBuilder};

/// One exported prompt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportedPrompt {
    pub task: String,
    pub query: String,
    /// The expected answer (the model is right when its next token is the first token of
    /// `" " + output`).
    pub output: String,
    pub text: String,
}

/// The whole export with how it was made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Export {
    pub made_by: String,
    pub shots: usize,
    pub per_task: usize,
    pub seed: u64,
    pub data_seed: u64,
    pub prompts: Vec<ExportedPrompt>,
}

/// Builds `per_task` `shots`-shot test prompts for every task in `tasks` and writes them to `out`.
pub fn run(
    tasks: &[String],
    per_task: usize,
    shots: usize,
    seed: u64,
    data_seed: u64,
    out: &Path,
) -> anyhow::Result<()> {
    let mut builder = TaskBuilder::new(Sources {
        wordnet: assets::cached("wordnet-3.0"),
        freedict: assets::cached("freedict-eng-fra"),
        countryinfo: assets::cached("countryinfo"),
    });
    let mut prompts = Vec::new();
    for name in tasks {
        let set = builder.build(name, data_seed).map_err(|e| {
            anyhow::anyhow!(
                "building task {name}: {e} (fetch the data with `cargo run --release -p assets-cli -- fetch`)"
            )
        })?;
        let specs = sample_prompts(&set, Split::Test, shots, per_task, seed)?;
        anyhow::ensure!(
            specs.len() == per_task,
            "task {name}: only {} test queries, asked for {per_task}",
            specs.len()
        );
        prompts.extend(specs.iter().map(|s| ExportedPrompt {
            task: name.clone(),
            query: s.query.input.clone(),
            output: s.query.output.clone(),
            text: s.prompt().text,
        }));
    }
    let export = Export {
        made_by: format!(
            "icl-gdd-bench icl-prompts --tasks {} --per-task {per_task} --shots {shots} --seed {seed} --data-seed {data_seed}",
            tasks.join(",")
        ),
        shots,
        per_task,
        seed,
        data_seed,
        prompts,
    };
    let text = serde_json::to_string_pretty(&export)? + "\n";
    std::fs::write(out, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
    eprintln!(
        "{} prompts ({} tasks × {per_task}, {shots}-shot) -> {}",
        export.prompts.len(),
        tasks.len(),
        out.display()
    );
    Ok(())
}
