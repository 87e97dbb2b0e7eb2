//! Batch norm fused with its activation, on the CPU.
//!
//! Each kernel makes one pass per channel to gather statistics (read-only,
//! parallel over channels) and one pass over the (image, channel) planes to
//! write the result (parallel over planes, so writes never overlap). Sums are
//! accumulated in f64: a channel of a batch-8 320x320 stem holds 800k values.

use crate::backend::{Activation, BatchNormGeom};
use rayon::prelude::*;

/// Visits the `batch` planes of channel `c`.
fn channel_planes<'a>(
    g: &'a BatchNormGeom,
    data: &'a [f32],
    c: usize,
) -> impl Iterator<Item = &'a [f32]> + 'a {
    (0..g.batch).map(move |n| &data[(n * g.channels + c) * g.spatial..][..g.spatial])
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
    saved_mean[..g.channels]
        .par_iter_mut()
        .zip(saved_inv_std[..g.channels].par_iter_mut())
        .zip(running_mean[..g.channels].par_iter_mut())
        .zip(running_var[..g.channels].par_iter_mut())
        .enumerate()
        .for_each(|(c, (((mean_out, inv_std_out), run_mean), run_var))| {
            let mut sum = 0.0f64;
            for plane in channel_planes(g, x, c) {
                sum += plane.iter().map(|&v| v as f64).sum::<f64>();
            }
            let mean = sum / count;
            let mut sq = 0.0f64;
            for plane in channel_planes(g, x, c) {
                sq += plane
                    .iter()
                    .map(|&v| (v as f64 - mean).powi(2))
                    .sum::<f64>();
            }
            let var = sq / count;
            *mean_out = mean as f32;
            *inv_std_out = (1.0 / (var + eps as f64).sqrt()) as f32;
            *run_mean = momentum * *run_mean + (1.0 - momentum) * mean as f32;
            *run_var = momentum * *run_var + (1.0 - momentum) * var as f32;
        });
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
            let c = plane % g.channels;
            // y = x * a + b with a, b folded per channel.
            let a = scale[c] * inv_std[c];
            let b = offset[c] - mean[c] * a;
            for (yv, &xv) in y_plane.iter_mut().zip(x_plane) {
                *yv = act.forward(xv * a + b);
            }
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
    let inv_std: Vec<f32> = var[..g.channels]
        .iter()
        .map(|v| 1.0 / (v + eps).sqrt())
        .collect();
    normalize(g, act, x, scale, offset, mean, &inv_std, y);
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
    // Pass 1: per channel, doffset = sum(dz) and dscale = sum(dz * xhat),
    // where dz = dy * act'(z) is the gradient before the activation.
    dscale[..g.channels]
        .par_iter_mut()
        .zip(doffset[..g.channels].par_iter_mut())
        .enumerate()
        .for_each(|(c, (ds, dof))| {
            let (mean, inv_std) = (saved_mean[c], saved_inv_std[c]);
            let mut sum_dz = 0.0f64;
            let mut sum_dz_xhat = 0.0f64;
            for ((x_plane, y_plane), dy_plane) in channel_planes(g, x, c)
                .zip(channel_planes(g, y, c))
                .zip(channel_planes(g, dy, c))
            {
                for ((&xv, &yv), &dyv) in x_plane.iter().zip(y_plane).zip(dy_plane) {
                    let dz = dyv * act.derivative_from_output(yv);
                    sum_dz += dz as f64;
                    sum_dz_xhat += (dz * (xv - mean) * inv_std) as f64;
                }
            }
            *ds = sum_dz_xhat as f32;
            *dof = sum_dz as f32;
        });
    // Pass 2: dx = scale * inv_std * (dz - doffset/M - xhat * dscale/M).
    let count = (g.batch * g.spatial) as f32;
    let dscale = &dscale[..g.channels];
    let doffset = &doffset[..g.channels];
    dx[..g.len()]
        .par_chunks_mut(g.spatial)
        .enumerate()
        .for_each(|(plane, dx_plane)| {
            let c = plane % g.channels;
            let (mean, inv_std) = (saved_mean[c], saved_inv_std[c]);
            let k = scale[c] * inv_std;
            let mean_dz = doffset[c] / count;
            let mean_dz_xhat = dscale[c] / count;
            let start = plane * g.spatial;
            let x_plane = &x[start..start + g.spatial];
            let y_plane = &y[start..start + g.spatial];
            let dy_plane = &dy[start..start + g.spatial];
            for (i, d) in dx_plane.iter_mut().enumerate() {
                let dz = dy_plane[i] * act.derivative_from_output(y_plane[i]);
                let xhat = (x_plane[i] - mean) * inv_std;
                *d = k * (dz - mean_dz - xhat * mean_dz_xhat);
            }
        });
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
        .for_each(|(plane, dx_plane)| {
            let c = plane % g.channels;
            let k = scale[c] / (var[c] + eps).sqrt();
            let start = plane * g.spatial;
            for ((d, &yv), &dyv) in dx_plane.iter_mut().zip(&y[start..]).zip(&dy[start..]) {
                *d = k * dyv * act.derivative_from_output(yv);
            }
        });
}
