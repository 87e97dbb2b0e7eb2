//! Nearest-neighbour upsampling (`device/src/upsample.rs`) of `planes` =
//! N*C planes of `h x w` by an integer factor.
use super::{elementwise, index_count, need_len, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// `[planes, h, w, factor]` for the kernels, and the input and output
/// element counts.
fn plan(
    kernel: &'static str,
    planes: usize,
    (h, w): (usize, usize),
    factor: usize,
) -> Result<([u32; 4], usize, usize), PlanError> {
    let input = planes * h * w;
    let output = input * factor * factor;
    index_count(kernel, "y", output)?;
    let args = [
        index_count(kernel, "planes", planes)?,
        index_count(kernel, "h", h)?,
        index_count(kernel, "w", w)?,
        index_count(kernel, "factor", factor)?,
    ];
    Ok((args, input, output))
}

impl Gpu {
    pub fn upsample_nearest_forward(
        &self,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
        planes: usize,
        hw: (usize, usize),
        factor: usize,
    ) -> Result<(), GpuError> {
        const NAME: &str = "upsample_nearest_forward";
        let (shape, input, output) = plan(NAME, planes, hw, factor)?;
        need_len(NAME, "x", x.len(), input)?;
        need_len(NAME, "y", y.len(), output)?;
        let mut args = KernelArgs::new();
        args.input(x, input).output(y, output);
        for value in shape {
            args.u32(value);
        }
        self.launch(NAME, elementwise(output as u32), &args)
    }

    /// Each input gradient is the sum of its copies' gradients.
    pub fn upsample_nearest_backward(
        &self,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        planes: usize,
        hw: (usize, usize),
        factor: usize,
    ) -> Result<(), GpuError> {
        const NAME: &str = "upsample_nearest_backward";
        let (shape, input, output) = plan(NAME, planes, hw, factor)?;
        need_len(NAME, "dx", dx.len(), input)?;
        need_len(NAME, "dy", dy.len(), output)?;
        let mut args = KernelArgs::new();
        args.input(dy, output).output(dx, input);
        for value in shape {
            args.u32(value);
        }
        self.launch(NAME, elementwise(input as u32), &args)
    }
}
