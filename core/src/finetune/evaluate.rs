//! Scoring a model on a dataset as PaddleDetection's `eval.py` does: every
//! image once through the evaluation pipeline, detections decoded and
//! suppressed, then the VOC metric (mAP at IoU 0.5, 11-point or area,
//! difficult ignored) or the COCO metric (pycocotools' 12 numbers, scored
//! against the dataset's own annotation file). The detections are returned in
//! COCO results form either way, for `bbox.json`; a model with a mask head
//! (`Detector::masks`) also gives each detection's mask, for `segm.json`,
//! and with the COCO metric the masks are scored as COCOeval(segm) does.

use std::path::PathBuf;
use std::sync::Arc;

use pulsefocus_formats::coco_results::{
    read_coco_ground_truth, read_coco_ground_truth_with_masks, CocoGroundTruth, CocoMaskResult,
    CocoResult,
};
use pulsefocus_formats::dataset::Dataset;
use pulsefocus_formats::{Error, Result};

use super::predict::Predictor;
use crate::backend::Backend;
use crate::data::loader::{Loader, LoaderConfig};
use crate::detector::Detector;
use crate::metrics::coco::{evaluate_bbox, evaluate_segm};
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
    /// VOC mAP@0.5, or COCO AP@[.5:.95] (the first of the 12 stats), of
    /// the boxes.
    pub map: f64,
    /// VOC: AP per class (None where a class has no ground truth).
    pub per_class_ap: Vec<Option<f64>>,
    /// COCO: pycocotools' 12 stats.
    pub coco_stats: Option<[f64; 12]>,
    /// Every detection, category ids as the COCO file has them (VOC: class
    /// index + 1) and boxes as `[x, y, w, h]`.
    pub detections: Vec<CocoResult>,
    /// A model with a mask head: each detection's mask, in the order of
    /// `detections` (`segm.json`, without boxes, as PaddleDetection writes
    /// it). None for a model without masks.
    pub mask_detections: Option<Vec<CocoMaskResult>>,
    /// COCO with masks: pycocotools' 12 stats of COCOeval(segm).
    pub segm_stats: Option<[f64; 12]>,
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
    let mut mask_detections: Option<Vec<CocoMaskResult>> = None;
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
        let masks = model.masks();
        if let Some(masks) = masks {
            assert_eq!(
                masks.len(),
                per_image.len(),
                "Detector::masks gives one list per image of the last detect"
            );
            mask_detections.get_or_insert_with(Vec::new);
        }
        for (i, (dets, &index)) in per_image.iter().zip(&batch.record_indices).enumerate() {
            let record = &records[index];
            let image_masks = masks.map(|m| {
                assert_eq!(
                    m[i].len(),
                    dets.len(),
                    "Detector::masks gives one mask per detection"
                );
                &m[i]
            });
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
            for (k, d) in dets.iter().enumerate() {
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
                if let (Some(masks), Some(out)) = (image_masks, &mut mask_detections) {
                    out.push(CocoMaskResult {
                        image_id: record.id,
                        category_id,
                        segmentation: masks[k].clone(),
                        bbox: None,
                        score: f64::from(d.score),
                    });
                }
            }
        }
    }

    Ok(match scorer {
        Scorer::Voc(voc) => EvalResult {
            map: voc.map(),
            per_class_ap: voc.per_class_ap(),
            coco_stats: None,
            detections,
            mask_detections,
            segm_stats: None,
            images,
        },
        Scorer::Coco { gt, annotations } => {
            let scoring_failed =
                |e: crate::metrics::coco::CocoEvalError| Error::new(&annotations, e.to_string());
            let scored = evaluate_bbox(&gt, &detections).map_err(scoring_failed)?;
            let segm_stats = match &mask_detections {
                Some(masks) => {
                    let gt = read_coco_ground_truth_with_masks(&annotations)?;
                    Some(evaluate_segm(&gt, masks).map_err(scoring_failed)?.stats)
                }
                None => None,
            };
            EvalResult {
                map: scored.stats[0],
                per_class_ap: Vec::new(),
                coco_stats: Some(scored.stats),
                detections,
                mask_detections,
                segm_stats,
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

#[cfg(test)]
mod tests {
    use pulsefocus_formats::coco::CocoDataSet;
    use pulsefocus_formats::coco_results::Segmentation;
    use pulsefocus_formats::image::{write_png, RgbImage};
    use pulsefocus_formats::rle::Rle;

    use super::*;
    use crate::cpu::CpuBackend;
    use crate::detector::Losses;
    use crate::models::ConvNet;
    use crate::tensor::Tensor;
    use crate::yolo::{Detection, GroundTruth};

    /// Per image of the dataset, in its order: the detections and masks the
    /// fake detector gives.
    type Answers = Vec<(Vec<Detection>, Vec<Rle>)>;

    /// A detector that answers each `detect` (of one image) with the next
    /// image's fixed detections and, `with_masks`, their masks.
    struct FixedDetector {
        net: ConvNet<CpuBackend>,
        answers: Answers,
        next: usize,
        with_masks: bool,
        last_masks: Vec<Vec<Rle>>,
    }

    impl Detector<CpuBackend> for FixedDetector {
        fn net(&self) -> &ConvNet<CpuBackend> {
            &self.net
        }
        fn net_mut(&mut self) -> &mut ConvNet<CpuBackend> {
            &mut self.net
        }
        fn loss_names(&self) -> &'static [&'static str] {
            &[]
        }
        fn plan(&mut self, _batch: usize, _size: usize) -> usize {
            0
        }
        fn train_pass(
            &mut self,
            _image: &Tensor<CpuBackend>,
            _truth: &GroundTruth,
            _im_info: &[[f32; 3]],
        ) -> Losses {
            Losses::new(&[], &[])
        }
        fn detect(
            &mut self,
            _image: &Tensor<CpuBackend>,
            original_sizes: &[[u32; 2]],
            _im_info: &[[f32; 3]],
        ) -> Vec<Vec<Detection>> {
            assert_eq!(original_sizes.len(), 1, "batches of one image");
            let (detections, masks) = self.answers[self.next].clone();
            self.next += 1;
            self.last_masks = vec![masks];
            vec![detections]
        }
        fn boxes_normalized(&self) -> bool {
            false
        }
        fn masks(&self) -> Option<&[Vec<Rle>]> {
            self.with_masks.then_some(self.last_masks.as_slice())
        }
    }

    /// Three pictures with objects of categories 1 and 3 (class indices 0
    /// and 1): polygons, a crowd RLE that is never detected, an image
    /// without objects.
    const ANNOTATIONS: &str = r#"{
        "images": [
            {"id": 11, "file_name": "a.png", "width": 24, "height": 16},
            {"id": 12, "file_name": "b.png", "width": 20, "height": 20},
            {"id": 13, "file_name": "c.png", "width": 8, "height": 8}],
        "categories": [{"id": 1, "name": "square"}, {"id": 3, "name": "triangle"}],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 1, "bbox": [2, 2, 8, 6], "area": 48, "iscrowd": 0,
             "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]]},
            {"id": 2, "image_id": 12, "category_id": 3, "bbox": [1, 1, 14, 14], "area": 98, "iscrowd": 0,
             "segmentation": [[1, 1, 15, 1, 1, 15]]},
            {"id": 3, "image_id": 12, "category_id": 1, "bbox": [12, 12, 6, 6], "area": 36, "iscrowd": 0,
             "segmentation": [[12, 12, 18, 12, 18, 18, 12, 18]]},
            {"id": 4, "image_id": 11, "category_id": 3, "bbox": [12, 8, 4, 4], "area": 16, "iscrowd": 1,
             "segmentation": {"size": [16, 24], "counts": [200, 4, 12, 4, 12, 4, 12, 4, 132]}}]
    }"#;

    /// The dataset on disk and, per image, what a perfect detector says:
    /// each non-crowd object's box and its polygons as pycocotools
    /// rasterises them.
    fn perfect_answers(dir: &std::path::Path) -> (Dataset, PathBuf, Answers) {
        let json: serde_json::Value = serde_json::from_str(ANNOTATIONS).unwrap();
        std::fs::create_dir_all(dir.join("images")).unwrap();
        for image in json["images"].as_array().unwrap() {
            let size = |k: &str| image[k].as_u64().unwrap() as u32;
            let picture = RgbImage::filled(size("width"), size("height"), [90, 120, 30]);
            let name = image["file_name"].as_str().unwrap();
            write_png(&picture, &dir.join("images").join(name)).unwrap();
        }
        let annotations = dir.join("instances.json");
        std::fs::write(&annotations, ANNOTATIONS).unwrap();
        let dataset = CocoDataSet {
            dataset_dir: dir.to_path_buf(),
            image_dir: "images".into(),
            anno_path: "instances.json".into(),
            with_background: true,
            allow_empty: true,
            load_crowd: false,
            with_polygons: false,
        }
        .load()
        .unwrap();
        let answers = json["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|image| {
                let (h, w) = (
                    image["height"].as_u64().unwrap(),
                    image["width"].as_u64().unwrap(),
                );
                let objects = json["annotations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["image_id"] == image["id"] && a["iscrowd"] == 0);
                objects
                    .map(|a| {
                        let b: Vec<f32> = a["bbox"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_f64().unwrap() as f32)
                            .collect();
                        let class = if a["category_id"] == 1 { 0 } else { 1 };
                        let polygons: Vec<Vec<f64>> =
                            serde_json::from_value(a["segmentation"].clone()).unwrap();
                        let mask = Segmentation::Polygons(polygons)
                            .to_rle(h as u32, w as u32)
                            .unwrap();
                        let detection = Detection {
                            class,
                            score: 0.9,
                            bbox: [b[0], b[1], b[0] + b[2], b[1] + b[3]],
                        };
                        (detection, mask)
                    })
                    .unzip()
            })
            .collect();
        (dataset, annotations, answers)
    }

    fn fixed_detector(answers: Answers, with_masks: bool) -> FixedDetector {
        FixedDetector {
            net: ConvNet::new(&CpuBackend::new(), Vec::new(), 0),
            answers,
            next: 0,
            with_masks,
            last_masks: Vec::new(),
        }
    }

    /// A detector whose masks are the ground truth's scores segm AP 1.0
    /// (and box AP 1.0); each mask result carries its box's image, category
    /// and score, and `segm.json` has no boxes, as PaddleDetection's. A
    /// detector without masks gives none.
    #[test]
    fn masks_equal_to_the_ground_truth_score_segm_one() {
        let dir = tempfile::tempdir().unwrap();
        let (dataset, annotations, answers) = perfect_answers(dir.path());
        let metric = Metric::Coco { annotations };
        let evaluate_with = |with_masks: bool| {
            let mut model = fixed_detector(answers.clone(), with_masks);
            evaluate(
                &mut model,
                2,
                &dataset,
                LoaderConfig::eval(1),
                &metric,
                true,
            )
            .unwrap()
        };
        let result = evaluate_with(true);
        assert_eq!(result.images, 3);
        let (bbox, segm) = (result.coco_stats.unwrap(), result.segm_stats.unwrap());
        assert_eq!((bbox[0], bbox[1], segm[0], segm[1]), (1.0, 1.0, 1.0, 1.0));
        let masks = result.mask_detections.unwrap();
        assert_eq!(masks.len(), 3);
        assert_eq!(masks.len(), result.detections.len());
        for (m, d) in masks.iter().zip(&result.detections) {
            assert_eq!(
                (m.image_id, m.category_id, m.score, m.bbox),
                (d.image_id, d.category_id, d.score, None)
            );
        }
        assert_eq!(
            masks.iter().map(|m| m.category_id).collect::<Vec<_>>(),
            [1, 3, 1]
        );
        assert_eq!(masks[1].segmentation, answers[1].1[0]);

        let boxes_only = evaluate_with(false);
        assert_eq!(
            (boxes_only.mask_detections, boxes_only.segm_stats),
            (None, None)
        );
        assert_eq!(boxes_only.coco_stats.unwrap()[0], 1.0);

        // The first mask without its lower half (rows 5..8 of 2..8) scores
        // below 1 while the boxes stay.
        let mut halved = answers.clone();
        let mut pixels = halved[0].1[0].decode();
        pixels[5 * 24..].fill(0);
        halved[0].1[0] = Rle::encode(&pixels, 16, 24).unwrap();
        let mut model = fixed_detector(halved, true);
        let worse = evaluate(
            &mut model,
            2,
            &dataset,
            LoaderConfig::eval(1),
            &metric,
            true,
        )
        .unwrap();
        assert_eq!(worse.coco_stats.unwrap()[0], 1.0);
        assert!(worse.segm_stats.unwrap()[0] < 1.0, "{:?}", worse.segm_stats);
    }
}
