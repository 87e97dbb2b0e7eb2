//! YOLOv3 box decoding (Paddle's `yolo_box`), one thread per (image, anchor,
//! cell): the grid offset comes from the thread index, so no grid tensor
//! exists. The arithmetic is `pulsefocus_core::yolo::yolo_box`'s, operation
//! for operation, so that under the emulator (std `exp`) the boxes and scores
//! are bit-identical to the CPU's and NMS decides exactly as it does there;
//! on a GPU only `exp` (`ex2.approx`) differs.
//!
//! Head layout: `[N, anchors * (5 + classes), grid_h, grid_w]`, per anchor the
//! channels tx, ty, tw, th, objectness, class logits.
use crate::{grid_stride, kernel, math};

kernel! {
    /// Paddle `yolo_box` for one level, written into the boxes of all levels:
    /// this level's box `b` of image `n` (`b = anchor * H * W + row * W +
    /// column`) is row `n * boxes_per_image + first_box + b` of `boxes [N,
    /// boxes_per_image, 4]` (x1, y1, x2, y2 in image pixels, `image_size [N,
    /// 2]` = height, width; clipped to the image when `clip` is non-zero) and
    /// of `scores [N, boxes_per_image, classes]` (objectness x class
    /// probability); both all zero where objectness < `conf_thresh`.
    /// `anchors [num_anchors, 2]`: this level's (width, height) in input pixels.
    pub fn yolo_decode(ctx, x: *const f32, image_size: *const f32, anchors: *const f32,
        boxes: *mut f32, scores: *mut f32,
        batch: u32, num_anchors: u32, classes: u32, grid_h: u32, grid_w: u32, downsample: u32,
        first_box: u32, boxes_per_image: u32, conf_thresh: f32, scale_x_y: f32, clip: u32) {
        let plane = grid_h * grid_w;
        let level_boxes = num_anchors * plane;
        grid_stride(ctx, batch * level_boxes, |i| {
            let i = i as u32;
            let (n, b) = (i / level_boxes, i % level_boxes);
            let (a, p) = (b / plane, b % plane);
            let (k, l) = (p / grid_w, p % grid_w);
            let plane = plane as usize;
            // The cell's tx; the next channels are `plane` apart.
            let at = ((n * num_anchors + a) * (5 + classes)) as usize * plane + p as usize;
            let row = (n * boxes_per_image + first_box + b) as usize;
            let out_box = boxes.add(row * 4);
            let out_scores = scores.add(row * classes as usize);
            let confidence = math::sigmoid(*x.add(at + 4 * plane));
            if confidence < conf_thresh {
                let mut c = 0;
                while c < 4 { *out_box.add(c) = 0.0; c += 1; }
                let mut c = 0;
                while c < classes as usize { *out_scores.add(c) = 0.0; c += 1; }
                return;
            }
            let image_h = *image_size.add(2 * n as usize);
            let image_w = *image_size.add(2 * n as usize + 1);
            let (anchor_w, anchor_h) = (*anchors.add(2 * a as usize), *anchors.add(2 * a as usize + 1));
            let input_h = (downsample * grid_h) as f32;
            let input_w = (downsample * grid_w) as f32;
            let bias = -0.5 * (scale_x_y - 1.0);
            let cx = (l as f32 + math::sigmoid(*x.add(at)) * scale_x_y + bias) * image_w / grid_w as f32;
            let cy = (k as f32 + math::sigmoid(*x.add(at + plane)) * scale_x_y + bias) * image_h
                / grid_h as f32;
            let w = math::exp(*x.add(at + 2 * plane)) * anchor_w * image_w / input_w;
            let h = math::exp(*x.add(at + 3 * plane)) * anchor_h * image_h / input_h;
            let (mut x1, mut y1, mut x2, mut y2) = (cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0);
            if clip != 0 {
                x1 = x1.max(0.0);
                y1 = y1.max(0.0);
                x2 = x2.min(image_w - 1.0);
                y2 = y2.min(image_h - 1.0);
            }
            *out_box = x1;
            *out_box.add(1) = y1;
            *out_box.add(2) = x2;
            *out_box.add(3) = y2;
            let mut c = 0;
            while c < classes as usize {
                *out_scores.add(c) = confidence * math::sigmoid(*x.add(at + (5 + c) * plane));
                c += 1;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;
    use pulsefocus_core::yolo::{yolo_box, DecodeConfig};

    proptest! {
        /// Two levels decoded into one box list, each level's rows equal, to
        /// the bit, to the CPU's `yolo_box` of that level (the emulator's
        /// `exp` is std's, as the CPU's).
        #[test]
        fn decode_equals_the_cpu_yolo_box(n in 1usize..3, classes in 1usize..4, anchors in 1usize..4,
            grids in prop::collection::vec((1usize..6, 1usize..6), 2), conf in 0.0f32..0.6,
            scale_x_y in prop_oneof![Just(1.0f32), 1.0f32..1.2], clip: bool, seed in 0u32..1000) {
            let sizes: Vec<[u32; 2]> = (0..n as u32).map(|i| [300 + 20 * i, 400 - 10 * i]).collect();
            let size_buf: Vec<f32> = sizes.iter().flat_map(|s| [s[0] as f32, s[1] as f32]).collect();
            let boxes_per_image: usize = grids.iter().map(|(h, w)| anchors * h * w).sum();
            let boxes = DeviceBuf::filled(n * boxes_per_image * 4, f32::NAN);
            let scores = DeviceBuf::filled(n * boxes_per_image * classes, f32::NAN);
            let mut want_boxes = vec![Vec::new(); n];
            let mut want_scores = vec![Vec::new(); n];
            let mut first_box = 0;
            for (level, &(gh, gw)) in grids.iter().enumerate() {
                let downsample = 32 >> level;
                let level_anchors: Vec<[f32; 2]> = (0..anchors)
                    .map(|a| [10.0 + 37.0 * a as f32 + level as f32, 13.0 + 29.0 * a as f32])
                    .collect();
                let len = n * anchors * (5 + classes) * gh * gw;
                let x: Vec<f32> = (0..len as u32)
                    .map(|i| ((i * 7919 + seed + level as u32 * 31) % 601) as f32 / 150.0 - 2.0)
                    .collect();
                let (xb, ib) = (DeviceBuf::new(&x), DeviceBuf::new(&size_buf));
                let ab = DeviceBuf::new(&level_anchors.concat());
                launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                    yolo_decode(c, xb.ptr(), ib.ptr(), ab.ptr(), boxes.ptr(), scores.ptr(), n as u32,
                        anchors as u32, classes as u32, gh as u32, gw as u32, downsample,
                        first_box as u32, boxes_per_image as u32, conf, scale_x_y, clip as u32)
                });
                let cfg = DecodeConfig {
                    anchors: level_anchors,
                    num_classes: classes,
                    conf_thresh: conf,
                    downsample_ratio: downsample as usize,
                    clip_bbox: clip,
                    scale_x_y,
                };
                let want = yolo_box(&cfg, &x, gh, gw, &sizes);
                let m = want.boxes_per_image;
                for i in 0..n {
                    want_boxes[i].extend_from_slice(&want.boxes[i * m * 4..(i + 1) * m * 4]);
                    want_scores[i].extend_from_slice(&want.scores[i * m * classes..(i + 1) * m * classes]);
                }
                first_box += m;
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&boxes.to_vec()), bits(&want_boxes.concat()));
            prop_assert_eq!(bits(&scores.to_vec()), bits(&want_scores.concat()));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Decode of three levels and NMS through the kernels, on random
        /// heads with logits from a few levels (so that scores tie and boxes
        /// coincide), equal to the bit to the CPU's `yolo::detect`.
        #[test]
        fn decode_and_nms_equal_the_cpu_detect(n in 1usize..3, classes in 1usize..4,
            logits in prop::collection::vec(0u8..6, 3 * 9 * 4 * 4 * 2 + 3 * 9 * 2 * 2 * 2 + 3 * 9 * 2),
            nms_top_k in prop::option::of(1usize..8), keep_top_k in prop::option::of(1usize..12),
            score_threshold in prop_oneof![Just(0.01f32), 0.0f32..0.6], normalized: bool) {
            use pulsefocus_core::yolo::{detect, Head, NmsConfig, YoloConfig};
            let mut cfg = YoloConfig::yolov3(classes);
            cfg.scale_x_y = 1.05;
            let grids = [1usize, 2, 4];
            let sizes: Vec<[u32; 2]> = (0..n as u32).map(|i| [64 + 40 * i, 96 - 8 * i]).collect();
            let nms = NmsConfig { score_threshold, nms_top_k, keep_top_k, nms_threshold: 0.45, normalized, background_label: None };
            let heads: Vec<Vec<f32>> = grids.iter().enumerate().map(|(level, &g)| {
                (0..n * cfg.head_channels(level) * g * g).map(|i| logits[i % logits.len()] as f32 - 2.5).collect()
            }).collect();
            let cpu_heads: Vec<Head> = heads.iter().zip(grids).map(|(d, g)| Head { data: d, batch: n, height: g, width: g }).collect();
            let want = detect(&cfg, &cpu_heads, &sizes, &nms);

            let boxes_per_image: usize = grids.iter().map(|g| 3 * g * g).sum();
            let boxes = DeviceBuf::filled(n * boxes_per_image * 4, f32::NAN);
            let scores = DeviceBuf::filled(n * boxes_per_image * classes, f32::NAN);
            let size_buf = DeviceBuf::new(&sizes.iter().flat_map(|s| [s[0] as f32, s[1] as f32]).collect::<Vec<_>>());
            let mut first_box = 0;
            for (level, &g) in grids.iter().enumerate() {
                let anchors: Vec<f32> = cfg.anchor_masks[level].iter().flat_map(|&a| cfg.anchors[a]).collect();
                let (xb, ab) = (DeviceBuf::new(&heads[level]), DeviceBuf::new(&anchors));
                launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                    yolo_decode(c, xb.ptr(), size_buf.ptr(), ab.ptr(), boxes.ptr(), scores.ptr(), n as u32, 3,
                        classes as u32, g as u32, g as u32, cfg.downsample_ratios[level] as u32,
                        first_box as u32, boxes_per_image as u32, nms.score_threshold, cfg.scale_x_y, 1)
                });
                first_box += 3 * g * g;
            }
            let got = crate::nms::emulated::multiclass_nms(&nms, &boxes, &scores, n, classes);
            let bits = |d: &[Vec<pulsefocus_core::yolo::Detection>]| -> Vec<Vec<(usize, u32, [u32; 4])>> {
                d.iter().map(|i| i.iter().map(|d| (d.class, d.score.to_bits(), d.bbox.map(f32::to_bits))).collect()).collect()
            };
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
