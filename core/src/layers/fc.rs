//! Fully connected layer as Paddle's `fluid.layers.fc` (see `FcGeom`): the
//! R-CNN box heads' `fc6`/`fc7` (TwoFCHead, with ReLU) and `cls_score`/
//! `bbox_pred` (none). The input `[N, ...]` is read as `[N, K]` in its NCHW
//! order (no copy: the buffer already is that matrix); the output is
//! `[N, M]`.
//!
//! The layer owns its weight (`[K, M]`, Paddle's layout), bias, their
//! gradients and its output; the activation is fused into the forward pass
//! and its derivative taken from the output, so the backward pass keeps one
//! more buffer, the gradient before the activation, only when the
//! activation is not the identity. The parameter accessors mirror
//! `ConvUnit`'s, so a network can hold fully connected layers in the same
//! parameter slots as its conv units.

use crate::backend::{Activation, Backend, FcGeom};
use crate::models::conv_unit::ParamRole;
use crate::models::fc::FcSpec;
use crate::models::init::Rng;
use crate::tensor::Tensor;

pub struct FullyConnected<B: Backend> {
    pub spec: FcSpec,
    /// `[inputs, outputs]`.
    pub weight: Tensor<B>,
    pub weight_grad: Tensor<B>,
    /// `[outputs]`.
    pub bias: Tensor<B>,
    pub bias_grad: Tensor<B>,
    /// The output gradient through the activation (the gradient of
    /// `x W + b`); empty when the activation is the identity.
    dz: Tensor<B>,
    output: Tensor<B>,
}

impl<B: Backend> FullyConnected<B> {
    /// The layer with Paddle's initial values (`FcSpec::init_param`: the
    /// weight from the spec's initializer, the bias 0), drawn from `rng` in
    /// the order Paddle creates the parameters.
    pub fn new(backend: &B, spec: FcSpec, rng: &mut Rng) -> Self {
        let (inputs, outputs) = (spec.inputs, spec.outputs);
        let mut layer = FullyConnected {
            spec,
            weight: Tensor::zeros(backend, &[inputs, outputs]),
            weight_grad: Tensor::zeros(backend, &[inputs, outputs]),
            bias: Tensor::zeros(backend, &[outputs]),
            bias_grad: Tensor::zeros(backend, &[outputs]),
            dz: Tensor::zeros(backend, &[0]),
            output: Tensor::zeros(backend, &[0]),
        };
        for declared in layer.spec.params() {
            let mut values = vec![0.0; declared.spec.numel()];
            layer.spec.init_param(declared.role, &mut values, rng);
            layer.tensor_mut(declared.role).upload(backend, &values);
        }
        layer
    }

    /// The geometry for `x`: its first axis the rows, the rest flattened
    /// to the spec's inputs.
    fn geom_for(&self, x: &Tensor<B>) -> FcGeom {
        let shape = x.shape();
        let inputs: usize = shape.iter().skip(1).product();
        assert!(
            shape.len() >= 2 && inputs == self.spec.inputs,
            "{}: input shape {shape:?} does not flatten to [N, {}]",
            self.spec.prefix,
            self.spec.inputs
        );
        FcGeom {
            rows: shape[0],
            inputs,
            outputs: self.spec.outputs,
        }
    }

    /// `act(x W + b)`, `[N, outputs]`.
    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> &Tensor<B> {
        let g = self.geom_for(x);
        self.output.reshape_reuse(backend, &[g.rows, g.outputs]);
        backend.fc_forward(
            &g,
            self.spec.activation,
            x.buf(),
            self.weight.buf(),
            self.bias.buf(),
            self.output.buf_mut(),
        );
        &self.output
    }

    /// The weight and bias gradients from `x` and `dy` (after a forward of
    /// the same `x`), and the input gradient into `dx` (shaped as `x`) when
    /// given.
    pub fn backward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        dx: Option<&mut Tensor<B>>,
    ) {
        let g = self.geom_for(x);
        assert_eq!(
            dy.shape(),
            [g.rows, g.outputs],
            "{} backward: dy shape",
            self.spec.prefix
        );
        let act = self.spec.activation;
        let dz = if act == Activation::Identity {
            dy
        } else {
            self.dz.reshape_reuse(backend, dy.shape());
            backend.activation_backward(
                act,
                g.output_len(),
                self.output.buf(),
                dy.buf(),
                self.dz.buf_mut(),
            );
            &self.dz
        };
        backend.fc_backward_weight(
            &g,
            x.buf(),
            dz.buf(),
            self.weight_grad.buf_mut(),
            self.bias_grad.buf_mut(),
        );
        if let Some(dx) = dx {
            dx.reshape_reuse(backend, x.shape());
            backend.fc_backward_data(&g, dz.buf(), self.weight.buf(), dx.buf_mut());
        }
    }

    pub fn output(&self) -> &Tensor<B> {
        &self.output
    }

    /// The tensor holding the parameter of `role` (`FcWeight` or `FcBias`).
    pub fn tensor(&self, role: ParamRole) -> &Tensor<B> {
        match role {
            ParamRole::FcWeight => &self.weight,
            ParamRole::FcBias => &self.bias,
            _ => panic!(
                "{role:?}: not a role of fully connected layer {}",
                self.spec.prefix
            ),
        }
    }

    pub fn tensor_mut(&mut self, role: ParamRole) -> &mut Tensor<B> {
        match role {
            ParamRole::FcWeight => &mut self.weight,
            ParamRole::FcBias => &mut self.bias,
            _ => panic!(
                "{role:?}: not a role of fully connected layer {}",
                self.spec.prefix
            ),
        }
    }

    /// The gradient of the parameter of `role` (None for roles the layer
    /// does not have).
    pub fn grad(&self, role: ParamRole) -> Option<&Tensor<B>> {
        match role {
            ParamRole::FcWeight => Some(&self.weight_grad),
            ParamRole::FcBias => Some(&self.bias_grad),
            _ => None,
        }
    }

    /// The parameter and its gradient, for the optimizer; None for roles
    /// the layer does not have.
    pub fn param_and_grad_mut(&mut self, role: ParamRole) -> Option<(&mut Tensor<B>, &Tensor<B>)> {
        match role {
            ParamRole::FcWeight => Some((&mut self.weight, &self.weight_grad)),
            ParamRole::FcBias => Some((&mut self.bias, &self.bias_grad)),
            _ => None,
        }
    }

    /// Bytes of parameters, gradients, the output and the gradient before
    /// the activation.
    pub fn planned_bytes(&self, backend: &B) -> usize {
        [
            &self.weight,
            &self.weight_grad,
            &self.bias,
            &self.bias_grad,
            &self.dz,
            &self.output,
        ]
        .iter()
        .map(|t| t.capacity_bytes(backend))
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{floats, read};
    use crate::gradcheck::{check_gradient, probe_loss, random_vec, GradCheck, SEEDS};
    use crate::layers::test_util::cpu;
    use crate::models::conv_unit::WeightInit;
    use crate::CpuBackend;

    /// Two RoIs' features `[2, 3, 2, 2]` (12 inputs) into 24 outputs.
    const SHAPE: [usize; 4] = [2, 3, 2, 2];
    const ROWS: usize = 2;
    const OUTPUTS: usize = 24;

    fn spec(activation: Activation) -> FcSpec {
        let xavier = WeightInit::XavierUniform {
            fan_in: None,
            fan_out: None,
        };
        FcSpec::detectron("fc6", 12, OUTPUTS, activation, xavier)
    }

    fn layer(
        b: &CpuBackend,
        activation: Activation,
        w: &[f32],
        bias: &[f32],
    ) -> FullyConnected<CpuBackend> {
        let mut fc = FullyConnected::new(b, spec(activation), &mut Rng::from_state(0));
        fc.weight.upload(b, w);
        fc.bias.upload(b, bias);
        fc
    }

    /// Finite differences of `sum(y * r)` against the backward pass for the
    /// input, the weight and the bias, with and without ReLU.
    ///
    /// ReLU makes the loss piecewise linear, and a difference whose step
    /// straddles a kink is wrong; the checker skips those it recognises,
    /// but not a kink about a third of a step away. So the kinks are kept
    /// rare by design rather than by seed: the bias spreads the
    /// pre-activations (spread about 1.2) well beyond what one step moves
    /// them, and with ReLU the step is 1e-3, where a step reaches a kink at
    /// about 1 point in 300 and the rounding allowance (about 0.04 here)
    /// stays well below the gradients' size (0.3), so a wrong mask still
    /// fails. Without ReLU the loss is linear and the default step holds.
    #[test]
    fn backward_matches_finite_differences() {
        let b = cpu();
        for seed in SEEDS {
            for act in [Activation::Identity, Activation::Relu] {
                let xs = random_vec(seed, ROWS * 12);
                let mut fc = FullyConnected::new(&b, spec(act), &mut Rng::from_state(seed));
                let bias: Vec<f32> = random_vec(seed + 1, OUTPUTS)
                    .iter()
                    .map(|v| 2.0 * v)
                    .collect();
                fc.bias.upload(&b, &bias);
                let w = fc.weight.to_host(&b);
                let x = Tensor::from_host(&b, &SHAPE, &xs);
                fc.forward(&b, &x);
                let r = random_vec(seed + 2, ROWS * OUTPUTS);
                let mut dx = Tensor::zeros(&b, &[0]);
                let dy = Tensor::from_host(&b, &[ROWS, OUTPUTS], &r);
                fc.backward(&b, &x, &dy, Some(&mut dx));
                assert_eq!(dx.shape(), SHAPE);

                let loss = |xv: &[f32], wv: &[f32], bv: &[f32]| {
                    let mut fresh = layer(&b, act, wv, bv);
                    let y = fresh.forward(&b, &Tensor::from_host(&b, &SHAPE, xv));
                    probe_loss(&y.to_host(&b), &r)
                };
                let opts = GradCheck {
                    step: if act == Activation::Relu { 1e-3 } else { 1e-2 },
                    ..GradCheck::default()
                };
                let name = |what: &str| format!("fc {act:?} {what} seed {seed}");
                let (dx, dw, db) = (
                    dx.to_host(&b),
                    fc.weight_grad.to_host(&b),
                    fc.bias_grad.to_host(&b),
                );
                check_gradient(&name("dx"), &xs, &dx, |v| loss(v, &w, &bias), opts).unwrap();
                check_gradient(&name("dw"), &w, &dw, |v| loss(&xs, v, &bias), opts).unwrap();
                check_gradient(&name("db"), &bias, &db, |v| loss(&xs, &w, v), opts).unwrap();
            }
        }
    }

    /// The output equals the f64 product of the NCHW-flattened input with
    /// the `[inputs, outputs]` weight, plus the bias, through ReLU.
    #[test]
    fn forward_is_paddles_fc_on_the_flattened_input() {
        let b = cpu();
        let xs = random_vec(7, ROWS * 12);
        let (w, bias) = (random_vec(8, 12 * OUTPUTS), random_vec(9, OUTPUTS));
        let mut fc = layer(&b, Activation::Relu, &w, &bias);
        let y = fc.forward(&b, &Tensor::from_host(&b, &SHAPE, &xs));
        assert_eq!(y.shape(), [ROWS, OUTPUTS]);
        let y = y.to_host(&b);
        for row in 0..ROWS {
            for j in 0..OUTPUTS {
                let z: f64 = (0..12)
                    .map(|i| xs[row * 12 + i] as f64 * w[i * OUTPUTS + j] as f64)
                    .sum::<f64>()
                    + bias[j] as f64;
                let got = y[row * OUTPUTS + j] as f64;
                assert!(
                    (got - z.max(0.0)).abs() < 1e-5,
                    "y[{row}, {j}] = {got}, want {z}"
                );
            }
        }
    }

    /// Paddle's initial values (`FcSpec::init_param` from the same
    /// generator state), and the parameter slots by role.
    #[test]
    fn initial_values_and_parameter_slots() {
        let b = cpu();
        let mut fc = FullyConnected::new(&b, spec(Activation::Relu), &mut Rng::from_state(5));
        let mut want = vec![0.0; 12 * OUTPUTS];
        spec(Activation::Relu).init_param(ParamRole::FcWeight, &mut want, &mut Rng::from_state(5));
        assert_eq!(fc.tensor(ParamRole::FcWeight).to_host(&b), want);
        assert_eq!(fc.tensor(ParamRole::FcWeight).shape(), [12, OUTPUTS]);
        assert_eq!(fc.tensor(ParamRole::FcBias).to_host(&b), vec![0.0; OUTPUTS]);
        for role in [ParamRole::FcWeight, ParamRole::FcBias] {
            assert_eq!(
                fc.grad(role).map(|g| g.shape().to_vec()),
                Some(fc.tensor(role).shape().to_vec())
            );
            assert!(fc.param_and_grad_mut(role).is_some());
        }
        assert!(fc.grad(ParamRole::ConvWeight).is_none());
        assert!(fc.param_and_grad_mut(ParamRole::BnMean).is_none());
        fc.tensor_mut(ParamRole::FcBias).fill(&b, 2.0);
        assert_eq!(fc.bias.to_host(&b), vec![2.0; OUTPUTS]);
        fc.forward(&b, &Tensor::zeros(&b, &SHAPE));
        // Weight, its gradient, bias, its gradient and the 2 x 24 output.
        assert_eq!(fc.planned_bytes(&b), 4 * (2 * 12 * 24 + 2 * 24 + 2 * 24));
    }

    /// Paddle 1.8.5's `fluid.layers.fc(x, 5, act='relu')` on a `[3, 4, 3,
    /// 3]` input and its gradients
    /// (`core/tests/fixtures/faster_rcnn/box_head_ops.py`): the flattening
    /// order and the `[K, M]` weight layout are Paddle's.
    #[test]
    fn equals_paddles_fc_and_gradients() {
        let b = cpu();
        let fixture = &read("faster_rcnn/box_head_ops.json")["fc"];
        let shape: Vec<usize> = floats(&fixture["x_shape"])
            .iter()
            .map(|&d| d as usize)
            .collect();
        let outputs = fixture["outputs"].as_u64().expect("outputs") as usize;
        let inputs: usize = shape[1..].iter().product();
        let xavier = WeightInit::XavierUniform {
            fan_in: None,
            fan_out: None,
        };
        let spec = FcSpec::detectron("fc6", inputs, outputs, Activation::Relu, xavier);
        let mut fc = FullyConnected::new(&b, spec, &mut Rng::from_state(0));
        fc.weight.upload(&b, &floats(&fixture["w"]));
        fc.bias.upload(&b, &floats(&fixture["b"]));
        let x = Tensor::from_host(&b, &shape, &floats(&fixture["x"]));
        let y = fc.forward(&b, &x).to_host(&b);
        let dy = Tensor::from_host(&b, &[shape[0], outputs], &floats(&fixture["probe"]));
        let mut dx = Tensor::zeros(&b, &[0]);
        fc.backward(&b, &x, &dy, Some(&mut dx));
        for (what, got, key) in [
            ("y", y, "out"),
            ("dx", dx.to_host(&b), "dx"),
            ("dw", fc.weight_grad.to_host(&b), "dw"),
            ("db", fc.bias_grad.to_host(&b), "db"),
        ] {
            let want = floats(&fixture[key]);
            assert_eq!(got.len(), want.len(), "{what}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{what}[{i}]: {g} vs Paddle's {w}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "fc6: input shape [2, 5, 2, 2] does not flatten to [N, 12]")]
    fn an_input_of_the_wrong_size_is_refused() {
        let b = cpu();
        let mut fc = FullyConnected::new(&b, spec(Activation::Relu), &mut Rng::from_state(0));
        fc.forward(&b, &Tensor::zeros(&b, &[2, 5, 2, 2]));
    }

    #[test]
    #[should_panic(expected = "ConvWeight: not a role of fully connected layer fc6")]
    fn a_conv_role_is_refused() {
        let b = cpu();
        let fc = FullyConnected::new(&b, spec(Activation::Relu), &mut Rng::from_state(0));
        fc.tensor(ParamRole::ConvWeight);
    }
}
