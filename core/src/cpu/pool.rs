//! Max pooling, nearest upsampling and channel copies: plane-by-plane loops.

use crate::backend::{ChannelCopy, PoolGeom};
use rayon::prelude::*;

/// Index (within the input plane) of the first maximum of output cell (oy, ox).
fn window_argmax(g: &PoolGeom, x_plane: &[f32], oy: usize, ox: usize) -> usize {
    let mut best = usize::MAX;
    let mut best_value = f32::NEG_INFINITY;
    for ki in 0..g.kernel {
        let iy = (oy * g.stride + ki) as isize - g.pad as isize;
        if iy < 0 || iy >= g.h_in as isize {
            continue;
        }
        for kj in 0..g.kernel {
            let ix = (ox * g.stride + kj) as isize - g.pad as isize;
            if ix < 0 || ix >= g.w_in as isize {
                continue;
            }
            let i = iy as usize * g.w_in + ix as usize;
            if best == usize::MAX || x_plane[i] > best_value {
                best = i;
                best_value = x_plane[i];
            }
        }
    }
    best
}

pub fn max_pool_forward(g: &PoolGeom, x: &[f32], y: &mut [f32]) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let in_plane = g.h_in * g.w_in;
    y[..g.output_len()]
        .par_chunks_mut(h_out * w_out)
        .zip(x[..g.input_len()].par_chunks(in_plane))
        .for_each(|(y_plane, x_plane)| {
            for oy in 0..h_out {
                for ox in 0..w_out {
                    y_plane[oy * w_out + ox] = x_plane[window_argmax(g, x_plane, oy, ox)];
                }
            }
        });
}

pub fn max_pool_backward(g: &PoolGeom, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let in_plane = g.h_in * g.w_in;
    dx[..g.input_len()]
        .par_chunks_mut(in_plane)
        .zip(x[..g.input_len()].par_chunks(in_plane))
        .zip(dy[..g.output_len()].par_chunks(h_out * w_out))
        .for_each(|((dx_plane, x_plane), dy_plane)| {
            dx_plane.fill(0.0);
            for oy in 0..h_out {
                for ox in 0..w_out {
                    dx_plane[window_argmax(g, x_plane, oy, ox)] += dy_plane[oy * w_out + ox];
                }
            }
        });
}

pub fn upsample2x_forward(planes: usize, h: usize, w: usize, x: &[f32], y: &mut [f32]) {
    y[..planes * 4 * h * w]
        .par_chunks_mut(4 * h * w)
        .zip(x[..planes * h * w].par_chunks(h * w))
        .for_each(|(y_plane, x_plane)| {
            for iy in 0..h {
                let x_row = &x_plane[iy * w..(iy + 1) * w];
                for (ox, v) in y_plane[2 * iy * 2 * w..(2 * iy + 1) * 2 * w]
                    .iter_mut()
                    .enumerate()
                {
                    *v = x_row[ox / 2];
                }
                y_plane.copy_within(2 * iy * 2 * w..(2 * iy + 1) * 2 * w, (2 * iy + 1) * 2 * w);
            }
        });
}

pub fn upsample2x_backward(planes: usize, h: usize, w: usize, dy: &[f32], dx: &mut [f32]) {
    dx[..planes * h * w]
        .par_chunks_mut(h * w)
        .zip(dy[..planes * 4 * h * w].par_chunks(4 * h * w))
        .for_each(|(dx_plane, dy_plane)| {
            for iy in 0..h {
                let top = &dy_plane[2 * iy * 2 * w..][..2 * w];
                let bottom = &dy_plane[(2 * iy + 1) * 2 * w..][..2 * w];
                for ix in 0..w {
                    dx_plane[iy * w + ix] =
                        top[2 * ix] + top[2 * ix + 1] + bottom[2 * ix] + bottom[2 * ix + 1];
                }
            }
        });
}

pub fn copy_channels(c: &ChannelCopy, src: &[f32], dst: &mut [f32]) {
    assert!(c.src_first + c.count <= c.src_channels && c.dst_first + c.count <= c.dst_channels);
    let block = c.count * c.spatial;
    for n in 0..c.batch {
        let from = (n * c.src_channels + c.src_first) * c.spatial;
        let to = (n * c.dst_channels + c.dst_first) * c.spatial;
        dst[to..to + block].copy_from_slice(&src[from..from + block]);
    }
}
