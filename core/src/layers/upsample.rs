//! Nearest-neighbour upsampling by 2 (YOLOv3's route from a coarse level to
//! the next finer one).

use crate::backend::Backend;
use crate::tensor::Tensor;

pub struct Upsample2x<B: Backend> {
    output: Tensor<B>,
}

impl<B: Backend> Upsample2x<B> {
    pub fn new(backend: &B) -> Self {
        Upsample2x {
            output: Tensor::zeros(backend, &[0]),
        }
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> &Tensor<B> {
        let (n, c, h, w) = x.nchw();
        self.output.reshape_reuse(backend, &[n, c, 2 * h, 2 * w]);
        backend.upsample2x_forward(n * c, h, w, x.buf(), self.output.buf_mut());
        &self.output
    }

    pub fn backward(&mut self, backend: &B, dy: &Tensor<B>, dx: &mut Tensor<B>) {
        let (n, c, h2, w2) = dy.nchw();
        dx.reshape_reuse(backend, &[n, c, h2 / 2, w2 / 2]);
        backend.upsample2x_backward(n * c, h2 / 2, w2 / 2, dy.buf(), dx.buf_mut());
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
    fn forward_repeats_each_value() {
        let b = cpu();
        let x = Tensor::from_host(&b, &[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let mut up = Upsample2x::new(&b);
        let y = up.forward(&b, &x).to_host(&b);
        assert_eq!(
            y,
            vec![1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]
        );
    }

    #[test]
    fn backward_matches_finite_differences() {
        let b = cpu();
        for seed in SEEDS.map(|s| 100 * s) {
            let xs = random_vec(seed, 2 * 3 * 3 * 5);
            let r = random_vec(seed + 1, 2 * 3 * 6 * 10);
            let mut up = Upsample2x::new(&b);
            let x = Tensor::from_host(&b, &[2, 3, 3, 5], &xs);
            up.forward(&b, &x);
            let mut dx = Tensor::zeros(&b, &[0]);
            up.backward(&b, &Tensor::from_host(&b, &[2, 3, 6, 10], &r), &mut dx);
            let loss = |v: &[f32]| {
                probe_loss(
                    &Upsample2x::new(&b)
                        .forward(&b, &Tensor::from_host(&b, &[2, 3, 3, 5], v))
                        .to_host(&b),
                    &r,
                )
            };
            check_gradient("upsample", &xs, &dx.to_host(&b), loss, GradCheck::default()).unwrap();
        }
    }
}
