//! `lab`: the telemetry lab's front door. Run with `cargo lab --help`.

use clap::{Parser, Subcommand};

/// The telemetry lab: run both pipelines side by side and compare them.
#[derive(Debug, Parser)]
#[command(name = "lab", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start Redis, both systems, agents and the dashboard, and show them live side by side.
    Up,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up => anyhow::bail!(
            "`lab up` is not built yet (issue #6). Until then, `cargo test --workspace` runs what exists."
        ),
    }
}
