//! Batch norm (training mode, fused with its activation) on the CPU backend at
//! the feature-map shapes of YOLOv3-MobileNetV1 (320x320 input, batch 8),
//! reported as elements per second. Forward = statistics + normalise;
//! backward = the two passes of the gradient.
//!
//! `cargo bench -p pulsefocus-benches --bench batch_norm` (filter with a name,
//! e.g. `-- 32x160`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pulsefocus_core::backend::{Activation, Backend, BatchNormGeom};
use pulsefocus_core::gradcheck::random_vec;
use pulsefocus_core::CpuBackend;
use std::time::Duration;

const BATCH: usize = 8;

/// (channels, feature map side) after the model's convolutions, from the
/// stem (32 x 160 x 160) to the deepest level (1024 x 10 x 10).
const SHAPES: &[(usize, usize)] = &[
    (32, 160),
    (64, 160),
    (128, 80),
    (256, 40),
    (512, 20),
    (1024, 10),
];

fn batch_norm(c: &mut Criterion) {
    let b = CpuBackend::new();
    for &(channels, side) in SHAPES {
        let g = BatchNormGeom {
            batch: BATCH,
            channels,
            spatial: side * side,
        };
        let act = Activation::LEAKY_0_1;
        let x = random_vec(1, g.len());
        let dy = random_vec(2, g.len());
        let scale = random_vec(3, channels);
        let offset = random_vec(4, channels);
        let mut running_mean = vec![0.0; channels];
        let mut running_var = vec![1.0; channels];
        let mut mean = vec![0.0; channels];
        let mut inv_std = vec![0.0; channels];
        let mut dscale = vec![0.0; channels];
        let mut doffset = vec![0.0; channels];
        let mut y = b.alloc(g.len());
        let mut dx = b.alloc(g.len());
        let mut group = c.benchmark_group(format!("batch_norm/{channels}x{side}"));
        group.throughput(Throughput::Elements(g.len() as u64));
        group.sample_size(20);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(2));
        group.bench_function("forward_train", |bench| {
            bench.iter(|| {
                b.batch_norm_forward_train(
                    &g,
                    act,
                    0.9,
                    1e-5,
                    &x,
                    &scale,
                    &offset,
                    &mut running_mean,
                    &mut running_var,
                    &mut mean,
                    &mut inv_std,
                    &mut y,
                )
            })
        });
        group.bench_function("backward_train", |bench| {
            bench.iter(|| {
                b.batch_norm_backward_train(
                    &g,
                    act,
                    &x,
                    &y,
                    &dy,
                    &scale,
                    &mean,
                    &inv_std,
                    &mut dx,
                    &mut dscale,
                    &mut doffset,
                )
            })
        });
        group.finish();
    }
}

criterion_group!(benches, batch_norm);
criterion_main!(benches);
