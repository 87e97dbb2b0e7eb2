//! Faster R-CNN's RPN target assignment on the device
//! (`device/src/rpn_targets.rs`), deciding exactly as core's
//! `rcnn::rpn_target_assign` with the same keyed draw: RetinaNet's steps 1-2
//! (`Gpu::best_overlaps`, the anchors over the border left out), each
//! anchor's candidacy and foreground target, then a block per image samples
//! them. What goes up: the ground truth table and the seed. What comes
//! back: each image's count of sampled anchors (the loss's normaliser); the
//! labels and targets stay on the device for `ops::rpn_loss`.
use pulsefocus_core::backend::RpnTargetsGeom;

use super::retinanet_targets::level_blocks;
use super::{elementwise, fail, index_count};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

const NAME: &str = "rpn_loss";

/// The batch's targets, per anchor of each image (its levels' anchors one
/// after another, `total` of them): anchor `k` of image `n` is row `n *
/// total + k`.
pub(crate) struct AnchorTargets {
    pub total: usize,
    /// 1 foreground, 0 background, -1 not sampled.
    pub labels: DeviceBuffer,
    /// `[rows, 4]`: the regression targets of the foreground rows (the
    /// other rows hold whatever was there).
    pub deltas: DeviceBuffer,
    /// Each image's count of sampled anchors.
    pub sampled: Vec<u32>,
}

impl Gpu {
    /// `g`'s targets against `levels` (each level's anchors `[count, 4]`
    /// and `count`); `g` already validated.
    pub(crate) fn rpn_targets(
        &self,
        g: &RpnTargetsGeom<'_>,
        levels: &[(&DeviceBuffer, usize)],
    ) -> Result<AnchorTargets, GpuError> {
        let images = g.images.len();
        let total: usize = levels.iter().map(|&(_, count)| count).sum();
        // The keys hold an anchor index in at most 31 bits (`rpn_sample`).
        if total >= 1 << 31 {
            fail::<()>(NAME, format!("{total} anchors an image; at most 2^31 - 1"))?;
        }
        let rows = images.saturating_mul(total);
        index_count(NAME, "anchor targets", rows.saturating_mul(4))?;
        let mut labels = self.alloc::<f32>(rows)?;
        let mut deltas = self.alloc::<f32>(4 * rows)?;
        if images == 0 {
            return Ok(AnchorTargets {
                total,
                labels,
                deltas,
                sampled: Vec::new(),
            });
        }
        let c = g.config;
        let m = self.best_overlaps(
            NAME,
            g.images.iter().map(|t| (t.boxes, t.im_info)),
            levels,
            c.straddle_thresh,
        )?;
        let gts = m.gts;

        // Step 3: each anchor's candidacy and foreground target.
        let mut candidates = self.alloc::<u32>(rows)?;
        let mut first = 0;
        for &(anchors, count) in levels {
            if count == 0 {
                continue;
            }
            let mut args = KernelArgs::new();
            args.input(anchors, 4 * count)
                .u32(count as u32)
                .u32(first as u32)
                .u32(total as u32)
                .u32(images as u32)
                .input(&m.truth_boxes, 4 * gts)
                .input(&m.truth_first, images + 1)
                .input(&m.gt_max, gts)
                .input(&m.im_info, 3 * images)
                .f32(c.straddle_thresh)
                .f32(c.positive_overlap)
                .f32(c.negative_overlap)
                .output(&mut candidates, rows)
                .output(&mut deltas, 4 * rows);
            self.launch(
                "rpn_anchor_candidates",
                elementwise((images * count) as u32),
                &args,
            )?;
            first += count;
        }

        // Step 4: a block per image draws its samples; the same quotas
        // as the CPU's.
        let sampling = c.fg_fraction > 0.0 && c.batch_size_per_im > 0;
        let fg_quota = (c.fg_fraction * c.batch_size_per_im as f32) as usize;
        let mut sampled = self.alloc::<u32>(images)?;
        let mut args = KernelArgs::new();
        args.input(&candidates, rows)
            .u32(total as u32)
            .u32(g.seed as u32)
            .u32((g.seed >> 32) as u32)
            .u32(c.use_random as u32)
            .u32(sampling as u32)
            .u32(fg_quota.min(u32::MAX as usize) as u32)
            .u32(c.batch_size_per_im.min(u32::MAX as usize) as u32)
            .output(&mut labels, rows)
            .output(&mut sampled, images);
        self.launch("rpn_sample", level_blocks(images as u32), &args)?;
        Ok(AnchorTargets {
            total,
            labels,
            deltas,
            sampled: self.download(&sampled)?,
        })
    }
}
