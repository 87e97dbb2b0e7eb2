//! `pulsefocus x2coco`: PaddleDetection's `tools/x2coco.py` with the same
//! option names (underscore form, kebab-case aliases accepted).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use pulsefocus_formats::x2coco::{self, cityscape, labelme, voc, SplitOptions};

#[derive(Clone, Copy, ValueEnum)]
pub enum DatasetType {
    Voc,
    Labelme,
    Cityscape,
}

/// Convert VOC, labelme or cityscapes annotations to COCO instances JSON.
#[derive(ClapArgs)]
pub struct Args {
    #[arg(long = "dataset_type", alias = "dataset-type", value_enum)]
    pub dataset_type: DatasetType,
    /// labelme / cityscape: folder of annotation JSON files.
    #[arg(long = "json_input_dir", alias = "json-input-dir")]
    pub json_input_dir: Option<PathBuf>,
    /// labelme / cityscape: folder of images.
    #[arg(long = "image_input_dir", alias = "image-input-dir")]
    pub image_input_dir: Option<PathBuf>,
    #[arg(long = "output_dir", alias = "output-dir", default_value = "./")]
    pub output_dir: PathBuf,
    #[arg(
        long = "train_proportion",
        alias = "train-proportion",
        default_value_t = 1.0
    )]
    pub train_proportion: f64,
    #[arg(
        long = "val_proportion",
        alias = "val-proportion",
        default_value_t = 0.0
    )]
    pub val_proportion: f64,
    #[arg(
        long = "test_proportion",
        alias = "test-proportion",
        default_value_t = 0.0
    )]
    pub test_proportion: f64,
    /// VOC: folder of annotation XMLs.
    #[arg(long = "voc_anno_dir", alias = "voc-anno-dir")]
    pub voc_anno_dir: Option<PathBuf>,
    /// VOC: list of annotation ids (last token of each line).
    #[arg(long = "voc_anno_list", alias = "voc-anno-list")]
    pub voc_anno_list: Option<PathBuf>,
    /// VOC: label list, one category per line.
    #[arg(long = "voc_label_list", alias = "voc-label-list")]
    pub voc_label_list: Option<PathBuf>,
    #[arg(
        long = "voc_out_name",
        alias = "voc-out-name",
        default_value = "voc.json"
    )]
    pub voc_out_name: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let written = match args.dataset_type {
        DatasetType::Voc => {
            let need = |v: Option<PathBuf>, name: &str| {
                v.with_context(|| format!("--dataset_type voc needs --{name}"))
            };
            vec![voc::convert(&voc::VocOptions {
                voc_anno_dir: need(args.voc_anno_dir, "voc_anno_dir")?,
                voc_anno_list: need(args.voc_anno_list, "voc_anno_list")?,
                voc_label_list: need(args.voc_label_list, "voc_label_list")?,
                output_dir: args.output_dir,
                voc_out_name: args.voc_out_name,
            })?]
        }
        DatasetType::Labelme | DatasetType::Cityscape => {
            let need = |v: Option<PathBuf>, name: &str| {
                v.with_context(|| format!("this dataset type needs --{name}"))
            };
            let options = SplitOptions {
                json_input_dir: need(args.json_input_dir, "json_input_dir")?,
                image_input_dir: need(args.image_input_dir, "image_input_dir")?,
                output_dir: args.output_dir,
                train_proportion: args.train_proportion,
                val_proportion: args.val_proportion,
                test_proportion: args.test_proportion,
            };
            let convert = match args.dataset_type {
                DatasetType::Labelme => labelme::convert,
                _ => cityscape::convert,
            };
            x2coco::convert_split(convert, &options)?
        }
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
