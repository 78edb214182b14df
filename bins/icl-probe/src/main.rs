//! `icl-probe`: run hookable transformers from the command line.
//!
//! Each subcommand lives in its own module with a clap `Args` struct and a `run` function; add a
//! new one by adding a module and a variant to [`Command`].

mod backend;
mod experiments_cli;
mod forward;
mod issue13_cli;
mod predict;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "icl-probe",
    version,
    about = "Hookable decoder transformers on real weights"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the large `run` arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Top-5 next tokens for each prompt of a JSONL file.
    Predict(predict::Args),
    /// Logits and cached activations for token ids from a safetensors file.
    Forward(forward::Args),
    /// Run an ICL experiment (baseline, icl, task-vector, rule-vector, rule-vector-sites, knockout, pca, transplant, all).
    Run(experiments_cli::RunArgs),
    /// Build the ICL task sets (JSONL) from the asset cache.
    Tasks(experiments_cli::TasksArgs),
    /// Markdown report and plots from a folder of results.
    Report(experiments_cli::ReportArgs),
    /// A few-minute version of the experiments on one task.
    Demo(experiments_cli::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    refuse_outputs_over_inputs(&command)?;
    match command {
        Command::Predict(a) => backend::dispatch(a.device.device, a),
        Command::Forward(a) => backend::dispatch(a.device.device, a),
        Command::Run(a) => backend::dispatch(a.device.device, a),
        Command::Tasks(a) => experiments_cli::tasks(a),
        Command::Report(a) => experiments_cli::report(a),
        Command::Demo(a) => backend::dispatch(a.device.device, a),
    }
}

/// An output (or output folder) that is, or resolves to, an input, or lies inside an input model
/// folder, is refused before any work (#21: `forward --output` overwrote a model shard).
fn refuse_outputs_over_inputs(command: &Command) -> Result<(), formats::OutputError> {
    match command {
        Command::Predict(a) => formats::check_output(&a.output, [&a.model, &a.prompts]),
        Command::Forward(a) => formats::check_output(&a.output, [&a.model, &a.input_ids]),
        Command::Run(a) => formats::check_output(
            &a.out,
            [Some(&a.model), a.data.data.as_ref()].into_iter().flatten(),
        ),
        Command::Demo(a) => formats::check_output(&a.out, [&a.model]),
        Command::Tasks(_) | Command::Report(_) => Ok(()),
    }
}
