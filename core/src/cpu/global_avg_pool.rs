//! Global average pooling (see `GlobalPoolGeom`), forward and backward side
//! by side. Each plane's values are added in order, as Paddle's pool2d and
//! the GPU's thread per plane do, so the three agree to the bit.

use crate::backend::GlobalPoolGeom;
use rayon::prelude::*;

fn check(g: &GlobalPoolGeom, input: (&str, usize), output: (&str, usize)) {
    if let Err(msg) = g.validate() {
        panic!("{msg}");
    }
    assert!(
        input.1 >= g.input_len(),
        "global_avg_pool: {} too short for {g:?}",
        input.0
    );
    assert!(
        output.1 >= g.planes(),
        "global_avg_pool: {} too short for {g:?}",
        output.0
    );
}

/// `y[p] = (sum of plane p) / spatial`.
pub fn forward(g: &GlobalPoolGeom, x: &[f32], y: &mut [f32]) {
    check(g, ("x", x.len()), ("y", y.len()));
    let count = g.spatial as f32;
    y[..g.planes()]
        .par_iter_mut()
        .zip(x[..g.input_len()].par_chunks(g.spatial))
        .for_each(|(y, plane)| {
            let mut sum = 0.0f32;
            for &v in plane {
                sum += v;
            }
            *y = sum / count;
        });
}

/// `dx = dy[p] * (1 / spatial)` over plane `p`; the factor rounded from
/// f64, as Paddle's `AvgPoolGrad` gets its `scale`.
pub fn backward(g: &GlobalPoolGeom, dy: &[f32], dx: &mut [f32]) {
    check(g, ("dx", dx.len()), ("dy", dy.len()));
    let scale = (1.0 / g.spatial as f64) as f32;
    dx[..g.input_len()]
        .par_chunks_mut(g.spatial)
        .zip(dy[..g.planes()].par_iter())
        .for_each(|(dx, &dy)| dx.fill(dy * scale));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_of_each_plane_and_their_gradient() {
        let g = GlobalPoolGeom {
            batch: 1,
            channels: 2,
            spatial: 4,
        };
        let x = [1.0, 2.0, 3.0, 6.0, -1.0, -1.0, 0.0, 0.0];
        let mut y = [f32::NAN; 3];
        forward(&g, &x, &mut y);
        assert_eq!(y[..2], [3.0, -0.5]);
        assert!(y[2].is_nan(), "past the planes");
        let mut dx = [f32::NAN; 8];
        backward(&g, &[2.0, -4.0], &mut dx);
        assert_eq!(dx, [0.5, 0.5, 0.5, 0.5, -1.0, -1.0, -1.0, -1.0]);
    }

    #[test]
    #[should_panic(expected = "spatial must be positive")]
    fn an_empty_plane_is_refused() {
        let g = GlobalPoolGeom {
            batch: 1,
            channels: 2,
            spatial: 0,
        };
        forward(&g, &[], &mut [0.0; 2]);
    }
}
