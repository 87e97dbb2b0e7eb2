//! The core `Backend` trait on the GPU: each method converts the core's
//! geometry to the kernels' (`u32` extents, checked) and calls the matching
//! launch method. The trait's methods are infallible, so a failure here (a
//! driver error, or a geometry beyond the kernels' `u32` indexing) panics
//! with the kernel's message; `GpuBackend::open` is where a missing GPU is a
//! normal error.
use std::sync::Arc;

use pulsefocus_core::backend::{
    Activation, BatchNormGeom, ChannelCopy, Conv2dGeom, PoolGeom, SgdStep,
};
use pulsefocus_core::Backend;
use pulsefocus_gpu_device::conv::ConvGeometry;

use crate::{Act, BnShape, DeviceBuffer, Gpu, GpuError, PoolShape};

/// The GPU as a core `Backend`: a cheap handle to one opened [`Gpu`].
#[derive(Clone)]
pub struct GpuBackend {
    gpu: Arc<Gpu>,
}

impl GpuBackend {
    /// Opens GPU 0 (an error, not a panic, without a driver or a GPU).
    pub fn open() -> Result<GpuBackend, GpuError> {
        Ok(GpuBackend {
            gpu: Arc::new(Gpu::open()?),
        })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

/// Unwraps a launch result: the trait has no error channel.
fn ok<T>(result: Result<T, GpuError>) -> T {
    result.unwrap_or_else(|err| panic!("GPU backend: {err}"))
}

/// A core extent as a kernel's `u32`.
fn small(what: &str, value: usize) -> u32 {
    u32::try_from(value).unwrap_or_else(|_| {
        panic!("GPU backend: {what} = {value} exceeds the kernels' u32 indexing")
    })
}

/// The kernels' geometry for a core convolution.
pub fn conv_geometry(g: &Conv2dGeom) -> ConvGeometry {
    ConvGeometry {
        batch: small("batch", g.batch),
        c_in: small("c_in", g.c_in),
        h: small("h_in", g.h_in),
        w: small("w_in", g.w_in),
        c_out: small("c_out", g.c_out),
        k_h: small("kernel_h", g.kernel_h),
        k_w: small("kernel_w", g.kernel_w),
        stride_h: small("stride_h", g.stride_h),
        stride_w: small("stride_w", g.stride_w),
        pad_h: small("pad_h", g.pad_h),
        pad_w: small("pad_w", g.pad_w),
        dilation_h: small("dilation_h", g.dilation_h),
        dilation_w: small("dilation_w", g.dilation_w),
        groups: small("groups", g.groups),
    }
}

/// The kernels' activation code for a core activation.
pub fn activation(act: Activation) -> Act {
    match act {
        Activation::Identity => Act::IDENTITY,
        Activation::Relu => Act::RELU,
        Activation::Relu6 => Act::RELU6,
        Activation::LeakyRelu(slope) => Act::leaky_relu(slope),
    }
}

fn bn_shape(g: &BatchNormGeom) -> BnShape {
    BnShape {
        batch: small("batch", g.batch),
        channels: small("channels", g.channels),
        plane: small("spatial", g.spatial),
    }
}

fn pool_shape(g: &PoolGeom) -> PoolShape {
    PoolShape {
        planes: small("batch * channels", g.batch * g.channels),
        h: small("h_in", g.h_in),
        w: small("w_in", g.w_in),
        size: small("kernel", g.kernel),
        stride: small("stride", g.stride),
        pad: small("pad", g.pad),
    }
}

impl Backend for GpuBackend {
    type Buffer = DeviceBuffer;

    fn name(&self) -> String {
        format!("cuda:{} ({})", self.gpu.info.ordinal, self.gpu.info.name)
    }

    fn synchronize(&self) {
        ok(self.gpu.synchronize())
    }

    /// What the caching pool held from the driver at its peak (buffers in
    /// use plus cached free ones): the memory a run needs on the device.
    fn peak_device_bytes(&self) -> Option<usize> {
        Some(self.gpu.pool.stats().peak_held_bytes)
    }

    fn alloc(&self, len: usize) -> DeviceBuffer {
        ok(self.gpu.zeros(len))
    }
    fn buffer_len(&self, buf: &DeviceBuffer) -> usize {
        buf.len()
    }
    fn fill(&self, buf: &mut DeviceBuffer, len: usize, value: f32) {
        ok(self.gpu.fill(len, buf, value))
    }
    fn upload(&self, src: &[f32], dst: &mut DeviceBuffer) {
        ok(self.gpu.upload_into(src, dst))
    }
    fn download(&self, src: &DeviceBuffer, dst: &mut [f32]) {
        ok(self.gpu.download_into(src, dst))
    }
    fn copy(&self, len: usize, src: &DeviceBuffer, dst: &mut DeviceBuffer) {
        ok(self.gpu.copy(len, src, dst))
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
        ok(self.gpu.conv2d_forward(&conv_geometry(g), x, w, bias, y))
    }
    fn conv2d_backward_data(
        &self,
        g: &Conv2dGeom,
        dy: &DeviceBuffer,
        w: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        _workspace: &mut DeviceBuffer,
    ) {
        ok(self.gpu.conv2d_backward_data(&conv_geometry(g), dy, w, dx))
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
        let geo = conv_geometry(g);
        ok(self.gpu.conv2d_backward_filter(&geo, x, dy, dw));
        if let Some(dbias) = dbias {
            ok(self
                .gpu
                .channel_sum(dy, dbias, (geo.batch, geo.c_out, geo.out_h() * geo.out_w())));
        }
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
        ok(self.gpu.batch_norm_train_forward(
            bn_shape(g),
            activation(act),
            x,
            scale,
            offset,
            y,
            (saved_mean, saved_inv_std),
            (running_mean, running_var),
            eps,
            momentum,
        ))
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
        ok(self.gpu.batch_norm_eval_forward(
            bn_shape(g),
            activation(act),
            x,
            scale,
            offset,
            (mean, var),
            y,
            eps,
        ))
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
        ok(self.gpu.batch_norm_train_backward(
            bn_shape(g),
            activation(act),
            x,
            y,
            dy,
            scale,
            (saved_mean, saved_inv_std),
            dx,
            dscale,
            doffset,
        ))
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
        ok(self.gpu.batch_norm_eval_backward(
            bn_shape(g),
            activation(act),
            y,
            dy,
            scale,
            var,
            dx,
            eps,
        ))
    }

    fn activation_forward(
        &self,
        act: Activation,
        len: usize,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) {
        ok(self.gpu.activation_forward(activation(act), len, x, y))
    }
    fn activation_backward(
        &self,
        act: Activation,
        len: usize,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        ok(self
            .gpu
            .activation_backward(activation(act), len, y, dy, dx))
    }
    fn sigmoid_forward(&self, len: usize, x: &DeviceBuffer, y: &mut DeviceBuffer) {
        ok(self.gpu.sigmoid_forward(len, x, y))
    }
    fn sigmoid_backward(
        &self,
        len: usize,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        ok(self.gpu.sigmoid_backward(len, y, dy, dx))
    }
    fn add(&self, len: usize, a: &DeviceBuffer, b: &DeviceBuffer, y: &mut DeviceBuffer) {
        ok(self.gpu.add(len, a, b, y))
    }
    fn axpy(&self, len: usize, alpha: f32, x: &DeviceBuffer, y: &mut DeviceBuffer) {
        ok(self.gpu.axpy(len, alpha, x, y))
    }
    fn scale(&self, len: usize, alpha: f32, x: &mut DeviceBuffer) {
        ok(self.gpu.scale(len, alpha, x))
    }
    fn sum(&self, len: usize, x: &DeviceBuffer) -> f64 {
        ok(self.gpu.sum(len, x, false))
    }
    fn sum_squares(&self, len: usize, x: &DeviceBuffer) -> f64 {
        ok(self.gpu.sum(len, x, true))
    }

    fn max_pool_forward(&self, g: &PoolGeom, x: &DeviceBuffer, y: &mut DeviceBuffer) {
        ok(self.gpu.max_pool_forward(pool_shape(g), x, y))
    }
    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        ok(self.gpu.max_pool_backward(pool_shape(g), x, dy, dx))
    }
    fn upsample2x_forward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) {
        ok(self.gpu.upsample_nearest_forward(
            x,
            y,
            small("planes", planes),
            (small("h", h), small("w", w)),
            2,
        ))
    }
    fn upsample2x_backward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) {
        ok(self.gpu.upsample_nearest_backward(
            dy,
            dx,
            small("planes", planes),
            (small("h", h), small("w", w)),
            2,
        ))
    }
    fn copy_channels(&self, c: &ChannelCopy, src: &DeviceBuffer, dst: &mut DeviceBuffer) {
        ok(self.gpu.copy_channels(
            src,
            small("src_channels", c.src_channels),
            small("src_first", c.src_first),
            dst,
            small("dst_channels", c.dst_channels),
            small("dst_first", c.dst_first),
            small("count", c.count),
            small("batch", c.batch),
            small("spatial", c.spatial),
        ))
    }

    fn sgd_momentum(
        &self,
        step: &SgdStep,
        len: usize,
        param: &mut DeviceBuffer,
        grad: &DeviceBuffer,
        velocity: &mut DeviceBuffer,
    ) {
        ok(self.gpu.momentum_sgd(
            len,
            param,
            grad,
            velocity,
            step.lr,
            step.momentum,
            step.weight_decay,
        ))
    }

    fn yolo_detect(
        &self,
        cfg: &pulsefocus_core::yolo::YoloConfig,
        heads: &[pulsefocus_core::backend::HeadOutput<'_, DeviceBuffer>],
        image_sizes: &[[u32; 2]],
        nms: &pulsefocus_core::yolo::NmsConfig,
    ) -> Vec<Vec<pulsefocus_core::yolo::Detection>> {
        // Placeholder until the device decode + NMS launch code lands: the
        // heads through the CPU's code.
        let host: Vec<Vec<f32>> = heads
            .iter()
            .map(|h| {
                let mut v = vec![0.0; self.buffer_len(h.buf)];
                self.download(h.buf, &mut v);
                v
            })
            .collect();
        let cpu_heads: Vec<pulsefocus_core::backend::HeadOutput<Vec<f32>>> = heads
            .iter()
            .zip(&host)
            .map(|(h, buf)| pulsefocus_core::backend::HeadOutput {
                buf,
                height: h.height,
                width: h.width,
            })
            .collect();
        pulsefocus_core::CpuBackend.yolo_detect(cfg, &cpu_heads, image_sizes, nms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_and_activation_conversions() {
        let g = Conv2dGeom {
            batch: 2,
            c_in: 8,
            h_in: 9,
            w_in: 7,
            c_out: 4,
            kernel_h: 3,
            kernel_w: 1,
            stride_h: 2,
            stride_w: 1,
            pad_h: 1,
            pad_w: 0,
            dilation_h: 2,
            dilation_w: 1,
            groups: 2,
        };
        let k = conv_geometry(&g);
        assert_eq!(
            (k.out_h() as usize, k.out_w() as usize),
            (g.h_out(), g.w_out())
        );
        assert_eq!(k.filter_len() as usize * k.c_out as usize, g.weight_len());
        assert_eq!(activation(Activation::LeakyRelu(0.1)), Act::leaky_relu(0.1));
        assert_eq!(activation(Activation::Relu6), Act::RELU6);
        for x in [-2.0f32, -0.5, 0.0, 0.5, 3.0, 7.0] {
            for act in [
                Activation::Identity,
                Activation::Relu,
                Activation::Relu6,
                Activation::LEAKY_0_1,
            ] {
                let code = activation(act);
                let y = pulsefocus_gpu_device::elementwise::activate(code.kind, code.slope, x);
                assert_eq!(y, act.forward(x), "{act:?} at {x}");
                assert_eq!(
                    pulsefocus_gpu_device::elementwise::derivative_from_output(
                        code.kind, code.slope, y
                    ),
                    act.derivative_from_output(y),
                    "{act:?} derivative at {x}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "exceeds the kernels' u32 indexing")]
    fn oversized_extents_are_refused_by_name() {
        small("batch", usize::MAX);
    }

    #[test]
    fn opening_without_a_gpu_is_an_error() {
        if crate::device::probe().is_err() {
            assert!(GpuBackend::open().is_err());
        }
    }
}
