//! A batch as the trainer consumes it: one contiguous NCHW f32 buffer and
//! padded targets, plus where each image came from.

use super::sample::Sample;
use super::transforms::normalize::{normalize_permute, ChannelNorm};
use super::transforms::resize::{resize_into, resize_short_side_into, Interp, ShortSideScale};
use super::transforms::targets::write_targets;

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `n x 3 x h x w`, normalised as the reader's NormalizeImage and
    /// Permute say (ImageNet statistics, RGB in the YOLOv3 configs). With
    /// the R-CNN readers each picture fills the top-left `round(h * scale)`
    /// x `round(w * scale)` of its slot, zeros (after normalisation) around.
    pub images: Vec<f32>,
    pub n: usize,
    /// The (padded) size of every image of the batch.
    pub h: usize,
    pub w: usize,
    /// Per image, PaddleDetection's `im_info` `[height, width, scale]`:
    /// with the R-CNN readers (ResizeImage with `max_size`) the resized
    /// picture's `h * scale`, `w * scale` (unrounded; the padded `h`, `w`
    /// with PadBatch's `use_padded_im_info`) and `im_scale`; with the square
    /// readers `[h, w, 1]` (their boxes are 0..1 of the input, no op maps
    /// pixels through a scale; `original_sizes` maps detections back).
    pub im_info: Vec<[f32; 3]>,
    /// Box slots per image (50 for YOLOv3).
    pub max_boxes: usize,
    /// `n x max_boxes x 4`: `[cx, cy, w, h]` normalised by the size of the
    /// picture the batch resize started from (after the augmentations; for
    /// the R-CNN readers, which only flip, the decoded picture), zero
    /// padded. The resize keeps them: with the R-CNN readers the pixel
    /// box in the resized, unpadded picture is `x1 = (cx - w / 2) *
    /// original_w * scale` (`gt_pixel_boxes` times `im_info[2]`, with the
    /// `+1` width convention).
    pub gt_boxes: Vec<f32>,
    /// `n x max_boxes` class indices, 0 in padding.
    pub gt_classes: Vec<i32>,
    /// `n x max_boxes`: 1, or the mixup weight; 0 in padding.
    pub gt_scores: Vec<f32>,
    /// With the loader's `with_polygons` (Mask R-CNN), per image, per box
    /// slot in use (the boxes `gt_pixel_boxes` lists, in order), that
    /// object's polygons `[x1, y1, x2, y2, ...]` in the pixels of the
    /// original picture (flipped with it, `x -> width - x - 1`), f32 as
    /// Paddle feeds `gt_mask`: `generate_mask_labels`' `gt_polygons` with
    /// `im_info`. A crowd box has none. Empty without `with_polygons`.
    pub gt_polys: Vec<Vec<Vec<Vec<f32>>>>,
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
            im_info: Vec::with_capacity(n),
            max_boxes,
            gt_boxes: vec![0.0; n * max_boxes * 4],
            gt_classes: vec![0; n * max_boxes],
            gt_scores: vec![0.0; n * max_boxes],
            gt_polys: Vec::new(),
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
        let (w, h) = (self.w, self.h);
        scratch.resize(w * h * 3, 0.0);
        resize_into(sample, w, h, interp, scratch);
        let im_info = [h as f32, w as f32, 1.0];
        self.store(
            sample,
            [w, h],
            normalize,
            im_info,
            record_index,
            original_size,
            scratch,
        );
    }

    /// ResizeImage with `max_size` (`shape`, from `sample`'s size) then
    /// PadBatch: stores the resized picture top-left in image number `i`'s
    /// slot, which must hold it. `padded_im_info`: PadBatch's
    /// `use_padded_im_info` (im_info's height and width are the batch's).
    #[allow(clippy::too_many_arguments)]
    pub fn put_short_side(
        &mut self,
        sample: &Sample,
        shape: &ShortSideScale,
        interp: Interp,
        padded_im_info: bool,
        normalize: &ChannelNorm,
        record_index: usize,
        original_size: [u32; 2],
        scratch: &mut Vec<f32>,
    ) {
        assert!(
            shape.w <= self.w && shape.h <= self.h,
            "picture larger than the batch"
        );
        scratch.resize(shape.w * shape.h * 3, 0.0);
        resize_short_side_into(sample, shape, interp, scratch);
        let mut im_info = shape.im_info(sample.width(), sample.height());
        if padded_im_info {
            im_info[..2].copy_from_slice(&[self.h as f32, self.w as f32]);
        }
        let size = [shape.w, shape.h];
        self.store(
            sample,
            size,
            normalize,
            im_info,
            record_index,
            original_size,
            scratch,
        );
    }

    /// Normalises the resized `w` x `h` picture `hwc` into the next image's
    /// slot (top-left), with the sample's targets.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        sample: &Sample,
        [w, h]: [usize; 2],
        normalize: &ChannelNorm,
        im_info: [f32; 3],
        record_index: usize,
        original_size: [u32; 2],
        hwc: &[f32],
    ) {
        let i = self.record_indices.len();
        assert!(i < self.n, "batch already full");
        let plane = self.h * self.w;
        let slot = &mut self.images[i * 3 * plane..(i + 1) * 3 * plane];
        if [w, h] == [self.w, self.h] {
            normalize_permute(hwc, normalize, slot);
        } else {
            let mut chw = vec![0.0; 3 * w * h];
            normalize_permute(hwc, normalize, &mut chw);
            for c in 0..3 {
                for y in 0..h {
                    let to = c * plane + y * self.w;
                    let from = (c * h + y) * w;
                    slot[to..to + w].copy_from_slice(&chw[from..from + w]);
                }
            }
        }
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
        if let Some(polygons) = &sample.polygons {
            // The boxes beyond the slots are dropped with theirs.
            self.gt_polys.push(
                polygons
                    .iter()
                    .take(m)
                    .map(|object| {
                        object
                            .iter()
                            .map(|polygon| polygon.iter().map(|&v| v as f32).collect())
                            .collect()
                    })
                    .collect(),
            );
        }
        self.im_info.push(im_info);
        self.record_indices.push(record_index);
        self.original_sizes.push(original_size);
    }

    /// Image `i`'s boxes (the slots with a score) as PaddleDetection's COCO
    /// reader gives them to the R-CNN ops: `[x1, y1, x2, y2]` in the pixels
    /// of the original picture, `x2 = x1 + w - 1`, with their classes. Paddle
    /// scales them by `im_info[2]` into the resized picture. Only for
    /// readers whose augmentations keep the picture's size (flips: the
    /// R-CNN readers; `Reader::pipeline_for` refuses the others there),
    /// since the boxes are normalised by it. The formats' COCO reader clips
    /// boxes to `[0, width]` then this takes 1 off `x2`, `y2`: Paddle's
    /// `min(width - 1, x1 + w - 1)` for every box that starts inside.
    pub fn gt_pixel_boxes(&self, i: usize) -> Vec<([f32; 4], i32)> {
        let [width, height] = self.original_sizes[i].map(|v| v as f32);
        let m = self.max_boxes;
        (i * m..(i + 1) * m)
            .filter(|&k| self.gt_scores[k] > 0.0)
            .map(|k| {
                let b = &self.gt_boxes[k * 4..k * 4 + 4];
                let (x1, x2) = ((b[0] - b[2] / 2.0) * width, (b[0] + b[2] / 2.0) * width);
                let (y1, y2) = ((b[1] - b[3] / 2.0) * height, (b[1] + b[3] / 2.0) * height);
                ([x1, y1, x2 - 1.0, y2 - 1.0], self.gt_classes[k])
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;
    use crate::data::transforms::resize::ShortSideScale;

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

    #[test]
    fn short_side_pictures_sit_top_left_of_the_padded_slot() {
        use crate::data::loader::ShortSideResize;
        let a = gradient_sample(24, 20, &[[2.0, 3.0, 15.0, 14.0]]);
        let b = gradient_sample(10, 30, &[]);
        let resize = ShortSideResize {
            target_sizes: vec![10],
            max_size: 20,
            interp: Interp::Linear,
            pad_to_stride: 8,
            padded_im_info: false,
        };
        let shapes =
            [a.clone(), b.clone()].map(|s| ShortSideScale::new(s.width(), s.height(), 10, 20));
        // 24x20 -> 12x10 (scale 0.5); 10x30: 10 / 10 = 1 makes 30 > 20, so
        // 20 / 30: 7x20 (6.67 rounds to 7).
        assert_eq!(
            [(shapes[0].w, shapes[0].h), (shapes[1].w, shapes[1].h)],
            [(12, 10), (7, 20)]
        );
        // PadBatch: the largest, 12x20, up to multiples of 8.
        assert_eq!(
            resize.padded_size(shapes.iter().map(|s| (s.w, s.h))),
            (16, 24)
        );
        let to_largest = ShortSideResize {
            pad_to_stride: 1,
            ..resize.clone()
        };
        assert_eq!(
            to_largest.padded_size(shapes.iter().map(|s| (s.w, s.h))),
            (12, 20)
        );
        let mut batch = Batch::new(2, 16, 24, 4, 0, 0);
        let (norm, mut scratch) = (ChannelNorm::IDENTITY, Vec::new());
        batch.put_short_side(
            &a,
            &shapes[0],
            Interp::Linear,
            false,
            &norm,
            0,
            [24, 20],
            &mut scratch,
        );
        batch.put_short_side(
            &b,
            &shapes[1],
            Interp::Linear,
            true,
            &norm,
            1,
            [10, 30],
            &mut scratch,
        );
        assert_eq!(batch.im_info[0], [10.0, 12.0, 0.5]);
        // use_padded_im_info: the batch's height and width.
        assert_eq!(batch.im_info[1], [24.0, 16.0, (20.0f64 / 30.0) as f32]);
        let plane = 16 * 24;
        // Image 0, red (x): column 11 halves 22.5 (OpenCV: 2 * 11 + 0.5).
        assert_eq!(batch.images[11], 22.5);
        assert_eq!(batch.images[12], 0.0, "padding right of the picture");
        assert_eq!(batch.images[10 * 16], 0.0, "padding below the picture");
        // Blue plane is 7 inside, 0 in the padding.
        assert_eq!(batch.images[2 * plane + 9 * 16 + 11], 7.0);
        assert_eq!(batch.images[2 * plane + 9 * 16 + 12], 0.0);
        // Box [2, 3, 15, 14] of the 24x20 picture, as Paddle's COCO reader
        // gives it: x2 = x1 + w - 1.
        let boxes = batch.gt_pixel_boxes(0);
        assert_eq!(boxes.len(), 1);
        for (g, w) in boxes[0].0.iter().zip([2.0, 3.0, 14.0, 13.0]) {
            assert!((g - w).abs() < 1e-5, "{boxes:?}");
        }
        assert!(batch.gt_pixel_boxes(1).is_empty());
    }

    /// PaddleDetection's own NormalizeImage, ResizeImage (`max_size`),
    /// Permute and PadBatch on pictures of different sizes
    /// (`core/tests/fixtures/faster_rcnn/reader.py`): the same padded
    /// batch size, `im_info` and network input.
    #[test]
    fn short_side_batches_equal_paddledetections() {
        use crate::data::loader::ShortSideResize;
        use crate::fixtures::{floats, read};
        use pulsefocus_formats::image::RgbImage;
        let cases = read("faster_rcnn/reader.json");
        for case in cases.as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let number = |key: &str| case[key].as_i64().unwrap();
            let resize = ShortSideResize {
                target_sizes: vec![number("target_size") as usize],
                max_size: number("max_size") as usize,
                interp: Interp::Linear,
                // As Reader::pipeline_for reads PadBatch: -1 and 0 pad to the largest.
                pad_to_stride: number("pad_to_stride").max(1) as usize,
                padded_im_info: case["use_padded_im_info"].as_bool().unwrap(),
            };
            let samples: Vec<Sample> = case["pictures"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    Sample::from_image(&RgbImage {
                        width: p["width"].as_u64().unwrap() as u32,
                        height: p["height"].as_u64().unwrap() as u32,
                        data: crate::fixtures::bytes(&p["rgb"]),
                    })
                })
                .collect();
            let shapes: Vec<ShortSideScale> = samples
                .iter()
                .map(|s| {
                    ShortSideScale::new(
                        s.width(),
                        s.height(),
                        resize.target_sizes[0],
                        resize.max_size,
                    )
                })
                .collect();
            let (w, h) = resize.padded_size(shapes.iter().map(|s| (s.w, s.h)));
            let shape: Vec<usize> = case["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(shape, [3, h, w], "{name}");
            let mut batch = Batch::new(samples.len(), w, h, 1, 0, 0);
            let mut scratch = Vec::new();
            for (i, (sample, shape)) in samples.iter().zip(&shapes).enumerate() {
                let size = [sample.width() as u32, sample.height() as u32];
                let norm = ChannelNorm::imagenet();
                batch.put_short_side(
                    sample,
                    shape,
                    Interp::Linear,
                    resize.padded_im_info,
                    &norm,
                    i,
                    size,
                    &mut scratch,
                );
            }
            for (i, (info, chw)) in case["im_info"]
                .as_array()
                .unwrap()
                .iter()
                .zip(case["chw"].as_array().unwrap())
                .enumerate()
            {
                let want = floats(info);
                for (a, b) in batch.im_info[i].iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs(),
                        "{name} image {i}: im_info {:?} vs {want:?}",
                        batch.im_info[i]
                    );
                }
                let plane = 3 * w * h;
                let ours = &batch.images[i * plane..(i + 1) * plane];
                for (k, (a, b)) in ours.iter().zip(floats(chw)).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "{name} image {i} value {k}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
