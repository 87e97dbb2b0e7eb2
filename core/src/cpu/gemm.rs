//! Row-major single-precision matrix product on top of the `gemm` crate
//! (runtime-dispatched AVX2/AVX-512/NEON micro-kernels), behind a safe
//! interface that checks every slice is long enough before the unsafe call.

use gemm::Parallelism;

/// One operand: a row-major matrix with leading dimension `ld`, read as
/// stored or transposed.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub ld: usize,
    pub transposed: bool,
}

impl<'a> Operand<'a> {
    pub fn new(data: &'a [f32], ld: usize) -> Self {
        Operand {
            data,
            ld,
            transposed: false,
        }
    }

    pub fn transposed(data: &'a [f32], ld: usize) -> Self {
        Operand {
            data,
            ld,
            transposed: true,
        }
    }

    /// (row stride, column stride) of the logical (possibly transposed) matrix.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.ld as isize)
        } else {
            (self.ld as isize, 1)
        }
    }

    /// Asserts the slice covers a logical `rows x cols` matrix.
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows == 0 || cols == 0 {
            return;
        }
        let (stored_rows, stored_cols) = if self.transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        assert!(
            stored_cols <= self.ld,
            "gemm: {what} leading dimension too small"
        );
        let needed = (stored_rows - 1) * self.ld + stored_cols;
        assert!(self.data.len() >= needed, "gemm: {what} slice too short");
    }
}

/// `c[m x n] = a[m x k] * b[k x n]` (+ `c` when `accumulate`), `c` row-major
/// with leading dimension `ldc`. `threads > 1` lets the product use rayon.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    a.check(m, k, "lhs");
    b.check(k, n, "rhs");
    assert!(
        n <= ldc && c.len() >= (m - 1) * ldc + n,
        "gemm: dst slice too short"
    );
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                c[row * ldc..row * ldc + n].fill(0.0);
            }
        }
        return;
    }
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: `check` above proved every element the product addresses
    // (row < m / k, col < k / n with the given strides) lies inside its slice,
    // and `c` is borrowed mutably so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let mut t = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = x[r * cols + c];
            }
        }
        t
    }

    #[test]
    fn matches_naive_product_in_all_transpositions() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(m, n, k, &a, &b);
        let at = transpose(m, k, &a);
        let bt = transpose(k, n, &b);
        for (lhs, rhs) in [
            (Operand::new(&a, k), Operand::new(&b, n)),
            (Operand::transposed(&at, m), Operand::new(&b, n)),
            (Operand::new(&a, k), Operand::transposed(&bt, k)),
            (Operand::transposed(&at, m), Operand::transposed(&bt, k)),
        ] {
            let mut c = vec![1.0; m * n];
            sgemm(m, n, k, lhs, rhs, &mut c, n, false, 2);
            for (got, want) in c.iter().zip(&want) {
                assert!((got - want).abs() < 1e-5);
            }
            sgemm(m, n, k, lhs, rhs, &mut c, n, true, 1);
            for (got, want) in c.iter().zip(&want) {
                assert!((got - 2.0 * want).abs() < 1e-5);
            }
        }
    }
}
