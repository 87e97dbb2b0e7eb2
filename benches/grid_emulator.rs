//! The CPU grid emulator itself (`gpu-kernels/device/src/emu.rs`), which runs
//! every kernel in the tests and behind `PULSEFOCUS_GPU_EMULATOR=1`: bare
//! barriers in 32- and 256-thread blocks (the cost of a coroutine switch per
//! thread and barrier), and a batch norm layer's training forward launch (256
//! threads per channel meeting at barriers), run once forward and run
//! race-checked (forward, then reverse, compared), as a training step
//! launches it.
//!
//! `cargo bench -p pulsefocus-benches --bench grid_emulator`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pulsefocus_gpu_device::batch_norm::batch_norm_train_forward;
use pulsefocus_gpu_device::emu::{run, run_checked, DeviceBuf, Dim3, Schedule};
use pulsefocus_gpu_device::reduce::REDUCE_THREADS;
use pulsefocus_gpu_device::Ctx;
use std::time::Duration;

/// Barriers each thread meets in the bare-barrier launch.
const BARRIERS: u32 = 21;
/// Threads in the bare-barrier launch, whatever the block size.
const THREADS: u32 = 128 * 256;

fn bare_barriers(c: &mut Criterion) {
    let mut group = c.benchmark_group("emulator/barriers");
    group.throughput(Throughput::Elements((THREADS * BARRIERS) as u64));
    for threads in [32u32, 256] {
        group.bench_function(format!("{threads} threads per block"), |b| {
            b.iter(|| {
                run(
                    "bare",
                    Dim3::x(THREADS / threads),
                    Dim3::x(threads),
                    Schedule::Forward,
                    |ctx| {
                        for _ in 0..BARRIERS {
                            ctx.sync_threads();
                        }
                    },
                )
                .expect("a launch without faults")
            })
        });
    }
    group.finish();
}

fn batch_norm_launch(c: &mut Criterion) {
    let (batch, channels, plane) = (2u32, 128u32, 32 * 32u32);
    let len = (batch * channels * plane) as usize;
    let x: Vec<f32> = (0..len).map(|i| (i % 97) as f32 / 50.0 - 1.0).collect();
    let x = DeviceBuf::new(&x);
    let (gamma, beta) = (
        DeviceBuf::filled(channels as usize, 1.0f32),
        DeviceBuf::filled(channels as usize, 0.0f32),
    );
    let y = DeviceBuf::filled(len, 0.0f32);
    let stats: Vec<DeviceBuf<f32>> = (0..4)
        .map(|_| DeviceBuf::filled(channels as usize, 0.5))
        .collect();
    let body = |ctx: &Ctx| unsafe {
        batch_norm_train_forward(
            ctx,
            x.ptr(),
            gamma.ptr(),
            beta.ptr(),
            y.ptr(),
            stats[0].ptr(),
            stats[1].ptr(),
            stats[2].ptr(),
            stats[3].ptr(),
            batch,
            channels,
            plane,
            1e-5,
            0.9,
            0,
            0.0,
        )
    };
    let (grid, block) = (Dim3::x(channels), Dim3::x(REDUCE_THREADS));
    let regions = [y.region(), stats[0].region(), stats[1].region()];
    let mut group = c.benchmark_group("emulator/batch_norm_train_forward 2x128x32x32");
    group.throughput(Throughput::Elements(len as u64));
    group.bench_function("forward", |b| {
        b.iter(|| run("bn", grid, block, Schedule::Forward, body).expect("no fault"))
    });
    group.bench_function("race-checked", |b| {
        b.iter(|| run_checked("bn", grid, block, &regions, body).expect("no fault"))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = bare_barriers, batch_norm_launch
}
criterion_main!(benches);
