//! GPU backend: kernels written in Rust, compiled to PTX, launched through the
//! CUDA driver loaded at run time (so the same binary runs without any NVIDIA
//! library).
