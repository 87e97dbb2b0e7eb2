//! Convolution forward / backward-data / backward-filter on the CPU backend at
//! the real shapes of YOLOv3-MobileNetV1 (320x320 input, batch 8) and at the
//! 3x3 stride-1 shapes of VGG16-SSD300 (batch 8) and ResNet50-FPN / RetinaNet
//! (batch 1), which run Winograd's F(2x2, 3x3), reported as GFLOP/s
//! (criterion's "elem/s" throughput counts the direct convolution's
//! floating-point operations, so Winograd can pass the GEMM's peak), plus the
//! `gemm` crate's peak on a large square product for comparison.
//!
//! `cargo bench -p pulsefocus-benches --bench conv` (filter with a name, e.g.
//! `-- dw512`). Threads: rayon's default (all cores) or `RAYON_NUM_THREADS`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pulsefocus_core::backend::{Backend, Conv2dGeom};
use pulsefocus_core::cpu::gemm::{sgemm, Operand};
use pulsefocus_core::gradcheck::random_vec;
use pulsefocus_core::CpuBackend;
use std::time::Duration;

const BATCH: usize = 8;

/// (name, c_in, c_out, kernel, stride, groups, input size) of the model's
/// convolutions: the backbone's stem, depthwise and pointwise layers at each
/// resolution, and the YOLO head's 1x1 / 3x3 pairs at each level.
const SHAPES: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("stem3x3s2_3to32_320", 3, 32, 3, 2, 1, 320),
    ("dw32_s1_160", 32, 32, 3, 1, 32, 160),
    ("pw32to64_160", 32, 64, 1, 1, 1, 160),
    ("dw64_s2_160", 64, 64, 3, 2, 64, 160),
    ("pw128to128_80", 128, 128, 1, 1, 1, 80),
    ("dw128_s1_80", 128, 128, 3, 1, 128, 80),
    ("pw128to256_40", 128, 256, 1, 1, 1, 40),
    ("dw256_s1_40", 256, 256, 3, 1, 256, 40),
    ("pw256to512_20", 256, 512, 1, 1, 1, 20),
    ("dw512_s1_20", 512, 512, 3, 1, 512, 20),
    ("pw512to512_20", 512, 512, 1, 1, 1, 20),
    ("pw1024to1024_10", 1024, 1024, 1, 1, 1, 10),
    ("head1x1_1024to512_10", 1024, 512, 1, 1, 1, 10),
    ("head3x3_512to1024_10", 512, 1024, 3, 1, 1, 10),
    ("head3x3_256to512_20", 256, 512, 3, 1, 1, 20),
    ("head1x1_384to128_40", 384, 128, 1, 1, 1, 40),
    ("head3x3_128to256_40", 128, 256, 3, 1, 1, 40),
    ("out1x1_256to75_40", 256, 75, 1, 1, 1, 40),
];

/// (name, batch, c_in, c_out, height, width) of 3x3 stride-1 convolutions:
/// VGG16's at 300 pixels (the first, from 3 channels, stays on im2col),
/// ResNet50's middle convs, FPN's output and the RPN's conv at 800x1216, and
/// the RetinaNet head's at 768 (P3's 96x96 and P6's 12x12) and on the two
/// sides of Winograd's `MIN_TILES` (24x24 and 16x16: P5 at 768, P4 at 256).
const STRIDE_1_3X3: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("vgg_conv1_2_64to64_300", 8, 64, 64, 300, 300),
    ("vgg_conv2_1_64to128_150", 8, 64, 128, 150, 150),
    ("vgg_conv3_2_256to256_75", 8, 256, 256, 75, 75),
    ("vgg_conv4_2_512to512_38", 8, 512, 512, 38, 38),
    ("vgg_conv5_2_512to512_19", 8, 512, 512, 19, 19),
    ("res3_branch2b_128to128_100x152", 1, 128, 128, 100, 152),
    ("res5_branch2b_512to512_25x38", 1, 512, 512, 25, 38),
    ("fpn_p2_256to256_200x304", 1, 256, 256, 200, 304),
    ("retina_head_256to256_96", 1, 256, 256, 96, 96),
    ("retina_head_256to256_24", 1, 256, 256, 24, 24),
    ("retina_head_256to256_16", 1, 256, 256, 16, 16),
    ("retina_head_256to256_12", 1, 256, 256, 12, 12),
    ("small_32to32_80", 8, 32, 32, 80, 80),
];

fn geom(c_in: usize, c_out: usize, k: usize, s: usize, groups: usize, size: usize) -> Conv2dGeom {
    Conv2dGeom {
        batch: BATCH,
        c_in,
        h_in: size,
        w_in: size,
        c_out,
        kernel_h: k,
        kernel_w: k,
        stride_h: s,
        stride_w: s,
        pad_h: k / 2,
        pad_w: k / 2,
        dilation_h: 1,
        dilation_w: 1,
        groups,
    }
}

fn conv(c: &mut Criterion) {
    let yolo = SHAPES
        .iter()
        .map(|&(name, c_in, c_out, k, s, groups, size)| {
            (name, geom(c_in, c_out, k, s, groups, size))
        });
    let stride_1 = STRIDE_1_3X3
        .iter()
        .map(|&(name, batch, c_in, c_out, h, w)| {
            let g = Conv2dGeom {
                batch,
                h_in: h,
                w_in: w,
                ..geom(c_in, c_out, 3, 1, 1, h)
            };
            (name, g)
        });
    let b = CpuBackend::new();
    for (name, g) in yolo.chain(stride_1) {
        let x = random_vec(1, g.input_len());
        let w = random_vec(2, g.weight_len());
        let dy = random_vec(3, g.output_len());
        let mut y = b.alloc(g.output_len());
        let mut dx = b.alloc(g.input_len());
        let mut dw = b.alloc(g.weight_len());
        let mut ws = b.alloc(b.conv2d_workspace_len(&g));
        let mut group = c.benchmark_group(format!("conv/{name}"));
        group.throughput(Throughput::Elements(g.flops() as u64));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(2));
        group.bench_function("forward", |bench| {
            bench.iter(|| b.conv2d_forward(&g, &x, &w, None, &mut y, &mut ws))
        });
        group.bench_function("backward_data", |bench| {
            bench.iter(|| b.conv2d_backward_data(&g, &dy, &w, &mut dx, false, &mut ws))
        });
        group.bench_function("backward_filter", |bench| {
            bench.iter(|| b.conv2d_backward_filter(&g, &x, &dy, &mut dw, None, &mut ws))
        });
        group.finish();
    }
}

/// The GEMM ceiling the convolutions are measured against.
fn gemm_peak(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    let mut group = c.benchmark_group("gemm_peak");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for n in [512usize, 1024, 2048] {
        let a = random_vec(4, n * n);
        let bm = random_vec(5, n * n);
        let mut out = vec![0.0; n * n];
        group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, &n| {
            bench.iter(|| {
                sgemm(
                    n,
                    n,
                    n,
                    Operand::new(&a, n),
                    Operand::new(&bm, n),
                    &mut out,
                    n,
                    false,
                    threads,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, gemm_peak, conv);
criterion_main!(benches);
