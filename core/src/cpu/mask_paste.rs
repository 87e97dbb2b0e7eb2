//! Mask R-CNN's detections' masks pasted into their pictures (see
//! `MaskPasteGeom`; the steps around it are `rcnn::mask_paste`'s).
//!
//! The threshold decides every pixel, so the resize is OpenCV's arithmetic
//! to the last bit, not a bilinear resize in general (hence not
//! `data::transforms::resize`, which samples pictures through views with
//! f64 positions): OpenCV 4.2's `resize` on one f32 channel computes each
//! source position in double, rounds it to f32, and splits it into index
//! and weight in f32; along x it clamps the position into the source, along
//! y it only clamps the rows read, keeping the weights (so an edge row comes
//! out as `r * (1 - f) + r * f`, not always `r`, though for the padded mask
//! that row is zeros); it filters rows first, then blends two of them. A
//! resize to exactly half the size in both directions is done as
//! `INTER_AREA` instead, the mean of 2x2 blocks, summed as `(a + b) + (c +
//! d)` in the 4-wide SIMD loop and as `((a + b) + c) + d` in its scalar
//! tail (the last `w % 4` columns). This is what the opencv-python wheel of
//! PaddleDetection's environment (4.2.0) computes (checked on 38 resizes in
//! `cv2_resize.json`; a Python model of these rules was also equal to it on
//! 3000 random ones). Each output value depends on its position alone, so
//! it is computed on its own, here and in the GPU kernel
//! (`gpu-kernels/device/src/mask_paste.rs`).

use crate::backend::{MaskPasteGeom, MASK_PASTE_FIELDS};
use rayon::prelude::*;

/// Value `(x, y)` of `cv2.resize` of a `src_w x src_h` f32 picture (`src(x,
/// y)` its values) to `dst_w x dst_h`, bilinear, as OpenCV 4.2 computes it.
pub fn resized(
    src: impl Fn(usize, usize) -> f32,
    (src_w, src_h): (usize, usize),
    (dst_w, dst_h): (usize, usize),
    (x, y): (usize, usize),
) -> f32 {
    if src_w == 2 * dst_w && src_h == 2 * dst_h {
        let (a, b) = (src(2 * x, 2 * y), src(2 * x + 1, 2 * y));
        let (c, d) = (src(2 * x, 2 * y + 1), src(2 * x + 1, 2 * y + 1));
        let sum = if x < dst_w / 4 * 4 {
            (a + b) + (c + d)
        } else {
            ((a + b) + c) + d
        };
        return sum * 0.25;
    }
    // Index and weight of the first of two taps, f32 as OpenCV's `cbuf`.
    let tap = |d: usize, src_len: usize, dst_len: usize| -> (i64, f32) {
        let scale = 1.0 / (dst_len as f64 / src_len as f64);
        let position = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let index = position.floor();
        (index as i64, position - index)
    };
    // Along x within a source row (the position clamped).
    let (mut sx, mut fx) = tap(x, src_w, dst_w);
    if sx < 0 {
        (sx, fx) = (0, 0.0);
    }
    let sx = sx as usize;
    let filtered = |row: usize| {
        if sx + 1 < src_w {
            src(sx, row) * (1.0 - fx) + src(sx + 1, row) * fx
        } else {
            src(src_w - 1, row)
        }
    };
    // Two filtered rows blended along y (rows clamped, weights kept).
    let (sy, fy) = tap(y, src_h, dst_h);
    let last = src_h as i64 - 1;
    let (r0, r1) = (sy.clamp(0, last) as usize, (sy + 1).clamp(0, last) as usize);
    filtered(r0) * (1.0 - fy) + filtered(r1) * fy
}

/// One detection's entry of the table, as integers: `[row, channel, xmin,
/// ymin, width, height, x0, y0, x1, y1, offset]`, checked against the
/// geometry.
fn entry(g: &MaskPasteGeom, detections: &[f32], d: usize) -> [i64; MASK_PASTE_FIELDS] {
    let fields: [f32; MASK_PASTE_FIELDS] = detections[d * MASK_PASTE_FIELDS..][..MASK_PASTE_FIELDS]
        .try_into()
        .expect("a whole entry");
    let e = fields.map(|v| v as i64);
    let [row, channel, xmin, ymin, width, height, x0, y0, x1, y1, offset] = e;
    let ok = fields.iter().all(|v| v.fract() == 0.0)
        && (0..g.rows as i64).contains(&row)
        && (0..g.channels as i64).contains(&channel)
        && width > 0
        && height > 0
        && xmin <= x0
        && x0 <= x1
        && x1 <= xmin + width
        && ymin <= y0
        && y0 <= y1
        && y1 <= ymin + height
        && offset >= 0
        && offset + (x1 - x0) * (y1 - y0) <= g.pixels as i64;
    assert!(
        ok,
        "mask_paste: detection {d} has a bad entry {fields:?} for {g:?}"
    );
    e
}

/// Every detection's pixels (see `MaskPasteGeom`).
pub fn mask_paste(g: &MaskPasteGeom, probs: &[f32], detections: &[f32], pixels: &mut [f32]) {
    if let Err(msg) = g.validate() {
        panic!("{msg}");
    }
    for (name, got, want) in [
        ("probs", probs.len(), g.probs_len()),
        (
            "detections",
            detections.len(),
            g.detections * MASK_PASTE_FIELDS,
        ),
        ("pixels", pixels.len(), g.pixels),
    ] {
        assert!(got >= want, "mask_paste: {name} too short for {g:?}");
    }
    let m = g.side;
    let padded_side = m + 2;
    let entries: Vec<[i64; MASK_PASTE_FIELDS]> =
        (0..g.detections).map(|d| entry(g, detections, d)).collect();
    // Each detection's part of `pixels`, in the table's order.
    let mut rest = &mut pixels[..g.pixels];
    let mut at = 0;
    let mut jobs = Vec::with_capacity(entries.len());
    for (d, e) in entries.iter().enumerate() {
        let (offset, len) = (e[10] as usize, ((e[8] - e[6]) * (e[9] - e[7])) as usize);
        assert!(
            offset >= at,
            "mask_paste: detection {d}'s pixels start at {offset}, before the previous one's end {at}"
        );
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(offset - at);
        let (part, tail) = tail.split_at_mut(len);
        rest = tail;
        at = offset + len;
        jobs.push((part, e));
    }
    jobs.into_par_iter().for_each(|(part, e)| {
        let [row, channel, xmin, ymin, width, height, x0, y0, x1, _, _] = *e;
        let mask = &probs[(row as usize * g.channels + channel as usize) * m * m..][..m * m];
        let padded = |x: usize, y: usize| {
            if x == 0 || y == 0 || x > m || y > m {
                0.0
            } else {
                mask[(y - 1) * m + x - 1]
            }
        };
        let part_width = (x1 - x0) as usize;
        for (i, pixel) in part.iter_mut().enumerate() {
            let (x, y) = (x0 + (i % part_width) as i64, y0 + (i / part_width) as i64);
            let value = resized(
                padded,
                (padded_side, padded_side),
                (width as usize, height as usize),
                ((x - xmin) as usize, (y - ymin) as usize),
            );
            *pixel = if value > g.threshold { 1.0 } else { 0.0 };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, read};

    /// `resized` over a whole picture.
    fn resize(src: &[f32], side: usize, (w, h): (usize, usize)) -> Vec<f32> {
        let mut out = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                out.push(resized(
                    |sx, sy| src[sy * side + sx],
                    (side, side),
                    (w, h),
                    (x, y),
                ));
            }
        }
        out
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
            let got = resize(&floats(&case["src"]), side, (w, h));
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
        // 3x1 -> 6x1 along x: positions -0.25, 0.25, 0.75, 1.25, 1.75, 2.25.
        let row = [0.0, 1.0, 2.0];
        let got: Vec<f32> = (0..6)
            .map(|x| resized(|sx, _| row[sx], (3, 1), (6, 1), (x, 0)))
            .collect();
        assert_eq!(got, vec![0.0, 0.25, 0.75, 1.25, 1.75, 2.0]);
        // 4x4 -> 2x2: means of 2x2 blocks.
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(resize(&src, 4, (2, 2)), vec![2.5, 4.5, 10.5, 12.5]);
    }

    /// Detection 1: M = 2 of ones, widened box [0, 0] of 7x7 (the padded
    /// 4x4 resized): along each axis 0, 0.357, 0.929, 1, 0.929, 0.357, 0,
    /// so the part x 1..5, y 2..7 keeps columns 2..=4 of rows 2..=4.
    /// Detection 0 (channel 1 of row 1, zeros) before it in `pixels`; the
    /// pixel between them left alone.
    #[test]
    fn two_detections_by_hand() {
        let g = MaskPasteGeom {
            detections: 2,
            rows: 2,
            channels: 2,
            side: 2,
            pixels: 4 * 5 + 1 + 2,
            threshold: 0.5,
        };
        let mut probs = vec![0.0; 16];
        probs[..4].fill(1.0);
        let table = [
            [1.0, 1.0, -3.0, 4.0, 5.0, 5.0, 0.0, 4.0, 1.0, 6.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 7.0, 7.0, 1.0, 2.0, 5.0, 7.0, 3.0],
        ]
        .concat();
        let mut pixels = vec![9.0; g.pixels];
        mask_paste(&g, &probs, &table, &mut pixels);
        assert_eq!(pixels[..3], [0.0, 0.0, 9.0]);
        let rows: Vec<&[f32]> = pixels[3..].chunks(4).collect();
        let inside = [0.0, 1.0, 1.0, 1.0];
        assert_eq!(rows, [&inside[..], &inside, &inside, &[0.0; 4], &[0.0; 4]]);
    }

    #[test]
    #[should_panic(expected = "mask_paste: detection 0 has a bad entry")]
    fn a_part_outside_its_box_is_refused() {
        let g = MaskPasteGeom {
            detections: 1,
            rows: 1,
            channels: 1,
            side: 2,
            pixels: 4,
            threshold: 0.5,
        };
        let table = [0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0, 3.0, 2.0, 0.0];
        mask_paste(&g, &[0.5; 4], &table, &mut [0.0; 4]);
    }
}
