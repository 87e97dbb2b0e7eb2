//! Elementwise kernels, split into chunks that rayon spreads over the cores.

use crate::backend::{Activation, SgdStep};
use multiversion::multiversion;
use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling, small
/// enough to balance 2-16 cores on a 100k-element tensor.
const CHUNK: usize = 1 << 14;

pub fn activation_forward(act: Activation, x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            for (yv, &xv) in y.iter_mut().zip(x) {
                *yv = act.forward(xv);
            }
        });
}

pub fn activation_forward_in_place(act: Activation, xy: &mut [f32]) {
    xy.par_chunks_mut(CHUNK)
        .for_each(|xy| xy.iter_mut().for_each(|v| *v = act.forward(*v)));
}

pub fn activation_backward(act: Activation, y: &[f32], dy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .zip(dy.par_chunks(CHUNK))
        .for_each(|((dx, y), dy)| {
            for ((d, &yv), &dyv) in dx.iter_mut().zip(y).zip(dy) {
                *d = dyv * act.derivative_from_output(yv);
            }
        });
}

pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

pub fn sigmoid_forward(x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            for (yv, &xv) in y.iter_mut().zip(x) {
                *yv = sigmoid(xv);
            }
        });
}

pub fn sigmoid_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .zip(dy.par_chunks(CHUNK))
        .for_each(|((dx, y), dy)| {
            for ((d, &yv), &dyv) in dx.iter_mut().zip(y).zip(dy) {
                *d = dyv * yv * (1.0 - yv);
            }
        });
}

pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .zip(b.par_chunks(CHUNK))
        .for_each(|((y, a), b)| {
            for ((yv, &av), &bv) in y.iter_mut().zip(a).zip(b) {
                *yv = av + bv;
            }
        });
}

pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            for (yv, &xv) in y.iter_mut().zip(x) {
                *yv += alpha * xv;
            }
        });
}

pub fn scale(alpha: f32, x: &mut [f32]) {
    x.par_chunks_mut(CHUNK)
        .for_each(|x| x.iter_mut().for_each(|v| *v *= alpha));
}

pub fn sum(x: &[f32]) -> f64 {
    x.par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| v as f64).sum::<f64>())
        .sum()
}

pub fn sum_squares(x: &[f32]) -> f64 {
    x.par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .sum()
}

/// `out[c]` = the sum of channel `c` of `x` (`[batch, channels, plane]`)
/// over the batch and the plane, accumulated in f64.
pub fn channel_sum(batch: usize, channels: usize, plane: usize, x: &[f32], out: &mut [f32]) {
    assert!(
        x.len() >= batch * channels * plane && out.len() >= channels,
        "channel_sum: buffers shorter than [{batch}, {channels}, {plane}]"
    );
    out[..channels]
        .par_iter_mut()
        .enumerate()
        .for_each(|(c, total)| {
            let mut sum = 0.0f64;
            for n in 0..batch {
                let p = &x[(n * channels + c) * plane..][..plane];
                sum += p.iter().map(|&v| v as f64).sum::<f64>();
            }
            *total = sum as f32;
        });
}

pub fn sgd_momentum(step: &SgdStep, param: &mut [f32], grad: &[f32], velocity: &mut [f32]) {
    param
        .par_chunks_mut(CHUNK)
        .zip(velocity.par_chunks_mut(CHUNK))
        .zip(grad.par_chunks(CHUNK))
        .for_each(|((p, v), g)| sgd_momentum_chunk(step, p, g, v));
}

/// `v = momentum * v + (g + decay * p); p -= lr * v`, compiled for AVX2 /
/// NEON besides the baseline (a free function: rayon closures get no
/// `multiversion` clones).
#[multiversion(targets = "simd")]
fn sgd_momentum_chunk(step: &SgdStep, param: &mut [f32], grad: &[f32], velocity: &mut [f32]) {
    for ((pv, vv), &gv) in param.iter_mut().zip(velocity.iter_mut()).zip(grad) {
        *vv = step.momentum * *vv + (gv + step.weight_decay * *pv);
        *pv -= step.lr * *vv;
    }
}
