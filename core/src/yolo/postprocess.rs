//! From the three head outputs of a batch to each image's final detections, as
//! PaddleDetection's YOLOv3 inference does: `yolo_box` on every level (boxes in
//! the original image's pixels), the levels' boxes concatenated, then
//! `multiclass_nms` per image.

use super::{multiclass_nms, yolo_box, DecodeConfig, Detection, NmsConfig, YoloConfig};

/// One level's raw output: `[N, anchors*(5+classes), height, width]`.
#[derive(Debug, Clone, Copy)]
pub struct LevelOutput<'a> {
    pub data: &'a [f32],
    pub height: usize,
    pub width: usize,
}

/// Detections of each image; `image_sizes` holds (height, width) in pixels of
/// the original images, so boxes come back in their coordinates.
pub fn detect(
    yolo: &YoloConfig,
    nms: &NmsConfig,
    levels: &[LevelOutput],
    image_sizes: &[[u32; 2]],
) -> Vec<Vec<Detection>> {
    let classes = yolo.num_classes;
    let decoded: Vec<_> = levels
        .iter()
        .enumerate()
        .map(|(level, out)| {
            let cfg = DecodeConfig {
                anchors: yolo.anchor_masks[level]
                    .iter()
                    .map(|&a| yolo.anchors[a])
                    .collect(),
                num_classes: classes,
                // yolo_box's own threshold equals the NMS score threshold in
                // PaddleDetection's YOLOv3 configs.
                conf_thresh: nms.score_threshold,
                downsample_ratio: yolo.downsample_ratios[level],
                clip_bbox: true,
                scale_x_y: yolo.scale_x_y,
            };
            yolo_box(&cfg, out.data, out.height, out.width, image_sizes)
        })
        .collect();

    (0..image_sizes.len())
        .map(|image| {
            let mut boxes: Vec<[f32; 4]> = Vec::new();
            let mut scores: Vec<f32> = Vec::new();
            for level in &decoded {
                let m = level.boxes_per_image;
                let level_boxes = &level.boxes[image * m * 4..(image + 1) * m * 4];
                boxes.extend(
                    level_boxes
                        .chunks_exact(4)
                        .map(|b| [b[0], b[1], b[2], b[3]]),
                );
                scores.extend_from_slice(
                    &level.scores[image * m * classes..(image + 1) * m * classes],
                );
            }
            multiclass_nms(nms, &boxes, &scores, classes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One class, one strong prediction on each of two levels at the same place:
    /// NMS keeps the better one, in original-image pixels.
    #[test]
    fn levels_are_merged_before_nms() {
        let yolo = YoloConfig {
            anchors: vec![[32.0, 32.0], [64.0, 64.0]],
            anchor_masks: vec![vec![1], vec![0]],
            num_classes: 1,
            ignore_thresh: 0.7,
            label_smooth: false,
            downsample_ratios: vec![64, 32],
            scale_x_y: 1.0,
        };
        // Level 0: 1x1 grid on a 64 px input, anchor 64: box covers the image.
        let level0 = [0.0, 0.0, 0.0, 0.0, 4.0, 4.0];
        // Level 1: 2x2 grid, anchor 32, only cell (0,0) confident, box 2x wide.
        let mut level1 = vec![0.0f32; 6 * 4];
        level1[2 * 4] = 2f32.ln(); // tw at cell 0
        level1[3 * 4] = 2f32.ln(); // th at cell 0
        for cell in 0..4 {
            level1[4 * 4 + cell] = -10.0; // objectness off
        }
        level1[4 * 4] = 2.0; // cell 0 on, weaker than level 0
        level1[5 * 4] = 2.0;
        let nms = NmsConfig {
            normalized: false,
            ..NmsConfig::yolov3()
        };
        let dets = detect(
            &yolo,
            &nms,
            &[
                LevelOutput {
                    data: &level0,
                    height: 1,
                    width: 1,
                },
                LevelOutput {
                    data: &level1,
                    height: 2,
                    width: 2,
                },
            ],
            &[[128, 128]],
        );
        assert_eq!(dets.len(), 1);
        // Level 0's box: centre 64, size 128 -> clipped to [0, 127]; level 1's
        // box: centre 32, size 128 -> [-32, 96] clipped to [0, 96]; IoU > 0.45.
        assert_eq!(dets[0].len(), 1, "{:?}", dets[0]);
        let d = dets[0][0];
        assert_eq!(d.bbox, [0.0, 0.0, 127.0, 127.0]);
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        assert!((d.score - sig(4.0) * sig(4.0)).abs() < 1e-6);
    }
}
