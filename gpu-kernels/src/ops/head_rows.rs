//! Multi-box head rows (`device/src/head_rows.rs`): one level's conv output
//! into its rows of the levels' concatenation (core's `HeadRows`), and the
//! gradient back.
use pulsefocus_core::backend::HeadRows;

use super::{elementwise, fail, index_count, need_len, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// The kernels' scalar arguments (batch, anchors, values, plane,
/// total_rows, first_row), after checking the geometry and the buffers.
fn plan(
    kernel: &'static str,
    g: &HeadRows,
    (rows_arg, rows_len): (&str, usize),
    (x_arg, x_len): (&str, usize),
) -> Result<[u32; 6], PlanError> {
    g.validate().or_else(|message| fail(kernel, message))?;
    index_count(kernel, rows_arg, g.rows_len())?;
    index_count(kernel, x_arg, g.input_len())?;
    need_len(kernel, rows_arg, rows_len, g.rows_len())?;
    need_len(kernel, x_arg, x_len, g.input_len())?;
    // Each is at most the row buffer's length, below 2^32.
    Ok([
        g.batch,
        g.anchors,
        g.values,
        g.height * g.width,
        g.total_rows,
        g.first_row,
    ]
    .map(|v| v as u32))
}

impl Gpu {
    /// The level's conv output `x` into its rows of `rows`; other rows stay.
    pub fn head_rows_forward(
        &self,
        g: &HeadRows,
        x: &DeviceBuffer,
        rows: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "head_rows_forward";
        let sizes = plan(NAME, g, ("rows", rows.len()), ("x", x.len()))?;
        let mut args = KernelArgs::new();
        args.input(x, g.input_len()).output(rows, g.rows_len());
        for v in sizes {
            args.u32(v);
        }
        self.launch(NAME, elementwise(g.input_len() as u32), &args)
    }

    /// The level's rows of `rows_grad` back into `x_grad` (overwritten).
    pub fn head_rows_backward(
        &self,
        g: &HeadRows,
        rows_grad: &DeviceBuffer,
        x_grad: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "head_rows_backward";
        let sizes = plan(
            NAME,
            g,
            ("rows_grad", rows_grad.len()),
            ("x_grad", x_grad.len()),
        )?;
        let mut args = KernelArgs::new();
        args.input(rows_grad, g.rows_len())
            .output(x_grad, g.input_len());
        for v in sizes {
            args.u32(v);
        }
        self.launch(NAME, elementwise(g.input_len() as u32), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gpu, up};

    #[test]
    fn bad_geometries_and_short_buffers_are_errors() {
        let gpu = gpu();
        let g = HeadRows {
            batch: 2,
            anchors: 3,
            values: 4,
            height: 2,
            width: 3,
            total_rows: 20,
            first_row: 3,
        };
        let x = up(&gpu, &[0.0; 144]);
        let mut rows = up(&gpu, &[0.0; 159]);
        let message = |g: &HeadRows, rows: &mut DeviceBuffer| {
            gpu.head_rows_forward(g, &x, rows).unwrap_err().to_string()
        };
        assert_eq!(
            message(&g, &mut rows),
            "kernel head_rows_forward: head_rows: rows 3..21 of the level (2x3 cells, 3 anchors) exceed total_rows 20"
        );
        let g = HeadRows { first_row: 2, ..g };
        assert_eq!(
            message(&g, &mut rows),
            "kernel head_rows_forward: rows has 159 elements, needs at least 160"
        );
        assert_eq!(
            message(&HeadRows { values: 0, ..g }, &mut rows),
            "kernel head_rows_forward: head_rows: values must be positive"
        );
        let mut x_grad = up(&gpu, &[0.0; 143]);
        let err = gpu.head_rows_backward(&g, &rows, &mut x_grad).unwrap_err();
        assert!(
            err.to_string().contains("rows_grad has 159 elements"),
            "{err}"
        );
    }
}
