//! Multi-box head rows (see `HeadRows`): a level's conv output transposed
//! to NHWC and written into its rows of the levels' concatenation, and the
//! gradient gathered back. Pure data movement: the GPU's must give the same
//! bits.

use crate::backend::HeadRows;

fn check(g: &HeadRows, x: usize, rows: usize) {
    if let Err(msg) = g.validate() {
        panic!("{msg}");
    }
    assert!(
        x >= g.input_len(),
        "head_rows: conv output buffer too short for {g:?}"
    );
    assert!(
        rows >= g.rows_len(),
        "head_rows: rows buffer too short for {g:?}"
    );
}

/// Index of row `row` (of this level), column `k`, image `n` in the rows.
fn row_index(g: &HeadRows, n: usize, row: usize, k: usize) -> usize {
    (n * g.total_rows + g.first_row + row) * g.values + k
}

/// `rows[n, first_row + (h * W + w) * A + a, k] = x[n, a * K + k, h, w]`.
pub fn forward(g: &HeadRows, x: &[f32], rows: &mut [f32]) {
    check(g, x.len(), rows.len());
    let plane = g.height * g.width;
    for n in 0..g.batch {
        for a in 0..g.anchors {
            for k in 0..g.values {
                let channel = &x[(n * g.anchors * g.values + a * g.values + k) * plane..][..plane];
                for (p, &v) in channel.iter().enumerate() {
                    rows[row_index(g, n, p * g.anchors + a, k)] = v;
                }
            }
        }
    }
}

/// `x_grad[n, a * K + k, h, w] = rows_grad[n, first_row + (h * W + w) * A + a, k]`.
pub fn backward(g: &HeadRows, rows_grad: &[f32], x_grad: &mut [f32]) {
    check(g, x_grad.len(), rows_grad.len());
    let plane = g.height * g.width;
    for n in 0..g.batch {
        for a in 0..g.anchors {
            for k in 0..g.values {
                let channel =
                    &mut x_grad[(n * g.anchors * g.values + a * g.values + k) * plane..][..plane];
                for (p, v) in channel.iter_mut().enumerate() {
                    *v = rows_grad[row_index(g, n, p * g.anchors + a, k)];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paddle's `transpose(x, [0, 2, 3, 1])` then `reshape([N, -1, K])` of
    /// two levels, then `concat(axis=1)`, written out on a tiny example: the
    /// second level (one anchor, 1x2 cells) lands after the first (two
    /// anchors, 1x1 cell).
    #[test]
    fn two_levels_concatenate_as_paddle_does() {
        // Level 0: N=1, A=2, K=2, 1x1: channels (a0k0, a0k1, a1k0, a1k1).
        let g0 = HeadRows {
            batch: 1,
            anchors: 2,
            values: 2,
            height: 1,
            width: 1,
            total_rows: 4,
            first_row: 0,
        };
        // Level 1: A=1, K=2, 1x2: channel k0 = (10, 11), k1 = (20, 21).
        let g1 = HeadRows {
            anchors: 1,
            width: 2,
            first_row: 2,
            ..g0
        };
        let mut rows = vec![f32::NAN; 8];
        forward(&g0, &[1.0, 2.0, 3.0, 4.0], &mut rows);
        forward(&g1, &[10.0, 11.0, 20.0, 21.0], &mut rows);
        assert_eq!(rows, [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 11.0, 21.0]);
        let mut x_grad = vec![f32::NAN; 4];
        backward(&g1, &rows, &mut x_grad);
        assert_eq!(x_grad, [10.0, 11.0, 20.0, 21.0]);
    }

    #[test]
    #[should_panic(expected = "exceed total_rows")]
    fn rows_past_the_concatenation_are_refused() {
        let g = HeadRows {
            batch: 1,
            anchors: 3,
            values: 4,
            height: 2,
            width: 2,
            total_rows: 12,
            first_row: 1,
        };
        forward(&g, &[0.0; 48], &mut [0.0; 48]);
    }
}
