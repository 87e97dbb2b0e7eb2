//! 2-D convolution over NCHW as implicit GEMM on the shared [`tile`] engine:
//! the im2col matrix is never built, its entries are gathered from the input
//! as the tile is staged. Forward, backward-data and backward-filter side by
//! side; depthwise convolution (groups == channels, MobileNet) has direct
//! kernels, since its per-group GEMM is too thin to tile.
//!
//! Weights are `[c_out, c_in / groups, k_h, k_w]`; stride, padding (on both
//! sides) and dilation per axis, as Paddle's conv2d. Tiled kernels: grid
//! `(tile::grid_for(rows, cols), groups)`, block `tile::THREADS`, with
//! rows/cols as named per kernel. Every kernel takes the geometry as the same
//! 14 scalars (or 12 for depthwise: no c_out, no groups), in field order;
//! the backward-data kernels then an `accumulate` flag.
use crate::reduce::{block_sum, REDUCE_THREADS};
use crate::{grid_stride, kernel, shared_array, tile};

/// `*at = v`, or `*at += v` when `accumulate` is not 0 (a backward-data
/// kernel adding a second conv's input gradient into the first's).
#[inline(always)]
unsafe fn store_or_add(at: *mut f32, v: f32, accumulate: u32) {
    *at = if accumulate != 0 { *at + v } else { v };
}

/// One convolution's geometry, with the index arithmetic the kernels share.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "nvptx64"), derive(Debug))]
pub struct ConvGeometry {
    pub batch: u32,
    pub c_in: u32,
    pub h: u32,
    pub w: u32,
    pub c_out: u32,
    pub k_h: u32,
    pub k_w: u32,
    pub stride_h: u32,
    pub stride_w: u32,
    pub pad_h: u32,
    pub pad_w: u32,
    pub dilation_h: u32,
    pub dilation_w: u32,
    pub groups: u32,
}

impl ConvGeometry {
    #[inline(always)]
    pub fn out_h(&self) -> u32 {
        (self.h + 2 * self.pad_h - self.dilation_h * (self.k_h - 1) - 1) / self.stride_h + 1
    }
    #[inline(always)]
    pub fn out_w(&self) -> u32 {
        (self.w + 2 * self.pad_w - self.dilation_w * (self.k_w - 1) - 1) / self.stride_w + 1
    }
    /// Input channels per group.
    #[inline(always)]
    pub fn cin_g(&self) -> u32 {
        self.c_in / self.groups
    }
    /// Output channels per group.
    #[inline(always)]
    pub fn cout_g(&self) -> u32 {
        self.c_out / self.groups
    }
    /// Length of one filter: the GEMM depth of the forward pass.
    #[inline(always)]
    pub fn filter_len(&self) -> u32 {
        self.cin_g() * self.k_h * self.k_w
    }

    /// im2col entry (`k` = filter position, `col` = output pixel over the
    /// batch) of group `g`: the input value under that tap, 0 in the padding.
    #[inline(always)]
    unsafe fn im2col(&self, x: *const f32, g: u32, k: u32, col: u32) -> f32 {
        let taps = self.k_h * self.k_w;
        let (ci, ky, kx) = (k / taps, k % taps / self.k_w, k % self.k_w);
        let (ho, wo) = (self.out_h(), self.out_w());
        let (n, oy, ox) = (col / (ho * wo), col % (ho * wo) / wo, col % wo);
        // Unsigned wrap-around turns "left of / above the image" into "too large".
        let iy = (oy * self.stride_h + ky * self.dilation_h).wrapping_sub(self.pad_h);
        let ix = (ox * self.stride_w + kx * self.dilation_w).wrapping_sub(self.pad_w);
        if iy < self.h && ix < self.w {
            *x.add((((n * self.c_in + g * self.cin_g() + ci) * self.h + iy) * self.w + ix) as usize)
        } else {
            0.0
        }
    }

    /// Output-gradient entry for backward-data: the `dy` value that input
    /// pixel `col` (over the batch) receives through tap `k` (= output channel
    /// in the group x filter tap) of group `g`, 0 where no output used it.
    #[inline(always)]
    unsafe fn dy_through_tap(&self, dy: *const f32, g: u32, k: u32, col: u32) -> f32 {
        let taps = self.k_h * self.k_w;
        let (co, ky, kx) = (k / taps, k % taps / self.k_w, k % self.k_w);
        let (n, iy, ix) = (
            col / (self.h * self.w),
            col % (self.h * self.w) / self.w,
            col % self.w,
        );
        let (ho, wo) = (self.out_h(), self.out_w());
        let ty = (iy + self.pad_h).wrapping_sub(ky * self.dilation_h);
        let tx = (ix + self.pad_w).wrapping_sub(kx * self.dilation_w);
        if !ty.is_multiple_of(self.stride_h) || !tx.is_multiple_of(self.stride_w) {
            return 0.0;
        }
        let (oy, ox) = (ty / self.stride_h, tx / self.stride_w);
        if oy < ho && ox < wo {
            *dy.add((((n * self.c_out + g * self.cout_g() + co) * ho + oy) * wo + ox) as usize)
        } else {
            0.0
        }
    }
}

kernel! {
    /// `y = conv(x, weight) + bias` (bias may be null). GEMM per group:
    /// rows = c_out / groups, cols = batch * out_h * out_w, depth = filter length.
    pub fn conv2d_forward(ctx, x: *const f32, weight: *const f32, bias: *const f32, y: *mut f32,
        batch: u32, c_in: u32, h: u32, w: u32, c_out: u32, k_h: u32, k_w: u32,
        stride_h: u32, stride_w: u32, pad_h: u32, pad_w: u32, dilation_h: u32, dilation_w: u32, groups: u32) {
        let geo = ConvGeometry { batch, c_in, h, w, c_out, k_h, k_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups };
        let g = ctx.block_z();
        let plane = geo.out_h() * geo.out_w();
        let (cout_g, depth) = (geo.cout_g(), geo.filter_len());
        tile::tiled_matmul(ctx, cout_g, batch * plane, depth,
            |m, k| *weight.add(((g * cout_g + m) * depth + k) as usize),
            |k, col| geo.im2col(x, g, k, col),
            |m, col, v| {
                let co = g * cout_g + m;
                let b = if bias.is_null() { 0.0 } else { *bias.add(co as usize) };
                let (n, p) = (col / plane, col % plane);
                *y.add(((n * c_out + co) * plane + p) as usize) = v + b;
            });
    }
}

kernel! {
    /// `dx = conv_transpose(dy, weight)`, or `dx +=` it when `accumulate` is
    /// not 0. GEMM per group: rows = c_in / groups, cols = batch * h * w,
    /// depth = (c_out / groups) * k_h * k_w.
    pub fn conv2d_backward_data(ctx, dy: *const f32, weight: *const f32, dx: *mut f32,
        batch: u32, c_in: u32, h: u32, w: u32, c_out: u32, k_h: u32, k_w: u32,
        stride_h: u32, stride_w: u32, pad_h: u32, pad_w: u32, dilation_h: u32, dilation_w: u32, groups: u32,
        accumulate: u32) {
        let geo = ConvGeometry { batch, c_in, h, w, c_out, k_h, k_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups };
        let g = ctx.block_z();
        let (cin_g, cout_g, taps) = (geo.cin_g(), geo.cout_g(), k_h * k_w);
        tile::tiled_matmul(ctx, cin_g, batch * h * w, cout_g * taps,
            |ci, k| {
                let (co, tap) = (k / taps, k % taps);
                *weight.add((((g * cout_g + co) * cin_g + ci) * taps + tap) as usize)
            },
            |k, col| geo.dy_through_tap(dy, g, k, col),
            |ci, col, v| {
                let (n, p) = (col / (h * w), col % (h * w));
                store_or_add(dx.add(((n * c_in + g * cin_g + ci) * h * w + p) as usize), v, accumulate);
            });
    }
}

kernel! {
    /// `dweight = dy x im2col(x)^T`. GEMM per group: rows = c_out / groups,
    /// cols = filter length, depth = batch * out_h * out_w.
    pub fn conv2d_backward_filter(ctx, x: *const f32, dy: *const f32, dweight: *mut f32,
        batch: u32, c_in: u32, h: u32, w: u32, c_out: u32, k_h: u32, k_w: u32,
        stride_h: u32, stride_w: u32, pad_h: u32, pad_w: u32, dilation_h: u32, dilation_w: u32, groups: u32) {
        let geo = ConvGeometry { batch, c_in, h, w, c_out, k_h, k_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups };
        let g = ctx.block_z();
        let plane = geo.out_h() * geo.out_w();
        let (cout_g, len) = (geo.cout_g(), geo.filter_len());
        tile::tiled_matmul(ctx, cout_g, len, batch * plane,
            |m, col| {
                let (n, p) = (col / plane, col % plane);
                *dy.add(((n * c_out + g * cout_g + m) * plane + p) as usize)
            },
            |col, k| geo.im2col(x, g, k, col),
            |m, k, v| *dweight.add(((g * cout_g + m) * len + k) as usize) = v);
    }
}

kernel! {
    /// Depthwise forward (groups == c_in == c_out): one thread per output,
    /// plus `bias` per channel (bias may be null).
    pub fn depthwise_conv2d_forward(ctx, x: *const f32, weight: *const f32, bias: *const f32, y: *mut f32,
        batch: u32, channels: u32, h: u32, w: u32, k_h: u32, k_w: u32,
        stride_h: u32, stride_w: u32, pad_h: u32, pad_w: u32, dilation_h: u32, dilation_w: u32) {
        let geo = ConvGeometry { batch, c_in: channels, h, w, c_out: channels, k_h, k_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups: channels };
        let (ho, wo, taps) = (geo.out_h(), geo.out_w(), k_h * k_w);
        grid_stride(ctx, batch * channels * ho * wo, |i| {
            let i = i as u32;
            let (nc, p) = (i / (ho * wo), i % (ho * wo));
            let c = nc % channels;
            let col = nc / channels * ho * wo + p;
            let mut acc = 0.0;
            let mut k = 0;
            while k < taps {
                acc += *weight.add((c * taps + k) as usize) * geo.im2col(x, c, k, col);
                k += 1;
            }
            let b = if bias.is_null() { 0.0 } else { *bias.add(c as usize) };
            *y.add(i as usize) = acc + b;
        });
    }
}

kernel! {
    /// Depthwise backward-data: one thread per input pixel, gathering the
    /// outputs it fed (no atomics, deterministic); added into `dx` when
    /// `accumulate` is not 0.
    pub fn depthwise_conv2d_backward_data(ctx, dy: *const f32, weight: *const f32, dx: *mut f32,
        batch: u32, channels: u32, h: u32, w: u32, k_h: u32, k_w: u32,
        stride_h: u32, stride_w: u32, pad_h: u32, pad_w: u32, dilation_h: u32, dilation_w: u32,
        accumulate: u32) {
        let geo = ConvGeometry { batch, c_in: channels, h, w, c_out: channels, k_h, k_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups: channels };
        let taps = k_h * k_w;
        grid_stride(ctx, batch * channels * h * w, |i| {
            let i = i as u32;
            let (nc, p) = (i / (h * w), i % (h * w));
            let c = nc % channels;
            let col = nc / channels * h * w + p;
            let mut acc = 0.0;
            let mut k = 0;
            while k < taps {
                acc += *weight.add((c * taps + k) as usize) * geo.dy_through_tap(dy, c, k, col);
                k += 1;
            }
            store_or_add(dx.add(i as usize), acc, accumulate);
        });
    }
}

kernel! {
    /// Depthwise backward-filter: one block of `REDUCE_THREADS` per weight
    /// (grid x = channels * k_h * k_w), reducing over the batch and the output plane.
    pub fn depthwise_conv2d_backward_filter(ctx, x: *const f32, dy: *const f32, dweight: *mut f32,
        batch: u32, channels: u32, h: u32, w: u32, k_h: u32, k_w: u32,
        stride_h: u32, stride_w: u32, pad_h: u32, pad_w: u32, dilation_h: u32, dilation_w: u32) {
        let scratch = shared_array!(ctx, f32, REDUCE_THREADS as usize);
        let geo = ConvGeometry { batch, c_in: channels, h, w, c_out: channels, k_h, k_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups: channels };
        let (plane, taps) = (geo.out_h() * geo.out_w(), k_h * k_w);
        let (c, k) = (ctx.block_x() / taps, ctx.block_x() % taps);
        let mut own = 0.0;
        let mut col = ctx.thread_x();
        while col < batch * plane {
            let (n, p) = (col / plane, col % plane);
            own += *dy.add(((n * channels + c) * plane + p) as usize) * geo.im2col(x, c, k, col);
            col += REDUCE_THREADS;
        }
        let total = block_sum(ctx, scratch, own);
        if ctx.thread_x() == 0 {
            *dweight.add(ctx.block_x() as usize) = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch, launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    /// Direct convolution in f64: the reference for all three passes
    /// (backward ones via the adjoint identity <conv(x), dy> = <x, dx> = <w, dw>).
    fn conv_ref(geo: &ConvGeometry, x: &[f32], wt: &[f32]) -> Vec<f64> {
        let u = |v: u32| v as usize;
        let (ho, wo, cig, cog) = (
            u(geo.out_h()),
            u(geo.out_w()),
            u(geo.cin_g()),
            u(geo.cout_g()),
        );
        let (h, w, ci_all, co_all, kh, kw) = (
            u(geo.h),
            u(geo.w),
            u(geo.c_in),
            u(geo.c_out),
            u(geo.k_h),
            u(geo.k_w),
        );
        let mut y = vec![0.0; u(geo.batch) * co_all * ho * wo];
        for n in 0..u(geo.batch) {
            for co in 0..co_all {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let g = co / cog;
                        let mut acc = 0.0;
                        for ci in 0..cig {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * u(geo.stride_h) + ky * u(geo.dilation_h)) as i64
                                        - geo.pad_h as i64;
                                    let ix = (ox * u(geo.stride_w) + kx * u(geo.dilation_w)) as i64
                                        - geo.pad_w as i64;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        acc += x[((n * ci_all + g * cig + ci) * h + iy as usize)
                                            * w
                                            + ix as usize]
                                            as f64
                                            * wt[((co * cig + ci) * kh + ky) * kw + kx] as f64;
                                    }
                                }
                            }
                        }
                        y[((n * co_all + co) * ho + oy) * wo + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn geometry() -> impl Strategy<Value = ConvGeometry> {
        let sizes = (1u32..3, 1u32..4, 1u32..4, 1u32..5, 3u32..12, 3u32..12);
        let taps = (
            1u32..4,
            1u32..4,
            1u32..3,
            1u32..3,
            0u32..2,
            0u32..3,
            1u32..3,
            1u32..3,
        );
        (sizes, taps)
            .prop_map(
                |(
                    (batch, groups, cig, cog, h, w),
                    (k_h, k_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w),
                )| {
                    ConvGeometry {
                        batch,
                        c_in: groups * cig,
                        h,
                        w,
                        c_out: groups * cog,
                        k_h,
                        k_w,
                        stride_h,
                        stride_w,
                        pad_h,
                        pad_w,
                        dilation_h,
                        dilation_w,
                        groups,
                    }
                },
            )
            .prop_filter("kernel fits the padded input", |g| {
                g.h + 2 * g.pad_h > g.dilation_h * (g.k_h - 1)
                    && g.w + 2 * g.pad_w > g.dilation_w * (g.k_w - 1)
            })
    }

    fn pseudo(len: usize, salt: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(salt) % 997) as f32 / 498.5 - 1.0
            })
            .collect()
    }

    fn check_close(got: &[f32], want: &[f64], what: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            prop_assert!(
                (g as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
                "{} at {}: {} vs {}",
                what,
                i,
                g,
                w
            );
        }
        Ok(())
    }

    /// dx and dw by differentiating the (linear) reference: dL/dx_i = <conv(e_i), dy>.
    fn grads_ref(geo: &ConvGeometry, x: &[f32], wt: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let dot = |y: Vec<f64>| y.iter().zip(dy).map(|(a, &b)| a * b as f64).sum::<f64>();
        let unit = |len: usize, i: usize| {
            let mut e = vec![0.0; len];
            e[i] = 1.0;
            e
        };
        let dx = (0..x.len())
            .map(|i| dot(conv_ref(geo, &unit(x.len(), i), wt)))
            .collect();
        let dw = (0..wt.len())
            .map(|i| dot(conv_ref(geo, x, &unit(wt.len(), i))))
            .collect();
        (dx, dw)
    }

    /// The three passes under the emulator: (y, dx, dw). The input
    /// gradient is added onto `dx0` when given, else written over NaNs.
    fn run_passes(
        g: &ConvGeometry,
        x: &[f32],
        wt: &[f32],
        dy: &[f32],
        bias: Option<&[f32]>,
        dx0: Option<&[f32]>,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (xb, wb, dyb) = (DeviceBuf::new(x), DeviceBuf::new(wt), DeviceBuf::new(dy));
        let bb = DeviceBuf::new(bias.unwrap_or(&[]));
        let (yb, dwb) = (
            DeviceBuf::filled(dy.len(), f32::NAN),
            DeviceBuf::filled(wt.len(), f32::NAN),
        );
        let dxb = match dx0 {
            Some(dx0) => DeviceBuf::new(dx0),
            None => DeviceBuf::filled(x.len(), f32::NAN),
        };
        let accumulate = u32::from(dx0.is_some());
        let depthwise = g.groups > 1 && g.groups == g.c_in && g.groups == g.c_out;
        // A function, not a pointer: raw pointers are not Sync, and the
        // emulated threads share the closure.
        let bias_ptr = || -> *const f32 {
            if bias.is_some() {
                bb.ptr()
            } else {
                std::ptr::null()
            }
        };
        let tiled = |rows: u32, cols: u32| {
            let (gx, gy) = tile::grid_for(rows, cols);
            (Dim3::xyz(gx, gy, g.groups), Dim3::x(tile::THREADS))
        };
        if depthwise {
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                depthwise_conv2d_forward(
                    c,
                    xb.ptr(),
                    wb.ptr(),
                    bias_ptr(),
                    yb.ptr(),
                    g.batch,
                    g.c_in,
                    g.h,
                    g.w,
                    g.k_h,
                    g.k_w,
                    g.stride_h,
                    g.stride_w,
                    g.pad_h,
                    g.pad_w,
                    g.dilation_h,
                    g.dilation_w,
                )
            });
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                depthwise_conv2d_backward_data(
                    c,
                    dyb.ptr(),
                    wb.ptr(),
                    dxb.ptr(),
                    g.batch,
                    g.c_in,
                    g.h,
                    g.w,
                    g.k_h,
                    g.k_w,
                    g.stride_h,
                    g.stride_w,
                    g.pad_h,
                    g.pad_w,
                    g.dilation_h,
                    g.dilation_w,
                    accumulate,
                )
            });
            launch(
                Dim3::x(g.c_in * g.k_h * g.k_w),
                Dim3::x(REDUCE_THREADS),
                |c| unsafe {
                    depthwise_conv2d_backward_filter(
                        c,
                        xb.ptr(),
                        dyb.ptr(),
                        dwb.ptr(),
                        g.batch,
                        g.c_in,
                        g.h,
                        g.w,
                        g.k_h,
                        g.k_w,
                        g.stride_h,
                        g.stride_w,
                        g.pad_h,
                        g.pad_w,
                        g.dilation_h,
                        g.dilation_w,
                    )
                },
            );
        } else {
            let (grid, block) = tiled(g.cout_g(), g.batch * g.out_h() * g.out_w());
            launch(grid, block, |c| unsafe {
                conv2d_forward(
                    c,
                    xb.ptr(),
                    wb.ptr(),
                    bias_ptr(),
                    yb.ptr(),
                    g.batch,
                    g.c_in,
                    g.h,
                    g.w,
                    g.c_out,
                    g.k_h,
                    g.k_w,
                    g.stride_h,
                    g.stride_w,
                    g.pad_h,
                    g.pad_w,
                    g.dilation_h,
                    g.dilation_w,
                    g.groups,
                )
            });
            let (grid, block) = tiled(g.cin_g(), g.batch * g.h * g.w);
            launch(grid, block, |c| unsafe {
                conv2d_backward_data(
                    c,
                    dyb.ptr(),
                    wb.ptr(),
                    dxb.ptr(),
                    g.batch,
                    g.c_in,
                    g.h,
                    g.w,
                    g.c_out,
                    g.k_h,
                    g.k_w,
                    g.stride_h,
                    g.stride_w,
                    g.pad_h,
                    g.pad_w,
                    g.dilation_h,
                    g.dilation_w,
                    g.groups,
                    accumulate,
                )
            });
            let (grid, block) = tiled(g.cout_g(), g.filter_len());
            launch(grid, block, |c| unsafe {
                conv2d_backward_filter(
                    c,
                    xb.ptr(),
                    dyb.ptr(),
                    dwb.ptr(),
                    g.batch,
                    g.c_in,
                    g.h,
                    g.w,
                    g.c_out,
                    g.k_h,
                    g.k_w,
                    g.stride_h,
                    g.stride_w,
                    g.pad_h,
                    g.pad_w,
                    g.dilation_h,
                    g.dilation_w,
                    g.groups,
                )
            });
        }
        (yb.to_vec(), dxb.to_vec(), dwb.to_vec())
    }

    fn check_all(
        geo: &ConvGeometry,
        with_bias: bool,
        accumulate: bool,
    ) -> Result<(), TestCaseError> {
        let x = pseudo((geo.batch * geo.c_in * geo.h * geo.w) as usize, 1);
        let wt = pseudo((geo.c_out * geo.filter_len()) as usize, 2);
        let bias = pseudo(geo.c_out as usize, 3);
        let dy = pseudo(
            (geo.batch * geo.c_out * geo.out_h() * geo.out_w()) as usize,
            4,
        );
        let dx0 = pseudo(x.len(), 5);
        let onto = accumulate.then_some(&dx0[..]);
        let (y, dx, dw) = run_passes(geo, &x, &wt, &dy, with_bias.then_some(&bias[..]), onto);
        let mut want_y = conv_ref(geo, &x, &wt);
        if with_bias {
            let plane = (geo.out_h() * geo.out_w()) as usize;
            for (i, v) in want_y.iter_mut().enumerate() {
                *v += bias[i / plane % geo.c_out as usize] as f64;
            }
        }
        check_close(&y, &want_y, "y")?;
        let (mut want_dx, want_dw) = grads_ref(geo, &x, &wt, &dy);
        if accumulate {
            for (want, &v) in want_dx.iter_mut().zip(&dx0) {
                *want += v as f64;
            }
        }
        check_close(&dx, &want_dx, "dx")?;
        check_close(&dw, &want_dw, "dw")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn implicit_gemm_passes_match_direct_convolution(geo in geometry(), with_bias: bool, accumulate: bool) {
            prop_assume!(!(geo.groups > 1 && geo.cin_g() == 1 && geo.cout_g() == 1));
            check_all(&geo, with_bias, accumulate)?;
        }

        #[test]
        fn depthwise_passes_match_direct_convolution(base in geometry(), with_bias: bool, accumulate: bool) {
            let channels = base.c_in.max(2);
            let geo = ConvGeometry { c_in: channels, c_out: channels, groups: channels, ..base };
            check_all(&geo, with_bias, accumulate)?;
        }
    }
}
