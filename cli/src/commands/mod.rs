//! One module per subcommand.
pub mod convert_weights;
pub mod inspect;

pub mod dataset;
pub mod synth;
pub mod eval;
