//! Scoring a model on a dataset as PaddleDetection's `eval.py` does: every
//! image once through the evaluation pipeline, detections decoded and
//! suppressed, then the VOC metric (mAP at IoU 0.5, 11-point or area,
//! difficult ignored) or the COCO metric (pycocotools' 12 numbers, scored
//! against the dataset's own annotation file). The detections are returned in
//! COCO results form either way, for `bbox.json`.

use std::path::PathBuf;
use std::sync::Arc;

use pulsefocus_formats::coco_results::{read_coco_ground_truth, CocoGroundTruth, CocoResult};
use pulsefocus_formats::dataset::Dataset;
use pulsefocus_formats::{Error, Result};

use super::predict::Predictor;
use crate::backend::Backend;
use crate::data::loader::{Loader, LoaderConfig};
use crate::detector::Detector;
use crate::metrics::coco::evaluate_bbox;
use crate::metrics::voc::{ApType, DetectionMap};

/// Which metric, as the config's `metric` and `map_type` keys say.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    Voc {
        ap_type: ApType,
        evaluate_difficult: bool,
        /// The evaluation reader's PadBox size: as in PaddleDetection, an
        /// image's boxes beyond it are not scored against.
        max_ground_truth: Option<usize>,
    },
    /// Scored against this instances JSON (the dataset's `anno_path`).
    Coco { annotations: PathBuf },
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvalResult {
    /// VOC mAP@0.5, or COCO AP@[.5:.95] (the first of the 12 stats).
    pub map: f64,
    /// VOC: AP per class (None where a class has no ground truth).
    pub per_class_ap: Vec<Option<f64>>,
    /// COCO: pycocotools' 12 stats.
    pub coco_stats: Option<[f64; 12]>,
    /// Every detection, category ids as the COCO file has them (VOC: class
    /// index + 1) and boxes as `[x, y, w, h]`.
    pub detections: Vec<CocoResult>,
    pub images: usize,
}

/// Evaluates `model`, whose detections are numbered over `num_classes`
/// object classes, on `dataset`; the model is left in evaluation mode.
pub fn evaluate<B: Backend>(
    model: &mut dyn Detector<B>,
    num_classes: usize,
    dataset: &Dataset,
    loader: LoaderConfig,
    metric: &Metric,
    with_background: bool,
) -> Result<EvalResult> {
    let records = Arc::new(dataset.records.clone());
    let offset = usize::from(with_background);
    let mut scorer = match metric {
        Metric::Voc {
            ap_type,
            evaluate_difficult,
            ..
        } => {
            let mut voc = DetectionMap::new(num_classes, *ap_type, *evaluate_difficult);
            voc.is_bbox_normalized = model.boxes_normalized();
            Scorer::Voc(voc)
        }
        Metric::Coco { annotations } => Scorer::Coco {
            gt: read_coco_ground_truth(annotations)?,
            annotations: annotations.clone(),
        },
    };
    let max_ground_truth = match metric {
        Metric::Voc {
            max_ground_truth: Some(n),
            ..
        } => *n,
        _ => usize::MAX,
    };
    // Detections carry COCO category ids: the file's, or class index + 1.
    let category_ids: Vec<i64> = match &scorer {
        Scorer::Coco { gt, .. } => gt.category_ids.clone(),
        Scorer::Voc(_) => (1..=num_classes as i64).collect(),
    };

    let mut predictor = Predictor::new(model.net().backend());
    let mut detections = Vec::new();
    let mut images = 0;
    for batch in Loader::new(records.clone(), loader, 0, Some(1))? {
        let batch = batch?;
        let per_image = predictor.predict(
            model,
            &batch.images,
            [batch.n, batch.h, batch.w],
            &batch.original_sizes,
            &batch.im_info,
        );
        // A device failure makes the detections meaningless: stop here.
        model.net().backend().check().map_err(|e| {
            let first = batch
                .record_indices
                .first()
                .map(|&i| &records[i].image_path);
            Error::new(first.cloned().unwrap_or_default(), e.to_string())
        })?;
        for (dets, &index) in per_image.iter().zip(&batch.record_indices) {
            let record = &records[index];
            images += 1;
            if let Scorer::Voc(voc) = &mut scorer {
                let gt: Vec<_> = record
                    .objects
                    .iter()
                    .filter(|o| !o.crowd)
                    .take(max_ground_truth)
                    .collect();
                let boxes: Vec<[f32; 4]> = gt.iter().map(|o| o.bbox).collect();
                let labels: Vec<usize> = gt.iter().map(|o| o.class as usize - offset).collect();
                let difficult: Vec<bool> = gt.iter().map(|o| o.difficult).collect();
                voc.update(dets, &boxes, &labels, &difficult);
            }
            for d in dets {
                let Some(&category_id) = category_ids.get(d.class) else {
                    continue;
                };
                let [x1, y1, x2, y2] = d.bbox.map(f64::from);
                detections.push(CocoResult {
                    image_id: record.id,
                    category_id,
                    bbox: [x1, y1, x2 - x1, y2 - y1],
                    score: f64::from(d.score),
                });
            }
        }
    }

    Ok(match scorer {
        Scorer::Voc(voc) => EvalResult {
            map: voc.map(),
            per_class_ap: voc.per_class_ap(),
            coco_stats: None,
            detections,
            images,
        },
        Scorer::Coco { gt, annotations } => {
            let scored = evaluate_bbox(&gt, &detections)
                .map_err(|e| Error::new(&annotations, e.to_string()))?;
            EvalResult {
                map: scored.stats[0],
                per_class_ap: Vec::new(),
                coco_stats: Some(scored.stats),
                detections,
                images,
            }
        }
    })
}

enum Scorer {
    Voc(DetectionMap),
    Coco {
        gt: CocoGroundTruth,
        annotations: PathBuf,
    },
}
