//! Loading a COCO instances JSON the size of `instances_val2017.json`
//! (~25 MB: 5000 images, ~36k annotations with polygons) into records.
//!
//! `PULSEFOCUS_COCO_JSON=path` benchmarks that file (its images must exist
//! under `images/` beside the JSON's folder, as `coco_vs_pycocotools.py`
//! lays it out); otherwise a file of the same shape is generated.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use pulsefocus_formats::coco::CocoDataSet;

/// Writes a val2017-shaped dataset under `dir`: `annotations/instances.json`
/// and an empty file per image (the reader only checks that images exist).
fn generate(dir: &Path) -> PathBuf {
    let images_dir = dir.join("images");
    std::fs::create_dir_all(&images_dir).unwrap();
    std::fs::create_dir_all(dir.join("annotations")).unwrap();
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut json = String::from("{\"info\": {\"description\": \"synthetic\"}, \"images\": [");
    for id in 1..=5000 {
        let name = format!("{id:012}.jpg");
        std::fs::write(images_dir.join(&name), b"").unwrap();
        let sep = if id > 1 { ", " } else { "" };
        write!(json, "{sep}{{\"license\": 1, \"file_name\": \"{name}\", \"coco_url\": \"http://images.cocodataset.org/val2017/{name}\", \"height\": 480, \"width\": 640, \"date_captured\": \"2013-11-14 17:02:52\", \"id\": {id}}}").unwrap();
    }
    json.push_str("], \"annotations\": [");
    for id in 1..=36781 {
        let image_id = 1 + (next() * 5000.0) as u64;
        let (x, y) = (next() * 600.0, next() * 440.0);
        let (w, h) = (1.0 + next() * (639.0 - x), 1.0 + next() * (479.0 - y));
        let polygon: Vec<String> = (0..24 * (1 + id % 5))
            .map(|_| format!("{:.2}", next() * 600.0))
            .collect();
        let sep = if id > 1 { ", " } else { "" };
        write!(json, "{sep}{{\"segmentation\": [[{}]], \"area\": {:.4}, \"iscrowd\": 0, \"image_id\": {image_id}, \"bbox\": [{x:.2}, {y:.2}, {w:.2}, {h:.2}], \"category_id\": {}, \"id\": {id}}}", polygon.join(", "), w * h * 0.6, 1 + (next() * 80.0) as u64).unwrap();
    }
    json.push_str("], \"categories\": [");
    for id in 1..=80 {
        let sep = if id > 1 { ", " } else { "" };
        write!(
            json,
            "{sep}{{\"supercategory\": \"thing\", \"id\": {id}, \"name\": \"class{id}\"}}"
        )
        .unwrap();
    }
    json.push_str("]}");
    let path = dir.join("annotations/instances.json");
    std::fs::write(&path, json).unwrap();
    path
}

fn coco_parse(c: &mut Criterion) {
    let generated = std::env::temp_dir().join("pulsefocus-coco-parse-bench");
    let anno = match std::env::var_os("PULSEFOCUS_COCO_JSON") {
        Some(path) => PathBuf::from(path),
        None => generate(&generated),
    };
    let dataset_dir = anno.parent().and_then(Path::parent).unwrap().to_path_buf();
    let config = CocoDataSet {
        dataset_dir,
        image_dir: "images".into(),
        anno_path: anno
            .strip_prefix(anno.parent().and_then(Path::parent).unwrap())
            .unwrap()
            .into(),
        with_background: false,
        allow_empty: true,
        load_crowd: false,
        with_polygons: false,
    };
    let dataset = config.load().unwrap();
    assert!(
        dataset.records.len() > 4000,
        "images missing beside {}",
        anno.display()
    );
    let mut group = c.benchmark_group("coco_parse");
    group.sample_size(10);
    group.bench_function("instances_val2017_size", |b| {
        b.iter(|| config.load().unwrap())
    });
    // The JSON parse alone, to see where the time goes.
    let bytes = std::fs::read(&anno).unwrap();
    group.bench_function("parse_only", |b| {
        b.iter(|| pulsefocus_formats::coco::parse(&anno, &bytes).unwrap())
    });
    group.finish();
}

criterion_group!(benches, coco_parse);
criterion_main!(benches);
