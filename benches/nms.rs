//! Multiclass NMS at 1k, 10k and 20k boxes.
//!
//! `torchvision_setting`: one class, no score threshold or top-k, IoU 0.5,
//! normalized (no +1): the work `torchvision.ops.nms` does, for
//! `benches/nms_vs_torchvision.py`, which draws boxes from the same
//! distribution. `yolov3`: PaddleDetection's YOLOv3 settings over 20 classes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pulsefocus_core::yolo::{multiclass_nms, NmsConfig};

/// A tiny deterministic generator so that every run benchmarks the same boxes.
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Self {
        Lcg(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }

    /// Uniform in `[low, high)`.
    fn uniform(&mut self, low: f32, high: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let unit = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }
}

/// Boxes with x1, y1 uniform in [0, 1000) and sides uniform in [10, 110).
fn random_boxes(rng: &mut Lcg, n: usize) -> Vec<[f32; 4]> {
    (0..n)
        .map(|_| {
            let (x, y) = (rng.uniform(0.0, 1000.0), rng.uniform(0.0, 1000.0));
            let (w, h) = (rng.uniform(10.0, 110.0), rng.uniform(10.0, 110.0));
            [x, y, x + w, y + h]
        })
        .collect()
}

fn bench_nms(c: &mut Criterion) {
    let mut group = c.benchmark_group("nms");
    group.sample_size(20);
    for n in [1_000, 10_000, 20_000] {
        let mut rng = Lcg::new(n as u64);
        let boxes = random_boxes(&mut rng, n);
        let scores: Vec<f32> = (0..n).map(|_| rng.uniform(0.0, 1.0)).collect();
        let single = NmsConfig {
            score_threshold: f32::NEG_INFINITY,
            nms_top_k: None,
            keep_top_k: None,
            nms_threshold: 0.5,
            normalized: true,
            background_label: None,
        };
        group.bench_with_input(BenchmarkId::new("torchvision_setting", n), &n, |b, _| {
            b.iter(|| multiclass_nms(&single, black_box(&boxes), black_box(&scores), 1))
        });

        let classes = 20;
        // Mostly low class scores, as after sigmoid on a trained head.
        let class_scores: Vec<f32> = (0..n * classes)
            .map(|_| rng.uniform(0.0, 1.0).powi(8))
            .collect();
        group.bench_with_input(BenchmarkId::new("yolov3_20_classes", n), &n, |b, _| {
            b.iter(|| {
                multiclass_nms(
                    &NmsConfig::yolov3(),
                    black_box(&boxes),
                    black_box(&class_scores),
                    classes,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_nms);
criterion_main!(benches);
