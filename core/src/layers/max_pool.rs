//! Max pooling (square window, floor or Paddle's ceil mode). Backward
//! recomputes each window's first maximum from the saved input instead of
//! storing indices.

use crate::backend::{Backend, PoolGeom};
use crate::tensor::Tensor;

pub struct MaxPool2d<B: Backend> {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    /// Paddle's `ceil_mode` (VGG's pools); floor mode when false.
    pub ceil_mode: bool,
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
            ceil_mode: false,
            output: Tensor::zeros(backend, &[0]),
        }
    }

    /// The same pool in ceil mode.
    pub fn ceil(self) -> Self {
        MaxPool2d {
            ceil_mode: true,
            ..self
        }
    }

    fn geom_for(&self, x: &Tensor<B>) -> PoolGeom {
        let (n, c, h, w) = x.nchw();
        let g = PoolGeom {
            batch: n,
            channels: c,
            h_in: h,
            w_in: w,
            kernel: self.kernel,
            stride: self.stride,
            pad: self.pad,
            ceil_mode: self.ceil_mode,
        };
        assert!(g.fits(), "max_pool: window does not fit {g:?}");
        g
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
        for (k, s, p, ceil) in [
            (2, 2, 0, false),
            (3, 1, 1, false),
            (5, 1, 2, false),
            (3, 2, 1, false),
            (2, 2, 0, true),
            (3, 2, 0, true),
        ] {
            let shape = [2, 2, 7, 6];
            let xs = random_vec(seed + k as u64, 168);
            let new = || {
                let pool = MaxPool2d::new(&b, k, s, p);
                if ceil {
                    pool.ceil()
                } else {
                    pool
                }
            };
            let mut pool = new();
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
                let mut fresh = new();
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
                &format!("max_pool k{k} s{s} p{p} ceil {ceil}"),
                &xs,
                &dx.to_host(&b),
                loss,
                opts,
            )
            .unwrap();
        }
    }

    /// Paddle's ceil mode on a 7x6 input, 2x2 stride 2: 4x3 outputs, the
    /// last row of windows holding the input's last row only.
    #[test]
    fn ceil_mode_keeps_the_last_partial_windows() {
        let b = cpu();
        let xs: Vec<f32> = (0..42).map(|v| v as f32).collect();
        let x = Tensor::from_host(&b, &[1, 1, 7, 6], &xs);
        let mut pool = MaxPool2d::new(&b, 2, 2, 0).ceil();
        let y = pool.forward(&b, &x);
        assert_eq!(y.shape(), [1, 1, 4, 3]);
        assert_eq!(y.to_host(&b)[9..], [37.0, 39.0, 41.0]);
    }

    #[test]
    fn padding_never_wins() {
        let b = cpu();
        let x = Tensor::from_host(&b, &[1, 1, 2, 2], &[-4.0, -3.0, -2.0, -1.0]);
        let y = MaxPool2d::new(&b, 3, 1, 1).forward(&b, &x).to_host(&b);
        assert_eq!(y, vec![-1.0; 4]);
    }
}
