//! RetinaNet's target assignment on the device
//! (`device/src/retinanet_targets.rs`), deciding exactly as core's
//! `retinanet::retinanet_target_assign`: the boxes' best overlaps over every
//! level's anchors, then each anchor's label, box target and weight written
//! straight into the buffers the level's losses read. What goes up: the
//! ground truth (a table of boxes scaled into the anchors' pixels, classes,
//! and where each image's start). What comes back: each image's
//! `ForegroundNumber`.
use pulsefocus_core::backend::{RetinaTargetLevel, RetinaTargetsGeom};
use pulsefocus_gpu_device::reduce::REDUCE_THREADS;
use pulsefocus_gpu_device::retinanet_targets::MATCH_BLOCK_ANCHORS;

use super::{elementwise, fail, index_count, need_len, LaunchShape};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

const NAME: &str = "retinanet_targets";

/// `blocks` blocks of `REDUCE_THREADS`, for a level's steps 1 and 3.
fn level_blocks(blocks: u32) -> LaunchShape {
    LaunchShape {
        grid: (blocks, 1, 1),
        block: (REDUCE_THREADS, 1, 1),
    }
}

impl Gpu {
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
        // The ground truth table, the boxes scaled as the CPU scales them.
        let (mut boxes, mut classes, mut first) = (Vec::new(), Vec::new(), vec![0u32]);
        for image in g.images {
            let scale = image.im_info[2];
            boxes.extend(image.boxes.iter().flat_map(|b| b.map(|v| v * scale)));
            classes.extend(image.classes.iter().map(|&c| c as f32));
            first.push(index_count(NAME, "boxes", classes.len())?);
        }
        let gts = classes.len();
        // Each level's blocks per image, at its offset in the tables' rows.
        let mut offsets = Vec::with_capacity(levels.len());
        let mut stride = 0usize;
        for level in levels.iter() {
            let rows = images.saturating_mul(level.count);
            index_count(NAME, "box_targets", rows.saturating_mul(4))?;
            need_len(NAME, "anchors", level.anchors.len(), 4 * level.count)?;
            need_len(NAME, "labels", level.labels.len(), rows)?;
            need_len(NAME, "box_targets", level.box_targets.len(), 4 * rows)?;
            need_len(NAME, "box_weights", level.box_weights.len(), rows)?;
            // Below 2^30 anchors (the check above), so below 2^20 blocks.
            let blocks = (level.count as u32).div_ceil(MATCH_BLOCK_ANCHORS);
            offsets.push((stride as u32, blocks));
            stride += blocks as usize;
        }
        // The block tables' rows are boxes and images, a column per block;
        // every index into them, `stride` and the offsets then fit u32.
        let (box_table, image_table) = (gts * stride, images * stride);
        index_count(NAME, "block partials", box_table.max(image_table))?;
        let stride = stride as u32;
        let truth_boxes = self.upload(&boxes)?;
        let truth_classes = self.upload(&classes)?;
        let truth_first = self.upload(&first)?;
        let images32 = images as u32;

        // Steps 1-2: every box's best overlap over all levels' anchors.
        let mut partial = self.alloc::<f32>(box_table)?;
        for (level, &(offset, blocks)) in levels.iter().zip(&offsets) {
            if blocks == 0 {
                continue;
            }
            let mut args = KernelArgs::new();
            args.input(level.anchors, 4 * level.count)
                .u32(level.count as u32)
                .input(&truth_boxes, boxes.len())
                .input(&truth_first, images + 1)
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

        // Steps 3-4: every anchor's row, then the foreground counts.
        let mut fg_partial = self.alloc::<u32>(image_table)?;
        for (level, &(offset, blocks)) in levels.iter_mut().zip(&offsets) {
            if blocks == 0 {
                continue;
            }
            let rows = images * level.count;
            let mut args = KernelArgs::new();
            args.input(level.anchors, 4 * level.count)
                .u32(level.count as u32)
                .input(&truth_boxes, boxes.len())
                .input(&truth_classes, gts)
                .input(&truth_first, images + 1)
                .input(&gt_max, gts)
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
