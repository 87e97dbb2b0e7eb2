//! Finite-difference gradient checks, shared by the layer tests here and the
//! model tests elsewhere.
//!
//! A layer's backward is checked through a scalar probe loss
//! `L = sum(y * r)` with fixed random `r`: its gradient with respect to the
//! output is `r`, so running backward with `dy = r` must give `dL/dx`, which
//! is compared with central differences of `L`.
//!
//! The layers run in f32, so a difference quotient carries two errors, and the
//! tolerance is the sum of both, each derived from the step `h` instead of
//! tuned per test:
//! - truncation (and ReLU kinks crossed inside the step), which shrinks as
//!   `h^2`: the quotient is taken at `h` and at `h/2`, their Richardson
//!   extrapolation `(4 D(h/2) - D(h)) / 3` is the numeric gradient, and
//!   `|D(h) - D(h/2)|` bounds what is left of the truncation error;
//! - rounding, which grows as `1/h`: every f32 output of the loss is off by
//!   at most `depth * eps32` of its size, so `L` is off by at most
//!   `noise = depth * eps32 * sum |terms|` (the `magnitude` of the `Probe`)
//!   and the extrapolated quotient by at most `3 * noise / h`.
//!
//! The analytic gradient itself is f32 arithmetic too, and is allowed
//! `depth * eps32` of the largest gradient entry.

/// Deterministic values in `[-1, 1)` (xorshift64*), so every run checks the
/// same numbers for a given seed.
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

/// The seeds every gradient check runs for: a check that holds for one seed
/// only is tuned, not derived.
pub const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

/// A loss value in f64 together with the sum of the absolute values of the
/// f32 terms it adds up, which sets how much f32 rounding it can carry.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Probe {
    pub value: f64,
    pub magnitude: f64,
}

impl std::iter::Sum for Probe {
    fn sum<I: Iterator<Item = Probe>>(iter: I) -> Probe {
        iter.fold(Probe::default(), |a, b| Probe {
            value: a.value + b.value,
            magnitude: a.magnitude + b.magnitude,
        })
    }
}

/// `sum(y * r)` in f64.
pub fn probe_loss(y: &[f32], r: &[f32]) -> Probe {
    assert_eq!(
        y.len(),
        r.len(),
        "probe_loss: output and probe lengths differ"
    );
    y.iter()
        .zip(r)
        .map(|(&a, &b)| {
            let term = a as f64 * b as f64;
            Probe {
                value: term,
                magnitude: term.abs(),
            }
        })
        .sum()
}

#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// Finite-difference step `h` (the second quotient uses `h/2`).
    pub step: f32,
    /// The longest chain of f32 roundings from the input to a loss term (and
    /// back through the analytic gradient): a few per layer.
    pub depth: f64,
    /// Check at most this many coordinates (spread evenly over the input).
    pub max_points: usize,
    /// More than this share of the points on kinks fails the check: it would
    /// say nothing.
    pub max_kink_fraction: f64,
}

impl Default for GradCheck {
    /// One layer: a dot product or a normalisation and an activation.
    fn default() -> Self {
        GradCheck {
            step: 1e-2,
            depth: 16.0,
            max_points: 200,
            max_kink_fraction: 0.1,
        }
    }
}

/// Compares `analytic` (the gradient of `loss` at `x`) with the extrapolated
/// central differences of `loss`, within the derived tolerance above.
/// Coordinates whose quotient has not converged (a ReLU kink or a max-pool
/// tie inside the step) are skipped; more than `max_kink_fraction` of the
/// points skipped is itself a failure. Returns a message naming the first failing
/// coordinate.
pub fn check_gradient(
    name: &str,
    x: &[f32],
    analytic: &[f32],
    mut loss: impl FnMut(&[f32]) -> Probe,
    opts: GradCheck,
) -> Result<(), String> {
    assert_eq!(
        x.len(),
        analytic.len(),
        "{name}: gradient length differs from input"
    );
    let eps = f32::EPSILON as f64;
    let stride = x.len().div_ceil(opts.max_points.max(1)).max(1);
    let largest_gradient = analytic.iter().fold(0f64, |m, &g| m.max((g as f64).abs()));
    let mut probe = x.to_vec();
    let center = loss(&probe);
    let noise = opts.depth * eps * center.magnitude;
    let mut checked = 0usize;
    let mut skipped = 0usize;
    for i in (0..x.len()).step_by(stride) {
        let h = opts.step;
        let (coarse, coarse_gap) =
            difference_quotients(&mut loss, center.value, &mut probe, x, i, h);
        let (fine, fine_gap) =
            difference_quotients(&mut loss, center.value, &mut probe, x, i, h / 2.0);
        let rounding = 3.0 * noise / h as f64;
        let truncation = (coarse - fine).abs();
        let allowed = truncation + rounding + opts.depth * eps * largest_gradient;
        // Where `L` is smooth the one-sided gap halves with the step (it is
        // about `h * L''`); a kink inside the step (ReLU at 0, a max-pool tie)
        // keeps or doubles it, and the quotients there say nothing about the
        // gradient.
        let kink = (coarse_gap - 2.0 * fine_gap).abs();
        if kink > allowed {
            skipped += 1;
            continue;
        }
        checked += 1;
        let numeric = (4.0 * fine - coarse) / 3.0;
        let a = analytic[i] as f64;
        if (a - numeric).abs() > allowed {
            return Err(format!(
                "{name}: gradient[{i}] analytic {a:.6} vs numeric {numeric:.6} \
                 (allowed {allowed:.2e}: truncation {truncation:.2e}, rounding {rounding:.2e})"
            ));
        }
    }
    if skipped as f64 > opts.max_kink_fraction * (checked + skipped) as f64 {
        return Err(format!(
            "{name}: {skipped} of {} points sit on kinks; the check says nothing",
            checked + skipped
        ));
    }
    Ok(())
}

/// The two difference quotients of `loss` along coordinate `i` at step `h`:
/// the central one, and the difference of the one-sided ones (about
/// `h * L''` where `L` is smooth, a slope jump where a kink lies inside the
/// step). Leaves `probe` equal to `x` again.
fn difference_quotients(
    loss: &mut impl FnMut(&[f32]) -> Probe,
    center: f64,
    probe: &mut [f32],
    x: &[f32],
    i: usize,
    h: f32,
) -> (f64, f64) {
    probe[i] = x[i] + h;
    let plus = loss(probe).value;
    probe[i] = x[i] - h;
    let minus = loss(probe).value;
    probe[i] = x[i];
    // The actual steps taken, after f32 rounding of x + h and x - h.
    let (up, down) = (((x[i] + h) - x[i]) as f64, (x[i] - (x[i] - h)) as f64);
    let central = (plus - minus) / (up + down);
    let one_sided_gap = (plus - center) / up - (center - minus) / down;
    (central, one_sided_gap)
}

/// Checks the gradient of each named parameter of a model's `ConvNet` (set
/// by a backward of `loss`) against finite differences of `loss`, restoring
/// every parameter. `net` finds the net in the model. A model is tens of
/// f32 layers deep, which sets the rounding the tolerance allows for.
#[cfg(test)]
pub(crate) fn check_params<M>(
    model: &mut M,
    net: impl Fn(&mut M) -> &mut crate::models::ConvNet<crate::CpuBackend>,
    names: &[&str],
    case: &str,
    (step, max_kink_fraction): (f32, f64),
    mut loss: impl FnMut(&mut M) -> Probe,
) {
    let opts = GradCheck {
        step,
        depth: 16.0 * net(model).units.len() as f64,
        max_points: 12,
        max_kink_fraction,
    };
    let mut failures = Vec::new();
    for &name in names {
        let analytic = net(model).param_grad(name).expect("a trained parameter");
        let x = net(model).param_values(name).expect("a parameter");
        assert!(analytic.iter().any(|&g| g != 0.0), "{name}: zero gradient");
        let mut at = |v: &[f32]| {
            net(model).set_param(name, v).expect("same length");
            loss(model)
        };
        let result = check_gradient(&format!("{case} {name}"), &x, &analytic, &mut at, opts);
        net(model).set_param(name, &x).expect("same length");
        if let Err(e) = result {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube(v: &[f32]) -> Probe {
        v.iter()
            .map(|&a| {
                let term = (a as f64).powi(3);
                Probe {
                    value: term,
                    magnitude: term.abs(),
                }
            })
            .sum()
    }

    #[test]
    fn accepts_true_gradient_and_rejects_wrong_one() {
        for seed in SEEDS {
            let x = random_vec(seed, 50);
            let right: Vec<f32> = x.iter().map(|a| 3.0 * a * a).collect();
            check_gradient("cube", &x, &right, cube, GradCheck::default()).unwrap();
            let mut wrong = right.clone();
            wrong[10] += 0.01;
            let err = check_gradient("cube", &x, &wrong, cube, GradCheck::default()).unwrap_err();
            assert!(err.contains("gradient[10]"), "{err}");
        }
    }

    #[test]
    fn a_kink_at_most_points_fails_the_check() {
        // |x| with every coordinate within the step of its kink.
        let x: Vec<f32> = (0..20)
            .map(|i| if i % 2 == 0 { 1e-3 } else { -1e-3 })
            .collect();
        let sign: Vec<f32> = x.iter().map(|a| a.signum()).collect();
        let abs = |v: &[f32]| {
            v.iter()
                .map(|&a| Probe {
                    value: (a as f64).abs(),
                    magnitude: (a as f64).abs(),
                })
                .sum()
        };
        let err = check_gradient("abs", &x, &sign, abs, GradCheck::default()).unwrap_err();
        assert!(err.contains("sit on kinks"), "{err}");
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
