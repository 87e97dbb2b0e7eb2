//! Max pooling (square window, floor mode). Backward recomputes each window's
//! first maximum from the saved input instead of storing indices.

use crate::backend::{Backend, PoolGeom};
use crate::tensor::Tensor;

pub struct MaxPool2d<B: Backend> {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    output: Tensor<B>,
}

impl<B: Backend> MaxPool2d<B> {
    pub fn new(backend: &B, kernel: usize, stride: usize, pad: usize) -> Self {
        assert!(
            kernel > 0 && stride > 0 && pad < kernel,
            "max_pool: bad window"
        );
        MaxPool2d {
            kernel,
            stride,
            pad,
            output: Tensor::zeros(backend, &[0]),
        }
    }

    fn geom_for(&self, x: &Tensor<B>) -> PoolGeom {
        let (n, c, h, w) = x.nchw();
        assert!(
            h + 2 * self.pad >= self.kernel && w + 2 * self.pad >= self.kernel,
            "max_pool: window larger than input"
        );
        PoolGeom {
            batch: n,
            channels: c,
            h_in: h,
            w_in: w,
            kernel: self.kernel,
            stride: self.stride,
            pad: self.pad,
        }
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> &Tensor<B> {
        let g = self.geom_for(x);
        self.output
            .reshape_reuse(backend, &[g.batch, g.channels, g.h_out(), g.w_out()]);
        backend.max_pool_forward(&g, x.buf(), self.output.buf_mut());
        &self.output
    }

    pub fn backward(&mut self, backend: &B, x: &Tensor<B>, dy: &Tensor<B>, dx: &mut Tensor<B>) {
        let g = self.geom_for(x);
        assert_eq!(
            dy.shape(),
            self.output.shape(),
            "max_pool backward: dy shape"
        );
        dx.reshape_reuse(backend, x.shape());
        backend.max_pool_backward(&g, x.buf(), dy.buf(), dx.buf_mut());
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
        for (k, s, p) in [(2, 2, 0), (3, 1, 1), (5, 1, 2), (3, 2, 1)] {
            let shape = [2, 2, 7, 6];
            let xs = random_vec(seed + k as u64, 168);
            let mut pool = MaxPool2d::new(&b, k, s, p);
            let x = Tensor::from_host(&b, &shape, &xs);
            let out = pool.forward(&b, &x).numel();
            let r = random_vec(seed + 10, out);
            let mut dx = Tensor::zeros(&b, &[0]);
            pool.backward(
                &b,
                &x,
                &Tensor::from_host(&b, pool.output().shape(), &r),
                &mut dx,
            );
            let loss = |v: &[f32]| {
                let mut fresh = MaxPool2d::new(&b, k, s, p);
                probe_loss(
                    &fresh
                        .forward(&b, &Tensor::from_host(&b, &shape, v))
                        .to_host(&b),
                    &r,
                )
            };
            let opts = GradCheck {
                step: 1e-3,
                ..GradCheck::default()
            };
            check_gradient(
                &format!("max_pool k{k} s{s} p{p}"),
                &xs,
                &dx.to_host(&b),
                loss,
                opts,
            )
            .unwrap();
        }
    }

    #[test]
    fn padding_never_wins() {
        let b = cpu();
        let x = Tensor::from_host(&b, &[1, 1, 2, 2], &[-4.0, -3.0, -2.0, -1.0]);
        let y = MaxPool2d::new(&b, 3, 1, 1).forward(&b, &x).to_host(&b);
        assert_eq!(y, vec![-1.0; 4]);
    }
}
