//! Paddle's `sigmoid_focal_loss` over one RetinaNet level (see
//! `FocalLossGeom`): each logit's loss and its gradient in one pass, with
//! the expressions of Paddle's CPU kernel (`sigmoid_focal_loss_op.h`), so
//! the values are its own to a rounding: `ln p` with `p` clamped at the
//! smallest normal float, `ln(1 - p)` as `-x [x >= 0] - ln(1 + e^(x - 2x
//! [x >= 0]))`, which never overflows.

use crate::backend::FocalLossGeom;
use rayon::prelude::*;

/// Which side of the loss a logit is on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Ignored,
    Positive,
    Negative,
}

/// `(loss, dloss/dx)` of one logit `x`, each already scaled by `alpha /
/// normalizer` (positive) or `(1 - alpha) / normalizer` (negative).
fn focal(x: f32, target: Target, g: &FocalLossGeom) -> (f32, f32) {
    let p = 1.0 / (1.0 + (-x).exp());
    match target {
        Target::Ignored => (0.0, 0.0),
        Target::Positive => {
            let scale = g.alpha / g.normalizer;
            let ln_p = p.max(f32::MIN_POSITIVE).ln();
            let focus = (1.0 - p).powf(g.gamma);
            // d/dx of -(1 - p)^gamma ln p, with dp/dx = p (1 - p).
            let slope = focus * (1.0 - p - p * g.gamma * ln_p);
            (-(focus * ln_p) * scale, -scale * slope)
        }
        Target::Negative => {
            let scale = (1.0 - g.alpha) / g.normalizer;
            let positive = if x >= 0.0 { x } else { 0.0 };
            let ln_1mp = -positive - (1.0 + (x - 2.0 * positive).exp()).ln();
            let focus = p.powf(g.gamma);
            // d/dx of -p^gamma ln(1 - p).
            let slope = focus * (ln_1mp * (1.0 - p) * g.gamma - p);
            (-(focus * ln_1mp) * scale, -scale * slope)
        }
    }
}

/// `losses[i]` and `grad[i]` for every logit `i` (both overwritten).
pub fn forward_backward(
    g: &FocalLossGeom,
    logits: &[f32],
    labels: &[f32],
    grad: &mut [f32],
    losses: &mut [f32],
) {
    if let Err(msg) = g.validate() {
        panic!("{msg}");
    }
    let len = g.logits_len();
    for (name, got, want) in [
        ("logits", logits.len(), len),
        ("labels", labels.len(), g.anchors()),
        ("grad", grad.len(), len),
        ("losses", losses.len(), len),
    ] {
        assert!(
            got >= want,
            "sigmoid_focal_loss: {name} too short for {g:?}"
        );
    }
    let cells = g.height * g.width;
    let channels = g.anchors_per_cell * g.classes;
    grad[..len]
        .par_chunks_mut(cells)
        .zip(losses[..len].par_chunks_mut(cells))
        .zip(logits[..len].par_chunks(cells))
        .enumerate()
        .for_each(|(plane, ((grad, losses), logits))| {
            let (n, channel) = (plane / channels, plane % channels);
            let (a, class) = (channel / g.classes, channel % g.classes);
            for cell in 0..cells {
                let label = labels[(n * cells + cell) * g.anchors_per_cell + a] as i32;
                let target = if label == -1 {
                    Target::Ignored
                } else if label == class as i32 + 1 {
                    Target::Positive
                } else {
                    Target::Negative
                };
                (losses[cell], grad[cell]) = focal(logits[cell], target, g);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(batch: usize) -> FocalLossGeom {
        FocalLossGeom {
            batch,
            anchors_per_cell: 2,
            classes: 3,
            height: 1,
            width: 2,
            gamma: 2.0,
            alpha: 0.25,
            normalizer: 4.0,
        }
    }

    /// Values by hand at x = 0 (p = 1/2): a positive costs
    /// `alpha (1/2)^2 ln 2 / 4`, a negative `(1 - alpha) (1/2)^2 ln 2 / 4`;
    /// the gradients `-alpha/4 (1/4)(1/2 + ln 2)` and
    /// `(1 - alpha)/4 (1/4)(ln 2 + 1/2)`. Channel `a * 3 + k` of cell
    /// `w` reads the label of anchor `w * 2 + a`.
    #[test]
    fn values_by_hand_and_the_label_layout() {
        let g = geom(1);
        // Anchors (cell, slot): (0,0) class 2, (0,1) ignored, (1,0)
        // background, (1,1) class 3.
        let labels = [2.0, -1.0, 0.0, 3.0];
        let logits = [0.0; 12];
        let (mut grad, mut losses) = ([f32::NAN; 12], [f32::NAN; 12]);
        forward_backward(&g, &logits, &labels, &mut grad, &mut losses);
        let ln2 = std::f32::consts::LN_2;
        let pos = 0.25 * 0.25 * ln2 / 4.0;
        let neg = 0.75 * 0.25 * ln2 / 4.0;
        let dpos = -0.25 / 4.0 * 0.25 * (0.5 + ln2);
        let dneg = 0.75 / 4.0 * 0.25 * (ln2 + 0.5);
        // [channel][cell]: channels 0..3 slot 0, 3..6 slot 1.
        let want_loss = [neg, neg, pos, neg, neg, neg, 0.0, neg, 0.0, neg, 0.0, pos];
        let want_grad = [
            dneg, dneg, dpos, dneg, dneg, dneg, 0.0, dneg, 0.0, dneg, 0.0, dpos,
        ];
        for i in 0..12 {
            assert!(
                (losses[i] - want_loss[i]).abs() < 1e-7,
                "loss {i}: {losses:?}"
            );
            assert!((grad[i] - want_grad[i]).abs() < 1e-7, "grad {i}: {grad:?}");
        }
    }

    /// Far from 0 neither side overflows nor loses its gradient: a
    /// confident wrong answer costs about |x| and has slope about 1.
    #[test]
    fn saturated_logits_stay_finite() {
        let g = FocalLossGeom {
            anchors_per_cell: 1,
            classes: 1,
            width: 1,
            ..geom(2)
        };
        let (mut grad, mut losses) = ([0.0; 2], [0.0; 2]);
        forward_backward(&g, &[-100.0, 100.0], &[1.0, 0.0], &mut grad, &mut losses);
        // ln p clamps at the smallest normal: -ln(MIN_POSITIVE) = 87.3.
        assert!(
            (losses[0] * 4.0 / 0.25 - 87.336_54).abs() < 1e-3,
            "{losses:?}"
        );
        assert!((losses[1] * 4.0 / 0.75 - 100.0).abs() < 1e-3, "{losses:?}");
        assert!((grad[0] * 4.0 / 0.25 + 1.0).abs() < 1e-6, "{grad:?}");
        assert!((grad[1] * 4.0 / 0.75 - 1.0).abs() < 1e-6, "{grad:?}");
    }

    #[test]
    #[should_panic(expected = "sigmoid_focal_loss: labels too short")]
    fn short_labels_are_refused() {
        let g = geom(1);
        forward_backward(&g, &[0.0; 12], &[0.0; 3], &mut [0.0; 12], &mut [0.0; 12]);
    }
}
