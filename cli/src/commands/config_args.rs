//! The `-c CONFIG -o key=value ...` pair every config-driven command takes
//! (`plan`, `train`, `eval`, `infer`), read the same way everywhere.

use std::path::{Path, PathBuf};

use clap::Args as ClapArgs;
use pulsefocus_core::config::{self, Config};
use pulsefocus_formats::weights_source::default_cache_dir;

#[derive(ClapArgs, Debug, Clone)]
pub struct ConfigArgs {
    /// The config file: PaddleDetection YAML (.yml, .yaml) or RON (.ron).
    #[arg(short = 'c', long = "config")]
    pub config: PathBuf,
    /// Overrides in PaddleDetection's syntax, e.g. `-o TrainReader.batch_size=4
    /// pretrain_weights=PATH finetune_exclude_pretrained_params=['yolo_output']`.
    #[arg(short = 'o', long = "opt", num_args = 1.., value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Where URLs are downloaded (PaddleDetection's cache by default).
    #[arg(long, value_name = "DIR")]
    pub weights_cache: Option<PathBuf>,
}

impl ConfigArgs {
    /// The config with its bases merged and the overrides applied; the
    /// keys that have no effect are named on stderr.
    pub fn load(&self) -> anyhow::Result<Config> {
        let overrides = config::parse_overrides(&self.overrides)?;
        let config = config::load(&self.config, &overrides)?;
        print_warnings(&self.config, &config);
        Ok(config)
    }

    pub fn weights_cache(&self) -> PathBuf {
        self.weights_cache.clone().unwrap_or_else(default_cache_dir)
    }
}

/// `Config::warnings`, one line each, naming the file.
pub fn print_warnings(path: &Path, config: &Config) {
    for line in config.warnings() {
        eprintln!("warning: {}: {line}", path.display());
    }
}
