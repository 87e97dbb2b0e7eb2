//! `pulsefocus config show|convert`: a config as training reads it, with its
//! bases (`_BASE_`, `_READER_`) and `-o` overrides applied and every default
//! filled in, printed as PaddleDetection YAML (`show`) or as RON (`convert`,
//! a self-contained file that plans and trains exactly as the original).

use clap::Subcommand;
use pulsefocus_core::config;

use super::config_args::ConfigArgs;

#[derive(Subcommand)]
pub enum Args {
    /// Print the fully resolved config (includes and overrides applied) as YAML.
    Show(ConfigArgs),
    /// Print the fully resolved config as RON: `config convert -c A.yml > A.ron`.
    Convert(ConfigArgs),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args {
        Args::Show(config) => print!("{}", config::to_yaml(&config.load()?)),
        Args::Convert(config) => println!("{}", config::to_ron(&config.load()?)),
    }
    Ok(())
}
