//! Momentum SGD with L2 weight decay, as Paddle's `Momentum` optimizer with an
//! `L2Decay` regulariser applies it (the decay is added to the gradient, then
//! the velocity update, then the step; no Nesterov).
use crate::{grid_stride, kernel};

kernel! {
    /// `v = momentum * v + (g + weight_decay * p); p -= lr * v`, for `n` parameters.
    pub fn momentum_sgd(ctx, param: *mut f32, grad: *const f32, velocity: *mut f32, n: u32, lr: f32, momentum: f32, weight_decay: f32) {
        grid_stride(ctx, n, |i| {
            let p = *param.add(i);
            let g = *grad.add(i) + weight_decay * p;
            let v = momentum * *velocity.add(i) + g;
            *velocity.add(i) = v;
            *param.add(i) = p - lr * v;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_paddle_momentum_rule(
            p in prop::collection::vec(-1.0f32..1.0, 1..200),
            lr in 0.0f32..0.1, mu in 0.0f32..0.99, wd in 0.0f32..1e-3,
        ) {
            let g: Vec<f32> = p.iter().map(|v| v * 0.3 - 0.1).collect();
            let v0: Vec<f32> = p.iter().map(|v| v * -0.2).collect();
            let (pb, gb, vb) = (DeviceBuf::new(&p), DeviceBuf::new(&g), DeviceBuf::new(&v0));
            let n = p.len() as u32;
            launch_independent(Dim3::x(2), Dim3::x(64), |c| unsafe {
                momentum_sgd(c, pb.ptr(), gb.ptr(), vb.ptr(), n, lr, mu, wd)
            });
            for i in 0..p.len() {
                let v = mu * v0[i] + (g[i] + wd * p[i]);
                prop_assert_eq!(vb.to_vec()[i], v);
                prop_assert_eq!(pb.to_vec()[i], p[i] - lr * v);
            }
        }
    }
}
