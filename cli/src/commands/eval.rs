//! `pulsefocus eval` in two forms:
//! - `--gt ANNOTATIONS.json --detections bbox.json [--json]` scores an
//!   existing COCO results file against COCO annotations exactly as
//!   pycocotools' COCOeval(bbox) does and prints its 12 numbers in its layout;
//!   a results file of masks (`segm.json`) is scored as COCOeval(segm), and
//!   as COCOeval(bbox) as well when its detections also carry boxes (the two
//!   tables PaddleDetection prints for Mask R-CNN);
//! - `-c CONFIG -o weights=PATH [--json] [--output_eval DIR]` runs a trained
//!   model over the config's `EvalReader` dataset as PaddleDetection's
//!   `tools/eval.py` does, prints the config's metric (VOC mAP with a
//!   per-class AP table, or COCO's 12 numbers) and writes `bbox.json`; a
//!   model with masks (Mask R-CNN) also writes `segm.json` and, with the
//!   COCO metric, prints the masks' 12 numbers after the boxes'. The model
//!   runs on the backend `--device` picks.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args as ClapArgs;
use pulsefocus_core::config::Config;
use pulsefocus_core::finetune::weights::load_weights;
use pulsefocus_core::finetune::{
    build_detector, evaluate_config, load_dataset_for, EvalResult, Metric,
};
use pulsefocus_core::metrics::{evaluate_bbox, evaluate_segm, summary_lines};
use pulsefocus_core::Backend;
use pulsefocus_formats::coco_results::{
    read_coco_detections, read_coco_ground_truth, read_coco_ground_truth_with_masks,
    write_coco_mask_results, write_coco_results, CocoDetections, CocoResult,
};

use super::config_args::ConfigArgs;
use super::device::{DeviceArg, OnBackend};
use super::print_warnings;

#[derive(ClapArgs, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["gt", "config"])))]
pub struct Args {
    /// COCO annotations file (the ground truth).
    #[arg(long, value_name = "ANNOTATIONS.json", requires = "detections")]
    pub gt: Option<PathBuf>,
    /// COCO results file: a list of {image_id, category_id, bbox, score}, or
    /// of {image_id, category_id, segmentation (RLE), score} for masks.
    #[arg(long, value_name = "bbox.json", requires = "gt")]
    pub detections: Option<PathBuf>,
    /// The config file (RON) whose model and EvalReader dataset to evaluate.
    #[arg(short = 'c', long = "config", conflicts_with = "gt")]
    pub config: Option<PathBuf>,
    /// Overrides as for `train`; `weights=PATH` names the trained model.
    #[arg(short = 'o', long = "opt", num_args = 1.., value_name = "KEY=VALUE", requires = "config")]
    pub overrides: Vec<String>,
    /// Where `-c` writes `bbox.json` (and `segm.json` for a model with masks).
    #[arg(
        long = "output_eval",
        value_name = "DIR",
        default_value = "output",
        requires = "config"
    )]
    pub output_eval: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    // Used by `-c` only: scoring a results file runs no model.
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match (&args.gt, &args.detections, &args.config) {
        (Some(gt), Some(detections), None) => score_results_file(gt, detections, args.json),
        (None, None, Some(config)) => {
            let config_args = ConfigArgs {
                config: config.clone(),
                overrides: args.overrides.clone(),
                weights_cache: None,
            };
            let config = config_args.load()?;
            args.device.run_on(ModelEval {
                config_path: &config_args.config,
                config,
                output_dir: &args.output_eval,
                json: args.json,
            })
        }
        _ => anyhow::bail!("give either --gt and --detections, or -c CONFIG"),
    }
}

fn score_results_file(gt_path: &Path, detections: &Path, json: bool) -> anyhow::Result<()> {
    let context = || format!("{} against {}", detections.display(), gt_path.display());
    // (name, stats) per evaluation, the box one first as PaddleDetection prints them.
    let (gt, count, evals) = match read_coco_detections(detections)? {
        CocoDetections::Boxes(results) => {
            let gt = read_coco_ground_truth(gt_path)?;
            let eval = evaluate_bbox(&gt, &results).with_context(context)?;
            (gt, results.len(), vec![("bbox", eval)])
        }
        CocoDetections::Masks(results) => {
            let gt = read_coco_ground_truth_with_masks(gt_path)?;
            let mut evals = Vec::new();
            let boxes: Option<Vec<CocoResult>> = results
                .iter()
                .map(|r| {
                    r.bbox.map(|bbox| CocoResult {
                        image_id: r.image_id,
                        category_id: r.category_id,
                        bbox,
                        score: r.score,
                    })
                })
                .collect();
            if let Some(boxes) = boxes {
                evals.push(("bbox", evaluate_bbox(&gt, &boxes).with_context(context)?));
            }
            evals.push(("segm", evaluate_segm(&gt, &results).with_context(context)?));
            (gt, results.len(), evals)
        }
    };
    if json {
        // "stats" is the mask evaluation's where there is one; "bbox_stats"
        // is there whenever boxes were scored beside masks.
        let (main_type, main) = evals.last().context("no evaluation")?;
        let mut out = serde_json::json!({
            "iou_type": main_type,
            "stats": main.stats,
            "images": gt.image_ids.len(),
            "categories": main.category_ids.len(),
            "detections": count,
        });
        if evals.len() == 2 {
            out["bbox_stats"] = serde_json::json!(evals[0].1.stats);
        }
        println!("{out}");
    } else {
        let titled = evals.len() > 1 || evals[0].0 == "segm";
        for (iou_type, eval) in &evals {
            if titled {
                println!("IoU metric: {iou_type}");
            }
            for line in summary_lines(&eval.stats) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// `eval -c`: the trained model over the config's evaluation dataset, on the
/// backend `--device` picked.
struct ModelEval<'a> {
    config_path: &'a Path,
    config: Config,
    output_dir: &'a Path,
    json: bool,
}

impl OnBackend for ModelEval<'_> {
    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<()> {
        let ModelEval {
            config_path,
            config,
            output_dir,
            json,
        } = self;
        let weights = config.weights.as_deref().with_context(|| {
            format!(
                "{}: no weights to evaluate; pass -o weights=PATH",
                config_path.display()
            )
        })?;
        let mut model = build_detector(backend, &config, 0);
        print_warnings(&load_weights(model.net_mut(), Path::new(weights))?);
        let dataset = load_dataset_for(&config, config_path, "EvalReader")?;
        let result = evaluate_config(model.as_mut(), &config, config_path, &dataset)?;

        std::fs::create_dir_all(output_dir)
            .with_context(|| format!("creating {}", output_dir.display()))?;
        let bbox_json = output_dir.join("bbox.json");
        write_coco_results(&bbox_json, &result.detections)?;
        let segm_json = match &result.mask_detections {
            Some(masks) => {
                let path = output_dir.join("segm.json");
                write_coco_mask_results(&path, masks)?;
                Some(path)
            }
            None => None,
        };

        if json {
            let mut out = serde_json::json!({ "map": result.map, "images": result.images });
            match result.coco_stats {
                Some(stats) => out["stats"] = serde_json::json!(stats),
                None => out["per_class"] = per_class_json(&result, &dataset.class_names),
            }
            if let Some(stats) = result.segm_stats {
                out["segm_stats"] = serde_json::json!(stats);
            }
            println!("{out}");
        } else {
            print_table(
                &result,
                &dataset.class_names,
                &pulsefocus_core::finetune::metric_for(&config, config_path)?,
            )?;
            println!("detections: {}", bbox_json.display());
            if let Some(path) = segm_json {
                println!("masks: {}", path.display());
            }
        }
        Ok(())
    }
}

/// VOC: `{class name: AP or null}` (null where the class has no ground truth).
fn per_class_json(result: &EvalResult, names: &[String]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .zip(&result.per_class_ap)
        .map(|(name, ap)| (name.clone(), serde_json::json!(ap)))
        .collect();
    serde_json::Value::Object(map)
}

fn print_table(result: &EvalResult, names: &[String], metric: &Metric) -> anyhow::Result<()> {
    match metric {
        Metric::Voc { .. } => {
            println!("{:<20} {:>8}", "class", "AP");
            for (name, ap) in names.iter().zip(&result.per_class_ap) {
                match ap {
                    Some(ap) => println!("{name:<20} {:>8.4}", ap),
                    None => println!("{name:<20} {:>8}", "-"),
                }
            }
            println!("mAP(0.50) = {:.4} on {} images", result.map, result.images);
        }
        // The 12 lines in pycocotools' layout, from the evaluation's own
        // stats; with masks, titled as PaddleDetection prints the two.
        Metric::Coco { .. } => {
            let stats = result
                .coco_stats
                .context("a COCO evaluation without its 12 stats")?;
            let mut tables = vec![("bbox", stats)];
            tables.extend(result.segm_stats.map(|s| ("segm", s)));
            for (iou_type, stats) in &tables {
                if tables.len() > 1 {
                    println!("IoU metric: {iou_type}");
                }
                for line in summary_lines(stats) {
                    println!("{line}");
                }
            }
        }
    }
    Ok(())
}
