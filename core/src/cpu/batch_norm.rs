//! Batch norm fused with its activation, on the CPU.
//!
//! Every kernel is a sequence of passes over the (image, channel) planes,
//! parallel over planes: a reducing pass gives one partial sum per plane, the
//! partials are added per channel, and a writing pass maps each plane on its
//! own (so writes never overlap).
//!
//! Sums are accumulated in f64: a channel of a batch-8 320x320 stem holds 800k
//! values. The plane loops keep `LANES` independent accumulators, so they
//! vectorise instead of waiting on one chain of dependent adds, and they are
//! compiled for AVX2+FMA, SSE4.2 and NEON as well as the baseline and picked at
//! run time (`multiversion`), so one binary serves every CPU.

use crate::backend::{Activation, BatchNormGeom};
use multiversion::multiversion;
use rayon::prelude::*;

/// Independent f64 accumulators per reducing loop: two AVX-512 registers.
const LANES: usize = 16;

/// `(sum(x - shift), sum((x - shift)^2))` over one plane.
///
/// Shifting by a value near the mean (any sample of the channel) keeps the
/// one-pass variance `E[d^2] - E[d]^2` free of cancellation.
#[multiversion(targets = "simd")]
fn shifted_sums(x: &[f32], shift: f64) -> (f64, f64) {
    let mut sum = [0.0f64; LANES];
    let mut sum_sq = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            let d = chunk[i] as f64 - shift;
            sum[i] += d;
            sum_sq[i] += d * d;
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        let d = v as f64 - shift;
        sum[i] += d;
        sum_sq[i] += d * d;
    }
    (sum.iter().sum(), sum_sq.iter().sum())
}

/// `(sum(dz), sum(dz * (x - mean)))` over one plane, where
/// `dz = dy * act'(y)` is the gradient before the activation.
#[multiversion(targets = "simd")]
fn gradient_sums(act: Activation, x: &[f32], y: &[f32], dy: &[f32], mean: f32) -> (f64, f64) {
    let act = act.piecewise();
    let mut sum_dz = [0.0f64; LANES];
    let mut sum_dz_xc = [0.0f64; LANES];
    let mut add = |i: usize, x: f32, y: f32, dy: f32| {
        let dz = dy * act.derivative_from_output(y);
        sum_dz[i] += dz as f64;
        sum_dz_xc[i] += (dz * (x - mean)) as f64;
    };
    let (xs, ys, dys) = (
        x.chunks_exact(LANES),
        y.chunks_exact(LANES),
        dy.chunks_exact(LANES),
    );
    let tails = (xs.remainder(), ys.remainder(), dys.remainder());
    for ((x, y), dy) in xs.zip(ys).zip(dys) {
        for i in 0..LANES {
            add(i, x[i], y[i], dy[i]);
        }
    }
    for (i, ((&x, &y), &dy)) in tails.0.iter().zip(tails.1).zip(tails.2).enumerate() {
        add(i, x, y, dy);
    }
    (sum_dz.iter().sum(), sum_dz_xc.iter().sum())
}

/// `y = act(x * a + b)` over one plane.
#[multiversion(targets = "simd")]
fn scale_shift_activate(act: Activation, x: &[f32], a: f32, b: f32, y: &mut [f32]) {
    let act = act.piecewise();
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv = act.forward(xv * a + b);
    }
}

/// `xy = act(xy * a + b)` over one plane: `scale_shift_activate` in place.
#[multiversion(targets = "simd")]
fn scale_shift_activate_in_place(act: Activation, a: f32, b: f32, xy: &mut [f32]) {
    let act = act.piecewise();
    for v in xy.iter_mut() {
        *v = act.forward(*v * a + b);
    }
}

/// Channel `c`'s `(a, b)` of `y = x * a + b`, the normalisation
/// `scale * (x - mean) * inv_std + offset` folded.
fn folded(scale: &[f32], offset: &[f32], mean: &[f32], inv_std: &[f32], c: usize) -> (f32, f32) {
    let a = scale[c] * inv_std[c];
    (a, offset[c] - mean[c] * a)
}

/// `1 / sqrt(var + eps)` per channel.
fn inv_std(g: &BatchNormGeom, var: &[f32], eps: f32) -> Vec<f32> {
    var[..g.channels]
        .iter()
        .map(|v| 1.0 / (v + eps).sqrt())
        .collect()
}

/// Plane `p` (image `p / channels`, channel `p % channels`) of `data`.
fn plane<'a>(g: &BatchNormGeom, data: &'a [f32], p: usize) -> &'a [f32] {
    &data[p * g.spatial..][..g.spatial]
}

/// Adds the per-plane partial sums of each channel: `partials` is indexed by
/// plane `n * channels + c`.
fn sum_per_channel(g: &BatchNormGeom, partials: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut totals = vec![(0.0, 0.0); g.channels];
    for (plane, &(a, b)) in partials.iter().enumerate() {
        let total = &mut totals[plane % g.channels];
        total.0 += a;
        total.1 += b;
    }
    totals
}

#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    g: &BatchNormGeom,
    act: Activation,
    momentum: f32,
    eps: f32,
    x: &[f32],
    scale: &[f32],
    offset: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    saved_mean: &mut [f32],
    saved_inv_std: &mut [f32],
    y: &mut [f32],
) {
    let count = (g.batch * g.spatial) as f64;
    // Each channel's shift is its first value in the first image.
    let shift = |c: usize| x[c * g.spatial] as f64;
    let partials: Vec<(f64, f64)> = x[..g.len()]
        .par_chunks(g.spatial)
        .enumerate()
        .map(|(plane, x_plane)| shifted_sums(x_plane, shift(plane % g.channels)))
        .collect();
    for (c, (sum, sum_sq)) in sum_per_channel(g, &partials).into_iter().enumerate() {
        let mean_shifted = sum / count;
        let var = (sum_sq / count - mean_shifted * mean_shifted).max(0.0);
        let mean = shift(c) + mean_shifted;
        saved_mean[c] = mean as f32;
        saved_inv_std[c] = (1.0 / (var + eps as f64).sqrt()) as f32;
        running_mean[c] = momentum * running_mean[c] + (1.0 - momentum) * mean as f32;
        running_var[c] = momentum * running_var[c] + (1.0 - momentum) * var as f32;
    }
    normalize(g, act, x, scale, offset, saved_mean, saved_inv_std, y);
}

/// `y = act(scale * (x - mean) * inv_std + offset)` plane by plane.
#[allow(clippy::too_many_arguments)]
fn normalize(
    g: &BatchNormGeom,
    act: Activation,
    x: &[f32],
    scale: &[f32],
    offset: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    y: &mut [f32],
) {
    y[..g.len()]
        .par_chunks_mut(g.spatial)
        .zip(x[..g.len()].par_chunks(g.spatial))
        .enumerate()
        .for_each(|(plane, (y_plane, x_plane))| {
            let (a, b) = folded(scale, offset, mean, inv_std, plane % g.channels);
            scale_shift_activate(act, x_plane, a, b, y_plane);
        });
}

#[allow(clippy::too_many_arguments)]
pub fn forward_eval(
    g: &BatchNormGeom,
    act: Activation,
    eps: f32,
    x: &[f32],
    scale: &[f32],
    offset: &[f32],
    mean: &[f32],
    var: &[f32],
    y: &mut [f32],
) {
    normalize(g, act, x, scale, offset, mean, &inv_std(g, var, eps), y);
}

/// `forward_eval` with `x` and `y` one buffer: the same arithmetic, so the
/// same bits.
#[allow(clippy::too_many_arguments)]
pub fn forward_eval_in_place(
    g: &BatchNormGeom,
    act: Activation,
    eps: f32,
    xy: &mut [f32],
    scale: &[f32],
    offset: &[f32],
    mean: &[f32],
    var: &[f32],
) {
    let inv_std = inv_std(g, var, eps);
    xy[..g.len()]
        .par_chunks_mut(g.spatial)
        .enumerate()
        .for_each(|(plane, xy_plane)| {
            let (a, b) = folded(scale, offset, mean, &inv_std, plane % g.channels);
            scale_shift_activate_in_place(act, a, b, xy_plane);
        });
}

/// `dx = k * (dz - mean_dz - (x - mean) * inv_std * mean_dz_xhat)` over one
/// plane, with `dz = dy * act'(y)`.
#[allow(clippy::too_many_arguments)]
#[multiversion(targets = "simd")]
fn input_gradient(
    act: Activation,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    mean: f32,
    inv_std: f32,
    k: f32,
    mean_dz: f32,
    mean_dz_xhat: f32,
    dx: &mut [f32],
) {
    let act = act.piecewise();
    let n = dx.len();
    let (x, y, dy) = (&x[..n], &y[..n], &dy[..n]);
    for i in 0..n {
        let dz = dy[i] * act.derivative_from_output(y[i]);
        let xhat = (x[i] - mean) * inv_std;
        dx[i] = k * (dz - mean_dz - xhat * mean_dz_xhat);
    }
}

#[allow(clippy::too_many_arguments)]
pub fn backward_train(
    g: &BatchNormGeom,
    act: Activation,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    scale: &[f32],
    saved_mean: &[f32],
    saved_inv_std: &[f32],
    dx: &mut [f32],
    dscale: &mut [f32],
    doffset: &mut [f32],
) {
    // Pass 1: per channel, doffset = sum(dz) and dscale = sum(dz * xhat).
    let partials: Vec<(f64, f64)> = (0..g.batch * g.channels)
        .into_par_iter()
        .map(|p| {
            let mean = saved_mean[p % g.channels];
            gradient_sums(act, plane(g, x, p), plane(g, y, p), plane(g, dy, p), mean)
        })
        .collect();
    for (c, (sum_dz, sum_dz_xc)) in sum_per_channel(g, &partials).into_iter().enumerate() {
        dscale[c] = (sum_dz_xc * saved_inv_std[c] as f64) as f32;
        doffset[c] = sum_dz as f32;
    }
    // Pass 2: dx = scale * inv_std * (dz - doffset/M - xhat * dscale/M).
    let count = (g.batch * g.spatial) as f32;
    let dscale = &dscale[..g.channels];
    let doffset = &doffset[..g.channels];
    dx[..g.len()]
        .par_chunks_mut(g.spatial)
        .enumerate()
        .for_each(|(p, dx_plane)| {
            let c = p % g.channels;
            let (mean, inv_std) = (saved_mean[c], saved_inv_std[c]);
            input_gradient(
                act,
                plane(g, x, p),
                plane(g, y, p),
                plane(g, dy, p),
                mean,
                inv_std,
                scale[c] * inv_std,
                doffset[c] / count,
                dscale[c] / count,
                dx_plane,
            );
        });
}

/// `dx = k * dy * act'(y)` over one plane.
#[multiversion(targets = "simd")]
fn scaled_activation_gradient(act: Activation, y: &[f32], dy: &[f32], k: f32, dx: &mut [f32]) {
    let act = act.piecewise();
    for ((d, &yv), &dyv) in dx.iter_mut().zip(y).zip(dy) {
        *d = k * dyv * act.derivative_from_output(yv);
    }
}

#[allow(clippy::too_many_arguments)]
pub fn backward_eval(
    g: &BatchNormGeom,
    act: Activation,
    eps: f32,
    y: &[f32],
    dy: &[f32],
    scale: &[f32],
    var: &[f32],
    dx: &mut [f32],
) {
    dx[..g.len()]
        .par_chunks_mut(g.spatial)
        .enumerate()
        .for_each(|(p, dx_plane)| {
            let c = p % g.channels;
            let k = scale[c] / (var[c] + eps).sqrt();
            scaled_activation_gradient(act, plane(g, y, p), plane(g, dy, p), k, dx_plane);
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::random_vec;

    /// The one-pass shifted statistics against a two-pass f64 reference, on
    /// channels whose mean is far from zero (where an unshifted one-pass
    /// variance would cancel) and planes that leave a partial lane group.
    #[test]
    fn statistics_match_two_pass_reference() {
        let g = BatchNormGeom {
            batch: 3,
            channels: 2,
            spatial: 1000 + 7,
        };
        let noise = random_vec(5, g.len());
        let x: Vec<f32> = noise
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let channel = (i / g.spatial) % g.channels;
                [1000.0, -3.0][channel] + v * [0.01, 2.0][channel]
            })
            .collect();
        let ones = vec![1.0; g.channels];
        let zeros = vec![0.0; g.channels];
        let (mut run_mean, mut run_var) = (zeros.clone(), ones.clone());
        let (mut mean, mut inv_std) = (zeros.clone(), zeros.clone());
        let mut y = vec![0.0; g.len()];
        forward_train(
            &g,
            Activation::Identity,
            0.0,
            0.0,
            &x,
            &ones,
            &zeros,
            &mut run_mean,
            &mut run_var,
            &mut mean,
            &mut inv_std,
            &mut y,
        );
        for c in 0..g.channels {
            let values: Vec<f64> = (0..g.batch)
                .flat_map(|n| plane(&g, &x, n * g.channels + c).iter().map(|&v| v as f64))
                .collect();
            let ref_mean = values.iter().sum::<f64>() / values.len() as f64;
            let ref_var =
                values.iter().map(|v| (v - ref_mean).powi(2)).sum::<f64>() / values.len() as f64;
            assert!(
                ((mean[c] as f64 - ref_mean) / ref_mean).abs() < 1e-6,
                "mean {c}"
            );
            assert!(
                ((run_var[c] as f64 - ref_var) / ref_var).abs() < 1e-5,
                "var {c}"
            );
        }
    }
}
