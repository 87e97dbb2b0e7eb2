//! PIL's `Image.resize` on an 8-bit RGB picture, as PaddleDetection's
//! `ResizeImage(use_cv2: false)` runs it (the SSD configs): a separable
//! convolution, columns first, then rows, each pass rounding to uint8.
//!
//! Unlike OpenCV's fixed taps, PIL widens the filter when it shrinks: at a
//! scale `s = in / out > 1` the filter's support is `support * s` source
//! pixels and its argument is divided by `s`, so every source pixel under an
//! output pixel contributes (antialiasing). Each output pixel's weights are
//! normalised to sum to 1 in doubles, then turned into 22-bit fixed point
//! (`PRECISION_BITS`); the sums start at one half and are clipped to 0..255.
//! Output pixel `d` is centred on source position `(d + 0.5) * s`.

/// PIL's convolution filters, by the codes `Image.resize` takes (nearest,
/// code 0, is an affine transform instead and is not implemented).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    /// 1: `Image.LANCZOS` (a = 3).
    Lanczos,
    /// 2: `Image.BILINEAR` (triangle).
    Bilinear,
    /// 3: `Image.BICUBIC` (a = -0.5, not OpenCV's -0.75).
    Bicubic,
    /// 4: `Image.BOX`.
    Box,
    /// 5: `Image.HAMMING`.
    Hamming,
}

/// Bits after the point of the fixed-point weights: 32 - 8 (pixel) - 2
/// (headroom for negative lobes), as PIL's `Resample.c`.
const PRECISION_BITS: u32 = 22;

impl PilFilter {
    /// The filter of a PIL resample code.
    pub fn from_code(code: u32) -> Option<PilFilter> {
        match code {
            1 => Some(PilFilter::Lanczos),
            2 => Some(PilFilter::Bilinear),
            3 => Some(PilFilter::Bicubic),
            4 => Some(PilFilter::Box),
            5 => Some(PilFilter::Hamming),
            _ => None,
        }
    }

    /// Half-width of the filter at scale 1.
    fn support(self) -> f64 {
        match self {
            PilFilter::Box => 0.5,
            PilFilter::Bilinear | PilFilter::Hamming => 1.0,
            PilFilter::Bicubic => 2.0,
            PilFilter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        use std::f64::consts::PI;
        let sinc = |x: f64| {
            if x == 0.0 {
                1.0
            } else {
                (x * PI).sin() / (x * PI)
            }
        };
        match self {
            PilFilter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            PilFilter::Bilinear => (1.0 - x.abs()).max(0.0),
            PilFilter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    sinc(x) * (0.54 + 0.46 * (x * PI).cos())
                }
            }
            PilFilter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            PilFilter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// For one axis: output pixel `d` sums source pixels `first[d]..` with the
/// `taps` fixed-point weights `weights[d * taps..]` (zeros past the edge).
struct AxisWeights {
    taps: usize,
    first: Vec<usize>,
    weights: Vec<i32>,
}

/// PIL's `precompute_coeffs` and `normalize_coeffs_8bpc` for `len_in`
/// source pixels resized to `len_out`.
fn axis_weights(len_in: usize, len_out: usize, filter: PilFilter) -> AxisWeights {
    let scale = len_in as f64 / len_out as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let taps = support.ceil() as usize * 2 + 1;
    let mut first = Vec::with_capacity(len_out);
    let mut weights = vec![0i32; len_out * taps];
    let mut row = vec![0.0f64; taps];
    for d in 0..len_out {
        let center = (d as f64 + 0.5) * scale;
        // C's (int) cast truncates; the clamps make it a floor here.
        let low = ((center - support + 0.5) as i64).max(0) as usize;
        let high = ((center + support + 0.5) as i64).min(len_in as i64) as usize;
        let count = high.saturating_sub(low);
        let mut total = 0.0;
        for (k, w) in row.iter_mut().enumerate().take(count) {
            *w = filter.weight(((k + low) as f64 - center + 0.5) / filter_scale);
            total += *w;
        }
        for (k, w) in row.iter().enumerate().take(count) {
            let w = if total != 0.0 { w / total } else { *w };
            // Rounded half away from zero, as PIL's (int)(w * 2^22 +- 0.5).
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            weights[d * taps + k] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        first.push(low);
    }
    AxisWeights {
        taps,
        first,
        weights,
    }
}

/// The fixed-point sum to a pixel value: rounded (the sum started at one
/// half), clipped to 0..255.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass along `axis`: `pixels` is `w` x `h` RGB; the result has that
/// axis resized to `len_out`.
fn resample_pass(
    pixels: &[u8],
    (w, h): (usize, usize),
    len_out: usize,
    horizontal: bool,
    filter: PilFilter,
) -> Vec<u8> {
    let len_in = if horizontal { w } else { h };
    let axis = axis_weights(len_in, len_out, filter);
    let (out_w, out_h) = if horizontal {
        (len_out, h)
    } else {
        (w, len_out)
    };
    let mut out = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        for x in 0..out_w {
            let d = if horizontal { x } else { y };
            let weights = &axis.weights[d * axis.taps..(d + 1) * axis.taps];
            let mut sum = [1i64 << (PRECISION_BITS - 1); 3];
            for (k, &weight) in weights.iter().enumerate() {
                let s = axis.first[d] + k;
                if s >= len_in {
                    break;
                }
                let i = if horizontal { y * w + s } else { s * w + x } * 3;
                for c in 0..3 {
                    sum[c] += i64::from(pixels[i + c]) * i64::from(weight);
                }
            }
            let o = (y * out_w + x) * 3;
            for c in 0..3 {
                out[o + c] = clip8(sum[c]);
            }
        }
    }
    out
}

/// `Image.resize((out_w, out_h), filter)` of a `w` x `h` RGB picture
/// (row-major, 3 bytes a pixel). An axis whose size does not change is not
/// resampled, as in PIL.
pub fn pil_resize(
    pixels: &[u8],
    (w, h): (usize, usize),
    (out_w, out_h): (usize, usize),
    filter: PilFilter,
) -> Vec<u8> {
    assert_eq!(pixels.len(), w * h * 3, "pil_resize: picture size");
    let mut current = pixels.to_vec();
    if out_w != w {
        current = resample_pass(&current, (w, h), out_w, true, filter);
    }
    if out_h != h {
        current = resample_pass(&current, (out_w, h), out_h, false, filter);
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{bytes, read};
    use proptest::prelude::*;

    const ALL: [PilFilter; 5] = [
        PilFilter::Lanczos,
        PilFilter::Bilinear,
        PilFilter::Bicubic,
        PilFilter::Box,
        PilFilter::Hamming,
    ];

    /// PIL's own output (`tests/fixtures/pil/make_fixtures.py`) for every
    /// filter, shrinking (where the support widens) and enlarging, equal to
    /// the byte.
    #[test]
    fn resize_equals_pils_byte_for_byte() {
        let fixture = read("pil/resize.json");
        let picture = bytes(&fixture["picture"]);
        let [w, h] = [0, 1].map(|i| fixture["size"][i].as_u64().expect("size") as usize);
        let cases = fixture["cases"].as_array().expect("cases");
        assert!(cases.len() >= 10);
        for case in cases {
            let code = case["filter"].as_u64().expect("filter") as u32;
            let filter = PilFilter::from_code(code).expect("a PIL code");
            let [ow, oh] = [0, 1].map(|i| case["out"][i].as_u64().expect("out") as usize);
            let got = pil_resize(&picture, (w, h), (ow, oh), filter);
            let want = bytes(&case["pixels"]);
            assert_eq!(got, want, "{filter:?} to {ow}x{oh}");
        }
    }

    #[test]
    fn shrinking_by_two_with_a_box_averages_pairs() {
        // 4 x 1, red 0, 10, 20, 31: pairs average to 5 and 25.5 -> 26 (rounded).
        let picture = [0, 0, 0, 10, 0, 0, 20, 0, 0, 31, 0, 0];
        let out = pil_resize(&picture, (4, 1), (2, 1), PilFilter::Box);
        assert_eq!(out, vec![5, 0, 0, 26, 0, 0]);
    }

    proptest! {
        /// A flat picture stays flat at any size and filter: the weights of
        /// every output pixel sum to one.
        #[test]
        fn flat_pictures_stay_flat(
            w in 1usize..40, h in 1usize..40, ow in 1usize..40, oh in 1usize..40,
            rgb in prop::array::uniform3(any::<u8>()), f in 0usize..5,
        ) {
            let picture: Vec<u8> = (0..w * h).flat_map(|_| rgb).collect();
            let out = pil_resize(&picture, (w, h), (ow, oh), ALL[f]);
            prop_assert_eq!(out.len(), ow * oh * 3);
            for px in out.chunks(3) {
                prop_assert_eq!(px, &rgb[..]);
            }
        }
    }
}
