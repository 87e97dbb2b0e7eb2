//! The suite checked against itself: `CpuBackend` with one deliberate fault
//! of the kinds a GPU port makes, each of which some check must catch (the
//! tests are in `backend_suite.rs`).
use pulsefocus_core::backend::{
    Activation, BatchNormGeom, BoxHeadRois, ChannelCopy, Conv2dGeom, FcGeom, FocalLossGeom,
    GlobalPoolGeom, HeadOutput, HeadRows, L2NormGeom, MaskLossGeom, MaskPasteGeom, PolygonMaskGeom,
    PoolGeom, RetinaBoxLossGeom, RetinaLevelInput, RetinaTargetLevel, RetinaTargetsGeom,
    RetinaTruth, RmsPropStep, RoiAlignGeom, RpnProposalInput, RpnTargetsGeom, SgdStep,
    MASK_PASTE_FIELDS,
};
use pulsefocus_core::rcnn::{
    BBoxHeadLoss, BoxHeadLossArgs, ProposalConfig, Proposals, RcnnConfig, RpnLevelGrad,
    RpnLevelOutput, RpnLoss, RpnTargetConfig,
};
use pulsefocus_core::retinanet::RetinaOutputConfig;
use pulsefocus_core::ssd::{ImageTruth, SsdLoss, SsdLossConfig};
use pulsefocus_core::yolo::{Detection, NmsConfig, YoloConfig};
use pulsefocus_core::{Backend, CpuBackend};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// `add` also writes the element after `len`, and so does
    /// `activation_forward_in_place`.
    WritesPastTheEnd,
    /// `sum` adds the element after `len` (a NaN in the suite's buffers).
    ReadsPastTheEnd,
    /// `conv2d_backward_filter` adds into `dw` instead of overwriting it,
    /// and so do `roi_align_backward` into `dx`, `fc_backward_weight`
    /// into `dbias` and `channel_sum` into `out`.
    Accumulates,
    /// `conv2d_forward` drops the last output channel's bias, and so does
    /// `fc_forward`.
    ForgetsOneBias,
    /// `max_pool_backward` sends a tie's gradient to the last maximum.
    LastMaximum,
    /// `sgd_momentum` with learning rate and momentum swapped.
    SwappedArguments,
    /// `batch_norm_forward_train` leaves the running statistics alone.
    SkipsRunningStatistics,
    /// `head_rows_forward` without the transpose to NHWC: the level's rows
    /// anchor-major (`a * H * W + p`) instead of cell-major (`p * A + a`).
    AnchorMajorRows,
    /// `l2_norm_forward` without the epsilon: a position whose channels
    /// are all zero divides 0 by 0.
    DropsEpsilon,
    /// `roi_align_forward` with the half-pixel offset of Paddle 2's and
    /// torchvision's `aligned` RoIAlign, which Paddle 1.8 does not have.
    HalfPixelOffset,
    /// `ssd_detect` reports the background class too.
    KeepsBackground,
    /// `global_avg_pool_backward` hands each value the whole output
    /// gradient, not its share (the sum's gradient, not the mean's).
    UnscaledPoolGradient,
    /// `sigmoid_focal_loss` takes an ignored anchor (label -1) for
    /// background: every class negative instead of no loss.
    IgnoredAsBackground,
    /// `mask_loss` reads a placeholder RoI's class -1 as an unsigned
    /// channel, saturating to 0: the row is scored on channel 0.
    PlaceholderScored,
    /// `polygon_masks` draws only each RoI's first polygon (a port that
    /// overwrites where it should OR).
    FirstPolygonOnly,
    /// `mask_paste` reads each detection's mask one channel early (the
    /// class without the background's channel).
    ChannelOffByOne,
    /// `batch_norm_forward_eval_in_place` normalises but leaves out the
    /// fused activation.
    DropsActivation,
    /// `generate_proposals` with a fixed NMS threshold: `eta` (Paddle's
    /// adaptive NMS) ignored.
    FixedNmsThreshold,
    /// `conv2d_backward_data` overwrites `dx` when asked to add into it.
    OverwritesInsteadOfAccumulating,
    /// `ssd_loss` mines every candidate: the `neg_pos_ratio` cap left out.
    MinesEveryCandidate,
    /// `retinanet_detect` applies `score_thresh` on the last level too,
    /// where Paddle keeps every positive score.
    ThresholdsEveryLevel,
    /// `retina_box_loss` regresses every anchor: the weights (the
    /// foreground mask) taken as 1.
    RegressesEveryAnchor,
    /// `rcnn_detect` lists each class's detections best first (the NMS
    /// order), where Paddle lists them by RoI.
    ListsByScore,
    /// `retinanet_targets` gives an anchor whose best overlap ties between
    /// boxes the last of them, where Paddle takes the first.
    LastBestBox,
    /// `rpn_loss` divides the box loss by the foreground anchors instead
    /// of every sampled anchor.
    DividesByForeground,
    /// `rpn_loss` keeps the first candidates where the draw is random.
    SamplesTheFirstOnes,
    /// `bbox_head_loss` writes the weighted deltas' gradients only,
    /// leaving the rest of the box gradient as it was (no zero fill).
    KeepsUnweightedBoxGradients,
}

#[derive(Clone, Copy, Debug)]
pub struct Faulty(pub Fault);

const CPU: CpuBackend = CpuBackend;

impl Backend for Faulty {
    type Buffer = Vec<f32>;

    fn name(&self) -> String {
        format!("cpu with fault {:?}", self.0)
    }
    fn alloc(&self, len: usize) -> Vec<f32> {
        CPU.alloc(len)
    }
    fn buffer_len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn fill(&self, buf: &mut Vec<f32>, len: usize, value: f32) {
        CPU.fill(buf, len, value)
    }
    fn upload(&self, src: &[f32], dst: &mut Vec<f32>) {
        CPU.upload(src, dst)
    }
    fn download(&self, src: &Vec<f32>, dst: &mut [f32]) {
        CPU.download(src, dst)
    }
    fn copy(&self, len: usize, src: &Vec<f32>, dst: &mut Vec<f32>) {
        CPU.copy(len, src, dst)
    }
    fn conv2d_workspace_len(&self, g: &Conv2dGeom) -> usize {
        CPU.conv2d_workspace_len(g)
    }
    fn conv2d_forward(
        &self,
        g: &Conv2dGeom,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        y: &mut Vec<f32>,
        workspace: &mut Vec<f32>,
    ) {
        let mut bias = bias.cloned();
        if let (Fault::ForgetsOneBias, Some(bias)) = (self.0, bias.as_mut()) {
            bias[g.c_out - 1] = 0.0;
        }
        CPU.conv2d_forward(g, x, w, bias.as_ref(), y, workspace)
    }
    fn conv2d_backward_data(
        &self,
        g: &Conv2dGeom,
        dy: &Vec<f32>,
        w: &Vec<f32>,
        dx: &mut Vec<f32>,
        accumulate: bool,
        workspace: &mut Vec<f32>,
    ) {
        let accumulate = accumulate && self.0 != Fault::OverwritesInsteadOfAccumulating;
        CPU.conv2d_backward_data(g, dy, w, dx, accumulate, workspace)
    }
    fn conv2d_backward_filter(
        &self,
        g: &Conv2dGeom,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        dw: &mut Vec<f32>,
        dbias: Option<&mut Vec<f32>>,
        workspace: &mut Vec<f32>,
    ) {
        let before = dw.clone();
        CPU.conv2d_backward_filter(g, x, dy, dw, dbias, workspace);
        if self.0 == Fault::Accumulates {
            for i in 0..g.weight_len() {
                dw[i] += before[i];
            }
        }
    }
    fn batch_norm_forward_train(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        momentum: f32,
        eps: f32,
        x: &Vec<f32>,
        scale: &Vec<f32>,
        offset: &Vec<f32>,
        running_mean: &mut Vec<f32>,
        running_var: &mut Vec<f32>,
        saved_mean: &mut Vec<f32>,
        saved_inv_std: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        let (mean0, var0) = (running_mean.clone(), running_var.clone());
        CPU.batch_norm_forward_train(
            g,
            act,
            momentum,
            eps,
            x,
            scale,
            offset,
            running_mean,
            running_var,
            saved_mean,
            saved_inv_std,
            y,
        );
        if self.0 == Fault::SkipsRunningStatistics {
            (*running_mean, *running_var) = (mean0, var0);
        }
    }
    fn batch_norm_forward_eval(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        eps: f32,
        x: &Vec<f32>,
        scale: &Vec<f32>,
        offset: &Vec<f32>,
        mean: &Vec<f32>,
        var: &Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        CPU.batch_norm_forward_eval(g, act, eps, x, scale, offset, mean, var, y)
    }
    fn batch_norm_forward_eval_in_place(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        eps: f32,
        xy: &mut Vec<f32>,
        scale: &Vec<f32>,
        offset: &Vec<f32>,
        mean: &Vec<f32>,
        var: &Vec<f32>,
    ) {
        let act = match self.0 {
            Fault::DropsActivation => Activation::Identity,
            _ => act,
        };
        CPU.batch_norm_forward_eval_in_place(g, act, eps, xy, scale, offset, mean, var)
    }
    fn batch_norm_backward_train(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        x: &Vec<f32>,
        y: &Vec<f32>,
        dy: &Vec<f32>,
        scale: &Vec<f32>,
        saved_mean: &Vec<f32>,
        saved_inv_std: &Vec<f32>,
        dx: &mut Vec<f32>,
        dscale: &mut Vec<f32>,
        doffset: &mut Vec<f32>,
    ) {
        CPU.batch_norm_backward_train(
            g,
            act,
            x,
            y,
            dy,
            scale,
            saved_mean,
            saved_inv_std,
            dx,
            dscale,
            doffset,
        )
    }
    fn batch_norm_backward_eval(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        eps: f32,
        y: &Vec<f32>,
        dy: &Vec<f32>,
        scale: &Vec<f32>,
        var: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) {
        CPU.batch_norm_backward_eval(g, act, eps, y, dy, scale, var, dx)
    }
    fn activation_forward(&self, act: Activation, len: usize, x: &Vec<f32>, y: &mut Vec<f32>) {
        CPU.activation_forward(act, len, x, y)
    }
    fn activation_forward_in_place(&self, act: Activation, len: usize, xy: &mut Vec<f32>) {
        let n = if self.0 == Fault::WritesPastTheEnd && len < xy.len() {
            len + 1
        } else {
            len
        };
        CPU.activation_forward_in_place(act, n, xy)
    }
    fn activation_backward(
        &self,
        act: Activation,
        len: usize,
        y: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) {
        CPU.activation_backward(act, len, y, dy, dx)
    }
    fn sigmoid_forward(&self, len: usize, x: &Vec<f32>, y: &mut Vec<f32>) {
        CPU.sigmoid_forward(len, x, y)
    }
    fn sigmoid_backward(&self, len: usize, y: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        CPU.sigmoid_backward(len, y, dy, dx)
    }
    fn add(&self, len: usize, a: &Vec<f32>, b: &Vec<f32>, y: &mut Vec<f32>) {
        let n = if self.0 == Fault::WritesPastTheEnd && len < y.len() {
            len + 1
        } else {
            len
        };
        // The element past the end is NaN + NaN in the suite: NaN.
        CPU.add(n, a, b, y)
    }
    fn axpy(&self, len: usize, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>) {
        CPU.axpy(len, alpha, x, y)
    }
    fn scale(&self, len: usize, alpha: f32, x: &mut Vec<f32>) {
        CPU.scale(len, alpha, x)
    }
    fn sum(&self, len: usize, x: &Vec<f32>) -> f64 {
        let n = if self.0 == Fault::ReadsPastTheEnd && len < x.len() {
            len + 1
        } else {
            len
        };
        CPU.sum(n, x)
    }
    fn sum_squares(&self, len: usize, x: &Vec<f32>) -> f64 {
        CPU.sum_squares(len, x)
    }
    fn channel_sum(
        &self,
        batch: usize,
        channels: usize,
        plane: usize,
        x: &Vec<f32>,
        out: &mut Vec<f32>,
    ) {
        let before = out.clone();
        CPU.channel_sum(batch, channels, plane, x, out);
        if self.0 == Fault::Accumulates {
            for (o, b) in out[..channels].iter_mut().zip(before) {
                *o += b;
            }
        }
    }
    fn max_pool_forward(&self, g: &PoolGeom, x: &Vec<f32>, y: &mut Vec<f32>) {
        CPU.max_pool_forward(g, x, y)
    }
    fn max_pool_backward(&self, g: &PoolGeom, x: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        if self.0 != Fault::LastMaximum {
            return CPU.max_pool_backward(g, x, dy, dx);
        }
        // The CPU's loop with `>=`: the last of equal maxima wins.
        let (h_out, w_out, plane) = (g.h_out(), g.w_out(), g.h_in * g.w_in);
        dx[..g.input_len()].fill(0.0);
        for p in 0..g.batch * g.channels {
            for oy in 0..h_out {
                for ox in 0..w_out {
                    let mut best: Option<usize> = None;
                    for ki in 0..g.kernel {
                        for kj in 0..g.kernel {
                            let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                            if iy < 0 || ix < 0 || iy >= g.h_in as isize || ix >= g.w_in as isize {
                                continue;
                            }
                            let i = p * plane + iy as usize * g.w_in + ix as usize;
                            if best.is_none_or(|b| x[i] >= x[b]) {
                                best = Some(i);
                            }
                        }
                    }
                    if let Some(i) = best {
                        dx[i] += dy[(p * h_out + oy) * w_out + ox];
                    }
                }
            }
        }
    }
    fn upsample2x_forward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        CPU.upsample2x_forward(planes, h, w, x, y)
    }
    fn upsample2x_backward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) {
        CPU.upsample2x_backward(planes, h, w, dy, dx)
    }
    fn copy_channels(&self, c: &ChannelCopy, src: &Vec<f32>, dst: &mut Vec<f32>) {
        CPU.copy_channels(c, src, dst)
    }
    fn head_rows_forward(&self, g: &HeadRows, x: &Vec<f32>, rows: &mut Vec<f32>) {
        if self.0 != Fault::AnchorMajorRows {
            return CPU.head_rows_forward(g, x, rows);
        }
        let plane = g.height * g.width;
        for n in 0..g.batch {
            for a in 0..g.anchors {
                for k in 0..g.values {
                    for p in 0..plane {
                        let row = g.first_row + a * plane + p;
                        rows[(n * g.total_rows + row) * g.values + k] =
                            x[((n * g.anchors + a) * g.values + k) * plane + p];
                    }
                }
            }
        }
    }
    fn head_rows_backward(&self, g: &HeadRows, rows_grad: &Vec<f32>, x_grad: &mut Vec<f32>) {
        CPU.head_rows_backward(g, rows_grad, x_grad)
    }
    fn l2_norm_forward(
        &self,
        g: &L2NormGeom,
        epsilon: f32,
        x: &Vec<f32>,
        scale: &Vec<f32>,
        norm: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        let epsilon = if self.0 == Fault::DropsEpsilon {
            0.0
        } else {
            epsilon
        };
        CPU.l2_norm_forward(g, epsilon, x, scale, norm, y)
    }
    #[allow(clippy::too_many_arguments)]
    fn l2_norm_backward(
        &self,
        g: &L2NormGeom,
        x: &Vec<f32>,
        scale: &Vec<f32>,
        norm: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        dscale: &mut Vec<f32>,
    ) {
        CPU.l2_norm_backward(g, x, scale, norm, dy, dx, dscale)
    }
    fn roi_align_forward(
        &self,
        g: &RoiAlignGeom,
        x: &Vec<f32>,
        rois: &Vec<f32>,
        roi_batch: &Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        let mut rois = rois.clone();
        if self.0 == Fault::HalfPixelOffset {
            for v in &mut rois[..g.rois_len()] {
                *v -= 0.5 / g.spatial_scale;
            }
        }
        CPU.roi_align_forward(g, x, &rois, roi_batch, y)
    }
    fn roi_align_backward(
        &self,
        g: &RoiAlignGeom,
        dy: &Vec<f32>,
        rois: &Vec<f32>,
        roi_batch: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) {
        let before = dx.clone();
        CPU.roi_align_backward(g, dy, rois, roi_batch, dx);
        if self.0 == Fault::Accumulates {
            for i in 0..g.input_len() {
                dx[i] += before[i];
            }
        }
    }
    fn fc_forward(
        &self,
        g: &FcGeom,
        act: Activation,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: &Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        let mut bias = bias.clone();
        if self.0 == Fault::ForgetsOneBias {
            bias[g.outputs - 1] = 0.0;
        }
        CPU.fc_forward(g, act, x, w, &bias, y)
    }
    fn fc_backward_data(&self, g: &FcGeom, dz: &Vec<f32>, w: &Vec<f32>, dx: &mut Vec<f32>) {
        CPU.fc_backward_data(g, dz, w, dx)
    }
    fn fc_backward_weight(
        &self,
        g: &FcGeom,
        x: &Vec<f32>,
        dz: &Vec<f32>,
        dw: &mut Vec<f32>,
        dbias: &mut Vec<f32>,
    ) {
        let before = dbias.clone();
        CPU.fc_backward_weight(g, x, dz, dw, dbias);
        if self.0 == Fault::Accumulates {
            for i in 0..g.outputs {
                dbias[i] += before[i];
            }
        }
    }
    fn global_avg_pool_forward(&self, g: &GlobalPoolGeom, x: &Vec<f32>, y: &mut Vec<f32>) {
        CPU.global_avg_pool_forward(g, x, y)
    }
    fn global_avg_pool_backward(&self, g: &GlobalPoolGeom, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        CPU.global_avg_pool_backward(g, dy, dx);
        if self.0 == Fault::UnscaledPoolGradient {
            for v in &mut dx[..g.input_len()] {
                *v *= g.spatial as f32;
            }
        }
    }
    fn sigmoid_focal_loss(
        &self,
        g: &FocalLossGeom,
        logits: &Vec<f32>,
        labels: &Vec<f32>,
        grad: &mut Vec<f32>,
        losses: &mut Vec<f32>,
    ) {
        let mut labels = labels.clone();
        if self.0 == Fault::IgnoredAsBackground {
            for label in &mut labels[..g.anchors()] {
                if *label == -1.0 {
                    *label = 0.0;
                }
            }
        }
        CPU.sigmoid_focal_loss(g, logits, &labels, grad, losses)
    }
    fn mask_loss(
        &self,
        g: &MaskLossGeom,
        logits: &Vec<f32>,
        roi_classes: &Vec<f32>,
        targets: &Vec<f32>,
        grad: &mut Vec<f32>,
        losses: &mut Vec<f32>,
    ) {
        let mut roi_classes = roi_classes.clone();
        if self.0 == Fault::PlaceholderScored {
            for class in &mut roi_classes[..g.rois] {
                *class = class.max(0.0);
            }
        }
        CPU.mask_loss(g, logits, &roi_classes, targets, grad, losses)
    }
    fn polygon_masks(
        &self,
        g: &PolygonMaskGeom,
        points: &Vec<f32>,
        polygons: &Vec<f32>,
        roi_polygons: &Vec<f32>,
        masks: &mut Vec<f32>,
    ) {
        let mut roi_polygons = roi_polygons.clone();
        if self.0 == Fault::FirstPolygonOnly {
            for count in roi_polygons[..2 * g.rois].iter_mut().skip(1).step_by(2) {
                *count = count.min(1.0);
            }
        }
        CPU.polygon_masks(g, points, polygons, &roi_polygons, masks)
    }
    fn mask_paste(
        &self,
        g: &MaskPasteGeom,
        probs: &Vec<f32>,
        detections: &Vec<f32>,
        pixels: &mut Vec<f32>,
    ) {
        let mut detections = detections.clone();
        if self.0 == Fault::ChannelOffByOne {
            for entry in
                detections[..g.detections * MASK_PASTE_FIELDS].chunks_mut(MASK_PASTE_FIELDS)
            {
                entry[1] = (entry[1] - 1.0).max(0.0);
            }
        }
        CPU.mask_paste(g, probs, &detections, pixels)
    }
    fn sgd_momentum(
        &self,
        step: &SgdStep,
        len: usize,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        velocity: &mut Vec<f32>,
    ) {
        let mut step = *step;
        if self.0 == Fault::SwappedArguments {
            (step.lr, step.momentum) = (step.momentum, step.lr);
        }
        CPU.sgd_momentum(&step, len, param, grad, velocity)
    }
    fn rmsprop(
        &self,
        step: &RmsPropStep,
        len: usize,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        mean_square: &mut Vec<f32>,
        moment: &mut Vec<f32>,
    ) {
        let mut step = *step;
        if self.0 == Fault::SwappedArguments {
            (step.rho, step.momentum) = (step.momentum, step.rho);
        }
        CPU.rmsprop(&step, len, param, grad, mean_square, moment)
    }
    fn yolo_detect(
        &self,
        cfg: &YoloConfig,
        heads: &[HeadOutput<'_, Vec<f32>>],
        image_sizes: &[[u32; 2]],
        nms: &NmsConfig,
    ) -> Vec<Vec<Detection>> {
        CPU.yolo_detect(cfg, heads, image_sizes, nms)
    }
    fn ssd_detect(
        &self,
        nms: &NmsConfig,
        priors: &Vec<f32>,
        variances: &Vec<f32>,
        classes: usize,
        location: &Vec<f32>,
        confidence: &Vec<f32>,
        images: usize,
        priors_count: usize,
    ) -> Vec<Vec<Detection>> {
        let mut nms = nms.clone();
        if self.0 == Fault::KeepsBackground {
            nms.background_label = None;
        }
        CPU.ssd_detect(
            &nms,
            priors,
            variances,
            classes,
            location,
            confidence,
            images,
            priors_count,
        )
    }
    fn bbox_head_loss(
        &self,
        args: &BoxHeadLossArgs<'_>,
        cls_score: &Vec<f32>,
        bbox_pred: &Vec<f32>,
        grad_cls_score: &mut Vec<f32>,
        grad_bbox_pred: &mut Vec<f32>,
    ) -> BBoxHeadLoss {
        let before = grad_bbox_pred.clone();
        let loss = CPU.bbox_head_loss(args, cls_score, bbox_pred, grad_cls_score, grad_bbox_pred);
        if self.0 == Fault::KeepsUnweightedBoxGradients {
            let t = &args.targets;
            for (r, &row) in args.rows.iter().enumerate() {
                for c in 0..args.deltas {
                    let k = r * args.deltas + c;
                    if t.bbox_inside_weights[k] == 0.0 || t.bbox_outside_weights[k] == 0.0 {
                        grad_bbox_pred[row * args.deltas + c] = before[row * args.deltas + c];
                    }
                }
            }
        }
        loss
    }
    fn rpn_loss(
        &self,
        g: &RpnTargetsGeom<'_>,
        anchors: &[&Vec<f32>],
        levels: &[RpnLevelOutput<'_, Vec<f32>>],
        anchors_per_cell: usize,
        grads: &mut [RpnLevelGrad<'_, Vec<f32>>],
    ) -> RpnLoss {
        let first_ones = RpnTargetConfig {
            use_random: false,
            ..*g.config
        };
        let g = &match self.0 {
            Fault::SamplesTheFirstOnes => RpnTargetsGeom {
                config: &first_ones,
                ..*g
            },
            _ => *g,
        };
        let mut loss = CPU.rpn_loss(g, anchors, levels, anchors_per_cell, grads);
        let boxes: Vec<[f32; 4]> = anchors
            .iter()
            .zip(levels)
            .flat_map(|(a, l)| a[..4 * l.height * l.width * anchors_per_cell].chunks_exact(4))
            .map(|q| [q[0], q[1], q[2], q[3]])
            .collect();
        let targets = g.targets(&boxes);
        let fg: usize = targets.iter().map(|t| t.fg.len()).sum();
        let sampled: usize = targets.iter().map(|t| t.fg.len() + t.bg.len()).sum();
        if self.0 == Fault::DividesByForeground && fg > 0 {
            let factor = sampled as f32 / fg as f32;
            loss.loss_rpn_bbox *= factor;
            for (level, grad) in levels.iter().zip(grads) {
                let len = 4 * targets.len() * anchors_per_cell * level.height * level.width;
                grad.bbox_pred[..len].iter_mut().for_each(|g| *g *= factor);
            }
        }
        loss
    }
    fn generate_proposals(
        &self,
        cfg: &ProposalConfig,
        levels: &[RpnProposalInput<'_, Vec<f32>>],
        anchors_per_cell: usize,
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Proposals>> {
        let mut cfg = cfg.clone();
        if self.0 == Fault::FixedNmsThreshold {
            cfg.eta = 1.0;
        }
        CPU.generate_proposals(&cfg, levels, anchors_per_cell, im_info)
    }
    fn ssd_loss(
        &self,
        cfg: &SsdLossConfig,
        priors: &Vec<f32>,
        variances: &Vec<f32>,
        priors_count: usize,
        classes: usize,
        location: &Vec<f32>,
        confidence: &Vec<f32>,
        truths: &[ImageTruth],
        grad_location: &mut Vec<f32>,
        grad_confidence: &mut Vec<f32>,
    ) -> SsdLoss {
        let mut cfg = *cfg;
        if self.0 == Fault::MinesEveryCandidate {
            cfg.neg_pos_ratio = f32::INFINITY;
        }
        CPU.ssd_loss(
            &cfg,
            priors,
            variances,
            priors_count,
            classes,
            location,
            confidence,
            truths,
            grad_location,
            grad_confidence,
        )
    }
    fn retina_box_loss(
        &self,
        g: &RetinaBoxLossGeom,
        deltas: &Vec<f32>,
        targets: &Vec<f32>,
        weights: &Vec<f32>,
        grad: &mut Vec<f32>,
        losses: &mut Vec<f32>,
    ) {
        let mut weights = weights.clone();
        if self.0 == Fault::RegressesEveryAnchor {
            weights[..g.anchors()].fill(1.0);
        }
        CPU.retina_box_loss(g, deltas, targets, &weights, grad, losses)
    }
    fn retinanet_targets(
        &self,
        g: &RetinaTargetsGeom<'_>,
        levels: &mut [RetinaTargetLevel<'_, Vec<f32>>],
    ) -> Vec<f32> {
        if self.0 != Fault::LastBestBox {
            return CPU.retinanet_targets(g, levels);
        }
        // Each image's boxes in reverse: the first best is the last one.
        let reversed: Vec<(Vec<[f32; 4]>, Vec<i32>)> = g
            .images
            .iter()
            .map(|t| {
                let boxes = t.boxes.iter().rev().copied().collect();
                (boxes, t.classes.iter().rev().copied().collect())
            })
            .collect();
        let images: Vec<RetinaTruth<'_>> = g
            .images
            .iter()
            .zip(&reversed)
            .map(|(t, (boxes, classes))| RetinaTruth {
                boxes,
                classes,
                im_info: t.im_info,
            })
            .collect();
        let g = RetinaTargetsGeom {
            images: &images,
            ..*g
        };
        CPU.retinanet_targets(&g, levels)
    }
    fn rcnn_detect(
        &self,
        cfg: &RcnnConfig,
        rois: &BoxHeadRois<'_>,
        cls_score: &Vec<f32>,
        bbox_pred: &Vec<f32>,
    ) -> Vec<Vec<Detection>> {
        let mut found = CPU.rcnn_detect(cfg, rois, cls_score, bbox_pred);
        if self.0 == Fault::ListsByScore {
            for image in &mut found {
                // Stable: the class groups stay in order.
                image.sort_by(|a, b| a.class.cmp(&b.class).then(b.score.total_cmp(&a.score)));
            }
        }
        found
    }
    fn retinanet_detect(
        &self,
        cfg: &RetinaOutputConfig,
        levels: &[RetinaLevelInput<'_, Vec<f32>>],
        anchors_per_cell: usize,
        classes: usize,
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Detection>> {
        // The fault: the last level's scores at or below the threshold
        // zeroed, which the reference's "above 0" there then drops.
        let mut last_scores = levels.last().map(|l| l.scores.clone());
        if let (Fault::ThresholdsEveryLevel, Some(scores)) = (self.0, last_scores.as_mut()) {
            for s in scores.iter_mut().filter(|s| **s <= cfg.score_thresh) {
                *s = 0.0;
            }
        }
        let mut levels: Vec<RetinaLevelInput<'_, Vec<f32>>> =
            levels.iter().map(|l| RetinaLevelInput { ..*l }).collect();
        if let (Some(last), Some(scores)) = (levels.last_mut(), last_scores.as_ref()) {
            last.scores = scores;
        }
        CPU.retinanet_detect(cfg, &levels, anchors_per_cell, classes, im_info)
    }
}
