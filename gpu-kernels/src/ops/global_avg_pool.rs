//! Global average pooling (`device/src/global_avg_pool.rs`, core's
//! `GlobalPoolGeom`): forward a thread per plane, backward a thread per
//! input value.
use pulsefocus_core::backend::GlobalPoolGeom;

use super::{elementwise, fail, index_count, need_len, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// `(planes, spatial)` as the kernels take them, after checking the
/// geometry, that the input has fewer than 2^32 elements, and that the
/// buffers hold the input (`x` or `dx`) and the planes (`y` or `dy`).
fn plan(
    kernel: &'static str,
    g: &GlobalPoolGeom,
    input: (&str, usize),
    planes: (&str, usize),
) -> Result<(u32, u32), PlanError> {
    g.validate().or_else(|message| fail(kernel, message))?;
    index_count(kernel, input.0, g.input_len())?;
    need_len(kernel, input.0, input.1, g.input_len())?;
    need_len(kernel, planes.0, planes.1, g.planes())?;
    // Both at most the input's element count, below 2^32.
    Ok((g.planes() as u32, g.spatial as u32))
}

impl Gpu {
    /// `y[p]` = the mean of plane `p` of `x`.
    pub fn global_avg_pool_forward(
        &self,
        g: &GlobalPoolGeom,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "global_avg_pool_forward";
        let (planes, spatial) = plan(NAME, g, ("x", x.len()), ("y", y.len()))?;
        if planes == 0 {
            return Ok(());
        }
        let mut args = KernelArgs::new();
        args.input(x, g.input_len())
            .output(y, g.planes())
            .u32(planes)
            .u32(spatial);
        self.launch(NAME, elementwise(planes), &args)
    }

    /// `dx` (overwritten) = `dy[p] * (1 / spatial)` over plane `p`, the
    /// factor rounded from f64 as the CPU and Paddle round it.
    pub fn global_avg_pool_backward(
        &self,
        g: &GlobalPoolGeom,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "global_avg_pool_backward";
        let (planes, spatial) = plan(NAME, g, ("dx", dx.len()), ("dy", dy.len()))?;
        if planes == 0 {
            return Ok(());
        }
        let len = planes * spatial;
        let mut args = KernelArgs::new();
        args.input(dy, g.planes())
            .output(dx, g.input_len())
            .u32(len)
            .u32(spatial)
            .f32((1.0 / g.spatial as f64) as f32);
        self.launch(NAME, elementwise(len), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up};

    #[test]
    fn bad_geometries_and_short_buffers_are_errors() {
        let gpu = gpu();
        let g = GlobalPoolGeom {
            batch: 2,
            channels: 3,
            spatial: 4,
        };
        let x = up(&gpu, &[1.0; 24]);
        let mut y = up(&gpu, &[0.0; 5]);
        let err = gpu.global_avg_pool_forward(&g, &x, &mut y).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel global_avg_pool_forward: y has 5 elements, needs at least 6"
        );
        let flat = GlobalPoolGeom { spatial: 0, ..g };
        let err = gpu.global_avg_pool_forward(&flat, &x, &mut y).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel global_avg_pool_forward: global_avg_pool: spatial must be positive"
        );
        let mut y = up(&gpu, &[0.0; 6]);
        gpu.global_avg_pool_forward(&g, &x, &mut y).unwrap();
        assert_eq!(down(&gpu, &y), [1.0; 6]);
    }
}
