//! Paddle's `box_coder` operator in its `center_size` form: a box as offsets
//! of its centre and logs of its size relative to a prior (SSD's priors,
//! R-CNN's anchors and proposals), each divided by a variance. SSD's loss
//! encodes its targets this way and its output decoder decodes predictions;
//! the R-CNN heads do the same with `bbox_reg_weights` as the variances.
//!
//! Boxes are `[x_min, y_min, x_max, y_max]`. With `normalized` false (pixel
//! boxes) a box's width is `x_max - x_min + 1`, as in Paddle.

/// `[x_min, y_min, x_max, y_max]`.
pub type BoxXyxy = [f32; 4];

/// A box as centre and size, with Paddle's `+1` for pixel boxes.
fn center_size(b: &BoxXyxy, normalized: bool) -> [f32; 4] {
    let one = if normalized { 0.0 } else { 1.0 };
    let w = b[2] - b[0] + one;
    let h = b[3] - b[1] + one;
    [b[0] + w / 2.0, b[1] + h / 2.0, w, h]
}

/// The deltas that turn `prior` into `target`:
/// `((tx - px) / pw / v0, (ty - py) / ph / v1, ln(tw / pw) / v2, ln(th / ph) / v3)`.
///
/// Paddle takes the centre of the target as `(x_min + x_max) / 2` (without the
/// pixel `+1`) but the prior's as `x_min + w / 2` (with it); both are kept,
/// so pixel-box targets match Paddle's to the last bit.
pub fn encode(
    prior: &BoxXyxy,
    variance: &[f32; 4],
    target: &BoxXyxy,
    normalized: bool,
) -> [f32; 4] {
    let [px, py, pw, ph] = center_size(prior, normalized);
    let one = if normalized { 0.0 } else { 1.0 };
    let tw = target[2] - target[0] + one;
    let th = target[3] - target[1] + one;
    let tx = (target[0] + target[2]) / 2.0;
    let ty = (target[1] + target[3]) / 2.0;
    [
        (tx - px) / pw / variance[0],
        (ty - py) / ph / variance[1],
        (tw / pw).abs().ln() / variance[2],
        (th / ph).abs().ln() / variance[3],
    ]
}

/// The box `deltas` describe relative to `prior` (the inverse of [`encode`]).
pub fn decode(
    prior: &BoxXyxy,
    variance: &[f32; 4],
    deltas: &[f32; 4],
    normalized: bool,
) -> BoxXyxy {
    let [px, py, pw, ph] = center_size(prior, normalized);
    let one = if normalized { 0.0 } else { 1.0 };
    let cx = variance[0] * deltas[0] * pw + px;
    let cy = variance[1] * deltas[1] * ph + py;
    let w = (variance[2] * deltas[2]).exp() * pw;
    let h = (variance[3] * deltas[3]).exp() * ph;
    [
        cx - w / 2.0,
        cy - h / 2.0,
        cx + w / 2.0 - one,
        cy + h / 2.0 - one,
    ]
}

/// Paddle's `BoxToDelta` (`detection/bbox_util.h`), the R-CNN operators'
/// regression targets of pixel box `target` relative to `prior` (an anchor
/// or a proposal): both centres taken as `x_min + w / 2` with the pixel
/// `+1` in `w` (unlike [`encode`], whose target centre is
/// `(x_min + x_max) / 2`), each delta divided by its weight (`[1; 4]` for
/// none: `rpn_target_assign`; `bbox_reg_weights`: `generate_proposal_labels`).
pub fn box_to_delta(prior: &BoxXyxy, target: &BoxXyxy, weights: &[f32; 4]) -> [f32; 4] {
    let [px, py, pw, ph] = center_size(prior, false);
    let [tx, ty, tw, th] = center_size(target, false);
    [
        (tx - px) / pw / weights[0],
        (ty - py) / ph / weights[1],
        (tw / pw).ln() / weights[2],
        (th / ph).ln() / weights[3],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{quad, quads, read};
    use proptest::prelude::*;

    fn a_box(normalized: bool) -> impl Strategy<Value = BoxXyxy> {
        let scale = if normalized { 1.0f32 } else { 640.0 };
        (0.0f32..0.8, 0.0f32..0.8, 0.05f32..0.5, 0.05f32..0.5)
            .prop_map(move |(x, y, w, h)| [x * scale, y * scale, (x + w) * scale, (y + h) * scale])
    }

    fn variance() -> impl Strategy<Value = [f32; 4]> {
        prop_oneof![
            Just([0.1, 0.1, 0.2, 0.2]),
            Just([1.0, 1.0, 1.0, 1.0]),
            (0.05f32..2.0).prop_map(|v| [v, v * 1.5, v * 0.5, v]),
        ]
    }

    fn case() -> impl Strategy<Value = (bool, BoxXyxy, BoxXyxy, [f32; 4])> {
        any::<bool>().prop_flat_map(|normalized| {
            (
                Just(normalized),
                a_box(normalized),
                a_box(normalized),
                variance(),
            )
        })
    }

    proptest! {
        /// Decoding the encoding gives the box back (up to f32 rounding of
        /// the log and the exp); pixel boxes come back half a pixel up and
        /// left, because of Paddle's two centre conventions.
        #[test]
        fn decode_inverts_encode((normalized, prior, target, var) in case()) {
            let back = decode(&prior, &var, &encode(&prior, &var, &target, normalized), normalized);
            let (scale, shift) = if normalized { (1.0, 0.0) } else { (640.0, 0.5) };
            for k in 0..4 {
                prop_assert!(
                    (back[k] - (target[k] - shift)).abs() <= 2e-5 * scale,
                    "{back:?} vs {target:?}"
                );
            }
        }

        /// A target equal to its prior has zero deltas (normalised boxes: the
        /// two centre conventions agree only when the `+1` is 0).
        #[test]
        fn a_prior_encodes_itself_as_zero((_, prior, _, var) in case()) {
            let deltas = encode(&prior, &var, &prior, true);
            prop_assert!(deltas.iter().all(|d| d.abs() < 1e-5), "{deltas:?}");
        }
    }

    /// Paddle's `box_coder` on fixed priors, per-prior variances, targets
    /// and deltas (`core/tests/fixtures/box_coder/make_fixtures.py`).
    #[test]
    fn equals_paddles_box_coder() {
        let cases = read("box_coder/box_coder.json");
        for case in cases.as_array().expect("cases") {
            let normalized = case["normalized"].as_bool().expect("normalized");
            let priors = quads(&case["priors"]);
            let variances = quads(&case["variances"]);
            let close = |got: [f32; 4], want: [f32; 4], what: &str| {
                for k in 0..4 {
                    let tolerance = 1e-5 * (1.0 + want[k].abs());
                    assert!(
                        (got[k] - want[k]).abs() <= tolerance,
                        "{what}: {got:?} vs {want:?}"
                    );
                }
            };
            for (t, target) in case["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .enumerate()
            {
                for (p, prior) in priors.iter().enumerate() {
                    let want = quad(&case["encoded"][t][p]);
                    close(
                        encode(prior, &variances[p], &quad(target), normalized),
                        want,
                        "encode",
                    );
                }
            }
            for (row, deltas) in case["deltas"]
                .as_array()
                .expect("deltas")
                .iter()
                .enumerate()
            {
                for (p, prior) in priors.iter().enumerate() {
                    let want = quad(&case["decoded"][row][p]);
                    close(
                        decode(prior, &variances[p], &quad(&deltas[p]), normalized),
                        want,
                        "decode",
                    );
                }
            }
        }
    }

    #[test]
    fn box_to_delta_takes_both_centres_with_the_pixel() {
        // The same 10-pixel box: zero deltas (encode gives -0.05, above).
        let b = [0.0, 0.0, 9.0, 9.0];
        assert_eq!(box_to_delta(&b, &b, &[1.0; 4]), [0.0; 4]);
        // Target 20 pixels wide centred 10 pixels right: dx = 10 / 10,
        // dw = ln 2, divided by the weights.
        let t = [5.0, 0.0, 24.0, 9.0];
        let d = box_to_delta(&b, &t, &[0.1, 0.1, 0.2, 0.2]);
        let want = [10.0, 0.0, 2f32.ln() / 0.2, 0.0];
        for k in 0..4 {
            assert!((d[k] - want[k]).abs() < 1e-6, "{d:?} vs {want:?}");
        }
    }

    #[test]
    fn pixel_boxes_use_paddles_centres() {
        // Prior 0..9 is 10 pixels wide with centre 5 (x_min + w / 2); the
        // target 0..9 has centre 4.5 ((x_min + x_max) / 2): Paddle's encoding
        // of a box onto itself is -0.05, not 0.
        let b = [0.0, 0.0, 9.0, 9.0];
        let deltas = encode(&b, &[1.0; 4], &b, false);
        assert_eq!(deltas, [-0.05, -0.05, 0.0, 0.0]);
    }
}
