//! RetinaNet's classification loss per FPN level: `RetinaHead.get_loss`'s
//! `sigmoid_focal_loss` over the anchors `retinanet_target_assign` labelled,
//! summed (`reduce_sum`), run on the backend where the head's logits are
//! (`Backend::sigmoid_focal_loss`, then `Backend::sum`).
//!
//! Paddle gathers the labelled anchors' logit rows before the loss; here
//! the loss runs on the level's NCHW output in place, with ignored anchors
//! labelled -1 (no loss, zero gradient), which is the same sum and the
//! same gradient (the gather's backward scatters it back, zeros elsewhere).

use crate::backend::{Backend, FocalLossGeom};
use crate::retinanet::RetinaTargets;
use crate::tensor::Tensor;

/// The level's labels buffer (see [`FocalLossGeom`]): for each image, its
/// labels of anchors `first_anchor..first_anchor + anchors` (the level's,
/// within the image's concatenated levels), as floats.
pub fn level_labels(targets: &[RetinaTargets], first_anchor: usize, anchors: usize) -> Vec<f32> {
    targets
        .iter()
        .flat_map(|t| t.labels[first_anchor..first_anchor + anchors].iter())
        .map(|&l| l as f32)
        .collect()
}

/// `RetinaHead.get_loss`'s normaliser of both losses: the batch's
/// `ForegroundNumber` (one per image) summed, at least 1 (the focal loss
/// kernel's clamp).
pub fn focal_normalizer(fg_nums: &[f32]) -> f32 {
    fg_nums.iter().sum::<f32>().max(1.0)
}

/// The level's summed loss (already divided by `geom.normalizer`);
/// `grad` gets its gradient with respect to `logits` and `losses` each
/// logit's share, both reshaped to `logits`' shape `[batch,
/// anchors_per_cell * classes, height, width]`. `labels` holds
/// `geom.anchors()` values (see [`level_labels`]).
pub fn sigmoid_focal_loss<B: Backend>(
    backend: &B,
    logits: &Tensor<B>,
    labels: &Tensor<B>,
    geom: &FocalLossGeom,
    grad: &mut Tensor<B>,
    losses: &mut Tensor<B>,
) -> f64 {
    if let Err(msg) = geom.validate() {
        panic!("{msg}");
    }
    let shape = [
        geom.batch,
        geom.anchors_per_cell * geom.classes,
        geom.height,
        geom.width,
    ];
    assert_eq!(logits.shape(), shape, "sigmoid_focal_loss: logits shape");
    assert_eq!(
        labels.numel(),
        geom.anchors(),
        "sigmoid_focal_loss: one label per anchor"
    );
    grad.reshape_reuse(backend, &shape);
    losses.reshape_reuse(backend, &shape);
    backend.sigmoid_focal_loss(
        geom,
        logits.buf(),
        labels.buf(),
        grad.buf_mut(),
        losses.buf_mut(),
    );
    backend.sum(geom.logits_len(), losses.buf())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, random_vec, GradCheck, Probe, SEEDS};
    use crate::layers::test_util::cpu;
    use crate::retinanet::target_assign::paddle_fixture::paddle_case;
    use crate::CpuBackend;

    /// Each image's `ForegroundNumber`.
    pub(crate) fn fg_nums(targets: &[RetinaTargets]) -> Vec<f32> {
        targets.iter().map(|t| t.fg_num).collect()
    }

    /// `(summed loss, gradient, losses)` on the CPU.
    fn run(g: &FocalLossGeom, x: &[f32], labels: &[f32]) -> (f64, Vec<f32>, Vec<f32>) {
        let b = cpu();
        let shape = [g.batch, g.anchors_per_cell * g.classes, g.height, g.width];
        let logits = Tensor::<CpuBackend>::from_host(&b, &shape, x);
        let labels = Tensor::from_host(&b, &[labels.len()], labels);
        let (mut grad, mut losses) = (Tensor::zeros(&b, &[0]), Tensor::zeros(&b, &[0]));
        let sum = sigmoid_focal_loss(&b, &logits, &labels, g, &mut grad, &mut losses);
        (sum, grad.to_host(&b), losses.to_host(&b))
    }

    /// Logits spread over [-4, 4) and labels over -1..=classes (ignored,
    /// background, each class), several anchors per cell, ragged planes:
    /// the gradient is the finite differences of the summed loss.
    #[test]
    fn gradient_matches_finite_differences_for_any_seed() {
        let g = FocalLossGeom {
            batch: 2,
            anchors_per_cell: 3,
            classes: 4,
            height: 3,
            width: 2,
            gamma: 2.0,
            alpha: 0.25,
            normalizer: 7.0,
        };
        for seed in SEEDS {
            let x: Vec<f32> = random_vec(seed, g.logits_len())
                .iter()
                .map(|v| 4.0 * v)
                .collect();
            let labels: Vec<f32> = random_vec(seed + 50, g.anchors())
                .iter()
                .map(|v| ((v + 1.0) / 2.0 * (g.classes + 2) as f32).floor() - 1.0)
                .collect();
            assert!(labels.contains(&-1.0) && labels.contains(&0.0) && labels.contains(&4.0));
            let (_, grad, losses) = run(&g, &x, &labels);
            // Ignored anchors: nothing at all.
            let cells = g.height * g.width;
            for (i, (&d, &l)) in grad.iter().zip(&losses).enumerate() {
                let (n, c, cell) = (i / (12 * cells), (i / cells) % 12, i % cells);
                if labels[(n * cells + cell) * 3 + c / 4] == -1.0 {
                    assert_eq!((d, l), (0.0, 0.0));
                }
            }
            let loss = |v: &[f32]| -> Probe {
                let (_, _, losses) = run(&g, v, &labels);
                losses
                    .iter()
                    .map(|&l| Probe {
                        value: l as f64,
                        magnitude: l.abs() as f64,
                    })
                    .sum()
            };
            let opts = GradCheck {
                step: 1e-2,
                ..GradCheck::default()
            };
            check_gradient(&format!("focal seed {seed}"), &x, &grad, loss, opts).unwrap();
        }
    }

    /// Paddle 1.8.5's `RetinaHead.get_loss` (`core/tests/fixtures/
    /// retinanet/retina_loss.py`): the levels' focal losses on this
    /// crate's targets, normalised by the batch's `ForegroundNumber`, sum
    /// to `loss_cls` and their gradients are Paddle's with respect to each
    /// level's cls output.
    #[test]
    fn equals_paddles_loss_cls_and_its_gradient() {
        let case = paddle_case();
        let targets = case.targets();
        let normalizer = focal_normalizer(&fg_nums(&targets));
        let a = case.anchors_per_cell;
        let (mut total, mut first_anchor) = (0.0f64, 0);
        let (mut worst, mut largest) = (0.0f32, 0.0f32);
        for (level, &[height, width]) in case.sizes.iter().enumerate() {
            let g = FocalLossGeom {
                batch: case.images(),
                anchors_per_cell: a,
                classes: case.classes,
                height,
                width,
                gamma: case.gamma,
                alpha: case.alpha,
                normalizer,
            };
            let labels = level_labels(&targets, first_anchor, height * width * a);
            first_anchor += height * width * a;
            let (sum, grad, _) = run(&g, &case.level_values(level, "cls"), &labels);
            total += sum;
            let want = case.level_values(level, "grad_cls");
            for (got, want) in grad.iter().zip(&want) {
                worst = worst.max((got - want).abs());
                largest = largest.max(want.abs());
            }
        }
        let paddle = case.json["loss_cls"].as_f64().expect("loss_cls");
        assert!(
            ((total - paddle) / paddle).abs() < 1e-4,
            "loss_cls {total} vs Paddle's {paddle}"
        );
        assert!(
            worst <= 1e-4 * largest,
            "gradient off by {worst}, largest {largest}"
        );
        eprintln!(
            "loss_cls {total} vs {paddle} (relative {:.1e}); gradient off by {worst:.1e} of {largest:.1e}",
            ((total - paddle) / paddle).abs()
        );
    }
}
