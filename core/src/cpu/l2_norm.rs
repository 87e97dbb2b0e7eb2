//! L2 normalisation over channels with a per-channel scale (see
//! `L2NormGeom`), forward and backward side by side. Each position's norm
//! and dot product add the channels in order, as the GPU's thread per
//! position does, so those match bit for bit; only the scale gradient (a sum
//! over batch and space) is added in another order there.

use crate::backend::L2NormGeom;
use rayon::prelude::*;

fn check(g: &L2NormGeom, tensors: &[(&str, usize)], per_channel: &[(&str, usize)], norm: usize) {
    if let Err(msg) = g.validate() {
        panic!("{msg}");
    }
    for &(name, len) in tensors {
        assert!(len >= g.len(), "l2_norm: {name} too short for {g:?}");
    }
    for &(name, len) in per_channel {
        assert!(len >= g.channels, "l2_norm: {name} too short for {g:?}");
    }
    assert!(norm >= g.positions(), "l2_norm: norm too short for {g:?}");
}

/// `norm[n, p] = sqrt(sum_c x^2 + epsilon)`, `y = x / norm * scale[c]`.
pub fn forward(
    g: &L2NormGeom,
    epsilon: f32,
    x: &[f32],
    scale: &[f32],
    norm: &mut [f32],
    y: &mut [f32],
) {
    check(
        g,
        &[("x", x.len()), ("y", y.len())],
        &[("scale", scale.len())],
        norm.len(),
    );
    let (channels, plane) = (g.channels, g.spatial);
    y[..g.len()]
        .par_chunks_mut(channels * plane)
        .zip(norm[..g.positions()].par_chunks_mut(plane))
        .zip(x[..g.len()].par_chunks(channels * plane))
        .for_each(|((y, norm), x)| {
            norm.fill(0.0);
            for x_channel in x.chunks(plane) {
                for (sum, &v) in norm.iter_mut().zip(x_channel) {
                    *sum += v * v;
                }
            }
            for v in norm.iter_mut() {
                *v = (*v + epsilon).sqrt();
            }
            for (c, (y_channel, x_channel)) in y.chunks_mut(plane).zip(x.chunks(plane)).enumerate()
            {
                for p in 0..plane {
                    y_channel[p] = x_channel[p] / norm[p] * scale[c];
                }
            }
        });
}

/// With `g = dy * scale[c]`: `dx = (g - x * sum_c(g * x) / norm^2) / norm`
/// (the derivative of `x / sqrt(sum x^2 + epsilon)`, the epsilon inside
/// `norm`), and `dscale[c] = sum over n, p of dy * x / norm`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &L2NormGeom,
    x: &[f32],
    scale: &[f32],
    norm: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dscale: &mut [f32],
) {
    check(
        g,
        &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())],
        &[("scale", scale.len()), ("dscale", dscale.len())],
        norm.len(),
    );
    let (channels, plane) = (g.channels, g.spatial);
    let image = channels * plane;
    dx[..g.len()]
        .par_chunks_mut(image)
        .zip(x[..g.len()].par_chunks(image))
        .zip(dy[..g.len()].par_chunks(image))
        .zip(norm[..g.positions()].par_chunks(plane))
        .for_each(|(((dx, x), dy), norm)| {
            let mut dot = vec![0.0f32; plane];
            for ((x, dy), &s) in x.chunks(plane).zip(dy.chunks(plane)).zip(scale) {
                for ((dot, &x), &dy) in dot.iter_mut().zip(x).zip(dy) {
                    *dot += dy * s * x;
                }
            }
            let channels = dx
                .chunks_mut(plane)
                .zip(x.chunks(plane))
                .zip(dy.chunks(plane));
            for (((dx, x), dy), &s) in channels.zip(scale) {
                for p in 0..plane {
                    let n = norm[p];
                    dx[p] = (dy[p] * s - x[p] * dot[p] / (n * n)) / n;
                }
            }
        });
    dscale[..channels]
        .par_iter_mut()
        .enumerate()
        .for_each(|(c, dscale)| {
            let mut sum = 0.0f32;
            for n in 0..g.batch {
                for p in 0..plane {
                    let i = (n * channels + c) * plane + p;
                    sum += dy[i] * x[i] / norm[n * plane + p];
                }
            }
            *dscale = sum;
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One position of three channels (3, 0, 4): norm 5, then each channel
    /// scaled by its own factor.
    #[test]
    fn normalises_each_position_over_the_channels() {
        let g = L2NormGeom {
            batch: 1,
            channels: 3,
            spatial: 2,
        };
        let x = [3.0, 1.0, 0.0, 0.0, 4.0, 0.0];
        let (mut norm, mut y) = (vec![f32::NAN; 2], vec![f32::NAN; 6]);
        forward(&g, 0.0, &x, &[1.0, 2.0, 10.0], &mut norm, &mut y);
        assert_eq!(norm, [5.0, 1.0]);
        assert_eq!(y, [0.6, 1.0, 0.0, 0.0, 8.0, 0.0]);
    }

    #[test]
    #[should_panic(expected = "channels must be positive")]
    fn an_empty_geometry_is_refused() {
        let g = L2NormGeom {
            batch: 1,
            channels: 0,
            spatial: 2,
        };
        forward(&g, 1e-12, &[], &[], &mut [0.0; 2], &mut []);
    }
}
