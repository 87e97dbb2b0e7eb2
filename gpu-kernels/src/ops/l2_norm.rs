//! L2 normalisation over channels with a per-channel scale
//! (`device/src/l2_norm.rs`, core's `L2NormGeom`): forward and the input
//! gradient one thread per position, the scale gradient one block per
//! channel.
use pulsefocus_core::backend::L2NormGeom;

use super::{at_least, block_per_item, elementwise, fail, index_count, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// `[batch, channels, plane]` as the kernels take them, after checking the
/// geometry and that the buffers hold the tensors, the per-channel vectors
/// and the norms.
fn plan(
    kernel: &'static str,
    g: &L2NormGeom,
    tensors: &[(&str, usize)],
    per_channel: &[(&str, usize)],
    norm: usize,
) -> Result<[u32; 3], PlanError> {
    g.validate().or_else(|message| fail(kernel, message))?;
    index_count(kernel, "x", g.len())?;
    at_least(kernel, tensors, g.len())?;
    at_least(kernel, per_channel, g.channels)?;
    at_least(kernel, &[("norm", norm)], g.positions())?;
    // Each is at most the tensor's length, below 2^32.
    Ok([g.batch, g.channels, g.spatial].map(|v| v as u32))
}

fn push(args: &mut KernelArgs, shape: [u32; 3]) {
    for v in shape {
        args.u32(v);
    }
}

impl Gpu {
    /// `y = x / norm * scale`, saving `norm` per position.
    pub fn l2_norm_forward(
        &self,
        g: &L2NormGeom,
        epsilon: f32,
        x: &DeviceBuffer,
        scale: &DeviceBuffer,
        norm: &mut DeviceBuffer,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "l2_norm_forward";
        let shape = plan(
            NAME,
            g,
            &[("x", x.len()), ("y", y.len())],
            &[("scale", scale.len())],
            norm.len(),
        )?;
        let mut args = KernelArgs::new();
        args.input(x, g.len())
            .input(scale, g.channels)
            .output(norm, g.positions())
            .output(y, g.len());
        push(&mut args, shape);
        args.f32(epsilon);
        self.launch(NAME, elementwise(g.positions() as u32), &args)
    }

    /// `dx` and `dscale` (both overwritten) from the forward's `x`, `scale`
    /// and `norm`.
    #[allow(clippy::too_many_arguments)]
    pub fn l2_norm_backward(
        &self,
        g: &L2NormGeom,
        x: &DeviceBuffer,
        scale: &DeviceBuffer,
        norm: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        dscale: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const DATA: &str = "l2_norm_backward_data";
        const SCALE: &str = "l2_norm_backward_scale";
        let tensors = [("x", x.len()), ("dy", dy.len()), ("dx", dx.len())];
        let per_channel = [("scale", scale.len()), ("dscale", dscale.len())];
        let shape = plan(DATA, g, &tensors, &per_channel, norm.len())?;
        let blocks = block_per_item(SCALE, shape[1])?;
        let mut args = KernelArgs::new();
        args.input(x, g.len())
            .input(scale, g.channels)
            .input(norm, g.positions())
            .input(dy, g.len())
            .output(dx, g.len());
        push(&mut args, shape);
        self.launch(DATA, elementwise(g.positions() as u32), &args)?;
        let mut args = KernelArgs::new();
        args.input(x, g.len())
            .input(norm, g.positions())
            .input(dy, g.len())
            .output(dscale, g.channels);
        push(&mut args, shape);
        self.launch(SCALE, blocks, &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gpu, up};

    #[test]
    fn bad_geometries_and_short_buffers_are_errors() {
        let gpu = gpu();
        let g = L2NormGeom {
            batch: 2,
            channels: 3,
            spatial: 4,
        };
        let (x, scale) = (up(&gpu, &[0.0; 24]), up(&gpu, &[1.0; 3]));
        let (mut norm, mut y) = (up(&gpu, &[0.0; 7]), up(&gpu, &[0.0; 24]));
        let message = |g: &L2NormGeom, norm: &mut DeviceBuffer, y: &mut DeviceBuffer| {
            gpu.l2_norm_forward(g, 1e-12, &x, &scale, norm, y)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message(&g, &mut norm, &mut y),
            "kernel l2_norm_forward: norm has 7 elements, needs at least 8"
        );
        assert_eq!(
            message(&L2NormGeom { spatial: 0, ..g }, &mut norm, &mut y),
            "kernel l2_norm_forward: l2_norm: spatial must be positive"
        );
        let mut norm = up(&gpu, &[1.0; 8]);
        let g4 = L2NormGeom { channels: 4, ..g };
        assert_eq!(
            message(&g4, &mut norm, &mut y),
            "kernel l2_norm_forward: x has 24 elements, needs at least 32"
        );
        let (mut dx, mut dscale) = (up(&gpu, &[0.0; 24]), up(&gpu, &[0.0; 2]));
        let err = gpu
            .l2_norm_backward(&g, &x, &scale, &norm, &x, &mut dx, &mut dscale)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel l2_norm_backward_data: dscale has 2 elements, needs at least 3"
        );
    }
}
