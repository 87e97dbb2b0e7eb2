//! One module per subcommand.

pub mod convert_weights;
pub mod dataset;
pub mod eval;
pub mod inspect;
pub mod plan;
pub mod synth;
pub mod x2coco;
