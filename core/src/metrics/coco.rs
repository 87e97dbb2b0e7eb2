//! A port of pycocotools' `COCOeval` for `iouType="bbox"` and `"segm"`, step
//! by step (`evaluateImg`, `accumulate`, `summarize`), so that its 12 numbers
//! equal pycocotools' on the same files. The two differ only in the IoU (of
//! boxes, or of RLE masks: `pulsefocus_formats::rle`) and in where a
//! detection's area comes from; everything else is one code path.
//!
//! Things pycocotools does that are easy to get wrong, kept here on purpose:
//! a crowd ground truth's "IoU" is intersection over the detection's area and
//! it can absorb any number of detections; a ground truth is ignored for an area
//! range by its `area` field (in both modes: never its box or mask), a
//! detection (if unmatched) by the area `loadRes` gave it (its box's `w * h`
//! whenever the results carry boxes, its mask's pixel count otherwise);
//! detections are ranked by score with a stable sort, per image first and then
//! over all images in sorted image-id order; precision is interpolated at 101
//! recall points; cells with no ground truth are -1 and left out of the means.

use std::collections::HashMap;

use pulsefocus_formats::coco_results::{
    CocoGroundTruth, CocoGtAnnotation, CocoMaskResult, CocoResult,
};
use pulsefocus_formats::rle::{self, bbox_iou, Rle};

pub const IOU_THRESHOLDS: usize = 10;
pub const RECALL_POINTS: usize = 101;
pub const MAX_DETS: [usize; 3] = [1, 10, 100];
pub const AREA_RANGES: [(f64, f64); 4] = [
    (0.0, 1e10),
    (0.0, 32.0 * 32.0),
    (32.0 * 32.0, 96.0 * 96.0),
    (96.0 * 96.0, 1e10),
];
pub const AREA_LABELS: [&str; 4] = ["all", "small", "medium", "large"];

/// numpy's `linspace(.5, .95, 10)`: `start + i * step`, the last set to stop.
pub fn iou_thresholds() -> [f64; IOU_THRESHOLDS] {
    let step = (0.95 - 0.5) / 9.0;
    std::array::from_fn(|i| if i == 9 { 0.95 } else { i as f64 * step + 0.5 })
}

/// numpy's `linspace(0, 1, 101)`.
fn recall_thresholds() -> [f64; RECALL_POINTS] {
    std::array::from_fn(|i| if i == 100 { 1.0 } else { i as f64 * 0.01 })
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CocoEvalError {
    #[error("detection {index} refers to image id {image_id}, which is not in the ground truth")]
    UnknownImage { index: usize, image_id: i64 },
    #[error(
        "annotation id {annotation_id} has no mask: read the ground truth with its segmentations"
    )]
    NoMask { annotation_id: i64 },
}

/// A ground truth as pycocotools sees it in `evaluateImg`; `region` is what
/// the IoU is computed on (a box or a mask).
struct GtRegion<'a, R> {
    id: i64,
    region: &'a R,
    area: f64,
    crowd: bool,
}

/// A detection as `evaluateImg` sees it: `area` tests the area range.
struct DtRegion<'a, R> {
    id: i64,
    region: &'a R,
    area: f64,
    score: f64,
}

/// One detection of a results file, whatever its region.
struct Detection<'a, R> {
    image_id: i64,
    category_id: i64,
    region: &'a R,
    area: f64,
    score: f64,
}

/// `evaluateImg`'s result for one image, category and area range.
struct ImageEval {
    /// Up to 100 detections, best first.
    scores: Vec<f64>,
    /// `[threshold][detection]`: id of the matched ground truth, 0 if none.
    matched: Vec<Vec<i64>>,
    ignored: Vec<Vec<bool>>,
    gt_ignored: Vec<bool>,
}

/// The output of `accumulate` and `summarize`.
#[derive(Debug, Clone)]
pub struct CocoEval {
    pub category_ids: Vec<i64>,
    /// `[T][R][K][A][M]`, -1 where a category has no ground truth.
    pub precision: Vec<f64>,
    /// `[T][K][A][M]`.
    pub recall: Vec<f64>,
    /// pycocotools' `stats`, in its order.
    pub stats: [f64; 12],
}

/// Stable ranking by descending score (numpy's mergesort of `-score`).
fn rank_by_score(scores: impl Iterator<Item = f64>) -> Vec<usize> {
    let scores: Vec<f64> = scores.collect();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

fn evaluate_image<R>(
    gts: &[GtRegion<R>],
    dts: &[&DtRegion<R>],
    area: (f64, f64),
    thresholds: &[f64],
    iou: fn(&R, &R, bool) -> f64,
) -> ImageEval {
    // Ground truths out of the area range (and crowds) are ignored and go last.
    let outside = |a: f64| a < area.0 || a > area.1;
    let gt_ignore_of = |g: &GtRegion<R>| g.crowd || outside(g.area);
    let mut gt_order: Vec<usize> = (0..gts.len()).collect();
    gt_order.sort_by_key(|&g| gt_ignore_of(&gts[g]));
    let gts: Vec<&GtRegion<R>> = gt_order.iter().map(|&g| &gts[g]).collect();
    let gt_ignored: Vec<bool> = gts.iter().map(|g| gt_ignore_of(g)).collect();
    // `dts` arrive ranked and cut to 100 already.
    let ious: Vec<Vec<f64>> = dts
        .iter()
        .map(|d| {
            gts.iter()
                .map(|g| iou(d.region, g.region, g.crowd))
                .collect()
        })
        .collect();

    let mut matched = vec![vec![0i64; dts.len()]; thresholds.len()];
    let mut ignored = vec![vec![false; dts.len()]; thresholds.len()];
    for (t, &threshold) in thresholds.iter().enumerate() {
        let mut gt_taken_by = vec![0i64; gts.len()];
        for (d, det) in dts.iter().enumerate() {
            let mut best_iou = threshold.min(1.0 - 1e-10);
            let mut best: Option<usize> = None;
            for (g, gt) in gts.iter().enumerate() {
                // A matched regular ground truth is used up; a crowd is not.
                if gt_taken_by[g] > 0 && !gt.crowd {
                    continue;
                }
                // Already on a regular ground truth and only ignored ones remain.
                if let Some(m) = best {
                    if !gt_ignored[m] && gt_ignored[g] {
                        break;
                    }
                }
                if ious[d][g] < best_iou {
                    continue;
                }
                best_iou = ious[d][g];
                best = Some(g);
            }
            if let Some(m) = best {
                ignored[t][d] = gt_ignored[m];
                matched[t][d] = gts[m].id;
                gt_taken_by[m] = det.id;
            }
        }
        // Unmatched detections outside the area range are ignored. (pycocotools
        // tests "matched" as a non-zero ground-truth id; so does this.)
        for (d, det) in dts.iter().enumerate() {
            if matched[t][d] == 0 && outside(det.area) {
                ignored[t][d] = true;
            }
        }
    }
    ImageEval {
        scores: dts.iter().map(|d| d.score).collect(),
        matched,
        ignored,
        gt_ignored,
    }
}

/// Scores `results` against `gt` as pycocotools' COCOeval(bbox) does.
pub fn evaluate_bbox(
    gt: &CocoGroundTruth,
    results: &[CocoResult],
) -> Result<CocoEval, CocoEvalError> {
    let detections = results.iter().map(|r| Detection {
        image_id: r.image_id,
        category_id: r.category_id,
        region: &r.bbox,
        area: r.bbox[2] * r.bbox[3],
        score: r.score,
    });
    evaluate(gt, |ann| Ok(&ann.bbox), detections, bbox_iou)
}

/// Scores mask `results` against `gt` (read with its masks) as pycocotools'
/// COCOeval(segm) does.
pub fn evaluate_segm<'a>(
    gt: &'a CocoGroundTruth,
    results: &'a [CocoMaskResult],
) -> Result<CocoEval, CocoEvalError> {
    let detections = results.iter().map(|r| Detection {
        image_id: r.image_id,
        category_id: r.category_id,
        region: &r.segmentation,
        area: r.bbox.map_or(r.segmentation.area() as f64, |b| b[2] * b[3]),
        score: r.score,
    });
    let mask_of = |ann: &'a CocoGtAnnotation| -> Result<&'a Rle, CocoEvalError> {
        ann.mask.as_ref().ok_or(CocoEvalError::NoMask {
            annotation_id: ann.id,
        })
    };
    evaluate(gt, mask_of, detections, rle::iou)
}

/// `evaluate` and `accumulate` for regions of type `R` compared by `iou`;
/// `gt_region` gives a ground truth's region (called only for scored ones).
fn evaluate<'a, R: 'a>(
    gt: &'a CocoGroundTruth,
    gt_region: impl Fn(&'a CocoGtAnnotation) -> Result<&'a R, CocoEvalError>,
    detections: impl Iterator<Item = Detection<'a, R>>,
    iou: fn(&R, &R, bool) -> f64,
) -> Result<CocoEval, CocoEvalError> {
    let mut image_ids = gt.image_ids.clone();
    image_ids.sort_unstable();
    image_ids.dedup();
    let mut category_ids = gt.category_ids.clone();
    category_ids.sort_unstable();
    category_ids.dedup();
    let image_index: HashMap<i64, usize> = image_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    let category_index: HashMap<i64, usize> = category_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| (id, k))
        .collect();
    let (images, categories) = (image_ids.len(), category_ids.len());

    // Regions per (category, image), in file order.
    let mut gt_cells: Vec<Vec<GtRegion<R>>> =
        (0..images * categories).map(|_| Vec::new()).collect();
    for ann in &gt.annotations {
        if let (Some(&i), Some(&k)) = (
            image_index.get(&ann.image_id),
            category_index.get(&ann.category_id),
        ) {
            gt_cells[k * images + i].push(GtRegion {
                id: ann.id,
                region: gt_region(ann)?,
                area: ann.area,
                crowd: ann.iscrowd,
            });
        }
    }
    let mut dt_cells: Vec<Vec<DtRegion<R>>> =
        (0..images * categories).map(|_| Vec::new()).collect();
    for (index, r) in detections.enumerate() {
        let Some(&i) = image_index.get(&r.image_id) else {
            return Err(CocoEvalError::UnknownImage {
                index,
                image_id: r.image_id,
            });
        };
        // Detections of categories the ground truth does not have are not scored.
        if let Some(&k) = category_index.get(&r.category_id) {
            dt_cells[k * images + i].push(DtRegion {
                id: index as i64 + 1,
                region: r.region,
                area: r.area,
                score: r.score,
            });
        }
    }

    let thresholds = iou_thresholds();
    let max_det = MAX_DETS[2];
    // evalImgs[k][a][i]
    let mut evals: Vec<Option<ImageEval>> = Vec::with_capacity(categories * 4 * images);
    for k in 0..categories {
        for area in AREA_RANGES {
            for i in 0..images {
                let (gts, dts) = (&gt_cells[k * images + i], &dt_cells[k * images + i]);
                if gts.is_empty() && dts.is_empty() {
                    evals.push(None);
                    continue;
                }
                let ranked: Vec<&DtRegion<R>> = rank_by_score(dts.iter().map(|d| d.score))
                    .into_iter()
                    .take(max_det)
                    .map(|d| &dts[d])
                    .collect();
                evals.push(Some(evaluate_image(gts, &ranked, area, &thresholds, iou)));
            }
        }
    }

    let (t_len, r_len, a_len, m_len) = (
        IOU_THRESHOLDS,
        RECALL_POINTS,
        AREA_RANGES.len(),
        MAX_DETS.len(),
    );
    let mut precision = vec![-1.0; t_len * r_len * categories * a_len * m_len];
    let mut recall = vec![-1.0; t_len * categories * a_len * m_len];
    let recall_points = recall_thresholds();
    for k in 0..categories {
        for a in 0..a_len {
            let cells: Vec<&ImageEval> = evals
                [(k * a_len + a) * images..(k * a_len + a + 1) * images]
                .iter()
                .flatten()
                .collect();
            if cells.is_empty() {
                continue;
            }
            let relevant_gts = cells
                .iter()
                .flat_map(|e| &e.gt_ignored)
                .filter(|&&ignored| !ignored)
                .count();
            if relevant_gts == 0 {
                continue;
            }
            for (m, &max_det) in MAX_DETS.iter().enumerate() {
                // Each image's first max_det detections, ranked over all images.
                let mut pool: Vec<(usize, usize)> = Vec::new();
                for (c, e) in cells.iter().enumerate() {
                    pool.extend((0..e.scores.len().min(max_det)).map(|d| (c, d)));
                }
                let order = rank_by_score(pool.iter().map(|&(c, d)| cells[c].scores[d]));
                for t in 0..t_len {
                    let (mut tp, mut fp) = (0.0f64, 0.0f64);
                    let mut curve_recall = Vec::with_capacity(order.len());
                    let mut curve_precision = Vec::with_capacity(order.len());
                    for &p in &order {
                        let (c, d) = pool[p];
                        if cells[c].ignored[t][d] {
                            // Neither true nor false positive: the curve holds still.
                        } else if cells[c].matched[t][d] != 0 {
                            tp += 1.0;
                        } else {
                            fp += 1.0;
                        }
                        curve_recall.push(tp / relevant_gts as f64);
                        curve_precision.push(tp / (fp + tp + f64::EPSILON));
                    }
                    let r_at = (t * categories + k) * a_len * m_len + a * m_len + m;
                    recall[r_at] = curve_recall.last().copied().unwrap_or(0.0);
                    // Precision envelope: best precision at this recall or beyond.
                    for i in (1..curve_precision.len()).rev() {
                        if curve_precision[i] > curve_precision[i - 1] {
                            curve_precision[i - 1] = curve_precision[i];
                        }
                    }
                    for (ri, &point) in recall_points.iter().enumerate() {
                        // searchsorted(side="left"): first recall >= point; past
                        // the end, this and all higher points stay 0.
                        let at = curve_recall.partition_point(|&r| r < point);
                        let value = curve_precision.get(at).copied().unwrap_or(0.0);
                        precision[(((t * r_len + ri) * categories + k) * a_len + a) * m_len + m] =
                            value;
                    }
                }
            }
        }
    }

    let mut eval = CocoEval {
        category_ids,
        precision,
        recall,
        stats: [0.0; 12],
    };
    eval.stats = eval.summarize();
    Ok(eval)
}

impl CocoEval {
    /// Mean over the cells >= 0 of precision (`ap`) or recall for one IoU
    /// threshold index (or all), area range and maxDets index; -1 if none.
    fn mean(&self, ap: bool, threshold: Option<usize>, a: usize, m: usize) -> f64 {
        let categories = self.category_ids.len();
        let (a_len, m_len) = (AREA_RANGES.len(), MAX_DETS.len());
        let thresholds: Vec<usize> = match threshold {
            Some(t) => vec![t],
            None => (0..IOU_THRESHOLDS).collect(),
        };
        let (mut sum, mut count) = (0.0, 0usize);
        for &t in &thresholds {
            for k in 0..categories {
                let values: Vec<f64> = if ap {
                    (0..RECALL_POINTS)
                        .map(|r| {
                            self.precision[(((t * RECALL_POINTS + r) * categories + k) * a_len + a)
                                * m_len
                                + m]
                        })
                        .collect()
                } else {
                    vec![self.recall[(t * categories + k) * a_len * m_len + a * m_len + m]]
                };
                for v in values.into_iter().filter(|&v| v > -1.0) {
                    sum += v;
                    count += 1;
                }
            }
        }
        if count == 0 {
            -1.0
        } else {
            sum / count as f64
        }
    }

    fn summarize(&self) -> [f64; 12] {
        [
            self.mean(true, None, 0, 2),
            self.mean(true, Some(0), 0, 2),
            self.mean(true, Some(5), 0, 2),
            self.mean(true, None, 1, 2),
            self.mean(true, None, 2, 2),
            self.mean(true, None, 3, 2),
            self.mean(false, None, 0, 0),
            self.mean(false, None, 0, 1),
            self.mean(false, None, 0, 2),
            self.mean(false, None, 1, 2),
            self.mean(false, None, 2, 2),
            self.mean(false, None, 3, 2),
        ]
    }
}

/// The 12 lines pycocotools' `summarize()` prints.
pub fn summary_lines(stats: &[f64; 12]) -> Vec<String> {
    let rows: [(bool, Option<&str>, usize, usize); 12] = [
        (true, None, 0, 100),
        (true, Some("0.50"), 0, 100),
        (true, Some("0.75"), 0, 100),
        (true, None, 1, 100),
        (true, None, 2, 100),
        (true, None, 3, 100),
        (false, None, 0, 1),
        (false, None, 0, 10),
        (false, None, 0, 100),
        (false, None, 1, 100),
        (false, None, 2, 100),
        (false, None, 3, 100),
    ];
    rows.iter()
        .zip(stats)
        .map(|(&(ap, iou, a, max_dets), value)| {
            let (title, kind) = if ap {
                ("Average Precision", "(AP)")
            } else {
                ("Average Recall", "(AR)")
            };
            format!(
                " {:<18} {} @[ IoU={:<9} | area={:>6} | maxDets={:>3} ] = {:.3}",
                title,
                kind,
                iou.unwrap_or("0.50:0.95"),
                AREA_LABELS[a],
                max_dets,
                value
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsefocus_formats::coco_results::CocoGtAnnotation;

    fn gt_box(
        id: i64,
        image_id: i64,
        category_id: i64,
        bbox: [f64; 4],
        iscrowd: bool,
    ) -> CocoGtAnnotation {
        CocoGtAnnotation {
            id,
            image_id,
            category_id,
            bbox,
            area: bbox[2] * bbox[3],
            iscrowd,
            mask: None,
        }
    }

    fn det(image_id: i64, category_id: i64, bbox: [f64; 4], score: f64) -> CocoResult {
        CocoResult {
            image_id,
            category_id,
            bbox,
            score,
        }
    }

    #[test]
    fn perfect_detections_score_one() {
        let gt = CocoGroundTruth {
            image_ids: vec![1, 2],
            category_ids: vec![5, 9],
            annotations: vec![
                gt_box(1, 1, 5, [10.0, 10.0, 50.0, 50.0], false),
                gt_box(2, 2, 9, [0.0, 0.0, 200.0, 120.0], false),
            ],
        };
        let results = vec![
            det(1, 5, [10.0, 10.0, 50.0, 50.0], 0.9),
            det(2, 9, [0.0, 0.0, 200.0, 120.0], 0.8),
        ];
        let eval = evaluate_bbox(&gt, &results).unwrap();
        // No small boxes: those stats are -1 (left out), everything else 1
        // (precision is tp / (tp + fp + eps), as pycocotools).
        let expected = [1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0];
        for (s, e) in eval.stats.iter().zip(expected) {
            assert!((s - e).abs() < 1e-12, "{:?}", eval.stats);
        }
    }

    #[test]
    fn crowd_absorbs_detections_and_half_recall_by_hand() {
        // One category, one image: two regular boxes and a crowd region.
        // Detections: exact on box 1 (0.9), two inside the crowd (0.8, 0.7),
        // nothing on box 2. Crowd matches are ignored, so at every threshold
        // the curve is one TP: precision 1 up to recall 1/2, then nothing.
        // AP = 51 of 101 recall points at precision 1 = 51/101; AR = 1/2.
        let gt = CocoGroundTruth {
            image_ids: vec![3],
            category_ids: vec![1],
            annotations: vec![
                gt_box(1, 3, 1, [0.0, 0.0, 40.0, 40.0], false),
                gt_box(2, 3, 1, [100.0, 100.0, 40.0, 40.0], false),
                gt_box(3, 3, 1, [200.0, 0.0, 100.0, 100.0], true),
            ],
        };
        let results = vec![
            det(3, 1, [0.0, 0.0, 40.0, 40.0], 0.9),
            det(3, 1, [210.0, 10.0, 30.0, 30.0], 0.8),
            det(3, 1, [250.0, 50.0, 40.0, 40.0], 0.7),
        ];
        let eval = evaluate_bbox(&gt, &results).unwrap();
        assert!(
            (eval.stats[0] - 51.0 / 101.0).abs() < 1e-12,
            "{:?}",
            eval.stats
        );
        assert!((eval.stats[8] - 0.5).abs() < 1e-12);
        assert!((eval.stats[6] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn unknown_image_is_an_error() {
        let gt = CocoGroundTruth {
            image_ids: vec![1],
            category_ids: vec![1],
            annotations: vec![],
        };
        let err = evaluate_bbox(&gt, &[det(4, 1, [0.0, 0.0, 1.0, 1.0], 0.5)]).unwrap_err();
        assert_eq!(
            err,
            CocoEvalError::UnknownImage {
                index: 0,
                image_id: 4
            }
        );
    }

    #[test]
    fn segm_needs_ground_truth_masks_and_scores_exact_masks_one() {
        let mut gt = CocoGroundTruth {
            image_ids: vec![1],
            category_ids: vec![1],
            annotations: vec![gt_box(4, 1, 1, [0.0, 0.0, 40.0, 40.0], false)],
        };
        let square =
            Rle::from_polygon(&[0.0, 0.0, 40.0, 0.0, 40.0, 40.0, 0.0, 40.0], 60, 60).unwrap();
        let results = vec![CocoMaskResult {
            image_id: 1,
            category_id: 1,
            segmentation: square.clone(),
            bbox: None,
            score: 0.5,
        }];
        assert_eq!(
            evaluate_segm(&gt, &results).unwrap_err(),
            CocoEvalError::NoMask { annotation_id: 4 }
        );
        gt.annotations[0].mask = Some(square);
        let stats = evaluate_segm(&gt, &results).unwrap().stats;
        // One medium object found exactly: 1 everywhere but small and large (-1).
        let expected = [
            1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0,
        ];
        for (s, e) in stats.iter().zip(expected) {
            assert!((s - e).abs() < 1e-12, "{stats:?}");
        }
    }

    #[test]
    fn summary_layout_is_pycocotools() {
        let eval = CocoEval {
            category_ids: vec![],
            precision: vec![],
            recall: vec![],
            stats: [0.5; 12],
        };
        let lines = summary_lines(&eval.stats);
        assert_eq!(
            lines[0],
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.500"
        );
        assert_eq!(
            lines[7],
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ] = 0.500"
        );
        assert_eq!(
            lines[2],
            " Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ] = 0.500"
        );
    }

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/coco_eval");

    fn assert_stats_equal(ours: &[f64; 12], theirs: &[f64], what: &str) {
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4,
                "{what}: stat {i} is {a}, pycocotools {b}\nours {ours:?}\ntheirs {theirs:?}"
            );
        }
    }

    /// The stats of `dir/dt.json` against `dir/gt.json`, of masks when `segm`.
    fn evaluate_files(dir: &std::path::Path, segm: bool) -> [f64; 12] {
        use pulsefocus_formats::coco_results::{
            read_coco_detections, read_coco_ground_truth, read_coco_ground_truth_with_masks,
            CocoDetections,
        };
        let gt = dir.join("gt.json");
        match read_coco_detections(&dir.join("dt.json")).unwrap() {
            CocoDetections::Masks(results) if segm => {
                let gt = read_coco_ground_truth_with_masks(&gt).unwrap();
                evaluate_segm(&gt, &results).unwrap().stats
            }
            CocoDetections::Boxes(results) if !segm => {
                let gt = read_coco_ground_truth(&gt).unwrap();
                evaluate_bbox(&gt, &results).unwrap().stats
            }
            _ => panic!("dt.json holds the other kind of detections"),
        }
    }

    /// Each case of a committed file gives pycocotools' stats.
    fn check_committed_cases(file: &str, segm: bool) {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{file}")).unwrap();
        let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for case in cases.as_array().unwrap() {
            std::fs::write(dir.path().join("gt.json"), case["gt"].to_string()).unwrap();
            std::fs::write(dir.path().join("dt.json"), case["results"].to_string()).unwrap();
            let theirs: Vec<f64> = case["stats"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_stats_equal(
                &evaluate_files(dir.path(), segm),
                &theirs,
                &format!("{file} seed {}", case["seed"]),
            );
        }
    }

    /// The committed cases (made by `make_cases.py --fixture`) give pycocotools'
    /// stats: crowds, area fields, sparse ids, ties, >100 detections per image.
    #[test]
    fn matches_pycocotools_on_committed_cases() {
        check_committed_cases("cases.json", false);
    }

    /// The same for masks (`make_segm_cases.py --fixture`): polygon, RLE and
    /// crowd ground truth, detections of every quality, with and without boxes.
    #[test]
    fn segm_matches_pycocotools_on_committed_cases() {
        check_committed_cases("segm_cases.json", true);
    }

    /// New random cases made by `script` and scored live by pycocotools. Skips
    /// (saying so) where pycocotools is missing, unless `CI` is set.
    fn check_live_cases(script: &str, segm: bool) {
        let available = std::process::Command::new("python3")
            .args(["-c", "import pycocotools.cocoeval, numpy"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !available {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but python3 cannot import pycocotools"
            );
            eprintln!("skipping: python3 with pycocotools and numpy is not available");
            return;
        }
        for seed in 100..106 {
            let dir = tempfile::tempdir().unwrap();
            let out = std::process::Command::new("python3")
                .arg(format!("{FIXTURES}/{script}"))
                .args(["--seed", &seed.to_string(), "--out"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let theirs: Vec<f64> = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("stats.json")).unwrap(),
            )
            .unwrap();
            assert_stats_equal(
                &evaluate_files(dir.path(), segm),
                &theirs,
                &format!("{script} seed {seed}"),
            );
        }
    }

    #[test]
    fn matches_pycocotools_live() {
        check_live_cases("make_cases.py", false);
    }

    #[test]
    fn segm_matches_pycocotools_live() {
        check_live_cases("make_segm_cases.py", true);
    }
}
