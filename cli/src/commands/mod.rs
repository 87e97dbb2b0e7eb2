//! One module per subcommand.

pub mod synth;
