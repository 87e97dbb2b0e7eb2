//! RetinaNet's box regression loss per FPN level, `RetinaHead.get_loss`'s
//! `loss_bbox`: `smooth_l1` (the head's sigma, inside and outside weights
//! both `BBoxInsideWeight`) of the regression rows' predicted deltas
//! against their targets, summed over the batch and divided by the batch's
//! `ForegroundNumber` summed; run on the backend where the head's deltas
//! are (`Backend::retina_box_loss`, then `Backend::sum`).
//!
//! Paddle transposes each level's box output `[N, A*4, H, W]` to `[N,
//! H*W*A, 4]`, concatenates the levels per image and gathers the rows of
//! `LocationIndex`; here the loss runs on the level's NCHW output in place
//! against one target row per anchor (`RetinaBoxLossGeom`'s dense form):
//! a foreground anchor's row has its target and weight 1, every other
//! anchor weight 0, which adds nothing, as Paddle's weight-0 "fake"
//! foreground rows add nothing. Each anchor is at most once a real
//! foreground row, so the sum and the gradient are Paddle's (the gather's
//! backward scatters the rows' gradients back, zeros elsewhere).

use crate::backend::{Backend, RetinaBoxLossGeom};
use crate::retinanet::RetinaTargets;
use crate::tensor::Tensor;

/// The level's box targets `[N * anchors, 4]` and weights `[N * anchors]`
/// (see [`RetinaBoxLossGeom`]): for each image, its regression rows of
/// weight 1 of anchors `first_anchor..first_anchor + anchors` (the
/// level's, within the image's concatenated levels). The weight-0 "fake"
/// rows add nothing to the loss, so they are left out: every other
/// anchor's row is zeros of weight 0, as a device writes it.
pub fn level_box_targets(
    targets: &[RetinaTargets],
    first_anchor: usize,
    anchors: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut boxes = vec![0.0; targets.len() * anchors * 4];
    let mut weights = vec![0.0; targets.len() * anchors];
    for (n, t) in targets.iter().enumerate() {
        let rows = t
            .fg_anchors
            .iter()
            .zip(&t.bbox_targets)
            .zip(&t.bbox_inside_weights);
        for ((&anchor, target), weight) in rows {
            if weight[0] != 0.0 && (first_anchor..first_anchor + anchors).contains(&anchor) {
                let row = n * anchors + anchor - first_anchor;
                boxes[4 * row..][..4].copy_from_slice(target);
                weights[row] = weight[0];
            }
        }
    }
    (boxes, weights)
}

/// The level's summed loss (already divided by `geom.normalizer`);
/// `grad` gets its gradient with respect to `deltas` and `losses` each
/// delta's share, both reshaped to `deltas`' shape `[batch, 4 *
/// anchors_per_cell, height, width]`. `targets` and `weights` hold
/// `geom.anchors()` rows (see [`level_box_targets`]).
pub fn retina_box_loss<B: Backend>(
    backend: &B,
    deltas: &Tensor<B>,
    targets: &Tensor<B>,
    weights: &Tensor<B>,
    geom: &RetinaBoxLossGeom,
    grad: &mut Tensor<B>,
    losses: &mut Tensor<B>,
) -> f64 {
    if let Err(msg) = geom.validate() {
        panic!("{msg}");
    }
    let shape = [
        geom.batch,
        4 * geom.anchors_per_cell,
        geom.height,
        geom.width,
    ];
    assert_eq!(deltas.shape(), shape, "retina_box_loss: deltas shape");
    assert_eq!(
        targets.numel(),
        4 * geom.anchors(),
        "retina_box_loss: one target row per anchor"
    );
    assert_eq!(
        weights.numel(),
        geom.anchors(),
        "retina_box_loss: one weight per anchor"
    );
    grad.reshape_reuse(backend, &shape);
    losses.reshape_reuse(backend, &shape);
    backend.retina_box_loss(
        geom,
        deltas.buf(),
        targets.buf(),
        weights.buf(),
        grad.buf_mut(),
        losses.buf_mut(),
    );
    backend.sum(geom.deltas_len(), losses.buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, random_vec, GradCheck, Probe, SEEDS};
    use crate::layers::test_util::cpu;
    use crate::retinanet::focal_loss::tests::fg_nums;
    use crate::retinanet::focal_normalizer;
    use crate::retinanet::target_assign::paddle_fixture::paddle_case;
    use crate::CpuBackend;

    /// `(summed loss, gradient, losses)` of one level on the CPU.
    fn run(
        g: &RetinaBoxLossGeom,
        deltas: &[f32],
        (targets, weights): &(Vec<f32>, Vec<f32>),
    ) -> (f64, Vec<f32>, Vec<f32>) {
        let b = cpu();
        let shape = [g.batch, 4 * g.anchors_per_cell, g.height, g.width];
        let deltas = Tensor::<CpuBackend>::from_host(&b, &shape, deltas);
        let targets = Tensor::from_host(&b, &[targets.len()], targets);
        let weights = Tensor::from_host(&b, &[weights.len()], weights);
        let (mut grad, mut losses) = (Tensor::zeros(&b, &[0]), Tensor::zeros(&b, &[0]));
        let sum = retina_box_loss(&b, &deltas, &targets, &weights, g, &mut grad, &mut losses);
        (sum, grad.to_host(&b), losses.to_host(&b))
    }

    /// Two levels (2x3 and 1x2 cells, 2 anchors each), two images, rows on
    /// both levels, a weight-0 row repeating a real one's anchor and one
    /// alone.
    fn case(seed: u64) -> (Vec<[usize; 2]>, Vec<RetinaTargets>) {
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
            image(vec![5, 0, 12, 15], vec![0.0, 1.0, 1.0, 1.0], 5.0),
        ];
        (vec![[2, 3], [1, 2]], targets)
    }

    #[test]
    fn real_rows_become_one_target_per_anchor() {
        let (_, targets) = case(1);
        let (boxes, weights) = level_box_targets(&targets, 0, 12);
        // Image 0: anchor 3's fake row, then its real one; anchor 7.
        // Image 1: anchor 5 has only a fake row (left out); anchor 0.
        let mut want = vec![0.0; 24];
        for row in [3, 7, 12] {
            want[row] = 1.0;
        }
        assert_eq!(weights, want);
        assert_eq!(boxes[4 * 3..][..4], targets[0].bbox_targets[1]);
        assert_eq!(boxes[4 * 12..][..4], targets[1].bbox_targets[1]);
        assert_eq!(boxes[4 * 17..][..4], [0.0; 4]);
        // The second level: anchors 12..16.
        let (_, weights) = level_box_targets(&targets, 12, 4);
        assert_eq!(weights, vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    }

    /// Each level's gradient is the finite differences of its summed loss,
    /// for any seed (sigma 3: both smooth-L1 branches occur), and nothing
    /// off the foreground.
    #[test]
    fn gradient_matches_finite_differences_for_any_seed() {
        for seed in SEEDS {
            let (sizes, targets) = case(seed);
            let normalizer = focal_normalizer(&fg_nums(&targets));
            let mut first_anchor = 0;
            for (level, &[height, width]) in sizes.iter().enumerate() {
                let g = RetinaBoxLossGeom {
                    batch: 2,
                    anchors_per_cell: 2,
                    height,
                    width,
                    sigma: 3.0,
                    normalizer,
                };
                let rows = level_box_targets(&targets, first_anchor, height * width * 2);
                first_anchor += height * width * 2;
                let deltas = random_vec(seed + level as u64, g.deltas_len());
                let (sum, grad, losses) = run(&g, &deltas, &rows);
                assert!(sum > 0.0);
                let cells = height * width;
                for (i, (&d, &l)) in grad.iter().zip(&losses).enumerate() {
                    let (n, c, cell) = (i / (8 * cells), (i / cells) % 8, i % cells);
                    if rows.1[(n * cells + cell) * 2 + c / 4] == 0.0 {
                        assert_eq!((d, l), (0.0, 0.0));
                    }
                }
                let loss = |v: &[f32]| -> Probe {
                    let (sum, _, _) = run(&g, v, &rows);
                    Probe {
                        value: sum,
                        magnitude: sum.abs(),
                    }
                };
                let opts = GradCheck {
                    step: 1e-3,
                    ..GradCheck::default()
                };
                let name = format!("box loss seed {seed} level {level}");
                check_gradient(&name, &deltas, &grad, loss, opts).unwrap();
            }
        }
    }

    /// Paddle 1.8.5's `loss_bbox` of `RetinaHead.get_loss` on this crate's
    /// targets (`core/tests/fixtures/retinanet/retina_loss.py`): the
    /// levels' losses sum to it, and their gradients are Paddle's with
    /// respect to each level's box output.
    #[test]
    fn equals_paddles_loss_bbox_and_its_gradient() {
        let case = paddle_case();
        let targets = case.targets();
        let normalizer = focal_normalizer(&fg_nums(&targets));
        let a = case.anchors_per_cell;
        let (mut total, mut first_anchor) = (0.0f64, 0);
        let (mut worst, mut largest) = (0.0f32, 0.0f32);
        for (level, &[height, width]) in case.sizes.iter().enumerate() {
            let g = RetinaBoxLossGeom {
                batch: case.images(),
                anchors_per_cell: a,
                height,
                width,
                sigma: case.sigma,
                normalizer,
            };
            let rows = level_box_targets(&targets, first_anchor, height * width * a);
            first_anchor += height * width * a;
            let (sum, grad, _) = run(&g, &case.level_values(level, "box"), &rows);
            total += sum;
            for (g, w) in grad.iter().zip(&case.level_values(level, "grad_box")) {
                worst = worst.max((g - w).abs());
                largest = largest.max(w.abs());
            }
        }
        let paddle = case.json["loss_bbox"].as_f64().expect("loss_bbox");
        let relative = ((total - paddle) / paddle).abs();
        assert!(relative < 1e-4, "loss_bbox {total} vs Paddle's {paddle}");
        assert!(
            worst <= 1e-4 * largest,
            "gradient off by {worst}, largest {largest}"
        );
        eprintln!(
            "loss_bbox {total} vs {paddle} (relative {relative:.1e}); gradient off by {worst:.1e} of {largest:.1e}"
        );
    }
}
