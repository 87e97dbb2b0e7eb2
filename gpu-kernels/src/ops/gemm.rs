//! Batched strided GEMM (`device/src/gemm.rs`): the pointwise convolutions'
//! engine.
use super::{fail, tiled, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// Strides of a batched GEMM operand, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    pub row: u32,
    pub col: u32,
    /// Between batch entries; 0 shares the operand across the batch.
    pub batch: u32,
}

impl Strides {
    /// A row-major matrix with `cols` columns, entries `batch` apart.
    pub const fn row_major(cols: u32, batch: u32) -> Strides {
        Strides {
            row: cols,
            col: 1,
            batch,
        }
    }
    /// The transpose of a row-major matrix whose rows are `ld` long: GEMM's
    /// element (i, j) is the stored (j, i), at `j * ld + i`.
    pub const fn transposed(ld: u32, batch: u32) -> Strides {
        Strides {
            row: 1,
            col: ld,
            batch,
        }
    }
}

/// Batched strided GEMM operand `rows x cols`: the furthest element must be
/// inside. Returns the elements the operand spans.
pub fn gemm_operand(
    arg: &str,
    len: usize,
    batch: u32,
    rows: u32,
    cols: u32,
    strides: Strides,
) -> Result<usize, PlanError> {
    if batch == 0 || rows == 0 || cols == 0 {
        return fail(
            "gemm",
            format!("{arg} is {batch}x{rows}x{cols}; GEMM needs non-empty operands"),
        );
    }
    let last = (batch as u64 - 1) * strides.batch as u64
        + (rows as u64 - 1) * strides.row as u64
        + (cols as u64 - 1) * strides.col as u64;
    if last >= len as u64 {
        return fail("gemm", format!("{arg} ({batch}x{rows}x{cols}, strides {strides:?}) reaches element {last} of {len}"));
    }
    Ok(last as usize + 1)
}

impl Gpu {
    /// `C_z = alpha A_z B_z + beta C_z` for `z < batch`, strided operands
    /// (see the device kernel); `C` is row-major with leading dimension `ldc`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        batch: u32,
        (m, n, k): (u32, u32, u32),
        alpha: f32,
        a: &DeviceBuffer,
        sa: Strides,
        b: &DeviceBuffer,
        sb: Strides,
        beta: f32,
        c: &mut DeviceBuffer,
        ldc: u32,
        c_batch_stride: u32,
    ) -> Result<(), GpuError> {
        let a_len = gemm_operand("A", a.len(), batch, m, k, sa)?;
        let b_len = gemm_operand("B", b.len(), batch, k, n, sb)?;
        let c_len = gemm_operand(
            "C",
            c.len(),
            batch,
            m,
            n,
            Strides {
                row: ldc,
                col: 1,
                batch: c_batch_stride,
            },
        )?;
        let mut args = KernelArgs::new();
        args.u32(m).u32(n).u32(k).f32(alpha);
        args.input(a, a_len).u32(sa.row).u32(sa.col).u32(sa.batch);
        args.input(b, b_len).u32(sb.row).u32(sb.col).u32(sb.batch);
        args.f32(beta).output(c, c_len).u32(ldc).u32(c_batch_stride);
        self.launch("gemm", tiled(m, n, batch), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up, values};

    #[test]
    fn operand_extents() {
        assert!(gemm_operand("a", 11, 1, 3, 4, Strides::row_major(4, 0)).is_err());
        assert_eq!(
            gemm_operand("a", 12, 1, 3, 4, Strides::row_major(4, 0)),
            Ok(12)
        );
        assert!(gemm_operand("a", 23, 2, 3, 4, Strides::row_major(4, 12)).is_err());
        assert_eq!(
            gemm_operand("a", 24, 2, 3, 4, Strides::row_major(4, 12)),
            Ok(24)
        );
    }

    #[test]
    fn batched_product_with_a_transposed_shared_operand() {
        let gpu = gpu();
        let (m, n, k, batch) = (5u32, 7u32, 3u32, 2u32);
        // A is stored k x m and shared across the batch; B is batch x k x n.
        let (a, b) = (
            values((k * m) as usize, 1),
            values((batch * k * n) as usize, 2),
        );
        let (da, db) = (up(&gpu, &a), up(&gpu, &b));
        let mut dc = up(&gpu, &vec![1.0; (batch * m * n) as usize]);
        let (sa, sb) = (Strides::transposed(m, 0), Strides::row_major(n, k * n));
        gpu.gemm(
            batch,
            (m, n, k),
            2.0,
            &da,
            sa,
            &db,
            sb,
            0.5,
            &mut dc,
            n,
            m * n,
        )
        .unwrap();
        let c = down(&gpu, &dc);
        for z in 0..batch {
            for i in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k)
                        .map(|p| a[(p * m + i) as usize] * b[(z * k * n + p * n + j) as usize])
                        .sum();
                    let got = c[(z * m * n + i * n + j) as usize];
                    assert!((got - (2.0 * dot + 0.5)).abs() < 1e-5, "{got} vs {dot}");
                }
            }
        }
    }
}
