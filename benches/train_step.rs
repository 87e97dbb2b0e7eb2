//! Speed of one YOLOv3 training step on the CPU (forward, loss, backward,
//! momentum SGD update) on a synthetic batch, as `pulsefocus bench
//! train-step` times it: the small model at batch 8, 160x160, and
//! YOLOv3-MobileNetV1 at the target setting (batch 8, 320x320, 20
//! classes). Throughput is in images per second.
//!
//! Run: `cargo bench -p pulsefocus-benches --bench train_step`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pulsefocus_core::models::{Yolov3, Yolov3Detector, Yolov3Spec};
use pulsefocus_core::train::{SyntheticBatch, TrainConfig, Trainer};
use pulsefocus_core::CpuBackend;

fn bench_model(c: &mut Criterion, name: &str, spec: Yolov3Spec, batch: usize, size: usize) {
    let cpu = CpuBackend::new();
    let classes = spec.num_classes;
    let model = Yolov3Detector::new(Yolov3::new(&cpu, spec, 0));
    let mut trainer = Trainer::new(Box::new(model), TrainConfig::yolov3());
    trainer.plan(batch, size);
    let data = SyntheticBatch::new(batch, size, classes, 1);
    let gt = data.ground_truth();
    let mut group = c.benchmark_group("train_step");
    group.throughput(Throughput::Elements(batch as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(format!("{name}/batch{batch}/{size}px"), |b| {
        b.iter(|| trainer.step(&data.images, batch, [size, size], &gt, &[]))
    });
    group.finish();
}

fn train_step(c: &mut Criterion) {
    bench_model(c, "small", Yolov3Spec::small(20), 8, 160);
    bench_model(
        c,
        "yolov3_mobilenet_v1",
        Yolov3Spec::mobilenet_v1(20),
        8,
        320,
    );
}

criterion_group!(benches, train_step);
criterion_main!(benches);
