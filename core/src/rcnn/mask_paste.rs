//! A detection's mask in the full image, as PaddleDetection 0.x's
//! post-processing makes it from the mask head's output (`mask_encode` in
//! `ppdet/utils/post_process.py`; `mask2out` in `coco_eval.py` is the same
//! code) before pycocotools encodes it.
//!
//! The head predicts `M x M` probabilities (sigmoid of the detection's class
//! channel) over the detected box. PaddleDetection:
//! 1. pads them with a ring of zeros to `(M + 2) x (M + 2)` and widens the
//!    box to match (`expand_boxes`): centre kept, half-sizes times
//!    `(M + 2) / M`, all in f32 as numpy computes on the f32 boxes, then cast
//!    to int32 (towards zero);
//! 2. resizes the padded mask to the widened box, `w = xmax - xmin + 1`
//!    (at least 1) by `h`, with `cv2.resize`'s default bilinear filter;
//! 3. keeps the pixels above `binary_thresh` (0.5) and pastes the part
//!    inside the image into an all-zero image-sized mask.
//!
//! Steps 2 and 3 up to the pasting are `Backend::mask_paste` (OpenCV's
//! arithmetic to the bit, see `cpu::mask_paste`), over all detections at
//! once, on the device at inference; here are the boxes and the parts
//! inside the image ([`PasteRegion`]), and the RLE of the pasted mask.
use crate::backend::{Backend, MaskPasteGeom, MASK_PASTE_FIELDS};
use crate::box_coder::BoxXyxy;
use crate::tensor::Tensor;
use pulsefocus_formats::rle::Rle;

/// One detection whose mask to paste: channel `channel` of row `row` of
/// the probabilities, its box in its image's pixels, and the image's
/// `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pasted {
    pub row: usize,
    pub channel: usize,
    pub bbox: BoxXyxy,
    pub image: [u32; 2],
}

/// `Backend::mask_paste` takes fewer pixels than this in a call (its
/// offsets are floats).
const PIXELS_PER_CALL: usize = 1 << 24;

/// The masks of `detections` in their images: `probs` (`[rows, channels,
/// M, M]`, on the device) resized and thresholded (`> threshold`) by
/// `Backend::mask_paste`, as many detections a call as hold fewer than 2^24
/// pixels, then downloaded and RLE-encoded.
pub fn paste_masks<B: Backend>(
    backend: &B,
    probs: &Tensor<B>,
    detections: &[Pasted],
    threshold: f32,
) -> Vec<Rle> {
    let &[rows, channels, side, _] = probs.shape() else {
        panic!(
            "paste_masks: probabilities [rows, channels, M, M], got {:?}",
            probs.shape()
        );
    };
    let regions: Vec<PasteRegion> = detections
        .iter()
        .map(|d| PasteRegion::new(&d.bbox, side, d.image[0], d.image[1]))
        .collect();
    let mut masks = Vec::with_capacity(detections.len());
    let mut first = 0;
    while first < detections.len() {
        // This call's detections, first..end, and their table.
        let (mut end, mut pixels) = (first, 0);
        let mut table = Vec::new();
        while end < detections.len()
            && (end == first || pixels + regions[end].len() < PIXELS_PER_CALL)
        {
            let d = &detections[end];
            table.extend(regions[end].entry(d.row, d.channel, pixels));
            pixels += regions[end].len();
            end += 1;
        }
        let g = MaskPasteGeom {
            detections: end - first,
            rows,
            channels,
            side,
            pixels,
            threshold,
        };
        let table = Tensor::from_host(backend, &[g.detections, MASK_PASTE_FIELDS], &table);
        // One element at least: a buffer is never empty.
        let mut out = Tensor::zeros(backend, &[pixels.max(1)]);
        backend.mask_paste(&g, probs.buf(), table.buf(), out.buf_mut());
        let out = out.to_host(backend);
        let mut offset = 0;
        for (d, region) in detections[first..end].iter().zip(&regions[first..end]) {
            masks.push(region.encode(&out[offset..], d.image[0], d.image[1]));
            offset += region.len();
        }
        first = end;
    }
    masks
}

/// Where one detection's mask goes in its `im_height x im_width` image: the
/// widened box, `width x height` from `(xmin, ymin)`, that the padded mask
/// is resized to, and its part inside the image, `x0..x1` by `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasteRegion {
    pub xmin: i64,
    pub ymin: i64,
    pub width: usize,
    pub height: usize,
    pub x0: i64,
    pub y0: i64,
    pub x1: i64,
    pub y1: i64,
}

impl PasteRegion {
    /// Step 1 for a detection's `bbox` (image pixels) at mask resolution
    /// `resolution`, and the part of the widened box inside the image.
    pub fn new(bbox: &BoxXyxy, resolution: usize, im_height: u32, im_width: u32) -> PasteRegion {
        let m = resolution as f64;
        let scale = ((m + 2.0) / m) as f32;
        let w_half = (bbox[2] - bbox[0]) * 0.5 * scale;
        let h_half = (bbox[3] - bbox[1]) * 0.5 * scale;
        let x_c = (bbox[2] + bbox[0]) * 0.5;
        let y_c = (bbox[3] + bbox[1]) * 0.5;
        let (xmin, xmax) = ((x_c - w_half) as i32 as i64, (x_c + w_half) as i32 as i64);
        let (ymin, ymax) = ((y_c - h_half) as i32 as i64, (y_c + h_half) as i32 as i64);
        let (im_w, im_h) = (im_width as i64, im_height as i64);
        let (x0, x1) = (xmin.clamp(0, im_w), (xmax + 1).clamp(0, im_w));
        let (y0, y1) = (ymin.clamp(0, im_h), (ymax + 1).clamp(0, im_h));
        // A box that misses the image has no part in it: an empty one at
        // the box's corner, where `Backend::mask_paste` wants parts.
        let ((x0, x1), (y0, y1)) = if x0 < x1 && y0 < y1 {
            ((x0, x1), (y0, y1))
        } else {
            ((xmin, xmin), (ymin, ymin))
        };
        PasteRegion {
            xmin,
            ymin,
            width: (xmax - xmin + 1).max(1) as usize,
            height: (ymax - ymin + 1).max(1) as usize,
            x0,
            y0,
            x1,
            y1,
        }
    }

    /// Pixels of the part inside the image.
    pub fn len(&self) -> usize {
        ((self.x1 - self.x0) * (self.y1 - self.y0)) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The detection's entry of `Backend::mask_paste`'s table: its mask is
    /// channel `channel` of row `row`, its pixels at `offset`.
    pub fn entry(&self, row: usize, channel: usize, offset: usize) -> [f32; MASK_PASTE_FIELDS] {
        [
            row as f32,
            channel as f32,
            self.xmin as f32,
            self.ymin as f32,
            self.width as f32,
            self.height as f32,
            self.x0 as f32,
            self.y0 as f32,
            self.x1 as f32,
            self.y1 as f32,
            offset as f32,
        ]
    }

    /// The image-sized mask with the part's `pixels` (0/1, row-major, as
    /// `Backend::mask_paste` writes them) pasted into zeros, as RLE.
    pub fn encode(&self, pixels: &[f32], im_height: u32, im_width: u32) -> Rle {
        let mut image = vec![0u8; im_height as usize * im_width as usize];
        let part_width = (self.x1 - self.x0) as usize;
        if part_width > 0 {
            for (k, row) in pixels[..self.len()].chunks_exact(part_width).enumerate() {
                let start = (self.y0 as usize + k) * im_width as usize + self.x0 as usize;
                for (pixel, &value) in image[start..start + part_width].iter_mut().zip(row) {
                    *pixel = value as u8;
                }
            }
        }
        Rle::encode(&image, im_height, im_width).expect("the mask has the image's size")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, read};
    use crate::CpuBackend;
    use proptest::prelude::*;

    /// `paste_masks` on the CPU backend, each detection's `masks[k]` (`M x
    /// M`, row-major) its own row.
    fn paste(masks: &[Vec<f32>], m: usize, boxes: &[(BoxXyxy, [u32; 2])]) -> Vec<Rle> {
        let cpu = CpuBackend::new();
        let probs = Tensor::from_host(&cpu, &[masks.len(), 1, m, m], &masks.concat());
        let detections: Vec<Pasted> = boxes
            .iter()
            .enumerate()
            .map(|(row, &(bbox, image))| Pasted {
                row,
                channel: 0,
                bbox,
                image,
            })
            .collect();
        paste_masks(&cpu, &probs, &detections, 0.5)
    }

    /// PaddleDetection's `mask_encode` (cv2 4.2.0, pycocotools) on 12
    /// detections of two images at resolutions 14 and 28, boxes crossing
    /// the edges, thinner than a pixel, at half the padded size (INTER_AREA),
    /// and masks of noise and of values within 1e-6 of the threshold
    /// (`core/tests/fixtures/mask_rcnn/mask_paste.py`), each resolution's
    /// in one `paste_masks`: every RLE equal.
    #[test]
    fn equals_ppdets_mask_encode() {
        let fixture = read("mask_rcnn/mask_paste.json");
        let shapes: Vec<Vec<f32>> = fixture["im_shape"]
            .as_array()
            .expect("shapes")
            .iter()
            .map(floats)
            .collect();
        let mut compared = 0;
        for case in fixture["cases"].as_array().expect("cases") {
            let m = case["resolution"].as_u64().expect("resolution") as usize;
            let lengths = floats(&case["lengths"]);
            let (mut masks, mut boxes) = (Vec::new(), Vec::new());
            for (image, &count) in lengths.iter().enumerate() {
                let (h, w) = (shapes[image][0] as u32, shapes[image][1] as u32);
                for _ in 0..count as usize {
                    let row = floats(&case["bbox"][masks.len()]);
                    boxes.push(([row[2], row[3], row[4], row[5]], [h, w]));
                    masks.push(floats(&case["mask"][masks.len()]));
                }
            }
            for (detection, got) in paste(&masks, m, &boxes).iter().enumerate() {
                let rle = &case["rle"][detection];
                let [h, w] = boxes[detection].1;
                assert_eq!(floats(&rle["size"]), vec![h as f32, w as f32]);
                assert_eq!(
                    got.to_compressed(),
                    rle["counts"].as_str().expect("counts"),
                    "M {m}, detection {detection}"
                );
                compared += 1;
            }
        }
        assert_eq!(compared, 24);
    }

    #[test]
    fn full_mask_fills_the_widened_box() {
        // M = 2, box [2, 2, 5, 5]: half-size 1.5 * 2 = 3 around 3.5, so
        // [0, 0, 6, 6] (7x7) resized from the 4x4 padded mask. Along each
        // axis the values are 0, 0.357, 0.929, 1, 0.929, 0.357, 0: the ring
        // of zeros leaves pixels 2..=4 above 0.5.
        let region = PasteRegion::new(&[2.0, 2.0, 5.0, 5.0], 2, 10, 10);
        assert_eq!(
            (region.xmin, region.ymin, region.width, region.height),
            (0, 0, 7, 7)
        );
        let rle = &paste(&[vec![1.0; 4]], 2, &[([2.0, 2.0, 5.0, 5.0], [10, 10])])[0];
        let mask = rle.decode();
        let set: Vec<(usize, usize)> = (0..100)
            .filter(|&i| mask[i] == 1)
            .map(|i| (i % 10, i / 10))
            .collect();
        let (xs, ys): (Vec<usize>, Vec<usize>) = set.iter().copied().unzip();
        assert_eq!((xs.iter().min(), xs.iter().max()), (Some(&2), Some(&4)));
        assert_eq!((ys.iter().min(), ys.iter().max()), (Some(&2), Some(&4)));
        assert_eq!(set.len(), 9);
    }

    /// A box wholly outside its image has no pixels; its mask is empty.
    #[test]
    fn a_box_outside_the_image_pastes_nothing() {
        let region = PasteRegion::new(&[50.0, 2.0, 60.0, 5.0], 4, 10, 10);
        assert!(region.is_empty());
        let got = paste(
            &[vec![1.0; 16], vec![1.0; 16]],
            4,
            &[
                ([50.0, 2.0, 60.0, 5.0], [10, 10]),
                ([1.0, 1.0, 8.0, 8.0], [10, 12]),
            ],
        );
        assert_eq!(got[0].area(), 0);
        assert!(got[1].area() > 0);
        assert_eq!((got[1].height(), got[1].width()), (10, 12));
    }

    proptest! {
        /// Set pixels lie inside the widened box and the image; a mask of
        /// zeros sets none.
        #[test]
        fn pasted_pixels_stay_in_the_widened_box(
            m in 1usize..16,
            x in -20.0f32..60.0, y in -20.0f32..60.0, w in 0.0f32..50.0, h in 0.0f32..50.0,
            seed in 0u64..1000,
        ) {
            let mask: Vec<f32> = crate::gradcheck::random_vec(seed, m * m).iter().map(|v| v.abs()).collect();
            let bbox = [x, y, x + w, y + h];
            let got = paste(&[mask, vec![0.0; m * m]], m, &[(bbox, [40, 50]), (bbox, [40, 50])]);
            let pasted = got[0].decode();
            let grow = (m as f32 + 2.0) / m as f32;
            for (i, &v) in pasted.iter().enumerate() {
                if v == 1 {
                    let (px, py) = ((i % 50) as f32, (i / 50) as f32);
                    prop_assert!(px >= x - w * grow - 1.0 && px <= x + w + w * grow + 1.0);
                    prop_assert!(py >= y - h * grow - 1.0 && py <= y + h + h * grow + 1.0);
                }
            }
            prop_assert_eq!(got[1].area(), 0);
        }
    }
}
