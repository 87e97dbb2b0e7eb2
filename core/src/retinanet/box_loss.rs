//! RetinaNet's box regression loss, `RetinaHead.get_loss`'s `loss_bbox`,
//! on the host: `smooth_l1` (the head's sigma, inside and outside weights
//! both `BBoxInsideWeight`) of the regression rows' predicted deltas
//! against their targets, summed over the batch and divided by the batch's
//! `ForegroundNumber` summed (not clamped: each image adds at least 1).
//!
//! Paddle transposes each level's box output `[N, A*4, H, W]` to `[N,
//! H*W*A, 4]`, concatenates the levels per image and gathers the rows of
//! `LocationIndex`; here the deltas are read in place: anchor
//! `(h * W + w) * A + a` of a level at channels `4a..4a+4` of cell
//! `(h, w)`. A fake foreground row (weight 0) adds nothing to the loss or
//! the gradient.

use crate::losses::smooth_l1;
use crate::rcnn::rpn_loss::AnchorSite;
use crate::retinanet::RetinaTargets;

#[derive(Debug, Clone, PartialEq)]
pub struct RetinaBoxLoss {
    pub loss: f32,
    /// The gradient of `loss` with respect to each level's box output,
    /// same NCHW layout, already divided by the normaliser.
    pub grads: Vec<Vec<f32>>,
}

/// `loss_bbox` of the batch whose image `n` has targets `targets[n]`;
/// `box_outputs[l]` is level `l`'s box output `[N, A*4, H, W]` with
/// `sizes[l]` = `[H, W]`, `anchors_per_cell` = A on every level.
pub fn retina_box_loss(
    box_outputs: &[&[f32]],
    sizes: &[[usize; 2]],
    anchors_per_cell: usize,
    targets: &[RetinaTargets],
    sigma: f32,
) -> RetinaBoxLoss {
    let a_count = anchors_per_cell;
    let batch = targets.len();
    assert_eq!(
        box_outputs.len(),
        sizes.len(),
        "retina_box_loss: one size per level"
    );
    let cells: Vec<usize> = sizes.iter().map(|[h, w]| h * w).collect();
    for (out, &c) in box_outputs.iter().zip(&cells) {
        assert_eq!(
            out.len(),
            batch * a_count * 4 * c,
            "retina_box_loss: box output shape"
        );
    }
    let mut grads: Vec<Vec<f32>> = box_outputs.iter().map(|o| vec![0.0; o.len()]).collect();
    let normalizer: f32 = targets.iter().map(|t| t.fg_num).sum();
    if normalizer == 0.0 {
        return RetinaBoxLoss { loss: 0.0, grads };
    }
    let scale = 1.0 / normalizer;
    let mut sum = 0.0f64;
    for (n, t) in targets.iter().enumerate() {
        let rows = t
            .fg_anchors
            .iter()
            .zip(&t.bbox_targets)
            .zip(&t.bbox_inside_weights);
        for ((&anchor, target), weight) in rows {
            let s = AnchorSite::locate(anchor, &cells, a_count);
            let at = |c: usize| (n * 4 * a_count + 4 * s.a + c) * cells[s.level] + s.cell;
            let pred = [0, 1, 2, 3].map(|c| box_outputs[s.level][at(c)]);
            let mut grad = [0.0; 4];
            let weights = Some((&weight[..], &weight[..]));
            sum += smooth_l1(&pred, target, weights, sigma, &mut grad, scale) as f64;
            // Added, not written: a fake row repeats a real row's anchor.
            for (c, g) in grad.into_iter().enumerate() {
                grads[s.level][at(c)] += g;
            }
        }
    }
    RetinaBoxLoss {
        loss: (sum / normalizer as f64) as f32,
        grads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, random_vec, GradCheck, Probe, SEEDS};
    use crate::retinanet::target_assign::paddle_fixture::paddle_case;

    /// Two levels (2x3 and 1x2 cells, 2 anchors each), two images, rows on
    /// both levels, a weight-0 row repeating a real one's anchor.
    fn case(seed: u64) -> (Vec<Vec<f32>>, Vec<[usize; 2]>, Vec<RetinaTargets>) {
        let sizes = vec![[2, 3], [1, 2]];
        let outputs = sizes
            .iter()
            .enumerate()
            .map(|(l, [h, w])| random_vec(seed + l as u64, 2 * 2 * 4 * h * w))
            .collect();
        let deltas = |k: u64| -> [f32; 4] {
            let v = random_vec(seed + 10 + k, 4);
            [v[0], v[1], v[2], v[3]]
        };
        let image = |fg_anchors: Vec<usize>, weights: Vec<f32>, fg_num: f32| RetinaTargets {
            labels: Vec::new(),
            bbox_targets: (0..fg_anchors.len() as u64).map(deltas).collect(),
            bbox_inside_weights: weights.iter().map(|&w| [w; 4]).collect(),
            fg_anchors,
            fg_num,
        };
        let targets = vec![
            image(vec![3, 3, 7, 13], vec![0.0, 1.0, 1.0, 1.0], 5.0),
            image(vec![0, 12, 15], vec![1.0, 1.0, 1.0], 4.0),
        ];
        (outputs, sizes, targets)
    }

    fn loss_of(
        outputs: &[Vec<f32>],
        sizes: &[[usize; 2]],
        targets: &[RetinaTargets],
    ) -> RetinaBoxLoss {
        let refs: Vec<&[f32]> = outputs.iter().map(|o| &o[..]).collect();
        retina_box_loss(&refs, sizes, 2, targets, 3.0)
    }

    /// Each level's gradient is the finite differences of the loss, for any
    /// seed (sigma 3: both smooth-L1 branches occur).
    #[test]
    fn gradient_matches_finite_differences_for_any_seed() {
        for seed in SEEDS {
            let (outputs, sizes, targets) = case(seed);
            let analytic = loss_of(&outputs, &sizes, &targets);
            assert!(analytic.loss > 0.0);
            for level in 0..sizes.len() {
                let loss = |v: &[f32]| -> Probe {
                    let mut probe = outputs.clone();
                    probe[level] = v.to_vec();
                    let l = loss_of(&probe, &sizes, &targets).loss;
                    Probe {
                        value: l as f64,
                        magnitude: l.abs() as f64,
                    }
                };
                let opts = GradCheck {
                    step: 1e-3,
                    ..GradCheck::default()
                };
                let name = format!("box loss seed {seed} level {level}");
                check_gradient(&name, &outputs[level], &analytic.grads[level], loss, opts).unwrap();
            }
        }
    }

    /// Paddle 1.8.5's `loss_bbox` of `RetinaHead.get_loss` on this crate's
    /// targets (`core/tests/fixtures/retinanet/retina_loss.py`), and its
    /// gradient with respect to each level's box output.
    #[test]
    fn equals_paddles_loss_bbox_and_its_gradient() {
        let case = paddle_case();
        let outputs: Vec<Vec<f32>> = (0..case.sizes.len())
            .map(|l| case.level_values(l, "box"))
            .collect();
        let refs: Vec<&[f32]> = outputs.iter().map(|o| &o[..]).collect();
        let got = retina_box_loss(
            &refs,
            &case.sizes,
            case.anchors_per_cell,
            &case.targets(),
            case.sigma,
        );
        let paddle = case.json["loss_bbox"].as_f64().expect("loss_bbox") as f32;
        let relative = ((got.loss - paddle) / paddle).abs();
        assert!(
            relative < 1e-4,
            "loss_bbox {} vs Paddle's {paddle}",
            got.loss
        );
        let (mut worst, mut largest) = (0.0f32, 0.0f32);
        for (level, grad) in got.grads.iter().enumerate() {
            for (g, w) in grad.iter().zip(&case.level_values(level, "grad_box")) {
                worst = worst.max((g - w).abs());
                largest = largest.max(w.abs());
            }
        }
        assert!(
            worst <= 1e-4 * largest,
            "gradient off by {worst}, largest {largest}"
        );
        eprintln!(
            "loss_bbox {} vs {paddle} (relative {relative:.1e}); gradient off by {worst:.1e} of {largest:.1e}",
            got.loss
        );
    }
}
