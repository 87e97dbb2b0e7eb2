//! The Faster R-CNN box head's detection output on the device, for every
//! image of a batch at once, deciding exactly as core's
//! `rcnn::bbox_head_detect` does per image. The softmax is `ssd_decode.rs`'s
//! `softmax_rows`; the candidates, sort, suppression and `keep_top_k` are
//! `nms.rs`'s steps 1-5 with one box per (image, class, RoI) entry:
//!
//! 1. `softmax_rows` of the class logits (the device's rows).
//! 2. `rcnn_decode`: for image `n`, RoI `m < M` (the most RoIs of an image;
//!    an image's own RoIs first, the rest padding) and class `c`, the
//!    probability gathered from the RoI's row into `scores [N, M, C]` (NaN
//!    for padding: never a candidate) and the RoI decoded with the class's
//!    deltas and clipped into `boxes [N, C, M, 4]`, row `(n * C + c) * M +
//!    m`: the NMS entry's own number, so `nms_suppress` reads it with one
//!    class of one box per image.
//! 3. `nms.rs` steps 1-5: each (image, class)'s candidates best first
//!    (equal scores by RoI), suppressed (pixel IoU), and with a
//!    `keep_top_k` each image's best flagged, ties by class then RoI (the
//!    CPU's stable sort over its class-by-class, RoI-ordered survivors).
//! 4. `rcnn_order_keys`, the sort again and `nms_bounds` per (image,
//!    class): the kept entries by image, class and RoI, since Paddle lists
//!    a class's detections by RoI; `rcnn_write` writes them.
use crate::nms::NOT_A_CANDIDATE;
use crate::proposals::{decode_proposal, quad};
use crate::{grid_stride, kernel};

/// `rows` entry of a padding RoI.
pub const NO_ROI: u32 = u32::MAX;

kernel! {
    /// Step 2, for entry `i = (n * M + m) * C + c` of `images * M * C`: RoI
    /// `m` of image `n` (`rois [N * M, 4]`, resized-input pixels) has its
    /// outputs in row `rows[n * M + m]` of `probs [R, C]` (softmaxed) and
    /// `deltas [R, 4C]`, or is padding (`NO_ROI`). `scores[i]` = its class
    /// `c` probability; box `(n * C + c) * M + m` of `boxes` = the RoI
    /// divided by the image's scale, decoded with class `c`'s deltas and
    /// `weights [4]` (core's `box_coder::decode` of pixel boxes) and clipped
    /// to the picture (`pictures [N, 3]`: scale, then the picture's height
    /// and width, rounded as core's `box_clip` rounds them). Padding writes
    /// NaN.
    pub fn rcnn_decode(ctx, probs: *const f32, deltas: *const f32, rois: *const f32,
        rows: *const u32, pictures: *const f32, weights: *const f32, images: u32,
        boxes_per_image: u32, classes: u32, scores: *mut f32, boxes: *mut f32) {
        grid_stride(ctx, images * boxes_per_image * classes, |i| {
            let (nm, c) = (i as u32 / classes, i as u32 % classes);
            let (n, m) = (nm / boxes_per_image, nm % boxes_per_image);
            let row = *rows.add(nm as usize);
            let out = boxes.add((((n * classes + c) * boxes_per_image + m) * 4) as usize);
            if row == NO_ROI {
                *scores.add(i) = f32::NAN;
                let mut k = 0;
                while k < 4 { *out.add(k) = f32::NAN; k += 1; }
                return;
            }
            *scores.add(i) = *probs.add((row * classes + c) as usize);
            let picture = pictures.add(n as usize * 3);
            let (scale, height, width) = (*picture, *picture.add(1), *picture.add(2));
            let roi = quad(rois, nm);
            let prior = [roi[0] / scale, roi[1] / scale, roi[2] / scale, roi[3] / scale];
            let b = decode_proposal(prior, quad(weights, 0), quad(deltas, row * classes + c), f32::INFINITY);
            let clip = |v: f32, size: f32| v.min(size - 1.0).max(0.0);
            *out = clip(b[0], width);
            *out.add(1) = clip(b[1], height);
            *out.add(2) = clip(b[2], width);
            *out.add(3) = clip(b[3], height);
        });
    }
}

kernel! {
    /// Step 4a, after `nms.rs` step 5 (or 4): sorted position `p` of the
    /// NMS sort (`keys`, `values`) flagged `want` in `keep` gets `keys2[p] =
    /// segment << 32 | RoI` (`values[p] % boxes_per_image`), any other not
    /// a candidate; `values2[p] = values[p]`.
    pub fn rcnn_order_keys(ctx, keys: *const u64, values: *const u32, keep: *const u32, want: u32,
        boxes_per_image: u32, padded: u32, keys2: *mut u64, values2: *mut u32) {
        grid_stride(ctx, padded, |p| {
            let key = *keys.add(p);
            let v = *values.add(p);
            let mut key2 = NOT_A_CANDIDATE;
            // Only candidates have a `keep` flag.
            if key != NOT_A_CANDIDATE && *keep.add(p) == want {
                key2 = ((key >> 32) << 32) | (v % boxes_per_image) as u64;
            }
            *keys2.add(p) = key2;
            *values2.add(p) = v;
        });
    }
}

kernel! {
    /// Step 4b, after sorting `keys`/`values` (`rcnn_order_keys`'s) and
    /// `bounds` (`nms_bounds` over the `images * classes` segments):
    /// position `j` holding image `n`'s kept entry `v` of rank `j -
    /// bounds[n * classes]` below `capacity` writes row `[class, score, x1,
    /// y1, x2, y2]` of `detections [N, capacity, 6]`: the box is row `v` of
    /// `boxes`, the score from `scores [N, M, C]`.
    pub fn rcnn_write(ctx, keys: *const u64, values: *const u32, bounds: *const u32,
        boxes: *const f32, scores: *const f32, classes: u32, boxes_per_image: u32, padded: u32,
        capacity: u32, detections: *mut f32) {
        grid_stride(ctx, padded, |j| {
            let key = *keys.add(j);
            if key != NOT_A_CANDIDATE {
                let segment = (key >> 32) as u32;
                let (n, c) = (segment / classes, segment % classes);
                let rank = j as u32 - *bounds.add((n * classes) as usize);
                if rank < capacity {
                    let v = *values.add(j);
                    let m = v % boxes_per_image;
                    let b = quad(boxes, v);
                    let d = detections.add(((n * capacity + rank) * 6) as usize);
                    *d = c as f32;
                    *d.add(1) = *scores.add(((n * boxes_per_image + m) * classes + c) as usize);
                    *d.add(2) = b[0];
                    *d.add(3) = b[1];
                    *d.add(4) = b[2];
                    *d.add(5) = b[3];
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use crate::nms::emulated::{bounds, kept, sort, Kept};
    use crate::ssd_decode::softmax_rows;
    use proptest::prelude::*;
    use pulsefocus_core::box_coder::BoxXyxy;
    use pulsefocus_core::rcnn::{bbox_head_detect, RcnnConfig};
    use pulsefocus_core::yolo::Detection;

    const GRID: Dim3 = Dim3::x(3);
    const BLOCK: Dim3 = Dim3::x(32);

    /// One image: its RoIs, scale and `im_shape`.
    type Image = (Vec<BoxXyxy>, f32, [f32; 3]);

    /// The kernels' launch sequence (what `ops::rcnn_detect` does with a
    /// GPU): each image's detections from the outputs' `rows` (`rows[i]`:
    /// the row of the batch's RoI `i`).
    fn device_detect(
        cfg: &RcnnConfig,
        images: &[Image],
        rows: &[usize],
        cls_score: &[f32],
        bbox_pred: &[f32],
    ) -> Vec<Vec<Detection>> {
        let classes = cfg.bbox_assigner.class_nums as u32;
        let m = images.iter().map(|i| i.0.len()).max().unwrap() as u32;
        let batch = images.len() as u32;
        let mut padded_rois = Vec::new();
        let mut padded_rows = Vec::new();
        let mut first = 0;
        for (rois, _, _) in images {
            for k in 0..m as usize {
                padded_rois.extend(rois.get(k).copied().unwrap_or([0.0; 4]));
                padded_rows.push(if k < rois.len() {
                    rows[first + k] as u32
                } else {
                    NO_ROI
                });
            }
            first += rois.len();
        }
        let pictures: Vec<f32> = images
            .iter()
            .flat_map(|&(_, scale, [h, w, s])| [scale, (h / s).round(), (w / s).round()])
            .collect();
        let probs = DeviceBuf::filled(cls_score.len(), f32::NAN);
        let logits = DeviceBuf::new(cls_score);
        launch_independent(GRID, BLOCK, |c| unsafe {
            softmax_rows(
                c,
                logits.ptr(),
                probs.ptr(),
                (cls_score.len() as u32) / classes,
                classes,
            )
        });
        let entries = (batch * m * classes) as usize;
        let scores = DeviceBuf::filled(entries, 7.0f32);
        let boxes = DeviceBuf::filled(entries * 4, 7.0f32);
        let (deltas, rois) = (DeviceBuf::new(bbox_pred), DeviceBuf::new(&padded_rois));
        let (rows, pictures) = (DeviceBuf::new(&padded_rows), DeviceBuf::new(&pictures));
        let weights = DeviceBuf::new(&cfg.bbox_assigner.bbox_reg_weights);
        launch_independent(GRID, BLOCK, |c| unsafe {
            rcnn_decode(
                c,
                probs.ptr(),
                deltas.ptr(),
                rois.ptr(),
                rows.ptr(),
                pictures.ptr(),
                weights.ptr(),
                batch,
                m,
                classes,
                scores.ptr(),
                boxes.ptr(),
            )
        });
        let Some(Kept {
            keys,
            values,
            keep,
            want,
            capacity,
            ..
        }) = kept(&cfg.nms, &boxes, &scores, [batch, classes, m], true)
        else {
            return vec![Vec::new(); images.len()];
        };
        let padded = keys.len() as u32;
        let keys2 = DeviceBuf::filled(padded as usize, 0u64);
        let values2 = DeviceBuf::filled(padded as usize, 0u32);
        launch_independent(GRID, BLOCK, |c| unsafe {
            rcnn_order_keys(
                c,
                keys.ptr(),
                values.ptr(),
                keep.ptr(),
                want,
                m,
                padded,
                keys2.ptr(),
                values2.ptr(),
            )
        });
        sort(&keys2, &values2);
        let class_bounds = bounds(&keys2, batch * classes);
        let detections = DeviceBuf::filled((batch * capacity.max(1) * 6) as usize, f32::NAN);
        launch_independent(GRID, BLOCK, |c| unsafe {
            rcnn_write(
                c,
                keys2.ptr(),
                values2.ptr(),
                class_bounds.ptr(),
                boxes.ptr(),
                scores.ptr(),
                classes,
                m,
                padded,
                capacity,
                detections.ptr(),
            )
        });
        let (rows, class_bounds) = (detections.to_vec(), class_bounds.to_vec());
        (0..batch as usize)
            .map(|n| {
                let found =
                    class_bounds[(n + 1) * classes as usize] - class_bounds[n * classes as usize];
                assert!(found <= capacity, "more detections than the capacity");
                rows[n * capacity as usize * 6..]
                    .chunks_exact(6)
                    .take(found as usize)
                    .map(|d| Detection {
                        class: d[0] as usize,
                        score: d[1],
                        bbox: [d[2], d[3], d[4], d[5]],
                    })
                    .collect()
            })
            .collect()
    }

    fn bits(d: &[Vec<Detection>]) -> Vec<Vec<(usize, u32, [u32; 4])>> {
        d.iter()
            .map(|i| {
                i.iter()
                    .map(|d| (d.class, d.score.to_bits(), d.bbox.map(f32::to_bits)))
                    .collect()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Softmax, per-class decode, clip and NMS through the kernels
        /// equal core's `bbox_head_detect` of each image to the bit, in
        /// order: logits from a few levels (so that scores tie), RoIs on a
        /// coarse grid (so that boxes coincide and clip), images with
        /// different RoI counts (padding), the device's rows in reverse
        /// (FPN's level order), Paddle's settings and small top-k limits.
        #[test]
        fn equals_the_cpu_bbox_head_detect(counts in prop::collection::vec(0usize..7, 1..4),
            classes in 2usize..5, logits in prop::collection::vec(0u8..4, 18 * 4),
            deltas in prop::collection::vec(-8i8..8, 18 * 16),
            nms_top_k in prop::option::of(1usize..6), keep_top_k in prop::option::of(1usize..9),
            score_threshold in prop_oneof![Just(0.05f32), 0.0f32..0.5]) {
            prop_assume!(counts.iter().any(|&c| c > 0));
            let mut cfg = RcnnConfig::faster_rcnn(classes);
            cfg.nms.score_threshold = score_threshold;
            cfg.nms.nms_top_k = nms_top_k;
            cfg.nms.keep_top_k = keep_top_k;
            let images: Vec<Image> = counts
                .iter()
                .enumerate()
                .map(|(n, &count)| {
                    let rois = (0..count)
                        .map(|r| {
                            let (x, y) = ((r % 3) as f32 * 12.0, (r / 3) as f32 * 16.0 - 4.0);
                            let side = 16.0 + (r % 2) as f32 * 24.0;
                            [x, y, x + side, y + side * 1.25]
                        })
                        .collect();
                    let scale = [1.0, 1.5, 0.8][n];
                    (rois, scale, [40.0, 36.0 + n as f32 * 10.0, 1.0])
                })
                .collect();
            let total: usize = counts.iter().sum();
            let cls_score: Vec<f32> = logits[..total * classes].iter().map(|&l| l as f32 - 1.5).collect();
            let bbox_pred: Vec<f32> = deltas[..total * 4 * classes].iter().map(|&d| d as f32 / 4.0).collect();
            // RoI i's outputs in row total - 1 - i.
            let rows: Vec<usize> = (0..total).rev().collect();
            let mut first = 0;
            let want: Vec<Vec<Detection>> = images
                .iter()
                .map(|(rois, scale, im_shape)| {
                    let rows = &rows[first..first + rois.len()];
                    first += rois.len();
                    let gather = |outputs: &[f32], width: usize| -> Vec<f32> {
                        rows.iter().flat_map(|&r| &outputs[r * width..][..width]).copied().collect()
                    };
                    bbox_head_detect(&cfg, rois, *scale, im_shape, &gather(&cls_score, classes),
                        &gather(&bbox_pred, 4 * classes))
                })
                .collect();
            let got = device_detect(&cfg, &images, &rows, &cls_score, &bbox_pred);
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
