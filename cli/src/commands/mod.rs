//! One module per subcommand.

pub mod bench;
pub mod config;
pub mod config_args;
pub mod convert_weights;
pub mod dataset;
pub mod demo;
pub mod device;
pub mod download;
pub mod eval;
pub mod infer;
pub mod inspect;
pub mod plan;
pub mod synth;
pub mod train;
pub mod x2coco;
