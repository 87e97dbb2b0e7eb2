//! RetinaNet's box loss over one level (see `RetinaBoxLossGeom`): each
//! delta's loss and gradient from `losses::smooth_l1` (Paddle's
//! `smooth_l1`, the loss the host computed over the regression rows before
//! it ran on the backend), the weight being both its inside and outside
//! weight.

use crate::backend::RetinaBoxLossGeom;
use crate::losses::smooth_l1;
use rayon::prelude::*;

/// `losses[i]` and `grad[i]` for every delta `i` (both overwritten).
pub fn forward_backward(
    g: &RetinaBoxLossGeom,
    deltas: &[f32],
    targets: &[f32],
    weights: &[f32],
    grad: &mut [f32],
    losses: &mut [f32],
) {
    if let Err(msg) = g.validate() {
        panic!("{msg}");
    }
    let len = g.deltas_len();
    for (name, got, want) in [
        ("deltas", deltas.len(), len),
        ("targets", targets.len(), 4 * g.anchors()),
        ("weights", weights.len(), g.anchors()),
        ("grad", grad.len(), len),
        ("losses", losses.len(), len),
    ] {
        assert!(got >= want, "retina_box_loss: {name} too short for {g:?}");
    }
    let cells = g.height * g.width;
    let channels = 4 * g.anchors_per_cell;
    let scale = 1.0 / g.normalizer;
    grad[..len]
        .par_chunks_mut(cells)
        .zip(losses[..len].par_chunks_mut(cells))
        .zip(deltas[..len].par_chunks(cells))
        .enumerate()
        .for_each(|(plane, ((grad, losses), deltas))| {
            let (n, channel) = (plane / channels, plane % channels);
            let (a, j) = (channel / 4, channel % 4);
            for cell in 0..cells {
                let anchor = (n * cells + cell) * g.anchors_per_cell + a;
                let weight = [weights[anchor]];
                let target = [targets[4 * anchor + j]];
                let mut slope = [0.0];
                let weights = Some((&weight[..], &weight[..]));
                let loss = smooth_l1(
                    &[deltas[cell]],
                    &target,
                    weights,
                    g.sigma,
                    &mut slope,
                    scale,
                );
                losses[cell] = loss * scale;
                grad[cell] = slope[0];
            }
        });
}
