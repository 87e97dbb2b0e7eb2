//! L2 normalisation over the channels of NCHW with a per-channel scale
//! (core's `L2NormGeom`: VGG16-SSD's `conv4_3_norm`), forward and backward
//! side by side. Forward and the input gradient run one thread per position
//! `(n, p)`, looping over the channels in order (neighbouring threads read
//! neighbouring pixels of a channel: coalesced), so their sums are the
//! CPU's to the bit; the scale gradient runs one block per channel.
use crate::reduce::{block_sum, REDUCE_THREADS};
use crate::{grid_stride, kernel, math, shared_array};

kernel! {
    /// `norm[n, p] = sqrt(sum_c x[n, c, p]^2 + epsilon)`,
    /// `y[n, c, p] = x[n, c, p] / norm[n, p] * scale[c]`, over the
    /// `batch * plane` positions.
    pub fn l2_norm_forward(ctx, x: *const f32, scale: *const f32, norm: *mut f32, y: *mut f32,
        batch: u32, channels: u32, plane: u32, epsilon: f32) {
        grid_stride(ctx, batch * plane, |i| {
            let i = i as u32;
            let (n, p) = (i / plane, i % plane);
            let first = n * channels * plane + p;
            let mut sum = 0.0;
            let mut c = 0;
            while c < channels {
                let v = *x.add((first + c * plane) as usize);
                sum += v * v;
                c += 1;
            }
            let own = math::sqrt(sum + epsilon);
            *norm.add(i as usize) = own;
            let mut c = 0;
            while c < channels {
                let at = (first + c * plane) as usize;
                *y.add(at) = *x.add(at) / own * *scale.add(c as usize);
                c += 1;
            }
        });
    }
}

kernel! {
    /// With `g = dy * scale[c]`: `dx = (g - x * sum_c(g * x) / norm^2) / norm`,
    /// over the `batch * plane` positions.
    pub fn l2_norm_backward_data(ctx, x: *const f32, scale: *const f32, norm: *const f32,
        dy: *const f32, dx: *mut f32, batch: u32, channels: u32, plane: u32) {
        grid_stride(ctx, batch * plane, |i| {
            let i = i as u32;
            let (n, p) = (i / plane, i % plane);
            let first = n * channels * plane + p;
            let mut dot = 0.0;
            let mut c = 0;
            while c < channels {
                let at = (first + c * plane) as usize;
                dot += *dy.add(at) * *scale.add(c as usize) * *x.add(at);
                c += 1;
            }
            let own = *norm.add(i as usize);
            let mut c = 0;
            while c < channels {
                let at = (first + c * plane) as usize;
                *dx.add(at) = (*dy.add(at) * *scale.add(c as usize) - *x.add(at) * dot / (own * own)) / own;
                c += 1;
            }
        });
    }
}

kernel! {
    /// `dscale[c] = sum over n, p of dy * x / norm[n, p]`: one block of
    /// `REDUCE_THREADS` per channel, grid x = `channels`.
    pub fn l2_norm_backward_scale(ctx, x: *const f32, norm: *const f32, dy: *const f32,
        dscale: *mut f32, batch: u32, channels: u32, plane: u32) {
        let scratch = shared_array!(ctx, f32, REDUCE_THREADS as usize);
        let c = ctx.block_x();
        let mut own = 0.0;
        let mut i = ctx.thread_x();
        while i < batch * plane {
            let (n, p) = (i / plane, i % plane);
            let at = ((n * channels + c) * plane + p) as usize;
            own += *dy.add(at) * *x.add(at) / *norm.add(i as usize);
            i += REDUCE_THREADS;
        }
        let total = block_sum(ctx, scratch, own);
        if ctx.thread_x() == 0 {
            *dscale.add(c as usize) = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch, launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Forward and both gradients against an f64 reference of the same
        /// formulas, including positions whose channels are all zero (the
        /// epsilon alone keeps the norm positive).
        #[test]
        fn matches_an_f64_reference(batch in 1usize..3, channels in 1usize..6, plane in 1usize..40,
            seed in 0u32..1000, zero_at in 0usize..40) {
            let len = batch * channels * plane;
            let value = |i: usize, salt: u32| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed * salt) % 2001) as f32 / 1000.0 - 1.0;
            let mut x: Vec<f32> = (0..len).map(|i| value(i, 7)).collect();
            if zero_at < plane {
                for c in 0..channels { x[c * plane + zero_at] = 0.0; }
            }
            let dy: Vec<f32> = (0..len).map(|i| value(i, 13)).collect();
            let scale: Vec<f32> = (0..channels).map(|c| 20.0 - c as f32).collect();
            let eps = 1e-12f32;
            let (xb, sb, dyb) = (DeviceBuf::new(&x), DeviceBuf::new(&scale), DeviceBuf::new(&dy));
            let norm = DeviceBuf::filled(batch * plane, f32::NAN);
            let (y, dx, ds) = (DeviceBuf::filled(len, f32::NAN), DeviceBuf::filled(len, f32::NAN), DeviceBuf::filled(channels, f32::NAN));
            let (bn, cn, pn) = (batch as u32, channels as u32, plane as u32);
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                l2_norm_forward(c, xb.ptr(), sb.ptr(), norm.ptr(), y.ptr(), bn, cn, pn, eps)
            });
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                l2_norm_backward_data(c, xb.ptr(), sb.ptr(), norm.ptr(), dyb.ptr(), dx.ptr(), bn, cn, pn)
            });
            launch(Dim3::x(cn), Dim3::x(REDUCE_THREADS), |c| unsafe {
                l2_norm_backward_scale(c, xb.ptr(), norm.ptr(), dyb.ptr(), ds.ptr(), bn, cn, pn)
            });
            let (y, dx, ds, norm) = (y.to_vec(), dx.to_vec(), ds.to_vec(), norm.to_vec());
            let at = |n: usize, c: usize, p: usize| (n * channels + c) * plane + p;
            let mut want_ds = vec![0.0f64; channels];
            for n in 0..batch {
                for p in 0..plane {
                    let sum: f64 = (0..channels).map(|c| (x[at(n, c, p)] as f64).powi(2)).sum();
                    let r = (sum + eps as f64).sqrt();
                    prop_assert!((norm[n * plane + p] as f64 - r).abs() <= 1e-6 * r);
                    let dot: f64 = (0..channels).map(|c| dy[at(n, c, p)] as f64 * scale[c] as f64 * x[at(n, c, p)] as f64).sum();
                    for c in 0..channels {
                        let (xv, dyv, s) = (x[at(n, c, p)] as f64, dy[at(n, c, p)] as f64, scale[c] as f64);
                        let want_y = xv / r * s;
                        prop_assert!((y[at(n, c, p)] as f64 - want_y).abs() <= 1e-5 * (1.0 + want_y.abs()));
                        let want_dx = (dyv * s - xv * dot / (r * r)) / r;
                        // The two terms can cancel (one channel: dx is 0): the
                        // bound is relative to their magnitudes. A zero
                        // position's dx is dy * scale / sqrt(epsilon): huge.
                        let envelope = (dyv * s).abs() / r + (xv * dot).abs() / (r * r * r);
                        prop_assert!((dx[at(n, c, p)] as f64 - want_dx).abs() <= 1e-5 * (1.0 + envelope),
                            "dx {:?}: {} vs {}", (n, c, p), dx[at(n, c, p)], want_dx);
                        want_ds[c] += dyv * xv / r;
                    }
                }
            }
            for c in 0..channels {
                prop_assert!((ds[c] as f64 - want_ds[c]).abs() <= 1e-4 * (1.0 + want_ds[c].abs()));
            }
        }
    }
}
