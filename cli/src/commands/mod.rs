//! One module per subcommand.
pub mod convert_weights;
pub mod inspect;

pub mod bench;
pub mod dataset;
pub mod eval;
pub mod synth;
