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
//! The threshold decides every pixel, so step 2 is OpenCV's arithmetic to
//! the last bit, not a bilinear resize in general (hence not
//! `data::transforms::resize`, which samples pictures through views with
//! f64 positions): OpenCV 4.2's `resize` on one f32 channel computes each
//! source position in double, rounds it to f32, and splits it into index and
//! weight in f32; along x it clamps the position into the source, along y
//! it only clamps the rows read, keeping the weights (so an edge row comes
//! out as `r * (1 - f) + r * f`, not always `r`, though for the padded
//! mask that row is zeros); it filters rows first,
//! then blends two of them. A resize to exactly half the size in both
//! directions is done as `INTER_AREA` instead, the mean of 2x2 blocks,
//! summed as `(a + b) + (c + d)` in the 4-wide SIMD loop and as
//! `((a + b) + c) + d` in its scalar tail (the last `w % 4` columns). This
//! is what the opencv-python wheel of PaddleDetection's environment (4.2.0)
//! computes (checked on 38 resizes in `cv2_resize.json`; a Python model
//! of these rules was also equal to it on 3000 random ones).

use crate::box_coder::BoxXyxy;
use pulsefocus_formats::rle::Rle;

/// The mask of one detection in an `im_height x im_width` image: `mask` the
/// `resolution x resolution` probabilities of its class (row-major), `bbox`
/// its box in the image's pixels, `binary_thresh` PaddleDetection's 0.5.
pub fn paste_mask(
    mask: &[f32],
    resolution: usize,
    bbox: &BoxXyxy,
    im_height: u32,
    im_width: u32,
    binary_thresh: f32,
) -> Rle {
    let m = resolution;
    assert_eq!(mask.len(), m * m, "paste_mask: an M x M mask");
    // 1. The padded mask and the widened box.
    let padded_side = m + 2;
    let mut padded = vec![0.0f32; padded_side * padded_side];
    for y in 0..m {
        let row = (y + 1) * padded_side + 1;
        padded[row..row + m].copy_from_slice(&mask[y * m..(y + 1) * m]);
    }
    let scale = ((m as f64 + 2.0) / m as f64) as f32;
    let w_half = (bbox[2] - bbox[0]) * 0.5 * scale;
    let h_half = (bbox[3] - bbox[1]) * 0.5 * scale;
    let x_c = (bbox[2] + bbox[0]) * 0.5;
    let y_c = (bbox[3] + bbox[1]) * 0.5;
    let (xmin, xmax) = ((x_c - w_half) as i32 as i64, (x_c + w_half) as i32 as i64);
    let (ymin, ymax) = ((y_c - h_half) as i32 as i64, (y_c + h_half) as i32 as i64);

    // 2-3. Resized, thresholded, pasted where it overlaps the image.
    let w = (xmax - xmin + 1).max(1) as usize;
    let h = (ymax - ymin + 1).max(1) as usize;
    let resized = resize_like_opencv(&padded, padded_side, padded_side, w, h);
    let (im_w, im_h) = (im_width as i64, im_height as i64);
    let x0 = xmin.clamp(0, im_w);
    let x1 = (xmax + 1).clamp(0, im_w);
    let y0 = ymin.clamp(0, im_h);
    let y1 = (ymax + 1).clamp(0, im_h);
    let mut image = vec![0u8; im_height as usize * im_width as usize];
    for y in y0..y1 {
        for x in x0..x1 {
            let value = resized[(y - ymin) as usize * w + (x - xmin) as usize];
            image[(y * im_w + x) as usize] = (value > binary_thresh) as u8;
        }
    }
    Rle::encode(&image, im_height, im_width).expect("the mask has the image's size")
}

/// `cv2.resize(src, (dst_w, dst_h))` of one f32 channel (`src_w x src_h`,
/// row-major), bilinear, as OpenCV 4.2 computes it (see the module notes).
fn resize_like_opencv(
    src: &[f32],
    src_w: usize,
    src_h: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<f32> {
    let mut dst = vec![0.0f32; dst_w * dst_h];
    if src_w == 2 * dst_w && src_h == 2 * dst_h {
        let simd_columns = dst_w / 4 * 4;
        for y in 0..dst_h {
            let (top, bottom) = (&src[2 * y * src_w..], &src[(2 * y + 1) * src_w..]);
            for x in 0..dst_w {
                let (a, b) = (top[2 * x], top[2 * x + 1]);
                let (c, d) = (bottom[2 * x], bottom[2 * x + 1]);
                let sum = if x < simd_columns {
                    (a + b) + (c + d)
                } else {
                    ((a + b) + c) + d
                };
                dst[y * dst_w + x] = sum * 0.25;
            }
        }
        return dst;
    }
    // Index and weights of the first of two taps, f32 as OpenCV's `cbuf`.
    let tap = |d: usize, src_len: usize, dst_len: usize| -> (i64, f32) {
        let scale = 1.0 / (dst_len as f64 / src_len as f64);
        let position = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let index = position.floor();
        (index as i64, position - index)
    };
    // Rows first: each source row filtered along x (positions clamped).
    let mut rows = vec![0.0f32; src_h * dst_w];
    for x in 0..dst_w {
        let (mut sx, mut fx) = tap(x, src_w, dst_w);
        if sx < 0 {
            (sx, fx) = (0, 0.0);
        }
        let sx = sx as usize;
        for y in 0..src_h {
            let row = &src[y * src_w..(y + 1) * src_w];
            rows[y * dst_w + x] = if sx + 1 < src_w {
                row[sx] * (1.0 - fx) + row[sx + 1] * fx
            } else {
                row[src_w - 1]
            };
        }
    }
    // Then two filtered rows blended along y (rows clamped, weights kept).
    let last = src_h as i64 - 1;
    for y in 0..dst_h {
        let (sy, fy) = tap(y, src_h, dst_h);
        let r0 = sy.clamp(0, last) as usize * dst_w;
        let r1 = (sy + 1).clamp(0, last) as usize * dst_w;
        for x in 0..dst_w {
            dst[y * dst_w + x] = rows[r0 + x] * (1.0 - fy) + rows[r1 + x] * fy;
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, read};
    use proptest::prelude::*;

    /// PaddleDetection's `mask_encode` (cv2 4.2.0, pycocotools) on 12
    /// detections of two images at resolutions 14 and 28, boxes crossing
    /// the edges, thinner than a pixel, at half the padded size (INTER_AREA),
    /// and masks of noise and of values within 1e-6 of the threshold
    /// (`core/tests/fixtures/mask_rcnn/mask_paste.py`): every RLE equal.
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
            let mut detection = 0;
            for (image, &count) in lengths.iter().enumerate() {
                let (h, w) = (shapes[image][0] as u32, shapes[image][1] as u32);
                for _ in 0..count as usize {
                    let row = floats(&case["bbox"][detection]);
                    let mask = floats(&case["mask"][detection]);
                    let got = paste_mask(&mask, m, &[row[2], row[3], row[4], row[5]], h, w, 0.5);
                    let rle = &case["rle"][detection];
                    assert_eq!(floats(&rle["size"]), vec![h as f32, w as f32]);
                    assert_eq!(
                        got.to_compressed(),
                        rle["counts"].as_str().expect("counts"),
                        "M {m}, detection {detection}"
                    );
                    detection += 1;
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 24);
    }

    /// `cv2.resize` (OpenCV 4.2.0) of padded-mask-sized f32 pictures up,
    /// down, to half (INTER_AREA) and to the same size, half of them within
    /// 1e-6 of 0.5 (`core/tests/fixtures/mask_rcnn/cv2_resize.py`): every
    /// value equal.
    #[test]
    fn resize_equals_opencvs() {
        let fixture = read("mask_rcnn/cv2_resize.json");
        let cases = fixture["cases"].as_array().expect("cases");
        for (k, case) in cases.iter().enumerate() {
            let size = |key: &str| case[key].as_u64().expect(key) as usize;
            let (side, w, h) = (size("side"), size("w"), size("h"));
            let got = resize_like_opencv(&floats(&case["src"]), side, side, w, h);
            let expected = floats(&case["out"]);
            let differing = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
            assert_eq!(
                (got.len(), differing),
                (w * h, 0),
                "case {k}: {side} to {w}x{h}"
            );
        }
        assert_eq!(cases.len(), 38);
    }

    #[test]
    fn resize_by_hand() {
        // 1x3 -> 1x6 along x: positions -0.25, 0.25, 0.75, 1.25, 1.75, 2.25.
        let row = resize_like_opencv(&[0.0, 1.0, 2.0], 3, 1, 6, 1);
        assert_eq!(row, vec![0.0, 0.25, 0.75, 1.25, 1.75, 2.0]);
        // 4x4 -> 2x2: means of 2x2 blocks.
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(
            resize_like_opencv(&src, 4, 4, 2, 2),
            vec![2.5, 4.5, 10.5, 12.5]
        );
    }

    #[test]
    fn full_mask_fills_the_widened_box() {
        // M = 2, box [2, 2, 5, 5]: half-size 1.5 * 2 = 3 around 3.5, so
        // [0, 0, 6, 6] (7x7) resized from the 4x4 padded mask. Along each
        // axis the values are 0, 0.357, 0.929, 1, 0.929, 0.357, 0: the ring
        // of zeros leaves pixels 2..=4 above 0.5.
        let rle = paste_mask(&[1.0; 4], 2, &[2.0, 2.0, 5.0, 5.0], 10, 10, 0.5);
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
            let pasted = paste_mask(&mask, m, &bbox, 40, 50, 0.5).decode();
            let grow = (m as f32 + 2.0) / m as f32;
            for (i, &v) in pasted.iter().enumerate() {
                if v == 1 {
                    let (px, py) = ((i % 50) as f32, (i / 50) as f32);
                    prop_assert!(px >= x - w * grow - 1.0 && px <= x + w + w * grow + 1.0);
                    prop_assert!(py >= y - h * grow - 1.0 && py <= y + h + h * grow + 1.0);
                }
            }
            let zeros = paste_mask(&vec![0.0; m * m], m, &bbox, 40, 50, 0.5);
            prop_assert_eq!(zeros.area(), 0);
        }
    }
}
