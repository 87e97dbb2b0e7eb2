//! Layers, each with its forward and backward side by side, written once
//! against `Backend`.
//!
//! Ownership, the same for every layer:
//! - a layer owns its parameters, their gradients, its output, and whatever
//!   it saved for backward (batch statistics);
//! - the input is the previous layer's output: `forward(x)` reads it and
//!   `backward(x, dy, dx)` is handed it again, so nothing is copied;
//! - input gradients go into a tensor the caller passes (`dx`), so a model
//!   can reuse a few gradient buffers for the whole backward pass; `None`
//!   skips the input gradient (the first layer needs none);
//! - buffers are sized on the first call for an input shape and reused after
//!   (`Tensor::reshape_reuse`); `planned_bytes` sums what a layer holds.
//!
//! Every backward overwrites its outputs (parameter gradients included).

pub mod activation;
pub mod add;
pub mod batch_norm;
pub mod concat;
pub mod conv2d;
pub mod conv_transpose2d;
pub mod fc;
pub mod global_avg_pool;
pub mod l2_norm;
pub mod max_pool;
pub mod roi_align;
pub mod sigmoid;
pub mod upsample;

pub use activation::ActivationLayer;
pub use add::Add;
pub use batch_norm::BatchNorm;
pub use concat::Concat;
pub use conv2d::{Conv2d, Conv2dConfig};
pub use conv_transpose2d::{ConvTranspose2d, ConvTranspose2dConfig};
pub use fc::FullyConnected;
pub use global_avg_pool::GlobalAvgPool;
pub use l2_norm::L2Norm;
pub use max_pool::MaxPool2d;
pub use roi_align::RoiAlign;
pub use sigmoid::Sigmoid;
pub use upsample::Upsample2x;

#[cfg(test)]
pub(crate) mod test_util {
    use crate::cpu::CpuBackend;
    use crate::tensor::Tensor;

    pub fn cpu() -> CpuBackend {
        CpuBackend::new()
    }

    pub fn tensor(shape: &[usize], seed: u64) -> Tensor<CpuBackend> {
        let n = shape.iter().product();
        Tensor::from_host(&cpu(), shape, &crate::gradcheck::random_vec(seed, n))
    }
}
