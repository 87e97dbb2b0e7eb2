//! `pulsefocus demo [--json] [--out DIR] [--iters N] [--images N]`: README's
//! first command. In one directory it writes a synthetic dataset of the
//! demo's classes, the bundled pretrained checkpoint of the small model
//! (pretrained by `scripts/make_demo_checkpoint.sh` on other synthetic
//! classes) and the demo config, scores the model it starts from, fine-tunes
//! it excluding `yolo_output` (the class-count dependent outputs), and shows
//! mAP before and after, the loss curve and pictures of the detections.
//!
//! `configs/demo.ron` is the one source of the run's settings: it and its
//! bases are embedded here and written next to the data, so the demo runs
//! from any directory; only paths (and `--iters`) are set in code.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args as ClapArgs;
use pulsefocus_core::config::{self, Config, DataSet, Reader};
use pulsefocus_core::finetune::{self, demo, Event, TrainOptions};
use pulsefocus_core::CpuBackend;
use pulsefocus_formats::atomic;
use pulsefocus_formats::synth::{self, SynthConfig, SynthFormat};

/// The demo config and its bases, as `configs/` holds them.
const CONFIG_FILES: [(&str, &str); 4] = [
    ("demo.ron", include_str!("../../../configs/demo.ron")),
    (
        "_base_/yolov3_head.ron",
        include_str!("../../../configs/_base_/yolov3_head.ron"),
    ),
    (
        "_base_/yolov3_reader.ron",
        include_str!("../../../configs/_base_/yolov3_reader.ron"),
    ),
    (
        "_base_/yolov3_voc_data.ron",
        include_str!("../../../configs/_base_/yolov3_voc_data.ron"),
    ),
];

/// The small model pretrained on synthetic classes the demo does not use.
const PRETRAINED_NAME: &str = "yolov3_small_synth_pretrained.tar";
const PRETRAINED: &[u8] = include_bytes!("../../assets/yolov3_small_synth_pretrained.tar");

/// The demo's classes: the first entries of the synthetic catalogue (the
/// checkpoint was pretrained on later ones).
const DEMO_FIRST_CLASS: usize = 0;
/// Detections drawn on the sample pictures score at least this.
const DRAW_THRESHOLD: f64 = 0.5;
const SAMPLE_PICTURES: usize = 4;

#[derive(ClapArgs)]
pub struct Args {
    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Working directory for the dataset, checkpoint, snapshots and pictures.
    #[arg(long, default_value = "pulsefocus_demo")]
    pub out: PathBuf,
    /// Training iterations (default: the config's max_iters).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Synthetic images to generate (split into train and test).
    #[arg(long, default_value_t = 400)]
    pub images: usize,
    /// Seeds the dataset, the fresh weights, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start from random weights instead of the bundled checkpoint (to see
    /// what the pretraining is worth).
    #[arg(long)]
    pub no_pretrained: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let out = args
        .out
        .canonicalize()
        .with_context(|| format!("resolving {}", args.out.display()))?;

    let config_path = write_config_files(&out.join("configs"))?;
    let mut config = config::load(&config_path, &[])?;
    super::config_args::print_warnings(&config_path, &config);

    let dataset_dir = out.join("dataset").join("synth");
    let synth = synth::write(
        &dataset_dir,
        &SynthConfig {
            classes: config.num_classes,
            first_class: DEMO_FIRST_CLASS,
            images: args.images,
            seed: args.seed,
            format: SynthFormat::Voc,
            ..SynthConfig::default()
        },
    )?;
    eprintln!(
        "dataset: {} training and {} test images of {} in {}",
        synth.train_images,
        synth.val_images,
        synth.class_names.join(", "),
        dataset_dir.display()
    );

    let pretrained = out.join(PRETRAINED_NAME);
    atomic::write_bytes(&pretrained, PRETRAINED)?;
    config.pretrain_weights =
        (!args.no_pretrained).then(|| pretrained.to_string_lossy().into_owned());
    place_run(&mut config, &out, &dataset_dir, args.iters)?;

    // The demo's figures (docs/demo.md) are CPU runs, and the CPU is the
    // device every user has.
    let cpu = CpuBackend::new();
    let weights_cache = out.join("weights_cache");
    let eval_set = finetune::load_dataset_for(&config, &config_path, "EvalReader")?;
    let before = demo::evaluate_start(
        &cpu,
        &config_path,
        &config,
        &weights_cache,
        args.seed,
        &eval_set,
        // The demo's checkpoint is a local file: nothing to download.
        &mut |_| {},
    )?;
    println!("mAP before fine-tuning: {:.4}", before.map);

    let options = TrainOptions {
        seed: args.seed,
        // The only snapshot is the last (see place_run): one evaluation, at the end.
        eval: true,
        resume: None,
        weights_cache,
        start_map: Some(before.map),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let log_every = config.log_iter.max(1) as u64;
    let summary = finetune::train(&cpu, &config_path, &config, &options, &mut |event| {
        log_event(event, log_every)
    })?;
    let after = summary
        .last_eval
        .as_ref()
        .context("the fine-tune ended without its final evaluation")?;
    let samples = demo::draw_samples(
        &eval_set,
        &after.detections,
        DRAW_THRESHOLD,
        SAMPLE_PICTURES,
        &out.join("samples"),
    )?;
    let seconds = started.elapsed().as_secs_f64();

    println!("mAP before fine-tuning: {:.4}", before.map);
    println!(
        "mAP after {} iterations: {:.4} (VOC mAP@0.5 on {} test images)",
        summary.iterations, after.map, after.images
    );
    let map_curve = summary.save_dir.join("map.svg");
    println!("loss curve: {}", summary.loss_curve.display());
    println!("mAP curve: {}", map_curve.display());
    println!(
        "detections drawn on {} test images: {}",
        samples.len(),
        out.join("samples").display()
    );
    println!(
        "fine-tuned weights: {}",
        summary.final_snapshot.params.display()
    );
    // The evaluation at the end keeps the best model; `infer` runs it.
    let best = summary.best_map.map(|(_, map)| {
        let stem = summary.save_dir.join("best_model");
        println!("best model (mAP {map:.4}): {}.pdparams", stem.display());
        stem
    });
    let weights = best
        .clone()
        .unwrap_or_else(|| summary.final_snapshot.params.with_extension(""));
    println!("took {seconds:.0} s");
    // The config's dataset paths are relative: the command runs in `out`.
    println!(
        "next, detect objects in pictures:\n  cd {} && pulsefocus infer -c configs/demo.ron -o weights={} --infer_dir dataset/synth/JPEGImages --output_dir infer",
        out.display(),
        weights.strip_prefix(&out).unwrap_or(&weights).display()
    );
    if args.json {
        let report = serde_json::json!({
            "map_before": before.map,
            "map_after": after.map,
            "seconds": seconds,
            "iterations": summary.iterations,
            "output_dir": out,
            "pretrained": config.pretrain_weights,
            "weights": summary.final_snapshot.params,
            "best_model": best.map(|stem| stem.with_extension("pdparams")),
            "loss_curve": summary.loss_curve,
            "map_curve": map_curve,
            "samples": samples,
        });
        println!("{report}");
    }
    Ok(())
}

/// Writes the embedded config files under `dir`; returns the demo config's path.
fn write_config_files(dir: &Path) -> anyhow::Result<PathBuf> {
    for (name, text) in CONFIG_FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        atomic::write_bytes(&path, text.as_bytes())?;
    }
    Ok(dir.join(CONFIG_FILES[0].0))
}

/// Points the config's readers and save directory into `out`, and with
/// `iters` shortens the run. The only snapshot is the final one, so the
/// run evaluates once, at the end.
fn place_run(
    config: &mut Config,
    out: &Path,
    dataset_dir: &Path,
    iters: Option<usize>,
) -> anyhow::Result<()> {
    let dir = dataset_dir.to_string_lossy().into_owned();
    set_dataset_dir(&mut config.train_reader, &dir);
    for reader in [&mut config.eval_reader, &mut config.test_reader]
        .into_iter()
        .flatten()
    {
        set_dataset_dir(reader, &dir);
    }
    config.save_dir = out.join("output").to_string_lossy().into_owned();
    if let Some(iters) = iters {
        anyhow::ensure!(iters > 0, "--iters must be at least 1");
        config.max_iters = iters;
    }
    config.snapshot_iter = config.max_iters;
    Ok(())
}

fn set_dataset_dir(reader: &mut Reader, dir: &str) {
    match &mut reader.dataset {
        DataSet::COCODataSet(d) => d.dataset_dir = dir.to_string(),
        DataSet::VOCDataSet(d) => d.dataset_dir = dir.to_string(),
        DataSet::ImageFolder(d) => d.dataset_dir = dir.to_string(),
    }
}

/// The load report, and a plain log line every `every` steps (the demo is
/// mostly read in a log or a terminal scrollback, so no progress bar).
fn log_event(event: Event, every: u64) {
    match event {
        // The demo's checkpoint is a local file: nothing downloads.
        Event::Download(_) => {}
        Event::Loaded(report) => println!("{}", report.render()),
        Event::Ready { train_images, .. } => {
            eprintln!("fine-tuning on {train_images} images")
        }
        Event::Step {
            iteration,
            max_iters,
            loss,
            learning_rate,
            images_per_second,
            data_wait,
        } if iteration.is_multiple_of(every) || iteration == max_iters => eprintln!(
            "iter {iteration}/{max_iters} loss {:.3} lr {learning_rate:.2e} {images_per_second:.1} img/s, data wait {:.0}%",
            loss.total(),
            data_wait * 100.0
        ),
        Event::Step { .. } => {}
        Event::Snapshot(paths) => eprintln!("saved {}", paths.params.display()),
        Event::Evaluated { result, .. } => {
            eprintln!("evaluated {} test images", result.images)
        }
    }
}
