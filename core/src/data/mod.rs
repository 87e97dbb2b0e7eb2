//! The training input pipeline: decode, augment (PaddleDetection's YOLOv3
//! reader), resize, normalise and batch, on worker threads feeding a bounded
//! queue. See `docs/pipeline.md`.

pub mod batch;
pub mod loader;
pub mod rng;
pub mod sample;
pub mod transforms;

pub use batch::Batch;
pub use loader::{Loader, LoaderConfig, Mode, TrainAugment};
pub use transforms::resize::Interp;
pub use transforms::SampleAugment;
