//! YOLOv3 prediction on the device: every head level decoded
//! (`device/src/yolo_decode.rs`, Paddle's `yolo_box`) into one box list per
//! image, then multiclass NMS ([`super::nms`]); what core's `yolo::detect`
//! does on the CPU, with only the detections downloaded.
use pulsefocus_core::yolo::{Detection, NmsConfig, YoloConfig};

use super::{elementwise, index_count, need_len, PlanError};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    /// PaddleDetection's YOLOv3 prediction, as core's `yolo::detect`:
    /// `heads` are each level's output (`[N, anchors * (5 + classes), H,
    /// W]`) with its grid height and width; each is decoded with its anchors
    /// (objectness threshold = the NMS score threshold, boxes clipped) into
    /// the image's box list, level after level, then Paddle's
    /// `multiclass_nms` runs per image. `image_sizes` are each image's
    /// (height, width); boxes come out in those pixels.
    pub fn yolo_detect(
        &self,
        cfg: &YoloConfig,
        heads: &[(&DeviceBuffer, usize, usize)],
        image_sizes: &[[u32; 2]],
        nms: &NmsConfig,
    ) -> Result<Vec<Vec<Detection>>, GpuError> {
        const NAME: &str = "yolo_decode";
        let batch = image_sizes.len();
        if heads.len() != cfg.anchor_masks.len() || heads.len() != cfg.downsample_ratios.len() {
            return Err(PlanError {
                kernel: NAME,
                message: format!(
                    "{} head outputs for {} anchor masks and {} downsample ratios",
                    heads.len(),
                    cfg.anchor_masks.len(),
                    cfg.downsample_ratios.len()
                ),
            }
            .into());
        }
        let classes = cfg.num_classes;
        let boxes_per_image: usize = heads
            .iter()
            .zip(&cfg.anchor_masks)
            .map(|(&(_, h, w), mask)| mask.len() * h * w)
            .sum();
        if super::nms::plan_for([batch, boxes_per_image, classes], nms)?.is_none() {
            return Ok(vec![Vec::new(); batch]);
        }
        let (box_len, score_len) = (
            batch * boxes_per_image * 4,
            batch * boxes_per_image * classes,
        );
        let sizes: Vec<f32> = image_sizes
            .iter()
            .flat_map(|&[h, w]| [h as f32, w as f32])
            .collect();
        let sizes = self.upload(&sizes)?;
        let mut boxes = self.alloc::<f32>(box_len)?;
        let mut scores = self.alloc::<f32>(score_len)?;
        let mut first_box = 0;
        for (level, &(x, grid_h, grid_w)) in heads.iter().enumerate() {
            let mask = &cfg.anchor_masks[level];
            let anchors: Vec<f32> = mask.iter().flat_map(|&a| cfg.anchors[a]).collect();
            let anchors = self.upload(&anchors)?;
            let x_len = batch * cfg.head_channels(level) * grid_h * grid_w;
            need_len(NAME, "head output", x.len(), x_len)?;
            let level_boxes = mask.len() * grid_h * grid_w;
            let mut args = KernelArgs::new();
            args.input(x, x_len)
                .input(&sizes, 2 * batch)
                .input(&anchors, 2 * mask.len())
                .output(&mut boxes, box_len)
                .output(&mut scores, score_len)
                .u32(batch as u32)
                .u32(mask.len() as u32)
                .u32(classes as u32)
                .u32(grid_h as u32)
                .u32(grid_w as u32)
                .u32(index_count(
                    NAME,
                    "downsample ratio",
                    cfg.downsample_ratios[level],
                )?)
                .u32(first_box as u32)
                .u32(boxes_per_image as u32)
                .f32(nms.score_threshold)
                .f32(cfg.scale_x_y)
                .u32(1);
            let threads = index_count(NAME, "boxes", batch * level_boxes)?;
            self.launch(NAME, elementwise(threads), &args)?;
            first_box += level_boxes;
        }
        self.multiclass_nms(&boxes, &scores, [batch, boxes_per_image, classes], nms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::values;
    use crate::GpuBackend;
    use proptest::prelude::*;
    use pulsefocus_core::backend::HeadOutput;
    use pulsefocus_core::{Backend, CpuBackend};

    fn bits(d: &[Vec<Detection>]) -> Vec<Vec<(usize, u32, [u32; 4])>> {
        d.iter()
            .map(|image| {
                image
                    .iter()
                    .map(|d| (d.class, d.score.to_bits(), d.bbox.map(f32::to_bits)))
                    .collect()
            })
            .collect()
    }

    /// `yolo_detect` of the emulated GPU backend and of the CPU backend on
    /// the same heads (in buffers longer than the tensors).
    fn both(
        cfg: &YoloConfig,
        grids: &[(usize, usize)],
        heads: &[Vec<f32>],
        sizes: &[[u32; 2]],
        nms: &NmsConfig,
    ) -> (Vec<Vec<Detection>>, Vec<Vec<Detection>>) {
        let gpu = GpuBackend::emulated().unwrap();
        let bufs: Vec<(Vec<f32>, DeviceBuffer)> = heads
            .iter()
            .map(|h| {
                let mut longer = h.clone();
                longer.extend([f32::NAN; 7]);
                let mut buf = gpu.alloc(longer.len());
                gpu.upload(&longer, &mut buf);
                (longer, buf)
            })
            .collect();
        let cpu_heads: Vec<HeadOutput<Vec<f32>>> = bufs
            .iter()
            .zip(grids)
            .map(|((buf, _), &(height, width))| HeadOutput { buf, height, width })
            .collect();
        let gpu_heads: Vec<HeadOutput<DeviceBuffer>> = bufs
            .iter()
            .zip(grids)
            .map(|((_, buf), &(height, width))| HeadOutput { buf, height, width })
            .collect();
        let want = CpuBackend.yolo_detect(cfg, &cpu_heads, sizes, nms);
        let got = gpu.yolo_detect(cfg, &gpu_heads, sizes, nms);
        gpu.check().unwrap();
        (got, want)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]
        /// The GPU backend's detections (decode and NMS on the emulated
        /// device) equal the CPU backend's to the bit, in the same order:
        /// random heads with logits from a few levels (so that scores tie and
        /// boxes coincide), non-square grids, PaddleDetection's settings and
        /// small top-k limits.
        #[test]
        fn gpu_backend_yolo_detect_equals_the_cpu_backend(
            batch in 1usize..3,
            classes in 1usize..4,
            salt in 0u32..1000,
            levels in 2u8..8,
            nms_top_k in prop_oneof![Just(Some(1000usize)), (1usize..6).prop_map(Some), Just(None)],
            keep_top_k in prop_oneof![Just(Some(100usize)), (0usize..8).prop_map(Some), Just(None)],
        ) {
            let cfg = YoloConfig::yolov3(classes);
            let grids = [(2, 3), (4, 6), (8, 12)];
            let heads: Vec<Vec<f32>> = grids
                .iter()
                .enumerate()
                .map(|(level, &(h, w))| {
                    values(batch * cfg.head_channels(level) * h * w, salt + level as u32)
                        .iter()
                        .map(|v| ((v * levels as f32).round() - 0.5) * 1.5)
                        .collect()
                })
                .collect();
            let sizes: Vec<[u32; 2]> = (0..batch as u32).map(|i| [96 + 37 * i, 64 + 11 * i]).collect();
            let nms = NmsConfig { nms_top_k, keep_top_k, ..NmsConfig::yolov3() };
            let (got, want) = both(&cfg, &grids, &heads, &sizes, &nms);
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }

    #[test]
    fn no_detections_above_the_threshold_and_a_background_class() {
        let cfg = YoloConfig::yolov3(2);
        let grids = [(1, 1), (2, 2), (4, 4)];
        // Objectness logits of -10 everywhere: nothing passes 0.01.
        let heads: Vec<Vec<f32>> = grids
            .iter()
            .enumerate()
            .map(|(level, &(h, w))| vec![-10.0; cfg.head_channels(level) * h * w])
            .collect();
        let (got, want) = both(&cfg, &grids, &heads, &[[50, 60]], &NmsConfig::yolov3());
        assert_eq!(got, vec![Vec::new()]);
        assert_eq!(got, want);

        let heads: Vec<Vec<f32>> = heads
            .iter()
            .map(|h| {
                h.iter()
                    .enumerate()
                    .map(|(i, _)| (i % 5) as f32 - 2.0)
                    .collect()
            })
            .collect();
        let nms = NmsConfig {
            background_label: Some(0),
            ..NmsConfig::yolov3()
        };
        let (got, want) = both(&cfg, &grids, &heads, &[[50, 60]], &nms);
        assert!(!got[0].is_empty() && got[0].iter().all(|d| d.class == 1));
        assert_eq!(bits(&got), bits(&want));
    }
}
