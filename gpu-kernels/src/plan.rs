//! Argument checks and launch shapes for every kernel: pure functions, so the
//! rules are tested on any machine (against the device crate's CPU grid
//! emulator, using exactly these grids) and the GPU launch only adds the
//! driver call. Kernels index with `u32`, so every tensor must have fewer
//! than 2^32 elements; each check names the kernel and the argument.
use std::fmt;

use pulsefocus_gpu_device::conv::ConvGeometry;
use pulsefocus_gpu_device::nms::{NMS_BLOCK, NMS_MAX_BOXES, NMS_REDUCE_THREADS};
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

/// `arg` must hold exactly `want` elements.
pub fn expect_len(
    kernel: &'static str,
    arg: &str,
    got: usize,
    want: usize,
) -> Result<(), PlanError> {
    if got == want {
        Ok(())
    } else {
        fail(kernel, format!("{arg} has {got} elements, expected {want}"))
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

/// Strided GEMM operand `rows x cols`: the furthest element must be inside.
pub fn gemm_operand(
    arg: &str,
    len: usize,
    rows: u32,
    cols: u32,
    row_stride: u32,
    col_stride: u32,
) -> Result<(), PlanError> {
    if rows == 0 || cols == 0 {
        return fail(
            "gemm",
            format!("{arg} is {rows}x{cols}; GEMM needs non-empty operands"),
        );
    }
    let last = (rows as u64 - 1) * row_stride as u64 + (cols as u64 - 1) * col_stride as u64;
    if last >= len as u64 {
        return fail("gemm", format!("{arg} ({rows}x{cols}, strides {row_stride},{col_stride}) reaches element {last} of {len}"));
    }
    Ok(())
}

/// Which convolution kernels a geometry uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// Implicit GEMM on the tile engine (any groups).
    Tiled,
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
        g.batch, g.c_in, g.h, g.w, g.c_out, g.k_h, g.k_w, g.stride, g.groups,
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
    if g.h + 2 * g.pad < g.k_h || g.w + 2 * g.pad < g.k_w {
        return fail(
            kernel,
            format!(
                "{}x{} kernel is larger than the padded {}x{} input",
                g.k_h, g.k_w, g.h, g.w
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
        ConvKind::Tiled => tiled(g.cout_g(), g.batch * g.out_h() * g.out_w(), g.groups),
        ConvKind::Depthwise => elementwise(g.batch * g.c_out * g.out_h() * g.out_w()),
    }
}

pub fn conv_backward_data_shape(kind: ConvKind, g: &ConvGeometry) -> LaunchShape {
    match kind {
        ConvKind::Tiled => tiled(g.cin_g(), g.batch * g.h * g.w, g.groups),
        ConvKind::Depthwise => elementwise(g.batch * g.c_in * g.h * g.w),
    }
}

pub fn conv_backward_filter_shape(kind: ConvKind, g: &ConvGeometry) -> LaunchShape {
    match kind {
        ConvKind::Tiled => tiled(g.cout_g(), g.filter_len(), g.groups),
        ConvKind::Depthwise => LaunchShape {
            grid: (g.c_in * g.k_h * g.k_w, 1, 1),
            block: (REDUCE_THREADS, 1, 1),
        },
    }
}

/// NMS over `candidates` boxes: the sort length and the mask grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NmsPlan {
    /// Scores sorted (a power of two at least the score count).
    pub padded: u32,
    pub col_blocks: u32,
}

pub fn nms(scores: usize, top_k: u32) -> Result<NmsPlan, PlanError> {
    let count = index_count("nms", "scores", scores)?;
    if count == 0 {
        return fail("nms", "no scores".into());
    }
    if top_k == 0 || top_k > NMS_MAX_BOXES {
        return fail("nms", format!("top_k {top_k} is outside 1..={NMS_MAX_BOXES} (the on-device reduce keeps one bit per candidate in shared memory)"));
    }
    let padded = count.checked_next_power_of_two().ok_or(PlanError {
        kernel: "nms",
        message: format!("{count} scores is too many to sort"),
    })?;
    Ok(NmsPlan {
        padded,
        col_blocks: top_k.min(count).div_ceil(NMS_BLOCK),
    })
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

pub fn nms_mask_shape(candidates: u32) -> LaunchShape {
    let blocks = candidates.div_ceil(NMS_BLOCK);
    LaunchShape {
        grid: (blocks, blocks, 1),
        block: (NMS_BLOCK, 1, 1),
    }
}

pub const NMS_REDUCE_SHAPE: LaunchShape = LaunchShape {
    grid: (1, 1, 1),
    block: (NMS_REDUCE_THREADS, 1, 1),
};

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
            stride: 1,
            pad: 0,
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
            expect_len("add", "b", 3, 4).unwrap_err().to_string(),
            "kernel add: b has 3 elements, expected 4"
        );
        assert!(gemm_operand("a", 11, 3, 4, 4, 1).is_err());
        assert!(gemm_operand("a", 12, 3, 4, 4, 1).is_ok());
    }

    #[test]
    fn nms_plan_and_sort_stages() {
        assert_eq!(
            nms(1000, 1000).unwrap(),
            NmsPlan {
                padded: 1024,
                col_blocks: 16
            }
        );
        assert_eq!(
            nms(5, 1000).unwrap(),
            NmsPlan {
                padded: 8,
                col_blocks: 1
            }
        );
        assert!(nms(10, 40_000).is_err());
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
            let geo = ConvGeometry { batch, c_in: c, h: hw, w: hw, c_out: c, k_h: k, k_w: k, stride, pad: k / 2, groups };
            let (kind, lens) = conv("conv2d_forward", &geo).unwrap();
            let x = DeviceBuf::filled(lens.x, 1.0f32);
            let w = DeviceBuf::filled(lens.weight, 1.0f32);
            let y = DeviceBuf::filled(lens.y, f32::NAN);
            let (grid, block) = dims(conv_forward_shape(kind, &geo));
            let g = geo;
            match kind {
                ConvKind::Tiled => launch(grid, block, |ctx| unsafe {
                    kernels::conv2d_forward(ctx, x.ptr(), w.ptr(), std::ptr::null(), y.ptr(), g.batch, g.c_in, g.h, g.w, g.c_out, g.k_h, g.k_w, g.stride, g.pad, g.groups)
                }),
                ConvKind::Depthwise => launch(grid, block, |ctx| unsafe {
                    kernels::depthwise_conv2d_forward(ctx, x.ptr(), w.ptr(), y.ptr(), g.batch, g.c_in, g.h, g.w, g.k_h, g.k_w, g.stride, g.pad)
                }),
            }
            prop_assert!(y.to_vec().iter().all(|v| v.is_finite() && *v >= 1.0));
        }
    }
}
