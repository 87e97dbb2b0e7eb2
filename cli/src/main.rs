//! `pulsefocus`: fine-tune PaddleDetection detectors on your own data.
//!
//! Each subcommand lives in its own file under `commands/` with an `Args`
//! struct and a `run` function; this file only dispatches and turns errors into
//! one line on stderr and a non-zero exit code.

use clap::{Parser, Subcommand};

mod commands;

#[derive(Parser)]
#[command(name = "pulsefocus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dry run: which pretrained parameters would load, and why others would not.
    Plan(commands::plan::Args),
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Plan(args) => commands::plan::run(args),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli.command) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
