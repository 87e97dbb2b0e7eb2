//! The `Backend` trait: every kernel a training step needs, written once per
//! device (the CPU in `cpu/`, CUDA in `pulsefocus-gpu`). Layers are written
//! against this trait only, so the CPU backend is the reference every GPU
//! kernel is tested against.
//!
//! Conventions shared by all kernels:
//! - Buffers hold f32 in contiguous NCHW order. A buffer may be longer than
//!   the tensor it holds (memory is planned for the largest shape and reused);
//!   kernels read and write only the elements their geometry or `len` names.
//! - Backward kernels overwrite their gradient outputs (no accumulation). A
//!   model that feeds one tensor to two consumers sums the two gradients with
//!   `add`/`axpy`.
//! - Weights are `[c_out, c_in / groups, kernel_h, kernel_w]`, as in Paddle.

use crate::box_coder::BoxXyxy;
use crate::rcnn::{
    rpn_target_assign, BBoxHeadLoss, BoxHeadLossArgs, Draw, ImInfo, ProposalConfig, Proposals,
    RcnnConfig, RpnLevelGrad, RpnLevelOutput, RpnLoss, RpnTargetConfig, RpnTargets,
};
use crate::retinanet::{RetinaOutputConfig, RetinaTargetConfig};
use crate::ssd::{ImageTruth, SsdLoss, SsdLossConfig};
use crate::yolo::{Detection, NmsConfig, YoloConfig};

/// The activations a layer may apply. The backward of each is computed from
/// the activation's *output* (possible for all of these because each is
/// monotonic with a positive slope where it is not flat), so a fused
/// "batch norm + activation" need not keep its pre-activation values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    Relu6,
    /// Leaky ReLU with the given negative slope (0.1 in YOLOv3).
    LeakyRelu(f32),
}

impl Activation {
    /// YOLOv3's leaky ReLU (DarkNet53 and the YOLO head).
    pub const LEAKY_0_1: Activation = Activation::LeakyRelu(0.1);

    /// The activation as the two numbers that define it. Kernels take it once
    /// before a loop over a plane, so the loop body is two selects instead
    /// of a branch on the kind, and vectorises.
    pub fn piecewise(self) -> Piecewise {
        let (slope, upper) = match self {
            Activation::Identity => (1.0, f32::INFINITY),
            Activation::Relu => (0.0, f32::INFINITY),
            Activation::Relu6 => (0.0, 6.0),
            Activation::LeakyRelu(slope) => (slope, f32::INFINITY),
        };
        Piecewise { slope, upper }
    }

    pub fn forward(self, x: f32) -> f32 {
        self.piecewise().forward(x)
    }

    /// d act / d x, given the activation's output `y`.
    pub fn derivative_from_output(self, y: f32) -> f32 {
        self.piecewise().derivative_from_output(y)
    }
}

/// Every `Activation` is `min(x, upper)` for `x > 0` and `slope * x`
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Piecewise {
    pub slope: f32,
    pub upper: f32,
}

impl Piecewise {
    #[inline]
    pub fn forward(self, x: f32) -> f32 {
        let positive = if x < self.upper { x } else { self.upper };
        if x > 0.0 {
            positive
        } else {
            x * self.slope
        }
    }

    #[inline]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        let positive = if y < self.upper { 1.0 } else { 0.0 };
        if y > 0.0 {
            positive
        } else {
            self.slope
        }
    }
}

/// Shape of one 2-D convolution (Paddle's conv2d with symmetric padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dGeom {
    pub batch: usize,
    pub c_in: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub c_out: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub groups: usize,
}

impl Conv2dGeom {
    pub fn h_out(&self) -> usize {
        (self.h_in + 2 * self.pad_h - self.dilation_h * (self.kernel_h - 1) - 1) / self.stride_h + 1
    }

    pub fn w_out(&self) -> usize {
        (self.w_in + 2 * self.pad_w - self.dilation_w * (self.kernel_w - 1) - 1) / self.stride_w + 1
    }

    pub fn c_in_per_group(&self) -> usize {
        self.c_in / self.groups
    }

    pub fn c_out_per_group(&self) -> usize {
        self.c_out / self.groups
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.c_in * self.h_in * self.w_in
    }

    pub fn output_len(&self) -> usize {
        self.batch * self.c_out * self.h_out() * self.w_out()
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.c_out,
            self.c_in_per_group(),
            self.kernel_h,
            self.kernel_w,
        ]
    }

    pub fn weight_len(&self) -> usize {
        self.weight_shape().iter().product()
    }

    /// Multiply-adds of the forward pass times two (each of the backward
    /// passes costs the same).
    pub fn flops(&self) -> f64 {
        2.0 * self.output_len() as f64
            * (self.c_in_per_group() * self.kernel_h * self.kernel_w) as f64
    }

    /// One input channel per group and one output channel per group: the
    /// depthwise convolutions of MobileNet.
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.c_in && self.groups == self.c_out && self.groups > 1
    }

    /// A 1x1, stride-1, unpadded convolution is one matrix product per image.
    pub fn is_pointwise(&self) -> bool {
        self.kernel_h == 1
            && self.kernel_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_h == 0
            && self.pad_w == 0
    }

    /// Checks the geometry describes a real convolution; returns a message
    /// naming the first problem.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("batch", self.batch),
            ("c_in", self.c_in),
            ("h_in", self.h_in),
            ("w_in", self.w_in),
            ("c_out", self.c_out),
            ("kernel_h", self.kernel_h),
            ("kernel_w", self.kernel_w),
            ("stride_h", self.stride_h),
            ("stride_w", self.stride_w),
            ("dilation_h", self.dilation_h),
            ("dilation_w", self.dilation_w),
            ("groups", self.groups),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("conv2d: {name} must be positive"));
            }
        }
        if !self.c_in.is_multiple_of(self.groups) || !self.c_out.is_multiple_of(self.groups) {
            return Err(format!(
                "conv2d: groups {} must divide c_in {} and c_out {}",
                self.groups, self.c_in, self.c_out
            ));
        }
        let reach_h = self.dilation_h * (self.kernel_h - 1) + 1;
        let reach_w = self.dilation_w * (self.kernel_w - 1) + 1;
        if self.h_in + 2 * self.pad_h < reach_h || self.w_in + 2 * self.pad_w < reach_w {
            return Err(format!(
                "conv2d: kernel {}x{} (dilation {}x{}) does not fit input {}x{} with padding {}x{}",
                self.kernel_h,
                self.kernel_w,
                self.dilation_h,
                self.dilation_w,
                self.h_in,
                self.w_in,
                self.pad_h,
                self.pad_w
            ));
        }
        Ok(())
    }
}

/// Shape of a batch norm: statistics are per channel over batch and space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchNormGeom {
    pub batch: usize,
    pub channels: usize,
    /// Height x width.
    pub spatial: usize,
}

impl BatchNormGeom {
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.spatial
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Shape of a max pool (Paddle pool2d; padding never wins the max).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolGeom {
    pub batch: usize,
    pub channels: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    /// Paddle's `ceil_mode` (VGG's pools): a last window that runs past
    /// the padded input still gives an output, from the cells it covers.
    /// false: floor mode, every window inside.
    pub ceil_mode: bool,
}

impl PoolGeom {
    fn pooled(&self, size: usize) -> usize {
        let span = size + 2 * self.pad - self.kernel;
        if self.ceil_mode {
            span.div_ceil(self.stride) + 1
        } else {
            span / self.stride + 1
        }
    }

    pub fn h_out(&self) -> usize {
        self.pooled(self.h_in)
    }

    pub fn w_out(&self) -> usize {
        self.pooled(self.w_in)
    }

    /// Whether every window fits and covers at least one input cell (in
    /// ceil mode a last window could start in the padding, past the input).
    pub fn fits(&self) -> bool {
        self.kernel > 0
            && self.stride > 0
            && self.pad < self.kernel
            && self.h_in + 2 * self.pad >= self.kernel
            && self.w_in + 2 * self.pad >= self.kernel
            && (self.h_out() - 1) * self.stride < self.h_in + self.pad
            && (self.w_out() - 1) * self.stride < self.w_in + self.pad
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.h_in * self.w_in
    }

    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.h_out() * self.w_out()
    }
}

/// Copy of a block of channels between two NCHW tensors of the same batch and
/// spatial size: the forward of concat and the backward of concat (split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelCopy {
    pub batch: usize,
    pub spatial: usize,
    pub src_channels: usize,
    pub src_first: usize,
    pub dst_channels: usize,
    pub dst_first: usize,
    pub count: usize,
}

/// One level of a multi-box head (PaddleDetection's `multi_box_head`): the
/// conv output `[batch, anchors * values, height, width]` transposed to NHWC
/// and reshaped to `[batch, height * width * anchors, values]`, written at
/// rows `first_row..first_row + level_rows()` of the batch's
/// `[batch, total_rows, values]`, where the levels are concatenated. Channel
/// `c = a * values + k` at cell `(h, w)` of image `n` is row `first_row +
/// (h * width + w) * anchors + a`, column `k`, of image `n`. `values` is 4
/// for the box offsets and the class count for the scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeadRows {
    pub batch: usize,
    pub anchors: usize,
    pub values: usize,
    pub height: usize,
    pub width: usize,
    /// Rows per image of the concatenation (all levels).
    pub total_rows: usize,
    /// This level's first row in each image.
    pub first_row: usize,
}

impl HeadRows {
    /// Rows this level contributes per image: `height * width * anchors`.
    pub fn level_rows(&self) -> usize {
        self.height * self.width * self.anchors
    }

    /// Elements of the conv output `[batch, anchors * values, height, width]`.
    pub fn input_len(&self) -> usize {
        self.batch * self.anchors * self.values * self.height * self.width
    }

    /// Elements of the whole concatenation `[batch, total_rows, values]`.
    pub fn rows_len(&self) -> usize {
        self.batch * self.total_rows * self.values
    }

    /// Checks every size is positive and the level's rows fit; returns a
    /// message naming the first problem.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("batch", self.batch),
            ("anchors", self.anchors),
            ("values", self.values),
            ("height", self.height),
            ("width", self.width),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("head_rows: {name} must be positive"));
            }
        }
        if self.first_row + self.level_rows() > self.total_rows {
            return Err(format!(
                "head_rows: rows {}..{} of the level ({}x{} cells, {} anchors) exceed total_rows {}",
                self.first_row,
                self.first_row + self.level_rows(),
                self.height,
                self.width,
                self.anchors,
                self.total_rows
            ));
        }
        Ok(())
    }
}

/// Shape of an L2 normalisation over the channels of an NCHW tensor with a
/// learnable per-channel scale, as VGG16-SSD normalises `conv4_3` for its
/// head (PaddleDetection's `_l2_norm_scale`: Paddle's `norm` op along axis
/// 1, then `elementwise_mul` by a `[channels]` parameter). Each of the
/// `batch * spatial` positions is normalised on its own:
/// `norm[n, p] = sqrt(sum_c x[n, c, p]^2 + epsilon)` (the epsilon inside
/// the root, as Paddle's `norm` kernel adds it) and
/// `y[n, c, p] = x[n, c, p] / norm[n, p] * scale[c]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct L2NormGeom {
    pub batch: usize,
    pub channels: usize,
    /// Height x width.
    pub spatial: usize,
}

impl L2NormGeom {
    /// Elements of `x` and `y`.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.spatial
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions normalised (`batch * spatial`): the length of `norm`.
    pub fn positions(&self) -> usize {
        self.batch * self.spatial
    }

    /// Checks every size is positive; returns a message naming the first
    /// that is not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("batch", self.batch),
            ("channels", self.channels),
            ("spatial", self.spatial),
        ] {
            if value == 0 {
                return Err(format!("l2_norm: {name} must be positive"));
            }
        }
        Ok(())
    }
}

/// Shape of a RoIAlign (Paddle 1.8's `roi_align`): `rois` boxes `[x1, y1,
/// x2, y2]` in input-image pixels, each on one image of the batch, pooled
/// from the `[batch, channels, height, width]` feature map into `[rois,
/// channels, pooled_h, pooled_w]`. A box is scaled by `spatial_scale` (1/16
/// for a stride-16 map), made at least 1x1, and cut into `pooled_h x
/// pooled_w` bins; each bin averages `grid_h x grid_w` bilinear samples at
/// the centres of an even sub-grid, `grid` being `sampling_ratio` when it is
/// positive and `ceil(bin size)` otherwise. No half-pixel offset (Paddle 1.8
/// has no `aligned`). A sample more than one pixel outside the map adds 0;
/// one within a pixel of it reads the border (coordinates clamped to the map).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlignGeom {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub rois: usize,
    pub pooled_h: usize,
    pub pooled_w: usize,
    pub spatial_scale: f32,
    /// Samples per bin side; 0 or less: `ceil(bin size)`, per RoI.
    pub sampling_ratio: i32,
}

impl RoiAlignGeom {
    /// Elements of the feature map `[batch, channels, height, width]`.
    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }

    /// Elements of the pooled output `[rois, channels, pooled_h, pooled_w]`.
    pub fn output_len(&self) -> usize {
        self.rois * self.channels * self.pooled_h * self.pooled_w
    }

    /// Elements of the boxes `[rois, 4]`.
    pub fn rois_len(&self) -> usize {
        self.rois * 4
    }

    /// Checks every size is positive (zero RoIs is allowed: nothing to
    /// pool) and the scale is a positive number; returns a message naming
    /// the first problem.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("batch", self.batch),
            ("channels", self.channels),
            ("height", self.height),
            ("width", self.width),
            ("pooled_h", self.pooled_h),
            ("pooled_w", self.pooled_w),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("roi_align: {name} must be positive"));
            }
        }
        if !(self.spatial_scale.is_finite() && self.spatial_scale > 0.0) {
            return Err(format!(
                "roi_align: spatial_scale {} must be a positive number",
                self.spatial_scale
            ));
        }
        Ok(())
    }
}

/// Shape of a fully connected layer as Paddle's `fluid.layers.fc` computes
/// it (the `mul` op, then `elementwise_add`, then the activation): `rows`
/// inputs of `inputs` values each (the input flattened from NCHW to `[rows,
/// C*H*W]`), the weight in Paddle's `[inputs, outputs]` layout and a bias of
/// `outputs`: `y = act(x W + b)`, `[rows, outputs]`. Zero rows is allowed
/// (no RoIs: nothing to compute, the parameter gradients are 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FcGeom {
    pub rows: usize,
    pub inputs: usize,
    pub outputs: usize,
}

impl FcGeom {
    /// Elements of `x`, `[rows, inputs]`.
    pub fn input_len(&self) -> usize {
        self.rows * self.inputs
    }

    /// Elements of `y`, `[rows, outputs]`.
    pub fn output_len(&self) -> usize {
        self.rows * self.outputs
    }

    /// Elements of the weight, `[inputs, outputs]`.
    pub fn weight_len(&self) -> usize {
        self.inputs * self.outputs
    }

    /// Checks `inputs` and `outputs` are positive; returns a message naming
    /// the first that is not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [("inputs", self.inputs), ("outputs", self.outputs)] {
            if value == 0 {
                return Err(format!("fc: {name} must be positive"));
            }
        }
        Ok(())
    }
}

/// Shape of a global average pool (Paddle's `pool2d(pool_type='avg',
/// global_pooling=True)`, after the C4 head's res5): each of the `batch *
/// channels` planes of `spatial` (height x width) values becomes its mean,
/// `[batch, channels, 1, 1]`. Paddle adds a plane's values in order and
/// divides the sum by the count; its gradient is `dy * (1 / count)` on
/// every value of the plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GlobalPoolGeom {
    pub batch: usize,
    pub channels: usize,
    /// Height x width.
    pub spatial: usize,
}

impl GlobalPoolGeom {
    /// Planes pooled (`batch * channels`): the elements of `y`.
    pub fn planes(&self) -> usize {
        self.batch * self.channels
    }

    /// Elements of `x`.
    pub fn input_len(&self) -> usize {
        self.planes() * self.spatial
    }

    /// Checks `channels` and `spatial` are positive (an empty batch is
    /// allowed: nothing to pool); returns a message naming the first that
    /// is not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [("channels", self.channels), ("spatial", self.spatial)] {
            if value == 0 {
                return Err(format!("global_avg_pool: {name} must be positive"));
            }
        }
        Ok(())
    }
}

/// One FPN level of RetinaNet's classification loss, Paddle's
/// `sigmoid_focal_loss` as `RetinaHead.get_loss` applies it: the logits are
/// the level's head output `[batch, anchors_per_cell * classes, height,
/// width]` (channel `a * classes + k` scores class `k + 1` of anchor slot
/// `a`), the labels one per anchor in Paddle's order `n * (height * width *
/// anchors_per_cell) + (h * width + w) * anchors_per_cell + a`, as floats:
/// -1 ignored (no loss, zero gradient), 0 background (every class
/// negative), `c >= 1` class `c` positive and the others negative. With `p
/// = sigmoid(x)`, a positive costs `-alpha (1 - p)^gamma ln p /
/// normalizer`, a negative `-(1 - alpha) p^gamma ln(1 - p) / normalizer`;
/// `normalizer` is Paddle's `max(fg_num, 1)`, the batch's
/// `ForegroundNumber`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FocalLossGeom {
    pub batch: usize,
    pub anchors_per_cell: usize,
    /// Foreground classes (`num_classes - 1`).
    pub classes: usize,
    pub height: usize,
    pub width: usize,
    pub gamma: f32,
    pub alpha: f32,
    pub normalizer: f32,
}

impl FocalLossGeom {
    /// Anchors of the level over the batch: the elements of the labels.
    pub fn anchors(&self) -> usize {
        self.batch * self.height * self.width * self.anchors_per_cell
    }

    /// Elements of the logits (and of the gradient and the losses).
    pub fn logits_len(&self) -> usize {
        self.anchors() * self.classes
    }

    /// Checks the sizes are positive (an empty batch is allowed), `gamma`
    /// is not negative and `normalizer` is positive, all finite; returns a
    /// message naming the first that is not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("anchors_per_cell", self.anchors_per_cell),
            ("classes", self.classes),
            ("height", self.height),
            ("width", self.width),
        ] {
            if value == 0 {
                return Err(format!("sigmoid_focal_loss: {name} must be positive"));
            }
        }
        if !(self.gamma >= 0.0 && self.gamma.is_finite()) {
            return Err(format!(
                "sigmoid_focal_loss: gamma must be finite and not negative, got {}",
                self.gamma
            ));
        }
        if !(self.normalizer > 0.0 && self.normalizer.is_finite() && self.alpha.is_finite()) {
            return Err(format!(
                "sigmoid_focal_loss: normalizer must be positive and alpha finite, got {} and {}",
                self.normalizer, self.alpha
            ));
        }
        Ok(())
    }
}

/// One FPN level of RetinaNet's box loss, Paddle's `smooth_l1` as
/// `RetinaHead.get_loss` applies it to the regression rows (core's
/// `retinanet::box_loss`), in the dense form a device can hold: the deltas
/// are the level's box output `[batch, 4 * anchors_per_cell, height,
/// width]` (channel `4a + j` the `j`-th of anchor slot `a`'s `[dx, dy, dw,
/// dh]`), `targets` `[batch * anchors, 4]` and `weights` `[batch *
/// anchors]` one row per anchor in Paddle's order `n * (height * width *
/// anchors_per_cell) + (h * width + w) * anchors_per_cell + a`: the
/// anchor's regression target and its inside (= outside) weight, 1 for a
/// foreground anchor and 0 for every other (Paddle's weight-0 "fake" rows
/// add nothing either). With `d = weight * (delta - target)`, an element
/// costs `weight * 0.5 * (sigma d)^2` where `|d| < 1 / sigma^2`, else
/// `weight * (|d| - 0.5 / sigma^2)`, divided by `normalizer` (the batch's
/// `ForegroundNumber`, as the focal loss's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetinaBoxLossGeom {
    pub batch: usize,
    pub anchors_per_cell: usize,
    pub height: usize,
    pub width: usize,
    pub sigma: f32,
    pub normalizer: f32,
}

impl RetinaBoxLossGeom {
    /// Anchors of the level over the batch: the rows of the targets.
    pub fn anchors(&self) -> usize {
        self.batch * self.height * self.width * self.anchors_per_cell
    }

    /// Elements of the deltas (and of the gradient and the losses).
    pub fn deltas_len(&self) -> usize {
        self.anchors() * 4
    }

    /// Checks the sizes are positive (an empty batch is allowed), `sigma`
    /// and `normalizer` positive and finite; returns a message naming the
    /// first that is not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("anchors_per_cell", self.anchors_per_cell),
            ("height", self.height),
            ("width", self.width),
        ] {
            if value == 0 {
                return Err(format!("retina_box_loss: {name} must be positive"));
            }
        }
        for (name, value) in [("sigma", self.sigma), ("normalizer", self.normalizer)] {
            if !(value > 0.0 && value.is_finite()) {
                return Err(format!(
                    "retina_box_loss: {name} must be positive and finite, got {value}"
                ));
            }
        }
        Ok(())
    }
}

/// One image's ground truth for [`Backend::retinanet_targets`]: boxes in
/// original-image pixels (width `x2 - x1 + 1`), their classes from 1, and
/// the image's `im_info` (`[resized height, resized width, scale]`; the
/// boxes are scaled by `scale` into the anchors' pixels).
#[derive(Debug, Clone, Copy)]
pub struct RetinaTruth<'a> {
    pub boxes: &'a [BoxXyxy],
    pub classes: &'a [i32],
    pub im_info: [f32; 3],
}

/// RetinaNet's target assignment over a batch (core's
/// `retinanet::retinanet_target_assign` per image), the argument of
/// [`Backend::retinanet_targets`] besides the levels' buffers
/// ([`RetinaTargetLevel`]).
#[derive(Debug, Clone, Copy)]
pub struct RetinaTargetsGeom<'a> {
    pub config: &'a RetinaTargetConfig,
    pub images: &'a [RetinaTruth<'a>],
}

impl RetinaTargetsGeom<'_> {
    /// Checks the thresholds are finite, each image has one class (from 1)
    /// per box and a positive finite scale; returns a message naming the
    /// first that is not.
    pub fn validate(&self) -> Result<(), String> {
        let RetinaTargetConfig {
            positive_overlap,
            negative_overlap,
        } = *self.config;
        if !(positive_overlap.is_finite() && negative_overlap.is_finite()) {
            return Err(format!(
                "retinanet_targets: overlaps must be finite, got {positive_overlap} and {negative_overlap}"
            ));
        }
        for (n, image) in self.images.iter().enumerate() {
            if image.boxes.len() != image.classes.len() {
                return Err(format!(
                    "retinanet_targets: image {n} has {} boxes and {} classes",
                    image.boxes.len(),
                    image.classes.len()
                ));
            }
            if let Some(class) = image.classes.iter().find(|&&c| c < 1) {
                return Err(format!(
                    "retinanet_targets: image {n}: class {class} (classes start at 1)"
                ));
            }
            let scale = image.im_info[2];
            if !(scale > 0.0 && scale.is_finite()) {
                return Err(format!(
                    "retinanet_targets: image {n}: scale must be positive and finite, got {scale}"
                ));
            }
        }
        Ok(())
    }
}

/// One image's ground truth for [`Backend::rpn_loss`]: boxes in
/// original-image pixels (crowd boxes left out) and the image's `im_info`
/// (`[resized height, resized width, scale]`; the boxes are scaled by
/// `scale` into the anchors' pixels).
#[derive(Debug, Clone, Copy)]
pub struct RpnTruth<'a> {
    pub boxes: &'a [BoxXyxy],
    pub im_info: [f32; 3],
}

/// Faster R-CNN's RPN target assignment over a batch, the argument of
/// [`Backend::rpn_loss`] besides the buffers: core's `rpn_target_assign`
/// of each image `n`, its samples drawn with `Draw { seed, image: n }`.
#[derive(Debug, Clone, Copy)]
pub struct RpnTargetsGeom<'a> {
    pub config: &'a RpnTargetConfig,
    pub images: &'a [RpnTruth<'a>],
    pub seed: u64,
}

impl RpnTargetsGeom<'_> {
    /// Checks the settings and each image's `im_info` are finite (the
    /// scale positive), and `anchors` has one buffer per level holding
    /// its `height * width * anchors_per_cell` anchors (`len` gives a
    /// buffer's length); returns a message naming the first that is not.
    pub fn validate<Buf: ?Sized>(
        &self,
        anchors: &[&Buf],
        levels: &[RpnLevelOutput<'_, Buf>],
        anchors_per_cell: usize,
        len: impl Fn(&Buf) -> usize,
    ) -> Result<(), String> {
        let c = self.config;
        for (name, value) in [
            ("fg_fraction", c.fg_fraction),
            ("positive_overlap", c.positive_overlap),
            ("negative_overlap", c.negative_overlap),
            ("straddle_thresh", c.straddle_thresh),
        ] {
            if !value.is_finite() {
                return Err(format!("rpn_loss: {name} must be finite, got {value}"));
            }
        }
        for (n, image) in self.images.iter().enumerate() {
            let [height, width, scale] = image.im_info;
            if !(height.is_finite() && width.is_finite() && scale > 0.0 && scale.is_finite()) {
                return Err(format!(
                    "rpn_loss: image {n}: im_info must be finite with a positive scale, got {:?}",
                    image.im_info
                ));
            }
        }
        if anchors.len() != levels.len() {
            return Err(format!(
                "rpn_loss: {} levels and {} anchor buffers",
                levels.len(),
                anchors.len()
            ));
        }
        for (l, (&buf, level)) in anchors.iter().zip(levels).enumerate() {
            let want = 4 * level.height * level.width * anchors_per_cell;
            if len(buf) < want {
                return Err(format!(
                    "rpn_loss: level {l} anchors has {} elements, needs at least {want}",
                    len(buf)
                ));
            }
        }
        Ok(())
    }

    /// Each image's targets against `anchors` (every level's, one after
    /// another): what every backend computes.
    pub fn targets(&self, anchors: &[BoxXyxy]) -> Vec<RpnTargets> {
        self.images
            .iter()
            .enumerate()
            .map(|(n, image)| {
                let [height, width, scale] = image.im_info;
                rpn_target_assign(
                    anchors,
                    image.boxes,
                    &vec![false; image.boxes.len()],
                    ImInfo {
                        height,
                        width,
                        scale,
                    },
                    self.config,
                    Draw {
                        seed: self.seed,
                        image: n as u32,
                    },
                )
            })
            .collect()
    }
}

/// One FPN level of [`Backend::retinanet_targets`], lowest level first:
/// its `count` anchors per image `[count, 4]` (the order of
/// `anchor_generator`), and the buffers the level's losses read, which the
/// op overwrites for the batch's `N` images: `labels` `[N * count]` (see
/// [`FocalLossGeom`]), `box_targets` `[N * count, 4]` and `box_weights` `[N
/// * count]` (see [`RetinaBoxLossGeom`]; a row of weight 0 holds zeros).
#[derive(Debug)]
pub struct RetinaTargetLevel<'a, Buf> {
    pub anchors: &'a Buf,
    pub count: usize,
    pub labels: &'a mut Buf,
    pub box_targets: &'a mut Buf,
    pub box_weights: &'a mut Buf,
}

/// Mask R-CNN's mask loss over `rois` RoIs, Paddle's
/// `sigmoid_cross_entropy_with_logits(ignore_index=-1, normalize=True)` as
/// `MaskHead.get_loss` applies it (core's `rcnn::mask_loss`), in the compact
/// form a device can hold: the logits are the head's `[rois, classes, side,
/// side]`, each RoI has one class (a float; negative for the placeholder
/// row Paddle fills with -1, which costs nothing) and one `[side, side]`
/// target of 0/1. Only the RoI's class channel is scored, every other
/// channel being Paddle's -1; `normalizer` is the number of scored elements
/// (Paddle's count of targets that are not -1: `side * side` per RoI that
/// is not a placeholder).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskLossGeom {
    pub rois: usize,
    /// Channels of the logits, the background's included (`num_classes`).
    pub classes: usize,
    /// The mask resolution `M`.
    pub side: usize,
    pub normalizer: f32,
}

impl MaskLossGeom {
    /// Elements of one RoI's target (and of one channel of its logits).
    pub fn cells(&self) -> usize {
        self.side * self.side
    }

    /// Elements of the targets and of the losses: `[rois, side, side]`.
    pub fn targets_len(&self) -> usize {
        self.rois * self.cells()
    }

    /// Elements of the logits and of the gradient.
    pub fn logits_len(&self) -> usize {
        self.targets_len() * self.classes
    }

    /// Checks the sizes are positive and `normalizer` positive and finite;
    /// returns a message naming the first that is not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("rois", self.rois),
            ("classes", self.classes),
            ("side", self.side),
        ] {
            if value == 0 {
                return Err(format!("mask_loss: {name} must be positive"));
            }
        }
        if !(self.normalizer > 0.0 && self.normalizer.is_finite()) {
            return Err(format!(
                "mask_loss: normalizer must be positive and finite, got {}",
                self.normalizer
            ));
        }
        Ok(())
    }
}

/// Mask R-CNN's mask targets drawn from polygons (step 3 of core's
/// `rcnn::generate_mask_labels`): each of `rois` masks of `side x side` is
/// the union of its polygons, each drawn as pycocotools' `rleFrPoly` draws
/// it (formats' `Rle::from_polygon`; see `cpu::polygon_masks`). The
/// polygons are already moved into their RoI and scaled to `side` pixels;
/// the tables hold indices as floats (exact below 2^24, [`RoiPolygons`]
/// builds them):
/// - `points` `[points, 2]`: x, y of every polygon's vertices, one polygon
///   after another;
/// - `polygons` `[polygons, 2]`: each polygon's first point and point count
///   (at least 3), its coordinates taken by `Rle::check_polygon`;
/// - `roi_polygons` `[rois, 2]`: each RoI's first polygon and polygon count
///   (0: an empty mask, as for Paddle's placeholder row).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolygonMaskGeom {
    pub rois: usize,
    /// The mask resolution `M`.
    pub side: usize,
    pub polygons: usize,
    pub points: usize,
}

impl PolygonMaskGeom {
    /// Elements of the masks: `[rois, side, side]`.
    pub fn masks_len(&self) -> usize {
        self.rois * self.side * self.side
    }

    /// Checks `rois` and `side` are positive (a batch may hold no polygon:
    /// every mask is then empty); returns a message naming the first that
    /// is not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [("rois", self.rois), ("side", self.side)] {
            if value == 0 {
                return Err(format!("polygon_masks: {name} must be positive"));
            }
        }
        Ok(())
    }
}

/// The tables of [`PolygonMaskGeom`] on the host, built one RoI at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoiPolygons {
    pub points: Vec<f32>,
    pub polygons: Vec<f32>,
    pub roi_polygons: Vec<f32>,
}

impl RoiPolygons {
    /// Adds a RoI whose mask is the union of `polygons`, each `[x0, y0, x1,
    /// y1, ...]` in mask pixels (none: an empty mask).
    pub fn push_roi<'a>(&mut self, polygons: impl IntoIterator<Item = &'a [f32]>) {
        let first_polygon = self.polygons.len() / 2;
        for polygon in polygons {
            let first_point = self.points.len() / 2;
            self.points.extend_from_slice(polygon);
            self.polygons
                .extend([first_point as f32, (polygon.len() / 2) as f32]);
        }
        let count = self.polygons.len() / 2 - first_polygon;
        self.roi_polygons
            .extend([first_polygon as f32, count as f32]);
        assert!(
            self.points.len() / 2 < 1 << 24,
            "polygon_masks: {} points, the tables index below 2^24",
            self.points.len() / 2
        );
    }

    pub fn rois(&self) -> usize {
        self.roi_polygons.len() / 2
    }

    pub fn geom(&self, side: usize) -> PolygonMaskGeom {
        PolygonMaskGeom {
            rois: self.rois(),
            side,
            polygons: self.polygons.len() / 2,
            points: self.points.len() / 2,
        }
    }
}

/// Values per detection in the table of `Backend::mask_paste` (see
/// [`MaskPasteGeom`]).
pub const MASK_PASTE_FIELDS: usize = 11;

/// Mask R-CNN's detections' masks pasted into their pictures (core's
/// `rcnn::mask_paste`, PaddleDetection's `mask_encode` up to the RLE): each
/// detection's `side x side` probabilities, padded with a ring of zeros to
/// `(side + 2)^2`, resized as OpenCV 4.2's `cv2.resize` (bilinear; an exact
/// half as `INTER_AREA`) to its widened box and thresholded (`> threshold`:
/// 1, else 0), only the part inside the picture kept. `probs` is `[rows,
/// channels, side, side]` (the mask head's sigmoid); each detection's entry
/// of the table `detections` `[detections, MASK_PASTE_FIELDS]` (floats,
/// integers below 2^24): its row and channel in `probs`; its widened box
/// `xmin, ymin, width, height` (picture pixels); the part inside the
/// picture `x0, y0, x1, y1` (`xmin <= x0 <= x1 <= xmin + width`, the same
/// in y); and the offset of its pixels in `pixels` `[pixels]`, which holds
/// each detection's part row-major, one after another in the table's order
/// (the offsets ascending, the parts apart).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskPasteGeom {
    pub detections: usize,
    pub rows: usize,
    pub channels: usize,
    pub side: usize,
    pub pixels: usize,
    pub threshold: f32,
}

impl MaskPasteGeom {
    /// Elements of `probs`.
    pub fn probs_len(&self) -> usize {
        self.rows * self.channels * self.side * self.side
    }

    /// Checks the sizes are positive (zero pixels is allowed: every
    /// detection outside its picture), `pixels` below 2^24 (the offsets are
    /// floats) and the threshold finite; returns a message naming the first
    /// problem.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("detections", self.detections),
            ("rows", self.rows),
            ("channels", self.channels),
            ("side", self.side),
        ] {
            if value == 0 {
                return Err(format!("mask_paste: {name} must be positive"));
            }
        }
        if self.pixels >= 1 << 24 {
            return Err(format!(
                "mask_paste: {} pixels; the offsets index below 2^24",
                self.pixels
            ));
        }
        if !self.threshold.is_finite() {
            return Err(format!(
                "mask_paste: threshold must be finite, got {}",
                self.threshold
            ));
        }
        Ok(())
    }
}

/// Momentum SGD with L2 decay, as Paddle's `momentum` op with an L2Decay
/// regulariser: `v = momentum * v + (grad + decay * param)`, `param -= lr * v`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

/// One YOLO head output on a backend: `[batch, anchors * (5 + classes),
/// height, width]`, the batch being the number of images detected on.
#[derive(Debug)]
pub struct HeadOutput<'a, Buf> {
    pub buf: &'a Buf,
    pub height: usize,
    pub width: usize,
}

/// One feature map's RPN outputs and anchors on a backend, the input of
/// [`Backend::generate_proposals`] (Paddle's `generate_proposals` inputs
/// for one level). With `A` anchors per cell and `N` images:
/// - `scores`: the objectness probabilities (the sigmoid of
///   `rpn_cls_logits`), `[N, A, H, W]`;
/// - `deltas`: `rpn_bbox_pred`, `[N, 4A, H, W]`, channel `4a + k` the
///   `k`-th of anchor `a`'s `[dx, dy, dw, dh]`;
/// - `anchors`, `variances`: `[H * W * A, 4]`, anchor `a` of cell `(h, w)`
///   at row `(h * W + w) * A + a` (the order of `anchor_generator`).
#[derive(Debug)]
pub struct RpnProposalInput<'a, Buf> {
    pub scores: &'a Buf,
    pub deltas: &'a Buf,
    pub anchors: &'a Buf,
    pub variances: &'a Buf,
    pub height: usize,
    pub width: usize,
}

impl<Buf> RpnProposalInput<'_, Buf> {
    /// Anchors of the level, per image: `H * W * A`.
    pub fn anchors(&self, anchors_per_cell: usize) -> usize {
        self.height * self.width * anchors_per_cell
    }
}

/// One FPN level's RetinaNet head outputs and anchors on a backend, the
/// input of [`Backend::retinanet_detect`]. With `A` anchors per cell, `K`
/// classes and `N` images:
/// - `scores`: the sigmoid of the class logits, `[N, A * K, H, W]`, channel
///   `a * K + k` class `k` of anchor `a`;
/// - `deltas`: the box output, `[N, 4A, H, W]`, channel `4a + j` the `j`-th
///   of anchor `a`'s `[dx, dy, dw, dh]`;
/// - `anchors`: `[H * W * A, 4]`, anchor `a` of cell `(h, w)` at row `(h *
///   W + w) * A + a` (the order of `anchor_generator`).
#[derive(Debug)]
pub struct RetinaLevelInput<'a, Buf> {
    pub scores: &'a Buf,
    pub deltas: &'a Buf,
    pub anchors: &'a Buf,
    pub height: usize,
    pub width: usize,
}

/// The RoIs [`Backend::rcnn_detect`] detects on, with where the box head's
/// outputs of each are. Images are `counts.len()`.
#[derive(Debug, Clone, Copy)]
pub struct BoxHeadRois<'a> {
    /// Every image's RoIs, image after image, each image's in Paddle's order
    /// (which sets the order of ties), in the resized input's pixels.
    pub boxes: &'a [BoxXyxy],
    /// How many of `boxes` each image has.
    pub counts: &'a [usize],
    /// The row of `cls_score` and `bbox_pred` holding each RoI's outputs
    /// (FPN's device order groups the RoIs by level).
    pub rows: &'a [usize],
    /// Each image's resize factor (`im_info[2]`).
    pub scales: &'a [f32],
    /// Each image's `im_shape` row: the original height and width, and 1.
    pub im_shapes: &'a [[f32; 3]],
}

/// RMSProp with L2 decay, as Paddle's `rmsprop` op (not centered) after an
/// L2Decay regulariser, which SSD trains with: `g = grad + decay * param`,
/// `mean_square = rho * mean_square + (1 - rho) * g^2`,
/// `moment = momentum * moment + lr * g / sqrt(mean_square + epsilon)`,
/// `param -= moment`. Both states start at zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsPropStep {
    pub lr: f32,
    pub rho: f32,
    pub epsilon: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

/// A device operation that failed (out of memory, a launch or copy the
/// device refused), as one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceError(pub String);

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeviceError {}

/// A compute device. Cheap to clone (a handle); all kernels take `&self`.
pub trait Backend: Clone + Send + Sync + 'static {
    type Buffer: Send + Sync;

    /// A short name for messages ("cpu", "cuda:0 (NVIDIA ...)").
    fn name(&self) -> String;

    /// Waits until every kernel queued so far has finished (for timing). The
    /// CPU runs each kernel to completion before returning: nothing to wait
    /// for.
    fn synchronize(&self) {}

    /// The most device memory this backend has held at once, in bytes; None
    /// when its buffers live in host memory (the process's peak RSS then
    /// says it).
    fn peak_device_bytes(&self) -> Option<usize> {
        None
    }

    /// The first operation that failed on the device since it was opened,
    /// if any. The kernel methods have no error channel (a device reports
    /// many failures only later, as CUDA's asynchronous errors, and threading
    /// a `Result` through every layer would not change that), so a device
    /// backend records its first failure, turns later operations into
    /// no-ops, and reports it here; callers check at points where a command
    /// can stop cleanly (after building the model, after each training step
    /// and each evaluation batch). The CPU never fails this way: always Ok.
    fn check(&self) -> Result<(), DeviceError> {
        Ok(())
    }

    // ---- memory ----

    /// A buffer of `len` f32 elements, zero-filled.
    fn alloc(&self, len: usize) -> Self::Buffer;
    /// Number of f32 elements the buffer holds.
    fn buffer_len(&self, buf: &Self::Buffer) -> usize;
    fn fill(&self, buf: &mut Self::Buffer, len: usize, value: f32);
    /// `dst[..src.len()] = src` (host to device).
    fn upload(&self, src: &[f32], dst: &mut Self::Buffer);
    /// `dst = src[..dst.len()]` (device to host).
    fn download(&self, src: &Self::Buffer, dst: &mut [f32]);
    /// `dst[..len] = src[..len]`.
    fn copy(&self, len: usize, src: &Self::Buffer, dst: &mut Self::Buffer);

    // ---- convolution ----

    /// f32 elements of scratch memory the three conv kernels need for `g`.
    fn conv2d_workspace_len(&self, g: &Conv2dGeom) -> usize;
    /// `y = conv(x, w) + bias`.
    fn conv2d_forward(
        &self,
        g: &Conv2dGeom,
        x: &Self::Buffer,
        w: &Self::Buffer,
        bias: Option<&Self::Buffer>,
        y: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    );
    /// `dx = d conv / d x` applied to `dy`; with `accumulate`, `dx +=`
    /// instead (a layer's input read by two convs, whose gradients add up
    /// without a buffer for the second).
    fn conv2d_backward_data(
        &self,
        g: &Conv2dGeom,
        dy: &Self::Buffer,
        w: &Self::Buffer,
        dx: &mut Self::Buffer,
        accumulate: bool,
        workspace: &mut Self::Buffer,
    );
    /// `dw` (and `dbias` when given) from `x` and `dy`, summed over the batch.
    fn conv2d_backward_filter(
        &self,
        g: &Conv2dGeom,
        x: &Self::Buffer,
        dy: &Self::Buffer,
        dw: &mut Self::Buffer,
        dbias: Option<&mut Self::Buffer>,
        workspace: &mut Self::Buffer,
    );

    // ---- batch norm fused with an activation ----

    /// Training mode: normalise with the batch's statistics, then
    /// `y = act(scale * xhat + offset)`. Saves the batch mean and
    /// `1 / sqrt(var + eps)` (biased variance) for backward, and updates the
    /// running statistics: `running = momentum * running + (1 - momentum) * batch`.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_forward_train(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        momentum: f32,
        eps: f32,
        x: &Self::Buffer,
        scale: &Self::Buffer,
        offset: &Self::Buffer,
        running_mean: &mut Self::Buffer,
        running_var: &mut Self::Buffer,
        saved_mean: &mut Self::Buffer,
        saved_inv_std: &mut Self::Buffer,
        y: &mut Self::Buffer,
    );
    /// Inference / frozen mode: normalise with the running statistics.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_forward_eval(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        eps: f32,
        x: &Self::Buffer,
        scale: &Self::Buffer,
        offset: &Self::Buffer,
        mean: &Self::Buffer,
        var: &Self::Buffer,
        y: &mut Self::Buffer,
    );
    /// `batch_norm_forward_eval` with `x` and `y` one buffer: `xy =
    /// act(norm(xy))`, the same bits as the out-of-place op. A frozen norm's
    /// backward reads only its output and a conv's backward never reads
    /// its output, so a conv unit keeps one tensor instead of two.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_forward_eval_in_place(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        eps: f32,
        xy: &mut Self::Buffer,
        scale: &Self::Buffer,
        offset: &Self::Buffer,
        mean: &Self::Buffer,
        var: &Self::Buffer,
    );
    /// Backward of `batch_norm_forward_train`, through the activation (whose
    /// derivative is taken from the output `y`).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_backward_train(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        x: &Self::Buffer,
        y: &Self::Buffer,
        dy: &Self::Buffer,
        scale: &Self::Buffer,
        saved_mean: &Self::Buffer,
        saved_inv_std: &Self::Buffer,
        dx: &mut Self::Buffer,
        dscale: &mut Self::Buffer,
        doffset: &mut Self::Buffer,
    );
    /// Backward of `batch_norm_forward_eval` with respect to `x` only (the
    /// statistics are constants; a frozen norm has no parameter gradients).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_backward_eval(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        eps: f32,
        y: &Self::Buffer,
        dy: &Self::Buffer,
        scale: &Self::Buffer,
        var: &Self::Buffer,
        dx: &mut Self::Buffer,
    );

    // ---- elementwise ----

    fn activation_forward(
        &self,
        act: Activation,
        len: usize,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
    );
    /// `activation_forward` with `x` and `y` one buffer: `xy = act(xy)`, the
    /// same bits (the backward reads only the output).
    fn activation_forward_in_place(&self, act: Activation, len: usize, xy: &mut Self::Buffer);
    /// `dx = dy * act'(x)`, from the output `y`.
    fn activation_backward(
        &self,
        act: Activation,
        len: usize,
        y: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    );
    fn sigmoid_forward(&self, len: usize, x: &Self::Buffer, y: &mut Self::Buffer);
    /// `dx = dy * y * (1 - y)`.
    fn sigmoid_backward(
        &self,
        len: usize,
        y: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    );
    /// `y = a + b`.
    fn add(&self, len: usize, a: &Self::Buffer, b: &Self::Buffer, y: &mut Self::Buffer);
    /// `y += alpha * x`.
    fn axpy(&self, len: usize, alpha: f32, x: &Self::Buffer, y: &mut Self::Buffer);
    /// `x *= alpha`.
    fn scale(&self, len: usize, alpha: f32, x: &mut Self::Buffer);
    /// Sum of the first `len` elements (accumulated in f64).
    fn sum(&self, len: usize, x: &Self::Buffer) -> f64;
    /// Sum of squares of the first `len` elements (accumulated in f64).
    fn sum_squares(&self, len: usize, x: &Self::Buffer) -> f64;
    /// `out[c]` (overwritten) = the sum of channel `c` of `x`, an NCHW
    /// tensor `[batch, channels, plane]` (`plane` = height x width), over
    /// the batch and the plane: the gradient of a per-channel bias.
    fn channel_sum(
        &self,
        batch: usize,
        channels: usize,
        plane: usize,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    );

    // ---- pooling, resampling, concat ----

    fn max_pool_forward(&self, g: &PoolGeom, x: &Self::Buffer, y: &mut Self::Buffer);
    /// The gradient goes to the first maximum of each window (row-major order).
    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        x: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    );
    /// Nearest-neighbour upsampling by 2 in height and width; `x` is
    /// `[batch * channels, h, w]`.
    fn upsample2x_forward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
    );
    /// Each input gradient is the sum of its four copies' gradients.
    fn upsample2x_backward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    );
    fn copy_channels(&self, c: &ChannelCopy, src: &Self::Buffer, dst: &mut Self::Buffer);

    // ---- detection heads ----

    /// One head level's conv output `x` (`[N, A * K, H, W]`) into its rows
    /// of `rows` (`[N, total_rows, K]`, see [`HeadRows`]); the other rows
    /// are left as they are, so the levels fill one buffer call by call.
    fn head_rows_forward(&self, g: &HeadRows, x: &Self::Buffer, rows: &mut Self::Buffer);
    /// The adjoint: this level's rows of `rows_grad` back into `x_grad`
    /// (`[N, A * K, H, W]`, overwritten).
    fn head_rows_backward(&self, g: &HeadRows, rows_grad: &Self::Buffer, x_grad: &mut Self::Buffer);

    // ---- L2 normalisation over channels ----

    /// `y = x / norm * scale` per position and channel (see [`L2NormGeom`]),
    /// saving `norm` (`[batch, spatial]`) for the backward pass.
    #[allow(clippy::too_many_arguments)]
    fn l2_norm_forward(
        &self,
        g: &L2NormGeom,
        epsilon: f32,
        x: &Self::Buffer,
        scale: &Self::Buffer,
        norm: &mut Self::Buffer,
        y: &mut Self::Buffer,
    );
    /// The gradients of `l2_norm_forward` from its `x`, `scale` and saved
    /// `norm`: with `g = dy * scale[c]`,
    /// `dx = (g - x * sum_c(g * x) / norm^2) / norm` per position, and
    /// `dscale[c] = sum over batch and space of dy * x / norm`. Both
    /// overwritten.
    #[allow(clippy::too_many_arguments)]
    fn l2_norm_backward(
        &self,
        g: &L2NormGeom,
        x: &Self::Buffer,
        scale: &Self::Buffer,
        norm: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
        dscale: &mut Self::Buffer,
    );

    /// RoIAlign (see [`RoiAlignGeom`]): `y[r, c]` pooled from `x`'s image
    /// `roi_batch[r]` inside box `rois[r]` (`[R, 4]`). `roi_batch` holds
    /// each RoI's image index as an f32 (`[R]`; buffers are f32, and
    /// indices below 2^24 are exact); a RoI whose index is not an integer in
    /// `0..batch` gets NaN outputs.
    fn roi_align_forward(
        &self,
        g: &RoiAlignGeom,
        x: &Self::Buffer,
        rois: &Self::Buffer,
        roi_batch: &Self::Buffer,
        y: &mut Self::Buffer,
    );
    /// `dx = d roi_align / d x` applied to `dy` (`[batch, channels, height,
    /// width]`, overwritten): each sample's bin gradient over the sample
    /// count, shared among its four pixels by the bilinear weights. RoIs
    /// with a bad image index add nothing.
    fn roi_align_backward(
        &self,
        g: &RoiAlignGeom,
        dy: &Self::Buffer,
        rois: &Self::Buffer,
        roi_batch: &Self::Buffer,
        dx: &mut Self::Buffer,
    );

    // ---- fully connected layers and global pooling (the R-CNN box heads) ----

    /// `y = act(x W + b)` (see [`FcGeom`]): `x` `[rows, inputs]`, `w`
    /// `[inputs, outputs]`, `bias` `[outputs]`, `y` `[rows, outputs]`.
    #[allow(clippy::too_many_arguments)]
    fn fc_forward(
        &self,
        g: &FcGeom,
        act: Activation,
        x: &Self::Buffer,
        w: &Self::Buffer,
        bias: &Self::Buffer,
        y: &mut Self::Buffer,
    );
    /// `dx = dz W^T` (`[rows, inputs]`, overwritten), `dz` being the
    /// gradient of `x W + b`, before the activation (`activation_backward`
    /// of `fc_forward`'s output gives it).
    fn fc_backward_data(
        &self,
        g: &FcGeom,
        dz: &Self::Buffer,
        w: &Self::Buffer,
        dx: &mut Self::Buffer,
    );
    /// `dw = x^T dz` (`[inputs, outputs]`) and `dbias` = the column sums of
    /// `dz` (`[outputs]`), both summed over the rows and overwritten; `dz`
    /// as in `fc_backward_data`.
    fn fc_backward_weight(
        &self,
        g: &FcGeom,
        x: &Self::Buffer,
        dz: &Self::Buffer,
        dw: &mut Self::Buffer,
        dbias: &mut Self::Buffer,
    );
    /// `y[p]` = the mean of plane `p` of `x` (see [`GlobalPoolGeom`]).
    fn global_avg_pool_forward(&self, g: &GlobalPoolGeom, x: &Self::Buffer, y: &mut Self::Buffer);
    /// `dx` (overwritten) = `dy[p] * (1 / spatial)` on every value of plane `p`.
    fn global_avg_pool_backward(
        &self,
        g: &GlobalPoolGeom,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    );

    // ---- RetinaNet's losses ----

    /// Paddle's `sigmoid_focal_loss` over one level (see [`FocalLossGeom`]):
    /// `losses` gets each logit's loss (already divided by the normalizer),
    /// `grad` the gradient of their sum with respect to each logit; both
    /// shaped as `logits` and overwritten (0 for ignored anchors). `labels`
    /// holds one float per anchor.
    fn sigmoid_focal_loss(
        &self,
        g: &FocalLossGeom,
        logits: &Self::Buffer,
        labels: &Self::Buffer,
        grad: &mut Self::Buffer,
        losses: &mut Self::Buffer,
    );

    /// RetinaNet's box loss over one level (see [`RetinaBoxLossGeom`]):
    /// `losses` gets each delta's loss (already divided by the
    /// normalizer), `grad` the gradient of their sum with respect to each
    /// delta; both shaped as `deltas` and overwritten (0 off the
    /// foreground).
    fn retina_box_loss(
        &self,
        g: &RetinaBoxLossGeom,
        deltas: &Self::Buffer,
        targets: &Self::Buffer,
        weights: &Self::Buffer,
        grad: &mut Self::Buffer,
        losses: &mut Self::Buffer,
    );

    /// Paddle's `retinanet_target_assign` of each image (see
    /// [`RetinaTargetsGeom`]) against the anchors of all `levels` together,
    /// written into each level's buffers; returns each image's
    /// `ForegroundNumber` (its foreground rows, Paddle's weight-0 "fake"
    /// ones included, plus one), which normalises both losses. Only the
    /// ground truth goes to a device and only these numbers come back.
    fn retinanet_targets(
        &self,
        g: &RetinaTargetsGeom<'_>,
        levels: &mut [RetinaTargetLevel<'_, Self::Buffer>],
    ) -> Vec<f32>;

    // ---- Mask R-CNN's mask loss ----

    /// Paddle's masked sigmoid cross-entropy over the RoIs (see
    /// [`MaskLossGeom`]): `grad`, shaped as `logits`, gets `(sigmoid(x) -
    /// t) / normalizer` on each RoI's class channel and 0 everywhere else
    /// (all of a placeholder row); `losses`, `[rois, side, side]`, each
    /// scored element's loss divided by the normalizer (0 on placeholder
    /// rows), so the loss is their sum. Both overwritten. `roi_classes`
    /// holds one float per RoI, `targets` the 0/1 masks.
    fn mask_loss(
        &self,
        g: &MaskLossGeom,
        logits: &Self::Buffer,
        roi_classes: &Self::Buffer,
        targets: &Self::Buffer,
        grad: &mut Self::Buffer,
        losses: &mut Self::Buffer,
    );

    // ---- SSD's loss ----

    /// Paddle's `ssd_loss` of a batch (core's `ssd::ssd_loss`): each image's
    /// priors matched to its ground truth `truths[n]` (bipartite, then per
    /// prediction), hard negatives mined at `neg_pos_ratio`, softmax
    /// cross-entropy and smooth-L1 over the batch's matched priors.
    /// `priors` and `variances` are `[priors_count, 4]` (normalised x1, y1,
    /// x2, y2), `location` `[images, priors_count, 4]`, `confidence`
    /// `[images, priors_count, classes]`, `images = truths.len()`;
    /// `grad_location` and `grad_confidence`, shaped as them, get the
    /// gradients of the loss (overwritten). The ground truth comes from the
    /// host (a device uploads it); only the loss terms come back.
    #[allow(clippy::too_many_arguments)]
    fn ssd_loss(
        &self,
        cfg: &SsdLossConfig,
        priors: &Self::Buffer,
        variances: &Self::Buffer,
        priors_count: usize,
        classes: usize,
        location: &Self::Buffer,
        confidence: &Self::Buffer,
        truths: &[ImageTruth],
        grad_location: &mut Self::Buffer,
        grad_confidence: &mut Self::Buffer,
    ) -> SsdLoss;

    // ---- the R-CNN box head's loss ----

    /// PaddleDetection's box head loss (core's
    /// `rcnn::weighted_bbox_head_loss`, see [`BoxHeadLossArgs`]): softmax
    /// cross-entropy and smooth-L1 (sigma 1, inside and outside weights),
    /// each a mean over the RoIs times the loss weight. The targets come
    /// from the host; `grad_cls_score` and `grad_bbox_pred`, shaped as the
    /// outputs, get the gradients (overwritten). Only the two terms come
    /// back.
    fn bbox_head_loss(
        &self,
        args: &BoxHeadLossArgs<'_>,
        cls_score: &Self::Buffer,
        bbox_pred: &Self::Buffer,
        grad_cls_score: &mut Self::Buffer,
        grad_bbox_pred: &mut Self::Buffer,
    ) -> BBoxHeadLoss;

    // ---- the R-CNN region proposals ----

    /// PaddleDetection's RPN target assignment and loss over the batch
    /// and every level (core's `rpn_target_assign` of each image, see
    /// [`RpnTargetsGeom`], then `rcnn::rpn_loss`, lowest level first):
    /// `anchors[l]` are level `l`'s anchors `[height * width *
    /// anchors_per_cell, 4]`, the targets drawn against all levels'
    /// together; `grads` (one per level, shaped as its outputs) get the
    /// gradient of `loss_rpn_cls + loss_rpn_bbox`, overwritten, 0 off the
    /// sampled anchors. Only the ground truth goes to a device and only
    /// the two losses come back.
    fn rpn_loss(
        &self,
        g: &RpnTargetsGeom<'_>,
        anchors: &[&Self::Buffer],
        levels: &[RpnLevelOutput<'_, Self::Buffer>],
        anchors_per_cell: usize,
        grads: &mut [RpnLevelGrad<'_, Self::Buffer>],
    ) -> RpnLoss;

    /// Paddle's `generate_proposals` (core's `rcnn::generate_proposals`)
    /// on each image of each level: `result[l][n]` are image `n`'s
    /// proposals from level `l` alone (at most `post_nms_top_n` when NMS
    /// runs), best first, in resized-image pixels. `im_info[n]` is image
    /// `n`'s `[resized height, resized width, scale]`, and the batch of
    /// every level's `scores` and `deltas`. Only the proposals leave the
    /// device; FPN's `collect_fpn_proposals` runs on them afterwards.
    fn generate_proposals(
        &self,
        cfg: &ProposalConfig,
        levels: &[RpnProposalInput<'_, Self::Buffer>],
        anchors_per_cell: usize,
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Proposals>>;

    // ---- RetinaNet's detections ----

    /// Paddle's `retinanet_detection_output` (core's
    /// `retinanet::retinanet_detection_output`) on each image of the
    /// levels' outputs (lowest level first, `classes` classes per anchor):
    /// each image's detections, best first, labels `1..=classes`, boxes in
    /// the original picture's pixels. `im_info[n]` is image `n`'s `[resized
    /// height, resized width, scale]`, and the batch of every level's
    /// `scores` and `deltas`. Only the detections leave the device.
    fn retinanet_detect(
        &self,
        cfg: &RetinaOutputConfig,
        levels: &[RetinaLevelInput<'_, Self::Buffer>],
        anchors_per_cell: usize,
        classes: usize,
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Detection>>;

    // ---- the R-CNN box head's detections ----

    /// The Faster R-CNN box head's detection output (core's
    /// `rcnn::bbox_head_detect`) of each image of `rois`: the class logits
    /// `cls_score` (`[rows, C]`, `C = cfg.bbox_assigner.class_nums`)
    /// softmaxed, each RoI decoded once per class from `bbox_pred` (`[rows,
    /// 4C]`) with `bbox_reg_weights`, clipped to the image's original
    /// picture, then `multiclass_nms` under `cfg.nms`. Each image's
    /// detections grouped by class, a class's by RoI (Paddle's order), labels
    /// `1..C`, boxes in the original picture's pixels. Only the detections
    /// leave the device.
    fn rcnn_detect(
        &self,
        cfg: &RcnnConfig,
        rois: &BoxHeadRois<'_>,
        cls_score: &Self::Buffer,
        bbox_pred: &Self::Buffer,
    ) -> Vec<Vec<Detection>>;

    // ---- Mask R-CNN's mask targets ----

    /// Each RoI's polygons drawn into its mask and OR-ed (see
    /// [`PolygonMaskGeom`]): `masks` `[rois, side, side]`, row-major 0/1,
    /// overwritten, equal to `Rle::from_polygon(..).decode()` of each
    /// polygon OR-ed, to the bit.
    fn polygon_masks(
        &self,
        g: &PolygonMaskGeom,
        points: &Self::Buffer,
        polygons: &Self::Buffer,
        roi_polygons: &Self::Buffer,
        masks: &mut Self::Buffer,
    );

    // ---- Mask R-CNN's masks at inference ----

    /// Each detection's probabilities resized into its widened box and
    /// thresholded (see [`MaskPasteGeom`]): `pixels` gets each detection's
    /// part inside its picture, 0/1 row-major at its offset; the rest of
    /// `pixels` is left alone.
    fn mask_paste(
        &self,
        g: &MaskPasteGeom,
        probs: &Self::Buffer,
        detections: &Self::Buffer,
        pixels: &mut Self::Buffer,
    );

    // ---- optimizer ----

    fn sgd_momentum(
        &self,
        step: &SgdStep,
        len: usize,
        param: &mut Self::Buffer,
        grad: &Self::Buffer,
        velocity: &mut Self::Buffer,
    );
    fn rmsprop(
        &self,
        step: &RmsPropStep,
        len: usize,
        param: &mut Self::Buffer,
        grad: &Self::Buffer,
        mean_square: &mut Self::Buffer,
        moment: &mut Self::Buffer,
    );

    // ---- inference ----

    /// PaddleDetection's YOLOv3 prediction, as `yolo::detect` computes it:
    /// each level of `heads` decoded with its anchors (Paddle's `yolo_box`,
    /// boxes clipped), then Paddle's `multiclass_nms` per image. `image_sizes`
    /// are each image's (height, width); boxes come out in those pixels, each
    /// image's detections grouped by class, best first within a class. Only
    /// the detections leave the device.
    fn yolo_detect(
        &self,
        cfg: &YoloConfig,
        heads: &[HeadOutput<'_, Self::Buffer>],
        image_sizes: &[[u32; 2]],
        nms: &NmsConfig,
    ) -> Vec<Vec<Detection>>;

    /// PaddleDetection's SSD prediction (`detection_output`), as
    /// `ssd::detect` computes it per image: each prior's `location`
    /// offsets decoded against `priors` (`[priors_count, 4]`, normalised
    /// x1, y1, x2, y2) with `variances` (`[priors_count, 4]`), the
    /// `confidence` logits softmaxed over the `classes`, then Paddle's
    /// `multiclass_nms` (the background is `nms.background_label`).
    /// `location` is `[images, priors_count, 4]`, `confidence` `[images,
    /// priors_count, classes]`. Boxes stay normalised; each image's
    /// detections grouped by class, best first within a class. Only the
    /// detections leave the device.
    #[allow(clippy::too_many_arguments)]
    fn ssd_detect(
        &self,
        nms: &NmsConfig,
        priors: &Self::Buffer,
        variances: &Self::Buffer,
        classes: usize,
        location: &Self::Buffer,
        confidence: &Self::Buffer,
        images: usize,
        priors_count: usize,
    ) -> Vec<Vec<Detection>>;
}
