//! The training engine: tensor type and backends, layers (forward and backward
//! side by side), YOLOv3 models with PaddleDetection's parameter names, loss,
//! decoding, NMS, optimizer, metrics and the transfer-learning loading rules.
//! Knows nothing of the command line.

pub mod data;
pub mod loading;
pub mod models;
pub mod params;

pub use params::ParamSpec;
