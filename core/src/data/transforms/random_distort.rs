//! RandomDistort, the SSD configs' colour distortion, as PaddleDetection's
//! operator runs it: on the 8-bit picture with PIL's image enhancers, so
//! every step rounds to whole values and clips to 0..255 (unlike
//! `ColorDistort`, whose float maps compose into one affine map).
//!
//! - brightness `f`: `trunc(f * v)`;
//! - contrast `f`: blend with the picture's mean grey level `m` (the mean
//!   of PIL's luma `L`, rounded): `trunc(m + f * (v - m))`;
//! - saturation `f`: blend with each pixel's own luma;
//! - hue `d`: RGB to PIL's 8-bit HSV, `d` added to H (wrapping modulo 256,
//!   as numpy's cast back to uint8 does), back to RGB.
//!
//! A blend computes in single precision and truncates, clipping only when
//! `f` is outside [0, 1], as PIL's `ImagingBlend`. Draws per operation, in
//! operators.py's order: the delta, then the chance (the delta is drawn
//! even when the operation is skipped). The operations run in the order
//! brightness, contrast, saturation, hue, or with `is_order` one draw picks
//! that order or brightness, saturation, hue, contrast; without it a random
//! `count` of them in random order. Only the first `count` run.

use super::super::rng::Rng;
use super::super::sample::Sample;

/// One operation's delta range and chance of running.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistortRange {
    pub lower: f32,
    pub upper: f32,
    pub probability: f64,
}

/// `RandomDistort`'s parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomDistortParams {
    pub brightness: DistortRange,
    pub contrast: DistortRange,
    pub saturation: DistortRange,
    pub hue: DistortRange,
    /// How many of the four run (at most 4).
    pub count: usize,
    pub is_order: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Brightness,
    Contrast,
    Saturation,
    Hue,
}

use Operation::{Brightness, Contrast, Hue, Saturation};

/// Draws the order, then per operation its delta and whether it runs, and
/// applies those that run to the picture (as uint8: values are truncated
/// and clipped to 0..255 first, as PIL reads them).
pub fn random_distort(sample: &mut Sample, params: &RandomDistortParams, rng: &mut Rng) {
    let order = if params.is_order {
        if rng.uniform() < 0.5 {
            [Brightness, Saturation, Hue, Contrast]
        } else {
            [Brightness, Contrast, Saturation, Hue]
        }
    } else {
        // Python's random.sample(ops, count): count distinct ones in random
        // order, the same as the first count of a shuffle.
        let mut all = [Brightness, Contrast, Saturation, Hue];
        rng.shuffle(&mut all);
        all
    };
    let mut picture: Vec<u8> = sample.pixels.iter().map(|&v| v as u8).collect();
    for &op in order.iter().take(params.count) {
        let range = match op {
            Brightness => params.brightness,
            Contrast => params.contrast,
            Saturation => params.saturation,
            Hue => params.hue,
        };
        let delta = rng.range(f64::from(range.lower), f64::from(range.upper));
        if rng.uniform() < range.probability {
            distort(&mut picture, op, delta);
        }
    }
    for (v, &p) in sample.pixels.iter_mut().zip(&picture) {
        *v = f32::from(p);
    }
}

/// Applies one operation to an RGB picture (3 bytes a pixel).
pub fn distort(picture: &mut [u8], op: Operation, delta: f64) {
    // PIL takes the enhancement factor as a C float.
    let factor = delta as f32;
    match op {
        Brightness => {
            for v in picture.iter_mut() {
                *v = blend(0, *v, factor);
            }
        }
        Contrast => {
            let count = (picture.len() / 3).max(1) as f64;
            let sum: u64 = picture.chunks_exact(3).map(|p| u64::from(luma(p))).sum();
            let mean = (sum as f64 / count + 0.5) as u8;
            for v in picture.iter_mut() {
                *v = blend(mean, *v, factor);
            }
        }
        Saturation => {
            for p in picture.chunks_exact_mut(3) {
                let grey = luma(p);
                for v in p.iter_mut() {
                    *v = blend(grey, *v, factor);
                }
            }
        }
        Hue => {
            for p in picture.chunks_exact_mut(3) {
                let [h, s, v] = rgb_to_hsv([p[0], p[1], p[2]]);
                // uint8 + float64 in numpy, cast back to uint8: truncated
                // towards zero, then wrapped.
                let shifted = (f64::from(h) + delta).trunc() as i64;
                let rgb = hsv_to_rgb([shifted.rem_euclid(256) as u8, s, v]);
                p.copy_from_slice(&rgb);
            }
        }
    }
}

/// PIL's `ImagingBlend` of one byte: `a + f * (b - a)` in single
/// precision, truncated; clipped when extrapolating.
fn blend(a: u8, b: u8, factor: f32) -> u8 {
    if factor == 0.0 {
        return a;
    }
    if factor == 1.0 {
        return b;
    }
    let value = f32::from(a) + factor * (i32::from(b) - i32::from(a)) as f32;
    // `as u8` truncates and saturates: within [0, 1] the value stays
    // between a and b anyway.
    value as u8
}

/// PIL's RGB -> L: ITU-R 601-2 luma in 16-bit fixed point, rounded.
fn luma(p: &[u8]) -> u8 {
    let l = u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000;
    (l >> 16) as u8
}

/// PIL's `rgb2hsv_row`: H, S, V on 0..255, with its float and double steps.
fn rgb_to_hsv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    if max == min {
        return [0, 0, max];
    }
    let range = f32::from(max - min);
    let s = range / f32::from(max);
    let rc = f32::from(max - r) / range;
    let gc = f32::from(max - g) / range;
    let bc = f32::from(max - b) / range;
    let h: f32 = if r == max {
        bc - gc
    } else if g == max {
        (2.0 + f64::from(rc) - f64::from(bc)) as f32
    } else {
        (4.0 + f64::from(gc) - f64::from(rc)) as f32
    };
    let h = ((f64::from(h) / 6.0 + 1.0) % 1.0) as f32;
    let to_byte = |x: f32| ((f64::from(x) * 255.0) as i32).clamp(0, 255) as u8;
    [to_byte(h), to_byte(s), max]
}

/// PIL's `hsv2rgb`.
fn hsv_to_rgb([h, s, v]: [u8; 3]) -> [u8; 3] {
    if s == 0 {
        return [v; 3];
    }
    let sector = (f64::from(h) * 6.0 / 255.0).floor() as i32;
    let f = (f64::from(h) * 6.0 / 255.0 - f64::from(sector)) as f32;
    let fs = (f64::from(s) / 255.0) as f32;
    let v_f = f64::from(v);
    let byte = |x: f64| (x.round() as i32).clamp(0, 255) as u8;
    let p = byte(v_f * (1.0 - f64::from(fs)));
    let q = byte(v_f * (1.0 - f64::from(fs * f)));
    let t = byte(v_f * (1.0 - f64::from(fs) * (1.0 - f64::from(f))));
    match sector % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::tests::gradient_sample;
    use crate::fixtures::{bytes, read};

    /// Each operation equals PIL's (`tests/fixtures/pil/make_fixtures.py`)
    /// byte for byte, for deltas shrinking and growing, and hue shifts that
    /// wrap both ways.
    #[test]
    fn each_operation_equals_pils_byte_for_byte() {
        let fixture = read("pil/distort.json");
        let picture = bytes(&fixture["picture"]);
        let cases = fixture["cases"].as_array().expect("cases");
        assert!(cases.len() >= 15);
        for case in cases {
            let op = match case["op"].as_str().expect("op") {
                "brightness" => Brightness,
                "contrast" => Contrast,
                "saturation" => Saturation,
                _ => Hue,
            };
            let delta = case["delta"].as_f64().expect("delta");
            let mut got = picture.clone();
            distort(&mut got, op, delta);
            let want = bytes(&case["pixels"]);
            let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(wrong, 0, "{op:?} {delta}: {wrong} bytes differ");
        }
    }

    #[test]
    fn hsv_round_trip_of_pure_colours() {
        for rgb in [[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90]] {
            assert_eq!(hsv_to_rgb(rgb_to_hsv(rgb)), rgb);
        }
    }

    fn params(probability: f64, count: usize, is_order: bool) -> RandomDistortParams {
        let range = |lower, upper| DistortRange {
            lower,
            upper,
            probability,
        };
        RandomDistortParams {
            brightness: range(0.875, 1.125),
            contrast: range(0.5, 1.5),
            saturation: range(0.5, 1.5),
            hue: range(-18.0, 18.0),
            count,
            is_order,
        }
    }

    /// With fixed deltas, `is_order` runs brightness, contrast, saturation,
    /// hue or brightness, saturation, hue, contrast (each seen), the first
    /// `count` of them only; without it any `count` of them.
    #[test]
    fn the_operations_run_in_paddledetections_orders() {
        let fixed = |v: f32| DistortRange {
            lower: v,
            upper: v,
            probability: 1.0,
        };
        let params = |count, is_order| RandomDistortParams {
            brightness: fixed(1.1),
            contrast: fixed(0.7),
            saturation: fixed(1.4),
            hue: fixed(9.0),
            count,
            is_order,
        };
        let delta = |op| match op {
            Brightness => 1.1,
            Contrast => 0.7,
            Saturation => 1.4,
            Hue => 9.0,
        };
        let base = gradient_sample(12, 9, &[]);
        let in_order = |ops: &[Operation]| {
            let mut picture: Vec<u8> = base.pixels.iter().map(|&v| v as u8).collect();
            for &op in ops {
                distort(&mut picture, op, delta(op));
            }
            picture.iter().map(|&v| f32::from(v)).collect::<Vec<f32>>()
        };
        let first = in_order(&[Brightness, Contrast, Saturation, Hue]);
        let second = in_order(&[Brightness, Saturation, Hue, Contrast]);
        assert_ne!(first, second);
        let (mut seen_first, mut seen_second) = (false, false);
        for seed in 0..40 {
            let mut s = base.clone();
            random_distort(&mut s, &params(4, true), &mut Rng::new(seed));
            seen_first |= s.pixels == first;
            seen_second |= s.pixels == second;
            assert!(s.pixels == first || s.pixels == second, "seed {seed}");
            let mut s = base.clone();
            random_distort(&mut s, &params(2, true), &mut Rng::new(seed));
            let two = [
                in_order(&[Brightness, Contrast]),
                in_order(&[Brightness, Saturation]),
            ];
            assert!(two.contains(&s.pixels), "seed {seed}");
            // Any two, in any order.
            let mut s = base.clone();
            random_distort(&mut s, &params(2, false), &mut Rng::new(seed));
            let ops = [Brightness, Contrast, Saturation, Hue];
            let any_two = ops.iter().flat_map(|&a| {
                ops.iter()
                    .filter(move |&&b| b != a)
                    .map(move |&b| in_order(&[a, b]))
            });
            assert!(any_two.into_iter().any(|p| p == s.pixels), "seed {seed}");
        }
        assert!(seen_first && seen_second);
    }

    /// Each operation draws its delta and its chance whether it runs or
    /// not, as operators.py does: what follows sees the same random stream.
    #[test]
    fn the_draws_do_not_depend_on_what_runs() {
        let mut after = Vec::new();
        for probability in [0.0, 0.5, 1.0] {
            let mut rng = Rng::new(11);
            let mut s = gradient_sample(5, 4, &[]);
            random_distort(&mut s, &params(probability, 3, true), &mut rng);
            after.push(rng.next_u64());
        }
        assert!(after.iter().all(|&a| a == after[0]), "{after:?}");
    }

    #[test]
    fn never_running_or_none_counted_leaves_the_picture() {
        let base = gradient_sample(9, 6, &[]);
        for (p, count, is_order) in [(0.0, 4, true), (0.0, 4, false), (1.0, 0, false)] {
            for seed in 0..10 {
                let mut s = base.clone();
                random_distort(&mut s, &params(p, count, is_order), &mut Rng::new(seed));
                assert_eq!(s, base);
            }
        }
    }

    #[test]
    fn always_running_changes_whole_values_within_range() {
        let base = gradient_sample(9, 6, &[]);
        let mut changed = 0;
        for seed in 0..10 {
            let mut s = base.clone();
            random_distort(&mut s, &params(1.0, 4, true), &mut Rng::new(seed));
            assert!(s
                .pixels
                .iter()
                .all(|&v| v.fract() == 0.0 && (0.0..=255.0).contains(&v)));
            changed += usize::from(s.pixels != base.pixels);
        }
        assert_eq!(changed, 10);
    }
}
