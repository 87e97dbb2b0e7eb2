//! Every method of the core `Backend` trait on the GPU backend against the
//! CPU backend, with the checks of `suite/` (one `#[test]` per method and
//! backend, made by `backend_tests!`).
//!
//! - `cpu`: the reference against itself, which keeps the suite's own
//!   claims about the reference (tails untouched, inputs unchanged) tested.
//! - `emulated`: `GpuBackend` over the emulated device: the same host code
//!   (argument checks, grids, the memory pool), each launch checked against
//!   the committed PTX's `.entry` and run by the CPU grid emulator. Needs no
//!   GPU and runs in every `cargo test`.
//! - `cuda`: `GpuBackend::open()`, the real device. Without one these tests
//!   print `skipped: ...` and pass, unless PULSEFOCUS_REQUIRE_GPU=1 (set by
//!   scripts/gpu-check.sh), where a missing GPU fails them.

mod suite;

use pulsefocus_core::CpuBackend;

backend_tests!(cpu, Some(CpuBackend::new()));

/// The real GPU, or None (printing why) on a machine without one.
fn cuda() -> Option<pulsefocus_gpu::GpuBackend> {
    match pulsefocus_gpu::GpuBackend::open() {
        Ok(backend) => Some(backend),
        Err(err) if std::env::var("PULSEFOCUS_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("PULSEFOCUS_REQUIRE_GPU=1 but {err}")
        }
        Err(err) => {
            println!("skipped: {err}");
            None
        }
    }
}

backend_tests!(cuda, cuda());
