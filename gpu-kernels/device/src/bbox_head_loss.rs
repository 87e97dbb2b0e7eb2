//! The R-CNN box head's loss (core's `BoxHeadLossArgs`): a thread per RoI
//! reads its row of the outputs in place (the device's row order), writes
//! its softmax cross-entropy gradient over the whole row and its smooth-L1
//! gradients at its weighted deltas, and its two loss terms to a row of its
//! own, which `sum_blocks` adds up. The host uploads only the deltas whose
//! inside and outside weights are both non-zero (four per foreground RoI;
//! every other delta has loss 0 and gradient 0, as the host zeroed them).
//! The expressions are core's `losses` (the CPU backend's), so the emulator
//! gives the CPU's bits.
//! Launch: grid-stride over the RoIs, any 1-D grid.
use crate::{grid_stride, kernel, math};

kernel! {
    /// RoI `r` (Paddle's order, `rois` of them) is row `rows[r]` of
    /// `cls_score` `[R, classes]` and `bbox_pred` `[R, deltas]`, with label
    /// `labels[r]`; its weighted deltas are entries `first[r]..first[r +
    /// 1]`, entry `e` at column `columns[e]` with `(target, inside,
    /// outside)` = `entries[3e..3e + 3]`. `scale` is the loss weight over
    /// the RoIs. Writes the row's `grad_cls` (`scale (softmax - onehot)`),
    /// each entry's `grad_bbox` (`scale * outside * inside * slope`, sigma
    /// 1), and the unscaled `cls_losses[r]` and `bbox_losses[r]` (the
    /// outside-weighted smooth-L1 over the entries).
    pub fn bbox_loss_rows(ctx, cls_score: *const f32, bbox_pred: *const f32, rows: *const u32,
        labels: *const u32, first: *const u32, columns: *const u32, entries: *const f32,
        grad_cls: *mut f32, grad_bbox: *mut f32, cls_losses: *mut f32, bbox_losses: *mut f32,
        rois: u32, classes: u32, deltas: u32, scale: f32) {
        grid_stride(ctx, rois, |r| {
            let row = *rows.add(r) as usize;
            let (classes_n, deltas) = (classes as usize, deltas as usize);
            *cls_losses.add(r) = math::softmax_cross_entropy(cls_score.add(row * classes_n), classes,
                *labels.add(r), grad_cls.add(row * classes_n), scale);
            let mut loss = 0.0;
            let mut e = *first.add(r) as usize;
            while e < *first.add(r + 1) as usize {
                let at = row * deltas + *columns.add(e) as usize;
                let (target, inside, outside) = (*entries.add(3 * e), *entries.add(3 * e + 1), *entries.add(3 * e + 2));
                let d = (*bbox_pred.add(at) - target) * inside;
                let (value, slope) = math::smooth_l1(d, 1.0);
                loss += outside * value;
                *grad_bbox.add(at) = scale * outside * inside * slope;
                e += 1;
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
    use pulsefocus_core::losses::{smooth_l1, softmax_cross_entropy};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Against core's per-row functions (the plain loops the CPU runs)
        /// on the gathered rows: every written value to the bit, rows in a
        /// shuffled order, random weights (some 0), both smooth-L1
        /// branches; the deltas off the entries left as they were.
        #[test]
        fn equals_the_row_functions(
            rois in 1usize..7,
            classes in 2usize..6,
            agnostic: bool,
            seed: u64,
            blocks in 1u32..3,
        ) {
            let deltas = if agnostic { 8 } else { 4 * classes };
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32
            };
            let cls: Vec<f32> = (0..rois * classes).map(|_| 8.0 * next() - 4.0).collect();
            let bbox: Vec<f32> = (0..rois * deltas).map(|_| 4.0 * next() - 2.0).collect();
            // A shuffled permutation of the rows.
            let mut rows: Vec<u32> = (0..rois as u32).collect();
            for i in (1..rois).rev() {
                rows.swap(i, (next() * (i + 1) as f32) as usize % (i + 1));
            }
            let labels: Vec<u32> = (0..rois).map(|_| (next() * classes as f32) as u32 % classes as u32).collect();
            let (mut first, mut columns, mut entries) = (vec![0u32], Vec::new(), Vec::new());
            for _ in 0..rois {
                for c in 0..deltas as u32 {
                    if next() < 0.3 {
                        columns.push(c);
                        entries.extend([4.0 * next() - 2.0, 0.5 + next(), 0.5 + next()]);
                    }
                }
                first.push(columns.len() as u32);
            }
            let scale = 0.7 / rois as f32;
            let bufs = (DeviceBuf::new(&cls), DeviceBuf::new(&bbox), DeviceBuf::new(&rows), DeviceBuf::new(&labels));
            let table = (DeviceBuf::new(&first), DeviceBuf::new(&columns), DeviceBuf::new(&entries));
            let grad_cls = DeviceBuf::filled(rois * classes, f32::NAN);
            let grad_bbox = DeviceBuf::filled(rois * deltas, 5.0f32);
            let cls_losses = DeviceBuf::filled(rois, f32::NAN);
            let bbox_losses = DeviceBuf::filled(rois, f32::NAN);
            launch_independent(Dim3::x(blocks), Dim3::x(32), |c| unsafe {
                bbox_loss_rows(c, bufs.0.ptr(), bufs.1.ptr(), bufs.2.ptr(), bufs.3.ptr(), table.0.ptr(),
                    table.1.ptr(), table.2.ptr(), grad_cls.ptr(), grad_bbox.ptr(), cls_losses.ptr(),
                    bbox_losses.ptr(), rois as u32, classes as u32, deltas as u32, scale)
            });
            let (gc, gb) = (grad_cls.to_vec(), grad_bbox.to_vec());
            let (cl, bl) = (cls_losses.to_vec(), bbox_losses.to_vec());
            let mut want_gb = vec![5.0f32; rois * deltas];
            for r in 0..rois {
                let row = rows[r] as usize;
                let mut want_gc = vec![0.0; classes];
                let want = softmax_cross_entropy(&cls[row * classes..][..classes], labels[r] as usize,
                    Some((&mut want_gc, scale)));
                prop_assert_eq!(cl[r].to_bits(), want.to_bits(), "RoI {} cross-entropy", r);
                prop_assert_eq!(&gc[row * classes..][..classes], &want_gc[..], "RoI {} cls gradient", r);
                let span = first[r] as usize..first[r + 1] as usize;
                let at: Vec<usize> = columns[span.clone()].iter().map(|&c| row * deltas + c as usize).collect();
                let column = |k: usize| -> Vec<f32> { span.clone().map(|e| entries[3 * e + k]).collect() };
                let pred: Vec<f32> = at.iter().map(|&i| bbox[i]).collect();
                let mut grads = vec![0.0; at.len()];
                let want = smooth_l1(&pred, &column(0), Some((&column(1), &column(2))), 1.0, &mut grads, scale);
                prop_assert_eq!(bl[r].to_bits(), want.to_bits(), "RoI {} smooth-L1", r);
                for (&i, g) in at.iter().zip(grads) {
                    want_gb[i] = g;
                }
            }
            prop_assert_eq!(gb, want_gb);
        }
    }
}
