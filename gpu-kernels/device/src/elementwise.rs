//! Elementwise kernels: activations (forward and backward side by side), add,
//! axpy, scale and fill. All are grid-stride loops over `n` elements.
use crate::{grid_stride, kernel, math};

/// Activation codes, as the host's `Activation` enum maps to them.
pub const ACT_IDENTITY: u32 = 0;
pub const ACT_RELU: u32 = 1;
pub const ACT_RELU6: u32 = 2;
/// Leaky ReLU with the kernel's `slope` argument (0.1 in YOLOv3).
pub const ACT_LEAKY_RELU: u32 = 3;

/// `act(x)` for an activation code.
#[inline(always)]
pub fn activate(kind: u32, slope: f32, x: f32) -> f32 {
    match kind {
        ACT_RELU => x.max(0.0),
        ACT_RELU6 => x.clamp(0.0, 6.0),
        ACT_LEAKY_RELU => {
            if x > 0.0 {
                x
            } else {
                slope * x
            }
        }
        _ => x,
    }
}

/// `act'(x)` from the output `y = act(x)`: every activation here is
/// monotonic, so the output tells which piece `x` was on.
#[inline(always)]
pub fn derivative_from_output(kind: u32, slope: f32, y: f32) -> f32 {
    match kind {
        ACT_RELU => {
            if y > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        ACT_RELU6 => {
            if y > 0.0 && y < 6.0 {
                1.0
            } else {
                0.0
            }
        }
        ACT_LEAKY_RELU => {
            if y > 0.0 {
                1.0
            } else {
                slope
            }
        }
        _ => 1.0,
    }
}

kernel! {
    /// `y = act(x)` (`kind` one of the `ACT_*` codes).
    pub fn activation_forward(ctx, x: *const f32, y: *mut f32, n: u32, kind: u32, slope: f32) {
        grid_stride(ctx, n, |i| *y.add(i) = activate(kind, slope, *x.add(i)));
    }
}

kernel! {
    /// `dx = dy * act'(x)`, from the forward output `y`.
    pub fn activation_backward(ctx, y: *const f32, dy: *const f32, dx: *mut f32, n: u32, kind: u32, slope: f32) {
        grid_stride(ctx, n, |i| *dx.add(i) = *dy.add(i) * derivative_from_output(kind, slope, *y.add(i)));
    }
}

kernel! {
    /// `x *= alpha`.
    pub fn scale(ctx, x: *mut f32, n: u32, alpha: f32) {
        grid_stride(ctx, n, |i| *x.add(i) *= alpha);
    }
}

kernel! {
    /// `y = 1 / (1 + exp(-x))`.
    pub fn sigmoid_forward(ctx, x: *const f32, y: *mut f32, n: u32) {
        grid_stride(ctx, n, |i| *y.add(i) = math::sigmoid(*x.add(i)));
    }
}

kernel! {
    /// `dx = dy * y * (1 - y)`, from the forward output `y`.
    pub fn sigmoid_backward(ctx, y: *const f32, dy: *const f32, dx: *mut f32, n: u32) {
        grid_stride(ctx, n, |i| {
            let s = *y.add(i);
            *dx.add(i) = *dy.add(i) * s * (1.0 - s);
        });
    }
}

kernel! {
    /// `out = a + b` (the shortcut of a residual block; `out` may alias `a`).
    pub fn add(ctx, a: *const f32, b: *const f32, out: *mut f32, n: u32) {
        grid_stride(ctx, n, |i| *out.add(i) = *a.add(i) + *b.add(i));
    }
}

kernel! {
    /// `y += alpha * x` (gradient accumulation).
    pub fn axpy(ctx, alpha: f32, x: *const f32, y: *mut f32, n: u32) {
        grid_stride(ctx, n, |i| *y.add(i) += alpha * *x.add(i));
    }
}

kernel! {
    /// `x[i] = value` (zeroing gradients).
    pub fn fill(ctx, x: *mut f32, n: u32, value: f32) {
        grid_stride(ctx, n, |i| *x.add(i) = value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    /// A small grid (3 blocks of 32) so the grid-stride loop wraps several times.
    const GRID: Dim3 = Dim3::x(3);
    const BLOCK: Dim3 = Dim3::x(32);

    fn values(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(-4.0f32..4.0, 0..max_len)
    }

    proptest! {
        #[test]
        fn activations_match_reference(x in values(300), slope in 0.01f32..0.5, kind in 0u32..4) {
            let n = x.len() as u32;
            let (xb, yb) = (DeviceBuf::new(&x), DeviceBuf::filled(x.len(), f32::NAN));
            let dy: Vec<f32> = x.iter().map(|v| v * 0.5 + 1.0).collect();
            let (dyb, dxb) = (DeviceBuf::new(&dy), DeviceBuf::filled(x.len(), f32::NAN));
            launch_independent(GRID, BLOCK, |c| unsafe { activation_forward(c, xb.ptr(), yb.ptr(), n, kind, slope) });
            launch_independent(GRID, BLOCK, |c| unsafe { activation_backward(c, yb.ptr(), dyb.ptr(), dxb.ptr(), n, kind, slope) });
            let reference = |v: f32| match kind { 1 => v.max(0.0), 2 => v.clamp(0.0, 6.0), 3 => if v > 0.0 { v } else { slope * v }, _ => v };
            let (y, dx) = (yb.to_vec(), dxb.to_vec());
            for i in 0..x.len() {
                prop_assert_eq!(y[i], reference(x[i]));
                // Away from the kinks, the derivative is the finite difference.
                let h = 1e-3;
                if (x[i].abs() > 2.0 * h) && ((x[i] - 6.0).abs() > 2.0 * h) {
                    let numeric = (reference(x[i] + h) - reference(x[i] - h)) / (2.0 * h);
                    prop_assert!((dx[i] - dy[i] * numeric).abs() < 1e-2 * (1.0 + dy[i].abs()), "{} vs {}", dx[i], dy[i] * numeric);
                }
            }
            launch_independent(GRID, BLOCK, |c| unsafe { scale(c, xb.ptr(), n, -2.0) });
            prop_assert_eq!(xb.to_vec(), x.iter().map(|v| v * -2.0).collect::<Vec<_>>());
        }

        #[test]
        fn sigmoid_backward_is_the_derivative(x in values(200)) {
            let n = x.len() as u32;
            let (xb, yb) = (DeviceBuf::new(&x), DeviceBuf::filled(x.len(), f32::NAN));
            let ones = DeviceBuf::filled(x.len(), 1.0f32);
            let dxb = DeviceBuf::filled(x.len(), f32::NAN);
            launch_independent(GRID, BLOCK, |c| unsafe { sigmoid_forward(c, xb.ptr(), yb.ptr(), n) });
            launch_independent(GRID, BLOCK, |c| unsafe { sigmoid_backward(c, yb.ptr(), ones.ptr(), dxb.ptr(), n) });
            let h = 1e-3f64;
            let s = |v: f64| 1.0 / (1.0 + (-v).exp());
            for (i, &v) in x.iter().enumerate() {
                prop_assert!((yb.to_vec()[i] as f64 - s(v as f64)).abs() < 1e-6);
                let numeric = (s(v as f64 + h) - s(v as f64 - h)) / (2.0 * h);
                prop_assert!((dxb.to_vec()[i] as f64 - numeric).abs() < 1e-5);
            }
        }

        #[test]
        fn add_axpy_fill_match_reference(a in values(300), alpha in -2.0f32..2.0) {
            let n = a.len() as u32;
            let b: Vec<f32> = a.iter().map(|v| v * 3.0 - 1.0).collect();
            let (ab, bb, out) = (DeviceBuf::new(&a), DeviceBuf::new(&b), DeviceBuf::filled(a.len(), 0.0));
            launch_independent(GRID, BLOCK, |c| unsafe { add(c, ab.ptr(), bb.ptr(), out.ptr(), n) });
            launch_independent(GRID, BLOCK, |c| unsafe { axpy(c, alpha, ab.ptr(), bb.ptr(), n) });
            for i in 0..a.len() {
                prop_assert_eq!(out.to_vec()[i], a[i] + b[i]);
                prop_assert_eq!(bb.to_vec()[i], b[i] + alpha * a[i]);
            }
            launch_independent(GRID, BLOCK, |c| unsafe { fill(c, ab.ptr(), n, 7.5) });
            prop_assert!(ab.to_vec().iter().all(|&v| v == 7.5));
        }
    }
}
