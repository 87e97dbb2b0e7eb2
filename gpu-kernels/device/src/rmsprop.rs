//! RMSProp with L2 weight decay, as Paddle's `rmsprop` op (not centered)
//! after an `L2Decay` regulariser: the decay is added to the gradient, then
//! the mean square and the moment are updated and the moment is subtracted.
use crate::math::sqrt;
use crate::{grid_stride, kernel};

kernel! {
    /// For `n` parameters: `g = grad + weight_decay * p`,
    /// `ms = rho * ms + (1 - rho) * g * g`,
    /// `m = momentum * m + lr * g / sqrt(ms + epsilon)`, `p -= m`.
    pub fn rmsprop(ctx, param: *mut f32, grad: *const f32, mean_square: *mut f32, moment: *mut f32, n: u32, lr: f32, rho: f32, epsilon: f32, momentum: f32, weight_decay: f32) {
        grid_stride(ctx, n, |i| {
            let p = *param.add(i);
            let g = *grad.add(i) + weight_decay * p;
            let ms = rho * *mean_square.add(i) + (1.0 - rho) * g * g;
            let m = momentum * *moment.add(i) + lr * g / sqrt(ms + epsilon);
            *mean_square.add(i) = ms;
            *moment.add(i) = m;
            *param.add(i) = p - m;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    proptest! {
        /// Every element follows the formula (the same f32 operations in the
        /// same order, so the emulator's result is exact).
        #[test]
        fn matches_paddles_rmsprop_rule(
            p in prop::collection::vec(-1.0f32..1.0, 1..200),
            lr in 1e-4f32..0.1, rho in 0.5f32..0.99, momentum in 0.0f32..0.95, wd in 0.0f32..1e-3,
        ) {
            let g: Vec<f32> = p.iter().map(|v| v * 0.3 - 0.1).collect();
            let ms0: Vec<f32> = p.iter().map(|v| v * v * 0.5).collect();
            let m0: Vec<f32> = p.iter().map(|v| v * -0.2).collect();
            let (pb, gb) = (DeviceBuf::new(&p), DeviceBuf::new(&g));
            let (msb, mb) = (DeviceBuf::new(&ms0), DeviceBuf::new(&m0));
            let n = p.len() as u32;
            let epsilon = 1e-6;
            launch_independent(Dim3::x(2), Dim3::x(64), |c| unsafe {
                rmsprop(c, pb.ptr(), gb.ptr(), msb.ptr(), mb.ptr(), n, lr, rho, epsilon, momentum, wd)
            });
            let (pv, msv, mv) = (pb.to_vec(), msb.to_vec(), mb.to_vec());
            for i in 0..p.len() {
                let gi = g[i] + wd * p[i];
                let ms = rho * ms0[i] + (1.0 - rho) * gi * gi;
                let m = momentum * m0[i] + lr * gi / (ms + epsilon).sqrt();
                prop_assert_eq!(msv[i], ms);
                prop_assert_eq!(mv[i], m);
                prop_assert_eq!(pv[i], p[i] - m);
            }
        }
    }
}
