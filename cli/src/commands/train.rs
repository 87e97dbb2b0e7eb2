//! `pulsefocus train -c CONFIG [-o ...] [--eval] [-r SNAPSHOT] [--seed N]`:
//! the fine-tune. Prints the loading report, then a progress bar (plain log
//! lines when stderr is not a terminal) with the loss terms, learning rate,
//! images/s and ETA; snapshots and evaluations are announced as they happen.
//! Ctrl-C stops after the current step and writes a snapshot first.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args as ClapArgs;
use indicatif::{ProgressBar, ProgressStyle};
use pulsefocus_core::config::Config;
use pulsefocus_core::finetune::{self, Event, TrainOptions, TrainSummary};
use pulsefocus_core::Backend;

use super::config_args::ConfigArgs;
use super::device::{DeviceArg, OnBackend};
use super::download::DownloadProgress;

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Evaluate at every snapshot and keep the best model as `best_model`.
    #[arg(long)]
    pub eval: bool,
    /// Resume from a snapshot (`output/NAME/2000` or its `.pdparams`).
    #[arg(
        short = 'r',
        long = "resume_checkpoint",
        alias = "resume",
        value_name = "SNAPSHOT"
    )]
    pub resume: Option<PathBuf>,
    /// Seeds initial weights, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // A bad config is reported before any device is opened.
    let config = args.config.load()?;
    args.device.run_on(Training {
        args: &args,
        config,
    })
}

/// The fine-tune, on the backend `--device` picked.
struct Training<'a> {
    args: &'a Args,
    config: Config,
}

impl OnBackend for Training<'_> {
    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<()> {
        let Training { args, config } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // A second Ctrl-C while the snapshot is written exits at once.
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after this step; writing a snapshot (Ctrl-C again to quit now)");
        });
        let options = TrainOptions {
            seed: args.seed,
            eval: args.eval,
            resume: args.resume.clone(),
            weights_cache: args.config.weights_cache(),
            start_map: None,
            stop,
        };
        let mut progress = Progress::new(
            config.log_smooth_window.max(1) as u64,
            config.log_iter.max(1) as u64,
        );
        let summary = finetune::train(backend, &args.config.config, &config, &options, &mut |e| {
            progress.on_event(e)
        })?;
        progress.finish();
        print_summary(&summary);
        Ok(())
    }
}

fn print_summary(summary: &TrainSummary) {
    let verb = if summary.interrupted {
        "stopped"
    } else {
        "finished"
    };
    println!(
        "{verb} at iteration {}; weights: {}",
        summary.iterations,
        summary.final_snapshot.params.display()
    );
    if let Some((iteration, best)) = summary.best_map {
        println!(
            "best mAP {:.4} (iteration {iteration}): {}",
            best,
            summary.save_dir.join("best_model.pdparams").display()
        );
    }
    println!("loss curve: {}", summary.loss_curve.display());
}

/// The progress bar on a terminal, or a log line every `log_every` steps;
/// the loss shown is smoothed over `window` steps.
struct Progress {
    bar: Option<ProgressBar>,
    window: u64,
    log_every: u64,
    smoothed: f32,
    download: DownloadProgress,
}

impl Progress {
    fn new(window: u64, log_every: u64) -> Self {
        Progress {
            bar: None,
            window,
            log_every,
            smoothed: f32::NAN,
            download: DownloadProgress::default(),
        }
    }

    fn say(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Download(d) => self.download.on_event(d),
            Event::Loaded(report) => {
                println!("{}", report.render());
            }
            Event::Ready {
                train_images,
                eval_images,
                planned_bytes,
                start_iteration,
            } => {
                let eval = eval_images
                    .map(|n| format!(", {n} to evaluate"))
                    .unwrap_or_default();
                eprintln!(
                    "{train_images} training images{eval}; planned memory for a step: {:.1} MiB",
                    planned_bytes as f64 / (1 << 20) as f64
                );
                if start_iteration > 0 {
                    eprintln!("resuming at iteration {start_iteration}");
                }
            }
            Event::Step {
                iteration,
                max_iters,
                loss,
                learning_rate,
                images_per_second,
                data_wait,
            } => {
                let total = loss.total();
                let alpha = 1.0 / self.window as f32;
                self.smoothed = if self.smoothed.is_nan() {
                    total
                } else {
                    self.smoothed + alpha * (total - self.smoothed)
                };
                let terms: Vec<String> = loss
                    .terms()
                    .map(|(name, value)| format!("{name} {value:.3}"))
                    .collect();
                let message = format!(
                    "loss {:.3} ({}) lr {:.2e} {:.1} img/s, data wait {:.0}%",
                    self.smoothed,
                    terms.join(" "),
                    learning_rate,
                    images_per_second,
                    data_wait * 100.0
                );
                if self.bar.is_none() && std::io::stderr().is_terminal() {
                    let bar = ProgressBar::new(max_iters);
                    bar.set_style(
                        ProgressStyle::with_template("{bar:30} {pos}/{len} ETA {eta} {msg}")
                            .expect("valid template"),
                    );
                    self.bar = Some(bar);
                }
                match &self.bar {
                    Some(bar) => {
                        bar.set_position(iteration);
                        bar.set_message(message);
                    }
                    None if iteration.is_multiple_of(self.log_every) || iteration == max_iters => {
                        eprintln!("iter {iteration}/{max_iters} {message}");
                    }
                    None => {}
                }
            }
            Event::Snapshot(paths) => self.say(format!("saved {}", paths.params.display())),
            Event::Evaluated {
                iteration,
                result,
                best,
            } => self.say(format!(
                "iter {iteration}: mAP {:.4}{} on {} images{}",
                result.map,
                // Mask R-CNN: the masks' AP beside the boxes' (which picks
                // the best model, as PaddleDetection's box AP does).
                result
                    .segm_stats
                    .map_or(String::new(), |s| format!(", mask AP {:.4}", s[0])),
                result.images,
                if best { " (best so far)" } else { "" }
            )),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
