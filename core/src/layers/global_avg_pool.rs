//! Global average pooling (Paddle's `pool2d(pool_type='avg',
//! global_pooling=True)`; see `GlobalPoolGeom`): the C4 Faster R-CNN head
//! pools res5's `[R, 2048, 7, 7]` RoI features to `[R, 2048, 1, 1]` before
//! `cls_score` and `bbox_pred`. No parameters; the output is linear in the
//! input, so backward needs nothing saved.

use crate::backend::{Backend, GlobalPoolGeom};
use crate::tensor::Tensor;

pub struct GlobalAvgPool<B: Backend> {
    output: Tensor<B>,
}

impl<B: Backend> GlobalAvgPool<B> {
    pub fn new(backend: &B) -> Self {
        GlobalAvgPool {
            output: Tensor::zeros(backend, &[0]),
        }
    }

    fn geom_for(x: &Tensor<B>) -> GlobalPoolGeom {
        let (batch, channels, h, w) = x.nchw();
        let g = GlobalPoolGeom {
            batch,
            channels,
            spatial: h * w,
        };
        if let Err(msg) = g.validate() {
            panic!("{msg}");
        }
        g
    }

    /// `[N, C, 1, 1]`: the mean of each plane of `x` (`[N, C, H, W]`).
    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> &Tensor<B> {
        let g = Self::geom_for(x);
        self.output
            .reshape_reuse(backend, &[g.batch, g.channels, 1, 1]);
        backend.global_avg_pool_forward(&g, x.buf(), self.output.buf_mut());
        &self.output
    }

    /// `dx` (shaped as `x`, overwritten) from the output gradient `dy`.
    pub fn backward(&mut self, backend: &B, x: &Tensor<B>, dy: &Tensor<B>, dx: &mut Tensor<B>) {
        let g = Self::geom_for(x);
        assert_eq!(
            dy.shape(),
            [g.batch, g.channels, 1, 1],
            "global_avg_pool backward: dy shape"
        );
        dx.reshape_reuse(backend, x.shape());
        backend.global_avg_pool_backward(&g, dy.buf(), dx.buf_mut());
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
    use crate::fixtures::{floats, read};
    use crate::gradcheck::{check_gradient, probe_loss, random_vec, GradCheck, SEEDS};
    use crate::layers::test_util::cpu;

    /// The output is linear in the input: the differences equal the
    /// gradient up to rounding at every point, on an odd 7x5 plane.
    #[test]
    fn backward_matches_finite_differences() {
        let b = cpu();
        let shape = [3, 4, 7, 5];
        for seed in SEEDS {
            let xs = random_vec(seed, shape.iter().product());
            let x = Tensor::from_host(&b, &shape, &xs);
            let mut pool = GlobalAvgPool::new(&b);
            assert_eq!(pool.forward(&b, &x).shape(), [3, 4, 1, 1]);
            let r = random_vec(seed + 1, 12);
            let mut dx = Tensor::zeros(&b, &[0]);
            pool.backward(&b, &x, &Tensor::from_host(&b, &[3, 4, 1, 1], &r), &mut dx);
            let loss = |v: &[f32]| {
                let x = Tensor::from_host(&b, &shape, v);
                probe_loss(&pool.forward(&b, &x).to_host(&b), &r)
            };
            let name = format!("global_avg_pool seed {seed}");
            check_gradient(&name, &xs, &dx.to_host(&b), loss, GradCheck::default()).unwrap();
        }
    }

    /// Paddle 1.8.5's `pool2d(pool_type='avg', global_pooling=True)` on
    /// 7x7 planes and its gradient
    /// (`core/tests/fixtures/faster_rcnn/box_head_ops.py`): the same sum
    /// order and rounding, so the same bits.
    #[test]
    fn equals_paddles_global_pool_and_gradient() {
        let b = cpu();
        let fixture = &read("faster_rcnn/box_head_ops.json")["global_avg_pool"];
        let shape: Vec<usize> = floats(&fixture["x_shape"])
            .iter()
            .map(|&d| d as usize)
            .collect();
        let x = Tensor::from_host(&b, &shape, &floats(&fixture["x"]));
        let mut pool = GlobalAvgPool::new(&b);
        let y = pool.forward(&b, &x).to_host(&b);
        let dy = Tensor::from_host(&b, &[shape[0], shape[1], 1, 1], &floats(&fixture["probe"]));
        let mut dx = Tensor::zeros(&b, &[0]);
        pool.backward(&b, &x, &dy, &mut dx);
        assert_eq!(y, floats(&fixture["out"]));
        assert_eq!(dx.to_host(&b), floats(&fixture["dx"]));
    }

    #[test]
    fn forward_means() {
        let b = cpu();
        let x = Tensor::from_host(
            &b,
            &[1, 2, 2, 2],
            &[1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, -2.0],
        );
        let mut pool = GlobalAvgPool::new(&b);
        assert_eq!(pool.forward(&b, &x).to_host(&b), [3.0, -0.5]);
        assert_eq!(pool.planned_bytes(&b), 8);
    }
}
