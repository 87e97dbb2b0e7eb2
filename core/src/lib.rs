//! The training engine: tensor type and backends, layers (forward and backward
//! side by side), YOLOv3 models with PaddleDetection's parameter names, loss,
//! decoding, NMS, optimizer, metrics and the transfer-learning loading rules.
//! Knows nothing of the command line.

pub mod config;
pub mod loading;
pub mod models;
pub mod data;
pub mod backend;
pub mod cpu;
pub mod gradcheck;
pub mod layers;
pub mod params;
pub mod tensor;
pub mod loading;
pub mod metrics;
pub mod optim;
pub mod params;
pub mod tensor;
pub mod train;
pub mod yolo;

pub use backend::Backend;
pub use cpu::CpuBackend;
pub use params::ParamSpec;
pub use tensor::Tensor;
