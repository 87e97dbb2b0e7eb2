//! Paddle's `anchor_generator` operator: the RPN's anchors for one feature
//! map, `A = len(aspect_ratios) * len(anchor_sizes)` per cell, in the
//! operator's output order `[H, W, A, 4]`, so anchor `(h * W + w) * A + a`
//! is the one `rpn_cls_logits` channel `a` scores at `(h, w)` once Paddle
//! transposes the head's outputs to `[N, H, W, A]`. Within a cell the
//! ratios are the outer loop and the sizes the inner one.
//!
//! Paddle rounds each ratio's base shape to whole pixels of a stride-sized
//! square before scaling it to the anchor size, so anchors are not exactly
//! `size^2` in area nor exactly `ratio` in aspect; the arithmetic below is
//! the operator's, in f32, to the bit.

use crate::box_coder::BoxXyxy;
use crate::models::retina_head::RetinaHeadSpec;
use crate::models::rpn_head::{AnchorGeneratorSpec, RpnHeadSpec};

/// Paddle's `offset` attribute (PaddleDetection keeps its default): a cell's
/// anchors are centred at `offset * (stride - 1)` pixels into it.
const OFFSET: f32 = 0.5;

/// Anchors and their variances, one of each per anchor.
#[derive(Debug, Clone, PartialEq)]
pub struct Anchors {
    pub boxes: Vec<BoxXyxy>,
    pub variances: Vec<[f32; 4]>,
}

/// The anchors of a `height` x `width` feature map, anchor
/// `(h * width + w) * A + a`.
pub fn anchor_generator(spec: &AnchorGeneratorSpec, height: usize, width: usize) -> Anchors {
    let [stride_w, stride_h] = spec.stride;
    // Each anchor's width and height, the same in every cell.
    let mut shapes = Vec::with_capacity(spec.aspect_ratios.len() * spec.anchor_sizes.len());
    for &ratio in &spec.aspect_ratios {
        for &size in &spec.anchor_sizes {
            let area_ratio = stride_w * stride_h / ratio;
            let base_w = area_ratio.sqrt().round();
            let base_h = (base_w * ratio).round();
            shapes.push([size / stride_w * base_w, size / stride_h * base_h]);
        }
    }
    let count = height * width * shapes.len();
    let mut boxes = Vec::with_capacity(count);
    for h in 0..height {
        for w in 0..width {
            let x_ctr = w as f32 * stride_w + OFFSET * (stride_w - 1.0);
            let y_ctr = h as f32 * stride_h + OFFSET * (stride_h - 1.0);
            for &[anchor_w, anchor_h] in &shapes {
                boxes.push([
                    x_ctr - 0.5 * (anchor_w - 1.0),
                    y_ctr - 0.5 * (anchor_h - 1.0),
                    x_ctr + 0.5 * (anchor_w - 1.0),
                    y_ctr + 0.5 * (anchor_h - 1.0),
                ]);
            }
        }
    }
    Anchors {
        boxes,
        variances: vec![spec.variance; count],
    }
}

/// The anchors of an RPN head over its features, `feature_sizes[i]` being
/// `[height, width]` of level `min_level + i` (FPN) or of the one feature
/// (C4), the levels one after another as `FPNRPNHead.get_loss` concatenates
/// them (and the head's outputs, see `rpn_loss`).
pub fn rpn_anchors(spec: &RpnHeadSpec, feature_sizes: &[[usize; 2]]) -> Anchors {
    let first_level = spec.levels.as_ref().map_or(0, |l| l.min_level);
    levels_anchors(feature_sizes, |i| spec.level_anchors(first_level + i))
}

/// The anchors of RetinaNet's head over pyramid levels `min_level..`,
/// `feature_sizes[i]` being `[height, width]` of level `min_level + i`,
/// lowest level first as `RetinaHead` concatenates them (and the head's
/// outputs).
pub fn retina_anchors(spec: &RetinaHeadSpec, feature_sizes: &[[usize; 2]]) -> Anchors {
    levels_anchors(feature_sizes, |i| spec.level_anchors(spec.min_level + i))
}

/// The anchors of each feature map, the `i`-th from `generator(i)`, one
/// level after another.
fn levels_anchors(
    feature_sizes: &[[usize; 2]],
    generator: impl Fn(usize) -> AnchorGeneratorSpec,
) -> Anchors {
    let mut all = Anchors {
        boxes: Vec::new(),
        variances: Vec::new(),
    };
    for (i, &[height, width]) in feature_sizes.iter().enumerate() {
        let level = anchor_generator(&generator(i), height, width);
        all.boxes.extend(level.boxes);
        all.variances.extend(level.variances);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, quads, read};
    use crate::models::rpn_head::RpnLevels;
    use proptest::prelude::*;

    fn spec() -> impl Strategy<Value = AnchorGeneratorSpec> {
        (
            prop::collection::vec(8.0f32..600.0, 1..4),
            prop::collection::vec(0.25f32..4.0, 1..4),
            prop::sample::select(vec![4.0f32, 8.0, 16.0, 32.0, 64.0]),
            prop::sample::select(vec![4.0f32, 8.0, 16.0, 32.0, 64.0]),
        )
            .prop_map(
                |(anchor_sizes, aspect_ratios, sw, sh)| AnchorGeneratorSpec {
                    anchor_sizes,
                    aspect_ratios,
                    stride: [sw, sh],
                    variance: [0.1, 0.1, 0.2, 0.2],
                },
            )
    }

    proptest! {
        /// `H * W * A` anchors; those of cell `(h, w)` centred on
        /// `(w * sw + (sw - 1) / 2, h * sh + (sh - 1) / 2)`; each about
        /// `size^2` in area and `ratio` in aspect, off by no more than
        /// rounding the base shape to whole pixels allows.
        #[test]
        fn anchors_sit_on_the_stride_grid_with_their_sizes(
            spec in spec(), height in 1usize..6, width in 1usize..6,
        ) {
            let anchors = anchor_generator(&spec, height, width);
            let per_cell = spec.anchor_sizes.len() * spec.aspect_ratios.len();
            prop_assert_eq!(anchors.boxes.len(), height * width * per_cell);
            prop_assert!(anchors.variances.iter().all(|v| *v == spec.variance));
            let [sw, sh] = spec.stride;
            for (i, b) in anchors.boxes.iter().enumerate() {
                let (cell, a) = (i / per_cell, i % per_cell);
                let (h, w) = ((cell / width) as f32, (cell % width) as f32);
                let cx = (b[0] + b[2]) / 2.0;
                let cy = (b[1] + b[3]) / 2.0;
                prop_assert!((cx - (w * sw + (sw - 1.0) / 2.0)).abs() < 1e-3, "{b:?}");
                prop_assert!((cy - (h * sh + (sh - 1.0) / 2.0)).abs() < 1e-3, "{b:?}");
                let ratio = spec.aspect_ratios[a / spec.anchor_sizes.len()];
                let size = spec.anchor_sizes[a % spec.anchor_sizes.len()];
                // Base shape: bw = sqrt(S / r) + e1, bh = bw * r + e2 with
                // |e1|, |e2| <= 1/2 (S = sw * sh); the area relative to
                // size^2 is then bw * bh / S, off by at most the bound below.
                let s = sw * sh;
                let base_w = (s / ratio).sqrt().round();
                let bound = (ratio / s).sqrt() + 0.25 * ratio / s + 0.5 * base_w / s;
                let area = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
                prop_assert!(
                    (area / (size * size) - 1.0).abs() <= bound + 1e-4,
                    "{b:?}: area {area} vs {size}^2 (bound {bound})"
                );
            }
        }
    }

    #[test]
    fn cell_order_is_ratios_outer_sizes_inner() {
        let spec = AnchorGeneratorSpec {
            anchor_sizes: vec![32.0, 64.0],
            aspect_ratios: vec![0.5, 1.0],
            stride: [16.0, 16.0],
            variance: [1.0; 4],
        };
        let a = anchor_generator(&spec, 1, 2);
        // Ratio 0.5: base 23 x 12 (sqrt(512) = 22.6); ratio 1: 16 x 16;
        // sizes scale them by 2 and 4. Centre (7.5, 7.5).
        let width = |b: &BoxXyxy| b[2] - b[0] + 1.0;
        let widths: Vec<f32> = a.boxes[..4].iter().map(width).collect();
        assert_eq!(widths, [46.0, 92.0, 32.0, 64.0]);
        assert_eq!(a.boxes[2], [-8.0, -8.0, 23.0, 23.0]);
        // Cell (0, 1) is 16 pixels right.
        assert_eq!(a.boxes[6], [8.0, -8.0, 39.0, 23.0]);
    }

    /// Paddle's anchors for the fixture's C4 feature and FPN levels
    /// (`core/tests/fixtures/faster_rcnn/rpn_targets.py`).
    #[test]
    fn equals_paddles_anchor_generator() {
        let fixture = read("faster_rcnn/rpn_targets.json");
        for case in ["c4", "fpn"] {
            let levels = fixture[case]["levels"].as_array().expect("levels");
            let mut sizes = Vec::new();
            let mut want = Vec::new();
            for level in levels {
                let dim = |k: &str| level[k].as_u64().expect("a size") as usize;
                sizes.push([dim("height"), dim("width")]);
                want.extend(quads(&level["anchors"]));
                let generator = AnchorGeneratorSpec {
                    anchor_sizes: floats(&level["anchor_sizes"]),
                    stride: [level["stride"].as_f64().expect("stride") as f32; 2],
                    ..AnchorGeneratorSpec::faster_rcnn()
                };
                let one = anchor_generator(&generator, dim("height"), dim("width"));
                assert_eq!(one.boxes, quads(&level["anchors"]), "{case}");
                assert_eq!(one.variances, quads(&level["variances"]), "{case}");
            }
            let spec = RpnHeadSpec {
                channels: 8,
                anchors: AnchorGeneratorSpec::faster_rcnn(),
                levels: (case == "fpn").then_some(RpnLevels {
                    anchor_start_size: 32.0,
                    min_level: 2,
                    max_level: 3,
                }),
            };
            assert_eq!(rpn_anchors(&spec, &sizes).boxes, want, "{case}");
        }
    }

    /// Paddle's anchors for RetinaNet's P3..P7 on a 64x96 input
    /// (`core/tests/fixtures/retinanet/anchors.py`, `RetinaHead` of
    /// `retinanet_r50_fpn_1x.yml`): the sizes each level computes and every
    /// anchor and variance, to the bit.
    #[test]
    fn retina_anchors_equal_paddles() {
        let fixture = read("retinanet/anchors.json");
        let spec = RetinaHeadSpec::r50_fpn(81);
        let mut sizes = Vec::new();
        let mut want = Anchors {
            boxes: Vec::new(),
            variances: Vec::new(),
        };
        for level in fixture["levels"].as_array().expect("levels") {
            let dim = |k: &str| level[k].as_u64().expect("a size") as usize;
            let generator = spec.level_anchors(dim("level"));
            assert_eq!(generator.anchor_sizes, floats(&level["anchor_sizes"]));
            sizes.push([dim("height"), dim("width")]);
            want.boxes.extend(quads(&level["anchors"]));
            want.variances.extend(quads(&level["variances"]));
        }
        assert_eq!(sizes.len(), 5, "P3..P7");
        let ours = retina_anchors(&spec, &sizes);
        assert_eq!(ours.boxes.len(), (96 + 24 + 6 + 2 + 1) * 9);
        assert_eq!(ours, want);
    }
}
