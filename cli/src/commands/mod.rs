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

/// Prints what a reader accepted but the user should hear of (the library
/// returns these; it never prints), one line each on stderr.
pub fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}
