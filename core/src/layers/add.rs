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
}
