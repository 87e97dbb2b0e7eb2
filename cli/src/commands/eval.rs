//! `pulsefocus eval --gt ANNOTATIONS.json --detections bbox.json [--json]`:
//! scores an existing COCO results file against COCO annotations exactly as
//! pycocotools' COCOeval(bbox) does and prints its 12 numbers in its layout.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use pulsefocus_core::metrics::evaluate_bbox;
use pulsefocus_formats::coco_results::{read_coco_ground_truth, read_coco_results};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// COCO annotations file (the ground truth).
    #[arg(long, value_name = "ANNOTATIONS.json")]
    pub gt: PathBuf,
    /// COCO results file: a list of {image_id, category_id, bbox, score}.
    #[arg(long, value_name = "bbox.json")]
    pub detections: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let gt = read_coco_ground_truth(&args.gt)?;
    let results = read_coco_results(&args.detections)?;
    let eval = evaluate_bbox(&gt, &results).with_context(|| {
        format!(
            "{} against {}",
            args.detections.display(),
            args.gt.display()
        )
    })?;
    if args.json {
        let out = serde_json::json!({
            "stats": eval.stats,
            "images": gt.image_ids.len(),
            "categories": eval.category_ids.len(),
            "detections": results.len(),
        });
        println!("{out}");
    } else {
        for line in eval.summary_lines() {
            println!("{line}");
        }
    }
    Ok(())
}
