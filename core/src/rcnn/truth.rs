//! What the detectors whose readers resize the short side (Faster R-CNN,
//! RetinaNet) share around their operators: the loader's batch as Paddle's
//! R-CNN-style operators take it (each image's ground truth in its own
//! pixels, its `im_info`), planning on zeros, and the detections in the
//! form every detector reports.

use crate::backend::Backend;
use crate::box_coder::BoxXyxy;
use crate::detector::Detector;
use crate::tensor::Tensor;
use crate::yolo::{Detection, GroundTruth};

/// Below this width or height a ground-truth slot is padding.
const PADDING: f32 = 1e-6;

/// One image's ground truth as Paddle's R-CNN operators take it: boxes in
/// original-image pixels (width `x2 - x1 + 1`) and classes from 1.
pub struct ImageTruth {
    pub boxes: Vec<BoxXyxy>,
    pub classes: Vec<i32>,
    /// Each box's slot in the loader's (what `GroundTruth::polygons` is
    /// indexed by).
    pub slots: Vec<usize>,
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
            let mut slots = Vec::new();
            for k in 0..m {
                let b = &truth.boxes[(n * m + k) * 4..][..4];
                if b[2] < PADDING || b[3] < PADDING {
                    continue;
                }
                let x1 = (b[0] - b[2] / 2.0) * w;
                let y1 = (b[1] - b[3] / 2.0) * h;
                boxes.push([x1, y1, x1 + b[2] * w - 1.0, y1 + b[3] * h - 1.0]);
                classes.push(truth.labels[n * m + k]);
                slots.push(k);
            }
            ImageTruth {
                boxes,
                classes,
                slots,
            }
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

/// Sizes every buffer of `model` for `batch` images of `size` x `size`
/// padded up to a multiple of `stride` (as `PadBatch` pads the batch): one
/// training pass on zeros with one box per image, the middle half of the
/// picture, as the truth (its outline as its polygon).
/// The net's running statistics are kept.
pub fn train_on_zeros<B: Backend>(
    model: &mut dyn Detector<B>,
    batch: usize,
    size: usize,
    stride: usize,
) {
    let size = size.div_ceil(stride) * stride;
    let running = model.net().save_running_stats();
    let backend = model.net().backend().clone();
    let image = Tensor::zeros(&backend, &[batch, 3, size, size]);
    let boxes: Vec<f32> = (0..batch).flat_map(|_| [0.5, 0.5, 0.5, 0.5]).collect();
    let labels = vec![1; batch];
    // The box's outline as its object's polygon, for a mask head.
    let (lo, hi) = (0.25 * size as f32, 0.75 * size as f32);
    let outline = vec![lo, lo, hi, lo, hi, hi, lo, hi];
    let polygons = vec![vec![vec![outline]]; batch];
    let truth = GroundTruth {
        boxes: &boxes,
        labels: &labels,
        scores: None,
        max_boxes: 1,
        polygons: &polygons,
    };
    model.train_pass(&image, &truth, &[]);
    model.net_mut().restore_running_stats(running);
}

/// An image's detections as Paddle's operators number them (classes from 1,
/// the background 0) in the form every detector reports: grouped by class,
/// best first within a class, classes from 0.
pub fn by_class_from_zero(mut found: Vec<Detection>) -> Vec<Detection> {
    found.sort_by(|a, b| a.class.cmp(&b.class).then(b.score.total_cmp(&a.score)));
    for d in &mut found {
        d.class -= 1;
    }
    found
}
