//! Batch normalisation over NCHW fused with an activation, Paddle's
//! semantics: training uses the batch mean and biased variance and moves the
//! running statistics by `running = momentum * running + (1 - momentum) *
//! batch`; evaluation uses the running statistics. `y = act(gamma * xhat +
//! beta)`; the backward passes take the activation's derivative from `y`
//! (see `elementwise::derivative_from_output`), so the pre-activation values
//! are never stored. Forward and backward side by side.
//!
//! Train kernels run one block of `REDUCE_THREADS` per channel (grid x =
//! channels): the block reduces its channel, then normalises it.
use crate::elementwise::{activate, derivative_from_output};
use crate::reduce::{block_sum, REDUCE_THREADS};
use crate::{grid_stride, kernel, math, shared_array};

/// Visits every (n, p) element index of channel `c`, split over the block.
#[inline(always)]
fn for_channel(tid: u32, batch: u32, channels: u32, plane: u32, c: u32, mut f: impl FnMut(usize)) {
    let mut i = tid;
    while i < batch * plane {
        let (n, p) = (i / plane, i % plane);
        f(((n * channels + c) * plane + p) as usize);
        i += REDUCE_THREADS;
    }
}

kernel! {
    /// Training forward: batch statistics, `y = act((x - mean) * inv_std * gamma + beta)`;
    /// saves `mean` and `inv_std` per channel for the backward pass and updates
    /// the running statistics.
    pub fn batch_norm_train_forward(ctx, x: *const f32, gamma: *const f32, beta: *const f32, y: *mut f32,
        saved_mean: *mut f32, saved_inv_std: *mut f32, running_mean: *mut f32, running_var: *mut f32,
        batch: u32, channels: u32, plane: u32, epsilon: f32, momentum: f32, act: u32, slope: f32) {
        let scratch = shared_array!(ctx, f32, REDUCE_THREADS as usize);
        let (c, tid) = (ctx.block_x(), ctx.thread_x());
        let count = (batch * plane) as f32;
        let mut own = 0.0;
        for_channel(tid, batch, channels, plane, c, |i| own += *x.add(i));
        let mean = block_sum(ctx, scratch, own) / count;
        // Second pass over the deviations: steadier than E[x^2] - mean^2.
        let mut own = 0.0;
        for_channel(tid, batch, channels, plane, c, |i| {
            let d = *x.add(i) - mean;
            own += d * d;
        });
        let var = block_sum(ctx, scratch, own) / count;
        let inv_std = 1.0 / math::sqrt(var + epsilon);
        let (g, b) = (*gamma.add(c as usize), *beta.add(c as usize));
        for_channel(tid, batch, channels, plane, c, |i| {
            *y.add(i) = activate(act, slope, (*x.add(i) - mean) * inv_std * g + b);
        });
        if tid == 0 {
            let c = c as usize;
            *saved_mean.add(c) = mean;
            *saved_inv_std.add(c) = inv_std;
            *running_mean.add(c) = momentum * *running_mean.add(c) + (1.0 - momentum) * mean;
            *running_var.add(c) = momentum * *running_var.add(c) + (1.0 - momentum) * var;
        }
    }
}

kernel! {
    /// Training backward: with `g = dy * act'(y)`, `dgamma = sum g * xhat`,
    /// `dbeta = sum g`, `dx = gamma * inv_std / M * (M g - dbeta - xhat dgamma)`,
    /// M = N*H*W.
    pub fn batch_norm_train_backward(ctx, x: *const f32, y: *const f32, dy: *const f32, gamma: *const f32,
        saved_mean: *const f32, saved_inv_std: *const f32, dx: *mut f32, dgamma: *mut f32, dbeta: *mut f32,
        batch: u32, channels: u32, plane: u32, act: u32, slope: f32) {
        let scratch = shared_array!(ctx, f32, REDUCE_THREADS as usize);
        let (c, tid) = (ctx.block_x(), ctx.thread_x());
        let (mean, inv_std) = (*saved_mean.add(c as usize), *saved_inv_std.add(c as usize));
        let grad = |i: usize| *dy.add(i) * derivative_from_output(act, slope, *y.add(i));
        let (mut own_g, mut own_g_xhat) = (0.0, 0.0);
        for_channel(tid, batch, channels, plane, c, |i| {
            let g = grad(i);
            own_g += g;
            own_g_xhat += g * (*x.add(i) - mean) * inv_std;
        });
        let sum_g = block_sum(ctx, scratch, own_g);
        let sum_g_xhat = block_sum(ctx, scratch, own_g_xhat);
        let count = (batch * plane) as f32;
        let k = *gamma.add(c as usize) * inv_std / count;
        for_channel(tid, batch, channels, plane, c, |i| {
            let xhat = (*x.add(i) - mean) * inv_std;
            *dx.add(i) = k * (count * grad(i) - sum_g - xhat * sum_g_xhat);
        });
        if tid == 0 {
            *dgamma.add(c as usize) = sum_g_xhat;
            *dbeta.add(c as usize) = sum_g;
        }
    }
}

kernel! {
    /// Evaluation forward with the running statistics (elementwise, any 1-D launch).
    pub fn batch_norm_eval_forward(ctx, x: *const f32, gamma: *const f32, beta: *const f32,
        running_mean: *const f32, running_var: *const f32, y: *mut f32,
        batch: u32, channels: u32, plane: u32, epsilon: f32, act: u32, slope: f32) {
        grid_stride(ctx, batch * channels * plane, |i| {
            let c = (i as u32 / plane % channels) as usize;
            let inv_std = 1.0 / math::sqrt(*running_var.add(c) + epsilon);
            let v = (*x.add(i) - *running_mean.add(c)) * inv_std * *gamma.add(c) + *beta.add(c);
            *y.add(i) = activate(act, slope, v);
        });
    }
}

kernel! {
    /// Evaluation (frozen) backward, to `x` only: the statistics are constants,
    /// so `dx = dy * act'(y) * gamma / sqrt(running_var + eps)`.
    pub fn batch_norm_eval_backward(ctx, y: *const f32, dy: *const f32, gamma: *const f32, running_var: *const f32,
        dx: *mut f32, batch: u32, channels: u32, plane: u32, epsilon: f32, act: u32, slope: f32) {
        grid_stride(ctx, batch * channels * plane, |i| {
            let c = (i as u32 / plane % channels) as usize;
            let k = *gamma.add(c) / math::sqrt(*running_var.add(c) + epsilon);
            *dx.add(i) = *dy.add(i) * derivative_from_output(act, slope, *y.add(i)) * k;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elementwise::{ACT_IDENTITY, ACT_LEAKY_RELU};
    use crate::emu::{launch, launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    const SLOPE: f32 = 0.1;

    fn act_ref(kind: u32, v: f64) -> f64 {
        if kind == ACT_LEAKY_RELU && v <= 0.0 {
            SLOPE as f64 * v
        } else {
            v
        }
    }

    /// f64 batch norm + activation of one channel's values: (y, mean, biased var).
    fn reference(xs: &[f64], g: f64, b: f64, eps: f64, kind: u32) -> (Vec<f64>, f64, f64) {
        let m = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / m;
        let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m;
        (
            xs.iter()
                .map(|v| act_ref(kind, (v - mean) / (var + eps).sqrt() * g + b))
                .collect(),
            mean,
            var,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        #[test]
        fn train_and_eval_match_reference_and_finite_differences(
            batch in 1usize..3, channels in 1usize..3, plane in 2usize..30, seed in 0u32..100, leaky: bool,
        ) {
            let kind = if leaky { ACT_LEAKY_RELU } else { ACT_IDENTITY };
            let len = batch * channels * plane;
            let x: Vec<f32> = (0..len).map(|i| (((i as u32 * 7919 + seed) % 101) as f32) / 25.0 - 2.0).collect();
            let dy: Vec<f32> = (0..len).map(|i| (((i as u32 * 104729 + seed) % 89) as f32) / 40.0 - 1.0).collect();
            let gamma: Vec<f32> = (0..channels).map(|c| 0.5 + c as f32).collect();
            let beta: Vec<f32> = (0..channels).map(|c| c as f32 - 0.3).collect();
            let (eps, mom) = (1e-5f32, 0.9f32);
            let b = |v: &[f32]| DeviceBuf::new(v);
            let (xb, gb, bb, dyb) = (b(&x), b(&gamma), b(&beta), b(&dy));
            let filled = |len: usize, v: f32| DeviceBuf::filled(len, v);
            let (yb, mean, inv_std) = (filled(len, f32::NAN), filled(channels, 0.0), filled(channels, 0.0));
            let (rm, rv) = (filled(channels, 0.2), filled(channels, 1.5));
            let (dx, dg, db) = (filled(len, f32::NAN), filled(channels, 0.0), filled(channels, 0.0));
            let (bn, cn, pn) = (batch as u32, channels as u32, plane as u32);
            launch(Dim3::x(cn), Dim3::x(REDUCE_THREADS), |c| unsafe {
                batch_norm_train_forward(c, xb.ptr(), gb.ptr(), bb.ptr(), yb.ptr(), mean.ptr(), inv_std.ptr(), rm.ptr(), rv.ptr(), bn, cn, pn, eps, mom, kind, SLOPE)
            });
            launch(Dim3::x(cn), Dim3::x(REDUCE_THREADS), |c| unsafe {
                batch_norm_train_backward(c, xb.ptr(), yb.ptr(), dyb.ptr(), gb.ptr(), mean.ptr(), inv_std.ptr(), dx.ptr(), dg.ptr(), db.ptr(), bn, cn, pn, kind, SLOPE)
            });
            let idx = |n: usize, c: usize, p: usize| (n * channels + c) * plane + p;
            let (y, dxv) = (yb.to_vec(), dx.to_vec());
            // Loss L = sum(y * dy): its gradient wrt x is what backward returns.
            let loss = |xs: &[f64], c: usize| {
                let (yc, _, _) = reference(xs, gamma[c] as f64, beta[c] as f64, eps as f64, kind);
                let mut k = 0;
                let mut total = 0.0;
                for n in 0..batch { for p in 0..plane { total += yc[k] * dy[idx(n, c, p)] as f64; k += 1; } }
                total
            };
            for c in 0..channels {
                let xs: Vec<f64> = (0..batch).flat_map(|n| (0..plane).map(move |p| (n, p))).map(|(n, p)| x[idx(n, c, p)] as f64).collect();
                let (yc, m, v) = reference(&xs, gamma[c] as f64, beta[c] as f64, eps as f64, kind);
                let mut k = 0;
                for n in 0..batch { for p in 0..plane {
                    prop_assert!((y[idx(n, c, p)] as f64 - yc[k]).abs() < 1e-4);
                    let h = 1e-4;
                    let (mut up, mut down) = (xs.clone(), xs.clone());
                    up[k] += h; down[k] -= h;
                    let numeric = (loss(&up, c) - loss(&down, c)) / (2.0 * h);
                    // A finite difference across the activation's kink is meaningless.
                    let pre = (xs[k] - m) / (v + eps as f64).sqrt() * gamma[c] as f64 + beta[c] as f64;
                    if pre.abs() > 1e-2 {
                        prop_assert!((dxv[idx(n, c, p)] as f64 - numeric).abs() < 2e-3 * (1.0 + numeric.abs()),
                            "dx at {:?}: {} vs {}", (n, c, p), dxv[idx(n, c, p)], numeric);
                    }
                    k += 1;
                } }
                prop_assert!((rm.to_vec()[c] as f64 - (0.9 * 0.2 + 0.1 * m)).abs() < 1e-5);
                prop_assert!((rv.to_vec()[c] as f64 - (0.9 * 1.5 + 0.1 * v)).abs() < 1e-4);
            }

            // Eval forward with the updated running stats, and its backward.
            let (ye, dxe) = (filled(len, f32::NAN), filled(len, f32::NAN));
            launch_independent(Dim3::x(2), Dim3::x(64), |c| unsafe {
                batch_norm_eval_forward(c, xb.ptr(), gb.ptr(), bb.ptr(), rm.ptr(), rv.ptr(), ye.ptr(), bn, cn, pn, eps, kind, SLOPE)
            });
            launch_independent(Dim3::x(2), Dim3::x(64), |c| unsafe {
                batch_norm_eval_backward(c, ye.ptr(), dyb.ptr(), gb.ptr(), rv.ptr(), dxe.ptr(), bn, cn, pn, eps, kind, SLOPE)
            });
            let (rmv, rvv, got, got_dx) = (rm.to_vec(), rv.to_vec(), ye.to_vec(), dxe.to_vec());
            for (i, &xv) in x.iter().enumerate() {
                let c = i / plane % channels;
                let pre = (xv - rmv[c]) / (rvv[c] + eps).sqrt() * gamma[c] + beta[c];
                prop_assert!((got[i] as f64 - act_ref(kind, pre as f64)).abs() < 1e-5);
                let slope = if kind == ACT_LEAKY_RELU && pre <= 0.0 { SLOPE } else { 1.0 };
                let want = dy[i] * slope * gamma[c] / (rvv[c] + eps).sqrt();
                prop_assert!((got_dx[i] - want).abs() < 1e-5 * (1.0 + want.abs()));
            }
        }
    }
}
