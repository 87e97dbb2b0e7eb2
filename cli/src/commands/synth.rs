//! `pulsefocus synth`: writes a deterministic synthetic detection dataset.

use std::path::PathBuf;

use clap::{Args as ClapArgs, ValueEnum};
use pulsefocus_formats::synth::{self, SynthConfig, SynthFormat, CATALOGUE_LEN};

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Voc,
    Coco,
    Both,
}

/// Coloured shapes on textured backgrounds, in VOC and/or COCO layout.
#[derive(ClapArgs)]
pub struct Args {
    /// Output directory (must be new, empty, or an earlier synth dataset).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of classes, taken from the catalogue of (colour, shape) pairs.
    #[arg(long, default_value_t = 4, conflicts_with = "names")]
    pub classes: usize,
    /// Class names, comma-separated, in place of the catalogue's (one class
    /// each), e.g. `--names apple,banana,orange` for the fruit config.
    #[arg(long, value_delimiter = ',')]
    pub names: Vec<String>,
    /// First catalogue entry used; pick another slice to fine-tune on new classes.
    #[arg(long, default_value_t = 0)]
    pub first_class: usize,
    #[arg(long, default_value_t = 200)]
    pub images: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Format::Both)]
    pub format: Format,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = SynthConfig {
        classes: if args.names.is_empty() {
            args.classes
        } else {
            args.names.len()
        },
        first_class: args.first_class,
        images: args.images,
        size: args.size,
        seed: args.seed,
        format: match args.format {
            Format::Voc => SynthFormat::Voc,
            Format::Coco => SynthFormat::Coco,
            Format::Both => SynthFormat::Both,
        },
        names: args.names,
    };
    let summary = synth::write(&args.out, &config)?;
    println!(
        "wrote {} images ({} train, {} val/test) with {} objects to {}",
        config.images,
        summary.train_images,
        summary.val_images,
        summary.objects,
        args.out.display()
    );
    println!(
        "classes (catalogue {}..{} of {CATALOGUE_LEN}): {}",
        config.first_class,
        config.first_class + config.classes,
        summary.class_names.join(", ")
    );
    Ok(())
}
