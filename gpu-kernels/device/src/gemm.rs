//! Batched general matrix multiply on strided operands:
//! `C_z = alpha * A_z B_z + beta * C_z`, A `m x k`, B `k x n`, C `m x n`
//! row-major with leading dimension `ldc`. Each operand's element `(i, j)` of
//! batch entry `z` lives at `z * batch_stride + i * row_stride + j * col_stride`,
//! so transposed operands need no copy and a batch stride of 0 shares an
//! operand (the weights of a 1x1 convolution across images).
//! Launch: grid `(tile::grid_for(m, n), batch)`, block `tile::THREADS`.
use crate::{kernel, tile};

kernel! {
    pub fn gemm(ctx, m: u32, n: u32, k: u32, alpha: f32,
        a: *const f32, a_row_stride: u32, a_col_stride: u32, a_batch_stride: u32,
        b: *const f32, b_row_stride: u32, b_col_stride: u32, b_batch_stride: u32,
        beta: f32, c: *mut f32, ldc: u32, c_batch_stride: u32) {
        let z = ctx.block_z() as usize;
        let (a, b, c) = (a.add(z * a_batch_stride as usize), b.add(z * b_batch_stride as usize), c.add(z * c_batch_stride as usize));
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
            seed in 0u32..1000, batch in 1usize..3, share_a: bool,
        ) {
            let val = |i: usize| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0;
            // Batch entries one after the other; a shared A has stride 0.
            let a_batch_stride = if share_a { 0 } else { m * k };
            let a: Vec<f32> = (0..m * k + (batch - 1) * a_batch_stride).map(val).collect();
            let b: Vec<f32> = (0..batch * k * n).map(|i| val(i + 7)).collect();
            let c0: Vec<f32> = (0..batch * m * n).map(|i| val(i + 13)).collect();
            // Stored as given by the flags; the strides undo it.
            let (ars, acs) = if transpose_a { (1, m) } else { (k, 1) };
            let (brs, bcs) = if transpose_b { (1, k) } else { (n, 1) };
            let (ab, bb, cb) = (DeviceBuf::new(&a), DeviceBuf::new(&b), DeviceBuf::new(&c0));
            let (gx, gy) = tile::grid_for(m as u32, n as u32);
            launch(Dim3::xyz(gx, gy, batch as u32), Dim3::x(tile::THREADS), |ctx| unsafe {
                gemm(ctx, m as u32, n as u32, k as u32, 1.5, ab.ptr(), ars as u32, acs as u32, a_batch_stride as u32,
                    bb.ptr(), brs as u32, bcs as u32, (k * n) as u32, beta, cb.ptr(), n as u32, (m * n) as u32)
            });
            let got = cb.to_vec();
            for z in 0..batch {
                let (a0, b0, c_0) = (z * a_batch_stride, z * k * n, z * m * n);
                let want = naive(m, n, k, |i, p| a[a0 + i * ars + p * acs], |p, j| b[b0 + p * brs + j * bcs]);
                for i in 0..m * n {
                    let expect = 1.5 * want[i] + if beta == 0.0 { 0.0 } else { beta * c0[c_0 + i] };
                    prop_assert!((got[c_0 + i] - expect).abs() < 1e-4 * (1.0 + expect.abs()), "at {}/{}: {} vs {}", z, i, got[c_0 + i], expect);
                }
            }
        }
    }
}
