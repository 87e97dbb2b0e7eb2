//! Momentum SGD as Paddle's `momentum` operator after its L2Decay regulariser:
//!
//! ```text
//! velocity = mu * velocity + (grad + decay * param)
//! param    = param - lr * velocity
//! ```
//!
//! PaddleDetection sets one L2 decay on the optimizer, but a parameter created
//! with its own regulariser keeps it: batch-norm scale and offset, the
//! `yolo_output` biases and every MobileNetV1 convolution weight carry
//! `L2Decay(0)`, so they are not decayed (see `yolov3_decay`).

use crate::ParamSpec;

/// One update of one parameter tensor, in place. The kernel GPU updates are
/// tested against.
pub fn momentum_update(
    param: &mut [f32],
    grad: &[f32],
    velocity: &mut [f32],
    lr: f32,
    mu: f32,
    decay: f32,
) {
    assert_eq!(param.len(), grad.len(), "parameter and gradient lengths");
    assert_eq!(
        param.len(),
        velocity.len(),
        "parameter and velocity lengths"
    );
    for ((p, &g), v) in param.iter_mut().zip(grad).zip(velocity.iter_mut()) {
        *v = mu * *v + (g + decay * *p);
        *p -= lr * *v;
    }
}

/// The L2 decay PaddleDetection's YOLOv3 configs give the parameter `name`
/// when the optimizer's own is `base`.
pub fn yolov3_decay(name: &str, base: f32) -> f32 {
    let batch_norm_affine = [".bn.scale", ".bn.offset", "_bn_scale", "_bn_offset"]
        .iter()
        .any(|suffix| name.ends_with(suffix));
    let output_bias = name.starts_with("yolo_output.") && name.ends_with(".conv.bias");
    // MobileNetV1 names its convolutions `conv1_weights`, `conv2_1_dw_weights`,
    // ...; DarkNet and the head use `<unit>.conv.weights` and keep the decay.
    let mobilenet_conv = name.starts_with("conv") && name.ends_with("_weights");
    if batch_norm_affine || output_bias || mobilenet_conv {
        0.0
    } else {
        base
    }
}

/// The optimizer state of a model: one velocity per parameter, in model order
/// (the order of the `ParamSpec` list), and each parameter's decay.
#[derive(Debug, Clone, PartialEq)]
pub struct Momentum {
    pub mu: f32,
    decays: Vec<f32>,
    velocities: Vec<Vec<f32>>,
}

impl Momentum {
    /// Zero velocities; `decay_of(name)` gives each parameter's L2 decay, e.g.
    /// `|name| yolov3_decay(name, 5e-4)`.
    pub fn new(params: &[ParamSpec], mu: f32, decay_of: impl Fn(&str) -> f32) -> Self {
        Momentum {
            mu,
            decays: params.iter().map(|p| decay_of(&p.name)).collect(),
            velocities: params.iter().map(|p| vec![0.0; p.numel()]).collect(),
        }
    }

    /// Updates parameter `index` (position in the `ParamSpec` list).
    pub fn step(&mut self, index: usize, param: &mut [f32], grad: &[f32], lr: f32) {
        let decay = self.decays[index];
        momentum_update(param, grad, &mut self.velocities[index], lr, self.mu, decay);
    }

    pub fn decay(&self, index: usize) -> f32 {
        self.decays[index]
    }

    /// The velocity of parameter `index`: saved in `.pdopt` snapshots and
    /// restored on resume.
    pub fn velocity(&self, index: usize) -> &[f32] {
        &self.velocities[index]
    }

    pub fn velocity_mut(&mut self, index: usize) -> &mut [f32] {
        &mut self.velocities[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_three_steps() {
        // p0 = 1, grads 0.5, -0.25, 1, lr 0.1, mu 0.9, decay 0.01.
        // step 1: v = 0.5 + 0.01 = 0.51;               p = 1 - 0.051 = 0.949
        // step 2: v = 0.459 - 0.25 + 0.00949 = 0.21849; p = 0.949 - 0.021849 = 0.927151
        // step 3: v = 0.196641 + 1 + 0.00927151 = 1.20591251; p = 0.927151 - 0.120591251 = 0.806559749
        let mut p = [1.0f32];
        let mut v = [0.0f32];
        let expected = [
            (0.51, 0.949),
            (0.21849, 0.927151),
            (1.205_912_5, 0.806_559_75),
        ];
        for (g, (ve, pe)) in [0.5f32, -0.25, 1.0].iter().zip(expected) {
            momentum_update(&mut p, &[*g], &mut v, 0.1, 0.9, 0.01);
            assert!((v[0] - ve).abs() < 1e-6, "velocity {} vs {ve}", v[0]);
            assert!((p[0] - pe).abs() < 1e-6, "param {} vs {pe}", p[0]);
        }
    }

    /// Equal to `paddle.optimizer.Momentum` with `L2Decay(0.01)` (values printed
    /// by `core/tests/fixtures/yolo/paddle_momentum.py`).
    #[test]
    fn matches_paddle_momentum_with_l2_decay() {
        let mut p = [1.0f32, -2.0, 0.5, 3.0];
        let mut v = [0.0f32; 4];
        let grads = [
            [0.5f32, -0.25, 1.0, 0.0],
            [-1.0, 0.5, 0.25, 2.0],
            [0.1, 0.2, -0.3, 0.4],
        ];
        let paddle = [
            [0.949f32, -1.973, 0.3995, 2.997],
            [1.002151, -1.996727, 0.2836505, 2.791303],
            [1.0389848, -2.0360847, 0.20910232, 2.5633843],
        ];
        for (g, expected) in grads.iter().zip(paddle) {
            momentum_update(&mut p, g, &mut v, 0.1, 0.9, 0.01);
            for (a, b) in p.iter().zip(expected) {
                assert!((a - b).abs() < 1e-6, "{p:?} vs paddle {expected:?}");
            }
        }
    }

    #[test]
    fn decay_overrides_follow_paddle_detection() {
        let base = 5e-4;
        for zero in [
            "yolo_block.0.0.0.bn.scale",
            "stage.1.0.0.bn.offset",
            "conv2_1_dw_bn_scale",
            "conv6_sep_bn_offset",
            "yolo_output.2.conv.bias",
            "conv1_weights",
            "conv5_3_sep_weights",
            "conv4_1_dw_weights",
        ] {
            assert_eq!(yolov3_decay(zero, base), 0.0, "{zero}");
        }
        for decayed in [
            "yolo_input.conv.weights",
            "stage.3.2.1.conv.weights",
            "yolo_block.1.tip.conv.weights",
            "yolo_output.0.conv.weights",
            "yolo_transition.1.conv.weights",
        ] {
            assert_eq!(yolov3_decay(decayed, base), base, "{decayed}");
        }
    }

    #[test]
    fn optimizer_keeps_state_per_parameter() {
        let params = [
            ParamSpec::new("yolo_input.conv.weights", &[2]),
            ParamSpec::new("yolo_input.bn.scale", &[1]),
        ];
        let mut opt = Momentum::new(&params, 0.9, |n| yolov3_decay(n, 0.1));
        let mut w = [1.0f32, 2.0];
        let mut s = [3.0f32];
        opt.step(0, &mut w, &[0.0, 0.0], 1.0);
        opt.step(1, &mut s, &[0.0], 1.0);
        assert_eq!(opt.velocity(0), &[0.1, 0.2]);
        assert_eq!(w, [0.9, 1.8]);
        assert_eq!(opt.velocity(1), &[0.0]);
        assert_eq!(s, [3.0]);
    }
}
