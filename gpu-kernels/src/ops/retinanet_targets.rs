//! RetinaNet's target assignment on the device
//! (`device/src/retinanet_targets.rs`), deciding exactly as core's
//! `retinanet::retinanet_target_assign`: the boxes' best overlaps over every
//! level's anchors, then each anchor's label, box target and weight written
//! straight into the buffers the level's losses read. What goes up: the
//! ground truth (a table of boxes scaled into the anchors' pixels, classes,
//! and where each image's start). What comes back: each image's
//! `ForegroundNumber`. The ground truth table and steps 1-2 (each box's
//! best overlap) are shared with the RPN's targets (`ops::rpn_targets`).
use pulsefocus_core::backend::{RetinaTargetLevel, RetinaTargetsGeom};
use pulsefocus_core::box_coder::BoxXyxy;
use pulsefocus_gpu_device::reduce::REDUCE_THREADS;
use pulsefocus_gpu_device::retinanet_targets::MATCH_BLOCK_ANCHORS;

use super::{elementwise, fail, index_count, need_len, LaunchShape};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

const NAME: &str = "retinanet_targets";

/// `blocks` blocks of `REDUCE_THREADS`, for a level's steps 1 and 3.
pub(crate) fn level_blocks(blocks: u32) -> LaunchShape {
    LaunchShape {
        grid: (blocks, 1, 1),
        block: (REDUCE_THREADS, 1, 1),
    }
}

/// A batch's ground truth on the device and each box's best overlap over
/// every level's anchors (steps 1 and 2), where RetinaNet's targets and
/// the RPN's (`ops::rpn_targets`) both start.
pub(crate) struct BestOverlaps {
    /// The boxes scaled into the anchors' pixels, `[gts, 4]`.
    pub truth_boxes: DeviceBuffer,
    /// Image `n`'s boxes are rows `truth_first[n]..truth_first[n + 1]`.
    pub truth_first: DeviceBuffer<u32>,
    /// Each image's `im_info`, `[images, 3]`.
    pub im_info: DeviceBuffer,
    /// Each box's best overlap, `[gts]`.
    pub gt_max: DeviceBuffer,
    pub gts: usize,
    /// Each level's first column and blocks per image in the block tables
    /// of `stride` columns.
    pub offsets: Vec<(u32, u32)>,
    pub stride: u32,
}

impl Gpu {
    /// Steps 1 and 2 for `images` (each one's boxes in original pixels and
    /// its `im_info`, whose scale takes the boxes to the anchors' pixels)
    /// against `levels` (each level's anchors `[count, 4]` and `count`), the
    /// anchors outside an image by more than `straddle_thresh` left out (none
    /// when it is negative). Errors name `name`.
    pub(crate) fn best_overlaps<'a>(
        &self,
        name: &'static str,
        images: impl ExactSizeIterator<Item = (&'a [BoxXyxy], [f32; 3])>,
        levels: &[(&DeviceBuffer, usize)],
        straddle_thresh: f32,
    ) -> Result<BestOverlaps, GpuError> {
        // The ground truth table, the boxes scaled as the CPU scales them.
        let image_count = images.len();
        let (mut boxes, mut first, mut im_info) = (Vec::new(), vec![0u32], Vec::new());
        for (image_boxes, info) in images {
            let scale = info[2];
            boxes.extend(image_boxes.iter().flat_map(|b| b.map(|v| v * scale)));
            first.push(index_count(name, "boxes", boxes.len() / 4)?);
            im_info.extend(info);
        }
        let gts = boxes.len() / 4;
        // Each level's blocks per image, at its offset in the tables' rows.
        let mut offsets = Vec::with_capacity(levels.len());
        let mut stride = 0usize;
        for &(anchors, count) in levels {
            index_count(name, "anchors", image_count.saturating_mul(4 * count))?;
            need_len(name, "anchors", anchors.len(), 4 * count)?;
            // Below 2^30 anchors (the check above), so below 2^20 blocks.
            let blocks = (count as u32).div_ceil(MATCH_BLOCK_ANCHORS);
            offsets.push((stride as u32, blocks));
            stride += blocks as usize;
        }
        // The block tables' rows are boxes and images, a column per block;
        // every index into them, `stride` and the offsets then fit u32.
        let box_table = gts * stride;
        index_count(name, "block partials", box_table.max(image_count * stride))?;
        let stride = stride as u32;
        let truth_boxes = self.upload(&boxes)?;
        let truth_first = self.upload(&first)?;
        let im_info = self.upload(&im_info)?;
        let images32 = image_count as u32;

        let mut partial = self.alloc::<f32>(box_table)?;
        for (&(anchors, count), &(offset, blocks)) in levels.iter().zip(&offsets) {
            if blocks == 0 {
                continue;
            }
            let mut args = KernelArgs::new();
            args.input(anchors, 4 * count)
                .u32(count as u32)
                .input(&truth_boxes, boxes.len())
                .input(&truth_first, image_count + 1)
                .input(&im_info, 3 * image_count)
                .f32(straddle_thresh)
                .u32(blocks)
                .u32(stride)
                .u32(offset)
                .output(&mut partial, box_table);
            let shape = level_blocks(blocks * images32);
            self.launch("gt_best_overlap_blocks", shape, &args)?;
        }
        let mut gt_max = self.alloc::<f32>(gts)?;
        if gts > 0 {
            let mut args = KernelArgs::new();
            args.input(&partial, box_table)
                .u32(gts as u32)
                .u32(stride)
                .output(&mut gt_max, gts);
            self.launch("gt_best_overlaps", elementwise(gts as u32), &args)?;
        }
        Ok(BestOverlaps {
            truth_boxes,
            truth_first,
            im_info,
            gt_max,
            gts,
            offsets,
            stride,
        })
    }

    /// The targets of `g`'s images written into each level's `labels`,
    /// `box_targets` and `box_weights` (overwritten, see
    /// [`RetinaTargetLevel`]); returns each image's `ForegroundNumber`.
    pub fn retinanet_targets(
        &self,
        g: &RetinaTargetsGeom<'_>,
        levels: &mut [RetinaTargetLevel<'_, DeviceBuffer>],
    ) -> Result<Vec<f32>, GpuError> {
        g.validate().or_else(|message| fail(NAME, message))?;
        let images = g.images.len();
        if images == 0 {
            return Ok(Vec::new());
        }
        for level in levels.iter() {
            let rows = images.saturating_mul(level.count);
            index_count(NAME, "box_targets", rows.saturating_mul(4))?;
            need_len(NAME, "labels", level.labels.len(), rows)?;
            need_len(NAME, "box_targets", level.box_targets.len(), 4 * rows)?;
            need_len(NAME, "box_weights", level.box_weights.len(), rows)?;
        }
        let anchors: Vec<(&DeviceBuffer, usize)> =
            levels.iter().map(|l| (l.anchors, l.count)).collect();
        // Steps 1-2: every box's best overlap over all levels' anchors
        // (RetinaNet keeps the anchors over the border).
        let m = self.best_overlaps(
            NAME,
            g.images.iter().map(|t| (t.boxes, t.im_info)),
            &anchors,
            -1.0,
        )?;
        let classes: Vec<f32> = g
            .images
            .iter()
            .flat_map(|t| t.classes.iter().map(|&c| c as f32))
            .collect();
        let truth_classes = self.upload(&classes)?;
        let (gts, stride) = (m.gts, m.stride);
        let image_table = images * stride as usize;
        let images32 = images as u32;

        // Steps 3-4: every anchor's row, then the foreground counts.
        let mut fg_partial = self.alloc::<u32>(image_table)?;
        for (level, &(offset, blocks)) in levels.iter_mut().zip(&m.offsets) {
            if blocks == 0 {
                continue;
            }
            let rows = images * level.count;
            let mut args = KernelArgs::new();
            args.input(level.anchors, 4 * level.count)
                .u32(level.count as u32)
                .input(&m.truth_boxes, 4 * gts)
                .input(&truth_classes, gts)
                .input(&m.truth_first, images + 1)
                .input(&m.gt_max, gts)
                .u32(blocks)
                .f32(g.config.positive_overlap)
                .f32(g.config.negative_overlap)
                .u32(stride)
                .u32(offset)
                .output(level.labels, rows)
                .output(level.box_targets, 4 * rows)
                .output(level.box_weights, rows)
                .output(&mut fg_partial, image_table);
            let shape = level_blocks(blocks * images32);
            self.launch("retina_target_rows", shape, &args)?;
        }
        let mut fg_num = self.alloc::<f32>(images)?;
        let mut args = KernelArgs::new();
        args.input(&fg_partial, image_table)
            .u32(images32)
            .u32(stride)
            .output(&mut fg_num, images);
        self.launch("retina_fg_num", elementwise(images32), &args)?;
        self.download(&fg_num)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{down, gpu, up};
    use pulsefocus_core::backend::RetinaTruth;
    use pulsefocus_core::box_coder::BoxXyxy;
    use pulsefocus_core::retinanet::RetinaTargetConfig;

    const CONFIG: RetinaTargetConfig = RetinaTargetConfig {
        positive_overlap: 0.5,
        negative_overlap: 0.4,
    };

    /// 12 anchors of 10 pixels in a row, and one box on the fourth.
    fn anchors() -> Vec<f32> {
        (0..12)
            .flat_map(|i| {
                let x = i as f32 * 10.0;
                [x, 0.0, x + 9.0, 9.0]
            })
            .collect()
    }

    const BOXES: [BoxXyxy; 1] = [[30.0, 0.0, 39.0, 9.0]];

    /// `retinanet_targets` of `images` over one level of the 12 anchors,
    /// with output buffers of `lens` (labels, box targets, box weights).
    fn run(
        gpu: &Gpu,
        images: &[RetinaTruth<'_>],
        anchors_len: usize,
        lens: [usize; 3],
    ) -> Result<(Vec<f32>, [Vec<f32>; 3]), String> {
        let anchors = up(gpu, &anchors()[..anchors_len]);
        let [mut labels, mut box_targets, mut box_weights] =
            lens.map(|len| up(gpu, &vec![7.0; len]));
        let g = RetinaTargetsGeom {
            config: &CONFIG,
            images,
        };
        let mut levels = [RetinaTargetLevel {
            anchors: &anchors,
            count: 12,
            labels: &mut labels,
            box_targets: &mut box_targets,
            box_weights: &mut box_weights,
        }];
        let fg_num = gpu
            .retinanet_targets(&g, &mut levels)
            .map_err(|e| e.to_string())?;
        Ok((
            fg_num,
            [
                down(gpu, &labels),
                down(gpu, &box_targets),
                down(gpu, &box_weights),
            ],
        ))
    }

    #[test]
    fn bad_ground_truth_and_short_buffers_are_errors() {
        let gpu = gpu();
        let image = |classes: &'static [i32], scale: f32| RetinaTruth {
            boxes: &BOXES,
            classes,
            im_info: [100.0, 120.0, scale],
        };
        let full = [12, 48, 12];
        assert_eq!(
            run(&gpu, &[image(&[1, 2], 1.0)], 48, full).unwrap_err(),
            "kernel retinanet_targets: retinanet_targets: image 0 has 1 boxes and 2 classes"
        );
        assert_eq!(
            run(&gpu, &[image(&[0], 1.0)], 48, full).unwrap_err(),
            "kernel retinanet_targets: retinanet_targets: image 0: class 0 (classes start at 1)"
        );
        assert_eq!(
            run(&gpu, &[image(&[1], 0.0)], 48, full).unwrap_err(),
            "kernel retinanet_targets: retinanet_targets: image 0: scale must be positive and finite, got 0"
        );
        assert_eq!(
            run(&gpu, &[image(&[1], 1.0)], 47, full).unwrap_err(),
            "kernel retinanet_targets: anchors has 47 elements, needs at least 48"
        );
        assert_eq!(
            run(&gpu, &[image(&[1], 1.0)], 48, [12, 47, 12]).unwrap_err(),
            "kernel retinanet_targets: box_targets has 47 elements, needs at least 48"
        );
        assert_eq!(
            run(&gpu, &[image(&[1], 1.0), image(&[1], 1.0)], 48, full).unwrap_err(),
            "kernel retinanet_targets: labels has 12 elements, needs at least 24"
        );
    }

    /// The box's anchor is foreground of its class with a zero target,
    /// its neighbours (IoU 0) background; an image without boxes is all
    /// background with `ForegroundNumber` 1, in a batch with boxes or
    /// without. Nothing past the tensors is written.
    #[test]
    fn a_box_on_an_anchor_and_an_image_without_boxes() {
        let gpu = gpu();
        let images = [
            RetinaTruth {
                boxes: &BOXES,
                classes: &[2],
                im_info: [100.0, 120.0, 1.0],
            },
            RetinaTruth {
                boxes: &[],
                classes: &[],
                im_info: [100.0, 120.0, 1.0],
            },
        ];
        let (fg_num, [labels, targets, weights]) = run(&gpu, &images, 48, [25, 97, 25]).unwrap();
        assert_eq!(fg_num, [2.0, 1.0]);
        let mut want = vec![0.0; 24];
        want[3] = 2.0;
        want.push(7.0);
        assert_eq!(labels, want);
        want[3] = 1.0;
        assert_eq!(weights, want);
        assert!(targets[..96].iter().all(|&t| t == 0.0));
        assert_eq!(targets[96], 7.0);
        // No box in the batch: nothing to match, all background.
        let (fg_num, [labels, _, weights]) = run(&gpu, &images[1..], 48, [12, 48, 12]).unwrap();
        assert_eq!(
            (fg_num, labels, weights),
            (vec![1.0], vec![0.0; 12], vec![0.0; 12])
        );
        assert_eq!(run(&gpu, &[], 48, [0, 0, 0]).unwrap().0, Vec::<f32>::new());
    }
}
