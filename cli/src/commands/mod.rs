//! One module per subcommand.

pub mod dataset;
pub mod synth;
pub mod x2coco;
