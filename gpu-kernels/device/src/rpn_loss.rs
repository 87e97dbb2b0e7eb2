//! PaddleDetection's RPN loss on one level (core's `rcnn::rpn_loss`): a
//! thread per sampled anchor of the level reads its logit (and, in the
//! foreground, its four deltas) in place, writes its gradients there and
//! its two loss terms to a row of its own, which `sum_blocks` adds up. The
//! host has zeroed the gradients, so the unsampled positions stay 0. The
//! expressions are core's, so the emulator gives the CPU's gradients to the
//! bit; the cross-entropy's `ln(1 + e^-|x|)` is `ln_1p` there, so its loss
//! terms agree to rounding.
//! Launch: grid-stride over the rows, any 1-D grid.
use crate::{grid_stride, kernel, math};

kernel! {
    /// Row `r` of `rows` is the sampled anchor whose logit is
    /// `logits[sites[r]]` in the level's `[N, A, H, W]` (`cells` = H*W,
    /// `anchors_per_cell` = A); rows below `fg_rows` are foreground (label
    /// 1, deltas `bbox_pred` `[N, 4A, H, W]` against `targets[4r..4r +
    /// 4]`), the rest background (label 0). `norm` is 1 / the sampled
    /// anchors of the batch. Writes `grad_logits[sites[r]] = norm
    /// (sigmoid(x) - label)`, a foreground row's four `grad_bbox` entries
    /// (smooth-L1 slope, sigma^2 `sigma2`, times `norm`), and the unscaled
    /// `cls_losses[r]` (sigmoid cross-entropy) and `bbox_losses[r]` (the
    /// smooth-L1 over the four, 0 in the background).
    pub fn rpn_loss_rows(ctx, logits: *const f32, bbox_pred: *const f32, sites: *const u32,
        targets: *const f32, grad_logits: *mut f32, grad_bbox: *mut f32, cls_losses: *mut f32,
        bbox_losses: *mut f32, rows: u32, fg_rows: u32, cells: u32, anchors_per_cell: u32,
        sigma2: f32, norm: f32) {
        grid_stride(ctx, rows, |r| {
            let (cells, a_count) = (cells as usize, anchors_per_cell as usize);
            let site = *sites.add(r) as usize;
            let foreground = r < fg_rows as usize;
            let label = if foreground { 1.0 } else { 0.0 };
            let x = *logits.add(site);
            let positive = if x > 0.0 { x } else { 0.0 };
            *cls_losses.add(r) = positive - x * label + math::ln(1.0 + math::exp(-math::abs(x)));
            *grad_logits.add(site) = norm * (math::sigmoid(x) - label);
            let mut loss = 0.0;
            if foreground {
                // The logit's (n, a, cell), and so its deltas' channels 4a..4a+4.
                let (n, rest) = (site / (a_count * cells), site % (a_count * cells));
                let (a, cell) = (rest / cells, rest % cells);
                let mut j = 0;
                while j < 4 {
                    let at = (n * 4 * a_count + 4 * a + j) * cells + cell;
                    let d = *bbox_pred.add(at) - *targets.add(4 * r + j);
                    let (value, slope) = math::smooth_l1(d, sigma2);
                    loss += value;
                    *grad_bbox.add(at) = norm * slope;
                    j += 1;
                }
            }
            *bbox_losses.add(r) = loss;
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
        /// Random sampled anchors of a random level: each row's losses and
        /// gradients as the reference's, every unsampled position left as
        /// the host set it, and both smooth-L1 branches and large logits
        /// (the cross-entropy's stable form) on the way.
        #[test]
        fn matches_a_plain_reference(
            batch in 1usize..3,
            a_count in 1usize..4,
            cells in 1usize..9,
            sigma in prop_oneof![Just(3.0f32), 0.5f32..4.0],
            seed: u64,
            blocks in 1u32..3,
        ) {
            let len = batch * a_count * cells;
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32
            };
            let logits: Vec<f32> = (0..len).map(|_| 24.0 * next() - 12.0).collect();
            let bbox: Vec<f32> = (0..4 * len).map(|_| 2.0 * next() - 1.0).collect();
            // Each position sampled with probability 3/4, foreground first.
            let (mut fg, mut bg) = (Vec::new(), Vec::new());
            for site in 0..len as u32 {
                match (next() * 4.0) as u32 {
                    0 => {}
                    1 => fg.push(site),
                    _ => bg.push(site),
                }
            }
            let fg_rows = fg.len();
            let sites: Vec<u32> = fg.iter().chain(&bg).copied().collect();
            let rows = sites.len();
            let targets: Vec<f32> = (0..4 * fg_rows).map(|_| 2.0 * next() - 1.0).collect();
            let norm = 1.0 / rows.max(1) as f32;
            let sigma2 = sigma * sigma;
            let (lb, bb) = (DeviceBuf::new(&logits), DeviceBuf::new(&bbox));
            let (sb, tb) = (DeviceBuf::new(&sites), DeviceBuf::new(&targets));
            let grad_logits = DeviceBuf::filled(len, 7.0f32);
            let grad_bbox = DeviceBuf::filled(4 * len, 7.0f32);
            let cls_losses = DeviceBuf::filled(rows + 1, f32::NAN);
            let bbox_losses = DeviceBuf::filled(rows + 1, f32::NAN);
            launch_independent(Dim3::x(blocks), Dim3::x(32), |c| unsafe {
                rpn_loss_rows(c, lb.ptr(), bb.ptr(), sb.ptr(), tb.ptr(), grad_logits.ptr(),
                    grad_bbox.ptr(), cls_losses.ptr(), bbox_losses.ptr(), rows as u32,
                    fg_rows as u32, cells as u32, a_count as u32, sigma2, norm)
            });
            let (gl, gb) = (grad_logits.to_vec(), grad_bbox.to_vec());
            let (cl, bl) = (cls_losses.to_vec(), bbox_losses.to_vec());
            // Relative, but absolute near 0: `ln(1 + e^-|x|)` of a large |x|
            // is off by an ulp of 1 (as `ln_1p` is not).
            let close = |got: f32, want: f64| (got as f64 - want).abs() <= 1e-5 * want.abs().max(1e-2);
            let mut want_gl = vec![7.0f32; len];
            let mut want_gb = vec![7.0f32; 4 * len];
            for (r, &site) in sites.iter().enumerate() {
                let site = site as usize;
                let label = (r < fg_rows) as u8 as f32;
                let (n, a, cell) = (site / (a_count * cells), site / cells % a_count, site % cells);
                let at = |j: usize| (n * 4 * a_count + 4 * a + j) * cells + cell;
                let deltas = [0, 1, 2, 3].map(|j| bbox[at(j)]);
                let target = if r < fg_rows { [0, 1, 2, 3].map(|j| targets[4 * r + j]) } else { deltas };
                let (ce, grad, loss, grads) = reference(logits[site], label, deltas, target, sigma2 as f64, norm as f64);
                prop_assert!(close(cl[r], ce), "row {}: cross-entropy {} vs {}", r, cl[r], ce);
                prop_assert!(close(gl[site], grad), "row {}: logit gradient {} vs {}", r, gl[site], grad);
                want_gl[site] = gl[site];
                if r < fg_rows {
                    prop_assert!(close(bl[r], loss), "row {}: smooth-L1 {} vs {}", r, bl[r], loss);
                    for j in 0..4 {
                        prop_assert!(close(gb[at(j)], grads[j]), "row {} delta {}", r, j);
                        want_gb[at(j)] = gb[at(j)];
                    }
                } else {
                    prop_assert_eq!(bl[r], 0.0);
                }
            }
            prop_assert_eq!(gl, want_gl);
            prop_assert_eq!(gb, want_gb);
            prop_assert!(cl[rows].is_nan() && bl[rows].is_nan());
        }
    }
}
