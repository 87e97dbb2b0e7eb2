//! Paddle's `sigmoid_focal_loss` over one RetinaNet level (core's
//! `FocalLossGeom`): a thread per logit writes its loss and its gradient,
//! with the expressions of core's `cpu::sigmoid_focal_loss` (Paddle's CPU
//! kernel's), so the emulator gives the CPU's bits and the GPU differs only
//! by its approximate `exp`/`ln`/`pow`.
//! Launch: grid-stride, any 1-D grid.
use crate::{grid_stride, kernel, math};

kernel! {
    /// Logit `i` of `logits` `[N, A*K, H, W]` (`len` of them, `cells` = H*W,
    /// `classes` = K, `anchors_per_cell` = A) against the label of its
    /// anchor, `labels[(n * cells + cell) * A + a]` (-1 ignored, 0
    /// background, c >= 1 class c); `losses[i]` and `grad[i]` scaled by
    /// `alpha / normalizer` (positive) or `(1 - alpha) / normalizer`
    /// (negative), 0 when ignored.
    pub fn sigmoid_focal_loss(ctx, logits: *const f32, labels: *const f32, grad: *mut f32,
        losses: *mut f32, len: u32, cells: u32, classes: u32, anchors_per_cell: u32,
        gamma: f32, alpha: f32, normalizer: f32) {
        grid_stride(ctx, len, |i| {
            let (cells, classes, a_count) = (cells as usize, classes as usize, anchors_per_cell as usize);
            let plane = i / cells;
            let channel = plane % (a_count * classes);
            let (n, cell) = (plane / (a_count * classes), i % cells);
            let label = *labels.add((n * cells + cell) * a_count + channel / classes) as i32;
            let class = (channel % classes) as i32 + 1;
            let x = *logits.add(i);
            let p = 1.0 / (1.0 + math::exp(-x));
            let (loss, slope) = if label == -1 {
                (0.0, 0.0)
            } else if label == class {
                let scale = alpha / normalizer;
                let ln_p = math::ln(p.max(f32::MIN_POSITIVE));
                let focus = math::pow(1.0 - p, gamma);
                let slope = focus * (1.0 - p - p * gamma * ln_p);
                (-(focus * ln_p) * scale, -scale * slope)
            } else {
                let scale = (1.0 - alpha) / normalizer;
                let positive = if x >= 0.0 { x } else { 0.0 };
                let ln_1mp = -positive - math::ln(1.0 + math::exp(x - 2.0 * positive));
                let focus = math::pow(p, gamma);
                let slope = focus * (ln_1mp * (1.0 - p) * gamma - p);
                (-(focus * ln_1mp) * scale, -scale * slope)
            };
            *losses.add(i) = loss;
            *grad.add(i) = slope;
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
        /// Against an f64 reference of the loss (`-alpha (1-p)^g ln p`,
        /// `-(1-alpha) p^g ln(1-p)`) and its derivative by central
        /// differences in f64; labels over -1..=K, several anchors per cell,
        /// ragged planes; nothing written past the logits.
        #[test]
        fn matches_an_f64_reference(batch in 1usize..3, a_count in 1usize..4, classes in 1usize..4,
            cells in 1usize..7, seed in 0u32..1000, blocks in 1u32..3) {
            let len = batch * a_count * classes * cells;
            let anchors = batch * a_count * cells;
            let value = |i: usize, salt: u32| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed * salt) % 2001) as f64 / 1000.0 - 1.0;
            let x: Vec<f32> = (0..len).map(|i| (6.0 * value(i, 3)) as f32).collect();
            let labels: Vec<f32> = (0..anchors)
                .map(|i| ((value(i, 5) + 1.0) / 2.0 * (classes + 2) as f64).floor().min(classes as f64 + 1.0) as f32 - 1.0)
                .collect();
            let (gamma, alpha, normalizer) = (2.0f32, 0.25f32, 3.0f32);
            let (xb, lb) = (DeviceBuf::new(&x), DeviceBuf::new(&labels));
            let grad = DeviceBuf::filled(len + 1, f32::NAN);
            let losses = DeviceBuf::filled(len + 1, f32::NAN);
            launch_independent(Dim3::x(blocks), Dim3::x(32), |c| unsafe {
                sigmoid_focal_loss(c, xb.ptr(), lb.ptr(), grad.ptr(), losses.ptr(), len as u32,
                    cells as u32, classes as u32, a_count as u32, gamma, alpha, normalizer)
            });
            let (grad, losses) = (grad.to_vec(), losses.to_vec());
            for i in 0..len {
                let (plane, cell) = (i / cells, i % cells);
                let (n, channel) = (plane / (a_count * classes), plane % (a_count * classes));
                let label = labels[(n * cells + cell) * a_count + channel / classes] as i32;
                let positive = label == (channel % classes) as i32 + 1;
                let reference = |v: f64| -> f64 {
                    let p = 1.0 / (1.0 + (-v).exp());
                    match (label, positive) {
                        (-1, _) => 0.0,
                        (_, true) => -0.25 * (1.0 - p).powi(2) * p.ln() / 3.0,
                        _ => -0.75 * p.powi(2) * (1.0 - p).ln() / 3.0,
                    }
                };
                let v = x[i] as f64;
                let numeric = (reference(v + 1e-5) - reference(v - 1e-5)) / 2e-5;
                prop_assert!((losses[i] as f64 - reference(v)).abs() <= 1e-6 * (1.0 + reference(v).abs()),
                    "loss {}: {} vs {}", i, losses[i], reference(v));
                prop_assert!((grad[i] as f64 - numeric).abs() <= 1e-5 * (1.0 + numeric.abs()),
                    "grad {}: {} vs {}", i, grad[i], numeric);
            }
            prop_assert!(grad[len].is_nan() && losses[len].is_nan());
        }
    }
}
