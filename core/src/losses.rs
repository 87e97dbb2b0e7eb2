//! The per-row loss functions the detection losses are made of, each
//! returning its value and writing its gradient, as Paddle's operators
//! compute them: `softmax_with_cross_entropy` (SSD's confidence, the R-CNN
//! box head's classification) and `smooth_l1` (SSD's and the R-CNN stages'
//! box regression).

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

/// Paddle's `smooth_l1` for one row, summed over its elements: with
/// `d = pred - target`, `0.5 * (sigma * d)^2` where `|d| < 1 / sigma^2`,
/// else `|d| - 0.5 / sigma^2`. The gradient with respect to `pred`, scaled
/// by `scale`, is written to `grad`. (Paddle's inside and outside weights
/// are 0 or 1 in every detector here: callers pass only the rows whose
/// weights are 1.)
pub fn smooth_l1(pred: &[f32], target: &[f32], sigma: f32, grad: &mut [f32], scale: f32) -> f32 {
    let sigma2 = sigma * sigma;
    let mut loss = 0.0;
    for ((&p, &t), g) in pred.iter().zip(target).zip(grad.iter_mut()) {
        let d = p - t;
        if d.abs() < 1.0 / sigma2 {
            loss += 0.5 * sigma2 * d * d;
            *g = scale * sigma2 * d;
        } else {
            loss += d.abs() - 0.5 / sigma2;
            *g = scale * d.signum();
        }
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
    fn smooth_l1_gradient_matches_finite_differences_for_any_seed() {
        for seed in SEEDS {
            let pred = random_vec(seed, 16);
            let target = random_vec(seed + 100, 16);
            for sigma in [1.0, 3.0] {
                let mut grad = vec![0.0; 16];
                smooth_l1(&pred, &target, sigma, &mut grad, 0.5);
                check_gradient(
                    "smooth_l1",
                    &pred,
                    &grad,
                    |p| probe(0.5 * smooth_l1(p, &target, sigma, &mut [0.0; 16], 1.0)),
                    GradCheck {
                        step: 1e-3,
                        ..GradCheck::default()
                    },
                )
                .unwrap_or_else(|e| panic!("seed {seed}, sigma {sigma}: {e}"));
            }
        }
    }

    #[test]
    fn smooth_l1_values_are_paddles_on_both_branches() {
        // sigma 3: d = 0.05 is inside 1/9 (0.5 * 9 * 0.05^2), d = -1.5 outside
        // (1.5 - 0.5 / 9).
        let mut grad = [0.0; 2];
        let value = smooth_l1(&[0.05, -1.5], &[0.0, 0.0], 3.0, &mut grad, 1.0);
        assert!((value - (0.01125 + 1.5 - 0.5 / 9.0)).abs() < 1e-6);
        assert_eq!(grad, [9.0 * 0.05, -1.0]);
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
