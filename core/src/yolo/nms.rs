//! Paddle's `multiclass_nms` for one image: per class, the boxes scoring above
//! `score_threshold`, best first (ties keep input order), at most `nms_top_k`,
//! are greedily kept unless they overlap an already kept box by more than
//! `nms_threshold`; then at most `keep_top_k` detections over all classes,
//! best first. Output is grouped by class, as Paddle's.

#[derive(Debug, Clone, PartialEq)]
pub struct NmsConfig {
    pub score_threshold: f32,
    /// Candidates per class before suppression; `None` = all.
    pub nms_top_k: Option<usize>,
    /// Detections per image after suppression; `None` = all.
    pub keep_top_k: Option<usize>,
    pub nms_threshold: f32,
    /// `false`: boxes are in pixels and a box from x1 to x2 is `x2 - x1 + 1` wide.
    pub normalized: bool,
    /// A class never reported (Paddle's `background_label`; YOLO has none).
    pub background_label: Option<usize>,
}

impl NmsConfig {
    /// PaddleDetection's YOLOv3 settings.
    pub fn yolov3() -> Self {
        NmsConfig {
            score_threshold: 0.01,
            nms_top_k: Some(1000),
            keep_top_k: Some(100),
            nms_threshold: 0.45,
            normalized: false,
            background_label: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub class: usize,
    pub score: f32,
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
}

/// Area as Paddle's `BBoxArea`: 0 for an inverted box, +1 per side in pixels.
fn box_area(b: &[f32; 4], normalized: bool) -> f32 {
    if b[2] < b[0] || b[3] < b[1] {
        return 0.0;
    }
    let pixel = if normalized { 0.0 } else { 1.0 };
    (b[2] - b[0] + pixel) * (b[3] - b[1] + pixel)
}

/// Paddle's `JaccardOverlap`.
pub fn jaccard_overlap(a: &[f32; 4], b: &[f32; 4], normalized: bool) -> f32 {
    if b[0] > a[2] || b[2] < a[0] || b[1] > a[3] || b[3] < a[1] {
        return 0.0;
    }
    let pixel = if normalized { 0.0 } else { 1.0 };
    let inter_w = a[2].min(b[2]) - a[0].max(b[0]) + pixel;
    let inter_h = a[3].min(b[3]) - a[1].max(b[1]) + pixel;
    let inter = inter_w * inter_h;
    inter / (box_area(a, normalized) + box_area(b, normalized) - inter)
}

/// The boxes kept so far for one class, column by column, so that testing a
/// candidate against all of them is a branch-free loop the compiler vectorises.
/// The overlap is computed exactly as `jaccard_overlap`.
#[derive(Default)]
struct KeptBoxes {
    x1: Vec<f32>,
    y1: Vec<f32>,
    x2: Vec<f32>,
    y2: Vec<f32>,
    area: Vec<f32>,
}

impl KeptBoxes {
    fn clear(&mut self) {
        for column in [
            &mut self.x1,
            &mut self.y1,
            &mut self.x2,
            &mut self.y2,
            &mut self.area,
        ] {
            column.clear();
        }
    }

    fn push(&mut self, b: &[f32; 4], area: f32) {
        self.x1.push(b[0]);
        self.y1.push(b[1]);
        self.x2.push(b[2]);
        self.y2.push(b[3]);
        self.area.push(area);
    }

    /// Whether `b` overlaps any kept box by more than `threshold`, checked in
    /// blocks of 16 so that a suppressed box stops early.
    fn overlaps_any(&self, b: &[f32; 4], area: f32, threshold: f32, pixel: f32) -> bool {
        const BLOCK: usize = 16;
        let n = self.x1.len();
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK).min(n);
            let mut hit = false;
            for k in start..end {
                let (x1, y1, x2, y2) = (self.x1[k], self.y1[k], self.x2[k], self.y2[k]);
                let apart = (x1 > b[2]) | (x2 < b[0]) | (y1 > b[3]) | (y2 < b[1]);
                let inter =
                    (b[2].min(x2) - b[0].max(x1) + pixel) * (b[3].min(y2) - b[1].max(y1) + pixel);
                let iou = inter / (area + self.area[k] - inter);
                hit |= !apart & (iou > threshold);
            }
            if hit {
                return true;
            }
            start = end;
        }
        false
    }
}

/// Greedy suppression of `ranked` (candidates, best first; candidate `m`'s
/// box is `boxes[box_of(m)]`) into `kept`: a box is kept unless it overlaps
/// an already kept one by more than the threshold. `eta < 1` is Paddle's adaptive NMS: after each kept box,
/// a threshold still above 0.5 is multiplied by `eta`.
#[allow(clippy::too_many_arguments)]
fn suppress(
    kept_boxes: &mut KeptBoxes,
    boxes: &[[f32; 4]],
    areas: &[f32],
    ranked: &[usize],
    box_of: impl Fn(usize) -> usize,
    nms_threshold: f32,
    eta: f32,
    pixel: f32,
    kept: &mut Vec<usize>,
) {
    kept_boxes.clear();
    let mut threshold = nms_threshold;
    for &m in ranked {
        let b = box_of(m);
        if !kept_boxes.overlaps_any(&boxes[b], areas[b], threshold, pixel) {
            kept_boxes.push(&boxes[b], areas[b]);
            kept.push(m);
            if eta < 1.0 && threshold > 0.5 {
                threshold *= eta;
            }
        }
    }
}

/// Single-class NMS (Paddle's `NMS` in `generate_proposals`, and
/// `multiclass_nms`'s per-class step): the indices of `ranked` (best first)
/// that survive, in rank order. See [`suppress`] for `eta`.
pub fn greedy_nms(
    boxes: &[[f32; 4]],
    ranked: &[usize],
    nms_threshold: f32,
    eta: f32,
    normalized: bool,
) -> Vec<usize> {
    let pixel = if normalized { 0.0 } else { 1.0 };
    let areas: Vec<f32> = boxes.iter().map(|b| box_area(b, normalized)).collect();
    let mut kept = Vec::new();
    suppress(
        &mut KeptBoxes::default(),
        boxes,
        &areas,
        ranked,
        |m| m,
        nms_threshold,
        eta,
        pixel,
        &mut kept,
    );
    kept
}

/// NMS over one image's `boxes` (`[M, 4]`, one box per candidate for all
/// classes) and box-major `scores` (`[M, classes]`, the layout `yolo_box`
/// writes).
pub fn multiclass_nms(
    cfg: &NmsConfig,
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: usize,
) -> Vec<Detection> {
    assert_eq!(
        scores.len(),
        boxes.len() * classes,
        "scores must be [boxes, classes]"
    );
    nms(cfg, boxes, false, scores, classes)
}

/// NMS over one image's `boxes` given per class (`[M, classes, 4]`: box
/// `m * classes + c` is candidate `m`'s box for class `c`) and `scores`
/// (`[M, classes]`): Paddle's `multiclass_nms` with 2-D scores, as the
/// R-CNN box head calls it on its per-class decoded boxes. Paddle orders
/// each class's detections by candidate index in this form (not by score,
/// also before the `keep_top_k` cut, which sets the order of ties), and so
/// does this.
pub fn multiclass_nms_class_boxes(
    cfg: &NmsConfig,
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: usize,
) -> Vec<Detection> {
    assert_eq!(
        scores.len(),
        boxes.len(),
        "boxes must be [candidates, classes] when scores are"
    );
    nms(cfg, boxes, true, scores, classes)
}

/// Both forms: candidate `m`'s box for class `c` is `boxes[m * classes + c]`
/// when `class_boxes`, else `boxes[m]`.
fn nms(
    cfg: &NmsConfig,
    boxes: &[[f32; 4]],
    class_boxes: bool,
    scores: &[f32],
    classes: usize,
) -> Vec<Detection> {
    let candidates_count = scores.len() / classes.max(1);
    let at = |m: usize, class: usize| if class_boxes { m * classes + class } else { m };
    let pixel = if cfg.normalized { 0.0 } else { 1.0 };
    let areas: Vec<f32> = boxes.iter().map(|b| box_area(b, cfg.normalized)).collect();
    let mut kept_per_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    let mut candidates: Vec<usize> = Vec::new();
    let mut kept_boxes = KeptBoxes::default();
    for (class, kept) in kept_per_class.iter_mut().enumerate() {
        if cfg.background_label == Some(class) {
            continue;
        }
        let score = |m: usize| scores[m * classes + class];
        candidates.clear();
        candidates.extend((0..candidates_count).filter(|&m| score(m) > cfg.score_threshold));
        // Stable: equal scores keep input order, as Paddle's std::stable_sort.
        candidates.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
        if let Some(top_k) = cfg.nms_top_k {
            candidates.truncate(top_k);
        }
        suppress(
            &mut kept_boxes,
            boxes,
            &areas,
            &candidates,
            |m| at(m, class),
            cfg.nms_threshold,
            1.0,
            pixel,
            kept,
        );
        if class_boxes {
            kept.sort_unstable();
        }
    }

    let total: usize = kept_per_class.iter().map(Vec::len).sum();
    if let Some(keep_top_k) = cfg.keep_top_k.filter(|&k| total > k) {
        // Best over all classes; ties keep class-then-rank order (stable sort).
        let mut all: Vec<(f32, usize, usize)> = kept_per_class
            .iter()
            .enumerate()
            .flat_map(|(c, kept)| kept.iter().map(move |&m| (scores[m * classes + c], c, m)))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        all.truncate(keep_top_k);
        kept_per_class.iter_mut().for_each(Vec::clear);
        for (_, c, m) in all {
            kept_per_class[c].push(m);
        }
        if class_boxes {
            kept_per_class
                .iter_mut()
                .for_each(|kept| kept.sort_unstable());
        }
    }

    kept_per_class
        .iter()
        .enumerate()
        .flat_map(|(class, kept)| {
            kept.iter().map(move |&m| Detection {
                class,
                score: scores[m * classes + class],
                bbox: boxes[at(m, class)],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(nms_top_k: Option<usize>, keep_top_k: Option<usize>) -> NmsConfig {
        NmsConfig {
            score_threshold: 0.1,
            nms_top_k,
            keep_top_k,
            nms_threshold: 0.5,
            normalized: true,
            background_label: None,
        }
    }

    #[test]
    fn overlap_by_hand() {
        let a = [0.0, 0.0, 2.0, 2.0];
        let b = [1.0, 1.0, 3.0, 3.0];
        // normalized: 1 / (4 + 4 - 1); pixels: 2x2 = 4 over 9 + 9 - 4.
        assert!((jaccard_overlap(&a, &b, true) - 1.0 / 7.0).abs() < 1e-7);
        assert!((jaccard_overlap(&a, &b, false) - 4.0 / 14.0).abs() < 1e-7);
        // Touching edges count as overlapping by one pixel in pixel mode.
        let c = [2.0, 0.0, 4.0, 2.0];
        assert_eq!(jaccard_overlap(&a, &c, true), 0.0);
        assert!((jaccard_overlap(&a, &c, false) - 3.0 / 15.0).abs() < 1e-7);
        assert_eq!(jaccard_overlap(&a, &[5.0, 5.0, 6.0, 6.0], false), 0.0);
    }

    #[test]
    fn suppression_by_hand() {
        // Box 1 overlaps box 0 by 0.81 (suppressed in class 0), box 2 is apart.
        // Class 1: box 1 scores above box 0, so box 1 is kept and box 0 suppressed.
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 8.1],
            [20.0, 20.0, 30.0, 30.0],
        ];
        #[rustfmt::skip]
        let scores = [
            0.9, 0.3,
            0.8, 0.6,
            0.05, 0.2,
        ];
        let out = multiclass_nms(&config(None, None), &boxes, &scores, 2);
        let got: Vec<(usize, f32)> = out.iter().map(|d| (d.class, d.score)).collect();
        assert_eq!(got, vec![(0, 0.9), (1, 0.6), (1, 0.2)]);
        assert_eq!(out[1].bbox, boxes[1]);

        // keep_top_k 2 drops the lowest (class 1, 0.2); nms_top_k 1 keeps only
        // each class's best candidate.
        let out = multiclass_nms(&config(None, Some(2)), &boxes, &scores, 2);
        assert_eq!(
            out.iter().map(|d| d.score).collect::<Vec<_>>(),
            vec![0.9, 0.6]
        );
        let out = multiclass_nms(&config(Some(1), None), &boxes, &scores, 2);
        assert_eq!(
            out.iter().map(|d| d.score).collect::<Vec<_>>(),
            vec![0.9, 0.6]
        );

        let mut with_background = config(None, None);
        with_background.background_label = Some(0);
        let out = multiclass_nms(&with_background, &boxes, &scores, 2);
        assert!(out.iter().all(|d| d.class == 1));
    }

    #[test]
    fn adaptive_threshold_by_hand() {
        // Box 1 overlaps box 0 by 0.6 (10x10 pixels against 10x10 shifted by
        // 2.5), box 2 is apart, box 3 overlaps box 2 by 0.6 too.
        let boxes = [
            [0.0, 0.0, 9.0, 9.0],
            [0.0, 2.5, 9.0, 11.5],
            [50.0, 50.0, 59.0, 59.0],
            [50.0, 52.5, 59.0, 61.5],
        ];
        assert!((jaccard_overlap(&boxes[0], &boxes[1], false) - 0.6).abs() < 1e-6);
        let ranked = [0, 2, 1, 3];
        // At 0.65 both overlaps pass; with eta 0.9 the threshold is 0.585
        // after box 0 and 0.5265 after box 2, so boxes 1 and 3 go.
        assert_eq!(
            greedy_nms(&boxes, &ranked, 0.65, 1.0, false),
            vec![0, 2, 1, 3]
        );
        assert_eq!(greedy_nms(&boxes, &ranked, 0.65, 0.9, false), vec![0, 2]);
        // The threshold shrinks only while above 0.5: 0.55 becomes 0.275
        // after box 0 and stays there, so box 4 (0.25 over box 2) survives.
        let mut with_third = boxes.to_vec();
        with_third.push([50.0, 56.0, 59.0, 65.0]);
        assert!((jaccard_overlap(&with_third[2], &with_third[4], false) - 0.25).abs() < 1e-6);
        assert_eq!(
            greedy_nms(&with_third, &[0, 2, 4], 0.55, 0.5, false),
            vec![0, 2, 4]
        );
    }

    /// A plain reference: the full IoU matrix, then for each candidate in rank
    /// order, suppress every later candidate it overlaps.
    /// `box_of(m, c)` is candidate `m`'s box for class `c`.
    fn brute_force(
        cfg: &NmsConfig,
        box_of: impl Fn(usize, usize) -> [f32; 4],
        scores: &[f32],
        classes: usize,
    ) -> Vec<(usize, usize)> {
        let mut kept = Vec::new();
        for c in 0..classes {
            let mut order: Vec<usize> = (0..scores.len() / classes)
                .filter(|&m| scores[m * classes + c] > cfg.score_threshold)
                .collect();
            order.sort_by(|&a, &b| {
                scores[b * classes + c]
                    .partial_cmp(&scores[a * classes + c])
                    .unwrap()
            });
            order.truncate(cfg.nms_top_k.unwrap_or(usize::MAX));
            let mut suppressed = vec![false; order.len()];
            for i in 0..order.len() {
                if suppressed[i] {
                    continue;
                }
                kept.push((c, order[i]));
                for j in i + 1..order.len() {
                    if jaccard_overlap(&box_of(order[i], c), &box_of(order[j], c), cfg.normalized)
                        > cfg.nms_threshold
                    {
                        suppressed[j] = true;
                    }
                }
            }
        }
        if let Some(k) = cfg.keep_top_k {
            let mut ranked = kept.clone();
            ranked.sort_by(|a, b| {
                scores[b.1 * classes + b.0]
                    .partial_cmp(&scores[a.1 * classes + a.0])
                    .unwrap()
            });
            ranked.truncate(k);
            kept.retain(|d| ranked.contains(d));
        }
        kept
    }

    fn boxes_and_scores(classes: usize) -> impl Strategy<Value = (Vec<[f32; 4]>, Vec<f32>)> {
        let corner = (0.0f32..100.0, 0.0f32..100.0, 1.0f32..40.0, 1.0f32..40.0);
        prop::collection::vec(corner, 1..60).prop_map(move |raw| {
            let boxes: Vec<[f32; 4]> = raw
                .into_iter()
                .map(|(x, y, w, h)| [x, y, x + w, y + h])
                .collect();
            // Distinct scores (1009 is prime): the brute force does not model tie order.
            let scores = (0..boxes.len() * classes)
                .map(|i| ((i * 7919) % 1009) as f32 / 1009.0)
                .collect();
            (boxes, scores)
        })
    }

    proptest! {
        #[test]
        fn equals_brute_force(
            (boxes, scores) in boxes_and_scores(3),
            nms_top_k in prop::option::of(1usize..30),
            keep_top_k in prop::option::of(1usize..40),
            nms_threshold in 0.1f32..0.9,
            normalized in any::<bool>(),
        ) {
            let cfg = NmsConfig { nms_threshold, normalized, ..config(nms_top_k, keep_top_k) };
            let out = multiclass_nms(&cfg, &boxes, &scores, 3);
            let ours: Vec<(usize, usize)> = out
                .iter()
                .map(|d| (d.class, boxes.iter().position(|b| *b == d.bbox).unwrap()))
                .collect();
            let mut reference = brute_force(&cfg, |m, _| boxes[m], &scores, 3);
            let mut sorted_ours = ours.clone();
            sorted_ours.sort();
            reference.sort();
            prop_assert_eq!(sorted_ours, reference);
            // Grouped by class, best first within a class.
            for pair in out.windows(2) {
                prop_assert!(pair[0].class < pair[1].class
                    || (pair[0].class == pair[1].class && pair[0].score >= pair[1].score));
            }
        }

        /// Per-class boxes (`[M, classes, 4]`): each class is suppressed on
        /// its own column of boxes, and a detection reports that column's box.
        #[test]
        fn class_boxes_equal_brute_force(
            (boxes, scores) in boxes_and_scores(3),
            keep_top_k in prop::option::of(1usize..40),
            nms_threshold in 0.1f32..0.9,
        ) {
            let cfg = NmsConfig { nms_threshold, normalized: false, ..config(None, keep_top_k) };
            // Candidate m's box for class c: box (m + c) of the drawn list,
            // so the three classes see different boxes.
            let count = boxes.len();
            let class_boxes: Vec<[f32; 4]> = (0..count * 3)
                .map(|i| boxes[(i / 3 + i % 3) % count])
                .collect();
            let out = multiclass_nms_class_boxes(&cfg, &class_boxes, &scores, 3);
            let mut ours: Vec<(usize, usize)> = Vec::new();
            // Grouped by class, in candidate order within a class.
            for pair in out.windows(2) {
                prop_assert!(pair[0].class <= pair[1].class);
            }
            for d in &out {
                let m = (0..count).find(|&m| class_boxes[m * 3 + d.class] == d.bbox
                    && scores[m * 3 + d.class] == d.score);
                prop_assert!(m.is_some(), "{d:?} is no candidate's box for its class");
                ours.push((d.class, m.unwrap_or_default()));
            }
            let mut reference = brute_force(&cfg, |m, c| class_boxes[m * 3 + c], &scores, 3);
            prop_assert!(ours.windows(2).all(|p| p[0] < p[1]), "{ours:?}");
            reference.sort();
            prop_assert_eq!(ours, reference);
        }
    }
}
