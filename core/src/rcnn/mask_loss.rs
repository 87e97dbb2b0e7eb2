//! The mask head's loss, as PaddleDetection's `MaskHead.get_loss` writes it
//! with Paddle's operators, and its gradient with respect to the logits.
//!
//! The head's `[R, num_classes, M, M]` logits are reshaped to
//! `[R, num_classes * M * M]`, the rows of `generate_mask_labels`'
//! `MaskInt32` (0/1 in each RoI's class, -1 elsewhere), and
//! `reduce_sum(sigmoid_cross_entropy_with_logits(logits, targets,
//! ignore_index=-1, normalize=True))` is the loss: every element whose
//! target is not -1 costs its sigmoid cross-entropy, and `normalize` divides
//! each by the number `n` of such elements (`R * M * M` when every RoI is
//! foreground: the mean over the targeted pixels, whatever the class count).
//! The gradient is `(sigmoid(x) - target) / n` on those elements, 0 on the
//! others.
//!
//! Paddle computes `n` as an `int` and bounds it below by `1e-5` cast to
//! `int`, i.e. 0: a batch whose every target is -1 (no image with a
//! foreground RoI) divides 0 by 0, and its loss and gradients are NaN. We
//! return 0 and zero gradients instead; PaddleDetection's training never
//! meets the case, since every image it trains on has an object and
//! `generate_proposal_labels` keeps the objects' own boxes as foreground.

use crate::losses::{sigmoid_cross_entropy, sigmoid_cross_entropy_gradient};

/// The loss of `logits` against `targets` (both `[R, num_classes * M * M]`,
/// targets -1, 0 or 1); its gradient overwrites `grad`.
pub fn mask_loss(logits: &[f32], targets: &[i32], grad: &mut [f32]) -> f32 {
    assert_eq!(
        logits.len(),
        targets.len(),
        "mask_loss: one target per logit"
    );
    assert_eq!(grad.len(), logits.len(), "mask_loss: gradient length");
    let counted = targets.iter().filter(|&&t| t != -1).count();
    grad.fill(0.0);
    if counted == 0 {
        return 0.0;
    }
    let n = counted as f32;
    let mut loss = 0.0f64;
    for ((&x, &t), g) in logits.iter().zip(targets).zip(grad.iter_mut()) {
        if t == -1 {
            continue;
        }
        let label = t as f32;
        loss += (sigmoid_cross_entropy(x, label) / n) as f64;
        *g = sigmoid_cross_entropy_gradient(x, label) / n;
    }
    loss as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, read};
    use crate::gradcheck::{check_gradient, random_vec, GradCheck, Probe, SEEDS};

    /// The targets' rows as the fixture writes them ('.' -1, '0', '1').
    fn targets_of(rows: &serde_json::Value) -> Vec<i32> {
        rows.as_array()
            .expect("images")
            .iter()
            .flat_map(|image| image.as_array().expect("rows").iter())
            .flat_map(|r| r.as_str().expect("a row").chars())
            .map(|c| match c {
                '.' => -1,
                '0' => 0,
                _ => 1,
            })
            .collect()
    }

    /// The fixture's logits: `((i * 7919) % 2001 - 1000) / 125`, exact in f32.
    fn logits(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as i64 * 7919) % 2001 - 1000) as f32 / 125.0)
            .collect()
    }

    /// Paddle's `sigmoid_cross_entropy_with_logits(ignore_index=-1,
    /// normalize=True)` + `reduce_sum` on the resolution-14 targets of
    /// `core/tests/fixtures/mask_rcnn/mask_labels.py`: loss within f32
    /// summation order, gradient equal; all-ignored targets are NaN there,
    /// 0 here.
    #[test]
    fn equals_paddles_mask_loss() {
        let fixture = read("mask_rcnn/mask_labels.json");
        let case = &fixture["cases"][0];
        assert_eq!(case["resolution"], 14);
        let all = targets_of(&case["mask_int32"]);
        let cases = fixture["loss_cases"].as_array().expect("loss cases");
        let rows = cases[0]["rows"].as_u64().expect("rows") as usize;
        let x = logits(all.len());
        let mut grad = vec![0.0; x.len()];
        let loss = mask_loss(&x, &all, &mut grad);
        let expected = cases[0]["loss"].as_f64().expect("loss") as f32;
        assert_eq!(rows * 5 * 196, all.len());
        assert!(
            (loss - expected).abs() <= 1e-6 * expected,
            "{loss} vs {expected}"
        );
        let paddle = floats(&cases[0]["grad"]);
        let differing = grad.iter().zip(&paddle).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "gradients differ");

        // Image 1's single all -1 row.
        assert!(cases[1]["loss"].is_null() && cases[1]["grad_is_nan"] == true);
        let row = 5 * 196;
        let ignored = &all[all.len() - row..];
        assert!(ignored.iter().all(|&t| t == -1));
        let mut grad = vec![1.0; row];
        assert_eq!(mask_loss(&x[..row], ignored, &mut grad), 0.0);
        assert!(grad.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn mean_over_targeted_pixels_by_hand() {
        // Two targeted logits at 0 (log 2 each), one ignored: mean log 2.
        let mut grad = [9.0; 3];
        let loss = mask_loss(&[0.0, 5.0, 0.0], &[1, -1, 0], &mut grad);
        assert!((loss - 2f32.ln()).abs() < 1e-7);
        assert_eq!(grad, [-0.25, 0.0, 0.25]);
    }

    #[test]
    fn mask_loss_gradient_matches_finite_differences_for_any_seed() {
        for seed in SEEDS {
            let x: Vec<f32> = random_vec(seed, 60).iter().map(|v| 6.0 * v).collect();
            let targets: Vec<i32> = random_vec(seed + 100, 60)
                .iter()
                .map(|v| (v * 1.5).round() as i32)
                .collect();
            assert!(targets.contains(&-1) && targets.contains(&1));
            let mut grad = vec![0.0; 60];
            mask_loss(&x, &targets, &mut grad);
            check_gradient(
                "mask_loss",
                &x,
                &grad,
                |x| {
                    let value = mask_loss(x, &targets, &mut [0.0; 60]);
                    Probe {
                        value: value as f64,
                        magnitude: value.abs() as f64,
                    }
                },
                GradCheck {
                    step: 1e-3,
                    ..GradCheck::default()
                },
            )
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }
}
