//! RMSProp (see `RmsPropStep`): the CPU kernel the GPU's is tested against.

use crate::backend::RmsPropStep;

/// One step over the first `param.len()` elements, in place.
pub fn update(
    step: &RmsPropStep,
    param: &mut [f32],
    grad: &[f32],
    mean_square: &mut [f32],
    moment: &mut [f32],
) {
    for i in 0..param.len() {
        let g = grad[i] + step.weight_decay * param[i];
        let ms = step.rho * mean_square[i] + (1.0 - step.rho) * g * g;
        let m = step.momentum * moment[i] + step.lr * g / (ms + step.epsilon).sqrt();
        mean_square[i] = ms;
        moment[i] = m;
        param[i] -= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, read};

    /// Paddle's RMSPropOptimizer with an L2Decay regulariser, three steps
    /// with momentum 0 (the SSD configs) and 0.9
    /// (`core/tests/fixtures/rmsprop/make_fixtures.py`).
    #[test]
    fn three_steps_equal_paddles() {
        let f = read("rmsprop/rmsprop.json");
        let number = |key: &str| f[key].as_f64().expect("a number") as f32;
        let grad = floats(&f["grad"]);
        for case in f["cases"].as_array().expect("cases") {
            let step = RmsPropStep {
                lr: number("lr"),
                rho: number("rho"),
                epsilon: number("epsilon"),
                momentum: case["momentum"].as_f64().expect("momentum") as f32,
                weight_decay: number("decay"),
            };
            let mut param = floats(&f["start"]);
            let (mut mean_square, mut moment) = (vec![0.0; param.len()], vec![0.0; param.len()]);
            for (k, want) in case["params"].as_array().expect("steps").iter().enumerate() {
                update(&step, &mut param, &grad, &mut mean_square, &mut moment);
                for (got, want) in param.iter().zip(floats(want)) {
                    assert!(
                        (got - want).abs() <= 1e-6,
                        "{step:?} step {k}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
