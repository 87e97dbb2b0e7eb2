//! The two steps `pulsefocus demo` adds around a fine-tune: scoring the
//! starting point (the pretrained weights as the loading rules apply them,
//! before any step) and drawing a model's detections on a few evaluation
//! images, so the user sees what the numbers mean.

use std::path::{Path, PathBuf};

use pulsefocus_formats::coco_results::CocoResult;
use pulsefocus_formats::dataset::Dataset;
use pulsefocus_formats::draw::{self, Detection};
use pulsefocus_formats::weights_source::Download;
use pulsefocus_formats::{image, Error, Result};

use super::{evaluate_config, start_model, EvalResult};
use crate::backend::Backend;
use crate::config::Config;

/// Evaluates the model `train` would start from with this `seed` (see
/// [`start_model`]), on `backend`.
pub fn evaluate_start<B: Backend>(
    backend: &B,
    config_path: &Path,
    config: &Config,
    weights_cache: &Path,
    seed: u64,
    dataset: &Dataset,
    on_download: &mut dyn FnMut(Download),
) -> Result<EvalResult> {
    let (mut model, _) = start_model(
        backend,
        config_path,
        config,
        weights_cache,
        seed,
        on_download,
    )?;
    evaluate_config(model.as_mut(), config, config_path, dataset)
}

/// Draws the detections scoring at least `threshold` on the first `count`
/// images of `dataset`, writing `<out_dir>/<image stem>.png`. Category ids
/// are those `evaluate` gives VOC datasets: class index + 1.
pub fn draw_samples(
    dataset: &Dataset,
    detections: &[CocoResult],
    threshold: f64,
    count: usize,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut written = Vec::new();
    for record in dataset.records.iter().take(count) {
        let mut picture = image::decode_file(&record.image_path)?;
        let mut shown: Vec<&CocoResult> = detections
            .iter()
            .filter(|d| d.image_id == record.id && d.score >= threshold)
            .collect();
        // Best first: their labels get the best places.
        shown.sort_by(|a, b| b.score.total_cmp(&a.score));
        let drawn: Vec<Detection> = shown
            .into_iter()
            .map(|det| {
                let class = (det.category_id - 1).max(0) as usize;
                let name = dataset
                    .class_names
                    .get(class)
                    .map(String::as_str)
                    .unwrap_or("?");
                let [x, y, w, h] = det.bbox;
                Detection {
                    bbox: [x, y, x + w, y + h].map(|v| v as f32),
                    class: class as u32,
                    label: format!("{name} {:.2}", det.score),
                    // Drawn from box results (`bbox.json`'s).
                    mask: None,
                }
            })
            .collect();
        draw::draw_detections(&mut picture, &drawn);
        let stem = record
            .image_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| record.id.to_string());
        let path = out_dir.join(format!("{stem}.png"));
        image::write_png(&picture, &path)?;
        written.push(path);
    }
    Ok(written)
}
