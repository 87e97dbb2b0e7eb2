//! Max pooling (`device/src/pool.rs`) over `planes` = N*C planes, square
//! window, floor or ceil mode.
use pulsefocus_core::backend::PoolGeom;

use super::{at_least, elementwise, fail, index_count, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// A pool as the kernels take it, `[planes, h, w, size, stride, pad,
/// ceil]`, with the input and output element counts, after checking the
/// window fits.
fn plan(kernel: &'static str, g: &PoolGeom) -> Result<([u32; 7], usize, usize), PlanError> {
    if !g.fits() {
        return fail(kernel, format!("window does not fit: {g:?}"));
    }
    let (input, output) = (g.input_len(), g.output_len());
    index_count(kernel, "x", input)?;
    index_count(kernel, "y", output)?;
    let args = [
        index_count(kernel, "batch * channels", g.batch * g.channels)?,
        index_count(kernel, "h_in", g.h_in)?,
        index_count(kernel, "w_in", g.w_in)?,
        index_count(kernel, "kernel", g.kernel)?,
        index_count(kernel, "stride", g.stride)?,
        index_count(kernel, "pad", g.pad)?,
        g.ceil_mode as u32,
    ];
    Ok((args, input, output))
}

fn push(args: &mut KernelArgs, shape: [u32; 7]) {
    for value in shape {
        args.u32(value);
    }
}

impl Gpu {
    pub fn max_pool_forward(
        &self,
        g: &PoolGeom,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "max_pool_forward";
        let (shape, input, output) = plan(NAME, g)?;
        at_least(NAME, &[("x", x.len())], input)?;
        at_least(NAME, &[("y", y.len())], output)?;
        let mut args = KernelArgs::new();
        args.input(x, input).output(y, output);
        push(&mut args, shape);
        self.launch(NAME, elementwise(output as u32), &args)
    }

    /// Each window's gradient to its first maximum in `x`.
    pub fn max_pool_backward(
        &self,
        g: &PoolGeom,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "max_pool_backward";
        let (shape, input, output) = plan(NAME, g)?;
        at_least(NAME, &[("x", x.len()), ("dx", dx.len())], input)?;
        at_least(NAME, &[("dy", dy.len())], output)?;
        let mut args = KernelArgs::new();
        args.input(x, input).input(dy, output).output(dx, input);
        push(&mut args, shape);
        self.launch(NAME, elementwise(input as u32), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_that_does_not_fit_is_refused() {
        let g = PoolGeom {
            batch: 1,
            channels: 2,
            h_in: 3,
            w_in: 3,
            kernel: 5,
            stride: 1,
            pad: 0,
            ceil_mode: false,
        };
        assert!(plan("max_pool_forward", &g)
            .unwrap_err()
            .to_string()
            .starts_with("kernel max_pool_forward: window does not fit"));
        let ok = PoolGeom {
            kernel: 2,
            stride: 2,
            ..g
        };
        assert_eq!(plan("p", &ok).unwrap(), ([2, 3, 3, 2, 2, 0, 0], 18, 2));
        let ceil = PoolGeom {
            ceil_mode: true,
            ..ok
        };
        assert_eq!(plan("p", &ceil).unwrap(), ([2, 3, 3, 2, 2, 0, 1], 18, 8));
        // Ceil mode with a window that would start in the padding.
        let past = PoolGeom {
            h_in: 4,
            w_in: 4,
            pad: 1,
            kernel: 2,
            stride: 3,
            ..ceil
        };
        assert!(plan("p", &past).is_err());
    }
}
