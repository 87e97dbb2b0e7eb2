//! Launch methods on [`Gpu`], one per kernel (plus the multi-launch NMS and
//! sum): each checks its arguments through [`plan`], then queues the kernel
//! on the GPU's stream. Nothing waits for the GPU unless it downloads.
use cudarc::driver::{LaunchConfig, PushKernelArg};
use pulsefocus_gpu_device::conv::ConvGeometry;
use pulsefocus_gpu_device::reduce::REDUCE_THREADS;

use crate::plan::{self, expect_len, index_count, ConvKind, LaunchShape};
use crate::pool::DeviceBuffer;
use crate::{Gpu, GpuError};

fn config(shape: LaunchShape) -> LaunchConfig {
    LaunchConfig {
        grid_dim: shape.grid,
        block_dim: shape.block,
        shared_mem_bytes: 0,
    }
}

/// Queues kernel `$name` with `$shape` and the arguments in order (buffers as
/// `buf.slice()` / `buf.slice_mut()`, scalars by reference).
macro_rules! launch {
    ($gpu:expr, $name:literal, $shape:expr, $($arg:expr),* $(,)?) => {{
        let mut builder = $gpu.stream.launch_builder($gpu.function($name));
        $( builder.arg($arg); )*
        // SAFETY: the arguments match the kernel's signature in
        // gpu-kernels/device and `plan` checked their extents.
        unsafe { builder.launch(config($shape)) }
            .map(|_| ())
            .map_err(|source| GpuError::Launch { kernel: $name, source })
    }};
}

/// The null device pointer, for optional arguments.
const NULL: u64 = 0;

impl Gpu {
    /// A zero-filled pooled buffer.
    pub fn zeros(&self, len: usize) -> Result<DeviceBuffer, GpuError> {
        let mut buffer = self.pool.alloc(len).map_err(GpuError::Memory)?;
        self.fill(&mut buffer, 0.0)?;
        Ok(buffer)
    }

    pub fn fill(&self, x: &mut DeviceBuffer, value: f32) -> Result<(), GpuError> {
        let n = index_count("fill", "x", x.len())?;
        launch!(
            self,
            "fill",
            plan::elementwise(n),
            x.slice_mut(),
            &n,
            &value
        )
    }

    pub fn leaky_relu_forward(
        &self,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
        slope: f32,
    ) -> Result<(), GpuError> {
        let n = index_count("leaky_relu_forward", "x", x.len())?;
        expect_len("leaky_relu_forward", "y", y.len(), x.len())?;
        launch!(
            self,
            "leaky_relu_forward",
            plan::elementwise(n),
            x.slice(),
            y.slice_mut(),
            &n,
            &slope
        )
    }

    pub fn leaky_relu_backward(
        &self,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        slope: f32,
    ) -> Result<(), GpuError> {
        let n = index_count("leaky_relu_backward", "x", x.len())?;
        expect_len("leaky_relu_backward", "dy", dy.len(), x.len())?;
        expect_len("leaky_relu_backward", "dx", dx.len(), x.len())?;
        launch!(
            self,
            "leaky_relu_backward",
            plan::elementwise(n),
            x.slice(),
            dy.slice(),
            dx.slice_mut(),
            &n,
            &slope
        )
    }

    pub fn sigmoid_forward(&self, x: &DeviceBuffer, y: &mut DeviceBuffer) -> Result<(), GpuError> {
        let n = index_count("sigmoid_forward", "x", x.len())?;
        expect_len("sigmoid_forward", "y", y.len(), x.len())?;
        launch!(
            self,
            "sigmoid_forward",
            plan::elementwise(n),
            x.slice(),
            y.slice_mut(),
            &n
        )
    }

    pub fn sigmoid_backward(
        &self,
        y: &DeviceBuffer,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let n = index_count("sigmoid_backward", "y", y.len())?;
        expect_len("sigmoid_backward", "dy", dy.len(), y.len())?;
        expect_len("sigmoid_backward", "dx", dx.len(), y.len())?;
        launch!(
            self,
            "sigmoid_backward",
            plan::elementwise(n),
            y.slice(),
            dy.slice(),
            dx.slice_mut(),
            &n
        )
    }

    pub fn add(
        &self,
        a: &DeviceBuffer,
        b: &DeviceBuffer,
        out: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let n = index_count("add", "a", a.len())?;
        expect_len("add", "b", b.len(), a.len())?;
        expect_len("add", "out", out.len(), a.len())?;
        launch!(
            self,
            "add",
            plan::elementwise(n),
            a.slice(),
            b.slice(),
            out.slice_mut(),
            &n
        )
    }

    /// `y += alpha * x`.
    pub fn axpy(&self, alpha: f32, x: &DeviceBuffer, y: &mut DeviceBuffer) -> Result<(), GpuError> {
        let n = index_count("axpy", "x", x.len())?;
        expect_len("axpy", "y", y.len(), x.len())?;
        launch!(
            self,
            "axpy",
            plan::elementwise(n),
            &alpha,
            x.slice(),
            y.slice_mut(),
            &n
        )
    }

    pub fn momentum_sgd(
        &self,
        param: &mut DeviceBuffer,
        grad: &DeviceBuffer,
        velocity: &mut DeviceBuffer,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<(), GpuError> {
        let n = index_count("momentum_sgd", "param", param.len())?;
        expect_len("momentum_sgd", "grad", grad.len(), param.len())?;
        expect_len("momentum_sgd", "velocity", velocity.len(), param.len())?;
        launch!(
            self,
            "momentum_sgd",
            plan::elementwise(n),
            param.slice_mut(),
            grad.slice(),
            velocity.slice_mut(),
            &n,
            &lr,
            &momentum,
            &weight_decay
        )
    }

    /// `C = alpha A B + beta C` with strided operands (see the device kernel).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        m: u32,
        n: u32,
        k: u32,
        alpha: f32,
        a: &DeviceBuffer,
        a_strides: (u32, u32),
        b: &DeviceBuffer,
        b_strides: (u32, u32),
        beta: f32,
        c: &mut DeviceBuffer,
        ldc: u32,
    ) -> Result<(), GpuError> {
        plan::gemm_operand("A", a.len(), m, k, a_strides.0, a_strides.1)?;
        plan::gemm_operand("B", b.len(), k, n, b_strides.0, b_strides.1)?;
        plan::gemm_operand("C", c.len(), m, n, ldc, 1)?;
        launch!(
            self,
            "gemm",
            plan::tiled(m, n, 1),
            &m,
            &n,
            &k,
            &alpha,
            a.slice(),
            &a_strides.0,
            &a_strides.1,
            b.slice(),
            &b_strides.0,
            &b_strides.1,
            &beta,
            c.slice_mut(),
            &ldc
        )
    }

    /// `y = conv(x, weight) + bias`; depthwise geometries take the direct kernel.
    pub fn conv2d_forward(
        &self,
        geo: &ConvGeometry,
        x: &DeviceBuffer,
        weight: &DeviceBuffer,
        bias: Option<&DeviceBuffer>,
        y: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "conv2d_forward";
        let (kind, lens) = plan::conv(NAME, geo)?;
        expect_len(NAME, "x", x.len(), lens.x)?;
        expect_len(NAME, "weight", weight.len(), lens.weight)?;
        expect_len(NAME, "y", y.len(), lens.y)?;
        let g = geo;
        let shape = plan::conv_forward_shape(kind, geo);
        match (kind, bias) {
            (ConvKind::Tiled, Some(bias)) => {
                expect_len(NAME, "bias", bias.len(), g.c_out as usize)?;
                launch!(
                    self,
                    "conv2d_forward",
                    shape,
                    x.slice(),
                    weight.slice(),
                    bias.slice(),
                    y.slice_mut(),
                    &g.batch,
                    &g.c_in,
                    &g.h,
                    &g.w,
                    &g.c_out,
                    &g.k_h,
                    &g.k_w,
                    &g.stride,
                    &g.pad,
                    &g.groups
                )
            }
            (ConvKind::Tiled, None) => launch!(
                self,
                "conv2d_forward",
                shape,
                x.slice(),
                weight.slice(),
                &NULL,
                y.slice_mut(),
                &g.batch,
                &g.c_in,
                &g.h,
                &g.w,
                &g.c_out,
                &g.k_h,
                &g.k_w,
                &g.stride,
                &g.pad,
                &g.groups
            ),
            (ConvKind::Depthwise, None) => launch!(
                self,
                "depthwise_conv2d_forward",
                shape,
                x.slice(),
                weight.slice(),
                y.slice_mut(),
                &g.batch,
                &g.c_in,
                &g.h,
                &g.w,
                &g.k_h,
                &g.k_w,
                &g.stride,
                &g.pad
            ),
            (ConvKind::Depthwise, Some(_)) => Err(plan::PlanError {
                kernel: "depthwise_conv2d_forward",
                message: "takes no bias (MobileNet's depthwise convolutions have none)".into(),
            }
            .into()),
        }
    }

    pub fn conv2d_backward_data(
        &self,
        geo: &ConvGeometry,
        dy: &DeviceBuffer,
        weight: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "conv2d_backward_data";
        let (kind, lens) = plan::conv(NAME, geo)?;
        expect_len(NAME, "dy", dy.len(), lens.y)?;
        expect_len(NAME, "weight", weight.len(), lens.weight)?;
        expect_len(NAME, "dx", dx.len(), lens.x)?;
        let g = geo;
        let shape = plan::conv_backward_data_shape(kind, geo);
        match kind {
            ConvKind::Tiled => launch!(
                self,
                "conv2d_backward_data",
                shape,
                dy.slice(),
                weight.slice(),
                dx.slice_mut(),
                &g.batch,
                &g.c_in,
                &g.h,
                &g.w,
                &g.c_out,
                &g.k_h,
                &g.k_w,
                &g.stride,
                &g.pad,
                &g.groups
            ),
            ConvKind::Depthwise => launch!(
                self,
                "depthwise_conv2d_backward_data",
                shape,
                dy.slice(),
                weight.slice(),
                dx.slice_mut(),
                &g.batch,
                &g.c_in,
                &g.h,
                &g.w,
                &g.k_h,
                &g.k_w,
                &g.stride,
                &g.pad
            ),
        }
    }

    /// `dweight` is overwritten (accumulate with `axpy` if needed).
    pub fn conv2d_backward_filter(
        &self,
        geo: &ConvGeometry,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        dweight: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "conv2d_backward_filter";
        let (kind, lens) = plan::conv(NAME, geo)?;
        expect_len(NAME, "x", x.len(), lens.x)?;
        expect_len(NAME, "dy", dy.len(), lens.y)?;
        expect_len(NAME, "dweight", dweight.len(), lens.weight)?;
        let g = geo;
        let shape = plan::conv_backward_filter_shape(kind, geo);
        match kind {
            ConvKind::Tiled => launch!(
                self,
                "conv2d_backward_filter",
                shape,
                x.slice(),
                dy.slice(),
                dweight.slice_mut(),
                &g.batch,
                &g.c_in,
                &g.h,
                &g.w,
                &g.c_out,
                &g.k_h,
                &g.k_w,
                &g.stride,
                &g.pad,
                &g.groups
            ),
            ConvKind::Depthwise => launch!(
                self,
                "depthwise_conv2d_backward_filter",
                shape,
                x.slice(),
                dy.slice(),
                dweight.slice_mut(),
                &g.batch,
                &g.c_in,
                &g.h,
                &g.w,
                &g.k_h,
                &g.k_w,
                &g.stride,
                &g.pad
            ),
        }
    }

    /// Per-channel sum over N, H, W (the bias gradient).
    pub fn channel_sum(
        &self,
        x: &DeviceBuffer,
        out: &mut DeviceBuffer,
        nchw: (u32, u32, u32),
    ) -> Result<(), GpuError> {
        let (batch, channels, plane) = nchw;
        expect_len(
            "channel_sum",
            "x",
            x.len(),
            (batch * channels * plane) as usize,
        )?;
        expect_len("channel_sum", "out", out.len(), channels as usize)?;
        launch!(
            self,
            "channel_sum",
            plan::block_per_item("channel_sum", channels)?,
            x.slice(),
            out.slice_mut(),
            &batch,
            &channels,
            &plane
        )
    }

    /// Training-mode batch norm forward; `saved` = (mean, inv_std) for backward,
    /// `running` = (mean, var) updated in place.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_train_forward(
        &self,
        x: &DeviceBuffer,
        gamma: &DeviceBuffer,
        beta: &DeviceBuffer,
        y: &mut DeviceBuffer,
        saved: (&mut DeviceBuffer, &mut DeviceBuffer),
        running: (&mut DeviceBuffer, &mut DeviceBuffer),
        nchw: (u32, u32, u32),
        epsilon: f32,
        momentum: f32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "batch_norm_train_forward";
        let (batch, channels, plane) = nchw;
        let len = index_count(
            NAME,
            "x",
            batch as usize * channels as usize * plane as usize,
        )?;
        expect_len(NAME, "x", x.len(), len as usize)?;
        expect_len(NAME, "y", y.len(), len as usize)?;
        for (arg, got) in [
            ("gamma", gamma.len()),
            ("beta", beta.len()),
            ("saved mean", saved.0.len()),
            ("saved inv_std", saved.1.len()),
            ("running mean", running.0.len()),
            ("running var", running.1.len()),
        ] {
            expect_len(NAME, arg, got, channels as usize)?;
        }
        launch!(
            self,
            "batch_norm_train_forward",
            plan::block_per_item(NAME, channels)?,
            x.slice(),
            gamma.slice(),
            beta.slice(),
            y.slice_mut(),
            saved.0.slice_mut(),
            saved.1.slice_mut(),
            running.0.slice_mut(),
            running.1.slice_mut(),
            &batch,
            &channels,
            &plane,
            &epsilon,
            &momentum
        )
    }

    /// Training-mode batch norm backward: `dx`, and `dgamma`/`dbeta` overwritten.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_train_backward(
        &self,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        gamma: &DeviceBuffer,
        saved: (&DeviceBuffer, &DeviceBuffer),
        dx: &mut DeviceBuffer,
        dgamma: &mut DeviceBuffer,
        dbeta: &mut DeviceBuffer,
        nchw: (u32, u32, u32),
    ) -> Result<(), GpuError> {
        const NAME: &str = "batch_norm_train_backward";
        let (batch, channels, plane) = nchw;
        let len = batch as usize * channels as usize * plane as usize;
        for (arg, got) in [("x", x.len()), ("dy", dy.len()), ("dx", dx.len())] {
            expect_len(NAME, arg, got, len)?;
        }
        for (arg, got) in [
            ("gamma", gamma.len()),
            ("saved mean", saved.0.len()),
            ("saved inv_std", saved.1.len()),
            ("dgamma", dgamma.len()),
            ("dbeta", dbeta.len()),
        ] {
            expect_len(NAME, arg, got, channels as usize)?;
        }
        launch!(
            self,
            "batch_norm_train_backward",
            plan::block_per_item(NAME, channels)?,
            x.slice(),
            dy.slice(),
            gamma.slice(),
            saved.0.slice(),
            saved.1.slice(),
            dx.slice_mut(),
            dgamma.slice_mut(),
            dbeta.slice_mut(),
            &batch,
            &channels,
            &plane
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_eval_forward(
        &self,
        x: &DeviceBuffer,
        gamma: &DeviceBuffer,
        beta: &DeviceBuffer,
        running: (&DeviceBuffer, &DeviceBuffer),
        y: &mut DeviceBuffer,
        nchw: (u32, u32, u32),
        epsilon: f32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "batch_norm_eval_forward";
        let (batch, channels, plane) = nchw;
        let n = index_count(
            NAME,
            "x",
            batch as usize * channels as usize * plane as usize,
        )?;
        expect_len(NAME, "x", x.len(), n as usize)?;
        expect_len(NAME, "y", y.len(), n as usize)?;
        for (arg, got) in [
            ("gamma", gamma.len()),
            ("beta", beta.len()),
            ("running mean", running.0.len()),
            ("running var", running.1.len()),
        ] {
            expect_len(NAME, arg, got, channels as usize)?;
        }
        launch!(
            self,
            "batch_norm_eval_forward",
            plan::elementwise(n),
            x.slice(),
            gamma.slice(),
            beta.slice(),
            running.0.slice(),
            running.1.slice(),
            y.slice_mut(),
            &batch,
            &channels,
            &plane,
            &epsilon
        )
    }

    /// Nearest upsampling of `planes` = N*C planes of `h x w` by `factor`.
    pub fn upsample_nearest_forward(
        &self,
        x: &DeviceBuffer,
        y: &mut DeviceBuffer,
        planes: u32,
        hw: (u32, u32),
        factor: u32,
    ) -> Result<(), GpuError> {
        let (h, w) = hw;
        expect_len(
            "upsample_nearest_forward",
            "x",
            x.len(),
            (planes * h * w) as usize,
        )?;
        let n = index_count(
            "upsample_nearest_forward",
            "y",
            (planes * h * w) as usize * (factor * factor) as usize,
        )?;
        expect_len("upsample_nearest_forward", "y", y.len(), n as usize)?;
        launch!(
            self,
            "upsample_nearest_forward",
            plan::elementwise(n),
            x.slice(),
            y.slice_mut(),
            &planes,
            &h,
            &w,
            &factor
        )
    }

    pub fn upsample_nearest_backward(
        &self,
        dy: &DeviceBuffer,
        dx: &mut DeviceBuffer,
        planes: u32,
        hw: (u32, u32),
        factor: u32,
    ) -> Result<(), GpuError> {
        let (h, w) = hw;
        let n = index_count("upsample_nearest_backward", "dx", (planes * h * w) as usize)?;
        expect_len("upsample_nearest_backward", "dx", dx.len(), n as usize)?;
        expect_len(
            "upsample_nearest_backward",
            "dy",
            dy.len(),
            n as usize * (factor * factor) as usize,
        )?;
        launch!(
            self,
            "upsample_nearest_backward",
            plan::elementwise(n),
            dy.slice(),
            dx.slice_mut(),
            &planes,
            &h,
            &w,
            &factor
        )
    }

    /// Copies `count` channels (`src` channel `src_first..` to `dst` channel
    /// `dst_first..`) for each of `batch` images of `plane` values per channel:
    /// concat forward (into the output) and backward (out of its gradient).
    #[allow(clippy::too_many_arguments)]
    pub fn copy_channels(
        &self,
        src: &DeviceBuffer,
        src_channels: u32,
        src_first: u32,
        dst: &mut DeviceBuffer,
        dst_channels: u32,
        dst_first: u32,
        count: u32,
        batch: u32,
        plane: u32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "copy_channels";
        if src_first + count > src_channels || dst_first + count > dst_channels {
            return Err(plan::PlanError { kernel: NAME, message: format!("channels {src_first}+{count} of {src_channels} -> {dst_first}+{count} of {dst_channels} out of range") }.into());
        }
        expect_len(
            NAME,
            "src",
            src.len(),
            (batch * src_channels * plane) as usize,
        )?;
        expect_len(
            NAME,
            "dst",
            dst.len(),
            (batch * dst_channels * plane) as usize,
        )?;
        let n = index_count(NAME, "copy", (batch * count * plane) as usize)?;
        launch!(
            self,
            "copy_channels",
            plan::elementwise(n),
            src.slice(),
            &src_channels,
            &src_first,
            dst.slice_mut(),
            &dst_channels,
            &dst_first,
            &count,
            &batch,
            &plane
        )
    }

    /// The sum of all elements (two launches; waits for the result).
    pub fn sum(&self, x: &DeviceBuffer) -> Result<f32, GpuError> {
        let n = index_count("sum_blocks", "x", x.len())?;
        let blocks = n.div_ceil(REDUCE_THREADS).clamp(1, 1024);
        let mut partial = self.pool.alloc(blocks as usize).map_err(GpuError::Memory)?;
        let mut total = self.pool.alloc(1).map_err(GpuError::Memory)?;
        let shape = |b| LaunchShape {
            grid: (b, 1, 1),
            block: (REDUCE_THREADS, 1, 1),
        };
        launch!(
            self,
            "sum_blocks",
            shape(blocks),
            x.slice(),
            &n,
            partial.slice_mut()
        )?;
        launch!(
            self,
            "sum_blocks",
            shape(1),
            partial.slice(),
            &blocks,
            total.slice_mut()
        )?;
        Ok(self.pool.download(&total).map_err(GpuError::Memory)?[0])
    }

    /// Per-element sigmoid cross-entropy loss and gradient.
    pub fn sigmoid_cross_entropy(
        &self,
        logits: &DeviceBuffer,
        target: &DeviceBuffer,
        weight: &DeviceBuffer,
        loss: &mut DeviceBuffer,
        grad: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let n = index_count("sigmoid_cross_entropy", "logits", logits.len())?;
        for (arg, got) in [
            ("target", target.len()),
            ("weight", weight.len()),
            ("loss", loss.len()),
            ("grad", grad.len()),
        ] {
            expect_len("sigmoid_cross_entropy", arg, got, n as usize)?;
        }
        launch!(
            self,
            "sigmoid_cross_entropy",
            plan::elementwise(n),
            logits.slice(),
            target.slice(),
            weight.slice(),
            loss.slice_mut(),
            grad.slice_mut(),
            &n
        )
    }

    /// Per-element L1 loss and gradient.
    pub fn l1_loss(
        &self,
        input: &DeviceBuffer,
        target: &DeviceBuffer,
        weight: &DeviceBuffer,
        loss: &mut DeviceBuffer,
        grad: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        let n = index_count("l1_loss", "input", input.len())?;
        for (arg, got) in [
            ("target", target.len()),
            ("weight", weight.len()),
            ("loss", loss.len()),
            ("grad", grad.len()),
        ] {
            expect_len("l1_loss", arg, got, n as usize)?;
        }
        launch!(
            self,
            "l1_loss",
            plan::elementwise(n),
            input.slice(),
            target.slice(),
            weight.slice(),
            loss.slice_mut(),
            grad.slice_mut(),
            &n
        )
    }

    /// Paddle `yolo_box` for one head level (see the device kernel):
    /// `boxes [N, 3*H*W, 4]` in image pixels, `scores [N, 3*H*W, classes]`.
    #[allow(clippy::too_many_arguments)]
    pub fn yolo_decode(
        &self,
        level: &YoloLevel,
        x: &DeviceBuffer,
        image_size: &DeviceBuffer,
        boxes: &mut DeviceBuffer,
        scores: &mut DeviceBuffer,
        conf_thresh: f32,
        clip: bool,
    ) -> Result<(), GpuError> {
        const NAME: &str = "yolo_decode";
        let l = level;
        let cells = index_count(
            NAME,
            "boxes",
            l.batch as usize * 3 * l.grid_h as usize * l.grid_w as usize,
        )?;
        expect_len(
            NAME,
            "x",
            x.len(),
            cells as usize * (5 + l.classes as usize),
        )?;
        expect_len(NAME, "image_size", image_size.len(), 2 * l.batch as usize)?;
        expect_len(NAME, "boxes", boxes.len(), 4 * cells as usize)?;
        expect_len(
            NAME,
            "scores",
            scores.len(),
            l.classes as usize * cells as usize,
        )?;
        let a = l.anchors;
        let clip = clip as u32;
        launch!(
            self,
            "yolo_decode",
            plan::elementwise(cells),
            x.slice(),
            image_size.slice(),
            boxes.slice_mut(),
            scores.slice_mut(),
            &l.batch,
            &l.classes,
            &l.grid_h,
            &l.grid_w,
            &l.downsample,
            &a[0],
            &a[1],
            &a[2],
            &a[3],
            &a[4],
            &a[5],
            &conf_thresh,
            &l.scale_x_y,
            &clip
        )
    }

    /// The YOLOv3 objectness ignore mask for one level: `negative [N, 3, H, W]`
    /// against `gt [N, max_boxes, 4]` (normalised cx, cy, w, h).
    pub fn yolo_ignore_mask(
        &self,
        level: &YoloLevel,
        x: &DeviceBuffer,
        gt: &DeviceBuffer,
        max_boxes: u32,
        negative: &mut DeviceBuffer,
        ignore_thresh: f32,
    ) -> Result<(), GpuError> {
        const NAME: &str = "yolo_ignore_mask";
        let l = level;
        let cells = index_count(
            NAME,
            "negative",
            l.batch as usize * 3 * l.grid_h as usize * l.grid_w as usize,
        )?;
        expect_len(
            NAME,
            "x",
            x.len(),
            cells as usize * (5 + l.classes as usize),
        )?;
        expect_len(NAME, "gt", gt.len(), (l.batch * max_boxes * 4) as usize)?;
        expect_len(NAME, "negative", negative.len(), cells as usize)?;
        let a = l.anchors;
        launch!(
            self,
            "yolo_ignore_mask",
            plan::elementwise(cells),
            x.slice(),
            gt.slice(),
            negative.slice_mut(),
            &l.batch,
            &l.classes,
            &l.grid_h,
            &l.grid_w,
            &l.downsample,
            &max_boxes,
            &a[0],
            &a[1],
            &a[2],
            &a[3],
            &a[4],
            &a[5],
            &ignore_thresh,
            &l.scale_x_y
        )
    }

    /// Class-aware NMS of one image on the device: candidates are the
    /// (box, class) entries of `scores [boxes, classes]` above
    /// `options.score_thresh`, best `top_k` first; returns the kept entries'
    /// indices into `scores`, best first, at most `keep_top_k`.
    pub fn nms(
        &self,
        boxes: &DeviceBuffer,
        scores: &DeviceBuffer,
        classes: u32,
        options: &NmsOptions,
    ) -> Result<Vec<u32>, GpuError> {
        let o = options;
        let count = index_count("nms", "scores", scores.len())?;
        expect_len(
            "nms",
            "boxes",
            boxes.len(),
            4 * (scores.len() / classes.max(1) as usize),
        )?;
        let nms_plan = plan::nms(scores.len(), o.top_k)?;
        let padded = nms_plan.padded;
        let memory = GpuError::Memory;
        let mut keys = self.pool.alloc(padded as usize).map_err(memory)?;
        let mut order = unsafe { self.stream.alloc::<u32>(padded as usize) }.map_err(memory)?;
        launch!(
            self,
            "nms_sort_keys",
            plan::elementwise(padded),
            scores.slice(),
            &count,
            &padded,
            &o.score_thresh,
            keys.slice_mut(),
            &mut order
        )?;
        for (j, k) in plan::bitonic_stages(padded) {
            launch!(
                self,
                "bitonic_sort_step",
                plan::elementwise(padded / 2),
                keys.slice_mut(),
                &mut order,
                &padded,
                &j,
                &k
            )?;
        }
        // How many of the first top_k passed the threshold (sorted, so a prefix).
        let sorted = self.pool.download(&keys).map_err(memory)?;
        let candidates = sorted
            .iter()
            .take(o.top_k as usize)
            .take_while(|s| **s > f32::NEG_INFINITY)
            .count() as u32;
        if candidates == 0 {
            return Ok(Vec::new());
        }
        let mut gathered = self.pool.alloc(4 * candidates as usize).map_err(memory)?;
        launch!(
            self,
            "nms_gather_boxes",
            plan::elementwise(candidates),
            boxes.slice(),
            &order,
            &candidates,
            &classes,
            &o.class_offset,
            gathered.slice_mut()
        )?;
        let col_blocks = candidates.div_ceil(pulsefocus_gpu_device::nms::NMS_BLOCK);
        let mut mask = unsafe { self.stream.alloc::<u64>((candidates * col_blocks) as usize) }
            .map_err(memory)?;
        launch!(
            self,
            "nms_mask",
            plan::nms_mask_shape(candidates),
            gathered.slice(),
            &candidates,
            &o.iou_thresh,
            &o.pixel_offset,
            &mut mask
        )?;
        let mut keep =
            unsafe { self.stream.alloc::<u32>(o.keep_top_k.max(1) as usize) }.map_err(memory)?;
        let mut kept = self.stream.alloc_zeros::<u32>(1).map_err(memory)?;
        launch!(
            self,
            "nms_reduce",
            plan::NMS_REDUCE_SHAPE,
            &mask,
            &candidates,
            &o.keep_top_k,
            &mut keep,
            &mut kept
        )?;
        let kept = self.stream.clone_dtoh(&kept).map_err(memory)?[0] as usize;
        let keep = self.stream.clone_dtoh(&keep).map_err(memory)?;
        let order = self.stream.clone_dtoh(&order).map_err(memory)?;
        Ok(keep[..kept]
            .iter()
            .map(|&rank| order[rank as usize])
            .collect())
    }
}

/// One YOLOv3 head level.
#[derive(Clone, Copy, Debug)]
pub struct YoloLevel {
    pub batch: u32,
    pub classes: u32,
    pub grid_h: u32,
    pub grid_w: u32,
    /// Stride of this level in input pixels (32, 16, 8).
    pub downsample: u32,
    /// The level's three anchors as (w, h) pairs, in input pixels.
    pub anchors: [f32; 6],
    pub scale_x_y: f32,
}

/// Paddle `multiclass_nms` settings (YOLOv3: score 0.01, top_k 1000, keep 100, IoU 0.45).
#[derive(Clone, Copy, Debug)]
pub struct NmsOptions {
    pub score_thresh: f32,
    pub iou_thresh: f32,
    pub top_k: u32,
    pub keep_top_k: u32,
    /// 1 for Paddle's `normalized: false` (pixel boxes, +1 in widths), else 0.
    pub pixel_offset: f32,
    /// Added per class index to the coordinates so classes never overlap:
    /// more than the largest coordinate.
    pub class_offset: f32,
}
