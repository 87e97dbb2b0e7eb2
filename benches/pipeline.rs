//! Speed of the training input pipeline on real photos: JPEG/PNG decode
//! alone, the 416x416 resize alone, one image through the whole YOLOv3 train
//! pipeline on one thread, and the threaded loader (2 workers) yielding
//! batches of 8 at 416x416. Throughput is in images per second.
//!
//! Run: `cargo bench -p pulsefocus-benches --bench pipeline`
//! (the photos in tests/data/photos, or every file in `PULSEFOCUS_BENCH_PHOTOS`
//! when that names a folder).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pulsefocus_core::data::rng::Rng;
use pulsefocus_core::data::sample::Sample;
use pulsefocus_core::data::transforms::augment;
use pulsefocus_core::data::transforms::normalize::ChannelNorm;
use pulsefocus_core::data::{
    Batch, Interp, Loader, LoaderConfig, Mode, SampleAugment, TrainAugment,
};
use pulsefocus_formats::dataset::{GroundTruth, Record};
use pulsefocus_formats::image::{decode, decode_file};

/// The photos to run on: `PULSEFOCUS_BENCH_PHOTOS` or the repository's own.
fn photos() -> Vec<PathBuf> {
    let dir = std::env::var_os("PULSEFOCUS_BENCH_PHOTOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/photos"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
}

/// A record per photo with three boxes spread over it (the photos come
/// without annotations; the boxes only have to exercise crop and targets).
fn records() -> Vec<Record> {
    photos()
        .into_iter()
        .enumerate()
        .map(|(i, path)| {
            let img = decode_file(&path).unwrap();
            let (w, h) = (img.width as f32, img.height as f32);
            let objects = [
                [0.1, 0.1, 0.4, 0.5],
                [0.5, 0.3, 0.9, 0.9],
                [0.3, 0.6, 0.45, 0.8],
            ]
            .iter()
            .enumerate()
            .map(|(k, f)| GroundTruth {
                bbox: [f[0] * w, f[1] * h, f[2] * w, f[3] * h],
                class: k as u32,
                difficult: false,
                crowd: false,
            })
            .collect();
            Record {
                image_path: path,
                id: i as i64,
                width: img.width,
                height: img.height,
                objects,
                polygons: Vec::new(),
            }
        })
        .collect()
}

fn pipeline(c: &mut Criterion) {
    let records = records();
    let n = records.len() as u64;
    let bytes: Vec<(PathBuf, Vec<u8>)> = records
        .iter()
        .map(|r| (r.image_path.clone(), std::fs::read(&r.image_path).unwrap()))
        .collect();
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);

    group.throughput(Throughput::Elements(n));
    group.bench_function("decode", |b| {
        b.iter(|| {
            for (path, data) in &bytes {
                black_box(decode(data, path).unwrap());
            }
        })
    });

    let imagenet = ChannelNorm::imagenet();
    let samples: Vec<Sample> = records
        .iter()
        .map(|r| Sample::new(&decode_file(&r.image_path).unwrap(), r))
        .collect();
    group.bench_function("resize_416_bilinear_normalize", |b| {
        let mut batch = Batch::new(samples.len(), 416, 416, 50, 0, 0);
        let mut scratch = Vec::new();
        b.iter(|| {
            batch.record_indices.clear();
            batch.original_sizes.clear();
            for (i, s) in samples.iter().enumerate() {
                batch.put(s, Interp::Linear, &imagenet, i, [0, 0], &mut scratch);
            }
            black_box(&batch.images);
        })
    });

    // One thread, every step: decode both mixup images, augment, resize,
    // normalise, targets.
    group.bench_function("train_416_one_thread", |b| {
        let mut batch = Batch::new(records.len(), 416, 416, 50, 0, 0);
        let mut scratch = Vec::new();
        let yolov3 = SampleAugment::yolov3();
        let mut round = 0u64;
        b.iter(|| {
            batch.record_indices.clear();
            batch.original_sizes.clear();
            for (i, r) in records.iter().enumerate() {
                let partner = &records[(i + 1) % records.len()];
                let mut s = Sample::new(&decode_file(&r.image_path).unwrap(), r);
                let p = Sample::new(&decode_file(&partner.image_path).unwrap(), partner);
                augment(
                    &mut s,
                    Some(p),
                    &yolov3,
                    &mut Rng::derive(round, &[i as u64]),
                );
                batch.put(&s, Interp::Linear, &imagenet, i, [0, 0], &mut scratch);
            }
            round += 1;
            black_box(&batch.images);
        })
    });

    // The loader as training uses it: batches of 8 at 416, 2 workers, the
    // interpolation drawn per batch (the YOLOv3 configs' `random_inter: true`;
    // without it RandomShape resizes with nearest).
    group.throughput(Throughput::Elements(8));
    group.bench_function("loader_416_batch8_2_workers", |b| {
        let config = LoaderConfig {
            workers: 2,
            mode: Mode::Train(Box::new(TrainAugment {
                sizes: vec![416],
                random_interp: true,
                ..TrainAugment::default()
            })),
            ..LoaderConfig::train(8, 1)
        };
        // 40 records (the photos repeated) so an epoch holds 5 batches.
        let many: Vec<Record> = (0..40)
            .map(|i| records[i % records.len()].clone())
            .collect();
        let mut loader = Loader::new(Arc::new(many), config, 0, None).unwrap();
        b.iter(|| black_box(loader.next().unwrap().unwrap()))
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
