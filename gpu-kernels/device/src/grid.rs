//! Index helpers shared by the kernels.
use crate::Ctx;

/// Calls `f(i)` for each `i < n` this thread owns in a grid-stride loop: any
/// 1-D launch covers all `n` elements, whatever its size.
#[inline(always)]
pub fn grid_stride(ctx: &Ctx, n: u32, mut f: impl FnMut(usize)) {
    let stride = ctx.grid_dim_x() * ctx.block_dim_x();
    let mut i = ctx.block_x() * ctx.block_dim_x() + ctx.thread_x();
    while i < n {
        f(i as usize);
        i += stride;
    }
}
