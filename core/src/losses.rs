//! The per-row loss functions the detection losses are made of, each
//! returning its value and writing its gradient, as Paddle's operators
//! compute them: `softmax_with_cross_entropy` (SSD's confidence, the R-CNN
//! box head's classification), `smooth_l1` (SSD's and the R-CNN stages'
//! box regression) and `sigmoid_cross_entropy_with_logits` (the Mask R-CNN
//! mask head); and the `softmax` that turns the same logits into scores at
//! test time.

/// Softmax cross-entropy of `logits` against `label`, and its gradient
/// `softmax - onehot` scaled by `scale` written to `grad` when given.
pub fn softmax_cross_entropy(logits: &[f32], label: usize, grad: Option<(&mut [f32], f32)>) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    let log_sum = sum.ln();
    if let Some((grad, scale)) = grad {
        for (c, (g, &v)) in grad.iter_mut().zip(logits).enumerate() {
            let p = (v - max - log_sum).exp();
            *g = scale * (p - if c == label { 1.0 } else { 0.0 });
        }
    }
    max + log_sum - logits[label]
}

/// Paddle's `sigmoid_cross_entropy_with_logits` of one logit `x` against a
/// `label` in [0, 1]: `max(x, 0) - x * label + log(1 + exp(-|x|))`, which
/// never overflows; written as the operator's kernel does (`log(1 + e)`, not
/// `ln_1p`) so that the values are Paddle's to the last bit. Its gradient
/// is `sigmoid(x) - label` (`sigmoid_cross_entropy_gradient`).
pub fn sigmoid_cross_entropy(x: f32, label: f32) -> f32 {
    x.max(0.0) - x * label + (1.0 + (-x.abs()).exp()).ln()
}

/// The gradient of `sigmoid_cross_entropy` with respect to `x`, as Paddle's
/// kernel computes it: `1 / (1 + exp(-x)) - label`.
pub fn sigmoid_cross_entropy_gradient(x: f32, label: f32) -> f32 {
    1.0 / (1.0 + (-x).exp()) - label
}

/// Paddle's `softmax` of one row of logits, in place: `exp(x - max)`
/// normalised to sum 1 (the probabilities `softmax_cross_entropy` compares
/// with the label; the detectors' outputs score boxes with them).
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// Paddle's `smooth_l1` for one row, summed over its elements: with
/// `d = inside * (pred - target)`, `outside * 0.5 * (sigma * d)^2` where
/// `|d| < 1 / sigma^2`, else `outside * (|d| - 0.5 / sigma^2)`. `weights`
/// are the optional `(inside, outside)` weights of the row (the R-CNN box
/// head's `bbox_inside_weights` and `bbox_outside_weights`); without them
/// both are 1 (SSD). The gradient with respect to `pred`,
/// `inside * outside * dloss/dd`, scaled by `scale`, is written to `grad`.
pub fn smooth_l1(
    pred: &[f32],
    target: &[f32],
    weights: Option<(&[f32], &[f32])>,
    sigma: f32,
    grad: &mut [f32],
    scale: f32,
) -> f32 {
    assert_eq!(pred.len(), target.len(), "smooth_l1: target length");
    assert_eq!(pred.len(), grad.len(), "smooth_l1: gradient length");
    if let Some((inside, outside)) = weights {
        assert_eq!(pred.len(), inside.len(), "smooth_l1: inside weights length");
        assert_eq!(
            pred.len(),
            outside.len(),
            "smooth_l1: outside weights length"
        );
    }
    let sigma2 = sigma * sigma;
    let mut loss = 0.0;
    for (k, ((&p, &t), g)) in pred.iter().zip(target).zip(grad.iter_mut()).enumerate() {
        let (inside, outside) = weights.map_or((1.0, 1.0), |(i, o)| (i[k], o[k]));
        let d = (p - t) * inside;
        let (value, slope) = if d.abs() < 1.0 / sigma2 {
            (0.5 * sigma2 * d * d, sigma2 * d)
        } else {
            (d.abs() - 0.5 / sigma2, d.signum())
        };
        loss += outside * value;
        *g = scale * outside * inside * slope;
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, random_vec, GradCheck, Probe, SEEDS};

    fn probe(value: f32) -> Probe {
        Probe {
            value: value as f64,
            magnitude: value.abs() as f64,
        }
    }

    #[test]
    fn sigmoid_cross_entropy_gradient_matches_finite_differences_for_any_seed() {
        for seed in SEEDS {
            // Logits in [-8, 8), labels 0, 1 and in between.
            let x: Vec<f32> = random_vec(seed, 24).iter().map(|v| 8.0 * v).collect();
            let labels: Vec<f32> = (0..24).map(|i| [0.0, 1.0, 0.3][i % 3]).collect();
            let grad: Vec<f32> = x
                .iter()
                .zip(&labels)
                .map(|(&v, &l)| sigmoid_cross_entropy_gradient(v, l))
                .collect();
            check_gradient(
                "sigmoid_cross_entropy",
                &x,
                &grad,
                |x| {
                    x.iter()
                        .zip(&labels)
                        .map(|(&v, &l)| probe(sigmoid_cross_entropy(v, l)))
                        .sum()
                },
                GradCheck {
                    step: 1e-3,
                    ..GradCheck::default()
                },
            )
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }

    #[test]
    fn sigmoid_cross_entropy_by_hand() {
        // x = 0: log 2 for any label; large |x| without overflow.
        assert_eq!(sigmoid_cross_entropy(0.0, 1.0), 2f32.ln());
        assert_eq!(sigmoid_cross_entropy(0.0, 0.0), 2f32.ln());
        assert_eq!(sigmoid_cross_entropy(100.0, 0.0), 100.0);
        assert_eq!(sigmoid_cross_entropy(100.0, 1.0), 0.0);
        assert_eq!(sigmoid_cross_entropy(-100.0, 0.0), 0.0);
        assert_eq!(sigmoid_cross_entropy_gradient(0.0, 1.0), -0.5);
        assert_eq!(sigmoid_cross_entropy_gradient(-100.0, 0.0), 0.0);
    }

    #[test]
    fn smooth_l1_gradient_matches_finite_differences_for_any_seed() {
        for seed in SEEDS {
            let pred = random_vec(seed, 16);
            let target = random_vec(seed + 100, 16);
            // Weights in [0, 2): the inside weight scales the difference
            // across the kink at 1 / sigma^2, the outside weight the result.
            let inside: Vec<f32> = random_vec(seed + 200, 16).iter().map(|w| w + 1.0).collect();
            let outside: Vec<f32> = random_vec(seed + 300, 16).iter().map(|w| w + 1.0).collect();
            for weights in [None, Some((&inside[..], &outside[..]))] {
                for sigma in [1.0, 3.0] {
                    let mut grad = vec![0.0; 16];
                    smooth_l1(&pred, &target, weights, sigma, &mut grad, 0.5);
                    check_gradient(
                        "smooth_l1",
                        &pred,
                        &grad,
                        |p| probe(0.5 * smooth_l1(p, &target, weights, sigma, &mut [0.0; 16], 1.0)),
                        GradCheck {
                            step: 1e-3,
                            ..GradCheck::default()
                        },
                    )
                    .unwrap_or_else(|e| {
                        panic!(
                            "seed {seed}, sigma {sigma}, weighted {}: {e}",
                            weights.is_some()
                        )
                    });
                }
            }
        }
    }

    #[test]
    fn smooth_l1_values_are_paddles_on_both_branches() {
        // sigma 3: d = 0.05 is inside 1/9 (0.5 * 9 * 0.05^2), d = -1.5 outside
        // (1.5 - 0.5 / 9).
        let mut grad = [0.0; 2];
        let value = smooth_l1(&[0.05, -1.5], &[0.0, 0.0], None, 3.0, &mut grad, 1.0);
        assert!((value - (0.01125 + 1.5 - 0.5 / 9.0)).abs() < 1e-6);
        assert_eq!(grad, [9.0 * 0.05, -1.0]);
    }

    #[test]
    fn smooth_l1_inside_weight_scales_the_difference_and_outside_the_loss() {
        // sigma 1, difference 0.8 (quadratic branch): inside 2 makes it 1.6
        // (linear branch, 1.6 - 0.5 = 1.1), outside 3 triples that; the
        // gradient is 3 * 2 * sign. Weights 0 remove an element.
        let mut grad = [0.0; 2];
        let value = smooth_l1(
            &[0.8, 5.0],
            &[0.0, 0.0],
            Some((&[2.0, 0.0], &[3.0, 1.0])),
            1.0,
            &mut grad,
            1.0,
        );
        assert!((value - 3.0 * 1.1).abs() < 1e-6, "{value}");
        assert_eq!(grad, [6.0, 0.0]);
    }

    #[test]
    fn softmax_is_the_cross_entropy_gradient_plus_the_one_hot() {
        let logits = [1.0, -2.0, 0.5, 3.0];
        let mut probabilities = logits;
        softmax_in_place(&mut probabilities);
        let mut grad = [0.0; 4];
        softmax_cross_entropy(&logits, 2, Some((&mut grad, 1.0)));
        for c in 0..4 {
            let one_hot = if c == 2 { 1.0 } else { 0.0 };
            assert!((probabilities[c] - (grad[c] + one_hot)).abs() < 1e-6);
        }
        assert!((probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn softmax_cross_entropy_gradient_matches_finite_differences_for_any_seed() {
        for seed in SEEDS {
            let logits = random_vec(seed, 6);
            let label = seed as usize % 6;
            let mut grad = vec![0.0; 6];
            softmax_cross_entropy(&logits, label, Some((&mut grad, 0.5)));
            check_gradient(
                "softmax_cross_entropy",
                &logits,
                &grad,
                |x| probe(0.5 * softmax_cross_entropy(x, label, None)),
                GradCheck::default(),
            )
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }
}
