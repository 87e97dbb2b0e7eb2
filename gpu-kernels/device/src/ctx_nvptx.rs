//! The device side of [`Ctx`]: a zero-sized handle whose methods read the PTX
//! special registers. Everything inlines away.
use core::arch::nvptx;

/// Thread and block coordinates of the running GPU thread.
pub struct Ctx;

impl Ctx {
    #[inline(always)]
    pub const fn new() -> Ctx {
        Ctx
    }
    #[inline(always)]
    pub fn thread_x(&self) -> u32 {
        unsafe { nvptx::_thread_idx_x() }
    }
    #[inline(always)]
    pub fn thread_y(&self) -> u32 {
        unsafe { nvptx::_thread_idx_y() }
    }
    #[inline(always)]
    pub fn block_x(&self) -> u32 {
        unsafe { nvptx::_block_idx_x() }
    }
    #[inline(always)]
    pub fn block_y(&self) -> u32 {
        unsafe { nvptx::_block_idx_y() }
    }
    #[inline(always)]
    pub fn block_z(&self) -> u32 {
        unsafe { nvptx::_block_idx_z() }
    }
    #[inline(always)]
    pub fn block_dim_x(&self) -> u32 {
        unsafe { nvptx::_block_dim_x() }
    }
    #[inline(always)]
    pub fn block_dim_y(&self) -> u32 {
        unsafe { nvptx::_block_dim_y() }
    }
    #[inline(always)]
    pub fn grid_dim_x(&self) -> u32 {
        unsafe { nvptx::_grid_dim_x() }
    }
    /// `__syncthreads()`: every thread of the block must reach it.
    #[inline(always)]
    pub fn sync_threads(&self) {
        unsafe { nvptx::_syncthreads() }
    }
}
