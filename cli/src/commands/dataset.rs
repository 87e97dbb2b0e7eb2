//! `pulsefocus dataset check`: reads datasets the way training will and
//! reports counts, per-class boxes, sizes and every problem found.
//!
//! The datasets come from a config (`-c`: its TrainReader, EvalReader and
//! TestReader, checked against its `num_classes` too) or from command-line
//! options (`--dataset-type ...`); both go through the same reading, report
//! and printing.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{ArgGroup, Args as ClapArgs, Subcommand, ValueEnum};
use pulsefocus_core::config::{Config, DataSet};
use pulsefocus_formats::coco::CocoDataSet;
use pulsefocus_formats::dataset::{Dataset, DatasetSource, Problem};
use pulsefocus_formats::dataset_report::DatasetReport;
use pulsefocus_formats::voc::VocDataSet;

use super::config_args::ConfigArgs;

#[derive(Subcommand)]
pub enum Args {
    /// Load a config's datasets (-c) or one dataset (--dataset-type ...) and
    /// list image/box counts, sizes and every problem.
    Check(CheckArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DatasetType {
    Coco,
    Voc,
}

#[derive(ClapArgs)]
#[command(group(ArgGroup::new("input").required(true).args(["config", "dataset_type"])))]
pub struct CheckArgs {
    /// Check the datasets of this config's TrainReader, EvalReader and TestReader.
    #[command(flatten)]
    pub config: Option<ConfigArgs>,
    /// Check one dataset given by its fields.
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A dataset's fields as options, named as in a config's dataset entry.
/// Optional for clap (`-c` needs none of them); `--dataset-type` requires
/// the directory and annotation file, and the rest go only with it.
#[derive(ClapArgs)]
#[command(group(
    ArgGroup::new("fields")
        .multiple(true)
        .args(["dataset_dir", "anno_path", "image_dir", "label_list", "use_default_label",
               "with_background", "allow_empty", "load_crowd"])
        .requires("dataset_type")
        .conflicts_with("config")
))]
pub struct DatasetArgs {
    #[arg(long, value_enum)]
    pub dataset_type: Option<DatasetType>,
    #[arg(long)]
    pub dataset_dir: Option<PathBuf>,
    /// COCO instances JSON or VOC list file, relative to the dataset dir.
    #[arg(long)]
    pub anno_path: Option<PathBuf>,
    /// COCO image folder, relative to the dataset dir [default: images].
    #[arg(long)]
    pub image_dir: Option<PathBuf>,
    /// VOC label file, relative to the dataset dir [default: label_list.txt].
    #[arg(long)]
    pub label_list: Option<PathBuf>,
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
}

impl DatasetArgs {
    /// The dataset the options describe (clap has made `--dataset-type` present).
    fn source(&self) -> anyhow::Result<(String, DatasetSource)> {
        let (Some(dataset_type), Some(dataset_dir), Some(anno_path)) =
            (self.dataset_type, &self.dataset_dir, &self.anno_path)
        else {
            bail!("--dataset-type needs --dataset-dir and --anno-path");
        };
        let name = anno_path.display().to_string();
        let (dataset_dir, anno_path) = (dataset_dir.clone(), anno_path.clone());
        let source = match dataset_type {
            DatasetType::Coco => DatasetSource::Coco(CocoDataSet {
                dataset_dir,
                image_dir: self.image_dir.clone().unwrap_or_else(|| "images".into()),
                anno_path,
                with_background: self.with_background,
                allow_empty: self.allow_empty,
                load_crowd: self.load_crowd,
                with_polygons: false,
            }),
            DatasetType::Voc => DatasetSource::Voc(VocDataSet {
                dataset_dir,
                anno_path,
                label_list: self
                    .label_list
                    .clone()
                    .unwrap_or_else(|| "label_list.txt".into()),
                use_default_label: self.use_default_label,
                with_background: self.with_background,
            }),
        };
        Ok((name, source))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args::Check(args) = args;
    match &args.config {
        Some(config_args) => {
            let config = config_args.load()?;
            print(&check_config(&config, &config_args.config), args.json, true)
        }
        None => check(&[args.dataset.source()?], args.json),
    }
}

/// Checks each named dataset and prints the reports (see `print`).
pub fn check(datasets: &[(String, DatasetSource)], json: bool) -> anyhow::Result<()> {
    let reports: Vec<DatasetReport> = datasets
        .iter()
        .map(|(name, source)| {
            let (dataset, first_class, errors) = read(source);
            DatasetReport::new(name, &dataset, first_class, errors)
        })
        .collect();
    print(&reports, json, datasets.len() > 1)
}

/// One report per dataset the config names, read as `train` and `eval` read
/// them (paths relative to the working directory): the TrainReader, the
/// EvalReader, and the TestReader when it names an annotation file (of an
/// `ImageFolder`, only the class names are read, as `infer` does). Each
/// dataset's class count is checked against `num_classes`.
pub fn check_config(config: &Config, config_path: &Path) -> Vec<DatasetReport> {
    let readers = [
        ("TrainReader", Some(&config.train_reader)),
        ("EvalReader", config.eval_reader.as_ref()),
        ("TestReader", config.test_reader.as_ref()),
    ];
    let mut reports = Vec::new();
    for (name, reader) in readers {
        let Some(reader) = reader else { continue };
        let (dataset, first_class, mut errors) = match &reader.dataset {
            DataSet::ImageFolder(_) if name == "TestReader" => {
                // Only the class names are read, when it names a file of them.
                if reader.dataset.image_folder_labels().is_none() {
                    continue;
                }
                match reader.dataset.class_names() {
                    Ok(class_names) => {
                        let dataset = Dataset {
                            class_names,
                            ..Dataset::default()
                        };
                        (dataset, 0, Vec::new())
                    }
                    Err(e) => (Dataset::default(), 0, vec![Problem::from_error(&e)]),
                }
            }
            _ => match reader.dataset_source() {
                Ok(source) => read(&source),
                Err(e) => (Dataset::default(), 0, vec![Problem::from_error(&e)]),
            },
        };
        // A file that could not be read has no class list to compare.
        if !dataset.class_names.is_empty() || errors.is_empty() {
            let from = reader.dataset.class_names_from();
            if let Err(e) = config.check_num_classes(config_path, &dataset.class_names, &from) {
                errors.push(Problem::from_error(&e));
            }
        }
        reports.push(DatasetReport::new(name, &dataset, first_class, errors));
    }
    reports
}

/// Reads a dataset as training does, every error collected as a problem. A
/// dataset that reads without errors but keeps no image is one more error:
/// training and evaluation stop on it.
fn read(source: &DatasetSource) -> (Dataset, u32, Vec<Problem>) {
    let (dataset, mut errors) = source.load_collecting_errors();
    if dataset.records.is_empty() && errors.is_empty() {
        let file = match source {
            DatasetSource::Coco(coco) => coco.anno_file(),
            DatasetSource::Voc(voc) => voc.list_file(),
        };
        errors.push(Problem {
            file: file.display().to_string(),
            place: String::new(),
            what: "error: no usable images; training and evaluation would stop here".into(),
        });
    }
    (dataset, source.first_class(), errors)
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

/// Prints the reports: text, or with `json` one object (`{name: report}`
/// when `by_name`, else the one report itself). Fails after printing when
/// any dataset has errors training would stop on, naming the first error's
/// file and place (the report lists them all).
fn print(reports: &[DatasetReport], json: bool, by_name: bool) -> anyhow::Result<()> {
    // Written through a handle so a closed pipe is an error, not a panic.
    let mut out = std::io::stdout().lock();
    if json {
        let text = match reports {
            [one] if !by_name => serde_json::to_string_pretty(one)?,
            many => serde_json::to_string_pretty(&ByName(many))?,
        };
        writeln!(out, "{text}")?;
    } else {
        for report in reports {
            write!(out, "{}", report.to_text())?;
        }
    }
    let errors: usize = reports.iter().map(|r| r.errors).sum();
    // A report lists its errors first.
    let first = reports
        .iter()
        .find_map(|r| r.problems.first().filter(|_| r.errors > 0));
    if let Some(first) = first {
        let place = match first.place.as_str() {
            "" => String::new(),
            place => format!(" ({place})"),
        };
        let what = first.what.strip_prefix("error: ").unwrap_or(&first.what);
        bail!(
            "{}{place}: {what}; {errors} error(s) found, all in the report; \
             training would stop on this data",
            first.file
        );
    }
    Ok(())
}
