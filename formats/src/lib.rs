//! Readers and writers for the files pulsefocus meets: Paddle checkpoints in
//! every layout PaddleDetection publishes, safetensors, COCO and VOC datasets,
//! and images. Knows nothing of training.

pub mod atomic;
pub mod checkpoint;
pub mod dataset;
pub mod draw;
pub mod error;
pub mod image;

pub use checkpoint::{Bytes, Checkpoint, DType, RawTensor};
pub use error::{Error, Result};
