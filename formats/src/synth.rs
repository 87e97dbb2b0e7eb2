//! A deterministic synthetic detection dataset: coloured shapes on textured
//! backgrounds, written in VOC and/or COCO layout.
//!
//! Classes come from a fixed catalogue of (colour, shape) pairs; `first_class`
//! picks a slice of it, so a model can be pretrained on one class set and
//! fine-tuned on a disjoint one. Images hold 1-6 objects of several sizes and
//! aspect ratios, some overlapping, on a noisy low-frequency background with
//! grey distractor strokes, and now and then a tight cluster of tiny shapes
//! annotated as one box (VOC `difficult`, COCO `iscrowd`).
//!
//! Boxes are pixel extents `[x, y, x + w, y + h]` with every shape inside
//! `[0, S-1]`, so the VOC and COCO readers give the same boxes with no clipping.
//!
//! COCO annotations carry each object's outline as its `segmentation`: the
//! polygon of the drawn shape in the same pixel coordinates (pixel `(x, y)`
//! covers `[x, x + 1] x [y, y + 1]`, which is how pycocotools rasterises a
//! polygon: a pixel is in when its centre is), the whole shape even where a
//! later one covers part of it; a crowd cluster's is the RLE of its tiny
//! shapes, as COCO writes crowds. `area` is pycocotools' area of that mask.

use std::fmt::Write as _;
use std::path::Path;

use crate::atomic;
use crate::error::{Error, Result};
use crate::rle::Rle;
use crate::rng::Rng;

pub const SHAPES: [&str; 6] = ["square", "circle", "triangle", "cross", "ring", "diamond"];
pub const COLOURS: [(&str, [u8; 3]); 8] = [
    ("red", [220, 30, 30]),
    ("green", [30, 190, 40]),
    ("blue", [35, 60, 225]),
    ("yellow", [235, 220, 30]),
    ("magenta", [215, 40, 200]),
    ("cyan", [30, 210, 220]),
    ("orange", [245, 135, 20]),
    ("white", [245, 245, 245]),
];
/// Every (colour, shape) pair once.
pub const CATALOGUE_LEN: usize = SHAPES.len() * COLOURS.len();

/// Catalogue entry `i`: shape `i % 6` and colour `(7q + s) % 8` with `q = i / 6`,
/// so neighbouring classes differ in both shape and colour and all 48 pairs
/// appear once (7 is invertible mod 8).
pub fn catalogue(i: usize) -> (usize, usize) {
    let (q, s) = (i / SHAPES.len(), i % SHAPES.len());
    (s, (7 * q + s) % COLOURS.len())
}

pub fn class_name(i: usize) -> String {
    let (shape, colour) = catalogue(i);
    format!("{}_{}", COLOURS[colour].0, SHAPES[shape])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthFormat {
    Voc,
    Coco,
    Both,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub classes: usize,
    pub first_class: usize,
    pub images: usize,
    /// Square image side in pixels.
    pub size: u32,
    pub seed: u64,
    pub format: SynthFormat,
    /// Names for the classes in place of the catalogue's (`classes` of
    /// them), e.g. a config's label list; empty: the catalogue's.
    pub names: Vec<String>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            classes: 4,
            first_class: 0,
            images: 200,
            size: 256,
            seed: 0,
            format: SynthFormat::Both,
            names: Vec::new(),
        }
    }
}

/// One annotated object; `class` indexes the dataset's own class list.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthObject {
    pub class: usize,
    /// Pixel extent `[x, y, w, h]`.
    pub rect: [u32; 4],
    /// A cluster of tiny shapes under one box: VOC difficult, COCO crowd.
    pub cluster: bool,
    /// Index into `SHAPES` of what was drawn.
    pub shape: usize,
    /// The `[x, y, w, h]` each drawn shape fills: `rect` alone, or a
    /// cluster's tiny shapes.
    pub parts: Vec<[u32; 4]>,
}

/// Vertices per ellipse (circle, ring) outline.
const ELLIPSE_VERTICES: usize = 32;
/// Half the width of a cross's arms, and the squared inner radius of a ring,
/// in the normalised box coordinates of `inside`.
const CROSS_ARM: f32 = 0.34;
const RING_INNER2: f32 = 0.3;

/// Whether normalised point (u, v) in [-1, 1]^2 of the box lies in the shape.
fn inside(shape: usize, u: f32, v: f32) -> bool {
    match shape {
        0 => true,
        1 => u * u + v * v <= 1.0,
        // Apex at the top centre, base along the bottom edge.
        2 => u.abs() <= (v + 1.0) * 0.5,
        3 => u.abs() <= CROSS_ARM || v.abs() <= CROSS_ARM,
        4 => (RING_INNER2..=1.0).contains(&(u * u + v * v)),
        _ => u.abs() + v.abs() <= 1.0,
    }
}

/// The outline of `inside`'s region for a shape filling `rect`, as one COCO
/// polygon `[x1, y1, x2, y2, ...]` in pixel coordinates (normalised `u = -1`
/// is the box's left edge `x`, `u = 1` its right edge `x + w`), rounded to
/// 0.01 px as COCO files write them. Ellipses are 32-gons with their
/// vertices on the curve. A ring is one "keyhole" polygon: the outer loop,
/// a cut to the inner loop, the inner loop the other way round and the cut
/// back; pycocotools' rasteriser toggles pixels at each crossing, so the
/// cut, crossed twice at the same place, leaves nothing and the hole stays
/// empty (COCO polygons have no other way to hold a hole).
pub fn shape_polygon(shape: usize, rect: [u32; 4]) -> Vec<f64> {
    let [x, y, w, h] = rect.map(f64::from);
    let ellipse = |radius: f64, reverse: bool| -> Vec<[f64; 2]> {
        (0..ELLIPSE_VERTICES)
            .map(|k| {
                let k = if reverse {
                    (ELLIPSE_VERTICES - k) % ELLIPSE_VERTICES
                } else {
                    k
                };
                let angle = std::f64::consts::TAU * k as f64 / ELLIPSE_VERTICES as f64;
                [radius * angle.cos(), radius * angle.sin()]
            })
            .collect()
    };
    let a = CROSS_ARM as f64;
    let uv: Vec<[f64; 2]> = match shape {
        0 => vec![[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]],
        1 => ellipse(1.0, false),
        2 => vec![[0.0, -1.0], [1.0, 1.0], [-1.0, 1.0]],
        3 => vec![
            [-a, -1.0],
            [a, -1.0],
            [a, -a],
            [1.0, -a],
            [1.0, a],
            [a, a],
            [a, 1.0],
            [-a, 1.0],
            [-a, a],
            [-1.0, a],
            [-1.0, -a],
            [-a, -a],
        ],
        4 => {
            let (outer, inner) = (
                ellipse(1.0, false),
                ellipse((RING_INNER2 as f64).sqrt(), true),
            );
            // Both loops start at angle 0, so the cut is the segment between.
            [&outer[..], &outer[..1], &inner[..], &inner[..1]].concat()
        }
        _ => vec![[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]],
    };
    let round = |v: f64| (v * 100.0).round() / 100.0;
    uv.iter()
        .flat_map(|[u, v]| {
            [
                round(x + (u + 1.0) * 0.5 * w),
                round(y + (v + 1.0) * 0.5 * h),
            ]
        })
        .collect()
}

/// An object's COCO `segmentation` in a `side` x `side` image and its
/// pycocotools area: the shape's polygon, or for a cluster the RLE (counts
/// uncompressed, as COCO's crowds) of its tiny shapes.
fn segmentation(object: &SynthObject, side: u32) -> (serde_json::Value, u64) {
    let polygons: Vec<Vec<f64>> = object
        .parts
        .iter()
        .map(|&rect| shape_polygon(object.shape, rect))
        .collect();
    let masks: Vec<Rle> = polygons
        .iter()
        .map(|p| Rle::from_polygon(p, side, side).expect("synth polygons are valid"))
        .collect();
    let mask = Rle::merge(&masks).expect("every object has a part");
    let area = mask.area();
    if object.cluster {
        let rle = serde_json::json!({"size": [side, side], "counts": mask.counts()});
        (rle, area)
    } else {
        (serde_json::json!(polygons), area)
    }
}

/// Draws a shape filling `rect`. Every shape reaches all four sides of its box
/// (a triangle's apex or a diamond's tips within a pixel), so the box is the
/// shape's pixel extent.
fn draw_shape(
    pixels: &mut [u8],
    side: u32,
    rect: [u32; 4],
    shape: usize,
    colour: [u8; 3],
    rng: &mut Rng,
) {
    let [x0, y0, w, h] = rect;
    let jitter: [f32; 3] = std::array::from_fn(|_| rng.range_f32(-25.0, 25.0));
    // A soft light gradient across the shape so it is not a flat patch.
    let (gx, gy) = (rng.range_f32(-0.25, 0.25), rng.range_f32(-0.25, 0.25));
    for y in y0..y0 + h {
        let v = ((y - y0) as f32 + 0.5) / h as f32 * 2.0 - 1.0;
        for x in x0..x0 + w {
            let u = ((x - x0) as f32 + 0.5) / w as f32 * 2.0 - 1.0;
            if !inside(shape, u, v) {
                continue;
            }
            let light = 1.0 + gx * u + gy * v;
            let p = ((y * side + x) * 3) as usize;
            for c in 0..3 {
                pixels[p + c] = ((colour[c] as f32 + jitter[c]) * light).clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// A textured background: a few soft colour blobs, low saturation, plus noise,
/// and grey strokes that look like edges but are no class.
fn draw_background(pixels: &mut [u8], side: u32, rng: &mut Rng) {
    let base: [f32; 3] = std::array::from_fn(|_| rng.range_f32(60.0, 170.0));
    let blobs: Vec<([f32; 2], f32, [f32; 3])> = (0..4)
        .map(|_| {
            let centre = [
                rng.range_f32(0.0, side as f32),
                rng.range_f32(0.0, side as f32),
            ];
            let radius = rng.range_f32(0.2, 0.6) * side as f32;
            let tint = std::array::from_fn(|_| rng.range_f32(-45.0, 45.0));
            (centre, radius, tint)
        })
        .collect();
    for y in 0..side {
        for x in 0..side {
            let mut rgb = base;
            for (centre, radius, tint) in &blobs {
                let d2 = ((x as f32 - centre[0]).powi(2) + (y as f32 - centre[1]).powi(2))
                    / (radius * radius);
                let weight = (-d2).exp();
                for c in 0..3 {
                    rgb[c] += tint[c] * weight;
                }
            }
            let noise = rng.range_f32(-14.0, 14.0);
            let p = ((y * side + x) * 3) as usize;
            for c in 0..3 {
                pixels[p + c] = (rgb[c] + noise + rng.range_f32(-4.0, 4.0)).clamp(0.0, 255.0) as u8;
            }
        }
    }
    for _ in 0..rng.between(2, 6) {
        let grey = rng.range_f32(30.0, 220.0) as u8;
        let thickness = rng.between(1, 3);
        let (mut x, mut y) = (
            rng.range_f32(0.0, side as f32),
            rng.range_f32(0.0, side as f32),
        );
        let angle = rng.range_f32(0.0, std::f32::consts::TAU);
        let (dx, dy) = (angle.cos(), angle.sin());
        for _ in 0..rng.between(side / 4, side) {
            for t in 0..thickness {
                let (px, py) = (x as i64 + t as i64, y as i64);
                if px >= 0 && py >= 0 && (px as u32) < side && (py as u32) < side {
                    let p = ((py as u32 * side + px as u32) * 3) as usize;
                    pixels[p..p + 3].fill(grey);
                }
            }
            x += dx;
            y += dy;
        }
    }
}

fn iou(a: [u32; 4], b: [u32; 4]) -> f32 {
    let ix = (a[0] + a[2])
        .min(b[0] + b[2])
        .saturating_sub(a[0].max(b[0]));
    let iy = (a[1] + a[3])
        .min(b[1] + b[3])
        .saturating_sub(a[1].max(b[1]));
    let inter = (ix * iy) as f32;
    inter / ((a[2] * a[3] + b[2] * b[3]) as f32 - inter)
}

/// Renders image `index` of the dataset: RGB pixels (row-major) and its objects.
pub fn render(config: &SynthConfig, index: usize) -> (Vec<u8>, Vec<SynthObject>) {
    let side = config.size;
    // Each image has its own stream, so any one can be regenerated alone.
    let mut rng = Rng::from_state(config.seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut pixels = vec![0u8; (side * side * 3) as usize];
    draw_background(&mut pixels, side, &mut rng);
    let s = side as f32;
    let mut objects: Vec<SynthObject> = Vec::new();
    let wanted = rng.between(1, 6);
    let mut attempts = 0;
    while objects.len() < wanted as usize && attempts < 50 {
        attempts += 1;
        let class = rng.between(0, config.classes as u32 - 1) as usize;
        // Sizes from small (6% of the side) to large (45%), log-uniform.
        let extent = (0.06f32.ln() + rng.uniform_f32() * (0.45f32 / 0.06).ln()).exp() * s;
        let aspect = rng.range_f32(0.7, 1.4);
        let w = ((extent * aspect.sqrt()) as u32).clamp(4, side / 2);
        let h = ((extent / aspect.sqrt()) as u32).clamp(4, side / 2);
        let rect = [
            rng.between(0, side - 1 - w),
            rng.between(0, side - 1 - h),
            w,
            h,
        ];
        // Overlaps are allowed, but no shape may hide most of another.
        if objects.iter().any(|o| iou(o.rect, rect) > 0.3) {
            continue;
        }
        let (shape, colour) = catalogue(config.first_class + class);
        draw_shape(&mut pixels, side, rect, shape, COLOURS[colour].1, &mut rng);
        objects.push(SynthObject {
            class,
            rect,
            cluster: false,
            shape,
            parts: vec![rect],
        });
    }
    // About one image in twelve gets a cluster of tiny same-class shapes.
    if rng.uniform_f32() < 1.0 / 12.0 {
        let class = rng.between(0, config.classes as u32 - 1) as usize;
        let (shape, colour) = catalogue(config.first_class + class);
        let tiny = (s * 0.035).max(4.0) as u32;
        let span = tiny * 4;
        let (cx, cy) = (
            rng.between(0, side - 1 - span),
            rng.between(0, side - 1 - span),
        );
        let (mut x1, mut y1, mut x2, mut y2) = (u32::MAX, u32::MAX, 0, 0);
        let mut parts = Vec::new();
        for _ in 0..rng.between(3, 5) {
            let rect = [
                cx + rng.between(0, span - tiny),
                cy + rng.between(0, span - tiny),
                tiny,
                tiny,
            ];
            draw_shape(&mut pixels, side, rect, shape, COLOURS[colour].1, &mut rng);
            x1 = x1.min(rect[0]);
            y1 = y1.min(rect[1]);
            x2 = x2.max(rect[0] + tiny);
            y2 = y2.max(rect[1] + tiny);
            parts.push(rect);
        }
        objects.push(SynthObject {
            class,
            rect: [x1, y1, x2 - x1, y2 - y1],
            cluster: true,
            shape,
            parts,
        });
    }
    (pixels, objects)
}

/// What `write` produced, for the CLI to print.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSummary {
    pub class_names: Vec<String>,
    pub train_images: usize,
    pub val_images: usize,
    pub objects: usize,
}

/// The first 80% of images (at least one) are train/trainval, the rest val/test.
fn train_count(images: usize) -> usize {
    (images * 4 / 5).max(1).min(images)
}

/// Writes the dataset into `out` (built under a temporary name, then renamed).
/// `out` must not exist, be empty, or hold an earlier synth dataset.
pub fn write(out: &Path, config: &SynthConfig) -> Result<SynthSummary> {
    if config.classes == 0 || config.first_class + config.classes > CATALOGUE_LEN {
        return Err(Error::new(
            out,
            format!(
                "classes {}..{} are outside the catalogue of {CATALOGUE_LEN} (colour, shape) classes",
                config.first_class,
                config.first_class + config.classes
            ),
        ));
    }
    if !config.names.is_empty() && config.names.len() != config.classes {
        return Err(Error::new(
            out,
            format!(
                "{} class names for {} classes",
                config.names.len(),
                config.classes
            ),
        ));
    }
    if config.images == 0 || !(32..=4096).contains(&config.size) {
        return Err(Error::new(
            out,
            "need at least one image and a size from 32 to 4096 px",
        ));
    }
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
        if entries.next().is_some() && !out.join("synth.json").exists() {
            return Err(Error::new(
                out,
                "output directory exists and is not empty (and is not an earlier synth dataset); refusing to replace it",
            ));
        }
    }
    let class_names: Vec<String> = match &config.names[..] {
        [] => (config.first_class..config.first_class + config.classes)
            .map(class_name)
            .collect(),
        names => names.to_vec(),
    };
    let train = train_count(config.images);
    let mut total_objects = 0;
    atomic::write_dir(out, |dir| {
        let mkdir = |name: &str| {
            std::fs::create_dir_all(dir.join(name)).map_err(|e| Error::io(dir.join(name), e))
        };
        mkdir("JPEGImages")?;
        let voc = config.format != SynthFormat::Coco;
        let coco = config.format != SynthFormat::Voc;
        if voc {
            mkdir("Annotations")?;
        }
        let mut coco_images = [Vec::new(), Vec::new()];
        let mut coco_annotations = [Vec::new(), Vec::new()];
        let mut lists = [String::new(), String::new()];
        let mut annotation_id = 1;
        for index in 0..config.images {
            let (pixels, objects) = render(config, index);
            total_objects += objects.len();
            let stem = format!("{index:06}");
            let image_path = dir.join("JPEGImages").join(format!("{stem}.jpg"));
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
                .encode(
                    &pixels,
                    config.size,
                    config.size,
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(|e| Error::new(&image_path, format!("JPEG encoding failed: {e}")))?;
            std::fs::write(&image_path, &jpeg).map_err(|e| Error::io(&image_path, e))?;
            let split = (index >= train) as usize;
            if voc {
                let xml_path = dir.join("Annotations").join(format!("{stem}.xml"));
                std::fs::write(
                    &xml_path,
                    voc_xml(&stem, config.size, &objects, &class_names),
                )
                .map_err(|e| Error::io(&xml_path, e))?;
                writeln!(lists[split], "JPEGImages/{stem}.jpg Annotations/{stem}.xml").unwrap();
            }
            if coco {
                let image_id = index + 1;
                coco_images[split].push(serde_json::json!({
                    "id": image_id, "file_name": format!("{stem}.jpg"),
                    "width": config.size, "height": config.size,
                }));
                for o in &objects {
                    let (segmentation, area) = segmentation(o, config.size);
                    coco_annotations[split].push(serde_json::json!({
                        "id": annotation_id, "image_id": image_id, "category_id": o.class + 1,
                        "bbox": o.rect, "area": area, "iscrowd": o.cluster as u8,
                        "segmentation": segmentation,
                    }));
                    annotation_id += 1;
                }
            }
        }
        let text = |name: &str, content: &str| {
            let path = dir.join(name);
            std::fs::write(&path, content).map_err(|e| Error::io(&path, e))
        };
        text("label_list.txt", &(class_names.join("\n") + "\n"))?;
        if voc {
            // The splits under both names PaddleDetection's VOC configs use:
            // trainval/test (Pascal VOC) and train/val (the fruit example).
            text("trainval.txt", &lists[0])?;
            text("test.txt", &lists[1])?;
            text("train.txt", &lists[0])?;
            text("val.txt", &lists[1])?;
        }
        if coco {
            mkdir("annotations")?;
            let categories: Vec<_> = class_names
                .iter()
                .enumerate()
                .map(|(i, n)| serde_json::json!({"id": i + 1, "name": n, "supercategory": "shape"}))
                .collect();
            for (split, name) in ["train", "val"].iter().enumerate() {
                let json = serde_json::json!({
                    "images": coco_images[split], "annotations": coco_annotations[split],
                    "categories": categories,
                });
                text(
                    &format!("annotations/instances_{name}.json"),
                    &json.to_string(),
                )?;
            }
        }
        let params = serde_json::json!({
            "generator": "pulsefocus synth", "classes": config.classes, "first_class": config.first_class,
            "images": config.images, "size": config.size, "seed": config.seed, "class_names": class_names,
        });
        text(
            "synth.json",
            &serde_json::to_string_pretty(&params).unwrap(),
        )
    })?;
    Ok(SynthSummary {
        class_names,
        train_images: train,
        val_images: config.images - train,
        objects: total_objects,
    })
}

fn voc_xml(stem: &str, size: u32, objects: &[SynthObject], class_names: &[String]) -> String {
    let mut xml = format!(
        "<annotation>\n  <folder>JPEGImages</folder>\n  <filename>{stem}.jpg</filename>\n  \
         <size><width>{size}</width><height>{size}</height><depth>3</depth></size>\n"
    );
    for o in objects {
        let [x, y, w, h] = o.rect;
        writeln!(
            xml,
            "  <object>\n    <name>{}</name>\n    <difficult>{}</difficult>\n    \
             <bndbox><xmin>{x}</xmin><ymin>{y}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox>\n  </object>",
            class_names[o.class],
            o.cluster as u8,
            x + w,
            y + h
        )
        .unwrap();
    }
    xml + "</annotation>\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coco::CocoDataSet;
    use crate::voc::VocDataSet;

    #[test]
    fn catalogue_has_every_pair_once() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..CATALOGUE_LEN {
            assert!(seen.insert(catalogue(i)));
        }
        assert_eq!(class_name(0), "red_square");
        assert_ne!(catalogue(1).1, catalogue(0).1);
    }

    #[test]
    fn render_is_deterministic_and_boxes_hold_their_shape() {
        let config = SynthConfig {
            size: 96,
            ..SynthConfig::default()
        };
        for index in 0..20 {
            let (a, objects) = render(&config, index);
            let (b, again) = render(&config, index);
            assert_eq!(a, b);
            assert_eq!(objects, again);
            assert!(!objects.is_empty());
            for o in &objects {
                let [x, y, w, h] = o.rect;
                assert!(x + w < 96 && y + h < 96 && w >= 4 && h >= 4);
                assert!(o.class < config.classes);
            }
        }
        let other = SynthConfig {
            seed: 1,
            ..config.clone()
        };
        assert_ne!(render(&config, 0).0, render(&other, 0).0);
    }

    /// Each object's segmentation, rasterised as pycocotools does, covers
    /// the pixels its shape was drawn on (drawn alone, on a black canvas, so
    /// nothing else is counted), stays inside its box, and `area` is that
    /// mask's area.
    #[test]
    fn segmentations_rasterise_to_the_drawn_shapes_inside_their_boxes() {
        let side = 160;
        let config = SynthConfig {
            size: side,
            classes: CATALOGUE_LEN,
            ..SynthConfig::default()
        };
        let (mut shapes_seen, mut clusters) = ([0; SHAPES.len()], 0);
        for index in 0..60 {
            for o in render(&config, index).1 {
                let mut canvas = vec![0u8; (side * side * 3) as usize];
                for &part in &o.parts {
                    let colour = COLOURS[catalogue(o.class).1].1;
                    draw_shape(&mut canvas, side, part, o.shape, colour, &mut Rng::new(0));
                }
                let drawn: Vec<bool> = canvas.chunks(3).map(|p| p != [0, 0, 0]).collect();
                let (value, area) = segmentation(&o, side);
                let parsed =
                    crate::coco_results::segmentation(Path::new("t"), "t", &value).unwrap();
                assert_eq!(
                    matches!(parsed, crate::coco_results::Segmentation::Rle(_)),
                    o.cluster
                );
                let mask = parsed.to_rle(side, side).unwrap();
                assert_eq!(mask.area(), area);
                let mask = mask.decode();
                let [x, y, w, h] = o.rect;
                let (mut both, mut either) = (0u64, 0u64);
                for (p, (&m, &d)) in mask.iter().zip(&drawn).enumerate() {
                    let (px, py) = (p as u32 % side, p as u32 / side);
                    if m == 1 {
                        assert!(
                            (x..x + w).contains(&px) && (y..y + h).contains(&py),
                            "image {index}: {o:?} pixel ({px}, {py}) outside its box"
                        );
                    }
                    both += (m == 1 && d) as u64;
                    either += (m == 1 || d) as u64;
                }
                let drawn_area = drawn.iter().filter(|&&d| d).count() as f64;
                let iou = both as f64 / either as f64;
                let area_error = (area as f64 - drawn_area).abs() / drawn_area;
                // The drawing keeps pixels whose centre lies exactly on an
                // edge (a diamond's, at even sizes), the rasteriser half of
                // them: a small shape's edge rows weigh more.
                let (min_iou, max_area_error) = match w.min(h) {
                    32.. => (0.97, 0.03),
                    16.. => (0.88, 0.12),
                    _ => (0.8, 0.2),
                };
                assert!(
                    iou >= min_iou && area_error <= max_area_error,
                    "image {index}: {o:?} IoU {iou}, area {area} vs {drawn_area} drawn"
                );
                shapes_seen[o.shape] += 1;
                clusters += o.cluster as usize;
            }
        }
        assert!(shapes_seen.iter().all(|&n| n > 5), "{shapes_seen:?}");
        assert!(clusters > 0);
    }

    #[test]
    fn voc_and_coco_outputs_load_to_the_same_boxes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("synth");
        let config = SynthConfig {
            images: 24,
            size: 64,
            classes: 3,
            first_class: 5,
            ..SynthConfig::default()
        };
        let summary = write(&out, &config).unwrap();
        assert_eq!(
            summary.class_names,
            (5..8).map(class_name).collect::<Vec<_>>()
        );
        assert_eq!((summary.train_images, summary.val_images), (19, 5));
        let voc = VocDataSet {
            dataset_dir: out.clone(),
            anno_path: "trainval.txt".into(),
            label_list: "label_list.txt".into(),
            use_default_label: false,
            with_background: false,
        }
        .load()
        .unwrap();
        let coco = CocoDataSet {
            dataset_dir: out.clone(),
            image_dir: "JPEGImages".into(),
            anno_path: "annotations/instances_train.json".into(),
            with_background: false,
            allow_empty: true,
            load_crowd: true,
            with_polygons: false,
        }
        .load()
        .unwrap();
        assert!(
            voc.problems.is_empty() && coco.problems.is_empty(),
            "{:?} {:?}",
            voc.problems,
            coco.problems
        );
        assert_eq!(voc.class_names, coco.class_names);
        assert_eq!(voc.records.len(), 19);
        for (v, c) in voc.records.iter().zip(&coco.records) {
            assert_eq!(v.image_path, c.image_path);
            let boxes = |r: &crate::dataset::Record| {
                r.objects
                    .iter()
                    .map(|o| (o.bbox, o.class, o.difficult || o.crowd))
                    .collect::<Vec<_>>()
            };
            assert_eq!(boxes(v), boxes(c));
        }
        let (w, h) = image::image_dimensions(&voc.records[0].image_path).unwrap();
        assert_eq!((w, h), (64, 64));
        // The fruit config's layout: its names, train.txt and val.txt.
        let fruit = dir.path().join("fruit");
        let names: Vec<String> = ["apple", "banana", "orange"].map(String::from).to_vec();
        let fruit_config = SynthConfig {
            names: names.clone(),
            ..config.clone()
        };
        assert_eq!(write(&fruit, &fruit_config).unwrap().class_names, names);
        let read = |name: &str| std::fs::read_to_string(fruit.join(name)).unwrap();
        assert_eq!(read("label_list.txt"), "apple\nbanana\norange\n");
        assert_eq!(read("train.txt"), read("trainval.txt"));
        assert_eq!(read("val.txt"), read("test.txt"));
        let two_names = SynthConfig {
            names: names[..2].to_vec(),
            ..config.clone()
        };
        let err = write(&dir.path().join("bad"), &two_names).unwrap_err();
        assert!(
            err.to_string().contains("2 class names for 3 classes"),
            "{err}"
        );
        // Regenerating into the same folder is allowed; a foreign folder is not.
        write(&out, &config).unwrap();
        let foreign = dir.path().join("mine");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("notes.txt"), "keep").unwrap();
        assert!(write(&foreign, &config).is_err());
        assert!(write(
            &dir.path().join("x"),
            &SynthConfig {
                first_class: 46,
                ..config
            }
        )
        .is_err());
    }
}
