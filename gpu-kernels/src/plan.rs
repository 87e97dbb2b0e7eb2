//! Argument checks and launch shapes for every kernel: pure functions, so the
//! rules are tested on any machine (against the device crate's CPU grid
//! emulator, using exactly these grids) and the GPU launch only adds the
//! driver call. Kernels index with `u32`, so every tensor must have fewer
//! than 2^32 elements; each check names the kernel and the argument.
use std::fmt;

use pulsefocus_gpu_device::conv::ConvGeometry;
use pulsefocus_gpu_device::nms::NMS_THREADS;
use pulsefocus_gpu_device::reduce::REDUCE_THREADS;
use pulsefocus_gpu_device::tile;

/// A bad kernel argument, caught before launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    pub kernel: &'static str,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "kernel {}: {}", self.kernel, self.message)
    }
}

impl std::error::Error for PlanError {}

fn fail<T>(kernel: &'static str, message: String) -> Result<T, PlanError> {
    Err(PlanError { kernel, message })
}

/// Grid and block extents (x, y, z).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchShape {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
}

/// Threads per block of the grid-stride kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Enough blocks to fill the largest GPU; grid-stride loops cover the rest.
const MAX_ELEMENTWISE_BLOCKS: u32 = 4096;

/// `len` as a kernel index count.
pub fn index_count(kernel: &'static str, arg: &str, len: usize) -> Result<u32, PlanError> {
    u32::try_from(len).or_else(|_| {
        fail(
            kernel,
            format!("{arg} has {len} elements; kernels index below 2^32"),
        )
    })
}

/// `arg` must hold at least `want` elements (buffers may be longer than the
/// tensor they hold: memory is planned for the largest shape and reused).
pub fn need_len(kernel: &'static str, arg: &str, got: usize, want: usize) -> Result<(), PlanError> {
    if got >= want {
        Ok(())
    } else {
        fail(
            kernel,
            format!("{arg} has {got} elements, needs at least {want}"),
        )
    }
}

/// A 1-D grid-stride launch over `n` elements.
pub fn elementwise(n: u32) -> LaunchShape {
    let blocks = n
        .div_ceil(ELEMENTWISE_THREADS)
        .clamp(1, MAX_ELEMENTWISE_BLOCKS);
    LaunchShape {
        grid: (blocks, 1, 1),
        block: (ELEMENTWISE_THREADS, 1, 1),
    }
}

/// One `REDUCE_THREADS` block per item (channel, weight, ...).
pub fn block_per_item(kernel: &'static str, items: u32) -> Result<LaunchShape, PlanError> {
    if items == 0 || items > 65535 * 32768 {
        return fail(kernel, format!("{items} blocks is outside 1..=2^31"));
    }
    Ok(LaunchShape {
        grid: (items, 1, 1),
        block: (REDUCE_THREADS, 1, 1),
    })
}

/// The tiled matmul engine over a `rows x cols` result, `z` slices.
pub fn tiled(rows: u32, cols: u32, z: u32) -> LaunchShape {
    let (gx, gy) = tile::grid_for(rows, cols);
    LaunchShape {
        grid: (gx, gy, z),
        block: (tile::THREADS, 1, 1),
    }
}

/// Strides of a batched GEMM operand, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    pub row: u32,
    pub col: u32,
    /// Between batch entries; 0 shares the operand across the batch.
    pub batch: u32,
}

impl Strides {
    /// A row-major matrix with `cols` columns, entries `batch` apart.
    pub const fn row_major(cols: u32, batch: u32) -> Strides {
        Strides {
            row: cols,
            col: 1,
            batch,
        }
    }
    /// The transpose of a row-major matrix whose rows are `ld` long: GEMM's
    /// element (i, j) is the stored (j, i), at `j * ld + i`.
    pub const fn transposed(ld: u32, batch: u32) -> Strides {
        Strides {
            row: 1,
            col: ld,
            batch,
        }
    }
}

/// Batched strided GEMM operand `rows x cols`: the furthest element must be inside.
pub fn gemm_operand(
    arg: &str,
    len: usize,
    batch: u32,
    rows: u32,
    cols: u32,
    strides: Strides,
) -> Result<(), PlanError> {
    if batch == 0 || rows == 0 || cols == 0 {
        return fail(
            "gemm",
            format!("{arg} is {batch}x{rows}x{cols}; GEMM needs non-empty operands"),
        );
    }
    let last = (batch as u64 - 1) * strides.batch as u64
        + (rows as u64 - 1) * strides.row as u64
        + (cols as u64 - 1) * strides.col as u64;
    if last >= len as u64 {
        return fail("gemm", format!("{arg} ({batch}x{rows}x{cols}, strides {strides:?}) reaches element {last} of {len}"));
    }
    Ok(())
}

/// Which convolution kernels a geometry uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// Implicit GEMM on the tile engine (any groups).
    Tiled,
    /// 1x1, stride 1, no padding, one group (dilation is moot): per image exactly the GEMM
    /// `y_n = W x_n`, so forward and backward-data run the batched `gemm`
    /// kernel (no im2col index arithmetic); backward-filter stays implicit.
    Pointwise,
    /// groups == c_in == c_out (MobileNet's 3x3 depthwise).
    Depthwise,
}

/// Element counts of a convolution's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvLens {
    pub x: usize,
    pub weight: usize,
    pub y: usize,
}

/// Validates a convolution and picks its kernels.
pub fn conv(kernel: &'static str, geo: &ConvGeometry) -> Result<(ConvKind, ConvLens), PlanError> {
    let g = geo;
    if [
        g.batch,
        g.c_in,
        g.h,
        g.w,
        g.c_out,
        g.k_h,
        g.k_w,
        g.stride_h,
        g.stride_w,
        g.dilation_h,
        g.dilation_w,
        g.groups,
    ]
    .contains(&0)
    {
        return fail(kernel, format!("every size must be positive: {geo:?}"));
    }
    if !g.c_in.is_multiple_of(g.groups) || !g.c_out.is_multiple_of(g.groups) {
        return fail(
            kernel,
            format!(
                "groups {} must divide c_in {} and c_out {}",
                g.groups, g.c_in, g.c_out
            ),
        );
    }
    if g.h + 2 * g.pad_h <= g.dilation_h * (g.k_h - 1)
        || g.w + 2 * g.pad_w <= g.dilation_w * (g.k_w - 1)
    {
        return fail(
            kernel,
            format!(
                "{}x{} kernel (dilation {}x{}) is larger than the padded {}x{} input",
                g.k_h, g.k_w, g.dilation_h, g.dilation_w, g.h, g.w
            ),
        );
    }
    let x = g.batch as u64 * g.c_in as u64 * g.h as u64 * g.w as u64;
    let y = g.batch as u64 * g.c_out as u64 * g.out_h() as u64 * g.out_w() as u64;
    let weight = g.c_out as u64 * g.filter_len() as u64;
    for (arg, len) in [("x", x), ("y", y), ("weight", weight)] {
        index_count(kernel, arg, len as usize)?;
    }
    let kind = if g.groups > 1 && g.groups == g.c_in && g.groups == g.c_out {
        ConvKind::Depthwise
    } else if g.k_h == 1
        && g.k_w == 1
        && g.stride_h == 1
        && g.stride_w == 1
        && g.pad_h == 0
        && g.pad_w == 0
        && g.groups == 1
    {
        ConvKind::Pointwise
    } else {
        ConvKind::Tiled
    };
    Ok((
        kind,
        ConvLens {
            x: x as usize,
            weight: weight as usize,
            y: y as usize,
        },
    ))
}

/// Launch shapes of the three convolution passes.
pub fn conv_forward_shape(kind: ConvKind, g: &ConvGeometry) -> LaunchShape {
    match kind {
        ConvKind::Pointwise => tiled(g.c_out, g.h * g.w, g.batch),
        ConvKind::Tiled => tiled(g.cout_g(), g.batch * g.out_h() * g.out_w(), g.groups),
        ConvKind::Depthwise => elementwise(g.batch * g.c_out * g.out_h() * g.out_w()),
    }
}

pub fn conv_backward_data_shape(kind: ConvKind, g: &ConvGeometry) -> LaunchShape {
    match kind {
        ConvKind::Pointwise => tiled(g.c_in, g.h * g.w, g.batch),
        ConvKind::Tiled => tiled(g.cin_g(), g.batch * g.h * g.w, g.groups),
        ConvKind::Depthwise => elementwise(g.batch * g.c_in * g.h * g.w),
    }
}

pub fn conv_backward_filter_shape(kind: ConvKind, g: &ConvGeometry) -> LaunchShape {
    match kind {
        ConvKind::Tiled | ConvKind::Pointwise => tiled(g.cout_g(), g.filter_len(), g.groups),
        ConvKind::Depthwise => LaunchShape {
            grid: (g.c_in * g.k_h * g.k_w, 1, 1),
            block: (REDUCE_THREADS, 1, 1),
        },
    }
}

/// GEMM operands of a pointwise forward pass: A = weight `[c_out, c_in]`
/// shared by all images, B = image `n` of x as `[c_in, h*w]`; C = image `n` of y.
pub fn pointwise_forward_operands(g: &ConvGeometry) -> (Strides, Strides) {
    let plane = g.h * g.w;
    (
        Strides::row_major(g.c_in, 0),
        Strides::row_major(plane, g.c_in * plane),
    )
}

/// GEMM operands of a pointwise backward-data pass: A = weight transposed
/// (`[c_in, c_out]`), B = image `n` of dy as `[c_out, h*w]`; C = image `n` of dx.
pub fn pointwise_backward_data_operands(g: &ConvGeometry) -> (Strides, Strides) {
    let plane = g.h * g.w;
    (
        Strides::transposed(g.c_in, 0),
        Strides::row_major(plane, g.c_out * plane),
    )
}

/// Decode + multiclass NMS of a batch (`Gpu::yolo_detect`): the sizes of
/// its buffers, all checked to fit the kernels' `u32` indexing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectPlan {
    pub batch: u32,
    pub classes: u32,
    /// Boxes of all levels, per image.
    pub boxes_per_image: u32,
    /// (image, class) pairs: one NMS each.
    pub segments: u32,
    /// Sort length: a power of two at least `segments * boxes_per_image`.
    pub padded: u32,
    /// Candidates per class (Paddle's `nms_top_k`; all when it has none).
    pub top_k: u32,
    /// Detection rows per image: `keep_top_k`, or every candidate there can be.
    pub capacity: u32,
}

pub fn detect(
    batch: usize,
    classes: usize,
    boxes_per_image: usize,
    nms_top_k: Option<usize>,
    keep_top_k: Option<usize>,
) -> Result<DetectPlan, PlanError> {
    const NAME: &str = "yolo_detect";
    let entries = batch
        .checked_mul(classes)
        .and_then(|e| e.checked_mul(boxes_per_image))
        .unwrap_or(usize::MAX);
    // The sort and the grid-stride loops need the padded length below 2^31.
    if entries == 0 || entries > 1 << 31 {
        return fail(
            NAME,
            format!("{batch} images x {classes} classes x {boxes_per_image} boxes must be 1..=2^31 scores to sort"),
        );
    }
    let top_k = nms_top_k.map_or(boxes_per_image, |k| k.min(boxes_per_image));
    let capacity = keep_top_k.unwrap_or(classes * top_k);
    index_count(NAME, "detections", batch * capacity.max(1) * 6)?;
    Ok(DetectPlan {
        batch: batch as u32,
        classes: classes as u32,
        boxes_per_image: boxes_per_image as u32,
        segments: (batch * classes) as u32,
        padded: entries.next_power_of_two() as u32,
        top_k: top_k as u32,
        capacity: capacity as u32,
    })
}

/// One `NMS_THREADS` block per item (segment or image), at most 4096 blocks
/// (the kernels loop over the rest).
pub fn nms_blocks(items: u32) -> LaunchShape {
    LaunchShape {
        grid: (items.clamp(1, 4096), 1, 1),
        block: (NMS_THREADS, 1, 1),
    }
}

/// The `(j, k)` stages of the bitonic sort of `padded` keys, in launch order.
pub fn bitonic_stages(padded: u32) -> Vec<(u32, u32)> {
    let mut stages = Vec::new();
    let mut k = 2;
    while k <= padded {
        let mut j = k / 2;
        while j > 0 {
            stages.push((j, k));
            j /= 2;
        }
        k *= 2;
    }
    stages
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use pulsefocus_gpu_device::conv as kernels;
    use pulsefocus_gpu_device::emu::{launch, DeviceBuf, Dim3};

    fn dims(s: LaunchShape) -> (Dim3, Dim3) {
        (
            Dim3::xyz(s.grid.0, s.grid.1, s.grid.2),
            Dim3::xyz(s.block.0, s.block.1, s.block.2),
        )
    }

    #[test]
    fn rejects_bad_convolutions_with_a_message() {
        let geo = ConvGeometry {
            batch: 1,
            c_in: 6,
            h: 4,
            w: 4,
            c_out: 4,
            k_h: 3,
            k_w: 3,
            stride_h: 1,
            stride_w: 1,
            pad_h: 0,
            pad_w: 0,
            dilation_h: 1,
            dilation_w: 1,
            groups: 4,
        };
        assert_eq!(
            conv("conv2d_forward", &geo).unwrap_err().to_string(),
            "kernel conv2d_forward: groups 4 must divide c_in 6 and c_out 4"
        );
        let big = ConvGeometry {
            k_h: 7,
            groups: 1,
            ..geo
        };
        assert!(conv("conv2d_forward", &big)
            .unwrap_err()
            .message
            .contains("larger than the padded"));
        let depthwise = ConvGeometry {
            c_out: 6,
            groups: 6,
            ..geo
        };
        assert_eq!(conv("c", &depthwise).unwrap().0, ConvKind::Depthwise);
        assert_eq!(
            need_len("add", "b", 3, 4).unwrap_err().to_string(),
            "kernel add: b has 3 elements, needs at least 4"
        );
        assert!(need_len("add", "b", 5, 4).is_ok());
        assert!(gemm_operand("a", 11, 1, 3, 4, Strides::row_major(4, 0)).is_err());
        assert!(gemm_operand("a", 12, 1, 3, 4, Strides::row_major(4, 0)).is_ok());
        assert!(gemm_operand("a", 23, 2, 3, 4, Strides::row_major(4, 12)).is_err());
        assert!(gemm_operand("a", 24, 2, 3, 4, Strides::row_major(4, 12)).is_ok());
        let pointwise = ConvGeometry {
            k_h: 1,
            k_w: 1,
            groups: 1,
            ..geo
        };
        assert_eq!(conv("c", &pointwise).unwrap().0, ConvKind::Pointwise);
    }

    #[test]
    fn detect_plan_and_sort_stages() {
        assert_eq!(
            detect(2, 20, 22743, Some(1000), Some(100)).unwrap(),
            DetectPlan {
                batch: 2,
                classes: 20,
                boxes_per_image: 22743,
                segments: 40,
                padded: 1 << 20,
                top_k: 1000,
                capacity: 100,
            }
        );
        let all = detect(1, 3, 5, None, None).unwrap();
        assert_eq!((all.padded, all.top_k, all.capacity), (16, 5, 15));
        assert!(detect(0, 3, 5, None, None).is_err());
        assert!(detect(64, 80, 1 << 20, Some(1000), Some(100)).is_err());
        assert_eq!(
            bitonic_stages(8),
            vec![(1, 2), (2, 4), (1, 4), (4, 8), (2, 8), (1, 8)]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]
        /// The planned grids cover every output: the forward pass under the
        /// emulator with the planned shape writes every element of y.
        #[test]
        fn planned_conv_grids_cover_the_output(batch in 1u32..3, c in 1u32..5, hw in 3u32..20, k in 1u32..4, stride in 1u32..3, depthwise: bool) {
            let groups = if depthwise && c > 1 { c } else { 1 };
            let stride = if k == 1 { 1 } else { stride };
            // Depthwise keeps the channel count; the others change it.
            let c_out = if groups > 1 { c } else { c + 1 };
            let geo = ConvGeometry { batch, c_in: c, h: hw, w: hw, c_out, k_h: k, k_w: k, stride_h: stride, stride_w: stride, pad_h: k / 2, pad_w: k / 2, dilation_h: 1, dilation_w: 1, groups };
            let (kind, lens) = conv("conv2d_forward", &geo).unwrap();
            let x = DeviceBuf::filled(lens.x, 1.0f32);
            let w = DeviceBuf::filled(lens.weight, 1.0f32);
            let y = DeviceBuf::filled(lens.y, f32::NAN);
            let (grid, block) = dims(conv_forward_shape(kind, &geo));
            let g = geo;
            match kind {
                ConvKind::Tiled => launch(grid, block, |ctx| unsafe {
                    kernels::conv2d_forward(ctx, x.ptr(), w.ptr(), std::ptr::null(), y.ptr(), g.batch, g.c_in, g.h, g.w, g.c_out, g.k_h, g.k_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dilation_h, g.dilation_w, g.groups)
                }),
                ConvKind::Depthwise => launch(grid, block, |ctx| unsafe {
                    kernels::depthwise_conv2d_forward(ctx, x.ptr(), w.ptr(), std::ptr::null(), y.ptr(), g.batch, g.c_in, g.h, g.w, g.k_h, g.k_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dilation_h, g.dilation_w)
                }),
                ConvKind::Pointwise => {
                    let (a, b) = pointwise_forward_operands(&g);
                    launch(grid, block, |ctx| unsafe {
                        pulsefocus_gpu_device::gemm::gemm(ctx, g.c_out, g.h * g.w, g.c_in, 1.0, w.ptr(), a.row, a.col, a.batch,
                            x.ptr(), b.row, b.col, b.batch, 0.0, y.ptr(), g.h * g.w, g.c_out * g.h * g.w)
                    })
                }
            }
            prop_assert!(y.to_vec().iter().all(|v| v.is_finite() && *v >= 1.0));
        }

        /// Pointwise convolutions as batched GEMM give what the implicit
        /// kernels give, forward and backward-data.
        #[test]
        fn pointwise_as_gemm_matches_the_implicit_kernels(batch in 1u32..3, c_in in 1u32..70, c_out in 1u32..70, h in 1u32..9, w in 1u32..9) {
            let g = ConvGeometry { batch, c_in, h, w, c_out, k_h: 1, k_w: 1, stride_h: 1, stride_w: 1, pad_h: 0, pad_w: 0, dilation_h: 1, dilation_w: 1, groups: 1 };
            let (kind, lens) = conv("conv", &g).unwrap();
            prop_assert_eq!(kind, ConvKind::Pointwise);
            let vals = |len: usize, salt: usize| (0..len).map(|i| ((i * 7919 + salt) % 101) as f32 / 50.0 - 1.0).collect::<Vec<_>>();
            let (x, wt, dy) = (DeviceBuf::new(&vals(lens.x, 1)), DeviceBuf::new(&vals(lens.weight, 2)), DeviceBuf::new(&vals(lens.y, 3)));
            let (y_gemm, y_conv) = (DeviceBuf::filled(lens.y, f32::NAN), DeviceBuf::filled(lens.y, f32::NAN));
            let (dx_gemm, dx_conv) = (DeviceBuf::filled(lens.x, f32::NAN), DeviceBuf::filled(lens.x, f32::NAN));
            let plane = h * w;
            let (fa, fb) = pointwise_forward_operands(&g);
            let (grid, block) = dims(conv_forward_shape(kind, &g));
            launch(grid, block, |ctx| unsafe {
                pulsefocus_gpu_device::gemm::gemm(ctx, c_out, plane, c_in, 1.0, wt.ptr(), fa.row, fa.col, fa.batch, x.ptr(), fb.row, fb.col, fb.batch, 0.0, y_gemm.ptr(), plane, c_out * plane)
            });
            let (da, db) = pointwise_backward_data_operands(&g);
            let (grid, block) = dims(conv_backward_data_shape(kind, &g));
            launch(grid, block, |ctx| unsafe {
                pulsefocus_gpu_device::gemm::gemm(ctx, c_in, plane, c_out, 1.0, wt.ptr(), da.row, da.col, da.batch, dy.ptr(), db.row, db.col, db.batch, 0.0, dx_gemm.ptr(), plane, c_in * plane)
            });
            let (grid, block) = dims(conv_forward_shape(ConvKind::Tiled, &g));
            launch(grid, block, |ctx| unsafe {
                kernels::conv2d_forward(ctx, x.ptr(), wt.ptr(), std::ptr::null(), y_conv.ptr(), batch, c_in, h, w, c_out, 1, 1, 1, 1, 0, 0, 1, 1, 1)
            });
            let (grid, block) = dims(conv_backward_data_shape(ConvKind::Tiled, &g));
            launch(grid, block, |ctx| unsafe {
                kernels::conv2d_backward_data(ctx, dy.ptr(), wt.ptr(), dx_conv.ptr(), batch, c_in, h, w, c_out, 1, 1, 1, 1, 0, 0, 1, 1, 1)
            });
            prop_assert_eq!(y_gemm.to_vec(), y_conv.to_vec());
            prop_assert_eq!(dx_gemm.to_vec(), dx_conv.to_vec());
        }
    }
}
