//! Readers and writers for the files pulsefocus meets: Paddle checkpoints in
//! every layout PaddleDetection publishes, safetensors, COCO and VOC datasets,
//! and images. Knows nothing of training.

pub mod atomic;
pub mod checkpoint;
pub mod coco;
pub mod coco_results;
pub mod dataset;
pub mod dataset_report;
pub mod draw;
pub mod error;
pub mod image;
pub mod load;
pub mod paddle;
pub mod plot;
pub mod rle;
pub mod rng;
pub mod safetensors_io;
pub mod synth;
pub mod voc;
pub mod weights_source;
pub mod x2coco;

pub use checkpoint::{Bytes, Checkpoint, DType, RawTensor};
pub use error::{Error, Result};
pub use load::{load_checkpoint, save_checkpoint, Format};
