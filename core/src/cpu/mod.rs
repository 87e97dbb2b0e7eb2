//! The CPU backend: plain loops over `Vec<f32>`, multithreaded with rayon,
//! GEMM from the `gemm` crate. It is the reference the GPU backend is tested
//! against, so every kernel here favours being obviously right.

mod batch_norm;
pub mod conv;
mod elementwise;
pub mod fc;
pub mod gemm;
pub mod global_avg_pool;
pub mod head_rows;
pub mod l2_norm;
pub mod mask_loss;
pub mod mask_paste;
pub mod polygon_masks;
mod pool;
pub mod retina_box_loss;
pub mod rmsprop;
pub mod roi_align;
pub mod sigmoid_focal_loss;
mod winograd;

use crate::backend::{
    Activation, Backend, BatchNormGeom, BoxHeadRois, ChannelCopy, Conv2dGeom, FcGeom,
    FocalLossGeom, GlobalPoolGeom, HeadOutput, HeadRows, L2NormGeom, MaskLossGeom, MaskPasteGeom,
    PolygonMaskGeom, PoolGeom, RetinaBoxLossGeom, RetinaLevelInput, RetinaTargetLevel,
    RetinaTargetsGeom, RmsPropStep, RoiAlignGeom, RpnProposalInput, RpnTargetsGeom, SgdStep,
};
use crate::rcnn::{
    bbox_head_detect, bbox_head_loss_at_rows, BBoxHeadLoss, BoxHeadLossArgs, ImInfo,
    ProposalConfig, Proposals, RcnnConfig, RpnLevelGrad, RpnLevelOutput, RpnLoss,
};
use crate::retinanet::{
    level_box_targets, level_labels, retinanet_detection_output, retinanet_target_assign,
    RetinaOutputConfig, RetinaTargets,
};
use crate::ssd::{ImageTruth, SsdLoss, SsdLossConfig};
use crate::yolo::{detect, Detection, Head, NmsConfig, YoloConfig};
use rayon::prelude::*;

/// The CPU. Threads come from rayon's global pool (size it with
/// `RAYON_NUM_THREADS` or `rayon::ThreadPoolBuilder`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }
}

impl Backend for CpuBackend {
    type Buffer = Vec<f32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn alloc(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }

    fn buffer_len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn fill(&self, buf: &mut Vec<f32>, len: usize, value: f32) {
        buf[..len].fill(value);
    }

    fn upload(&self, src: &[f32], dst: &mut Vec<f32>) {
        dst[..src.len()].copy_from_slice(src);
    }

    fn download(&self, src: &Vec<f32>, dst: &mut [f32]) {
        dst.copy_from_slice(&src[..dst.len()]);
    }

    fn copy(&self, len: usize, src: &Vec<f32>, dst: &mut Vec<f32>) {
        dst[..len].copy_from_slice(&src[..len]);
    }

    fn conv2d_workspace_len(&self, g: &Conv2dGeom) -> usize {
        conv::workspace_len(g)
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
        conv::forward(g, x, w, bias.map(|b| b.as_slice()), y, workspace);
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
        conv::backward_data(g, dy, w, dx, accumulate, workspace);
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
        conv::backward_filter(g, x, dy, dw, dbias.map(|b| b.as_mut_slice()), workspace);
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
        batch_norm::forward_train(
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
        batch_norm::forward_eval(g, act, eps, x, scale, offset, mean, var, y);
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
        batch_norm::forward_eval_in_place(g, act, eps, xy, scale, offset, mean, var);
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
        batch_norm::backward_train(
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
        );
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
        batch_norm::backward_eval(g, act, eps, y, dy, scale, var, dx);
    }

    fn activation_forward(&self, act: Activation, len: usize, x: &Vec<f32>, y: &mut Vec<f32>) {
        elementwise::activation_forward(act, &x[..len], &mut y[..len]);
    }

    fn activation_forward_in_place(&self, act: Activation, len: usize, xy: &mut Vec<f32>) {
        elementwise::activation_forward_in_place(act, &mut xy[..len]);
    }

    fn activation_backward(
        &self,
        act: Activation,
        len: usize,
        y: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) {
        elementwise::activation_backward(act, &y[..len], &dy[..len], &mut dx[..len]);
    }

    fn sigmoid_forward(&self, len: usize, x: &Vec<f32>, y: &mut Vec<f32>) {
        elementwise::sigmoid_forward(&x[..len], &mut y[..len]);
    }

    fn sigmoid_backward(&self, len: usize, y: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        elementwise::sigmoid_backward(&y[..len], &dy[..len], &mut dx[..len]);
    }

    fn add(&self, len: usize, a: &Vec<f32>, b: &Vec<f32>, y: &mut Vec<f32>) {
        elementwise::add(&a[..len], &b[..len], &mut y[..len]);
    }

    fn axpy(&self, len: usize, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>) {
        elementwise::axpy(alpha, &x[..len], &mut y[..len]);
    }

    fn scale(&self, len: usize, alpha: f32, x: &mut Vec<f32>) {
        elementwise::scale(alpha, &mut x[..len]);
    }

    fn sum(&self, len: usize, x: &Vec<f32>) -> f64 {
        elementwise::sum(&x[..len])
    }

    fn sum_squares(&self, len: usize, x: &Vec<f32>) -> f64 {
        elementwise::sum_squares(&x[..len])
    }

    fn channel_sum(
        &self,
        batch: usize,
        channels: usize,
        plane: usize,
        x: &Vec<f32>,
        out: &mut Vec<f32>,
    ) {
        elementwise::channel_sum(batch, channels, plane, x, out);
    }

    fn max_pool_forward(&self, g: &PoolGeom, x: &Vec<f32>, y: &mut Vec<f32>) {
        pool::max_pool_forward(g, x, y);
    }

    fn max_pool_backward(&self, g: &PoolGeom, x: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        pool::max_pool_backward(g, x, dy, dx);
    }

    fn upsample2x_forward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        pool::upsample2x_forward(planes, h, w, x, y);
    }

    fn upsample2x_backward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) {
        pool::upsample2x_backward(planes, h, w, dy, dx);
    }

    fn copy_channels(&self, c: &ChannelCopy, src: &Vec<f32>, dst: &mut Vec<f32>) {
        pool::copy_channels(c, src, dst);
    }

    fn head_rows_forward(&self, g: &HeadRows, x: &Vec<f32>, rows: &mut Vec<f32>) {
        head_rows::forward(g, x, rows);
    }

    fn head_rows_backward(&self, g: &HeadRows, rows_grad: &Vec<f32>, x_grad: &mut Vec<f32>) {
        head_rows::backward(g, rows_grad, x_grad);
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
        l2_norm::forward(g, epsilon, x, scale, norm, y);
    }

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
        l2_norm::backward(g, x, scale, norm, dy, dx, dscale);
    }

    fn roi_align_forward(
        &self,
        g: &RoiAlignGeom,
        x: &Vec<f32>,
        rois: &Vec<f32>,
        roi_batch: &Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        roi_align::forward(g, x, rois, roi_batch, y);
    }

    fn roi_align_backward(
        &self,
        g: &RoiAlignGeom,
        dy: &Vec<f32>,
        rois: &Vec<f32>,
        roi_batch: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) {
        roi_align::backward(g, dy, rois, roi_batch, dx);
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
        fc::forward(g, act, x, w, bias, y);
    }

    fn fc_backward_data(&self, g: &FcGeom, dz: &Vec<f32>, w: &Vec<f32>, dx: &mut Vec<f32>) {
        fc::backward_data(g, dz, w, dx);
    }

    fn fc_backward_weight(
        &self,
        g: &FcGeom,
        x: &Vec<f32>,
        dz: &Vec<f32>,
        dw: &mut Vec<f32>,
        dbias: &mut Vec<f32>,
    ) {
        fc::backward_weight(g, x, dz, dw, dbias);
    }

    fn global_avg_pool_forward(&self, g: &GlobalPoolGeom, x: &Vec<f32>, y: &mut Vec<f32>) {
        global_avg_pool::forward(g, x, y);
    }

    fn global_avg_pool_backward(&self, g: &GlobalPoolGeom, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        global_avg_pool::backward(g, dy, dx);
    }

    fn sigmoid_focal_loss(
        &self,
        g: &FocalLossGeom,
        logits: &Vec<f32>,
        labels: &Vec<f32>,
        grad: &mut Vec<f32>,
        losses: &mut Vec<f32>,
    ) {
        sigmoid_focal_loss::forward_backward(g, logits, labels, grad, losses);
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
        retina_box_loss::forward_backward(g, deltas, targets, weights, grad, losses);
    }

    /// Core's `retinanet::retinanet_target_assign` per image (in parallel)
    /// on the levels' anchors concatenated, laid out per level by
    /// `level_labels` and `level_box_targets`.
    fn retinanet_targets(
        &self,
        g: &RetinaTargetsGeom<'_>,
        levels: &mut [RetinaTargetLevel<'_, Vec<f32>>],
    ) -> Vec<f32> {
        if let Err(msg) = g.validate() {
            panic!("{msg}");
        }
        let anchors: Vec<[f32; 4]> = levels
            .iter()
            .flat_map(|l| quads(l.anchors, l.count))
            .collect();
        let targets: Vec<RetinaTargets> = g
            .images
            .par_iter()
            .map(|image| {
                let [height, width, scale] = image.im_info;
                let info = ImInfo {
                    height,
                    width,
                    scale,
                };
                retinanet_target_assign(&anchors, image.boxes, image.classes, info, g.config)
            })
            .collect();
        let mut first = 0;
        for level in levels {
            let rows = targets.len() * level.count;
            level.labels[..rows].copy_from_slice(&level_labels(&targets, first, level.count));
            let (boxes, weights) = level_box_targets(&targets, first, level.count);
            level.box_targets[..4 * rows].copy_from_slice(&boxes);
            level.box_weights[..rows].copy_from_slice(&weights);
            first += level.count;
        }
        targets.iter().map(|t| t.fg_num).collect()
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
        mask_loss::forward_backward(g, logits, roi_classes, targets, grad, losses);
    }

    fn polygon_masks(
        &self,
        g: &PolygonMaskGeom,
        points: &Vec<f32>,
        polygons: &Vec<f32>,
        roi_polygons: &Vec<f32>,
        masks: &mut Vec<f32>,
    ) {
        polygon_masks::polygon_masks(g, points, polygons, roi_polygons, masks);
    }

    fn mask_paste(
        &self,
        g: &MaskPasteGeom,
        probs: &Vec<f32>,
        detections: &Vec<f32>,
        pixels: &mut Vec<f32>,
    ) {
        mask_paste::mask_paste(g, probs, detections, pixels);
    }

    fn sgd_momentum(
        &self,
        step: &SgdStep,
        len: usize,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        velocity: &mut Vec<f32>,
    ) {
        elementwise::sgd_momentum(step, &mut param[..len], &grad[..len], &mut velocity[..len]);
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
        rmsprop::update(
            step,
            &mut param[..len],
            &grad[..len],
            &mut mean_square[..len],
            &mut moment[..len],
        );
    }

    fn yolo_detect(
        &self,
        cfg: &YoloConfig,
        heads: &[HeadOutput<'_, Vec<f32>>],
        image_sizes: &[[u32; 2]],
        nms: &NmsConfig,
    ) -> Vec<Vec<Detection>> {
        let batch = image_sizes.len();
        // Buffers may be longer than the tensors they hold.
        let heads: Vec<Head> = heads
            .iter()
            .enumerate()
            .map(|(level, h)| Head {
                data: &h.buf[..batch * cfg.head_channels(level) * h.height * h.width],
                batch,
                height: h.height,
                width: h.width,
            })
            .collect();
        detect(cfg, &heads, image_sizes, nms)
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
        let (priors, variances) = (quads(priors, priors_count), quads(variances, priors_count));
        (0..images)
            .map(|n| {
                crate::ssd::detect(
                    nms,
                    &priors,
                    &variances,
                    classes,
                    &location[n * priors_count * 4..][..priors_count * 4],
                    &confidence[n * priors_count * classes..][..priors_count * classes],
                )
            })
            .collect()
    }

    /// Core's `ssd::ssd_loss` on the tensors' part of each buffer.
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
        let (priors, variances) = (quads(priors, priors_count), quads(variances, priors_count));
        let rows = truths.len() * priors_count;
        crate::ssd::ssd_loss(
            cfg,
            &priors,
            &variances,
            classes,
            &location[..rows * 4],
            &confidence[..rows * classes],
            truths,
            &mut grad_location[..rows * 4],
            &mut grad_confidence[..rows * classes],
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
        bbox_head_loss_at_rows(args, cls_score, bbox_pred, grad_cls_score, grad_bbox_pred)
    }

    /// Core's `rpn_target_assign` of each image, then `rcnn::rpn_loss`.
    fn rpn_loss(
        &self,
        g: &RpnTargetsGeom<'_>,
        anchors: &[&Vec<f32>],
        levels: &[RpnLevelOutput<'_, Vec<f32>>],
        anchors_per_cell: usize,
        grads: &mut [RpnLevelGrad<'_, Vec<f32>>],
    ) -> RpnLoss {
        if let Err(msg) = g.validate(anchors, levels, anchors_per_cell, |b| b.len()) {
            panic!("{msg}");
        }
        let boxes: Vec<[f32; 4]> = anchors
            .iter()
            .zip(levels)
            .flat_map(|(buf, l)| quads(buf, l.height * l.width * anchors_per_cell))
            .collect();
        let targets = g.targets(&boxes);
        crate::rcnn::rpn_loss(levels, anchors_per_cell, &targets, grads)
    }

    /// Core's `rcnn::generate_proposals` per level and image, the images
    /// in parallel.
    fn generate_proposals(
        &self,
        cfg: &ProposalConfig,
        levels: &[RpnProposalInput<'_, Vec<f32>>],
        anchors_per_cell: usize,
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Proposals>> {
        levels
            .iter()
            .map(|level| {
                let count = level.anchors(anchors_per_cell);
                let (anchors, variances) =
                    (quads(level.anchors, count), quads(level.variances, count));
                im_info
                    .par_iter()
                    .enumerate()
                    .map(|(n, &info)| {
                        crate::rcnn::generate_proposals(
                            cfg,
                            &level.scores[n * count..][..count],
                            &level.deltas[n * 4 * count..][..4 * count],
                            &anchors,
                            &variances,
                            (level.height, level.width),
                            info,
                        )
                    })
                    .collect()
            })
            .collect()
    }

    /// Core's `rcnn::bbox_head_detect` per image, on its rows of the
    /// outputs gathered into Paddle's order, the images in parallel.
    fn rcnn_detect(
        &self,
        cfg: &RcnnConfig,
        rois: &BoxHeadRois<'_>,
        cls_score: &Vec<f32>,
        bbox_pred: &Vec<f32>,
    ) -> Vec<Vec<Detection>> {
        let classes = cfg.bbox_assigner.class_nums;
        let firsts: Vec<usize> = rois
            .counts
            .iter()
            .scan(0, |first, &count| {
                *first += count;
                Some(*first - count)
            })
            .collect();
        firsts
            .par_iter()
            .zip(rois.counts)
            .enumerate()
            .map(|(n, (&first, &count))| {
                let rows = &rois.rows[first..first + count];
                let gather = |outputs: &[f32], width: usize| -> Vec<f32> {
                    rows.iter()
                        .flat_map(|&r| &outputs[r * width..][..width])
                        .copied()
                        .collect()
                };
                bbox_head_detect(
                    cfg,
                    &rois.boxes[first..first + count],
                    rois.scales[n],
                    &rois.im_shapes[n],
                    &gather(cls_score, classes),
                    &gather(bbox_pred, 4 * classes),
                )
            })
            .collect()
    }

    /// Core's `retinanet::retinanet_detection_output` per image, the
    /// images in parallel.
    fn retinanet_detect(
        &self,
        cfg: &RetinaOutputConfig,
        levels: &[RetinaLevelInput<'_, Vec<f32>>],
        anchors_per_cell: usize,
        classes: usize,
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Detection>> {
        let counts: Vec<usize> = levels
            .iter()
            .map(|l| l.height * l.width * anchors_per_cell)
            .collect();
        let anchors: Vec<Vec<[f32; 4]>> = levels
            .iter()
            .zip(&counts)
            .map(|(l, &count)| quads(l.anchors, count))
            .collect();
        let anchors: Vec<&[[f32; 4]]> = anchors.iter().map(Vec::as_slice).collect();
        let sizes: Vec<[usize; 2]> = levels.iter().map(|l| [l.height, l.width]).collect();
        im_info
            .par_iter()
            .enumerate()
            .map(|(n, &[height, width, scale])| {
                let scores: Vec<&[f32]> = levels
                    .iter()
                    .zip(&counts)
                    .map(|(l, &count)| &l.scores[n * count * classes..][..count * classes])
                    .collect();
                let deltas: Vec<&[f32]> = levels
                    .iter()
                    .zip(&counts)
                    .map(|(l, &count)| &l.deltas[n * count * 4..][..count * 4])
                    .collect();
                retinanet_detection_output(
                    &scores,
                    &deltas,
                    &sizes,
                    anchors_per_cell,
                    &anchors,
                    ImInfo {
                        height,
                        width,
                        scale,
                    },
                    cfg,
                )
            })
            .collect()
    }
}

/// The first `count` rows of a `[count, 4]` buffer (boxes, variances).
fn quads(buf: &[f32], count: usize) -> Vec<[f32; 4]> {
    buf[..count * 4]
        .chunks_exact(4)
        .map(|q| [q[0], q[1], q[2], q[3]])
        .collect()
}
