//! The RoIs of a Faster R-CNN pass and the features pooled for them, as
//! PaddleDetection's roi extractors cut them:
//!
//! - `RoIAlign` (C4): every RoI from the one feature the heads read;
//! - `FPNRoIAlign`: each RoI from the pyramid level its size picks
//!   (`distribute_fpn_proposals`), a `RoIAlign` per level at that level's
//!   scale, the levels' outputs concatenated, and Paddle then gathers them
//!   back into the RoIs' order (`restore_index`).
//!
//! Here the device keeps the RoIs grouped by level (no gather on the
//! device): the box head's outputs are put back into Paddle's order on the
//! host when they are downloaded, and their gradients into the device's
//! order before they are uploaded, so the host code sees Paddle's order
//! only.

use std::ops::Range;

use crate::backend::{Backend, ChannelCopy};
use crate::box_coder::BoxXyxy;
use crate::layers::RoiAlign;
use crate::models::conv_unit::accumulate;
use crate::rcnn::{distribute_fpn_proposals, FpnLevels};
use crate::tensor::Tensor;

/// A pass's RoIs: on the host in Paddle's order (image after image), on
/// the device grouped by the level they are pooled from.
pub(super) struct Rois<B: Backend> {
    /// Boxes in input pixels and the image each belongs to.
    pub boxes: Vec<BoxXyxy>,
    pub images: Vec<usize>,
    /// FPN: the level each RoI is pooled from; None: one level.
    levels: Option<FpnLevels>,
    /// `order[r]`: the RoI at device row `r`; empty while the device's
    /// order is Paddle's (one level).
    order: Vec<usize>,
    /// Each level's device rows, and its boxes (`[R, 4]`) and image
    /// indices (`[R]`) on the device.
    level_rows: Vec<Range<usize>>,
    device: Vec<[Tensor<B>; 2]>,
}

impl<B: Backend> Rois<B> {
    /// RoIs pooled from one feature (`levels` None) or from the levels
    /// `levels` picks.
    pub fn new(backend: &B, levels: Option<FpnLevels>) -> Self {
        let count = levels.as_ref().map_or(1, |l| l.max_level - l.min_level + 1);
        Rois {
            boxes: Vec::new(),
            images: Vec::new(),
            levels,
            order: Vec::new(),
            level_rows: vec![0..0; count],
            device: (0..count)
                .map(|_| [Tensor::zeros(backend, &[0]), Tensor::zeros(backend, &[0])])
                .collect(),
        }
    }

    pub fn clear(&mut self) {
        self.boxes.clear();
        self.images.clear();
    }

    /// Sorts the RoIs into their levels and uploads each level's.
    pub fn upload(&mut self, backend: &B) {
        self.order.clear();
        match &self.levels {
            None => self.level_rows[0] = 0..self.boxes.len(),
            Some(levels) => {
                let distributed = distribute_fpn_proposals(levels, &self.boxes);
                for (rows, indices) in self.level_rows.iter_mut().zip(&distributed.per_level) {
                    *rows = self.order.len()..self.order.len() + indices.len();
                    self.order.extend(indices);
                }
            }
        }
        for (rows, [boxes, images]) in self.level_rows.iter().zip(&mut self.device) {
            let at = |r: usize| self.order.get(r).copied().unwrap_or(r);
            let flat: Vec<f32> = rows.clone().flat_map(|r| self.boxes[at(r)]).collect();
            let index: Vec<f32> = rows.clone().map(|r| self.images[at(r)] as f32).collect();
            boxes.reshape_reuse(backend, &[rows.len(), 4]);
            boxes.upload(backend, &flat);
            images.reshape_reuse(backend, &[rows.len()]);
            images.upload(backend, &index);
        }
    }

    /// Rows of `width` values in the device's order (as downloaded) put in
    /// Paddle's order.
    pub fn to_paddle_order(&self, values: &mut [f32], width: usize) {
        if self.order.is_empty() {
            return;
        }
        let device = values.to_vec();
        for (r, &i) in self.order.iter().enumerate() {
            values[i * width..][..width].copy_from_slice(&device[r * width..][..width]);
        }
    }

    /// The device row of each RoI (Paddle's order).
    pub fn device_rows(&self) -> Vec<usize> {
        let mut rows: Vec<usize> = (0..self.boxes.len()).collect();
        for (r, &i) in self.order.iter().enumerate() {
            rows[i] = r;
        }
        rows
    }

    /// Rows of `width` values in Paddle's order put in the device's (to
    /// upload).
    pub fn to_device_order(&self, values: &mut [f32], width: usize) {
        if self.order.is_empty() {
            return;
        }
        let paddle = values.to_vec();
        for (r, &i) in self.order.iter().enumerate() {
            values[r * width..][..width].copy_from_slice(&paddle[i * width..][..width]);
        }
    }

    pub fn planned_bytes(&self, backend: &B) -> usize {
        self.device
            .iter()
            .flatten()
            .map(|t| t.capacity_bytes(backend))
            .sum()
    }
}

/// RoIAlign on each level of the RoIs, into one `[R, C, res, res]` buffer
/// in the device's order of the RoIs.
pub(super) struct RoiExtractor<B: Backend> {
    /// One per level of the RoIs, lowest first; level `j` reads the heads'
    /// feature `first_feature + j` (lowest level first).
    aligns: Vec<RoiAlign<B>>,
    first_feature: usize,
    /// With more than one level: their outputs one after another, and one
    /// level's share of the output gradient.
    output: Tensor<B>,
    level_grad: Tensor<B>,
}

/// A block of `count` RoI rows of `row` values each, from row `src_first`
/// of a tensor of `src_rows` to row `dst_first` of one of `dst_rows`.
pub(super) fn row_copy(
    row: usize,
    (src_rows, src_first): (usize, usize),
    (dst_rows, dst_first): (usize, usize),
    count: usize,
) -> ChannelCopy {
    // One "image" whose channels are the RoIs.
    ChannelCopy {
        batch: 1,
        spatial: row,
        src_channels: src_rows,
        src_first,
        dst_channels: dst_rows,
        dst_first,
        count,
    }
}

impl<B: Backend> RoiExtractor<B> {
    /// `resolution` x `resolution` bins with `sampling_ratio` samples a
    /// side (0: as many as a bin covers), level `j` at `scales[j]` reading
    /// feature `first_feature + j`.
    pub fn new(
        backend: &B,
        resolution: usize,
        sampling_ratio: usize,
        scales: &[f32],
        first_feature: usize,
    ) -> Self {
        RoiExtractor {
            aligns: scales
                .iter()
                .map(|&scale| {
                    RoiAlign::new(
                        backend,
                        (resolution, resolution),
                        scale,
                        sampling_ratio as i32,
                    )
                })
                .collect(),
            first_feature,
            output: Tensor::zeros(backend, &[0]),
            level_grad: Tensor::zeros(backend, &[0]),
        }
    }

    /// The RoIs' features from `features` (the heads', lowest level
    /// first), after `rois.upload`.
    pub fn forward(&mut self, backend: &B, features: &[&Tensor<B>], rois: &Rois<B>) -> &Tensor<B> {
        if self.aligns.len() == 1 {
            let [boxes, images] = &rois.device[0];
            let x = features[self.first_feature];
            return self.aligns[0].forward(backend, x, boxes, images);
        }
        let total = rois.boxes.len();
        let channels = features[self.first_feature].shape()[1];
        let (h, w) = (self.aligns[0].pooled_h, self.aligns[0].pooled_w);
        self.output.reshape_reuse(backend, &[total, channels, h, w]);
        let row = channels * h * w;
        for (j, align) in self.aligns.iter_mut().enumerate() {
            let rows = &rois.level_rows[j];
            if rows.is_empty() {
                continue;
            }
            let [boxes, images] = &rois.device[j];
            let out = align.forward(backend, features[self.first_feature + j], boxes, images);
            let copy = row_copy(row, (rows.len(), 0), (total, rows.start), rows.len());
            backend.copy_channels(&copy, out.buf(), self.output.buf_mut());
        }
        &self.output
    }

    /// The features' gradients from `dy` (the output's), added into
    /// `feature_grads` (the heads' features', lowest level first); `part`
    /// is scratch.
    pub fn backward(
        &mut self,
        backend: &B,
        features: &[&Tensor<B>],
        rois: &Rois<B>,
        dy: &Tensor<B>,
        feature_grads: &mut [Tensor<B>],
        part: &mut Tensor<B>,
    ) {
        let total = rois.boxes.len();
        let single = self.aligns.len() == 1;
        for (j, align) in self.aligns.iter_mut().enumerate() {
            let rows = &rois.level_rows[j];
            if rows.is_empty() {
                continue;
            }
            let [boxes, images] = &rois.device[j];
            let f = self.first_feature + j;
            let level_dy = if single {
                dy
            } else {
                let mut shape = dy.shape().to_vec();
                shape[0] = rows.len();
                self.level_grad.reshape_reuse(backend, &shape);
                let row = dy.numel() / total;
                let copy = row_copy(row, (total, rows.start), (rows.len(), 0), rows.len());
                backend.copy_channels(&copy, dy.buf(), self.level_grad.buf_mut());
                &self.level_grad
            };
            align.backward(backend, features[f], boxes, images, level_dy, part);
            accumulate(backend, part, &mut feature_grads[f]);
        }
    }

    /// `backward` from the gradient a box head wrote over the output
    /// (`BoxHead::backward`), which is then the output again.
    pub fn backward_from_output(
        &mut self,
        backend: &B,
        features: &[&Tensor<B>],
        rois: &Rois<B>,
        feature_grads: &mut [Tensor<B>],
        part: &mut Tensor<B>,
    ) {
        let dy = std::mem::replace(self.output_mut(), Tensor::zeros(backend, &[0]));
        self.backward(backend, features, rois, &dy, feature_grads, part);
        *self.output_mut() = dy;
    }

    /// The RoIs' features after `forward`.
    pub fn output(&self) -> &Tensor<B> {
        match &self.aligns[..] {
            [one] => one.output(),
            _ => &self.output,
        }
    }

    /// The RoIs' features, for a box head that replaces them by their
    /// gradient (`backward_from_output`).
    pub fn output_mut(&mut self) -> &mut Tensor<B> {
        match &mut self.aligns[..] {
            [one] => one.output_mut(),
            _ => &mut self.output,
        }
    }

    pub fn planned_bytes(&self, backend: &B) -> usize {
        self.aligns
            .iter()
            .map(|a| a.planned_bytes(backend))
            .sum::<usize>()
            + self.output.capacity_bytes(backend)
            + self.level_grad.capacity_bytes(backend)
    }
}
