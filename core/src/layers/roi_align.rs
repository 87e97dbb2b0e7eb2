//! RoIAlign (PaddleDetection's `RoIAlign` roi extractor, Paddle 1.8's
//! `roi_align`; see `RoiAlignGeom`): pools each RoI of the feature map into
//! a fixed `pooled_h x pooled_w` grid for the RoI head. No parameters; the
//! boxes and their image indices are inputs like the map, handed again to
//! backward. The output is linear in the map, so its gradient needs nothing
//! saved.

use crate::backend::{Backend, RoiAlignGeom};
use crate::tensor::Tensor;

pub struct RoiAlign<B: Backend> {
    pub pooled_h: usize,
    pub pooled_w: usize,
    pub spatial_scale: f32,
    /// Samples per bin side; 0 or less: `ceil(bin size)` per RoI.
    pub sampling_ratio: i32,
    output: Tensor<B>,
}

impl<B: Backend> RoiAlign<B> {
    pub fn new(
        backend: &B,
        (pooled_h, pooled_w): (usize, usize),
        spatial_scale: f32,
        sampling_ratio: i32,
    ) -> Self {
        RoiAlign {
            pooled_h,
            pooled_w,
            spatial_scale,
            sampling_ratio,
            output: Tensor::zeros(backend, &[0]),
        }
    }

    /// The geometry for map `x` (`[N, C, H, W]`), boxes `rois` (`[R, 4]`,
    /// `[x1, y1, x2, y2]` in input pixels) and `roi_batch` (`[R]`, each
    /// RoI's image as an f32).
    fn geom_for(&self, x: &Tensor<B>, rois: &Tensor<B>, roi_batch: &Tensor<B>) -> RoiAlignGeom {
        let (batch, channels, height, width) = x.nchw();
        let count = roi_batch.numel();
        assert_eq!(
            rois.shape(),
            [count, 4],
            "roi_align: rois must be [R, 4] for {count} image indices"
        );
        let g = RoiAlignGeom {
            batch,
            channels,
            height,
            width,
            rois: count,
            pooled_h: self.pooled_h,
            pooled_w: self.pooled_w,
            spatial_scale: self.spatial_scale,
            sampling_ratio: self.sampling_ratio,
        };
        if let Err(msg) = g.validate() {
            panic!("{msg}");
        }
        g
    }

    /// `[R, C, pooled_h, pooled_w]`; a RoI whose image index is not one of
    /// the batch's gets NaN.
    pub fn forward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        rois: &Tensor<B>,
        roi_batch: &Tensor<B>,
    ) -> &Tensor<B> {
        let g = self.geom_for(x, rois, roi_batch);
        self.output
            .reshape_reuse(backend, &[g.rois, g.channels, g.pooled_h, g.pooled_w]);
        backend.roi_align_forward(
            &g,
            x.buf(),
            rois.buf(),
            roi_batch.buf(),
            self.output.buf_mut(),
        );
        &self.output
    }

    /// `dx` (shaped as `x`, overwritten) from the output gradient `dy`.
    pub fn backward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        rois: &Tensor<B>,
        roi_batch: &Tensor<B>,
        dy: &Tensor<B>,
        dx: &mut Tensor<B>,
    ) {
        let g = self.geom_for(x, rois, roi_batch);
        assert_eq!(
            dy.shape(),
            [g.rois, g.channels, g.pooled_h, g.pooled_w],
            "roi_align backward: dy shape"
        );
        dx.reshape_reuse(backend, x.shape());
        backend.roi_align_backward(&g, dy.buf(), rois.buf(), roi_batch.buf(), dx.buf_mut());
    }

    pub fn output(&self) -> &Tensor<B> {
        &self.output
    }

    /// The output, for a head that replaces it by its own gradient once
    /// read (`BoxHead::backward`): `backward` does not read it.
    pub fn output_mut(&mut self) -> &mut Tensor<B> {
        &mut self.output
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

    const SHAPE: [usize; 4] = [2, 3, 6, 7];

    /// Boxes in input pixels (stride 2: a 12 x 14 image) on both images:
    /// inside, partly outside, smaller than a map pixel, larger than the
    /// map; their corners shifted by the seed.
    fn boxes(seed: u64) -> (Vec<f32>, Vec<f32>) {
        let shift = random_vec(seed + 50, 24);
        let base = [
            [1.0, 2.0, 9.0, 10.0],
            [-4.0, -3.0, 5.0, 4.0],
            [8.0, 6.0, 17.0, 15.0],
            [5.0, 5.0, 5.6, 5.3],
            [-6.0, -5.0, 20.0, 18.0],
            [3.0, 1.0, 12.0, 6.0],
        ];
        let rois = base
            .iter()
            .flatten()
            .zip(&shift)
            .map(|(v, s)| v + s)
            .collect();
        (rois, vec![0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    }

    /// The output is linear in the map (bilinear weights depend only on the
    /// boxes), so the differences are exact up to rounding at every point,
    /// for the adaptive grid and a fixed one.
    #[test]
    fn backward_matches_finite_differences() {
        let b = cpu();
        for seed in SEEDS {
            for (pooled, ratio) in [((3, 2), 0), ((2, 2), 2)] {
                let (rois, images) = boxes(seed);
                let rois = Tensor::from_host(&b, &[6, 4], &rois);
                let images = Tensor::from_host(&b, &[6], &images);
                let xs = random_vec(seed, SHAPE.iter().product());
                let x = Tensor::from_host(&b, &SHAPE, &xs);
                let mut layer = RoiAlign::new(&b, pooled, 0.5, ratio);
                let out = layer.forward(&b, &x, &rois, &images).shape().to_vec();
                let r = random_vec(seed + 10, out.iter().product());
                let mut dx = Tensor::zeros(&b, &[0]);
                layer.backward(
                    &b,
                    &x,
                    &rois,
                    &images,
                    &Tensor::from_host(&b, &out, &r),
                    &mut dx,
                );
                let analytic = dx.to_host(&b);
                assert!(analytic.iter().filter(|&&g| g != 0.0).count() > analytic.len() / 2);
                let loss = |v: &[f32]| {
                    let x = Tensor::from_host(&b, &SHAPE, v);
                    probe_loss(&layer.forward(&b, &x, &rois, &images).to_host(&b), &r)
                };
                let name = format!("roi_align {pooled:?} ratio {ratio} seed {seed}");
                check_gradient(&name, &xs, &analytic, loss, GradCheck::default()).unwrap();
            }
        }
    }

    #[test]
    #[should_panic(expected = "rois must be [R, 4] for 2 image indices")]
    fn boxes_and_indices_must_agree() {
        let b = cpu();
        let x = Tensor::zeros(&b, &SHAPE);
        let mut layer = RoiAlign::new(&b, (2, 2), 0.5, 0);
        layer.forward(
            &b,
            &x,
            &Tensor::zeros(&b, &[3, 4]),
            &Tensor::zeros(&b, &[2]),
        );
    }
}
