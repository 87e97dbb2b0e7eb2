//! One module per subcommand.

pub mod convert_weights;
pub mod dataset;
pub mod device;
pub mod eval;
pub mod inspect;
pub mod synth;
