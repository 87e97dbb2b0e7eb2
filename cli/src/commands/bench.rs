//! `pulsefocus bench train-step`: times training steps (forward, the
//! architecture's loss, backward, the optimizer's update) on a synthetic batch
//! after a warm-up, with
//! no data loading, and reports images per second and peak memory. Users run
//! it to see whether a model, batch and input size fit their device before
//! they train. `--device` picks the CPU or the GPU as for `train`. CPU
//! threads: rayon's pool (`RAYON_NUM_THREADS`, default all cores).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args as ClapArgs, Subcommand};
use pulsefocus_core::config::Config;
use pulsefocus_core::detector::{Detector, ModelSpec};
use pulsefocus_core::finetune::build_detector;
use pulsefocus_core::models::{Yolov3, Yolov3Detector, Yolov3Spec};
use pulsefocus_core::train::{SyntheticBatch, TrainConfig, Trainer};
use pulsefocus_core::{config, Backend};

use super::device::{DeviceArg, OnBackend};

#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time N training steps on synthetic input; print images/s and peak memory.
    TrainStep(TrainStepArgs),
}

#[derive(ClapArgs, Debug)]
pub struct TrainStepArgs {
    /// Built-in model: yolov3_mobilenet_v1, yolov3_darknet or small (ignored with -c).
    #[arg(long, default_value = "yolov3_mobilenet_v1")]
    pub model: String,
    /// Config file: the model (backbone, head, class count) comes from it.
    #[arg(short = 'c', long, value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// Config overrides `key=value` (PaddleDetection's `-o`).
    #[arg(short = 'o', long = "opt", num_args = 1.., value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Class count of a built-in model (default 20); with -c use -o num_classes=N.
    #[arg(long)]
    pub classes: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Input size in pixels (square; a multiple of 32 for YOLOv3 and FPN).
    #[arg(long, default_value_t = 320)]
    pub size: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first (the first step also plans memory).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Print one JSON object: {"images_per_second": f, "planned_bytes": n,
    /// "peak_rss_bytes": n}, plus "peak_device_bytes": n on a GPU
    /// (`planned_bytes`: what `Trainer::plan` sized for the batch and size).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::TrainStep(a) => train_step(a),
    }
}

/// Where the timed model comes from.
enum Model {
    /// A config's model with its optimizer.
    Config(Box<Config>),
    BuiltIn(Yolov3Spec),
}

fn model_spec(args: &TrainStepArgs) -> anyhow::Result<(String, Model)> {
    if let Some(path) = &args.config {
        if args.classes.is_some() {
            bail!("--classes is for built-in models; with -c use -o num_classes=N");
        }
        let overrides = config::parse_overrides(&args.overrides)?;
        let cfg = config::load(path, &overrides)?;
        super::config_args::print_warnings(path, &cfg);
        return Ok((path.display().to_string(), Model::Config(Box::new(cfg))));
    }
    if !args.overrides.is_empty() {
        bail!("-o needs a config file (-c)");
    }
    let classes = args.classes.unwrap_or(20);
    if classes == 0 {
        bail!("--classes must be at least 1");
    }
    let spec = Yolov3Spec::by_name(&args.model, classes).with_context(|| {
        format!(
            "unknown model {:?}; built-in models: {}",
            args.model,
            Yolov3Spec::BUILT_IN_NAMES.join(", ")
        )
    })?;
    Ok((args.model.clone(), Model::BuiltIn(spec)))
}

fn train_step(args: TrainStepArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    if args.size == 0 {
        bail!("--size must be at least 1");
    }
    let (name, model) = model_spec(&args)?;
    let spec = match &model {
        Model::Config(config) => config.model_spec(),
        Model::BuiltIn(spec) => ModelSpec::Yolov3(spec.clone()),
    };
    if let Some((multiple, why)) = size_multiple(&spec) {
        if !args.size.is_multiple_of(multiple) {
            bail!(
                "--size {} is not a multiple of {multiple} ({why})",
                args.size
            );
        }
    }
    let device = args.device.clone();
    device.run_on(TrainStep {
        args,
        name,
        model,
        spec,
    })
}

/// The timed steps, on whichever backend `--device` picked.
struct TrainStep {
    args: TrainStepArgs,
    name: String,
    model: Model,
    spec: ModelSpec,
}

impl OnBackend for TrainStep {
    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<()> {
        let TrainStep {
            args,
            name,
            model,
            spec,
        } = self;
        let (detector, train_config): (Box<dyn Detector<B>>, _) = match model {
            Model::Config(config) => (build_detector(backend, &config, 0), config.train_config()),
            Model::BuiltIn(spec) => (
                Box::new(Yolov3Detector::new(Yolov3::new(backend, spec, 0))),
                TrainConfig::yolov3(),
            ),
        };
        let classes = spec.foreground_classes();
        let mut trainer = Trainer::new(detector, train_config);
        let planned = trainer.plan(args.batch, args.size);
        let mut data = SyntheticBatch::new(args.batch, args.size, classes, 1);
        if !matches!(spec, ModelSpec::Yolov3(_)) {
            // SSD's and Faster R-CNN's class 0 is the background: objects
            // are 1 and up.
            data.number_from_one();
        }
        let gt = data.ground_truth();
        for _ in 0..args.warmup {
            trainer.step(&data.images, args.batch, [args.size, args.size], &gt, &[]);
        }
        backend.synchronize();
        let start = Instant::now();
        let mut last = None;
        for _ in 0..args.steps {
            last = Some(trainer.step(&data.images, args.batch, [args.size, args.size], &gt, &[]));
        }
        backend.synchronize();
        // Figures of steps the device skipped after a failure mean nothing.
        backend.check()?;
        let seconds = start.elapsed().as_secs_f64();
        let images_per_second = (args.batch * args.steps) as f64 / seconds;
        let peak_rss = peak_rss_bytes()?;
        let peak_device = backend.peak_device_bytes();
        if args.json {
            let mut out = serde_json::json!({
                "images_per_second": images_per_second,
                "planned_bytes": planned,
                "peak_rss_bytes": peak_rss,
            });
            if let Some(bytes) = peak_device {
                out["peak_device_bytes"] = bytes.into();
            }
            println!("{out}");
            return Ok(());
        }
        let loss = last.map_or(f32::NAN, |r| r.loss.total());
        println!(
            "{name}: {classes} classes, batch {} at {}x{}, {} on {}",
            args.batch,
            args.size,
            args.size,
            if args.steps == 1 {
                "1 step".to_string()
            } else {
                format!("{} steps", args.steps)
            },
            backend.name()
        );
        let device_memory = peak_device.map_or(String::new(), |b| {
            format!(", peak device memory {}", mib(b))
        });
        println!(
            "{images_per_second:.2} images/s ({:.3} s/step), planned {}{device_memory}, peak RSS {}, last loss {loss:.3}",
            seconds / args.steps as f64,
            mib(planned),
            mib(peak_rss)
        );
        Ok(())
    }
}

/// The multiple every input side must be, and why, for models that add or
/// concatenate upsampled maps to the backbone's: every stride must divide the
/// input. SSD's maps and Faster R-CNN C4's single stride-16 map take any size
/// (300 and 800 in their configs).
fn size_multiple(spec: &ModelSpec) -> Option<(usize, &'static str)> {
    match spec {
        ModelSpec::Yolov3(_) => Some((32, "YOLOv3's largest stride")),
        ModelSpec::FasterRcnn(s) if s.fpn.is_some() => {
            Some((32, "the FPN's deepest backbone stride"))
        }
        ModelSpec::MaskRcnn(s) if s.faster_rcnn.fpn.is_some() => {
            Some((32, "the FPN's deepest backbone stride"))
        }
        ModelSpec::CascadeRcnn(_) => Some((32, "the FPN's deepest backbone stride")),
        ModelSpec::RetinaNet(_) => Some((128, "RetinaNet's coarsest level (P7)")),
        ModelSpec::Ssd(_) | ModelSpec::FasterRcnn(_) | ModelSpec::MaskRcnn(_) => None,
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// The process's peak resident memory (`VmHWM` in /proc/self/status).
fn peak_rss_bytes() -> anyhow::Result<usize> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("/proc/self/status has no VmHWM line")?;
    let kib: usize = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("/proc/self/status: cannot read {line:?}"))?;
    Ok(kib * 1024)
}
