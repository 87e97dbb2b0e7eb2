//! RoIAlign (`device/src/roi_align.rs`, core's `RoiAlignGeom`): forward one
//! thread per output bin, backward one thread per input pixel gathering
//! its samples' shares (deterministic, no atomics).
use pulsefocus_core::backend::RoiAlignGeom;

use super::{elementwise, fail, index_count, need_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// The buffers of one RoIAlign launch, by kernel argument name.
struct Buffers<'a> {
    data_in: (&'static str, &'a DeviceBuffer, usize),
    rois: &'a DeviceBuffer,
    roi_batch: &'a DeviceBuffer,
    data_out: (&'static str, &'a mut DeviceBuffer, usize),
}

/// Checks the geometry and the buffers, then launches `kernel` over `threads`
/// with the arguments both kernels take: the input, the boxes, the image
/// indices, the output, then (batch, channels, height, width, rois,
/// pooled_h, pooled_w, spatial_scale, sampling_ratio), the last 0 for the
/// adaptive grid.
fn launch(
    gpu: &Gpu,
    kernel: &'static str,
    g: &RoiAlignGeom,
    b: Buffers,
    threads: usize,
) -> Result<(), GpuError> {
    g.validate().or_else(|message| fail(kernel, message))?;
    let (in_arg, data_in, in_len) = b.data_in;
    let (out_arg, data_out, out_len) = b.data_out;
    for (arg, got, want) in [
        (in_arg, data_in.len(), in_len),
        ("rois", b.rois.len(), g.rois_len()),
        ("roi_batch", b.roi_batch.len(), g.rois),
        (out_arg, data_out.len(), out_len),
    ] {
        index_count(kernel, arg, want)?;
        need_len(kernel, arg, got, want)?;
    }
    let threads = index_count(kernel, "threads", threads)?;
    if threads == 0 {
        return Ok(());
    }
    let mut args = KernelArgs::new();
    args.input(data_in, in_len)
        .input(b.rois, g.rois_len())
        .input(b.roi_batch, g.rois)
        .output(data_out, out_len);
    // Each is at most a checked element count, below 2^32.
    let sizes = [
        g.batch, g.channels, g.height, g.width, g.rois, g.pooled_h, g.pooled_w,
    ];
    for v in sizes {
        args.u32(v as u32);
    }
    args.f32(g.spatial_scale)
        .u32(g.sampling_ratio.max(0) as u32);
    gpu.launch(kernel, elementwise(threads), &args)
}

impl Gpu {
    /// `y = roi_align(x)` over the boxes `rois` (`[R, 4]`) of images
    /// `roi_batch` (`[R]`, f32 indices; a bad one gives NaN outputs).
    pub fn roi_align_forward(
        &self,
        g: &RoiAlignGeom,
        x: &DeviceBuffer,
        rois: &DeviceBuffer,
        roi_batch: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let buffers = Buffers {
            data_in: ("x", x, g.input_len()),
            rois,
            roi_batch,
            data_out: ("y", y, g.output_len()),
        };
        launch(self, "roi_align_forward", g, buffers, g.output_len())
    }

    /// `dx` (overwritten) = the adjoint of `roi_align_forward` applied to `dy`.
    pub fn roi_align_backward(
        &self,
        g: &RoiAlignGeom,
        dy: &DeviceBuffer,
        rois: &DeviceBuffer,
        roi_batch: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let buffers = Buffers {
            data_in: ("dy", dy, g.output_len()),
            rois,
            roi_batch,
            data_out: ("dx", dx, g.input_len()),
        };
        launch(self, "roi_align_backward", g, buffers, g.input_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up};

    fn geom() -> RoiAlignGeom {
        RoiAlignGeom {
            batch: 2,
            channels: 3,
            height: 4,
            width: 5,
            rois: 2,
            pooled_h: 2,
            pooled_w: 2,
            spatial_scale: 0.5,
            sampling_ratio: 0,
        }
    }

    #[test]
    fn bad_geometries_and_short_buffers_are_errors() {
        let gpu = gpu();
        let g = geom();
        let x = up(&gpu, &[0.0; 120]);
        let rois = up(&gpu, &[0.0; 8]);
        let roi_batch = up(&gpu, &[0.0; 1]);
        let mut y = up(&gpu, &[0.0; 24]);
        let err = gpu
            .roi_align_forward(&g, &x, &rois, &roi_batch, &mut y)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel roi_align_forward: roi_batch has 1 elements, needs at least 2"
        );
        let roi_batch = up(&gpu, &[0.0; 2]);
        let bad = RoiAlignGeom {
            spatial_scale: 0.0,
            ..g
        };
        let err = gpu
            .roi_align_forward(&bad, &x, &rois, &roi_batch, &mut y)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel roi_align_forward: roi_align: spatial_scale 0 must be a positive number"
        );
        let mut dx = up(&gpu, &[0.0; 119]);
        let err = gpu
            .roi_align_backward(&g, &y, &rois, &roi_batch, &mut dx)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel roi_align_backward: dx has 119 elements, needs at least 120"
        );
    }

    /// No RoIs: forward has nothing to write; backward still zeroes `dx`.
    #[test]
    fn zero_rois_zero_the_gradient() {
        let gpu = gpu();
        let g = RoiAlignGeom { rois: 0, ..geom() };
        let (x, none) = (up(&gpu, &[1.0; 120]), up(&gpu, &[0.0; 1]));
        let mut y = up(&gpu, &[5.0; 1]);
        gpu.roi_align_forward(&g, &x, &none, &none, &mut y).unwrap();
        assert_eq!(down(&gpu, &y), [5.0]);
        let mut dx = up(&gpu, &[5.0; 120]);
        gpu.roi_align_backward(&g, &y, &none, &none, &mut dx)
            .unwrap();
        assert_eq!(down(&gpu, &dx), [0.0; 120]);
    }
}
