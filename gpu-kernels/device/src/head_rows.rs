//! Multi-box head rows (core's `HeadRows`): one level's conv output `[N, A *
//! K, H, W]` transposed to NHWC into its rows of the levels' concatenation
//! `[N, total_rows, K]`, and the gradient gathered back. Each kernel runs
//! in its output's order (writes coalesced, reads strided) and is a pure
//! gather, so no two threads write one element.
use crate::{grid_stride, kernel};

/// Index of the level's row `row` (`p * anchors + a`), column `k`, of image
/// `n` in the rows.
#[inline(always)]
fn row_index(n: u32, row: u32, k: u32, values: u32, total_rows: u32, first_row: u32) -> usize {
    ((n * total_rows + first_row + row) * values + k) as usize
}

kernel! {
    /// `rows[n, first_row + p * anchors + a, k] = x[n, a * values + k, p]`
    /// for the level's `batch * plane * anchors * values` elements (`p` =
    /// `h * W + w`, `plane` = H * W); the other rows are not touched.
    pub fn head_rows_forward(ctx, x: *const f32, rows: *mut f32, batch: u32, anchors: u32,
        values: u32, plane: u32, total_rows: u32, first_row: u32) {
        let level = plane * anchors * values;
        grid_stride(ctx, batch * level, |i| {
            let i = i as u32;
            let (n, r) = (i / level, i % level);
            let (row, k) = (r / values, r % values);
            let (p, a) = (row / anchors, row % anchors);
            *rows.add(row_index(n, row, k, values, total_rows, first_row)) =
                *x.add((((n * anchors + a) * values + k) * plane + p) as usize);
        });
    }
}

kernel! {
    /// `x_grad[n, a * values + k, p] = rows_grad[n, first_row + p * anchors
    /// + a, k]` for all of `x_grad`'s `batch * anchors * values * plane`
    /// elements.
    pub fn head_rows_backward(ctx, rows_grad: *const f32, x_grad: *mut f32, batch: u32,
        anchors: u32, values: u32, plane: u32, total_rows: u32, first_row: u32) {
        let channels = anchors * values;
        grid_stride(ctx, batch * channels * plane, |i| {
            let i = i as u32;
            let (n, c, p) = (i / (channels * plane), i / plane % channels, i % plane);
            let row = p * anchors + c / values;
            *x_grad.add(i as usize) = *rows_grad.add(row_index(n, row, c % values, values, total_rows, first_row));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    proptest! {
        /// Two levels into one row buffer, each element where the plain
        /// transpose puts it, rows of no level untouched; backward gives each
        /// level's input back.
        #[test]
        fn levels_land_in_their_rows_and_come_back(batch in 1u32..3, values in 1u32..6,
            levels in prop::collection::vec((1u32..4, 1u32..5, 1u32..5), 2), spare in 0u32..3) {
            let level_rows: Vec<u32> = levels.iter().map(|&(a, h, w)| a * h * w).collect();
            let total_rows = level_rows.iter().sum::<u32>() + spare;
            let rows = DeviceBuf::filled((batch * total_rows * values) as usize, f32::NAN);
            let mut want = vec![f32::NAN; (batch * total_rows * values) as usize];
            let mut first_row = 0;
            let mut inputs = Vec::new();
            for (level, &(anchors, h, w)) in levels.iter().enumerate() {
                let plane = h * w;
                let x: Vec<f32> = (0..batch * anchors * values * plane).map(|i| (level * 1000) as f32 + i as f32).collect();
                let xb = DeviceBuf::new(&x);
                launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                    head_rows_forward(c, xb.ptr(), rows.ptr(), batch, anchors, values, plane, total_rows, first_row)
                });
                for n in 0..batch { for a in 0..anchors { for k in 0..values { for p in 0..plane {
                    let at = ((n * total_rows + first_row + p * anchors + a) * values + k) as usize;
                    want[at] = x[(((n * anchors + a) * values + k) * plane + p) as usize];
                } } } }
                inputs.push((x, anchors, plane, first_row));
                first_row += level_rows[level];
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&rows.to_vec()), bits(&want));
            for (x, anchors, plane, first_row) in inputs {
                let back = DeviceBuf::filled(x.len(), f32::NAN);
                launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                    head_rows_backward(c, rows.ptr(), back.ptr(), batch, anchors, values, plane, total_rows, first_row)
                });
                prop_assert_eq!(back.to_vec(), x);
            }
        }
    }
}
