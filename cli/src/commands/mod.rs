//! One module per subcommand.
pub mod convert_weights;
pub mod inspect;
