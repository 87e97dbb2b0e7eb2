//! Mask R-CNN's mask loss (see `MaskLossGeom`): Paddle's
//! `sigmoid_cross_entropy_with_logits(ignore_index=-1, normalize=True)` on
//! each RoI's class channel, every element's loss and gradient over the
//! normalizer in one pass with the expressions of `crate::losses` (those of
//! Paddle's CPU kernel), so the values are `rcnn::mask_loss`'s to the bit.

use crate::backend::MaskLossGeom;
use crate::losses::{sigmoid_cross_entropy, sigmoid_cross_entropy_gradient};
use rayon::prelude::*;

/// `grad` (shaped as `logits`) and `losses` (`[rois, side, side]`) of every
/// RoI, both overwritten.
pub fn forward_backward(
    g: &MaskLossGeom,
    logits: &[f32],
    roi_classes: &[f32],
    targets: &[f32],
    grad: &mut [f32],
    losses: &mut [f32],
) {
    if let Err(msg) = g.validate() {
        panic!("{msg}");
    }
    for (name, got, want) in [
        ("logits", logits.len(), g.logits_len()),
        ("roi_classes", roi_classes.len(), g.rois),
        ("targets", targets.len(), g.targets_len()),
        ("grad", grad.len(), g.logits_len()),
        ("losses", losses.len(), g.targets_len()),
    ] {
        assert!(got >= want, "mask_loss: {name} too short for {g:?}");
    }
    let cells = g.cells();
    let row = g.classes * cells;
    grad[..g.logits_len()]
        .par_chunks_mut(row)
        .zip(losses[..g.targets_len()].par_chunks_mut(cells))
        .zip(logits[..g.logits_len()].par_chunks(row))
        .zip(targets[..g.targets_len()].par_chunks(cells))
        .zip(roi_classes[..g.rois].par_iter())
        .enumerate()
        .for_each(|(roi, ((((grad, losses), logits), targets), &class))| {
            grad.fill(0.0);
            if class < 0.0 {
                losses.fill(0.0);
                return;
            }
            let channel = class as usize;
            assert!(
                channel < g.classes,
                "mask_loss: RoI {roi} has class {class}, the logits have {} channels",
                g.classes
            );
            let logits = &logits[channel * cells..][..cells];
            let grad = &mut grad[channel * cells..][..cells];
            for cell in 0..cells {
                let (x, t) = (logits[cell], targets[cell]);
                losses[cell] = sigmoid_cross_entropy(x, t) / g.normalizer;
                grad[cell] = sigmoid_cross_entropy_gradient(x, t) / g.normalizer;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, random_vec, GradCheck, Probe, SEEDS};
    use crate::rcnn::mask_loss;

    /// A case of `rois` RoIs, RoI 1 a placeholder: `(geometry, logits in
    /// [-6, 6), classes, 0/1 targets)`.
    fn case(seed: u64, rois: usize, classes: usize, side: usize) -> (MaskLossGeom, [Vec<f32>; 3]) {
        let cells = side * side;
        let roi_classes: Vec<f32> = random_vec(seed + 10, rois)
            .iter()
            .enumerate()
            .map(|(roi, v)| {
                if roi == 1 {
                    -1.0
                } else {
                    ((v + 1.0) / 2.0 * classes as f32).floor()
                }
            })
            .collect();
        let targets = random_vec(seed + 20, rois * cells)
            .iter()
            .map(|&v| if v > 0.0 { 1.0 } else { 0.0 })
            .collect();
        let logits = random_vec(seed, rois * classes * cells)
            .iter()
            .map(|v| 6.0 * v)
            .collect();
        let scored = roi_classes.iter().filter(|&&c| c >= 0.0).count();
        let g = MaskLossGeom {
            rois,
            classes,
            side,
            normalizer: (scored * cells) as f32,
        };
        (g, [logits, roi_classes, targets])
    }

    fn run(g: &MaskLossGeom, [logits, classes, targets]: &[Vec<f32>; 3]) -> (Vec<f32>, Vec<f32>) {
        let mut grad = vec![f32::NAN; g.logits_len()];
        let mut losses = vec![f32::NAN; g.targets_len()];
        forward_backward(g, logits, classes, targets, &mut grad, &mut losses);
        (grad, losses)
    }

    /// `rcnn::mask_loss` on Paddle's `MaskInt32` rows (the targets in the
    /// RoI's class channel, -1 elsewhere and on the placeholder row): the
    /// same gradient bits, and the losses summed in its order (the RoIs',
    /// then the pixels') its loss.
    #[test]
    fn equals_rcnn_mask_loss_on_the_expanded_targets() {
        for seed in SEEDS {
            let (rois, classes, side) = (
                2 + seed as usize % 3,
                1 + seed as usize % 4,
                seed as usize + 1,
            );
            let (g, data) = case(seed, rois, classes, side);
            let (grad, losses) = run(&g, &data);
            let [logits, roi_classes, targets] = &data;
            let cells = g.cells();
            let mut rows = Vec::with_capacity(g.logits_len());
            for roi in 0..rois {
                for channel in 0..classes {
                    for cell in 0..cells {
                        rows.push(if roi_classes[roi] == channel as f32 {
                            targets[roi * cells + cell] as i32
                        } else {
                            -1
                        });
                    }
                }
            }
            let mut want_grad = vec![f32::NAN; g.logits_len()];
            let want = mask_loss(logits, &rows, &mut want_grad);
            let sum = losses.iter().map(|&l| l as f64).sum::<f64>() as f32;
            assert_eq!(sum, want, "seed {seed}: loss");
            let differing = grad
                .iter()
                .zip(&want_grad)
                .filter(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(differing.count(), 0, "seed {seed}: gradients differ");
            assert!(
                losses[cells..2 * cells].iter().all(|&l| l == 0.0),
                "placeholder"
            );
        }
    }

    #[test]
    fn mask_loss_gradient_matches_finite_differences_for_any_seed() {
        for seed in SEEDS {
            let (g, data) = case(seed, 3, 2, 3);
            let (grad, _) = run(&g, &data);
            let [logits, roi_classes, targets] = &data;
            check_gradient(
                "mask_loss",
                logits,
                &grad,
                |x| {
                    let (_, losses) = run(&g, &[x.to_vec(), roi_classes.clone(), targets.clone()]);
                    losses
                        .iter()
                        .map(|&l| Probe {
                            value: l as f64,
                            magnitude: l.abs() as f64,
                        })
                        .sum()
                },
                GradCheck {
                    step: 1e-3,
                    ..GradCheck::default()
                },
            )
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }

    #[test]
    fn validate_names_what_is_wrong() {
        let g = MaskLossGeom {
            rois: 2,
            classes: 3,
            side: 4,
            normalizer: 16.0,
        };
        assert_eq!(g.validate(), Ok(()));
        for (bad, message) in [
            (
                MaskLossGeom { rois: 0, ..g },
                "mask_loss: rois must be positive",
            ),
            (
                MaskLossGeom { classes: 0, ..g },
                "mask_loss: classes must be positive",
            ),
            (
                MaskLossGeom { side: 0, ..g },
                "mask_loss: side must be positive",
            ),
            (
                MaskLossGeom {
                    normalizer: 0.0,
                    ..g
                },
                "mask_loss: normalizer must be positive and finite, got 0",
            ),
            (
                MaskLossGeom {
                    normalizer: -2.0,
                    ..g
                },
                "mask_loss: normalizer must be positive and finite, got -2",
            ),
            (
                MaskLossGeom {
                    normalizer: f32::NAN,
                    ..g
                },
                "mask_loss: normalizer must be positive and finite, got NaN",
            ),
            (
                MaskLossGeom {
                    normalizer: f32::INFINITY,
                    ..g
                },
                "mask_loss: normalizer must be positive and finite, got inf",
            ),
        ] {
            assert_eq!(bad.validate(), Err(message.to_string()));
        }
    }

    #[test]
    #[should_panic(expected = "mask_loss: targets too short")]
    fn short_targets_are_refused() {
        let (g, [logits, classes, targets]) = case(1, 3, 2, 2);
        let short = [logits, classes, targets[1..].to_vec()];
        run(&g, &short);
    }

    #[test]
    #[should_panic(expected = "mask_loss: RoI 2 has class 2, the logits have 2 channels")]
    fn a_class_past_the_channels_is_refused() {
        let (g, [logits, mut classes, targets]) = case(1, 3, 2, 2);
        classes[2] = 2.0;
        run(&g, &[logits, classes, targets]);
    }
}
