//! GPU kernels written once in plain Rust.
//!
//! The same source is compiled two ways:
//! - for `nvptx64-nvidia-cuda` (`#![no_std]`), where each [`kernel!`] becomes an
//!   `extern "ptx-kernel"` entry point and [`Ctx`] reads the PTX special
//!   registers (`../build-ptx.sh` turns this into the committed PTX);
//! - for the host, where each kernel is an ordinary `unsafe fn` taking a
//!   [`Ctx`] built by the grid emulator in [`emu`], which runs the threads of
//!   a block as coroutines that meet at `sync_threads` and share the block's
//!   shared memory, as on the GPU, in more than one order to catch races.
//!   `cargo test` checks every kernel this way against a plain CPU reference.
//!
//! Kernels use raw pointers and never index slices: the PTX build has no
//! panic machinery to call (see the toolchain spec), and the host build then
//! runs exactly the same arithmetic.
#![cfg_attr(target_arch = "nvptx64", no_std)]
#![cfg_attr(
    target_arch = "nvptx64",
    feature(abi_ptx, stdarch_nvptx, asm_experimental_arch)
)]

#[cfg(target_arch = "nvptx64")]
mod ctx_nvptx;
#[cfg(target_arch = "nvptx64")]
pub use ctx_nvptx::Ctx;

#[cfg(not(target_arch = "nvptx64"))]
pub mod emu;
#[cfg(not(target_arch = "nvptx64"))]
pub use emu::Ctx;

mod grid;
pub mod math;
#[cfg(not(target_arch = "nvptx64"))]
pub mod registry;
pub use grid::grid_stride;

pub mod batch_norm;
pub mod bbox_head_loss;
pub mod concat;
pub mod conv;
pub mod elementwise;
pub mod fc;
pub mod gemm;
pub mod global_avg_pool;
pub mod head_rows;
pub mod l2_norm;
pub mod mask_loss;
pub mod mask_paste;
pub mod nms;
pub mod polygon_masks;
pub mod pool;
pub mod proposals;
pub mod rcnn_detect;
pub mod reduce;
pub mod retina_box_loss;
pub mod retinanet_detect;
pub mod retinanet_targets;
pub mod rmsprop;
pub mod roi_align;
pub mod rpn_loss;
pub mod rpn_targets;
pub mod sgd;
pub mod sigmoid_focal_loss;
pub mod ssd_decode;
pub mod ssd_loss;
pub mod tile;
pub mod upsample;
pub mod yolo_decode;

/// Declares a kernel once for both builds.
///
/// `kernel! { pub fn name(ctx, a: *const f32, n: u32) { ... } }` becomes
/// `#[no_mangle] pub unsafe extern "ptx-kernel" fn name(a, n)` on nvptx64 (with
/// `ctx` bound to the zero-sized device [`Ctx`]), and
/// `pub unsafe fn name(ctx: &Ctx, a, n)` on the host, for the emulator.
#[macro_export]
macro_rules! kernel {
    ($(#[$meta:meta])* pub fn $name:ident($ctx:ident $(, $arg:ident : $ty:ty)* $(,)?) $body:block) => {
        $(#[$meta])*
        #[cfg(target_arch = "nvptx64")]
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "ptx-kernel" fn $name($($arg: $ty),*) {
            let $ctx = &$crate::Ctx::new();
            $body
        }

        $(#[$meta])*
        ///
        /// # Safety
        /// Every pointer must be valid for the extents the arguments describe,
        /// and the launch must cover the grid the kernel expects.
        #[cfg(not(target_arch = "nvptx64"))]
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $name($ctx: &$crate::Ctx, $($arg: $ty),*) $body

        /// The kernel as a driver launches it: its parameters' sizes, in the
        /// order of the PTX entry's `.param` list, and a call that reads each
        /// parameter from the packed bytes a launch passes (one pointer per
        /// parameter, as `cuLaunchKernel`'s `kernelParams`).
        #[cfg(not(target_arch = "nvptx64"))]
        #[allow(non_snake_case)]
        pub mod $name {
            /// Bytes of each parameter.
            pub const PARAM_SIZES: &[usize] = &[$(core::mem::size_of::<$ty>()),*];
            /// Whether each parameter is a device pointer.
            pub const PARAM_POINTERS: &[bool] = &[$(<$ty as $crate::registry::Param>::POINTER),*];

            /// Reads each parameter as its declared type and runs the body
            /// for the thread `ctx` describes.
            ///
            /// # Safety
            /// `params` holds one pointer per parameter, each to at least that
            /// parameter's size in bytes, and the kernel's own contract holds.
            #[allow(unused_assignments, unused_mut, unused_variables)]
            pub unsafe fn call_packed(ctx: &$crate::Ctx, params: &[*const u8]) {
                let mut index = 0usize;
                $(
                    let $arg: $ty = core::ptr::read_unaligned(params[index] as *const $ty);
                    index += 1;
                )*
                super::$name(ctx, $($arg),*)
            }
        }
    };
}

/// A block-wide shared-memory array of `$len` elements of `$ty`, as a raw
/// pointer. Call it once per array, at the top level of a kernel body (not in
/// a loop): on the GPU each call site declares its own `.shared` variable; in
/// the emulator each call carves the next piece of the block's shared buffer,
/// and every thread makes the same calls in the same order, so all threads of
/// a block see the same addresses.
#[macro_export]
macro_rules! shared_array {
    ($ctx:ident, $ty:ty, $len:expr) => {{
        #[cfg(target_arch = "nvptx64")]
        let ptr: *mut $ty = {
            let _ = $ctx;
            let p: u64;
            core::arch::asm!(
                "{{ .shared .align 16 .b8 smem[{bytes}]; cvta.shared.u64 {p}, smem; }}",
                bytes = const ($len) * core::mem::size_of::<$ty>(),
                p = out(reg64) p,
            );
            p as *mut $ty
        };
        #[cfg(not(target_arch = "nvptx64"))]
        let ptr: *mut $ty = $ctx.shared::<$ty>($len);
        ptr
    }};
}

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Kernels have no panicking paths by design; should one appear, stop the
    // kernel with a launch error rather than looping forever.
    unsafe { core::arch::nvptx::trap() }
}
