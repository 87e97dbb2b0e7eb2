//! Block-wide sums and the reduction kernels built on them (loss totals,
//! bias gradients). Sums run in a fixed order in shared memory, so a result
//! does not depend on thread timing: the same inputs give the same bits.
use crate::{grid_stride, kernel, shared_array, Ctx};

/// Threads per block for every kernel that calls [`block_sum`].
pub const REDUCE_THREADS: u32 = 256;

/// Shared scratch for [`block_sum`]; declare it once at the top of a kernel.
#[macro_export]
macro_rules! reduce_scratch {
    ($ctx:ident) => {
        $crate::shared_array!($ctx, f32, $crate::reduce::REDUCE_THREADS as usize)
    };
}

/// Threads that add up a column of the scratch in [`block_sum`]'s first
/// step; there are as many columns as rows.
const SUM_LANES: u32 = 16;
const _: () = assert!(SUM_LANES * SUM_LANES == REDUCE_THREADS);

/// The sum of `value` over the block's [`REDUCE_THREADS`] threads, returned
/// to every thread. All threads must call it (it synchronises).
///
/// # Safety
/// `scratch` comes from [`reduce_scratch!`] and the block has `REDUCE_THREADS` threads.
#[inline(always)]
pub unsafe fn block_sum(ctx: &Ctx, scratch: *mut f32, value: f32) -> f32 {
    block_reduce(ctx, scratch, value, 0.0, |a, b| a + b)
}

/// `value` of the block's [`REDUCE_THREADS`] threads combined by `combine`
/// from `identity` in a fixed order (the same bits whatever the thread
/// timing), returned to every thread. All threads must call it (it
/// synchronises).
///
/// Two steps of 16 combines instead of an 8-level tree: 3 barriers instead of
/// 10. On a GPU the work is about the same (the first step's loads are
/// consecutive per warp, so free of bank conflicts; the second's are
/// broadcasts), and under the grid emulator, where every barrier costs two
/// coroutine switches per thread, the kernels built on it (batch norm's
/// training passes, the depthwise filter gradient) run about 3 times faster.
///
/// # Safety
/// `scratch` is a shared array of `REDUCE_THREADS` `T`s, and the block has
/// `REDUCE_THREADS` threads.
#[inline(always)]
pub unsafe fn block_reduce<T: Copy>(
    ctx: &Ctx,
    scratch: *mut T,
    value: T,
    identity: T,
    combine: impl Fn(T, T) -> T,
) -> T {
    let tid = ctx.thread_x();
    *scratch.add(tid as usize) = value;
    ctx.sync_threads();
    // Lane l combines the column l, l + 16, l + 32, ... into scratch[l],
    // which no other lane reads.
    if tid < SUM_LANES {
        let mut column = identity;
        let mut row = 0;
        while row < SUM_LANES {
            column = combine(column, *scratch.add((row * SUM_LANES + tid) as usize));
            row += 1;
        }
        *scratch.add(tid as usize) = column;
    }
    ctx.sync_threads();
    let mut total = identity;
    let mut lane = 0;
    while lane < SUM_LANES {
        total = combine(total, *scratch.add(lane as usize));
        lane += 1;
    }
    // The next reduction may overwrite the scratch: wait until all have read it.
    ctx.sync_threads();
    total
}

kernel! {
    /// `partial[block] = sum of this block's grid-stride share of x[0..n]`
    /// (of the squares when `square` is non-zero). Launch with
    /// `REDUCE_THREADS`; the host adds the partials (in f64).
    pub fn sum_blocks(ctx, x: *const f32, n: u32, square: u32, partial: *mut f32) {
        let scratch = shared_array!(ctx, f32, REDUCE_THREADS as usize);
        let mut own = 0.0;
        grid_stride(ctx, n, |i| {
            let v = *x.add(i);
            own += if square != 0 { v * v } else { v };
        });
        let total = block_sum(ctx, scratch, own);
        if ctx.thread_x() == 0 {
            *partial.add(ctx.block_x() as usize) = total;
        }
    }
}

kernel! {
    /// Per-channel sum of an NCHW tensor over N, H and W (a bias gradient):
    /// one block per channel, grid x = `channels`.
    pub fn channel_sum(ctx, x: *const f32, out: *mut f32, batch: u32, channels: u32, plane: u32) {
        let scratch = shared_array!(ctx, f32, REDUCE_THREADS as usize);
        let c = ctx.block_x();
        let mut own = 0.0;
        let mut i = ctx.thread_x();
        while i < batch * plane {
            let (n, p) = (i / plane, i % plane);
            own += *x.add(((n * channels + c) * plane + p) as usize);
            i += REDUCE_THREADS;
        }
        let total = block_sum(ctx, scratch, own);
        if ctx.thread_x() == 0 {
            *out.add(c as usize) = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch, DeviceBuf, Dim3};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10))]
        #[test]
        fn block_partials_add_up(x in prop::collection::vec(-1.0f32..1.0, 0..3000), blocks in 1u32..5, square: bool) {
            let xb = DeviceBuf::new(&x);
            let partial = DeviceBuf::filled(blocks as usize, f32::NAN);
            launch(Dim3::x(blocks), Dim3::x(REDUCE_THREADS), |c| unsafe { sum_blocks(c, xb.ptr(), x.len() as u32, square as u32, partial.ptr()) });
            let got: f64 = partial.to_vec().iter().map(|&v| v as f64).sum();
            let want: f64 = x.iter().map(|&v| if square { v as f64 * v as f64 } else { v as f64 }).sum();
            prop_assert!((got - want).abs() < 1e-3);
        }

        #[test]
        fn channel_sum_matches(batch in 1usize..3, channels in 1usize..4, plane in 1usize..300) {
            let x: Vec<f32> = (0..batch * channels * plane).map(|i| (i % 17) as f32 - 8.0).collect();
            let (xb, out) = (DeviceBuf::new(&x), DeviceBuf::filled(channels, f32::NAN));
            launch(Dim3::x(channels as u32), Dim3::x(REDUCE_THREADS), |c| unsafe {
                channel_sum(c, xb.ptr(), out.ptr(), batch as u32, channels as u32, plane as u32)
            });
            for ch in 0..channels {
                let want: f32 = (0..batch).flat_map(|n| (0..plane).map(move |p| (n, p)))
                    .map(|(n, p)| x[(n * channels + ch) * plane + p]).sum();
                prop_assert_eq!(out.to_vec()[ch], want);
            }
        }
    }
}
