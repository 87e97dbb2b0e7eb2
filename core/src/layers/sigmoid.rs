//! Sigmoid, `1 / (1 + exp(-x))`; backward from the saved output.

use crate::backend::Backend;
use crate::tensor::Tensor;

pub struct Sigmoid<B: Backend> {
    output: Tensor<B>,
}

impl<B: Backend> Sigmoid<B> {
    pub fn new(backend: &B) -> Self {
        Sigmoid {
            output: Tensor::zeros(backend, &[0]),
        }
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> &Tensor<B> {
        self.output.reshape_reuse(backend, x.shape());
        backend.sigmoid_forward(x.numel(), x.buf(), self.output.buf_mut());
        &self.output
    }

    pub fn backward(&mut self, backend: &B, dy: &Tensor<B>, dx: &mut Tensor<B>) {
        assert_eq!(
            dy.shape(),
            self.output.shape(),
            "sigmoid backward: dy shape"
        );
        dx.reshape_reuse(backend, dy.shape());
        backend.sigmoid_backward(dy.numel(), self.output.buf(), dy.buf(), dx.buf_mut());
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
    fn forward_and_backward() {
        for seed in SEEDS.map(|s| 100 * s) {
            check_forward_and_backward(seed);
        }
    }

    fn check_forward_and_backward(seed: u64) {
        let b = cpu();
        let xs: Vec<f32> = random_vec(seed, 60).iter().map(|v| v * 5.0).collect();
        let r = random_vec(seed + 1, 60);
        let mut s = Sigmoid::new(&b);
        let x = Tensor::from_host(&b, &[60], &xs);
        let y = s.forward(&b, &x).to_host(&b);
        for (yv, xv) in y.iter().zip(&xs) {
            assert!((*yv as f64 - 1.0 / (1.0 + (-*xv as f64).exp())).abs() < 1e-6);
        }
        let mut dx = Tensor::zeros(&b, &[0]);
        s.backward(&b, &Tensor::from_host(&b, &[60], &r), &mut dx);
        let loss = |v: &[f32]| {
            probe_loss(
                &Sigmoid::new(&b)
                    .forward(&b, &Tensor::from_host(&b, &[60], v))
                    .to_host(&b),
                &r,
            )
        };
        check_gradient("sigmoid", &xs, &dx.to_host(&b), loss, GradCheck::default()).unwrap();
    }
}
