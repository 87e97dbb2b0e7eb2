//! The training engine: tensor type and backends, layers (forward and backward
//! side by side), YOLOv3 models with PaddleDetection's parameter names, loss,
//! decoding, NMS, optimizer, metrics and the transfer-learning loading rules.
//! Knows nothing of the command line.

pub mod backend;
pub mod box_coder;
pub mod config;
pub mod cpu;
pub mod data;
pub mod detector;
pub mod finetune;
#[cfg(test)]
mod fixtures;
pub mod gradcheck;
pub mod layers;
pub mod loading;
pub mod losses;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod params;
mod python_re;
pub mod rcnn;
pub mod retinanet;
pub mod ssd;
pub mod tensor;
pub mod train;
pub mod yolo;

pub use backend::Backend;
pub use cpu::CpuBackend;
pub use params::ParamSpec;
pub use tensor::Tensor;
