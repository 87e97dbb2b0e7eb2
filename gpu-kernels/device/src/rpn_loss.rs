//! PaddleDetection's RPN loss on one level (core's `rcnn::rpn_loss`): a
//! thread per logit of the level reads its anchor's label (`rpn_targets.rs`'
//! output: 1 foreground, 0 background, -1 not sampled) and, in the
//! foreground, its four deltas and their targets, writes its gradients in
//! place (0 where the anchor is not sampled, so every position is written)
//! and its two loss terms to a slot of its own, which `sum_blocks` adds
//! up. The expressions are core's, so the emulator gives the CPU's
//! gradients to the bit; the cross-entropy's `ln(1 + e^-|x|)` is `ln_1p`
//! there, so its loss terms agree to rounding.
//! Launch: grid-stride over the level's logits, any 1-D grid.
use crate::{grid_stride, kernel, math};

kernel! {
    /// Logit `e` of the level's `[N, A, H, W]` `logits` (`cells` = H*W,
    /// `anchors_per_cell` = A, `images` = N) is anchor `k = first + cell *
    /// A + a` of image `n`, whose label is `labels[n * total + k]` and
    /// foreground targets `targets[4 * (n * total + k)..]`; its deltas are
    /// in `bbox_pred` `[N, 4A, H, W]`. `norm` is 1 / the sampled anchors of
    /// the batch. A sampled anchor gets `grad_logits[e] = norm (sigmoid(x)
    /// - label)` and the unscaled `cls_losses[e]` (sigmoid cross-entropy);
    /// a foreground one its four `grad_bbox` entries (smooth-L1 slope,
    /// sigma^2 `sigma2`, times `norm`) and `bbox_losses[e]` (the smooth-L1
    /// over the four). Everything else is 0.
    pub fn rpn_loss_anchors(ctx, logits: *const f32, bbox_pred: *const f32, labels: *const f32,
        targets: *const f32, grad_logits: *mut f32, grad_bbox: *mut f32, cls_losses: *mut f32,
        bbox_losses: *mut f32, images: u32, cells: u32, anchors_per_cell: u32, first: u32,
        total: u32, sigma2: f32, norm: f32) {
        let (cells, a_count) = (cells as usize, anchors_per_cell as usize);
        grid_stride(ctx, images * anchors_per_cell * cells as u32, |e| {
            let (n, a, cell) = (e / (a_count * cells), e / cells % a_count, e % cells);
            let row = n * total as usize + first as usize + cell * a_count + a;
            let label = *labels.add(row);
            let x = *logits.add(e);
            let (mut cls_loss, mut grad) = (0.0, 0.0);
            if label >= 0.0 {
                let positive = if x > 0.0 { x } else { 0.0 };
                cls_loss = positive - x * label + math::ln(1.0 + math::exp(-math::abs(x)));
                grad = norm * (math::sigmoid(x) - label);
            }
            *cls_losses.add(e) = cls_loss;
            *grad_logits.add(e) = grad;
            let foreground = label > 0.0;
            let mut loss = 0.0;
            let mut j = 0;
            while j < 4 {
                let at = (n * 4 * a_count + 4 * a + j) * cells + cell;
                let mut slope = 0.0;
                if foreground {
                    let d = *bbox_pred.add(at) - *targets.add(4 * row + j);
                    let (value, s) = math::smooth_l1(d, sigma2);
                    loss += value;
                    slope = norm * s;
                }
                *grad_bbox.add(at) = slope;
                j += 1;
            }
            *bbox_losses.add(e) = loss;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    /// A plain reference of one row: the cross-entropy, its gradient, and
    /// the smooth-L1 sum and gradients (f64, core's definitions).
    fn reference(
        x: f32,
        label: f32,
        deltas: [f32; 4],
        targets: [f32; 4],
        sigma2: f64,
        norm: f64,
    ) -> (f64, f64, f64, [f64; 4]) {
        let x = x as f64;
        let ce = x.max(0.0) - x * label as f64 + (-x.abs()).exp().ln_1p();
        let grad = norm * (1.0 / (1.0 + (-x).exp()) - label as f64);
        let (mut loss, mut grads) = (0.0, [0.0; 4]);
        for j in 0..4 {
            let d = deltas[j] as f64 - targets[j] as f64;
            let (value, slope) = if d.abs() < 1.0 / sigma2 {
                (0.5 * sigma2 * d * d, sigma2 * d)
            } else {
                (d.abs() - 0.5 / sigma2, d.signum())
            };
            loss += value;
            grads[j] = norm * slope;
        }
        (ce, grad, loss, grads)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Random labels of a random level placed among other levels'
        /// anchors: each sampled anchor's losses and gradients as the
        /// reference's, zeros everywhere else, nothing written past the
        /// level's logits, and both smooth-L1 branches and large logits
        /// (the cross-entropy's stable form) on the way.
        #[test]
        fn matches_a_plain_reference(
            batch in 1usize..3,
            a_count in 1usize..4,
            cells in 1usize..9,
            before in 0usize..5,
            after in 0usize..5,
            sigma in prop_oneof![Just(3.0f32), 0.5f32..4.0],
            seed: u64,
            blocks in 1u32..3,
        ) {
            let len = batch * a_count * cells;
            let total = before + a_count * cells + after;
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32
            };
            let logits: Vec<f32> = (0..len).map(|_| 24.0 * next() - 12.0).collect();
            let bbox: Vec<f32> = (0..4 * len).map(|_| 2.0 * next() - 1.0).collect();
            // Each anchor unsampled, foreground or background.
            let labels: Vec<f32> = (0..batch * total).map(|_| (next() * 3.0).floor() - 1.0).collect();
            let targets: Vec<f32> = (0..4 * batch * total).map(|_| 2.0 * next() - 1.0).collect();
            let norm = 1.0 / 7.0;
            let sigma2 = sigma * sigma;
            let (lb, bb) = (DeviceBuf::new(&logits), DeviceBuf::new(&bbox));
            let (labels_buf, tb) = (DeviceBuf::new(&labels), DeviceBuf::new(&targets));
            let grad_logits = DeviceBuf::filled(len + 1, 7.0f32);
            let grad_bbox = DeviceBuf::filled(4 * len + 1, 7.0f32);
            let cls_losses = DeviceBuf::filled(len + 1, f32::NAN);
            let bbox_losses = DeviceBuf::filled(len + 1, f32::NAN);
            launch_independent(Dim3::x(blocks), Dim3::x(32), |c| unsafe {
                rpn_loss_anchors(c, lb.ptr(), bb.ptr(), labels_buf.ptr(), tb.ptr(), grad_logits.ptr(),
                    grad_bbox.ptr(), cls_losses.ptr(), bbox_losses.ptr(), batch as u32,
                    cells as u32, a_count as u32, before as u32, total as u32, sigma2, norm)
            });
            let (gl, gb) = (grad_logits.to_vec(), grad_bbox.to_vec());
            let (cl, bl) = (cls_losses.to_vec(), bbox_losses.to_vec());
            // Relative, but absolute near 0: `ln(1 + e^-|x|)` of a large |x|
            // is off by an ulp of 1 (as `ln_1p` is not).
            let close = |got: f32, want: f64| (got as f64 - want).abs() <= 1e-5 * want.abs().max(1e-2);
            for e in 0..len {
                let (n, a, cell) = (e / (a_count * cells), e / cells % a_count, e % cells);
                let row = n * total + before + cell * a_count + a;
                let label = labels[row];
                let at = |j: usize| (n * 4 * a_count + 4 * a + j) * cells + cell;
                let deltas = [0, 1, 2, 3].map(|j| bbox[at(j)]);
                let target = [0, 1, 2, 3].map(|j| targets[4 * row + j]);
                let (ce, grad, loss, grads) = reference(logits[e], label.max(0.0), deltas, target, sigma2 as f64, norm as f64);
                if label >= 0.0 {
                    prop_assert!(close(cl[e], ce), "logit {}: cross-entropy {} vs {}", e, cl[e], ce);
                    prop_assert!(close(gl[e], grad), "logit {}: gradient {} vs {}", e, gl[e], grad);
                } else {
                    prop_assert_eq!((cl[e], gl[e]), (0.0, 0.0));
                }
                if label > 0.0 {
                    prop_assert!(close(bl[e], loss), "logit {}: smooth-L1 {} vs {}", e, bl[e], loss);
                    for j in 0..4 {
                        prop_assert!(close(gb[at(j)], grads[j]), "logit {} delta {}", e, j);
                    }
                } else {
                    prop_assert_eq!(bl[e], 0.0);
                    for j in 0..4 {
                        prop_assert_eq!(gb[at(j)], 0.0);
                    }
                }
            }
            prop_assert_eq!((gl[len], gb[4 * len]), (7.0, 7.0));
            prop_assert!(cl[len].is_nan() && bl[len].is_nan());
        }
    }
}
