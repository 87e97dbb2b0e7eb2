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
    /// Fine-tune the bundled small pretrained model on synthetic data: mAP before and after.
    Demo(commands::demo::Args),
    /// Fine-tune a model: loading report, training with snapshots, optional evaluation.
    Train(commands::train::Args),
    /// Score a model on the config's eval dataset (VOC/COCO mAP), or a COCO results file against annotations.
    Eval(commands::eval::Args),
    /// Draw a trained model's detections on pictures and list them as JSON.
    Infer(commands::infer::Args),
    /// Dry run: which pretrained parameters would load, and why others would not.
    Plan(commands::plan::Args),
    /// List the tensors of a checkpoint (name, dtype, shape, elements).
    Inspect(commands::inspect::Args),
    /// Convert a checkpoint to another format (dir, tar, pdparams, safetensors, params).
    ConvertWeights(commands::convert_weights::Args),
    /// A config as training reads it: `show` (YAML) or `convert` (RON), bases and overrides applied.
    #[command(subcommand)]
    Config(commands::config::Args),
    /// Inspect a dataset the way training reads it.
    #[command(subcommand)]
    Dataset(commands::dataset::Args),
    /// Convert VOC, labelme or cityscapes annotations to COCO (tools/x2coco.py).
    X2coco(commands::x2coco::Args),
    /// Write a synthetic detection dataset (coloured shapes) in VOC and/or COCO layout.
    Synth(commands::synth::Args),
    /// Measure speed and memory (train-step: images/s and peak RSS of a training step).
    Bench(commands::bench::Args),
    /// Show which device `--device auto|cpu|gpu` picks here (and load the GPU kernels).
    Device(commands::device::Args),
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => commands::demo::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Infer(args) => commands::infer::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::ConvertWeights(args) => commands::convert_weights::run(args),
        Command::Config(args) => commands::config::run(args),
        Command::Dataset(args) => commands::dataset::run(args),
        Command::X2coco(args) => commands::x2coco::run(args),
        Command::Synth(args) => commands::synth::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Device(args) => commands::device::run(args),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli.command) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
