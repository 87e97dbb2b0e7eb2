//! SSD's prior (default) boxes, as Paddle's `prior_box` operator makes them
//! and `multi_box_head` configures it for each feature level.
//!
//! The priors depend only on the image and feature-map sizes, never on the
//! weights or the data, so they are computed once per input size on the host
//! and kept with the model; no kernel recomputes them every step.

/// The `prior_box` settings of one feature level.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorBoxLevel {
    pub min_sizes: Vec<f32>,
    /// Empty, or one per min size: adds a square prior of side
    /// `sqrt(min * max)` after each min size's priors.
    pub max_sizes: Vec<f32>,
    /// As configured; `expanded_aspect_ratios` adds 1 and the flips.
    pub aspect_ratios: Vec<f32>,
    pub flip: bool,
    pub clip: bool,
    /// Pixels between neighbouring prior centres, `[w, h]`; 0 means the
    /// image size divided by the feature-map size.
    pub step: [f32; 2],
    pub offset: f32,
    /// Paddle's `min_max_aspect_ratios_order`: the min and max squares first,
    /// then the other ratios (Caffe's order), instead of all ratios then max.
    pub min_max_order: bool,
}

/// Within this distance two aspect ratios are the same one (Paddle's test).
const SAME_RATIO: f32 = 1e-6;

impl PriorBoxLevel {
    /// `[1, r1, 1/r1, r2, 1/r2, ...]` (the flips only with `flip`), each
    /// ratio once.
    pub fn expanded_aspect_ratios(&self) -> Vec<f32> {
        let mut ratios = vec![1.0f32];
        for &ratio in &self.aspect_ratios {
            if ratios.iter().any(|r| (r - ratio).abs() < SAME_RATIO) {
                continue;
            }
            ratios.push(ratio);
            if self.flip {
                ratios.push(1.0 / ratio);
            }
        }
        ratios
    }

    /// Priors per feature-map cell.
    pub fn priors_per_cell(&self) -> usize {
        self.expanded_aspect_ratios().len() * self.min_sizes.len() + self.max_sizes.len()
    }

    /// The priors of a `feature_h x feature_w` map over an `image_h x
    /// image_w` image, cell by cell in row-major order, each
    /// `[x_min, y_min, x_max, y_max]` normalised by the image size.
    pub fn priors(
        &self,
        [feature_h, feature_w]: [usize; 2],
        [image_h, image_w]: [usize; 2],
    ) -> Vec<[f32; 4]> {
        let ratios = self.expanded_aspect_ratios();
        let (image_w, image_h) = (image_w as f32, image_h as f32);
        let (step_w, step_h) = if self.step[0] == 0.0 || self.step[1] == 0.0 {
            (image_w / feature_w as f32, image_h / feature_h as f32)
        } else {
            (self.step[0], self.step[1])
        };
        let mut out = Vec::with_capacity(feature_h * feature_w * self.priors_per_cell());
        for row in 0..feature_h {
            for col in 0..feature_w {
                let cx = (col as f32 + self.offset) * step_w;
                let cy = (row as f32 + self.offset) * step_h;
                // Half sizes, as the operator computes them.
                let mut push = |half_w: f32, half_h: f32| {
                    out.push([
                        (cx - half_w) / image_w,
                        (cy - half_h) / image_h,
                        (cx + half_w) / image_w,
                        (cy + half_h) / image_h,
                    ])
                };
                for (s, &min) in self.min_sizes.iter().enumerate() {
                    let max_square = self.max_sizes.get(s).map(|&max| (min * max).sqrt() / 2.0);
                    if self.min_max_order {
                        push(min / 2.0, min / 2.0);
                        if let Some(half) = max_square {
                            push(half, half);
                        }
                        for &ratio in ratios.iter().filter(|r| (*r - 1.0).abs() >= SAME_RATIO) {
                            push(min * ratio.sqrt() / 2.0, min / ratio.sqrt() / 2.0);
                        }
                    } else {
                        for &ratio in &ratios {
                            push(min * ratio.sqrt() / 2.0, min / ratio.sqrt() / 2.0);
                        }
                        if let Some(half) = max_square {
                            push(half, half);
                        }
                    }
                }
            }
        }
        if self.clip {
            for prior in &mut out {
                for v in prior.iter_mut() {
                    *v = v.clamp(0.0, 1.0);
                }
            }
        }
        out
    }
}

/// `multi_box_head`'s sizes when the config gives `min_ratio`/`max_ratio`
/// instead of lists: percentages of `base_size` in equal steps over the
/// levels after the first, whose sizes are 10% and 20%. Returns
/// `(min_sizes, max_sizes)`, one per level.
pub fn sizes_from_ratios(
    levels: usize,
    base_size: f32,
    min_ratio: i64,
    max_ratio: i64,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    if levels <= 2 {
        return Err(format!(
            "multi_box_head: {levels} feature levels need explicit min_sizes and max_sizes"
        ));
    }
    let step = (max_ratio - min_ratio).div_euclid(levels as i64 - 2);
    if step <= 0 {
        return Err(format!(
            "multi_box_head: max_ratio {max_ratio} must exceed min_ratio {min_ratio} by at least {} levels",
            levels - 2
        ));
    }
    let mut min_sizes = vec![base_size * 0.10];
    let mut max_sizes = vec![base_size * 0.20];
    let mut ratio = min_ratio;
    while ratio <= max_ratio {
        min_sizes.push(base_size * ratio as f32 / 100.0);
        max_sizes.push(base_size * (ratio + step) as f32 / 100.0);
        ratio += step;
    }
    Ok((min_sizes, max_sizes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, read};
    use proptest::prelude::*;

    /// The priors Paddle's `prior_box` made for MobileNet-SSD's six levels at
    /// 300x300 (`core/tests/fixtures/ssd/make_fixtures.py`), from the
    /// operator attributes it recorded with them.
    #[test]
    fn priors_equal_paddles_for_mobilenet_ssd() {
        let fixture = read("ssd/ssd_mobilenet_v1_voc.priors.json");
        let mut total = 0;
        for level in fixture["levels"].as_array().expect("levels") {
            let attrs = &level["attrs"];
            let step_w = attrs["step_w"].as_f64().expect("step_w") as f32;
            let step_h = attrs["step_h"].as_f64().expect("step_h") as f32;
            let config = PriorBoxLevel {
                min_sizes: floats(&attrs["min_sizes"]),
                max_sizes: floats(&attrs["max_sizes"]),
                aspect_ratios: floats(&attrs["aspect_ratios"]),
                flip: attrs["flip"].as_bool().expect("flip"),
                clip: attrs["clip"].as_bool().expect("clip"),
                step: [step_w, step_h],
                offset: attrs["offset"].as_f64().expect("offset") as f32,
                min_max_order: attrs["min_max_aspect_ratios_order"]
                    .as_bool()
                    .expect("order"),
            };
            let feature = floats(&level["feature"]);
            let feature = [feature[0] as usize, feature[1] as usize];
            assert_eq!(
                config.priors_per_cell(),
                level["priors_per_cell"].as_u64().expect("count") as usize
            );
            let got = config.priors(feature, [300, 300]);
            let want = floats(&level["boxes"]);
            assert_eq!(got.len() * 4, want.len(), "level {feature:?}");
            for (i, (g, w)) in got.iter().flatten().zip(&want).enumerate() {
                // The fixture keeps six decimals.
                assert!(
                    (g - w).abs() <= 1e-6,
                    "level {feature:?} value {i}: {g} vs {w}"
                );
            }
            total += got.len();
        }
        assert_eq!(total, 1917);
    }

    #[test]
    fn sizes_from_ratios_follow_multi_box_head() {
        // The SSD paper's 300x300 setting: ratios 20..90 over six levels.
        let (min, max) = sizes_from_ratios(6, 300.0, 20, 90).expect("sizes");
        assert_eq!(min, vec![30.0, 60.0, 111.0, 162.0, 213.0, 264.0]);
        assert_eq!(max, vec![60.0, 111.0, 162.0, 213.0, 264.0, 315.0]);
        assert!(sizes_from_ratios(2, 300.0, 20, 90).is_err());
        assert!(sizes_from_ratios(6, 300.0, 90, 20).is_err());
    }

    proptest! {
        /// Every prior is centred on its cell and has the area and aspect
        /// ratio its place in the cell's list says; clipping keeps all
        /// coordinates in [0, 1].
        #[test]
        fn priors_have_the_sizes_and_centres_they_claim(
            fh in 1usize..6, fw in 1usize..6,
            min in 8.0f32..80.0, extra in 1.0f32..40.0,
            r in 1.5f32..4.0, flip: bool, clip: bool, order: bool, with_max: bool,
        ) {
            let level = PriorBoxLevel {
                min_sizes: vec![min],
                max_sizes: if with_max { vec![min + extra] } else { vec![] },
                aspect_ratios: vec![r, 1.0, r],
                flip, clip,
                step: [0.0, 0.0],
                offset: 0.5,
                min_max_order: order,
            };
            let ratios = level.expanded_aspect_ratios();
            prop_assert_eq!(ratios.len(), if flip { 3 } else { 2 });
            let per_cell = level.priors_per_cell();
            let priors = level.priors([fh, fw], [120, 96]);
            prop_assert_eq!(priors.len(), fh * fw * per_cell);
            for (i, p) in priors.iter().enumerate() {
                if clip {
                    prop_assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
                    continue;
                }
                let cell = i / per_cell;
                let cx = (p[0] + p[2]) / 2.0 * 96.0;
                let cy = (p[1] + p[3]) / 2.0 * 120.0;
                prop_assert!((cx - ((cell % fw) as f32 + 0.5) * 96.0 / fw as f32).abs() < 1e-3);
                prop_assert!((cy - ((cell / fw) as f32 + 0.5) * 120.0 / fh as f32).abs() < 1e-3);
                let (w, h) = ((p[2] - p[0]) * 96.0, (p[3] - p[1]) * 120.0);
                let area = w * h;
                let square = (i % per_cell == 0) || (with_max && order && i % per_cell == 1)
                    || (with_max && !order && i % per_cell == per_cell - 1);
                if square {
                    prop_assert!((w - h).abs() < 1e-3 * w.max(1.0));
                } else {
                    prop_assert!((area - min * min).abs() < 1e-3 * min * min);
                }
            }
        }
    }
}
