//! Fully connected layer (see `FcGeom`): forward, backward data and backward
//! weight side by side, each one matrix product on the `gemm` crate with all
//! threads (the R-CNN heads' products, 512 RoIs x 2048 -> 405 for ResNet
//! C4's `bbox_pred`, are large enough to thread). The forward adds the bias
//! and applies the activation in one pass over `y`.

use super::gemm::{sgemm, Operand};
use crate::backend::{Activation, FcGeom};
use rayon::prelude::*;

fn check(g: &FcGeom, rows: &[(&str, usize, usize)], params: &[(&str, usize, usize)]) {
    if let Err(msg) = g.validate() {
        panic!("{msg}");
    }
    for &(name, got, want) in rows.iter().chain(params) {
        assert!(got >= want, "fc: {name} too short for {g:?}");
    }
}

/// `y = act(x W + b)`.
pub fn forward(g: &FcGeom, act: Activation, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    check(
        g,
        &[
            ("x", x.len(), g.input_len()),
            ("y", y.len(), g.output_len()),
        ],
        &[
            ("w", w.len(), g.weight_len()),
            ("bias", bias.len(), g.outputs),
        ],
    );
    let (k, n) = (g.inputs, g.outputs);
    let y = &mut y[..g.output_len()];
    let threads = rayon::current_num_threads();
    sgemm(
        g.rows,
        n,
        k,
        Operand::new(&x[..g.input_len()], k),
        Operand::new(&w[..g.weight_len()], n),
        y,
        n,
        false,
        threads,
    );
    let act = act.piecewise();
    let bias = &bias[..n];
    y.par_chunks_mut(n).for_each(|row| {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = act.forward(*v + b);
        }
    });
}

/// `dx = dz W^T`: `[rows, outputs] x [outputs, inputs]`, the weight read
/// transposed in place.
pub fn backward_data(g: &FcGeom, dz: &[f32], w: &[f32], dx: &mut [f32]) {
    check(
        g,
        &[
            ("dz", dz.len(), g.output_len()),
            ("dx", dx.len(), g.input_len()),
        ],
        &[("w", w.len(), g.weight_len())],
    );
    let (k, n) = (g.inputs, g.outputs);
    sgemm(
        g.rows,
        k,
        n,
        Operand::new(&dz[..g.output_len()], n),
        Operand::transposed(&w[..g.weight_len()], n),
        &mut dx[..g.input_len()],
        k,
        false,
        rayon::current_num_threads(),
    );
}

/// `dw = x^T dz` (`[inputs, rows] x [rows, outputs]`, `x` read transposed in
/// place; no rows give 0) and `dbias[j] = sum over rows of dz[r, j]`, added
/// row by row.
pub fn backward_weight(g: &FcGeom, x: &[f32], dz: &[f32], dw: &mut [f32], dbias: &mut [f32]) {
    check(
        g,
        &[
            ("x", x.len(), g.input_len()),
            ("dz", dz.len(), g.output_len()),
        ],
        &[
            ("dw", dw.len(), g.weight_len()),
            ("dbias", dbias.len(), g.outputs),
        ],
    );
    let (k, n) = (g.inputs, g.outputs);
    let dz = &dz[..g.output_len()];
    sgemm(
        k,
        n,
        g.rows,
        Operand::transposed(&x[..g.input_len()], k),
        Operand::new(dz, n),
        &mut dw[..g.weight_len()],
        n,
        false,
        rayon::current_num_threads(),
    );
    let dbias = &mut dbias[..n];
    dbias.fill(0.0);
    for row in dz.chunks(n) {
        for (d, v) in dbias.iter_mut().zip(row) {
            *d += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two rows of three inputs into two outputs, by hand: ReLU zeroes the
    /// negative sum; the gradients are the transposed products.
    #[test]
    fn small_product_by_hand() {
        let g = FcGeom {
            rows: 2,
            inputs: 3,
            outputs: 2,
        };
        let x = [1.0, 2.0, 3.0, -1.0, 0.0, 1.0];
        // [inputs, outputs]: column 0 sums the inputs, column 1 takes x0 - x2.
        let w = [1.0, 1.0, 1.0, 0.0, 1.0, -1.0];
        let mut y = [f32::NAN; 4];
        forward(&g, Activation::Identity, &x, &w, &[0.5, -1.0], &mut y);
        assert_eq!(y, [6.5, -3.0, 0.5, -3.0]);
        forward(&g, Activation::Relu, &x, &w, &[0.5, -1.0], &mut y);
        assert_eq!(y, [6.5, 0.0, 0.5, 0.0]);

        let dz = [1.0, 2.0, -1.0, 0.5];
        let mut dx = [f32::NAN; 6];
        backward_data(&g, &dz, &w, &mut dx);
        assert_eq!(dx, [3.0, 1.0, -1.0, -0.5, -1.0, -1.5]);
        let (mut dw, mut db) = ([f32::NAN; 6], [f32::NAN; 2]);
        backward_weight(&g, &x, &dz, &mut dw, &mut db);
        assert_eq!(dw, [2.0, 1.5, 2.0, 4.0, 2.0, 6.5]);
        assert_eq!(db, [0.0, 2.5]);
    }

    #[test]
    fn no_rows_give_zero_parameter_gradients() {
        let g = FcGeom {
            rows: 0,
            inputs: 3,
            outputs: 2,
        };
        let (mut dw, mut db) = ([f32::NAN; 6], [f32::NAN; 2]);
        backward_weight(&g, &[], &[], &mut dw, &mut db);
        assert_eq!((dw, db), ([0.0; 6], [0.0; 2]));
        forward(&g, Activation::Relu, &[], &[0.0; 6], &[0.0; 2], &mut []);
    }

    #[test]
    #[should_panic(expected = "fc: bias too short")]
    fn a_short_bias_is_refused() {
        let g = FcGeom {
            rows: 1,
            inputs: 2,
            outputs: 3,
        };
        forward(
            &g,
            Activation::Identity,
            &[0.0; 2],
            &[0.0; 6],
            &[0.0; 2],
            &mut [0.0; 3],
        );
    }
}
