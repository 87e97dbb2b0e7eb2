//! General matrix multiply on strided operands:
//! `C = alpha * A B + beta * C`, A `m x k`, B `k x n`, C `m x n` row-major with
//! leading dimension `ldc`. Each operand's element `(i, j)` lives at
//! `i * row_stride + j * col_stride`, so transposed operands need no copy.
//! Launch: grid `tile::grid_for(m, n)`, block `tile::THREADS`.
use crate::{kernel, tile};

kernel! {
    pub fn gemm(ctx, m: u32, n: u32, k: u32, alpha: f32,
        a: *const f32, a_row_stride: u32, a_col_stride: u32,
        b: *const f32, b_row_stride: u32, b_col_stride: u32,
        beta: f32, c: *mut f32, ldc: u32) {
        tile::tiled_matmul(
            ctx, m, n, k,
            |i, p| *a.add((i * a_row_stride + p * a_col_stride) as usize),
            |p, j| *b.add((p * b_row_stride + j * b_col_stride) as usize),
            |i, j, v| {
                let out = c.add((i * ldc + j) as usize);
                // beta == 0 overwrites without reading (C may hold garbage).
                *out = if beta == 0.0 { alpha * v } else { alpha * v + beta * *out };
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch, DeviceBuf, Dim3};
    use proptest::prelude::*;

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a(i, p) as f64 * b(p, j) as f64).sum::<f64>() as f32;
            }
        }
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn matches_naive_on_ragged_shapes(
            m in 1usize..90, n in 1usize..90, k in 1usize..40,
            transpose_a: bool, transpose_b: bool, beta in prop_oneof![Just(0.0f32), -1.0f32..1.0],
            seed in 0u32..1000,
        ) {
            let val = |i: usize| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0;
            let a: Vec<f32> = (0..m * k).map(val).collect();
            let b: Vec<f32> = (0..k * n).map(|i| val(i + 7)).collect();
            let c0: Vec<f32> = (0..m * n).map(|i| val(i + 13)).collect();
            // Stored as given by the flags; the strides undo it.
            let (ars, acs) = if transpose_a { (1, m) } else { (k, 1) };
            let (brs, bcs) = if transpose_b { (1, k) } else { (n, 1) };
            let (ab, bb, cb) = (DeviceBuf::new(&a), DeviceBuf::new(&b), DeviceBuf::new(&c0));
            let (gx, gy) = tile::grid_for(m as u32, n as u32);
            launch(Dim3::xy(gx, gy), Dim3::x(tile::THREADS), |ctx| unsafe {
                gemm(ctx, m as u32, n as u32, k as u32, 1.5, ab.ptr(), ars as u32, acs as u32,
                    bb.ptr(), brs as u32, bcs as u32, beta, cb.ptr(), n as u32)
            });
            let want = naive(m, n, k, |i, p| a[i * ars + p * acs], |p, j| b[p * brs + j * bcs]);
            let got = cb.to_vec();
            for i in 0..m * n {
                let expect = 1.5 * want[i] + if beta == 0.0 { 0.0 } else { beta * c0[i] };
                prop_assert!((got[i] - expect).abs() < 1e-4 * (1.0 + expect.abs()), "at {}: {} vs {}", i, got[i], expect);
            }
        }
    }
}
