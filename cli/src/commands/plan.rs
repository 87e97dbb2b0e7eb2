//! `pulsefocus plan -c CONFIG [-o key=value ...] [--json]`: the dry run of
//! transfer learning. Reads the config and its pretrained checkpoint and shows,
//! for every model parameter, whether it would load and why not; trains nothing.

use clap::Args as ClapArgs;
use pulsefocus_core::loading::plan_for_config;

use super::config_args::ConfigArgs;
use super::download::DownloadProgress;
use super::print_warnings;

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print one JSON object (model, loaded, excluded, shape_mismatch, missing,
    /// unused) instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let path = &args.config.config;
    // Its errors name the file and place already (config key, checkpoint, URL).
    let mut download = DownloadProgress::default();
    let (report, pretrained) =
        plan_for_config(path, &config, &args.config.weights_cache(), &mut |d| {
            download.on_event(d)
        })?;
    if args.json {
        // The text report carries them; JSON keeps its schema.
        print_warnings(&report.checkpoint_warnings);
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
        "model: {}, {} classes: {} parameters, {} values",
        spec.describe(),
        spec.foreground_classes(),
        report.model.len(),
        values
    );
    // Without pretrain_weights the report itself says so.
    if let (Some(source), Some(p)) = (&config.pretrain_weights, &pretrained) {
        println!(
            "pretrain_weights: {source}\n  read from {} ({} tensors)",
            p.path.display(),
            p.checkpoint.len()
        );
    }
    let patterns = config.exclude_patterns()?;
    if !patterns.is_empty() {
        println!("finetune_exclude_pretrained_params: {patterns:?}");
    }
    println!();
    print!("{}", report.render());
    Ok(())
}
