//! VOC mAP as PaddleDetection's `DetectionMAP` (ppdet/metrics/map_utils.py):
//! each detection is matched to the same-class ground truth it overlaps most;
//! it is a true positive if that overlap is above the threshold and the ground
//! truth was not matched before, a false positive otherwise, and not counted at
//! all if that ground truth is difficult (unless `evaluate_difficult`). AP per
//! class from the precision/recall curve, 11-point or area; the mAP is the mean
//! over classes that have ground truth.

use crate::yolo::Detection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApType {
    /// Paddle's `11point` (the VOC2007 metric).
    ElevenPoint,
    /// Paddle's `integral`: area under the precision/recall curve.
    Area,
}

#[derive(Debug, Clone)]
pub struct DetectionMap {
    pub ap_type: ApType,
    /// A match needs IoU strictly above this (0.5).
    pub overlap_thresh: f64,
    /// `false`: boxes are in pixels, a box from x1 to x2 is `x2 - x1 + 1` wide.
    pub is_bbox_normalized: bool,
    pub evaluate_difficult: bool,
    /// Per class: (score, true positive) of every counted detection.
    scored: Vec<Vec<(f32, bool)>>,
    /// Per class: ground truths that count towards recall.
    gt_counts: Vec<usize>,
}

/// Paddle's `jaccard_overlap` of map_utils (touching boxes do not overlap).
fn overlap(pred: &[f32; 4], gt: &[f32; 4], normalized: bool) -> f64 {
    let (p, g) = (pred.map(f64::from), gt.map(f64::from));
    if p[0] >= g[2] || p[2] <= g[0] || p[1] >= g[3] || p[3] <= g[1] {
        return 0.0;
    }
    let pixel = if normalized { 0.0 } else { 1.0 };
    let area = |b: [f64; 4]| (b[2] - b[0] + pixel) * (b[3] - b[1] + pixel);
    let inter = area([
        p[0].max(g[0]),
        p[1].max(g[1]),
        p[2].min(g[2]),
        p[3].min(g[3]),
    ]);
    inter / (area(p) + area(g) - inter)
}

impl DetectionMap {
    pub fn new(num_classes: usize, ap_type: ApType, evaluate_difficult: bool) -> Self {
        DetectionMap {
            ap_type,
            overlap_thresh: 0.5,
            is_bbox_normalized: false,
            evaluate_difficult,
            scored: vec![Vec::new(); num_classes],
            gt_counts: vec![0; num_classes],
        }
    }

    /// Adds one image: its detections and its ground truth (x1, y1, x2, y2,
    /// class index, difficult flag).
    pub fn update(
        &mut self,
        detections: &[Detection],
        gt_boxes: &[[f32; 4]],
        gt_labels: &[usize],
        gt_difficult: &[bool],
    ) {
        assert_eq!(gt_boxes.len(), gt_labels.len());
        assert_eq!(gt_boxes.len(), gt_difficult.len());
        for (&label, &difficult) in gt_labels.iter().zip(gt_difficult) {
            if self.evaluate_difficult || !difficult {
                self.gt_counts[label] += 1;
            }
        }
        let mut matched = vec![false; gt_boxes.len()];
        for det in detections {
            let mut best: Option<usize> = None;
            let mut best_overlap = -1.0;
            for (g, gt) in gt_boxes.iter().enumerate() {
                if gt_labels[g] == det.class {
                    let o = overlap(&det.bbox, gt, self.is_bbox_normalized);
                    if o > best_overlap {
                        best_overlap = o;
                        best = Some(g);
                    }
                }
            }
            let class_scores = &mut self.scored[det.class];
            match best {
                Some(g) if best_overlap > self.overlap_thresh => {
                    if self.evaluate_difficult || !gt_difficult[g] {
                        class_scores.push((det.score, !matched[g]));
                        matched[g] = true;
                    }
                }
                _ => class_scores.push((det.score, false)),
            }
        }
    }

    /// AP of each class (`None` where the class has no ground truth).
    pub fn per_class_ap(&self) -> Vec<Option<f64>> {
        self.scored
            .iter()
            .zip(&self.gt_counts)
            .map(|(scored, &count)| (count > 0).then(|| self.class_ap(scored, count)))
            .collect()
    }

    /// The mean AP over classes with ground truth (0 when there are none).
    pub fn map(&self) -> f64 {
        let aps: Vec<f64> = self.per_class_ap().into_iter().flatten().collect();
        if aps.is_empty() {
            0.0
        } else {
            aps.iter().sum::<f64>() / aps.len() as f64
        }
    }

    fn class_ap(&self, scored: &[(f32, bool)], gt_count: usize) -> f64 {
        let mut sorted = scored.to_vec();
        // Stable, best first, as Python's sorted(reverse=True).
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut precision = Vec::with_capacity(sorted.len());
        let mut recall = Vec::with_capacity(sorted.len());
        for &(_, is_tp) in &sorted {
            if is_tp {
                tp += 1;
            } else {
                fp += 1;
            }
            precision.push(tp as f64 / (tp + fp) as f64);
            recall.push(tp as f64 / gt_count as f64);
        }
        match self.ap_type {
            ApType::ElevenPoint => eleven_point_ap(&precision, &recall),
            ApType::Area => {
                let mut ap = 0.0;
                let mut prev_recall = 0.0;
                for (p, r) in precision.iter().zip(&recall) {
                    if (r - prev_recall).abs() > 1e-6 {
                        ap += p * (r - prev_recall).abs();
                        prev_recall = *r;
                    }
                }
                ap
            }
        }
    }
}

/// Paddle's 11-point AP: for recall levels 1.0, 0.9, ..., 0.0 the best
/// precision at recall >= the level, walking the curve backwards once.
fn eleven_point_ap(precision: &[f64], recall: &[f64]) -> f64 {
    let mut max_precisions = [0.0f64; 11];
    let mut start = precision.len() as isize - 1;
    for j in (0..=10).rev() {
        let level = j as f64 / 10.0;
        let mut i = start;
        while i >= 0 {
            let k = i as usize;
            if recall[k] < level {
                start = i;
                if j > 0 {
                    max_precisions[j - 1] = max_precisions[j];
                }
                break;
            }
            if max_precisions[j] < precision[k] {
                max_precisions[j] = precision[k];
            }
            i -= 1;
        }
    }
    max_precisions.iter().sum::<f64>() / 11.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: usize, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { class, score, bbox }
    }

    /// Class 0: two ground truths, detections (by score) TP, FP, TP:
    /// precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    /// 11-point: levels 0..0.5 see max precision 1 (6 levels), 0.6..1.0 see
    /// 2/3 (5 levels): (6 + 10/3) / 11 = 28/33. Area: 1 * 0.5 + 2/3 * 0.5 = 5/6.
    fn two_of_two() -> (Vec<Detection>, Vec<[f32; 4]>, Vec<usize>) {
        let gts = vec![[0.0, 0.0, 9.0, 9.0], [20.0, 20.0, 29.0, 29.0]];
        let dets = vec![
            det(0, 0.9, [0.0, 0.0, 9.0, 9.0]),
            det(0, 0.8, [50.0, 50.0, 59.0, 59.0]),
            det(0, 0.7, [21.0, 21.0, 29.0, 29.0]),
        ];
        (dets, gts, vec![0, 0])
    }

    #[test]
    fn eleven_point_and_area_by_hand() {
        let (dets, gts, labels) = two_of_two();
        let mut m = DetectionMap::new(1, ApType::ElevenPoint, false);
        m.update(&dets, &gts, &labels, &[false, false]);
        assert!((m.map() - 28.0 / 33.0).abs() < 1e-12, "{}", m.map());
        let mut m = DetectionMap::new(1, ApType::Area, false);
        m.update(&dets, &gts, &labels, &[false, false]);
        assert!((m.map() - 5.0 / 6.0).abs() < 1e-12, "{}", m.map());
    }

    #[test]
    fn duplicates_are_false_positives_and_difficult_is_ignored() {
        let gts = [[0.0, 0.0, 9.0, 9.0], [20.0, 20.0, 29.0, 29.0]];
        let dets = [
            det(0, 0.9, [0.0, 0.0, 9.0, 9.0]),
            det(0, 0.8, [0.0, 0.0, 9.0, 9.0]),     // duplicate: FP
            det(0, 0.7, [20.0, 20.0, 29.0, 29.0]), // on the difficult one: not counted
        ];
        let mut m = DetectionMap::new(1, ApType::Area, false);
        m.update(&dets, &gts, &[0, 0], &[false, true]);
        // One counted ground truth; curve: (P 1, R 1), (P 1/2, R 1): AP 1.
        assert_eq!(m.per_class_ap(), vec![Some(1.0)]);
        assert_eq!(m.scored[0], vec![(0.9, true), (0.8, false)]);

        let mut m = DetectionMap::new(1, ApType::Area, true);
        m.update(&dets, &gts, &[0, 0], &[false, true]);
        // Two counted; TP, FP, TP: 1 * 0.5 + 2/3 * 0.5.
        assert!((m.map() - 5.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn classes_without_ground_truth_are_left_out() {
        let (dets, gts, labels) = two_of_two();
        let mut m = DetectionMap::new(3, ApType::Area, false);
        m.update(&dets, &gts, &labels, &[false, false]);
        // Class 1 has only a false positive and no ground truth: not averaged.
        m.update(
            &[det(1, 0.5, [0.0, 0.0, 1.0, 1.0])],
            &[[5.0, 5.0, 8.0, 8.0]],
            &[2],
            &[false],
        );
        // Class 2 has ground truth and no detections: AP 0.
        assert_eq!(m.per_class_ap()[1], None);
        assert_eq!(m.per_class_ap()[2], Some(0.0));
        assert!((m.map() - 5.0 / 12.0).abs() < 1e-12);
    }

    #[test]
    fn pixel_boxes_add_one() {
        // 10x10 pixel boxes offset by 5 in x: intersection 5x10 = 50 (inclusive
        // ends: x 5..9 is 5 wide), union 150: 1/3.
        let a = [0.0, 0.0, 9.0, 9.0];
        let b = [5.0, 0.0, 14.0, 9.0];
        assert!((overlap(&a, &b, false) - 1.0 / 3.0).abs() < 1e-12);
        assert!((overlap(&a, &b, true) - 36.0 / 126.0).abs() < 1e-12);
        assert_eq!(overlap(&a, &[9.0, 0.0, 12.0, 9.0], false), 0.0);
    }
}
