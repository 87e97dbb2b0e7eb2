//! `pulsefocus infer -c CONFIG -o weights=PATH (--infer_img IMG | --infer_dir
//! DIR) [--output_dir DIR] [--draw_threshold 0.5]`: detects objects in
//! pictures as PaddleDetection's `tools/infer.py` does. For each input
//! `NAME.EXT` it writes `OUTPUT_DIR/NAME.EXT` (the picture with boxes and
//! "class score" labels, same format) and `OUTPUT_DIR/NAME.json` (every
//! detection at or above the threshold, boxes in original pixels). A model
//! with masks (Mask R-CNN) also draws each detection's mask, translucent in
//! a colour of its own under its box, and lists it in the JSON as
//! `segmentation`, a COCO RLE as `segm.json` writes it. The model runs on
//! the backend `--device` picks.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args as ClapArgs;
use pulsefocus_core::config::Config;
use pulsefocus_core::finetune::build_detector;
use pulsefocus_core::finetune::predict::{class_names, infer_reader, ImageInput, Predictor};
use pulsefocus_core::finetune::weights::load_weights;
use pulsefocus_core::Backend;
use pulsefocus_formats::atomic::write_bytes;
use pulsefocus_formats::coco_results::segmentation_json;
use pulsefocus_formats::draw::{draw_detections, Detection};
use pulsefocus_formats::image::{decode_file, write};

use super::config_args::ConfigArgs;
use super::device::{DeviceArg, OnBackend};
use super::print_warnings;

/// The picture formats `--infer_dir` picks up, as PaddleDetection's list.
const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "ppm"];

#[derive(ClapArgs)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["infer_img", "infer_dir"])))]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// One picture to run on.
    #[arg(long = "infer_img", value_name = "IMG")]
    pub infer_img: Option<PathBuf>,
    /// Every picture (jpg, jpeg, png, bmp, ppm) in this directory.
    #[arg(long = "infer_dir", value_name = "DIR")]
    pub infer_dir: Option<PathBuf>,
    /// Where the drawn pictures and JSON files go.
    #[arg(long = "output_dir", value_name = "DIR", default_value = "output")]
    pub output_dir: PathBuf,
    /// Detections below this score are neither drawn nor listed.
    #[arg(long = "draw_threshold", default_value_t = 0.5)]
    pub draw_threshold: f32,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // The config and the inputs are checked before any device is opened.
    let config = args.config.load()?;
    let images = input_images(&args)?;
    args.device.run_on(Inference {
        args: &args,
        config,
        images,
    })
}

/// The detections on every input picture, on the backend `--device` picked.
struct Inference<'a> {
    args: &'a Args,
    config: Config,
    images: Vec<PathBuf>,
}

impl OnBackend for Inference<'_> {
    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<()> {
        let Inference {
            args,
            config,
            images,
        } = self;
        let config_path = &args.config.config;
        let weights = config.weights.as_deref().with_context(|| {
            format!(
                "{}: no weights to run; pass -o weights=PATH",
                config_path.display()
            )
        })?;
        let mut model = build_detector(backend, &config, 0);
        print_warnings(&load_weights(model.net_mut(), Path::new(weights))?);
        let (reader_name, reader) = infer_reader(&config, config_path)?;
        let input = ImageInput::of_reader(reader, reader_name, config_path, config.arch())?;
        // A TestReader is usually a bare ImageFolder: the names of the classes
        // trained on are in the EvalReader's dataset when there is one.
        let names = class_names(
            &config,
            config_path,
            config.eval_reader.as_ref().unwrap_or(reader),
        )?;
        let mut predictor = Predictor::new(backend);
        std::fs::create_dir_all(&args.output_dir)
            .with_context(|| format!("creating {}", args.output_dir.display()))?;

        for path in &images {
            let mut image = decode_file(path)?;
            let detections = predictor.predict_image(model.as_mut(), &image, &input);
            // A device failure makes the detections meaningless: stop here.
            backend.check()?;
            // One mask per detection, in the same order, where the model has them.
            let masks = model.masks().and_then(|m| m.first());
            if let Some(masks) = masks {
                anyhow::ensure!(
                    masks.len() == detections.len(),
                    "{}: the model gave {} masks for {} detections",
                    path.display(),
                    masks.len(),
                    detections.len()
                );
            }
            let mut kept: Vec<_> = detections
                .iter()
                .enumerate()
                .filter(|(_, d)| d.score >= args.draw_threshold)
                .collect();
            // Best first: their labels get the best places, and the JSON
            // lists them in that order.
            kept.sort_by(|(_, a), (_, b)| b.score.total_cmp(&a.score));
            let mut listed = Vec::with_capacity(kept.len());
            let mut drawn = Vec::with_capacity(kept.len());
            for &(k, d) in &kept {
                let name = names.get(d.class).map(String::as_str).unwrap_or("?");
                let mask = masks.map(|m| m[k].clone());
                let mut entry = serde_json::json!({
                    "class": d.class,
                    "class_name": name,
                    "score": d.score,
                    "bbox": d.bbox,
                });
                if let Some(mask) = &mask {
                    entry["segmentation"] = segmentation_json(mask);
                }
                listed.push(entry);
                drawn.push(Detection {
                    bbox: d.bbox,
                    class: d.class as u32,
                    label: format!("{name} {:.2}", d.score),
                    mask,
                });
            }
            draw_detections(&mut image, &drawn);
            let file_name = path
                .file_name()
                .context("an image path without a file name")?;
            let picture = args.output_dir.join(file_name);
            write(&image, &picture)?;
            let stem = Path::new(file_name).with_extension("json");
            let json_path = args.output_dir.join(stem);
            let json = serde_json::json!({
                "image": path.display().to_string(),
                "detections": listed,
            });
            write_bytes(&json_path, serde_json::to_string_pretty(&json)?.as_bytes())?;
            println!(
                "{}: {} detections -> {}",
                path.display(),
                kept.len(),
                picture.display()
            );
        }
        Ok(())
    }
}

/// `--infer_img`, or the pictures in `--infer_dir` in name order.
fn input_images(args: &Args) -> anyhow::Result<Vec<PathBuf>> {
    if let Some(img) = &args.infer_img {
        anyhow::ensure!(img.is_file(), "{}: no such image file", img.display());
        return Ok(vec![img.clone()]);
    }
    let dir = args
        .infer_dir
        .as_ref()
        .context("--infer_img or --infer_dir")?;
    let mut images = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_image && path.is_file() {
            images.push(path);
        }
    }
    images.sort();
    anyhow::ensure!(
        !images.is_empty(),
        "{}: no images (jpg, jpeg, png, bmp, ppm) in it",
        dir.display()
    );
    Ok(images)
}
