//! Mask R-CNN's mask branch at run time, on a Faster R-CNN's features, as
//! PaddleDetection's `MaskRCNN` wires it (`architectures/mask_rcnn.py`):
//!
//! - its input: FPN cuts `14 x 14` features for its RoIs from P2..P5 with a
//!   second `FPNRoIAlign` (`is_mask=True`); C4 reads the box head's res5
//!   output, in training the rows of the foreground RoIs (`gather` by
//!   `RoiHasMaskInt32`), at inference res5 run again on the detected boxes;
//! - the head: `mask_inter_feat_1..n` (3x3, ReLU; FPN only), `conv5_mask`
//!   (2x2 stride-2 transposed conv, ReLU), `mask_fcn_logits` (1x1), one
//!   `M x M` logit map per class;
//! - in training the loss against `generate_mask_labels`' targets, drawn
//!   from their polygons (`Backend::polygon_masks`) and scored
//!   (`Backend::mask_loss`) on the device: the polygons are uploaded, only
//!   the logits' gradient is kept, nothing is downloaded; at inference the
//!   sigmoid of each detection's class map pasted into the picture
//!   (`rcnn::paste_masks`: resized and thresholded on the device, each
//!   detection's pixels inside its picture downloaded).
//!
//! The backward pass mirrors the forward: the logits' gradient down the head
//! to the gradient of its input, which the detector adds into the features'
//! (FPN: through this branch's RoIAlign; C4: into the rows of res5's output
//! the input was gathered from).

use std::ops::Range;

use super::conv_unit::{ConvUnit, Scratch};
use super::faster_rcnn_rois::{row_copy, RoiExtractor, Rois};
use crate::backend::{Backend, MaskLossGeom, RoiPolygons};
use crate::layers::ConvTranspose2d;
use crate::models::chain;
use crate::tensor::Tensor;

/// Where the head's input comes from.
pub(super) enum MaskInput<B: Backend> {
    /// FPN: this branch's own RoIAlign on the pyramid.
    Pyramid(RoiExtractor<B>),
    /// C4: rows of the box head's res5 output, copied into `rows` (the
    /// head's input) from the blocks `blocks` of the box head's RoIs (in
    /// training the foreground RoIs; at inference res5 runs on this
    /// branch's RoIs and the block is all of them).
    Res5 {
        rows: Tensor<B>,
        blocks: Vec<Range<usize>>,
        /// The gradient of res5's rows, gathered, summed and scattered back.
        rows_grad: Tensor<B>,
    },
}

pub(super) struct MaskBranch<B: Backend> {
    /// The head's conv units in the net: `mask_inter_feat_*`, then
    /// `mask_fcn_logits` (`conv5_mask` is the net's transposed conv 0).
    pub first_unit: usize,
    pub num_convs: usize,
    /// Classes including the background, and the mask side `M`.
    pub num_classes: usize,
    pub resolution: usize,
    pub input: MaskInput<B>,
    /// The RoIs the head runs on: the foreground RoIs in training, the
    /// detections (in input pixels) at inference.
    pub rois: Rois<B>,
    /// The gradient of the logits `[R, classes, M, M]` (device order of
    /// `rois`), and at inference their sigmoid.
    pub logits_grad: Tensor<B>,
    probs: Tensor<B>,
    /// The loss's inputs on the device: each RoI's class (-1: a placeholder
    /// row), the polygons (`RoiPolygons`' three tables) its `M x M` target
    /// is drawn from, the target; and each scored element's loss.
    roi_classes: Tensor<B>,
    polygon_tables: [Tensor<B>; 3],
    targets: Tensor<B>,
    losses: Tensor<B>,
    /// Gradients on the way down: of `conv5_mask`'s output and of the
    /// head's input.
    upsample_grad: Tensor<B>,
    pub input_grad: Tensor<B>,
}

impl<B: Backend> MaskBranch<B> {
    pub fn new(
        backend: &B,
        (first_unit, num_convs): (usize, usize),
        (num_classes, resolution): (usize, usize),
        input: MaskInput<B>,
        rois: Rois<B>,
    ) -> Self {
        let empty = || Tensor::zeros(backend, &[0]);
        MaskBranch {
            first_unit,
            num_convs,
            num_classes,
            resolution,
            input,
            rois,
            logits_grad: empty(),
            probs: empty(),
            roi_classes: empty(),
            polygon_tables: [empty(), empty(), empty()],
            targets: empty(),
            losses: empty(),
            upsample_grad: empty(),
            input_grad: empty(),
        }
    }

    /// FPN: cuts the head's input for `rois` (uploaded) from the pyramid's
    /// `features` (lowest level first).
    pub fn extract(&mut self, backend: &B, features: &[&Tensor<B>]) {
        let MaskInput::Pyramid(extractor) = &mut self.input else {
            panic!("only FPN's mask head has its own RoIAlign");
        };
        extractor.forward(backend, features, &self.rois);
    }

    /// FPN: adds the gradient of the head's input into the features'
    /// (`feature_grads`, lowest level first); `part` is scratch.
    pub fn extract_backward(
        &mut self,
        backend: &B,
        features: &[&Tensor<B>],
        feature_grads: &mut [Tensor<B>],
        part: &mut Tensor<B>,
    ) {
        let MaskInput::Pyramid(extractor) = &mut self.input else {
            panic!("only FPN's mask head has its own RoIAlign");
        };
        extractor.backward(
            backend,
            features,
            &self.rois,
            &self.input_grad,
            feature_grads,
            part,
        );
    }

    /// C4: copies the rows `blocks` of res5's output `res5` (`[R, C, 7,
    /// 7]`) one block after another into the head's input.
    pub fn gather_res5_rows(
        &mut self,
        backend: &B,
        res5: &Tensor<B>,
        new_blocks: Vec<Range<usize>>,
    ) {
        let MaskInput::Res5 { rows, blocks, .. } = &mut self.input else {
            panic!("only C4's mask head reads res5's rows");
        };
        *blocks = new_blocks;
        let total = res5.shape()[0];
        let row = res5.numel() / total;
        let count: usize = blocks.iter().map(|b| b.len()).sum();
        let mut shape = res5.shape().to_vec();
        shape[0] = count;
        rows.reshape_reuse(backend, &shape);
        let mut first = 0;
        for block in blocks.iter() {
            let copy = row_copy(row, (total, block.start), (count, first), block.len());
            backend.copy_channels(&copy, res5.buf(), rows.buf_mut());
            first += block.len();
        }
    }

    /// C4 in training: adds the gradient of the head's input into the rows
    /// of `res5_grad` it was gathered from.
    pub fn add_res5_rows_grad(&mut self, backend: &B, res5_grad: &mut Tensor<B>) {
        let MaskInput::Res5 {
            blocks, rows_grad, ..
        } = &mut self.input
        else {
            panic!("only C4's mask head reads res5's rows");
        };
        let total = res5_grad.shape()[0];
        let row = res5_grad.numel() / total;
        let count = self.input_grad.shape()[0];
        rows_grad.reshape_reuse(backend, self.input_grad.shape());
        let mut first = 0;
        for block in blocks.iter() {
            let copy = row_copy(row, (total, block.start), (count, first), block.len());
            backend.copy_channels(&copy, res5_grad.buf(), rows_grad.buf_mut());
            first += block.len();
        }
        backend.axpy(count * row, 1.0, self.input_grad.buf(), rows_grad.buf_mut());
        let mut first = 0;
        for block in blocks.iter() {
            let copy = row_copy(row, (count, first), (total, block.start), block.len());
            backend.copy_channels(&copy, rows_grad.buf(), res5_grad.buf_mut());
            first += block.len();
        }
    }

    /// The head on its input (`extract` or `gather_res5_rows` made it).
    pub fn forward(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        upsample: &mut ConvTranspose2d<B>,
        workspace: &mut Tensor<B>,
    ) {
        let x = input_of(&self.input);
        let head = head_units(units, self.first_unit, self.num_convs);
        let (convs, logits) = head.split_at_mut(self.num_convs);
        chain::forward(backend, convs, &mut [], x, workspace);
        let hidden = convs.last().map_or(x, |c| c.output());
        let up = upsample.forward(backend, hidden, workspace);
        logits[0].forward(backend, up, workspace);
    }

    /// The logits of the last `forward`, `[R, classes, M, M]` in the
    /// device's order of `rois`.
    pub fn logits<'a>(&self, units: &'a [ConvUnit<B>]) -> &'a Tensor<B> {
        units[self.first_unit + self.num_convs].output()
    }

    /// Their sigmoid, on the device (PaddleDetection's mask probabilities).
    pub fn probabilities(&mut self, backend: &B, units: &[ConvUnit<B>]) -> &Tensor<B> {
        let logits = self.logits(units);
        self.probs.reshape_reuse(backend, logits.shape());
        backend.sigmoid_forward(logits.numel(), logits.buf(), self.probs.buf_mut());
        &self.probs
    }

    /// The loss of the last `forward`'s logits against each RoI's class
    /// (`classes`, -1 for a placeholder row) and `M x M` 0/1 target, drawn
    /// from its polygons (`polygons`, one RoI each), both in Paddle's order
    /// of the RoIs; its gradient is then in `logits_grad`.
    /// PaddleDetection's `MaskHead.get_loss`: the mean over the scored
    /// elements (every cell of each non-placeholder RoI's class map); 0
    /// with a zero gradient when there are none.
    pub fn loss(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        mut classes: Vec<f32>,
        mut polygons: RoiPolygons,
    ) -> f32 {
        let head = head_units(units, self.first_unit, self.num_convs);
        let logits = head[self.num_convs].output();
        self.logits_grad.reshape_reuse(backend, logits.shape());
        let cells = self.resolution * self.resolution;
        let scored = classes.iter().filter(|&&c| c >= 0.0).count() * cells;
        if scored == 0 {
            self.logits_grad.fill(backend, 0.0);
            return 0.0;
        }
        self.rois.to_device_order(&mut classes, 1);
        self.rois.to_device_order(&mut polygons.roi_polygons, 2);
        let rois = classes.len();
        self.roi_classes.reshape_reuse(backend, &[rois]);
        self.roi_classes.upload(backend, &classes);
        let shape = polygons.geom(self.resolution);
        let [points, table, roi_polygons] = &mut self.polygon_tables;
        for (tensor, values) in [
            (&mut *points, &polygons.points),
            (&mut *table, &polygons.polygons),
            (&mut *roi_polygons, &polygons.roi_polygons),
        ] {
            tensor.reshape_reuse(backend, &[values.len() / 2, 2]);
            tensor.upload(backend, values);
        }
        self.targets.reshape_reuse(backend, &[rois, cells]);
        backend.polygon_masks(
            &shape,
            points.buf(),
            table.buf(),
            roi_polygons.buf(),
            self.targets.buf_mut(),
        );
        self.losses.reshape_reuse(backend, &[rois, cells]);
        let g = MaskLossGeom {
            rois,
            classes: self.num_classes,
            side: self.resolution,
            normalizer: scored as f32,
        };
        backend.mask_loss(
            &g,
            logits.buf(),
            self.roi_classes.buf(),
            self.targets.buf(),
            self.logits_grad.buf_mut(),
            self.losses.buf_mut(),
        );
        backend.sum(self.losses.numel(), self.losses.buf()) as f32
    }

    /// From `logits_grad` down the head, after a `forward`: the
    /// parameters' gradients, and the input's in `input_grad`.
    pub fn backward(
        &mut self,
        backend: &B,
        units: &mut [ConvUnit<B>],
        upsample: &mut ConvTranspose2d<B>,
        s: &mut Scratch<B>,
    ) {
        let x = input_of(&self.input);
        let head = head_units(units, self.first_unit, self.num_convs);
        let (convs, logits) = head.split_at_mut(self.num_convs);
        logits[0].backward(
            backend,
            upsample.output(),
            &self.logits_grad,
            &mut s.dz,
            Some(&mut self.upsample_grad),
            &mut s.workspace,
        );
        let hidden = convs.last().map_or(x, |c| c.output());
        let first_grad = if convs.is_empty() {
            &mut self.input_grad
        } else {
            &mut s.grad
        };
        upsample.backward(
            backend,
            hidden,
            &self.upsample_grad,
            &mut s.dz,
            Some(first_grad),
            &mut s.workspace,
        );
        for i in (0..convs.len()).rev() {
            let (below, rest) = convs.split_at_mut(i);
            let input = below.last().map_or(x, |c| c.output());
            let dx = if i == 0 {
                &mut self.input_grad
            } else {
                &mut s.grad_next
            };
            rest[0].backward(
                backend,
                input,
                &s.grad,
                &mut s.dz,
                Some(dx),
                &mut s.workspace,
            );
            if i > 0 {
                s.step_down();
            }
        }
    }

    pub fn planned_bytes(&self, backend: &B) -> usize {
        let input = match &self.input {
            MaskInput::Pyramid(extractor) => extractor.planned_bytes(backend),
            MaskInput::Res5 {
                rows, rows_grad, ..
            } => rows.capacity_bytes(backend) + rows_grad.capacity_bytes(backend),
        };
        input
            + self.rois.planned_bytes(backend)
            + [
                &self.logits_grad,
                &self.probs,
                &self.roi_classes,
                &self.polygon_tables[0],
                &self.polygon_tables[1],
                &self.polygon_tables[2],
                &self.targets,
                &self.losses,
                &self.upsample_grad,
                &self.input_grad,
            ]
            .iter()
            .map(|t| t.capacity_bytes(backend))
            .sum::<usize>()
    }
}

/// The head's units among the net's `units`: its `num_convs` convs from
/// `first`, then `mask_fcn_logits`.
fn head_units<B: Backend>(
    units: &mut [ConvUnit<B>],
    first: usize,
    num_convs: usize,
) -> &mut [ConvUnit<B>] {
    &mut units[first..=first + num_convs]
}

/// The head's input as `extract` or `gather_res5_rows` left it.
fn input_of<B: Backend>(input: &MaskInput<B>) -> &Tensor<B> {
    match input {
        MaskInput::Pyramid(extractor) => extractor.output(),
        MaskInput::Res5 { rows, .. } => rows,
    }
}
