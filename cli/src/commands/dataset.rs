//! `pulsefocus dataset check`: reads datasets the way training will and
//! reports counts, per-class boxes, sizes and every problem found.
//!
//! The datasets come as `(name, DatasetSource)` pairs; today they are built
//! from command-line options, and a config file (`-c`) can supply the train
//! and eval pair through the same `check` function.

use std::io::Write;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use pulsefocus_formats::coco::CocoDataSet;
use pulsefocus_formats::dataset::DatasetSource;
use pulsefocus_formats::dataset_report::DatasetReport;
use pulsefocus_formats::voc::VocDataSet;

#[derive(Subcommand)]
pub enum Args {
    /// Load a dataset and list image/box counts, sizes and every problem.
    Check(CheckArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DatasetType {
    Coco,
    Voc,
}

#[derive(ClapArgs)]
pub struct CheckArgs {
    #[arg(long, value_enum)]
    pub dataset_type: DatasetType,
    #[arg(long)]
    pub dataset_dir: PathBuf,
    /// COCO instances JSON or VOC list file, relative to the dataset dir.
    #[arg(long)]
    pub anno_path: PathBuf,
    /// COCO image folder, relative to the dataset dir.
    #[arg(long, default_value = "images")]
    pub image_dir: PathBuf,
    /// VOC label file, relative to the dataset dir.
    #[arg(long, default_value = "label_list.txt")]
    pub label_list: PathBuf,
    /// VOC: use the 20 Pascal VOC class names instead of the label file.
    #[arg(long)]
    pub use_default_label: bool,
    #[arg(long)]
    pub with_background: bool,
    /// COCO: keep images without boxes.
    #[arg(long)]
    pub allow_empty: bool,
    /// COCO: keep crowd boxes.
    #[arg(long)]
    pub load_crowd: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl CheckArgs {
    fn source(&self) -> DatasetSource {
        match self.dataset_type {
            DatasetType::Coco => DatasetSource::Coco(CocoDataSet {
                dataset_dir: self.dataset_dir.clone(),
                image_dir: self.image_dir.clone(),
                anno_path: self.anno_path.clone(),
                with_background: self.with_background,
                allow_empty: self.allow_empty,
                load_crowd: self.load_crowd,
            }),
            DatasetType::Voc => DatasetSource::Voc(VocDataSet {
                dataset_dir: self.dataset_dir.clone(),
                anno_path: self.anno_path.clone(),
                label_list: self.label_list.clone(),
                use_default_label: self.use_default_label,
                with_background: self.with_background,
            }),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args {
        Args::Check(args) => {
            let name = args.anno_path.display().to_string();
            check(&[(name, args.source())], args.json)
        }
    }
}

/// Reports as one JSON object keyed by dataset name, in the given order.
struct ByName<'a>(&'a [DatasetReport]);

impl serde::Serialize for ByName<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for report in self.0 {
            map.serialize_entry(&report.name, report)?;
        }
        map.end()
    }
}

/// Checks each named dataset and prints the reports: text, or with `json` one
/// object (the report itself for one dataset, `{name: report}` for several).
/// Fails after printing when any dataset has errors training would stop on.
pub fn check(datasets: &[(String, DatasetSource)], json: bool) -> anyhow::Result<()> {
    let reports: Vec<DatasetReport> = datasets
        .iter()
        .map(|(name, source)| {
            let (dataset, errors) = source.load_collecting_errors();
            DatasetReport::new(name, &dataset, source.first_class(), errors)
        })
        .collect();
    // Written through a handle so a closed pipe is an error, not a panic.
    let mut out = std::io::stdout().lock();
    if json {
        let text = match reports.as_slice() {
            [one] => serde_json::to_string_pretty(one)?,
            many => serde_json::to_string_pretty(&ByName(many))?,
        };
        writeln!(out, "{text}")?;
    } else {
        for report in &reports {
            write!(out, "{}", report.to_text())?;
        }
    }
    let errors: usize = reports.iter().map(|r| r.errors).sum();
    if errors > 0 {
        bail!("{errors} error(s) found; training would stop on this data");
    }
    Ok(())
}
