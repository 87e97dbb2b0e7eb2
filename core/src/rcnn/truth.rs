//! The loader's batch as Paddle's R-CNN-style operators (and RetinaNet's)
//! take it: each image's ground truth in its own pixels and its `im_info`.

use crate::backend::Backend;
use crate::box_coder::BoxXyxy;
use crate::tensor::Tensor;
use crate::yolo::GroundTruth;

/// Below this width or height a ground-truth slot is padding.
const PADDING: f32 = 1e-6;

/// One image's ground truth as Paddle's R-CNN operators take it: boxes in
/// original-image pixels (width `x2 - x1 + 1`) and classes from 1.
pub struct ImageTruth {
    pub boxes: Vec<BoxXyxy>,
    pub classes: Vec<i32>,
}

/// Each image's ground truth from the loader's slots (normalised
/// `[cx, cy, w, h]` relative to the resized picture, classes with the
/// background as 0) in original-image pixels, Paddle's COCO convention
/// `x2 = x1 + w - 1`.
pub fn image_truths(truth: &GroundTruth, im_info: &[[f32; 3]]) -> Vec<ImageTruth> {
    let m = truth.max_boxes;
    im_info
        .iter()
        .enumerate()
        .map(|(n, &[height, width, scale])| {
            let (w, h) = (width / scale, height / scale);
            let mut boxes = Vec::new();
            let mut classes = Vec::new();
            for k in 0..m {
                let b = &truth.boxes[(n * m + k) * 4..][..4];
                if b[2] < PADDING || b[3] < PADDING {
                    continue;
                }
                let x1 = (b[0] - b[2] / 2.0) * w;
                let y1 = (b[1] - b[3] / 2.0) * h;
                boxes.push([x1, y1, x1 + b[2] * w - 1.0, y1 + b[3] * h - 1.0]);
                classes.push(truth.labels[n * m + k]);
            }
            ImageTruth { boxes, classes }
        })
        .collect()
}

/// `im_info` as given, or for callers that give none (inputs that are the
/// pictures, unscaled) `[height, width, 1]` of the input.
pub fn image_infos<B: Backend>(image: &Tensor<B>, im_info: &[[f32; 3]]) -> Vec<[f32; 3]> {
    let (n, _, h, w) = image.nchw();
    if im_info.is_empty() {
        vec![[h as f32, w as f32, 1.0]; n]
    } else {
        assert_eq!(im_info.len(), n, "one im_info per image");
        im_info.to_vec()
    }
}
