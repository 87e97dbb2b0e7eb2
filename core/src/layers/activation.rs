//! A standalone activation (ReLU, ReLU6, leaky ReLU): for the places where it
//! cannot be fused into a batch norm.

use crate::backend::{Activation, Backend};
use crate::tensor::Tensor;

pub struct ActivationLayer<B: Backend> {
    pub act: Activation,
    output: Tensor<B>,
}

impl<B: Backend> ActivationLayer<B> {
    pub fn new(backend: &B, act: Activation) -> Self {
        ActivationLayer {
            act,
            output: Tensor::zeros(backend, &[0]),
        }
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> &Tensor<B> {
        self.output.reshape_reuse(backend, x.shape());
        backend.activation_forward(self.act, x.numel(), x.buf(), self.output.buf_mut());
        &self.output
    }

    /// `xy = act(xy)`: the layer's own output stays empty and `xy` is the
    /// output `backward_from_output` reads. For an input nothing else reads
    /// afterwards (a conv's output: its backward does not read it).
    pub fn forward_in_place(&mut self, backend: &B, xy: &mut Tensor<B>) {
        self.output.reshape_reuse(backend, &[0]);
        backend.activation_forward_in_place(self.act, xy.numel(), xy.buf_mut());
    }

    /// The derivative is read from the saved output, so `x` is not needed.
    pub fn backward(&self, backend: &B, dy: &Tensor<B>, dx: &mut Tensor<B>) {
        self.backward_from_output(backend, &self.output, dy, dx);
    }

    /// `backward` with the output `y` given: the tensor `forward_in_place`
    /// overwrote.
    pub fn backward_from_output(
        &self,
        backend: &B,
        y: &Tensor<B>,
        dy: &Tensor<B>,
        dx: &mut Tensor<B>,
    ) {
        assert_eq!(dy.shape(), y.shape(), "activation backward: dy shape");
        dx.reshape_reuse(backend, dy.shape());
        backend.activation_backward(self.act, dy.numel(), y.buf(), dy.buf(), dx.buf_mut());
    }

    pub fn output(&self) -> &Tensor<B> {
        &self.output
    }

    pub fn planned_bytes(&self, backend: &B) -> usize {
        self.output.capacity_bytes(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe_loss, random_vec, GradCheck, SEEDS};
    use crate::layers::test_util::cpu;

    #[test]
    fn backward_matches_finite_differences() {
        for seed in SEEDS.map(|s| 100 * s) {
            check_backward(seed);
        }
    }

    fn check_backward(seed: u64) {
        let b = cpu();
        // Inputs spread over [-8, 8] so ReLU6's upper kink is exercised too.
        let xs: Vec<f32> = random_vec(seed, 120).iter().map(|v| v * 8.0).collect();
        let r = random_vec(seed + 1, 120);
        for act in [
            Activation::Relu,
            Activation::Relu6,
            Activation::LEAKY_0_1,
            Activation::Identity,
        ] {
            let mut layer = ActivationLayer::new(&b, act);
            let x = Tensor::from_host(&b, &[2, 3, 4, 5], &xs);
            layer.forward(&b, &x);
            let mut dx = Tensor::zeros(&b, &[0]);
            layer.backward(&b, &Tensor::from_host(&b, x.shape(), &r), &mut dx);
            let loss = |v: &[f32]| {
                let mut l = ActivationLayer::new(&b, act);
                probe_loss(
                    &l.forward(&b, &Tensor::from_host(&b, x.shape(), v))
                        .to_host(&b),
                    &r,
                )
            };
            check_gradient(
                &format!("{act:?}"),
                &xs,
                &dx.to_host(&b),
                loss,
                GradCheck::default(),
            )
            .unwrap();
        }
    }

    #[test]
    fn in_place_matches_out_of_place() {
        let b = cpu();
        let xs: Vec<f32> = random_vec(41, 120).iter().map(|v| v * 8.0).collect();
        let dy = Tensor::from_host(&b, &[2, 60], &random_vec(42, 120));
        for act in [Activation::Relu, Activation::Relu6, Activation::LEAKY_0_1] {
            let mut layer = ActivationLayer::new(&b, act);
            let x = Tensor::from_host(&b, &[2, 60], &xs);
            let want = layer.forward(&b, &x).to_host(&b);
            let (mut dx, mut dx_apart) = (Tensor::zeros(&b, &[0]), Tensor::zeros(&b, &[0]));
            layer.backward(&b, &dy, &mut dx_apart);
            let mut xy = Tensor::from_host(&b, &[2, 60], &xs);
            layer.forward_in_place(&b, &mut xy);
            assert_eq!(xy.to_host(&b), want, "{act:?}");
            assert_eq!(layer.output().numel(), 0);
            layer.backward_from_output(&b, &xy, &dy, &mut dx);
            assert_eq!(dx.to_host(&b), dx_apart.to_host(&b), "{act:?}");
        }
    }

    #[test]
    fn forward_values() {
        let b = cpu();
        let x = Tensor::from_host(&b, &[4], &[-2.0, 0.5, 3.0, 7.0]);
        let run = |act| ActivationLayer::new(&b, act).forward(&b, &x).to_host(&b);
        assert_eq!(run(Activation::Relu), vec![0.0, 0.5, 3.0, 7.0]);
        assert_eq!(run(Activation::Relu6), vec![0.0, 0.5, 3.0, 6.0]);
        assert_eq!(run(Activation::LEAKY_0_1), vec![-0.2, 0.5, 3.0, 7.0]);
    }
}
