//! SSD's loss, as Paddle's `ssd_loss` computes it with the settings
//! PaddleDetection's SSD uses, and its gradient with respect to the
//! location and confidence predictions, side by side.
//!
//! Per image:
//! 1. every prior is matched to a ground-truth box: first greedily one prior
//!    per box by the highest IoU (`bipartite_match`), then every still free
//!    prior to its best box if that IoU reaches `overlap_threshold`
//!    (`per_prediction`);
//! 2. the unmatched priors are ranked by their softmax cross-entropy against
//!    the background class, and the `neg_pos_ratio` times as many as there
//!    are matched priors with the highest loss become negatives
//!    (`mine_hard_examples`, `max_negative`);
//! 3. matched priors cost softmax cross-entropy against their box's class
//!    plus smooth-L1 (sigma 1) between the predicted offsets and the box
//!    encoded on the prior (`box_coder`); negatives cost cross-entropy
//!    against the background; the rest cost nothing.
//!
//! The batch's sum is divided by the number of matched priors in the batch.
//! The matching and the mining are constants of the step: no gradient flows
//! through them, as in Paddle.

use crate::box_coder::{encode, BoxXyxy};
use crate::losses::{smooth_l1, softmax_cross_entropy};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsdLossConfig {
    pub background_label: usize,
    /// `per_prediction` matching: the IoU a free prior needs with a box.
    pub overlap_threshold: f32,
    /// Negatives per matched prior.
    pub neg_pos_ratio: f32,
    /// Only unmatched priors whose matched IoU is below this are mined.
    pub neg_overlap: f32,
    pub loc_loss_weight: f32,
    pub conf_loss_weight: f32,
}

impl Default for SsdLossConfig {
    /// `fluid.layers.ssd_loss`'s defaults, which PaddleDetection's SSD keeps.
    fn default() -> Self {
        SsdLossConfig {
            background_label: 0,
            overlap_threshold: 0.5,
            neg_pos_ratio: 3.0,
            neg_overlap: 0.5,
            loc_loss_weight: 1.0,
            conf_loss_weight: 1.0,
        }
    }
}

/// One image's ground truth: normalised boxes and their class indices
/// (never the background's).
#[derive(Debug, Clone, Copy)]
pub struct ImageTruth<'a> {
    pub boxes: &'a [BoxXyxy],
    pub labels: &'a [usize],
}

/// The batch's loss and what it is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SsdLoss {
    /// `(confidence + location) / positives`, Paddle's value.
    pub total: f32,
    pub confidence: f32,
    pub location: f32,
    pub positives: usize,
    pub negatives: usize,
}

/// Paddle's matching never pairs boxes that overlap by less than this.
const NO_OVERLAP: f32 = 1e-6;

/// IoU of two normalised boxes (no pixel `+1`).
pub fn iou(a: &BoxXyxy, b: &BoxXyxy) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    inter / (area_a + area_b - inter)
}

/// For each prior, the box it is matched to and their IoU (`None`, 0 when
/// free). `overlaps[g * priors + p]` is the IoU of box `g` and prior `p`.
pub fn match_priors(
    overlaps: &[f32],
    boxes: usize,
    priors: usize,
    threshold: f32,
) -> Vec<(Option<usize>, f32)> {
    let mut matched: Vec<(Option<usize>, f32)> = vec![(None, 0.0); priors];
    // Bipartite: the best remaining (box, free prior) pair, box by box; on a
    // tie the first prior, then the first box, wins (Paddle's scan order).
    let mut free_boxes: Vec<usize> = (0..boxes).collect();
    while !free_boxes.is_empty() {
        let mut best: Option<(usize, usize, f32)> = None;
        for (p, m) in matched.iter().enumerate() {
            if m.0.is_some() {
                continue;
            }
            for (k, &g) in free_boxes.iter().enumerate() {
                let overlap = overlaps[g * priors + p];
                if overlap >= NO_OVERLAP && best.is_none_or(|(_, _, o)| overlap > o) {
                    best = Some((p, k, overlap));
                }
            }
        }
        let Some((p, k, overlap)) = best else { break };
        matched[p] = (Some(free_boxes[k]), overlap);
        free_boxes.remove(k);
    }
    // Per prediction: every free prior to its best box above the threshold.
    for (p, m) in matched.iter_mut().enumerate() {
        if m.0.is_some() {
            continue;
        }
        for g in 0..boxes {
            let overlap = overlaps[g * priors + p];
            if overlap >= NO_OVERLAP && overlap >= threshold && overlap > m.1 {
                *m = (Some(g), overlap);
            }
        }
    }
    matched
}

/// The loss of a batch of `truths.len()` images and its gradients.
/// `location` is `[images, priors, 4]`, `confidence` `[images, priors,
/// classes]`; the gradients have the same shapes and are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn ssd_loss(
    cfg: &SsdLossConfig,
    priors: &[BoxXyxy],
    variances: &[[f32; 4]],
    classes: usize,
    location: &[f32],
    confidence: &[f32],
    truths: &[ImageTruth],
    grad_location: &mut [f32],
    grad_confidence: &mut [f32],
) -> SsdLoss {
    let (images, count) = (truths.len(), priors.len());
    assert_eq!(variances.len(), count, "ssd_loss: one variance per prior");
    assert_eq!(
        location.len(),
        images * count * 4,
        "ssd_loss: location shape"
    );
    assert_eq!(
        confidence.len(),
        images * count * classes,
        "ssd_loss: confidence shape"
    );
    assert_eq!(
        grad_location.len(),
        location.len(),
        "ssd_loss: location gradient shape"
    );
    assert_eq!(
        grad_confidence.len(),
        confidence.len(),
        "ssd_loss: confidence gradient shape"
    );
    grad_location.fill(0.0);
    grad_confidence.fill(0.0);

    // Matching and mining first: the normaliser is the batch's positives.
    let mut plans = Vec::with_capacity(images);
    let mut positives = 0;
    for (n, truth) in truths.iter().enumerate() {
        assert_eq!(
            truth.boxes.len(),
            truth.labels.len(),
            "ssd_loss: one label per box"
        );
        let overlaps: Vec<f32> = truth
            .boxes
            .iter()
            .flat_map(|b| priors.iter().map(move |p| iou(b, p)))
            .collect();
        let matched = match_priors(&overlaps, truth.boxes.len(), count, cfg.overlap_threshold);
        let conf = |p: usize| &confidence[(n * count + p) * classes..][..classes];
        let mut candidates: Vec<(f32, usize)> = matched
            .iter()
            .enumerate()
            .filter(|(_, m)| m.0.is_none() && m.1 < cfg.neg_overlap)
            .map(|(p, _)| {
                (
                    softmax_cross_entropy(conf(p), cfg.background_label, None),
                    p,
                )
            })
            .collect();
        let matched_here = matched.iter().filter(|m| m.0.is_some()).count();
        positives += matched_here;
        let wanted = ((matched_here as f32 * cfg.neg_pos_ratio) as usize).min(candidates.len());
        // Highest loss first; equal losses keep prior order.
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        let negatives: Vec<usize> = candidates[..wanted].iter().map(|&(_, p)| p).collect();
        plans.push((matched, negatives));
    }
    if positives == 0 {
        // Paddle divides by zero here; with nothing matched there is nothing
        // to learn from the batch, so it costs nothing.
        return SsdLoss::default();
    }
    let norm = positives as f32;
    let (conf_scale, loc_scale) = (cfg.conf_loss_weight / norm, cfg.loc_loss_weight / norm);

    let (mut conf_sum, mut loc_sum, mut negatives) = (0.0f64, 0.0f64, 0usize);
    for (n, (truth, (matched, mined))) in truths.iter().zip(&plans).enumerate() {
        for (p, m) in matched.iter().enumerate() {
            let Some(g) = m.0 else { continue };
            let label = truth.labels[g];
            assert!(
                label < classes,
                "ssd_loss: label {label} of {classes} classes"
            );
            let at = n * count + p;
            let logits = &confidence[at * classes..][..classes];
            let grad = &mut grad_confidence[at * classes..][..classes];
            conf_sum += softmax_cross_entropy(logits, label, Some((grad, conf_scale))) as f64;
            let target = encode(&priors[p], &variances[p], &truth.boxes[g], true);
            let pred = &location[at * 4..][..4];
            loc_sum += smooth_l1(
                pred,
                &target,
                None,
                1.0,
                &mut grad_location[at * 4..][..4],
                loc_scale,
            ) as f64;
        }
        for &p in mined {
            let at = n * count + p;
            let logits = &confidence[at * classes..][..classes];
            let grad = &mut grad_confidence[at * classes..][..classes];
            conf_sum +=
                softmax_cross_entropy(logits, cfg.background_label, Some((grad, conf_scale)))
                    as f64;
        }
        negatives += mined.len();
    }
    let confidence_loss = cfg.conf_loss_weight as f64 * conf_sum / norm as f64;
    let location_loss = cfg.loc_loss_weight as f64 * loc_sum / norm as f64;
    SsdLoss {
        total: (confidence_loss + location_loss) as f32,
        confidence: confidence_loss as f32,
        location: location_loss as f32,
        positives,
        negatives,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, quads, read};
    use crate::gradcheck::{check_gradient, random_vec, GradCheck, Probe, SEEDS};

    /// Paddle's `ssd_loss` summed over the batch, and its gradients, on fixed
    /// predictions, priors and ground truth
    /// (`core/tests/fixtures/ssd/ssd_loss.py`).
    #[test]
    fn loss_and_gradients_equal_paddles() {
        let f = read("ssd/ssd_loss.json");
        let classes = f["classes"].as_u64().expect("classes") as usize;
        let priors = quads(&f["priors"]);
        let variances = quads(&f["variances"]);
        let boxes = quads(&f["gt_boxes"]);
        let labels: Vec<usize> = floats(&f["gt_labels"])
            .iter()
            .map(|&l| l as usize)
            .collect();
        let mut truths = Vec::new();
        let mut first = 0;
        for count in floats(&f["gt_per_image"]) {
            let end = first + count as usize;
            truths.push(ImageTruth {
                boxes: &boxes[first..end],
                labels: &labels[first..end],
            });
            first = end;
        }
        let location = floats(&f["location"]);
        let confidence = floats(&f["confidence"]);
        let mut grad_location = vec![0.0; location.len()];
        let mut grad_confidence = vec![0.0; confidence.len()];
        let loss = ssd_loss(
            &SsdLossConfig::default(),
            &priors,
            &variances,
            classes,
            &location,
            &confidence,
            &truths,
            &mut grad_location,
            &mut grad_confidence,
        );
        let want = f["loss"].as_f64().expect("loss") as f32;
        assert!(
            (loss.total - want).abs() <= 1e-4 * want.abs(),
            "{loss:?} vs {want}"
        );
        assert!(loss.positives > 5 && loss.negatives > 5, "{loss:?}");
        for (what, got, want) in [
            ("location", &grad_location, floats(&f["grad_location"])),
            (
                "confidence",
                &grad_confidence,
                floats(&f["grad_confidence"]),
            ),
        ] {
            let largest = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-4 * largest, "{what}[{i}]: {g} vs {w}");
            }
        }
    }

    #[test]
    fn matching_is_bipartite_then_per_prediction() {
        // Two boxes, four priors. Box 1's best prior (1, IoU 0.9) is taken
        // first, then box 0 gets its best free prior (0, 0.6); prior 2 goes to
        // its best box above 0.5, prior 3 (below 0.5 with both) stays free.
        #[rustfmt::skip]
        let overlaps = [
            0.6, 0.7, 0.55, 0.2,
            0.1, 0.9, 0.52, 0.4,
        ];
        let matched = match_priors(&overlaps, 2, 4, 0.5);
        assert_eq!(
            matched,
            vec![(Some(0), 0.6), (Some(1), 0.9), (Some(0), 0.55), (None, 0.0)]
        );
        // A box overlapping nothing matches nothing.
        assert_eq!(match_priors(&[0.0, 0.0], 1, 2, 0.5), vec![(None, 0.0); 2]);
    }

    /// Finite differences of the loss against its gradient, for random
    /// predictions. The matching does not depend on the predictions, and the
    /// mining only through ranks that a small step rarely swaps; the
    /// check skips the points where one does (a jump, not a slope).
    #[test]
    fn gradient_matches_finite_differences() {
        let priors: Vec<BoxXyxy> = (0..24)
            .map(|i| {
                let (x, y) = ((i % 6) as f32 * 0.15, (i / 6) as f32 * 0.2);
                [x, y, x + 0.3, y + 0.35]
            })
            .collect();
        let variances = vec![[0.1, 0.1, 0.2, 0.2]; priors.len()];
        let boxes = [
            [0.02, 0.01, 0.31, 0.37],
            [0.45, 0.4, 0.76, 0.74],
            [0.6, 0.2, 0.88, 0.6],
        ];
        let labels = [1, 2, 3];
        let truths = [
            ImageTruth {
                boxes: &boxes[..2],
                labels: &labels[..2],
            },
            ImageTruth {
                boxes: &boxes[2..],
                labels: &labels[2..],
            },
        ];
        let classes = 4;
        for seed in SEEDS {
            let location: Vec<f32> = random_vec(seed, 2 * 24 * 4)
                .iter()
                .map(|v| 0.8 * v)
                .collect();
            let confidence: Vec<f32> = random_vec(seed + 100, 2 * 24 * classes)
                .iter()
                .map(|v| 2.0 * v)
                .collect();
            let mut gl = vec![0.0; location.len()];
            let mut gc = vec![0.0; confidence.len()];
            let run = |l: &[f32], c: &[f32], gl: &mut [f32], gc: &mut [f32]| {
                ssd_loss(
                    &SsdLossConfig::default(),
                    &priors,
                    &variances,
                    classes,
                    l,
                    c,
                    &truths,
                    gl,
                    gc,
                )
            };
            run(&location, &confidence, &mut gl, &mut gc);
            let (mut sl, mut sc) = (gl.clone(), gc.clone());
            let probe = |total: f32| Probe {
                value: total as f64,
                magnitude: total as f64,
            };
            check_gradient(
                "ssd_loss d/location",
                &location,
                &gl,
                |l| probe(run(l, &confidence, &mut sl, &mut sc).total),
                GradCheck::default(),
            )
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            check_gradient(
                "ssd_loss d/confidence",
                &confidence,
                &gc,
                |c| probe(run(&location, c, &mut sl, &mut sc).total),
                GradCheck::default(),
            )
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }
}
