//! Mask R-CNN's mask loss (core's `MaskLossGeom`): Paddle's sigmoid
//! cross-entropy with logits on each RoI's class channel, over the
//! normalizer, with the expressions of core's `losses::sigmoid_cross_entropy`
//! and its gradient, so the emulator gives the CPU's bits and the GPU
//! differs only by its approximate `exp`/`ln`.
//! Launch: grid-stride, any 1-D grid.
use crate::{grid_stride, kernel, math};

kernel! {
    /// Target pixel `i` of `targets` `[rois, cells]` (`len` of them, `cells`
    /// = side * side) against the logit of its RoI's class channel in
    /// `logits` `[rois, classes, cells]`, the class `roi_classes[roi]` as a
    /// float (negative: a placeholder row, nothing scored; a class past the
    /// channels scores nothing either, where the CPU refuses it): `losses[i]` its loss
    /// and the gradient on that channel `(sigmoid(x) - t)`, both over
    /// `normalizer`; the pixel's other channels' gradient 0.
    pub fn mask_loss(ctx, logits: *const f32, roi_classes: *const f32, targets: *const f32,
        grad: *mut f32, losses: *mut f32, len: u32, cells: u32, classes: u32, normalizer: f32) {
        grid_stride(ctx, len, |i| {
            let (cells, classes) = (cells as usize, classes as usize);
            let (roi, cell) = (i / cells, i % cells);
            let class = *roi_classes.add(roi);
            let scored = class >= 0.0 && (class as usize) < classes;
            let channel = if scored { class as usize } else { classes };
            let pixel = roi * classes * cells + cell;
            let (loss, slope) = if scored {
                let (x, t) = (*logits.add(pixel + channel * cells), *targets.add(i));
                let loss = x.max(0.0) - x * t + math::ln(1.0 + math::exp(-math::abs(x)));
                (loss / normalizer, (math::sigmoid(x) - t) / normalizer)
            } else {
                (0.0, 0.0)
            };
            *losses.add(i) = loss;
            for c in 0..classes {
                *grad.add(pixel + c * cells) = if c == channel { slope } else { 0.0 };
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Against an f64 reference of the loss (`-t ln p - (1-t) ln(1-p)`)
        /// and its derivative by central differences in f64; classes over
        /// -1..=K (the placeholder and one past the channels score
        /// nothing), ragged masks, grids smaller than the pixels; nothing
        /// written past the tensors.
        #[test]
        fn matches_an_f64_reference(rois in 1usize..4, classes in 1usize..4, side in 1usize..5,
            seed in 0u32..1000, blocks in 1u32..3) {
            let cells = side * side;
            let (len, logits_len) = (rois * cells, rois * classes * cells);
            let value = |i: usize, salt: u32| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed * salt) % 2001) as f64 / 1000.0 - 1.0;
            let x: Vec<f32> = (0..logits_len).map(|i| (6.0 * value(i, 3)) as f32).collect();
            let roi_classes: Vec<f32> = (0..rois)
                .map(|i| ((value(i, 5) + 1.0) / 2.0 * (classes + 2) as f64).floor().min(classes as f64 + 1.0) as f32 - 1.0)
                .collect();
            let targets: Vec<f32> = (0..len).map(|i| if value(i, 7) > 0.0 { 1.0 } else { 0.0 }).collect();
            let normalizer = 5.0f32;
            let (xb, cb, tb) = (DeviceBuf::new(&x), DeviceBuf::new(&roi_classes), DeviceBuf::new(&targets));
            let grad = DeviceBuf::filled(logits_len + 1, f32::NAN);
            let losses = DeviceBuf::filled(len + 1, f32::NAN);
            launch_independent(Dim3::x(blocks), Dim3::x(32), |c| unsafe {
                mask_loss(c, xb.ptr(), cb.ptr(), tb.ptr(), grad.ptr(), losses.ptr(), len as u32,
                    cells as u32, classes as u32, normalizer)
            });
            let (grad, losses) = (grad.to_vec(), losses.to_vec());
            for i in 0..logits_len {
                let (roi, channel, cell) = (i / (classes * cells), i / cells % classes, i % cells);
                let scored = roi_classes[roi] == channel as f32;
                let t = targets[roi * cells + cell] as f64;
                let reference = |v: f64| -> f64 {
                    let p = 1.0 / (1.0 + (-v).exp());
                    -(t * p.ln() + (1.0 - t) * (1.0 - p).ln()) / 5.0
                };
                let v = x[i] as f64;
                let numeric = if scored { (reference(v + 1e-5) - reference(v - 1e-5)) / 2e-5 } else { 0.0 };
                prop_assert!((grad[i] as f64 - numeric).abs() <= 1e-5 * (1.0 + numeric.abs()),
                    "grad {}: {} vs {}", i, grad[i], numeric);
                if scored {
                    let j = roi * cells + cell;
                    prop_assert!((losses[j] as f64 - reference(v)).abs() <= 1e-6 * (1.0 + reference(v)),
                        "loss {}: {} vs {}", j, losses[j], reference(v));
                }
            }
            for roi in (0..rois).filter(|&r| roi_classes[r] < 0.0 || roi_classes[r] >= classes as f32) {
                prop_assert!(losses[roi * cells..][..cells].iter().all(|&l| l == 0.0), "placeholder {}", roi);
            }
            prop_assert!(grad[logits_len].is_nan() && losses[len].is_nan());
        }
    }
}
