//! Class-aware NMS on the device (`device/src/nms.rs`): sort keys, a
//! bitonic sort, per-class candidates picked on the host, then the 64-box
//! bitmask and the greedy reduce.
use pulsefocus_gpu_device::nms::{NMS_BLOCK, NMS_MAX_BOXES, NMS_REDUCE_THREADS};

use super::{elementwise, fail, index_count, need_len, LaunchShape, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

/// Paddle `multiclass_nms` settings (YOLOv3: score 0.01, top_k 1000, keep 100, IoU 0.45).
#[derive(Clone, Copy, Debug)]
pub struct NmsOptions {
    pub score_thresh: f32,
    pub iou_thresh: f32,
    pub top_k: u32,
    pub keep_top_k: u32,
    /// 1 for Paddle's `normalized: false` (pixel boxes, +1 in widths), else 0.
    pub pixel_offset: f32,
    /// Added per class index to the coordinates so classes never overlap:
    /// more than the largest coordinate.
    pub class_offset: f32,
}

/// NMS over `candidates` boxes: the sort length and the mask grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NmsPlan {
    /// Scores sorted (a power of two at least the score count).
    pub padded: u32,
    pub col_blocks: u32,
}

pub fn plan(scores: usize, top_k: u32) -> Result<NmsPlan, PlanError> {
    let count = index_count("nms", "scores", scores)?;
    if count == 0 {
        return fail("nms", "no scores".into());
    }
    if top_k == 0 || top_k > NMS_MAX_BOXES {
        return fail("nms", format!("top_k {top_k} is outside 1..={NMS_MAX_BOXES} (the on-device reduce keeps one bit per candidate in shared memory)"));
    }
    let padded = count.checked_next_power_of_two().ok_or(PlanError {
        kernel: "nms",
        message: format!("{count} scores is too many to sort"),
    })?;
    Ok(NmsPlan {
        padded,
        col_blocks: top_k.min(count).div_ceil(NMS_BLOCK),
    })
}

/// The `(j, k)` stages of the bitonic sort of `padded` keys, in launch order.
pub fn bitonic_stages(padded: u32) -> Vec<(u32, u32)> {
    let mut stages = Vec::new();
    let mut k = 2;
    while k <= padded {
        let mut j = k / 2;
        while j > 0 {
            stages.push((j, k));
            j /= 2;
        }
        k *= 2;
    }
    stages
}

pub fn mask_shape(candidates: u32) -> LaunchShape {
    let blocks = candidates.div_ceil(NMS_BLOCK);
    LaunchShape {
        grid: (blocks, blocks, 1),
        block: (NMS_BLOCK, 1, 1),
    }
}

pub const REDUCE_SHAPE: LaunchShape = LaunchShape {
    grid: (1, 1, 1),
    block: (NMS_REDUCE_THREADS, 1, 1),
};

impl Gpu {
    /// Class-aware NMS of one image on the device: candidates are the
    /// (box, class) entries of `scores [boxes, classes]` above
    /// `options.score_thresh`, the best `top_k` of each class (as Paddle's
    /// `multiclass_nms`); returns the kept entries' indices into `scores`,
    /// best first, at most `keep_top_k`.
    pub fn nms(
        &self,
        boxes: &DeviceBuffer,
        scores: &DeviceBuffer,
        classes: u32,
        options: &NmsOptions,
    ) -> Result<Vec<u32>, GpuError> {
        let o = options;
        let count = index_count("nms", "scores", scores.len())?;
        let box_len = 4 * (scores.len() / classes.max(1) as usize);
        need_len("nms", "boxes", boxes.len(), box_len)?;
        let nms_plan = plan(scores.len(), o.top_k)?;
        let padded = nms_plan.padded;
        let n = padded as usize;
        let mut keys = self.alloc::<f32>(n)?;
        let mut order = self.alloc::<u32>(n)?;
        let mut args = KernelArgs::new();
        args.input(scores, count as usize)
            .u32(count)
            .u32(padded)
            .f32(o.score_thresh)
            .output(&mut keys, n)
            .output(&mut order, n);
        self.launch("nms_sort_keys", elementwise(padded), &args)?;
        for (j, k) in bitonic_stages(padded) {
            let mut args = KernelArgs::new();
            args.output(&mut keys, n)
                .output(&mut order, n)
                .u32(padded)
                .u32(j)
                .u32(k);
            self.launch("bitonic_sort_step", elementwise(padded / 2), &args)?;
        }
        // The candidates: each class's best top_k above the threshold, as
        // Paddle's multiclass_nms takes them (picked on the host from the
        // sorted keys; the mask and reduce then work on this list).
        let sorted = self.download(&keys)?;
        let sorted_order = self.download(&order)?;
        let selected = pulsefocus_gpu_device::nms::per_class_candidates(
            &sorted,
            &sorted_order,
            classes,
            o.top_k,
        );
        if selected.is_empty() {
            return Ok(Vec::new());
        }
        let candidates = selected.len() as u32;
        let c = selected.len();
        let order = self.upload(&selected)?;
        let mut gathered = self.alloc::<f32>(4 * c)?;
        let mut args = KernelArgs::new();
        args.input(boxes, box_len)
            .input(&order, c)
            .u32(candidates)
            .u32(classes)
            .f32(o.class_offset)
            .output(&mut gathered, 4 * c);
        self.launch("nms_gather_boxes", elementwise(candidates), &args)?;
        let col_blocks = candidates.div_ceil(NMS_BLOCK);
        let mask_len = (candidates * col_blocks) as usize;
        let mut mask = self.alloc::<u64>(mask_len)?;
        let mut args = KernelArgs::new();
        args.input(&gathered, 4 * c)
            .u32(candidates)
            .f32(o.iou_thresh)
            .f32(o.pixel_offset)
            .output(&mut mask, mask_len);
        self.launch("nms_mask", mask_shape(candidates), &args)?;
        let keep_len = o.keep_top_k.max(1) as usize;
        let mut keep = self.alloc::<u32>(keep_len)?;
        let mut kept = self.upload(&[0u32])?;
        let mut args = KernelArgs::new();
        args.input(&mask, mask_len)
            .u32(candidates)
            .u32(o.keep_top_k)
            .output(&mut keep, keep_len)
            .output(&mut kept, 1);
        self.launch("nms_reduce", REDUCE_SHAPE, &args)?;
        let kept = self.download(&kept)?[0] as usize;
        let keep = self.download(&keep)?;
        Ok(keep[..kept.min(keep.len())]
            .iter()
            .filter_map(|&rank| selected.get(rank as usize).copied())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_plan_and_sort_stages() {
        assert_eq!(
            plan(1000, 1000).unwrap(),
            NmsPlan {
                padded: 1024,
                col_blocks: 16
            }
        );
        assert_eq!(
            plan(5, 1000).unwrap(),
            NmsPlan {
                padded: 8,
                col_blocks: 1
            }
        );
        assert!(plan(10, 40_000).is_err());
        assert_eq!(
            bitonic_stages(8),
            vec![(1, 2), (2, 4), (1, 4), (4, 8), (2, 8), (1, 8)]
        );
    }
}
