//! Elementwise sum of two tensors of the same shape (DarkNet53's residual
//! shortcut). Both inputs receive `dy` unchanged: a model may pass `dy` on
//! directly; `backward` exists for when the gradient must be materialised.

use crate::backend::Backend;
use crate::tensor::Tensor;

pub struct Add<B: Backend> {
    output: Tensor<B>,
}

impl<B: Backend> Add<B> {
    pub fn new(backend: &B) -> Self {
        Add {
            output: Tensor::zeros(backend, &[0]),
        }
    }

    pub fn forward(&mut self, backend: &B, a: &Tensor<B>, b: &Tensor<B>) -> &Tensor<B> {
        assert_eq!(a.shape(), b.shape(), "add: shapes differ");
        self.output.reshape_reuse(backend, a.shape());
        backend.add(a.numel(), a.buf(), b.buf(), self.output.buf_mut());
        &self.output
    }

    /// `dx = dy` (the same for both inputs).
    pub fn backward(&mut self, backend: &B, dy: &Tensor<B>, dx: &mut Tensor<B>) {
        dx.reshape_reuse(backend, dy.shape());
        backend.copy(dy.numel(), dy.buf(), dx.buf_mut());
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
    use crate::layers::test_util::{cpu, tensor};

    #[test]
    fn adds_and_passes_gradient_through() {
        let b = cpu();
        let (x, y) = (tensor(&[1, 2, 3, 3], 81), tensor(&[1, 2, 3, 3], 82));
        let mut add = Add::new(&b);
        let out = add.forward(&b, &x, &y).to_host(&b);
        let (xv, yv) = (x.to_host(&b), y.to_host(&b));
        for i in 0..out.len() {
            assert_eq!(out[i], xv[i] + yv[i]);
        }
        let mut dx = Tensor::zeros(&b, &[0]);
        add.backward(&b, &x, &mut dx);
        assert_eq!(dx.to_host(&b), xv);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let b = cpu();
        for seed in SEEDS.map(|s| 100 * s) {
            let (x, y) = (tensor(&[2, 2, 3, 3], seed), tensor(&[2, 2, 3, 3], seed + 1));
            let r = random_vec(seed + 2, x.numel());
            let mut dx = Tensor::zeros(&b, &[0]);
            Add::new(&b).backward(&b, &Tensor::from_host(&b, x.shape(), &r), &mut dx);
            let xv = x.to_host(&b);
            // The sum is symmetric, so one check covers both inputs.
            let loss = |v: &[f32]| {
                let xt = Tensor::from_host(&b, x.shape(), v);
                probe_loss(&Add::new(&b).forward(&b, &xt, &y).to_host(&b), &r)
            };
            check_gradient("add", &xv, &dx.to_host(&b), loss, GradCheck::default()).unwrap();
        }
    }
}
