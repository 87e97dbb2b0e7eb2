//! YOLOv3 head kernels (`device/src/yolo_decode.rs`): box decoding and the
//! objectness ignore mask, one thread per anchor cell.
use super::{elementwise, index_count, need_len, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// One YOLOv3 head level.
#[derive(Clone, Copy, Debug)]
pub struct YoloLevel {
    pub batch: u32,
    pub classes: u32,
    pub grid_h: u32,
    pub grid_w: u32,
    /// Stride of this level in input pixels (32, 16, 8).
    pub downsample: u32,
    /// The level's three anchors as (w, h) pairs, in input pixels.
    pub anchors: [f32; 6],
    pub scale_x_y: f32,
}

impl YoloLevel {
    /// The level's anchor cells (N * 3 * H * W, one kernel thread each), after
    /// checking that the head output `x` holds `5 + classes` values per cell;
    /// `output` names the per-cell result in errors. Returns (cells, x's extent).
    fn cells(
        &self,
        kernel: &'static str,
        output: &str,
        x: &DeviceBuffer,
    ) -> Result<(u32, usize), PlanError> {
        let cells = index_count(
            kernel,
            output,
            self.batch as usize * 3 * self.grid_h as usize * self.grid_w as usize,
        )?;
        let x_len = cells as usize * (5 + self.classes as usize);
        need_len(kernel, "x", x.len(), x_len)?;
        Ok((cells, x_len))
    }
}

impl Gpu {
    /// Paddle `yolo_box` for one head level (see the device kernel):
    /// `boxes [N, 3*H*W, 4]` in image pixels, `scores [N, 3*H*W, classes]`.
    #[allow(clippy::too_many_arguments)]
    pub fn yolo_decode(
        &self,
        level: &YoloLevel,
        x: &DeviceBuffer,
        image_size: &DeviceBuffer,
        boxes: &mut DeviceBuffer,
        scores: &mut DeviceBuffer,
        conf_thresh: f32,
        clip: bool,
    ) -> Result<(), GpuError> {
        const NAME: &str = "yolo_decode";
        let l = level;
        let (cells, x_len) = l.cells(NAME, "boxes", x)?;
        let sizes = 2 * l.batch as usize;
        let (box_len, score_len) = (4 * cells as usize, l.classes as usize * cells as usize);
        need_len(NAME, "image_size", image_size.len(), sizes)?;
        need_len(NAME, "boxes", boxes.len(), box_len)?;
        need_len(NAME, "scores", scores.len(), score_len)?;
        let mut args = KernelArgs::new();
        args.input(x, x_len)
            .input(image_size, sizes)
            .output(boxes, box_len)
            .output(scores, score_len);
        args.u32(l.batch)
            .u32(l.classes)
            .u32(l.grid_h)
            .u32(l.grid_w)
            .u32(l.downsample);
        for anchor in l.anchors {
            args.f32(anchor);
        }
        args.f32(conf_thresh).f32(l.scale_x_y).u32(clip as u32);
        self.launch(NAME, elementwise(cells), &args)
    }

    /// The YOLOv3 objectness ignore mask for one level: `negative [N, 3, H, W]`
    /// against `gt [N, max_boxes, 4]` (normalised cx, cy, w, h).
    pub fn yolo_ignore_mask(
        &self,
        level: &YoloLevel,
        x: &DeviceBuffer,
        gt: &DeviceBuffer,
        max_boxes: u32,
        negative: &mut DeviceBuffer,
        ignore_thresh: f32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "yolo_ignore_mask";
        let l = level;
        let (cells, x_len) = l.cells(NAME, "negative", x)?;
        let gt_len = l.batch as usize * max_boxes as usize * 4;
        need_len(NAME, "gt", gt.len(), gt_len)?;
        need_len(NAME, "negative", negative.len(), cells as usize)?;
        let mut args = KernelArgs::new();
        args.input(x, x_len)
            .input(gt, gt_len)
            .output(negative, cells as usize);
        args.u32(l.batch)
            .u32(l.classes)
            .u32(l.grid_h)
            .u32(l.grid_w)
            .u32(l.downsample)
            .u32(max_boxes);
        for anchor in l.anchors {
            args.f32(anchor);
        }
        args.f32(ignore_thresh).f32(l.scale_x_y);
        self.launch(NAME, elementwise(cells), &args)
    }
}
