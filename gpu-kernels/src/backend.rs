//! The core `Backend` trait on the GPU: each method calls the matching
//! operation in [`crate::ops`]. The trait's methods are infallible, so the
//! backend never panics on a device failure: it records the first one (an
//! allocation, a launch, a copy, a geometry beyond the kernels' `u32`
//! indexing) in a sticky slot, as CUDA reports asynchronous errors, turns
//! every later operation into a no-op (a failed allocation returns a buffer
//! without memory), and `Backend::check` returns it.
use std::sync::{Arc, Mutex};

use pulsefocus_core::backend::{
    Activation, BatchNormGeom, BoxHeadRois, ChannelCopy, Conv2dGeom, DeviceError, FcGeom,
    FocalLossGeom, GlobalPoolGeom, HeadOutput, HeadRows, L2NormGeom, MaskLossGeom, MaskPasteGeom,
    PolygonMaskGeom, PoolGeom, RetinaBoxLossGeom, RetinaLevelInput, RetinaTargetLevel,
    RetinaTargetsGeom, RmsPropStep, RoiAlignGeom, RpnProposalInput, RpnTargetsGeom, SgdStep,
};
use pulsefocus_core::rcnn::{
    BBoxHeadLoss, BoxHeadLossArgs, ProposalConfig, Proposals, RcnnConfig, RpnLevelGrad,
    RpnLevelOutput, RpnLoss,
};
use pulsefocus_core::retinanet::RetinaOutputConfig;
use pulsefocus_core::ssd::{ImageTruth, SsdLoss, SsdLossConfig};
use pulsefocus_core::yolo::{Detection, NmsConfig, YoloConfig};
use pulsefocus_core::Backend;

use crate::ops::InOut;
use crate::{DeviceBuffer, Gpu, GpuError};

/// The GPU as a core `Backend`: a cheap handle to one opened [`Gpu`].
#[derive(Clone)]
pub struct GpuBackend {
    gpu: Arc<Gpu>,
    failure: Arc<Mutex<Option<GpuError>>>,
}

impl GpuBackend {
    /// Opens GPU 0 (an error, not a panic, without a driver or a GPU).
    pub fn open() -> Result<GpuBackend, GpuError> {
        Ok(GpuBackend::new(Gpu::open()?))
    }

    /// The emulated GPU: the same host code, kernels on the CPU grid
    /// emulator, launches checked against the PTX (for tests, and for
    /// trying the GPU path on any machine).
    pub fn emulated() -> Result<GpuBackend, GpuError> {
        Ok(GpuBackend::new(Gpu::emulated()?))
    }

    /// The emulated GPU if `PULSEFOCUS_GPU_EMULATOR=1`, else GPU 0.
    pub fn open_requested() -> Result<GpuBackend, GpuError> {
        Ok(GpuBackend::new(Gpu::open_requested()?))
    }

    pub fn new(gpu: Gpu) -> GpuBackend {
        GpuBackend {
            gpu: Arc::new(gpu),
            failure: Arc::new(Mutex::new(None)),
        }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The first failure, if any (what `Backend::check` reports).
    pub fn failure(&self) -> Option<GpuError> {
        self.slot().clone()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<GpuError>> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `op` unless an earlier operation failed; records its failure.
    /// Returns `T::default()` when skipped or failed.
    fn run<T: Default>(&self, op: impl FnOnce(&Gpu) -> Result<T, GpuError>) -> T {
        if self.slot().is_some() {
            return T::default();
        }
        match op(&self.gpu) {
            Ok(value) => value,
            Err(err) => {
                self.slot().get_or_insert(err);
                T::default()
            }
        }
    }
}

impl Backend for GpuBackend {
    type Buffer = DeviceBuffer;

    fn name(&self) -> String {
        if self.gpu.emulated {
            "emulated GPU (CPU grid emulator)".into()
        } else {
            format!("cuda:{} ({})", self.gpu.info.ordinal, self.gpu.info.name)
        }
    }

    fn synchronize(&self) {
        self.run(|gpu| gpu.synchronize())
    }

    /// What the caching pool held from the driver at its peak (buffers in
    /// use plus cached free ones): the memory a run needs on the device.
    fn peak_device_bytes(&self) -> Option<usize> {
        Some(self.gpu.pool.stats().peak_held_bytes)
    }

    fn check(&self) -> Result<(), DeviceError> {
        match self.failure() {
            None => Ok(()),
            Some(err) => Err(DeviceError(err.to_string())),
        }
    }

    fn alloc(&self, len: usize) -> DeviceBuffer {
        self.run(|gpu| gpu.zeros(len).map(Some))
            .unwrap_or_else(|| DeviceBuffer::without_memory(len))
    }
    fn buffer_len(&self, buf: &DeviceBuffer) -> usize {
        buf.len()
    }
    fn fill(&self, buf: &mut DeviceBuffer, len: usize, value: f32) {
        self.run(|gpu| gpu.fill(len, buf, value))
    }
    fn upload(&self, src: &[f32], dst: &mut DeviceBuffer) {
        self.run(|gpu| gpu.upload_into(src, dst))
    }
    fn download(&self, src: &DeviceBuffer, dst: &mut [f32]) {
        self.run(|gpu| gpu.download_into(src, dst))
    }
    fn copy(&self, len: usize, src: &DeviceBuffer, dst: &mut DeviceBuffer) {
        self.run(|gpu| gpu.copy(len, src, dst))
    }

    /// The kernels gather im2col entries on the fly: no scratch memory.
    fn conv2d_workspace_len(&self, _g: &Conv2dGeom) -> usize {
        0
    }
    fn conv2d_forward(
        &self,
        g: &Conv2dGeom,
        x: &DeviceBuffer,
        w: &DeviceBuffer,
        bias: Option<&DeviceBuffer>,
        y: &mut DeviceBuffer,
        _workspace: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.conv2d_forward(g, x, w, bias, y))
    }
    fn conv2d_backward_data(
        &self,
        g: &Conv2dGeom,
        dy: &DeviceBuffer,
        w: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        accumulate: bool,
        _workspace: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.conv2d_backward_data(g, dy, w, dx, accumulate))
    }
    fn conv2d_backward_filter(
        &self,
        g: &Conv2dGeom,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        dw: &mut DeviceBuffer,
        dbias: Option<&mut DeviceBuffer>,
        _workspace: &mut DeviceBuffer,
    ) {
        self.run(|gpu| {
            gpu.conv2d_backward_filter(g, x, dy, dw)?;
            match dbias {
                Some(dbias) => {
                    let plane = g.h_out() * g.w_out();
                    gpu.channel_sum(dy, dbias, (g.batch, g.c_out, plane))
                }
                None => Ok(()),
            }
        })
    }

    fn batch_norm_forward_train(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        momentum: f32,
        eps: f32,
        x: &DeviceBuffer,
        scale: &DeviceBuffer,
        offset: &DeviceBuffer,
        running_mean: &mut DeviceBuffer,
        running_var: &mut DeviceBuffer,
        saved_mean: &mut DeviceBuffer,
        saved_inv_std: &mut DeviceBuffer,
        y: &mut DeviceBuffer,
    ) {
        self.run(|gpu| {
            gpu.batch_norm_train_forward(
                g,
                act,
                x,
                scale,
                offset,
                y,
                (saved_mean, saved_inv_std),
                (running_mean, running_var),
                eps,
                momentum,
            )
        })
    }
    fn batch_norm_forward_eval(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        eps: f32,
        x: &DeviceBuffer,
        scale: &DeviceBuffer,
        offset: &DeviceBuffer,
        mean: &DeviceBuffer,
        var: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) {
        let io = InOut::Apart { x, y };
        self.run(|gpu| gpu.batch_norm_eval_forward(g, act, io, scale, offset, (mean, var), eps))
    }
    fn batch_norm_forward_eval_in_place(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        eps: f32,
        xy: &mut DeviceBuffer,
        scale: &DeviceBuffer,
        offset: &DeviceBuffer,
        mean: &DeviceBuffer,
        var: &DeviceBuffer,
    ) {
        let io = InOut::InPlace(xy);
        self.run(|gpu| gpu.batch_norm_eval_forward(g, act, io, scale, offset, (mean, var), eps))
    }
    fn batch_norm_backward_train(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        x: &DeviceBuffer,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        scale: &DeviceBuffer,
        saved_mean: &DeviceBuffer,
        saved_inv_std: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        dscale: &mut DeviceBuffer,
        doffset: &mut DeviceBuffer,
    ) {
        self.run(|gpu| {
            gpu.batch_norm_train_backward(
                g,
                act,
                x,
                y,
                dy,
                scale,
                (saved_mean, saved_inv_std),
                dx,
                dscale,
                doffset,
            )
        })
    }
    fn batch_norm_backward_eval(
        &self,
        g: &BatchNormGeom,
        act: Activation,
        eps: f32,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        scale: &DeviceBuffer,
        var: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.batch_norm_eval_backward(g, act, y, dy, scale, var, dx, eps))
    }

    fn activation_forward(
        &self,
        act: Activation,
        len: usize,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.activation_forward(act, len, InOut::Apart { x, y }))
    }
    fn activation_forward_in_place(&self, act: Activation, len: usize, xy: &mut DeviceBuffer) {
        self.run(|gpu| gpu.activation_forward(act, len, InOut::InPlace(xy)))
    }
    fn activation_backward(
        &self,
        act: Activation,
        len: usize,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.activation_backward(act, len, y, dy, dx))
    }
    fn sigmoid_forward(&self, len: usize, x: &DeviceBuffer, y: &mut DeviceBuffer) {
        self.run(|gpu| gpu.sigmoid_forward(len, x, y))
    }
    fn sigmoid_backward(
        &self,
        len: usize,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.sigmoid_backward(len, y, dy, dx))
    }
    fn add(&self, len: usize, a: &DeviceBuffer, b: &DeviceBuffer, y: &mut DeviceBuffer) {
        self.run(|gpu| gpu.add(len, a, b, y))
    }
    fn axpy(&self, len: usize, alpha: f32, x: &DeviceBuffer, y: &mut DeviceBuffer) {
        self.run(|gpu| gpu.axpy(len, alpha, x, y))
    }
    fn scale(&self, len: usize, alpha: f32, x: &mut DeviceBuffer) {
        self.run(|gpu| gpu.scale(len, alpha, x))
    }
    fn sum(&self, len: usize, x: &DeviceBuffer) -> f64 {
        self.run(|gpu| gpu.sum(len, x, false))
    }
    fn sum_squares(&self, len: usize, x: &DeviceBuffer) -> f64 {
        self.run(|gpu| gpu.sum(len, x, true))
    }
    fn channel_sum(
        &self,
        batch: usize,
        channels: usize,
        plane: usize,
        x: &DeviceBuffer,
        out: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.channel_sum(x, out, (batch, channels, plane)))
    }

    fn max_pool_forward(&self, g: &PoolGeom, x: &DeviceBuffer, y: &mut DeviceBuffer) {
        self.run(|gpu| gpu.max_pool_forward(g, x, y))
    }
    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.max_pool_backward(g, x, dy, dx))
    }
    fn upsample2x_forward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.upsample_nearest_forward(x, y, planes, (h, w), 2))
    }
    fn upsample2x_backward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.upsample_nearest_backward(dy, dx, planes, (h, w), 2))
    }
    fn copy_channels(&self, c: &ChannelCopy, src: &DeviceBuffer, dst: &mut DeviceBuffer) {
        self.run(|gpu| gpu.copy_channels(c, src, dst))
    }

    fn head_rows_forward(&self, g: &HeadRows, x: &DeviceBuffer, rows: &mut DeviceBuffer) {
        self.run(|gpu| gpu.head_rows_forward(g, x, rows))
    }
    fn head_rows_backward(
        &self,
        g: &HeadRows,
        rows_grad: &DeviceBuffer,
        x_grad: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.head_rows_backward(g, rows_grad, x_grad))
    }

    fn l2_norm_forward(
        &self,
        g: &L2NormGeom,
        epsilon: f32,
        x: &DeviceBuffer,
        scale: &DeviceBuffer,
        norm: &mut DeviceBuffer,
        y: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.l2_norm_forward(g, epsilon, x, scale, norm, y))
    }
    fn l2_norm_backward(
        &self,
        g: &L2NormGeom,
        x: &DeviceBuffer,
        scale: &DeviceBuffer,
        norm: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        dscale: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.l2_norm_backward(g, x, scale, norm, dy, dx, dscale))
    }
    fn roi_align_forward(
        &self,
        g: &RoiAlignGeom,
        x: &DeviceBuffer,
        rois: &DeviceBuffer,
        roi_batch: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.roi_align_forward(g, x, rois, roi_batch, y))
    }
    fn roi_align_backward(
        &self,
        g: &RoiAlignGeom,
        dy: &DeviceBuffer,
        rois: &DeviceBuffer,
        roi_batch: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.roi_align_backward(g, dy, rois, roi_batch, dx))
    }

    fn fc_forward(
        &self,
        g: &FcGeom,
        act: Activation,
        x: &DeviceBuffer,
        w: &DeviceBuffer,
        bias: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.fc_forward(g, act, x, w, bias, y))
    }
    fn fc_backward_data(
        &self,
        g: &FcGeom,
        dz: &DeviceBuffer,
        w: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.fc_backward_data(g, dz, w, dx))
    }
    fn fc_backward_weight(
        &self,
        g: &FcGeom,
        x: &DeviceBuffer,
        dz: &DeviceBuffer,
        dw: &mut DeviceBuffer,
        dbias: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.fc_backward_weight(g, x, dz, dw, dbias))
    }
    fn global_avg_pool_forward(&self, g: &GlobalPoolGeom, x: &DeviceBuffer, y: &mut DeviceBuffer) {
        self.run(|gpu| gpu.global_avg_pool_forward(g, x, y))
    }
    fn global_avg_pool_backward(
        &self,
        g: &GlobalPoolGeom,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.global_avg_pool_backward(g, dy, dx))
    }

    fn sigmoid_focal_loss(
        &self,
        g: &FocalLossGeom,
        logits: &DeviceBuffer,
        labels: &DeviceBuffer,
        grad: &mut DeviceBuffer,
        losses: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.sigmoid_focal_loss(g, logits, labels, grad, losses))
    }

    fn retina_box_loss(
        &self,
        g: &RetinaBoxLossGeom,
        deltas: &DeviceBuffer,
        targets: &DeviceBuffer,
        weights: &DeviceBuffer,
        grad: &mut DeviceBuffer,
        losses: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.retina_box_loss(g, deltas, targets, weights, grad, losses))
    }

    /// Matching and every anchor's row on the device
    /// (`ops::retinanet_targets`); only the foreground counts come back.
    /// After a failure there are none and the buffers are left as they were.
    fn retinanet_targets(
        &self,
        g: &RetinaTargetsGeom<'_>,
        levels: &mut [RetinaTargetLevel<'_, DeviceBuffer>],
    ) -> Vec<f32> {
        self.run(|gpu| gpu.retinanet_targets(g, levels))
    }

    fn mask_loss(
        &self,
        g: &MaskLossGeom,
        logits: &DeviceBuffer,
        roi_classes: &DeviceBuffer,
        targets: &DeviceBuffer,
        grad: &mut DeviceBuffer,
        losses: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.mask_loss(g, logits, roi_classes, targets, grad, losses))
    }

    fn polygon_masks(
        &self,
        g: &PolygonMaskGeom,
        points: &DeviceBuffer,
        polygons: &DeviceBuffer,
        roi_polygons: &DeviceBuffer,
        masks: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.polygon_masks(g, points, polygons, roi_polygons, masks))
    }

    fn mask_paste(
        &self,
        g: &MaskPasteGeom,
        probs: &DeviceBuffer,
        detections: &DeviceBuffer,
        pixels: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.mask_paste(g, probs, detections, pixels))
    }

    fn sgd_momentum(
        &self,
        step: &SgdStep,
        len: usize,
        param: &mut DeviceBuffer,
        grad: &DeviceBuffer,
        velocity: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.momentum_sgd(step, len, param, grad, velocity))
    }
    fn rmsprop(
        &self,
        step: &RmsPropStep,
        len: usize,
        param: &mut DeviceBuffer,
        grad: &DeviceBuffer,
        mean_square: &mut DeviceBuffer,
        moment: &mut DeviceBuffer,
    ) {
        self.run(|gpu| gpu.rmsprop(step, len, param, grad, mean_square, moment))
    }

    /// Decode and NMS on the device (`ops::yolo`); only the detections are
    /// downloaded.
    fn yolo_detect(
        &self,
        cfg: &YoloConfig,
        heads: &[HeadOutput<'_, DeviceBuffer>],
        image_sizes: &[[u32; 2]],
        nms: &NmsConfig,
    ) -> Vec<Vec<Detection>> {
        let heads: Vec<(&DeviceBuffer, usize, usize)> =
            heads.iter().map(|h| (h.buf, h.height, h.width)).collect();
        self.run(|gpu| gpu.yolo_detect(cfg, &heads, image_sizes, nms))
    }

    /// Decode, softmax and NMS on the device (`ops::ssd`); only the
    /// detections are downloaded.
    fn ssd_detect(
        &self,
        nms: &NmsConfig,
        priors: &DeviceBuffer,
        variances: &DeviceBuffer,
        classes: usize,
        location: &DeviceBuffer,
        confidence: &DeviceBuffer,
        images: usize,
        priors_count: usize,
    ) -> Vec<Vec<Detection>> {
        let shape = [images, priors_count, classes];
        self.run(|gpu| gpu.ssd_detect(nms, priors, variances, location, confidence, shape))
    }

    /// Matching, mining and the losses on the device (`ops::ssd_loss`);
    /// only the loss terms come back. After a failure the loss is 0 and the
    /// gradients are left as they were.
    fn ssd_loss(
        &self,
        cfg: &SsdLossConfig,
        priors: &DeviceBuffer,
        variances: &DeviceBuffer,
        priors_count: usize,
        classes: usize,
        location: &DeviceBuffer,
        confidence: &DeviceBuffer,
        truths: &[ImageTruth],
        grad_location: &mut DeviceBuffer,
        grad_confidence: &mut DeviceBuffer,
    ) -> SsdLoss {
        self.run(|gpu| {
            gpu.ssd_loss(
                cfg,
                priors,
                variances,
                [priors_count, classes],
                location,
                confidence,
                truths,
                grad_location,
                grad_confidence,
            )
        })
    }

    /// The targets go up (each RoI's weighted deltas only), the gradients
    /// are written on the device (`ops::bbox_head_loss`); only the two
    /// sums come back.
    fn bbox_head_loss(
        &self,
        args: &BoxHeadLossArgs<'_>,
        cls_score: &DeviceBuffer,
        bbox_pred: &DeviceBuffer,
        grad_cls_score: &mut DeviceBuffer,
        grad_bbox_pred: &mut DeviceBuffer,
    ) -> BBoxHeadLoss {
        self.run(|gpu| {
            gpu.bbox_head_loss(args, cls_score, bbox_pred, grad_cls_score, grad_bbox_pred)
        })
    }

    /// The ground truth goes up, the targets are drawn and the gradients
    /// written on the device (`ops::rpn_targets`, `ops::rpn_loss`); only
    /// the sampled counts and the two sums come back.
    fn rpn_loss(
        &self,
        g: &RpnTargetsGeom<'_>,
        anchors: &[&DeviceBuffer],
        levels: &[RpnLevelOutput<'_, DeviceBuffer>],
        anchors_per_cell: usize,
        grads: &mut [RpnLevelGrad<'_, DeviceBuffer>],
    ) -> RpnLoss {
        self.run(|gpu| gpu.rpn_loss(g, anchors, levels, anchors_per_cell, grads))
    }

    /// Sorts, decode, NMS on the device (`ops::proposals`); only the
    /// proposals are downloaded. After a failure every image of every
    /// level has none.
    fn generate_proposals(
        &self,
        cfg: &ProposalConfig,
        levels: &[RpnProposalInput<'_, DeviceBuffer>],
        anchors_per_cell: usize,
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Proposals>> {
        self.run(|gpu| {
            gpu.generate_proposals(cfg, levels, anchors_per_cell, im_info)
                .map(Some)
        })
        .unwrap_or_else(|| vec![vec![Proposals::default(); im_info.len()]; levels.len()])
    }

    /// Softmax, decode, NMS on the device (`ops::rcnn_detect`); only the
    /// detections are downloaded. After a failure every image has none.
    fn rcnn_detect(
        &self,
        cfg: &RcnnConfig,
        rois: &BoxHeadRois<'_>,
        cls_score: &DeviceBuffer,
        bbox_pred: &DeviceBuffer,
    ) -> Vec<Vec<Detection>> {
        self.run(|gpu| gpu.rcnn_detect(cfg, rois, cls_score, bbox_pred).map(Some))
            .unwrap_or_else(|| vec![Vec::new(); rois.counts.len()])
    }

    /// Sorts, decode, NMS on the device (`ops::retinanet`); only the
    /// detections are downloaded. After a failure every image has none.
    fn retinanet_detect(
        &self,
        cfg: &RetinaOutputConfig,
        levels: &[RetinaLevelInput<'_, DeviceBuffer>],
        anchors_per_cell: usize,
        classes: usize,
        im_info: &[[f32; 3]],
    ) -> Vec<Vec<Detection>> {
        self.run(|gpu| {
            gpu.retinanet_detect(cfg, levels, anchors_per_cell, classes, im_info)
                .map(Some)
        })
        .unwrap_or_else(|| vec![Vec::new(); im_info.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emulated(memory: usize) -> GpuBackend {
        GpuBackend::new(Gpu::emulated_with_memory(memory).unwrap())
    }

    #[test]
    fn opening_without_a_gpu_is_an_error() {
        if crate::device::probe().is_err() {
            assert!(GpuBackend::open().is_err());
        }
    }

    #[test]
    fn the_first_failure_sticks_and_later_operations_are_skipped() {
        let gpu = emulated(1 << 20);
        let mut a = gpu.alloc(1000);
        gpu.fill(&mut a, 1000, 2.0);
        assert_eq!(gpu.sum(1000, &a), 2000.0);
        assert_eq!(gpu.check(), Ok(()));
        // 2 Mi floats do not fit in 1 MiB: a buffer without memory, no panic.
        let mut big = gpu.alloc(2 << 20);
        assert!(!big.has_memory());
        assert_eq!(
            gpu.check().unwrap_err().to_string(),
            "out of GPU memory: need 8.0 MiB for a buffer of 2097152 floats, 1.0 MiB free"
        );
        // Everything after is a no-op, the first error stays.
        gpu.fill(&mut big, 10, 1.0);
        gpu.fill(&mut a, 1000, 3.0);
        assert_eq!(gpu.sum(1000, &a), 0.0);
        let mut host = vec![0.0; 3];
        gpu.download(&a, &mut host);
        assert_eq!(host, [0.0; 3]);
        assert!(gpu
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("out of GPU memory"));
    }

    /// The methods not covered by the convolution tests, with buffers
    /// longer than the tensors: every output downloaded whole, named.
    fn elementwise_and_norm_ops<B: Backend>(b: &B) -> Vec<(String, Vec<f32>)> {
        use crate::ops::testing::values;
        let buffer = |host: &[f32]| {
            let mut buf = b.alloc(host.len() + 5);
            b.fill(&mut buf, host.len() + 5, -3.0);
            b.upload(host, &mut buf);
            buf
        };
        let read = |buf: &B::Buffer| {
            let mut host = vec![0.0; b.buffer_len(buf)];
            b.download(buf, &mut host);
            host
        };
        let n = 2 * 3 * 20;
        let (x, y0, dy) = (
            buffer(&values(n, 1)),
            buffer(&values(n, 2)),
            buffer(&values(n, 3)),
        );
        let mut out = Vec::new();
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::Relu6,
            Activation::LEAKY_0_1,
        ] {
            let mut y = buffer(&values(n, 4));
            b.activation_forward(act, n, &x, &mut y);
            let mut dx = buffer(&values(n, 5));
            b.activation_backward(act, n, &y, &dy, &mut dx);
            out.push((format!("{act:?} y"), read(&y)));
            out.push((format!("{act:?} dx"), read(&dx)));
        }
        let mut y = buffer(&values(n, 6));
        b.sigmoid_forward(n, &x, &mut y);
        let mut dx = buffer(&values(n, 7));
        b.sigmoid_backward(n, &y, &dy, &mut dx);
        out.push(("sigmoid y".into(), read(&y)));
        out.push(("sigmoid dx".into(), read(&dx)));
        let mut sum = buffer(&values(n, 8));
        b.add(n - 1, &x, &y0, &mut sum);
        b.axpy(n - 2, 0.5, &dy, &mut sum);
        b.scale(n - 3, -2.0, &mut sum);
        out.push(("add axpy scale".into(), read(&sum)));
        let mut copied = buffer(&values(n, 9));
        b.copy(n - 4, &x, &mut copied);
        b.fill(&mut copied, 7, 0.25);
        out.push(("copy fill".into(), read(&copied)));
        let g = BatchNormGeom {
            batch: 2,
            channels: 3,
            spatial: 20,
        };
        let (scale, offset) = (buffer(&values(3, 10)), buffer(&values(3, 11)));
        let (mean, var) = (buffer(&values(3, 12)), buffer(&[0.5, 1.0, 2.0]));
        let mut y = buffer(&values(n, 13));
        b.batch_norm_forward_eval(
            &g,
            Activation::LEAKY_0_1,
            1e-5,
            &x,
            &scale,
            &offset,
            &mean,
            &var,
            &mut y,
        );
        let mut dx = buffer(&values(n, 14));
        b.batch_norm_backward_eval(
            &g,
            Activation::LEAKY_0_1,
            1e-5,
            &y,
            &dy,
            &scale,
            &var,
            &mut dx,
        );
        out.push(("bn eval y".into(), read(&y)));
        out.push(("bn eval dx".into(), read(&dx)));
        b.synchronize();
        assert_eq!(b.check(), Ok(()));
        out
    }

    #[test]
    fn elementwise_and_norm_methods_match_the_cpu_backend() {
        let cpu = elementwise_and_norm_ops(&pulsefocus_core::CpuBackend::new());
        let gpu = elementwise_and_norm_ops(&emulated(64 << 20));
        assert_eq!(cpu.len(), gpu.len());
        for ((name, c), (_, g)) in cpu.iter().zip(&gpu) {
            assert_eq!(c.len(), g.len(), "{name}");
            for (i, (c, g)) in c.iter().zip(g).enumerate() {
                assert!(
                    (c - g).abs() <= 1e-5 * (1.0 + c.abs()),
                    "{name}[{i}]: CPU {c}, GPU {g}"
                );
            }
        }
    }

    #[test]
    fn a_bad_geometry_is_recorded_not_a_panic() {
        let gpu = emulated(1 << 20);
        let (x, w) = (gpu.alloc(16), gpu.alloc(9));
        let mut y = gpu.alloc(16);
        let mut ws = gpu.alloc(0);
        let g = Conv2dGeom {
            batch: 1,
            c_in: 1,
            h_in: 4,
            w_in: 4,
            c_out: 1,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 1,
            stride_w: 1,
            pad_h: 1,
            pad_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        };
        gpu.conv2d_forward(&Conv2dGeom { c_in: 2, ..g }, &x, &w, None, &mut y, &mut ws);
        assert_eq!(
            gpu.check().unwrap_err().to_string(),
            "kernel conv2d_forward: x has 16 elements, needs at least 32"
        );
    }
}
