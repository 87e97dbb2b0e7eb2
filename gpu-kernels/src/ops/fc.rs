//! Fully connected layer (core's `FcGeom`): the forward on `fc_forward`
//! (`device/src/fc.rs`: the tile engine with bias and activation in its
//! store), the two backward products on `gemm` with transposed strides (no
//! copies), the bias gradient on `channel_sum` (one block per output,
//! summing its column over the rows).
use pulsefocus_core::backend::{Activation, FcGeom};

use super::elementwise::activation_code;
use super::gemm::Strides;
use super::{fail, index_count, need_len, tiled, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// `[rows, inputs, outputs]` as the kernels take them, after checking the
/// geometry and that each buffer `(name, length, elements needed)` holds
/// its tensor.
fn plan(
    kernel: &'static str,
    g: &FcGeom,
    buffers: &[(&str, usize, usize)],
) -> Result<[u32; 3], PlanError> {
    g.validate().or_else(|message| fail(kernel, message))?;
    for &(arg, got, want) in buffers {
        index_count(kernel, arg, want)?;
        need_len(kernel, arg, got, want)?;
    }
    // Each is at most a checked element count (inputs, outputs positive).
    Ok([g.rows, g.inputs, g.outputs].map(|v| v as u32))
}

impl Gpu {
    /// `y = act(x W + b)`.
    pub fn fc_forward(
        &self,
        g: &FcGeom,
        act: Activation,
        x: &DeviceBuffer,
        w: &DeviceBuffer,
        bias: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "fc_forward";
        let buffers = [
            ("x", x.len(), g.input_len()),
            ("w", w.len(), g.weight_len()),
            ("bias", bias.len(), g.outputs),
            ("y", y.len(), g.output_len()),
        ];
        let [rows, inputs, outputs] = plan(NAME, g, &buffers)?;
        if rows == 0 {
            return Ok(());
        }
        let (kind, slope) = activation_code(act);
        let mut args = KernelArgs::new();
        args.input(x, g.input_len())
            .input(w, g.weight_len())
            .input(bias, g.outputs)
            .output(y, g.output_len());
        args.u32(rows).u32(inputs).u32(outputs).u32(kind).f32(slope);
        self.launch(NAME, tiled(rows, outputs, 1), &args)
    }

    /// `dx = dz W^T` (overwritten): `gemm` of `dz` (`[rows, outputs]`) and
    /// the weight read transposed.
    pub fn fc_backward_data(
        &self,
        g: &FcGeom,
        dz: &DeviceBuffer,
        w: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let buffers = [
            ("dz", dz.len(), g.output_len()),
            ("w", w.len(), g.weight_len()),
            ("dx", dx.len(), g.input_len()),
        ];
        let [rows, inputs, outputs] = plan("gemm (fc_backward_data)", g, &buffers)?;
        if rows == 0 {
            return Ok(());
        }
        self.gemm(
            1,
            (rows, inputs, outputs),
            1.0,
            dz,
            Strides::row_major(outputs, 0),
            w,
            Strides::transposed(outputs, 0),
            0.0,
            dx,
            inputs,
            0,
        )
    }

    /// `dw = x^T dz` and `dbias` = the column sums of `dz` (both
    /// overwritten; 0 for no rows).
    pub fn fc_backward_weight(
        &self,
        g: &FcGeom,
        x: &DeviceBuffer,
        dz: &DeviceBuffer,
        dw: &mut DeviceBuffer,
        dbias: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let buffers = [
            ("x", x.len(), g.input_len()),
            ("dz", dz.len(), g.output_len()),
            ("dw", dw.len(), g.weight_len()),
            ("dbias", dbias.len(), g.outputs),
        ];
        let [rows, inputs, outputs] = plan("gemm (fc_backward_weight)", g, &buffers)?;
        if rows == 0 {
            self.fill(g.weight_len(), dw, 0.0)?;
            return self.fill(g.outputs, dbias, 0.0);
        }
        self.gemm(
            1,
            (inputs, outputs, rows),
            1.0,
            x,
            Strides::transposed(inputs, 0),
            dz,
            Strides::row_major(outputs, 0),
            0.0,
            dw,
            outputs,
            0,
        )?;
        self.channel_sum(dz, dbias, (g.rows, g.outputs, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up, values};

    fn geom(rows: usize) -> FcGeom {
        FcGeom {
            rows,
            inputs: 3,
            outputs: 4,
        }
    }

    #[test]
    fn bad_geometries_and_short_buffers_are_errors() {
        let gpu = gpu();
        let g = geom(2);
        let (x, w, bias) = (
            up(&gpu, &[0.0; 6]),
            up(&gpu, &[0.0; 12]),
            up(&gpu, &[0.0; 3]),
        );
        let mut y = up(&gpu, &[0.0; 8]);
        let err = gpu
            .fc_forward(&g, Activation::Relu, &x, &w, &bias, &mut y)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel fc_forward: bias has 3 elements, needs at least 4"
        );
        let bad = FcGeom { inputs: 0, ..g };
        let err = gpu
            .fc_forward(&bad, Activation::Relu, &x, &w, &bias, &mut y)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel fc_forward: fc: inputs must be positive"
        );
        let mut dx = up(&gpu, &[0.0; 5]);
        let err = gpu.fc_backward_data(&g, &y, &w, &mut dx).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel gemm (fc_backward_data): dx has 5 elements, needs at least 6"
        );
    }

    /// No rows: nothing to compute forward; the parameter gradients are 0.
    #[test]
    fn no_rows_zero_the_parameter_gradients() {
        let gpu = gpu();
        let g = geom(0);
        let (none, w) = (up(&gpu, &[0.0; 1]), up(&gpu, &values(12, 1)));
        let mut y = up(&gpu, &[5.0; 1]);
        gpu.fc_forward(&g, Activation::Identity, &none, &w, &w, &mut y)
            .unwrap();
        assert_eq!(down(&gpu, &y), [5.0]);
        let (mut dw, mut db) = (up(&gpu, &[5.0; 12]), up(&gpu, &[5.0; 4]));
        gpu.fc_backward_weight(&g, &none, &none, &mut dw, &mut db)
            .unwrap();
        assert_eq!(
            (down(&gpu, &dw), down(&gpu, &db)),
            (vec![0.0; 12], vec![0.0; 4])
        );
    }
}
