//! `icl-probe`: run hookable transformers from the command line.
//!
//! Each subcommand lives in its own module with a clap `Args` struct and a `run` function; add a
//! new one by adding a module and a variant to [`Command`].

mod backend;
mod forward;
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

#[derive(Subcommand)]
enum Command {
    /// Top-5 next tokens for each prompt of a JSONL file.
    Predict(predict::Args),
    /// Logits and cached activations for token ids from a safetensors file.
    Forward(forward::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Predict(a) => backend::dispatch(a.device.device, a),
        Command::Forward(a) => backend::dispatch(a.device.device, a),
    }
}
