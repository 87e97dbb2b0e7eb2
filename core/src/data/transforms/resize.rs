//! Resize to the network's input size, reading through the sample's view.
//!
//! Training resizes every image of a batch to one size drawn per batch from
//! `RandomShape.sizes` (320..608 step 32 in the YOLOv3 configs), with
//! `random_inter` the interpolation drawn from nearest, bilinear and bicubic
//! (PaddleDetection draws from OpenCV's nearest, linear, area, cubic and
//! Lanczos-4; we have the first, second and fourth), without it nearest, as
//! PaddleDetection does. Evaluation resizes as `ResizeImage` says (608,
//! bicubic in the YOLOv3 configs). Aspect ratio is not kept,
//! as in PaddleDetection; boxes are normalised to 0..1 before the resize, so
//! they need no change.
//!
//! The sampling positions and weights are OpenCV's (`cv::resize`): output
//! pixel `d` looks at source position `(d + 0.5) * in / out - 0.5`, edge
//! pixels repeated; bicubic uses a = -0.75. Results are floats, unrounded.
//! `ResizeImage(use_cv2: false)` resizes with PIL instead (`pil_resize`):
//! the picture as uint8, resampled with PIL's filters, rounded to uint8.

use super::super::rng::Rng;
use super::super::sample::{ColorAffine, Sample, View};
use super::pil_resize::{pil_resize, PilFilter};

/// The training sizes of the YOLOv3 configs.
pub const TRAIN_SIZES: [usize; 10] = [320, 352, 384, 416, 448, 480, 512, 544, 576, 608];
pub const EVAL_SIZE: usize = 608;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    Nearest,
    Linear,
    Cubic,
    /// PIL's `Image.resize` with this filter.
    Pil(PilFilter),
}

impl Interp {
    /// OpenCV's interpolations, those `RandomShape` and `RandomInterpImage`
    /// draw from.
    pub const ALL: [Interp; 3] = [Interp::Nearest, Interp::Linear, Interp::Cubic];
}

/// One batch's size and interpolation, drawn from `sizes` (and from all
/// interpolations when `random_interp`, else nearest, as PaddleDetection's
/// `RandomShape` does).
pub fn random_shape(sizes: &[usize], random_interp: bool, rng: &mut Rng) -> (usize, Interp) {
    let size = sizes[rng.below(sizes.len() as u64) as usize];
    let interp = if random_interp {
        Interp::ALL[rng.below(Interp::ALL.len() as u64) as usize]
    } else {
        Interp::Nearest
    };
    (size, interp)
}

/// For one axis: which source pixels (`None` = canvas fill) each output
/// pixel reads, with which weights; `taps` entries per output pixel.
struct AxisTaps {
    taps: usize,
    source: Vec<Option<usize>>,
    weight: Vec<f32>,
}

/// Sampling taps of an axis of `len_in` view pixels resized to `len_out`,
/// output pixel `d` centred on input position `(d + 0.5) * scale - 0.5`;
/// `source_of` maps a view index to the pixel behind it.
fn axis_taps(
    len_in: usize,
    len_out: usize,
    scale: f64,
    interp: Interp,
    source_of: impl Fn(usize) -> Option<usize>,
) -> AxisTaps {
    let last = len_in as i64 - 1;
    let clamp = |i: i64| i.clamp(0, last) as usize;
    let taps = match interp {
        Interp::Nearest => 1,
        Interp::Linear => 2,
        Interp::Cubic => 4,
        Interp::Pil(_) => unreachable!("resize_into hands PIL filters to pil_resize"),
    };
    let mut source = Vec::with_capacity(len_out * taps);
    let mut weight = Vec::with_capacity(len_out * taps);
    for d in 0..len_out {
        match interp {
            Interp::Nearest => {
                // OpenCV INTER_NEAREST: floor(d * scale), no half-pixel shift.
                source.push(source_of(clamp((d as f64 * scale).floor() as i64)));
                weight.push(1.0);
            }
            Interp::Linear => {
                let pos = (d as f64 + 0.5) * scale - 0.5;
                let mut i = pos.floor() as i64;
                let mut f = (pos - i as f64) as f32;
                if i < 0 {
                    (i, f) = (0, 0.0);
                }
                if i >= last {
                    (i, f) = (last, 0.0);
                }
                source.push(source_of(clamp(i)));
                source.push(source_of(clamp(i + 1)));
                weight.extend_from_slice(&[1.0 - f, f]);
            }
            // Cubic: `taps` above has refused PIL filters.
            _ => {
                let pos = (d as f64 + 0.5) * scale - 0.5;
                let i = pos.floor() as i64;
                let f = (pos - i as f64) as f32;
                for k in -1..=2 {
                    source.push(source_of(clamp(i + k)));
                }
                weight.extend_from_slice(&cubic_weights(f));
            }
        }
    }
    AxisTaps {
        taps,
        source,
        weight,
    }
}

/// OpenCV's bicubic weights (a = -0.75) for taps at -1, 0, 1, 2 around `f`.
fn cubic_weights(f: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let w0 = ((A * (f + 1.0) - 5.0 * A) * (f + 1.0) + 8.0 * A) * (f + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * f - (A + 3.0)) * f * f + 1.0;
    let w2 = ((A + 2.0) * (1.0 - f) - (A + 3.0)) * (1.0 - f) * (1.0 - f) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// Resizes what `sample` shows to `out_w` x `out_h`, writing RGB HWC floats
/// into `out` (`out_w * out_h * 3`).
pub fn resize_into(sample: &Sample, out_w: usize, out_h: usize, interp: Interp, out: &mut [f32]) {
    if let Interp::Pil(filter) = interp {
        assert_eq!(out.len(), out_w * out_h * 3);
        return resize_with_pil(sample, out_w, out_h, filter, out);
    }
    let scale_x = sample.width() as f64 / out_w as f64;
    let scale_y = sample.height() as f64 / out_h as f64;
    resize_scaled_into(sample, [out_w, out_h], [scale_x, scale_y], interp, out);
}

/// ResizeImage with `max_size` (the R-CNN readers): the shorter side to
/// `target`, unless the longer would then exceed `max_size` (after
/// rounding, numpy's half to even), in which case the longer side to
/// `max_size`. `scale` is PaddleDetection's `im_scale` (float64, as Python
/// computes it); the picture becomes `round(w * scale)` x
/// `round(h * scale)` (OpenCV's `cvRound`, half to even, for `fx = fy =
/// scale`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShortSideScale {
    pub scale: f64,
    pub w: usize,
    pub h: usize,
}

impl ShortSideScale {
    pub fn new(w: usize, h: usize, target: usize, max_size: usize) -> ShortSideScale {
        let (short, long) = (w.min(h) as f64, w.max(h) as f64);
        let mut scale = target as f64 / short;
        if (scale * long).round_ties_even() > max_size as f64 {
            scale = max_size as f64 / long;
        }
        ShortSideScale {
            scale,
            w: (w as f64 * scale).round_ties_even() as usize,
            h: (h as f64 * scale).round_ties_even() as usize,
        }
    }

    /// PaddleDetection's `im_info`: `[h * scale, w * scale, scale]` as
    /// float32, the products unrounded (they may differ from the pixel
    /// size by up to half a pixel).
    pub fn im_info(&self, w: usize, h: usize) -> [f32; 3] {
        [
            (h as f64 * self.scale) as f32,
            (w as f64 * self.scale) as f32,
            self.scale as f32,
        ]
    }
}

/// `cv2.resize(im, None, fx=scale, fy=scale)`: what `sample` shows to
/// `shape.w` x `shape.h`, sampled with OpenCV's factor (`1 / scale` input
/// pixels per output pixel, not `in / out`).
pub fn resize_short_side_into(
    sample: &Sample,
    shape: &ShortSideScale,
    interp: Interp,
    out: &mut [f32],
) {
    let step = 1.0 / shape.scale;
    resize_scaled_into(sample, [shape.w, shape.h], [step, step], interp, out);
}

/// OpenCV's resampling to `out_w` x `out_h` with `scale` input pixels per
/// output pixel along x and y.
fn resize_scaled_into(
    sample: &Sample,
    [out_w, out_h]: [usize; 2],
    [scale_x, scale_y]: [f64; 2],
    interp: Interp,
    out: &mut [f32],
) {
    assert_eq!(out.len(), out_w * out_h * 3);
    let cols = axis_taps(sample.width(), out_w, scale_x, interp, |u| {
        sample.source_x(u)
    });
    let rows = axis_taps(sample.height(), out_h, scale_y, interp, |v| {
        sample.source_y(v)
    });
    let fill = sample.view.fill;
    let taps = cols.taps;
    for oy in 0..out_h {
        let row_taps = oy * taps..(oy + 1) * taps;
        for ox in 0..out_w {
            // Pixels and fill are summed apart: the colour map applies to the
            // pixels only (it is affine, so it can be applied to their sum).
            let mut sum = [0.0f32; 3];
            let (mut pixel_weight, mut fill_weight) = (0.0f32, 0.0f32);
            for (sy, wy) in rows.source[row_taps.clone()]
                .iter()
                .zip(&rows.weight[row_taps.clone()])
            {
                for t in ox * taps..(ox + 1) * taps {
                    let w = wy * cols.weight[t];
                    match (cols.source[t], sy) {
                        (Some(x), Some(y)) => {
                            let i = (y * sample.pixels_w + x) * 3;
                            sum[0] += w * sample.pixels[i];
                            sum[1] += w * sample.pixels[i + 1];
                            sum[2] += w * sample.pixels[i + 2];
                            pixel_weight += w;
                        }
                        _ => fill_weight += w,
                    }
                }
            }
            let colored = sample.color.apply_weighted(sum, pixel_weight);
            let o = (oy * out_w + ox) * 3;
            for c in 0..3 {
                out[o + c] = colored[c] + fill_weight * fill[c];
            }
        }
    }
}

/// PaddleDetection's `im.astype('uint8')` then PIL's resize: what the
/// sample shows as bytes (truncated; values outside 0..255, which the
/// 8-bit SSD pipeline never makes, saturate where numpy would wrap them).
fn resize_with_pil(
    sample: &Sample,
    out_w: usize,
    out_h: usize,
    filter: PilFilter,
    out: &mut [f32],
) {
    let (w, h) = (sample.width(), sample.height());
    let mut picture = Vec::with_capacity(w * h * 3);
    for v in 0..h {
        for u in 0..w {
            picture.extend(sample.at(u, v).map(|c| c as u8));
        }
    }
    let resized = pil_resize(&picture, (w, h), (out_w, out_h), filter);
    for (o, &b) in out.iter_mut().zip(&resized) {
        *o = f32::from(b);
    }
}

/// ResizeImage inside a training reader's per-sample transforms: what the
/// sample shows becomes `size` x `size` pixels, boxes scaled with it.
pub fn resize_sample(sample: &mut Sample, size: usize, interp: Interp) {
    let mut pixels = vec![0.0; size * size * 3];
    resize_into(sample, size, size, interp, &mut pixels);
    let (sx, sy) = (
        size as f32 / sample.width() as f32,
        size as f32 / sample.height() as f32,
    );
    for b in &mut sample.boxes {
        *b = [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy];
    }
    sample.pixels = pixels;
    (sample.pixels_w, sample.pixels_h) = (size, size);
    sample.color = ColorAffine::IDENTITY;
    sample.view = View::whole(size, size);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;
    use crate::data::transforms::color_distort::{affine, Distortion};
    use crate::data::transforms::{random_crop::crop, random_expand::expand, random_flip::flip};

    fn resize(sample: &Sample, w: usize, h: usize, interp: Interp) -> Vec<f32> {
        let mut out = vec![0.0; w * h * 3];
        resize_into(sample, w, h, interp, &mut out);
        out
    }

    #[test]
    fn same_size_is_a_copy_for_every_interpolation() {
        let s = gradient_sample(7, 5, &[]);
        for interp in Interp::ALL {
            let out = resize(&s, 7, 5, interp);
            for (a, b) in out.iter().zip(&s.pixels) {
                assert!((a - b).abs() < 1e-4, "{interp:?}");
            }
        }
    }

    #[test]
    fn linear_halving_averages_pixel_pairs() {
        // Red channel is x: output column d reads position 2d + 0.5.
        let s = gradient_sample(8, 2, &[]);
        let out = resize(&s, 4, 1, Interp::Linear);
        let red: Vec<f32> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(red, vec![0.5, 2.5, 4.5, 6.5]);
        // Green is y: rows 0 and 1 averaged.
        assert_eq!(out[1], 0.5);
    }

    #[test]
    fn linear_doubling_repeats_the_edges() {
        let s = gradient_sample(2, 1, &[]);
        let out = resize(&s, 4, 1, Interp::Linear);
        let red: Vec<f32> = out.chunks(3).map(|p| p[0]).collect();
        // Positions -0.25, 0.25, 0.75, 1.25: clamped, 0.25, 0.75, clamped.
        assert_eq!(red, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn cubic_keeps_a_linear_ramp_inside() {
        let s = gradient_sample(16, 4, &[]);
        let out = resize(&s, 8, 4, Interp::Cubic);
        // Away from the edges bicubic reproduces a ramp: column d -> 2d + 0.5.
        for d in 1..7 {
            assert!((out[d * 3] - (2.0 * d as f32 + 0.5)).abs() < 1e-4);
        }
    }

    #[test]
    fn resizing_a_sample_scales_its_boxes() {
        let mut s = gradient_sample(8, 4, &[[2.0, 1.0, 6.0, 3.0]]);
        let want = resize(&s, 4, 4, Interp::Linear);
        resize_sample(&mut s, 4, Interp::Linear);
        assert_eq!((s.width(), s.height()), (4, 4));
        assert_eq!(s.pixels, want);
        assert_eq!(s.boxes, vec![[1.0, 1.0, 3.0, 3.0]]);
    }

    #[test]
    fn nearest_picks_floor_positions() {
        let s = gradient_sample(6, 1, &[]);
        let out = resize(&s, 4, 1, Interp::Nearest);
        let red: Vec<f32> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(red, vec![0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn reading_through_the_view_equals_resizing_the_built_canvas() {
        // Colour, expand, crop and flip lazily, then resize; compare with
        // building the shown picture pixel by pixel and resizing that.
        let mut lazy = gradient_sample(9, 7, &[[2.0, 2.0, 6.0, 5.0]]);
        lazy.color = affine(Distortion::Hue(0.4)).then(&affine(Distortion::Brightness(1.2)));
        expand(&mut lazy, 20, 15, 6, 3, [50.0, 60.0, 70.0]);
        assert!(crop(&mut lazy, [3, 2, 13, 11]));
        flip(&mut lazy);
        let (w, h) = (lazy.width(), lazy.height());
        let mut built = gradient_sample(w, h, &[]);
        for v in 0..h {
            for u in 0..w {
                built.pixels[(v * w + u) * 3..(v * w + u) * 3 + 3].copy_from_slice(&lazy.at(u, v));
            }
        }
        for interp in Interp::ALL {
            let a = resize(&lazy, 17, 6, interp);
            let b = resize(&built, 17, 6, interp);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-3, "{interp:?}: {x} {y}");
            }
        }
    }

    /// PaddleDetection's ResizeImage (`target_size`, `max_size`), by hand:
    /// `scale = target / short`, unless `np.round(scale * long) > max_size`,
    /// then `max_size / long`; the picture `cvRound(side * scale)`;
    /// `im_info = [h * scale, w * scale, scale]`.
    #[test]
    fn short_side_resize_is_paddles_formula() {
        // 640x480 to 800: 800 / 480; 1066.67 rounds to 1067 <= 1333.
        let s = ShortSideScale::new(640, 480, 800, 1333);
        assert_eq!((s.w, s.h), (1067, 800));
        assert_eq!(s.scale, 800.0 / 480.0);
        assert_eq!(
            s.im_info(640, 480),
            [
                800.0,
                (640.0f64 * 800.0 / 480.0) as f32,
                (800.0f64 / 480.0) as f32
            ]
        );
        // 1000x200: 4 x 1000 > 1333, so 1333 / 1000; 266.6 rounds to 267.
        let s = ShortSideScale::new(1000, 200, 800, 1333);
        assert_eq!((s.w, s.h, s.scale), (1333, 267, 1.333));
        assert_eq!(s.im_info(1000, 200), [266.6, 1333.0, 1.333]);
        // Halves round to even, in the cap test and in the size: 5x2 to 3
        // is 7.5 -> 8 long, over a cap of 7 (7 / 5: 7x3) but not of 8 (8x3).
        let s = ShortSideScale::new(5, 2, 3, 7);
        assert_eq!((s.w, s.h, s.scale), (7, 3, 1.4));
        let s = ShortSideScale::new(5, 2, 3, 8);
        assert_eq!((s.w, s.h, s.scale), (8, 3, 1.5));
        // 4.5 -> 4: im_info keeps the unrounded 4.5.
        let s = ShortSideScale::new(3, 2, 3, 100);
        assert_eq!((s.w, s.h), (4, 3));
        assert_eq!(s.im_info(3, 2), [3.0, 4.5, 1.5]);
    }

    #[test]
    fn short_side_resize_samples_with_opencvs_factor() {
        // 3 -> 4 columns at factor 1.5: OpenCV reads (d + 0.5) / 1.5 - 0.5,
        // i.e. -1/6 (clamped to 0), 0.5, 7/6, 11/6, not in/out = 0.75 apart.
        let s = gradient_sample(3, 2, &[]);
        let shape = ShortSideScale::new(3, 2, 3, 100);
        let mut out = vec![0.0; 4 * 3 * 3];
        resize_short_side_into(&s, &shape, Interp::Linear, &mut out);
        let red: Vec<f32> = out[..12].chunks(3).map(|p| p[0]).collect();
        let want = [0.0, 0.5, 7.0 / 6.0, 11.0 / 6.0];
        for (a, b) in red.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{red:?}");
        }
    }
}
