//! The Faster R-CNN box head's detection output on the device
//! (`device/src/rcnn_detect.rs`) for every image of a batch at once,
//! deciding exactly as core's `rcnn::bbox_head_detect`: the class logits
//! softmaxed (`softmax_rows`), each RoI decoded per class and clipped
//! (`rcnn_decode`), [`super::nms`]'s candidates, suppression and
//! `keep_top_k` with one box per entry, then the kept entries put in
//! Paddle's order (class, then RoI) and written. What comes back: each
//! image's detection rows and where each (image, class) starts.
use pulsefocus_core::backend::BoxHeadRois;
use pulsefocus_core::rcnn::RcnnConfig;
use pulsefocus_core::yolo::Detection;
use pulsefocus_gpu_device::rcnn_detect::NO_ROI;

use super::nms::{detection_lists, plan_for, KeptCandidates};
use super::{elementwise, fail, need_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

const NAME: &str = "rcnn_detect";

impl Gpu {
    /// Each image's detections, as core's `bbox_head_detect` computes them
    /// from its `rois` and their rows of `cls_score` (`[rows, C]` logits)
    /// and `bbox_pred` (`[rows, 4C]`): grouped by class, a class's by RoI,
    /// labels `1..C`.
    pub fn rcnn_detect(
        &self,
        cfg: &RcnnConfig,
        rois: &BoxHeadRois<'_>,
        cls_score: &DeviceBuffer,
        bbox_pred: &DeviceBuffer,
    ) -> Result<Vec<Vec<Detection>>, GpuError> {
        let images = rois.counts.len();
        let classes = cfg.bbox_assigner.class_nums;
        let total: usize = rois.counts.iter().sum();
        if [rois.boxes.len(), rois.rows.len()] != [total; 2]
            || [rois.scales.len(), rois.im_shapes.len()] != [images; 2]
            || rois.rows.iter().any(|&r| r >= total)
        {
            fail::<()>(
                NAME,
                format!(
                    "{} RoIs, {} rows (each below {total}), {} scales and {} im_shapes for images of {:?} RoIs",
                    rois.boxes.len(),
                    rois.rows.len(),
                    rois.scales.len(),
                    rois.im_shapes.len(),
                    rois.counts
                ),
            )?;
        }
        let m = rois.counts.iter().copied().max().unwrap_or(0);
        // The NMS plan keeps images * m * classes within 2^30, so every
        // length here fits the kernels' u32 indexing.
        let Some(p) = plan_for([images, m, classes], &cfg.nms)? else {
            return Ok(vec![Vec::new(); images]);
        };
        need_len(NAME, "cls_score", cls_score.len(), total * classes)?;
        need_len(NAME, "bbox_pred", bbox_pred.len(), total * 4 * classes)?;

        // Each image's RoIs and rows padded to m.
        let mut padded_rois = Vec::with_capacity(images * m * 4);
        let mut padded_rows = Vec::with_capacity(images * m);
        let mut first = 0;
        for &count in rois.counts {
            for k in 0..m {
                if k < count {
                    padded_rois.extend(rois.boxes[first + k]);
                    padded_rows.push(rois.rows[first + k] as u32);
                } else {
                    padded_rois.extend([0.0; 4]);
                    padded_rows.push(NO_ROI);
                }
            }
            first += count;
        }
        // As core's `box_clip`: the picture is `im_shape`'s size over its
        // scale, rounded.
        let pictures: Vec<f32> = rois
            .scales
            .iter()
            .zip(rois.im_shapes)
            .flat_map(|(&scale, &[h, w, s])| [scale, (h / s).round(), (w / s).round()])
            .collect();
        let (padded_rois, padded_rows) = (self.upload(&padded_rois)?, self.upload(&padded_rows)?);
        let pictures = self.upload(&pictures)?;
        let weights = self.upload(&cfg.bbox_assigner.bbox_reg_weights)?;

        // Softmax, then every (image, RoI, class) entry's score and box.
        let score_len = total * classes;
        let mut probs = self.alloc::<f32>(score_len)?;
        let mut args = KernelArgs::new();
        args.input(cls_score, score_len)
            .output(&mut probs, score_len)
            .u32(total as u32)
            .u32(classes as u32);
        self.launch("softmax_rows", elementwise(total as u32), &args)?;
        let entries = p.entries as usize;
        let mut scores = self.alloc::<f32>(entries)?;
        let mut boxes = self.alloc::<f32>(entries * 4)?;
        let mut args = KernelArgs::new();
        args.input(&probs, score_len)
            .input(bbox_pred, score_len * 4)
            .input(&padded_rois, images * m * 4)
            .input(&padded_rows, images * m)
            .input(&pictures, images * 3)
            .input(&weights, 4)
            .u32(p.batch)
            .u32(p.boxes_per_image)
            .u32(p.classes)
            .output(&mut scores, entries)
            .output(&mut boxes, entries * 4);
        self.launch("rcnn_decode", elementwise(p.entries), &args)?;

        // NMS, then the kept entries by (image, class, RoI), written.
        let Some(KeptCandidates {
            keys,
            values,
            keep,
            want,
            ..
        }) = self.kept_candidates(
            &p,
            &cfg.nms,
            (&boxes, entries * 4),
            (&scores, entries),
            true,
        )?
        else {
            return Ok(vec![Vec::new(); images]);
        };
        let n = keys.len();
        let padded = n as u32;
        let mut order_keys = self.alloc::<u64>(n)?;
        let mut order_values = self.alloc::<u32>(n)?;
        let mut args = KernelArgs::new();
        args.input(&keys, n)
            .input(&values, n)
            .input(&keep, n)
            .u32(want)
            .u32(p.boxes_per_image)
            .u32(padded)
            .output(&mut order_keys, n)
            .output(&mut order_values, n);
        self.launch("rcnn_order_keys", elementwise(padded), &args)?;
        self.bitonic_sort(&mut order_keys, &mut order_values)?;
        let class_bounds = self.bounds(&order_keys, p.segments)?;
        let capacity = p.capacity as usize;
        let out_len = images * capacity * 6;
        let mut out = self.alloc::<f32>(out_len.max(1))?;
        let mut args = KernelArgs::new();
        args.input(&order_keys, n)
            .input(&order_values, n)
            .input(&class_bounds, p.segments as usize + 1)
            .input(&boxes, entries * 4)
            .input(&scores, entries)
            .u32(p.classes)
            .u32(p.boxes_per_image)
            .u32(padded)
            .u32(p.capacity)
            .output(&mut out, out_len);
        self.launch("rcnn_write", elementwise(padded), &args)?;
        let class_bounds = self.download(&class_bounds)?;
        let found: Vec<u32> = class_bounds
            .iter()
            .step_by(classes)
            .collect::<Vec<_>>()
            .windows(2)
            .map(|b| b[1] - b[0])
            .collect();
        let out = self.download(&out)?;
        Ok(detection_lists(&out, &found, capacity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gpu, up, values};

    fn rois<'a>(
        boxes: &'a [[f32; 4]],
        counts: &'a [usize],
        rows: &'a [usize],
        shapes: &'a [[f32; 3]],
    ) -> BoxHeadRois<'a> {
        BoxHeadRois {
            boxes,
            counts,
            rows,
            scales: &[1.0, 2.0][..counts.len()],
            im_shapes: shapes,
        }
    }

    #[test]
    fn short_buffers_and_mismatched_rois_are_errors() {
        let gpu = gpu();
        let cfg = RcnnConfig::faster_rcnn(3);
        let boxes = [[4.0, 4.0, 20.0, 24.0], [2.0, 6.0, 30.0, 16.0], [0.0; 4]];
        let shapes = [[40.0, 40.0, 1.0]; 2];
        let cls_score = up(&gpu, &values(9, 1));
        let bbox_pred = up(&gpu, &values(35, 2));
        let detect = |r: &BoxHeadRois<'_>| gpu.rcnn_detect(&cfg, r, &cls_score, &bbox_pred);
        let err = detect(&rois(&boxes, &[1, 2], &[2, 0, 1], &shapes)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel rcnn_detect: bbox_pred has 35 elements, needs at least 36"
        );
        let err = detect(&rois(&boxes, &[1, 2], &[2, 0, 3], &shapes)).unwrap_err();
        assert!(err.to_string().contains("each below 3"), "{err}");
        let err = detect(&rois(&boxes, &[2], &[0, 1], &shapes[..1])).unwrap_err();
        assert!(err.to_string().contains("3 RoIs, 2 rows"), "{err}");
        let none = detect(&rois(&[], &[0, 0], &[], &shapes)).unwrap();
        assert_eq!(none, vec![Vec::new(), Vec::new()]);
    }
}
