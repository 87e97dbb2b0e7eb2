//! Elementwise YOLOv3 loss terms with their gradients, written side by side:
//! each writes the per-element loss (summed afterwards with
//! `reduce::sum_blocks`) and d(loss)/d(input) in one pass.
use crate::{grid_stride, kernel, math};

kernel! {
    /// Sigmoid cross-entropy on logits (tx, ty, objectness, classes):
    /// `loss = w * (max(x, 0) - x t + ln(1 + exp(-|x|)))`, `grad = w * (sigmoid(x) - t)`.
    pub fn sigmoid_cross_entropy(ctx, logits: *const f32, target: *const f32, weight: *const f32,
        loss: *mut f32, grad: *mut f32, n: u32) {
        grid_stride(ctx, n, |i| {
            let (x, t, w) = (*logits.add(i), *target.add(i), *weight.add(i));
            *loss.add(i) = w * (x.max(0.0) - x * t + math::ln(1.0 + math::exp(-math::abs(x))));
            *grad.add(i) = w * (math::sigmoid(x) - t);
        });
    }
}

kernel! {
    /// L1 (tw, th): `loss = w * |x - t|`, `grad = w * sign(x - t)` (0 at 0).
    pub fn l1_loss(ctx, input: *const f32, target: *const f32, weight: *const f32,
        loss: *mut f32, grad: *mut f32, n: u32) {
        grid_stride(ctx, n, |i| {
            let (d, w) = (*input.add(i) - *target.add(i), *weight.add(i));
            *loss.add(i) = w * math::abs(d);
            *grad.add(i) = if d > 0.0 { w } else if d < 0.0 { -w } else { 0.0 };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    fn run(
        kernel: unsafe fn(&crate::Ctx, *const f32, *const f32, *const f32, *mut f32, *mut f32, u32),
        x: &[f32],
        t: &[f32],
        w: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let (xb, tb, wb) = (DeviceBuf::new(x), DeviceBuf::new(t), DeviceBuf::new(w));
        let (lb, gb) = (
            DeviceBuf::filled(x.len(), f32::NAN),
            DeviceBuf::filled(x.len(), f32::NAN),
        );
        launch_independent(Dim3::x(2), Dim3::x(16), |c| unsafe {
            kernel(
                c,
                xb.ptr(),
                tb.ptr(),
                wb.ptr(),
                lb.ptr(),
                gb.ptr(),
                x.len() as u32,
            )
        });
        (lb.to_vec(), gb.to_vec())
    }

    proptest! {
        #[test]
        fn sigmoid_cross_entropy_value_and_gradient(x in prop::collection::vec(-8.0f32..8.0, 1..50), t in 0.0f32..1.0, w in 0.0f32..2.0) {
            let (ts, ws) = (vec![t; x.len()], vec![w; x.len()]);
            let (loss, grad) = run(sigmoid_cross_entropy, &x, &ts, &ws);
            let f = |v: f64| { let p = 1.0 / (1.0 + (-v).exp()); -(t as f64 * p.ln() + (1.0 - t as f64) * (1.0 - p).ln()) * w as f64 };
            for i in 0..x.len() {
                let v = x[i] as f64;
                prop_assert!((loss[i] as f64 - f(v)).abs() < 1e-4 * (1.0 + f(v).abs()));
                let numeric = (f(v + 1e-4) - f(v - 1e-4)) / 2e-4;
                prop_assert!((grad[i] as f64 - numeric).abs() < 1e-4 * (1.0 + numeric.abs()));
            }
        }

        #[test]
        fn l1_value_and_gradient(x in prop::collection::vec(-3.0f32..3.0, 1..50), t in -3.0f32..3.0, w in 0.0f32..2.0) {
            let (ts, ws) = (vec![t; x.len()], vec![w; x.len()]);
            let (loss, grad) = run(l1_loss, &x, &ts, &ws);
            for i in 0..x.len() {
                prop_assert_eq!(loss[i], w * (x[i] - t).abs());
                let d = x[i] - t;
                // Away from the kink, the finite difference agrees.
                if d.abs() > 1e-3 { prop_assert_eq!(grad[i], w * d.signum()); }
            }
        }
    }
}
