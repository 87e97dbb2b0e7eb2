//! A batch as the trainer consumes it: one contiguous NCHW f32 buffer and
//! padded targets, plus where each image came from.

use super::sample::Sample;
use super::transforms::normalize::{normalize_permute, ChannelNorm};
use super::transforms::resize::{resize_into, Interp};
use super::transforms::targets::write_targets;

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `n x 3 x h x w`, normalised as the reader's NormalizeImage and
    /// Permute say (ImageNet statistics, RGB in the YOLOv3 configs).
    pub images: Vec<f32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    /// Box slots per image (50 for YOLOv3).
    pub max_boxes: usize,
    /// `n x max_boxes x 4`: normalised `[cx, cy, w, h]`, zero padded.
    pub gt_boxes: Vec<f32>,
    /// `n x max_boxes` class indices, 0 in padding.
    pub gt_classes: Vec<i32>,
    /// `n x max_boxes`: 1, or the mixup weight; 0 in padding.
    pub gt_scores: Vec<f32>,
    /// The index in the record list of each image.
    pub record_indices: Vec<usize>,
    /// `[width, height]` of each image as decoded, to map detections back.
    pub original_sizes: Vec<[u32; 2]>,
    pub epoch: u64,
    /// Index of this batch within its epoch.
    pub step: u64,
}

impl Batch {
    /// A zeroed batch of `n` images of `w` x `h`, filled by [`Batch::put`].
    pub fn new(n: usize, w: usize, h: usize, max_boxes: usize, epoch: u64, step: u64) -> Batch {
        Batch {
            images: vec![0.0; n * 3 * h * w],
            n,
            h,
            w,
            max_boxes,
            gt_boxes: vec![0.0; n * max_boxes * 4],
            gt_classes: vec![0; n * max_boxes],
            gt_scores: vec![0.0; n * max_boxes],
            record_indices: Vec::with_capacity(n),
            original_sizes: Vec::with_capacity(n),
            epoch,
            step,
        }
    }

    /// Resizes, normalises and stores `sample` as image number `i` (images are
    /// put in order); `scratch` is a reusable `w * h * 3` buffer.
    pub fn put(
        &mut self,
        sample: &Sample,
        interp: Interp,
        normalize: &ChannelNorm,
        record_index: usize,
        original_size: [u32; 2],
        scratch: &mut Vec<f32>,
    ) {
        let i = self.record_indices.len();
        assert!(i < self.n, "batch already full");
        let plane = self.h * self.w;
        scratch.resize(plane * 3, 0.0);
        resize_into(sample, self.w, self.h, interp, scratch);
        normalize_permute(
            scratch,
            normalize,
            &mut self.images[i * 3 * plane..(i + 1) * 3 * plane],
        );
        let m = self.max_boxes;
        write_targets(
            &sample.boxes,
            &sample.classes,
            &sample.scores,
            (sample.width(), sample.height()),
            &mut self.gt_boxes[i * m * 4..(i + 1) * m * 4],
            &mut self.gt_classes[i * m..(i + 1) * m],
            &mut self.gt_scores[i * m..(i + 1) * m],
        );
        self.record_indices.push(record_index);
        self.original_sizes.push(original_size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;

    #[test]
    fn images_are_stored_channel_first_in_order() {
        let a = gradient_sample(4, 4, &[[0.0, 0.0, 2.0, 4.0]]);
        let b = gradient_sample(8, 8, &[]);
        let mut batch = Batch::new(2, 4, 4, 3, 0, 0);
        let mut scratch = vec![];
        let imagenet = ChannelNorm::imagenet();
        batch.put(&a, Interp::Linear, &imagenet, 7, [4, 4], &mut scratch);
        batch.put(&b, Interp::Nearest, &imagenet, 2, [8, 8], &mut scratch);
        assert_eq!(batch.record_indices, vec![7, 2]);
        // Image 0, blue plane (constant 7), pixel 0.
        let blue = (7.0 / 255.0 - 0.406) / 0.225;
        assert!((batch.images[2 * 16] - blue).abs() < 1e-5);
        // Image 1, red plane, pixel (1, 0): nearest of column 2.
        let red = (2.0 / 255.0 - 0.485) / 0.229;
        assert!((batch.images[3 * 16 + 1] - red).abs() < 1e-5);
        assert_eq!(batch.gt_boxes[..4], [0.25, 0.5, 0.5, 1.0]);
        assert_eq!(batch.gt_scores, vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn single_image_for_inference() {
        let image = pulsefocus_formats::image::RgbImage::filled(30, 20, [255, 0, 0]);
        let mut batch = Batch::new(1, 8, 8, 50, 0, 0);
        let sample = Sample::from_image(&image);
        let imagenet = ChannelNorm::imagenet();
        batch.put(
            &sample,
            Interp::Cubic,
            &imagenet,
            0,
            [30, 20],
            &mut Vec::new(),
        );
        let red = (1.0 - 0.485) / 0.229;
        assert!(batch.images[..64].iter().all(|v| (v - red).abs() < 1e-4));
        assert!(batch.gt_scores.iter().all(|&s| s == 0.0));
        assert_eq!(batch.original_sizes, vec![[30, 20]]);
    }
}
