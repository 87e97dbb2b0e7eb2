//! Mask R-CNN's detections' masks pasted into their pictures (core's
//! `MaskPasteGeom`): each pixel of a detection's part inside its picture is
//! OpenCV 4.2's `cv2.resize` of the zero-padded mask at that place,
//! thresholded, with the arithmetic of core's `cpu::mask_paste::resized`
//! (f64 positions rounded to f32, f32 weights and sums in the same order),
//! so the emulator gives the CPU's bits.
//! Launch: grid-stride over the `pixels`, any 1-D grid.
use crate::{grid_stride, kernel, math};

/// Values per detection in the table (core's `MASK_PASTE_FIELDS`).
pub const FIELDS: usize = 11;

/// Value `(x, y)` of the resize of the `src_side`-square picture `src(x,
/// y)` to `dst_w x dst_h`, as OpenCV 4.2 computes it.
#[inline(always)]
fn resized(
    src: impl Fn(usize, usize) -> f32,
    src_side: usize,
    (dst_w, dst_h): (usize, usize),
    (x, y): (usize, usize),
) -> f32 {
    if src_side == 2 * dst_w && src_side == 2 * dst_h {
        let (a, b) = (src(2 * x, 2 * y), src(2 * x + 1, 2 * y));
        let (c, d) = (src(2 * x, 2 * y + 1), src(2 * x + 1, 2 * y + 1));
        let sum = if x < dst_w / 4 * 4 {
            (a + b) + (c + d)
        } else {
            ((a + b) + c) + d
        };
        return sum * 0.25;
    }
    let tap = |d: usize, dst_len: usize| -> (i64, f32) {
        let scale = 1.0 / (dst_len as f64 / src_side as f64);
        let position = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let index = math::floor(position);
        (index as i64, position - index)
    };
    let (mut sx, mut fx) = tap(x, dst_w);
    if sx < 0 {
        (sx, fx) = (0, 0.0);
    }
    let sx = sx as usize;
    let filtered = |row: usize| {
        if sx + 1 < src_side {
            src(sx, row) * (1.0 - fx) + src(sx + 1, row) * fx
        } else {
            src(src_side - 1, row)
        }
    };
    let (sy, fy) = tap(y, dst_h);
    let last = src_side as i64 - 1;
    let clamp = |r: i64| {
        (if r < 0 {
            0
        } else if r > last {
            last
        } else {
            r
        }) as usize
    };
    filtered(clamp(sy)) * (1.0 - fy) + filtered(clamp(sy + 1)) * fy
}

kernel! {
    /// Pixel `i` of `pixels` (`len` of them): in the part of the last
    /// detection of the table `detections` (`[count, FIELDS]`: row,
    /// channel, xmin, ymin, width, height, x0, y0, x1, y1, offset; offsets
    /// ascending) that starts at or before it, 1 where the resized mask
    /// (channel `channel` of row `row` of `probs`, `[rows, channels, side,
    /// side]`, padded with zeros) is above `threshold`, else 0. A pixel in
    /// no part, or of an entry out of range, is left alone.
    pub fn mask_paste(ctx, probs: *const f32, detections: *const f32, pixels: *mut f32,
        count: u32, rows: u32, channels: u32, side: u32, len: u32, threshold: f32) {
        grid_stride(ctx, len, |i| {
            let field = |d: usize, k: usize| *detections.add(d * FIELDS + k) as i64;
            let (mut lo, mut hi) = (0usize, count as usize);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if field(mid, 10) <= i as i64 {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo == 0 {
                return;
            }
            let d = lo - 1;
            let (row, channel) = (field(d, 0), field(d, 1));
            let (xmin, ymin, width, height) = (field(d, 2), field(d, 3), field(d, 4), field(d, 5));
            let (x0, y0, x1, y1) = (field(d, 6), field(d, 7), field(d, 8), field(d, 9));
            let (part_width, at) = (x1 - x0, i as i64 - field(d, 10));
            if row < 0 || row >= rows as i64 || channel < 0 || channel >= channels as i64
                || part_width <= 0 || at >= part_width * (y1 - y0) {
                return;
            }
            let (x, y) = (x0 + at % part_width - xmin, y0 + at / part_width - ymin);
            if x < 0 || x >= width || y < 0 || y >= height {
                return;
            }
            let m = side as usize;
            let mask = probs.add((row as usize * channels as usize + channel as usize) * m * m);
            let padded = |px: usize, py: usize| {
                if px == 0 || py == 0 || px > m || py > m {
                    0.0
                } else {
                    *mask.add((py - 1) * m + px - 1)
                }
            };
            let value = resized(padded, m + 2, (width as usize, height as usize), (x as usize, y as usize));
            *pixels.add(i) = if value > threshold { 1.0 } else { 0.0 };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;
    use pulsefocus_core::backend::{MaskPasteGeom, MASK_PASTE_FIELDS};
    use pulsefocus_core::cpu::mask_paste::mask_paste as cpu_mask_paste;
    use pulsefocus_core::rcnn::PasteRegion;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Against the CPU backend's op, bit for bit: 1..4 detections of
        /// masks of 1..9 pixels a side (values near the threshold too),
        /// boxes inside, across and outside a 30x40 picture, small enough
        /// for the exact half (`INTER_AREA`) now and then; nothing written
        /// outside the parts.
        #[test]
        fn matches_the_cpu_op(
            m in 1usize..9,
            boxes in prop::collection::vec((-20.0f32..50.0, -20.0f32..40.0, 0.0f32..30.0, 0.0f32..30.0), 1..4),
            seed in 0u32..1000,
            blocks in 1u32..3,
        ) {
            assert_eq!(FIELDS, MASK_PASTE_FIELDS);
            let rows = boxes.len();
            let probs: Vec<f32> = (0..rows * 2 * m * m)
                .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed * 40503) % 2001) as f32 / 2000.0)
                .map(|v| if seed % 2 == 0 { 0.5 + (v - 0.5) * 1e-5 } else { v })
                .collect();
            let (mut table, mut pixels) = (Vec::new(), 0);
            for (row, &(x, y, w, h)) in boxes.iter().enumerate() {
                let region = PasteRegion::new(&[x, y, x + w, y + h], m, 30, 40);
                table.extend(region.entry(row, row % 2, pixels));
                pixels += region.len();
            }
            let g = MaskPasteGeom { detections: rows, rows, channels: 2, side: m, pixels, threshold: 0.5 };
            let mut want = vec![7.0; pixels + 1];
            cpu_mask_paste(&g, &probs, &table, &mut want);
            let (pb, tb) = (DeviceBuf::new(&probs), DeviceBuf::new(&table));
            let out = DeviceBuf::filled(pixels + 1, 7.0);
            launch_independent(Dim3::x(blocks), Dim3::x(32), |c| unsafe {
                mask_paste(c, pb.ptr(), tb.ptr(), out.ptr(), rows as u32, rows as u32, 2, m as u32,
                    pixels as u32, 0.5)
            });
            let got = out.to_vec();
            let differing = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            prop_assert_eq!(differing, 0);
        }
    }
}
