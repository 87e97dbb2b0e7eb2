//! `pulsefocus plan -c CONFIG [-o key=value ...] [--json]`: the dry run of
//! transfer learning. Reads the config and its pretrained checkpoint and shows,
//! for every model parameter, whether it would load and why not; trains nothing.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use pulsefocus_core::config;
use pulsefocus_core::loading::plan_for_config;
use pulsefocus_formats::weights_source::default_cache_dir;

#[derive(ClapArgs)]
pub struct Args {
    /// The config file (RON).
    #[arg(short = 'c', long = "config")]
    pub config: PathBuf,
    /// Overrides in PaddleDetection's syntax, e.g. `-o TrainReader.batch_size=4
    /// pretrain_weights=PATH finetune_exclude_pretrained_params=['yolo_output']`.
    #[arg(short = 'o', long = "opt", num_args = 1.., value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print one JSON object (model, loaded, excluded, shape_mismatch, missing,
    /// unused) instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Where URLs are downloaded (PaddleDetection's cache by default).
    #[arg(long, value_name = "DIR")]
    pub weights_cache: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let overrides = config::parse_overrides(&args.overrides)?;
    let config = config::load(&args.config, &overrides)?;
    let cache = args.weights_cache.unwrap_or_else(default_cache_dir);
    let (report, pretrained) = plan_for_config(&args.config, &config, &cache)
        .with_context(|| format!("planning {}", args.config.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let spec = config.model_spec();
    let values: usize = report
        .model
        .iter()
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    println!(
        "model: YOLOv3 with {} backbone, {} classes: {} parameters, {} values",
        config.yolov3.backbone,
        spec.num_classes,
        report.model.len(),
        values
    );
    match (&config.pretrain_weights, &pretrained) {
        (Some(source), Some(p)) => println!(
            "pretrain_weights: {source}\n  read from {} ({} tensors)",
            p.path.display(),
            p.checkpoint.len()
        ),
        _ => println!("pretrain_weights: none (every parameter keeps its initial value)"),
    }
    let patterns = config.exclude_patterns()?;
    if !patterns.is_empty() {
        println!("finetune_exclude_pretrained_params: {patterns:?}");
    }
    println!();
    print!("{}", report.render());
    Ok(())
}
