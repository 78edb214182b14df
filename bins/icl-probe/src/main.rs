//! `icl-probe`: run hookable transformers from the command line.
//!
//! Each subcommand lives in its own module with a clap `Args` struct and a `run` function; add a
//! new one by adding a module and a variant to [`Command`].

mod backend;
mod choices;
mod experiments_cli;
mod forward;
mod hooks_cli;
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
    /// Progress bars with ETA on stderr: `auto` when stderr is a terminal, `always` (plain lines
    /// when it is not, e.g. under nohup), `never`. Results always go to stdout or files.
    #[arg(long, value_enum, global = true, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
    /// No progress and no log lines on stderr (errors still show); the same as `--progress never`.
    #[arg(long, short, global = true)]
    quiet: bool,
}

/// `--progress` choices.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ProgressArg {
    /// A bar when stderr is a terminal, nothing otherwise.
    Auto,
    /// A bar on a terminal, plain progress lines (every few seconds) otherwise.
    Always,
    /// No progress output.
    Never,
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
    /// Every hook name with its shape for a prompt length (TransformerLens's hook_dict).
    Hooks(hooks_cli::Args),
    /// Print a shell completion script (e.g. `icl-probe completions bash > /etc/bash_completion.d/icl-probe`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Build the ICL task sets (JSONL) from the asset cache.
    Tasks(experiments_cli::TasksArgs),
    /// Markdown report and plots from a folder of results.
    Report(experiments_cli::ReportArgs),
    /// A few-minute version of the experiments on one task.
    Demo(experiments_cli::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    icl_experiments::set_progress_mode(match (cli.quiet, cli.progress) {
        (true, _) | (_, ProgressArg::Never) => icl_experiments::ProgressMode::Never,
        (false, ProgressArg::Auto) => icl_experiments::ProgressMode::Auto,
        (false, ProgressArg::Always) => icl_experiments::ProgressMode::Always,
    });
    let command = cli.command;
    refuse_outputs_over_inputs(&command)?;
    match command {
        Command::Hooks(a) => hooks_cli::run(a),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "icl-probe", &mut std::io::stdout());
            Ok(())
        }
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
        Command::Tasks(_)
        | Command::Report(_)
        | Command::Hooks(_)
        | Command::Completions { .. } => Ok(()),
    }
}
