//! Criterion benchmarks of the GPU kernels, at YOLOv3-MobileNetV1's shapes
//! (320x320 input, batch 8): every convolution pass, GEMM, batch norm, YOLO
//! decode and NMS. Throughput is in FLOP (criterion prints it as "elem/s")
//! or boxes. Without a GPU it prints why and exits.
//!
//!     cargo bench -p pulsefocus-benches --bench gpu_kernels
//!     python3 benches/gpu_kernels_torch.py --criterion $CARGO_TARGET_DIR/criterion   # cuDNN ratios
use criterion::{BenchmarkId, Criterion, Throughput};
use pulsefocus_core::backend::{Activation, BatchNormGeom, Conv2dGeom};
use pulsefocus_core::yolo::{NmsConfig, YoloConfig};
use pulsefocus_gpu::{Gpu, Strides};

/// (name, c_in, c_out, k, stride, input size, depthwise), batch 8. The names
/// are shared with gpu_kernels_torch.py.
const CONV_SHAPES: &[(&str, usize, usize, usize, usize, usize, bool)] = &[
    ("conv1_3x3s2_3_32_320", 3, 32, 3, 2, 320, false),
    ("dw_3x3_32_160", 32, 32, 3, 1, 160, true),
    ("pw_32_64_160", 32, 64, 1, 1, 160, false),
    ("dw_3x3s2_64_160", 64, 64, 3, 2, 160, true),
    ("pw_128_128_80", 128, 128, 1, 1, 80, false),
    ("pw_256_256_40", 256, 256, 1, 1, 40, false),
    ("pw_512_512_20", 512, 512, 1, 1, 20, false),
    ("dw_3x3_512_20", 512, 512, 3, 1, 20, true),
    ("pw_1024_1024_10", 1024, 1024, 1, 1, 10, false),
    ("head_3x3_512_1024_10", 512, 1024, 3, 1, 10, false),
];
const BATCH: usize = 8;

fn geometry(
    &(_, c_in, c_out, k, stride, size, depthwise): &(&str, usize, usize, usize, usize, usize, bool),
) -> Conv2dGeom {
    let groups = if depthwise { c_in } else { 1 };
    Conv2dGeom {
        batch: BATCH,
        c_in,
        h_in: size,
        w_in: size,
        c_out,
        kernel_h: k,
        kernel_w: k,
        stride_h: stride,
        stride_w: stride,
        pad_h: k / 2,
        pad_w: k / 2,
        dilation_h: 1,
        dilation_w: 1,
        groups,
    }
}

fn filled(gpu: &Gpu, len: usize, value: f32) -> pulsefocus_gpu::DeviceBuffer {
    let mut buffer = gpu.alloc(len).expect("device memory");
    gpu.fill(len, &mut buffer, value).expect("fill");
    buffer
}

fn conv(c: &mut Criterion, gpu: &Gpu) {
    for pass in ["forward", "backward_data", "backward_filter"] {
        let mut group = c.benchmark_group(format!("conv_{pass}"));
        for shape in CONV_SHAPES {
            let geo = geometry(shape);
            let (x_len, w_len, y_len) = (geo.input_len(), geo.weight_len(), geo.output_len());
            let (x, w, y) = (
                filled(gpu, x_len, 0.5),
                filled(gpu, w_len, 0.01),
                filled(gpu, y_len, 0.1),
            );
            let (mut x_out, mut w_out, mut y_out) = (
                filled(gpu, x_len, 0.0),
                filled(gpu, w_len, 0.0),
                filled(gpu, y_len, 0.0),
            );
            // 2 FLOP per multiply-add.
            let flops = geo.flops() as u64;
            group.throughput(Throughput::Elements(flops));
            group.bench_function(BenchmarkId::from_parameter(shape.0), |b| {
                b.iter(|| {
                    match pass {
                        "forward" => gpu.conv2d_forward(&geo, &x, &w, None, &mut y_out),
                        "backward_data" => {
                            gpu.conv2d_backward_data(&geo, &y, &w, &mut x_out, false)
                        }
                        _ => gpu.conv2d_backward_filter(&geo, &x, &y, &mut w_out),
                    }
                    .expect("launch");
                    gpu.synchronize().expect("sync");
                })
            });
        }
        group.finish();
    }
}

fn gemm(c: &mut Criterion, gpu: &Gpu) {
    let mut group = c.benchmark_group("gemm");
    for n in [256u32, 1024, 2048] {
        let len = (n * n) as usize;
        let (a, b) = (filled(gpu, len, 0.5), filled(gpu, len, 0.25));
        let mut out = filled(gpu, len, 0.0);
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        group.bench_function(BenchmarkId::from_parameter(n), |bench| {
            bench.iter(|| {
                gpu.gemm(
                    1,
                    (n, n, n),
                    1.0,
                    &a,
                    Strides::row_major(n, 0),
                    &b,
                    Strides::row_major(n, 0),
                    0.0,
                    &mut out,
                    n,
                    0,
                )
                .expect("gemm");
                gpu.synchronize().expect("sync");
            })
        });
    }
    group.finish();
}

fn batch_norm(c: &mut Criterion, gpu: &Gpu) {
    let mut group = c.benchmark_group("batch_norm_train");
    for (name, channels, size) in [
        ("32_160", 32usize, 160usize),
        ("256_40", 256, 40),
        ("1024_10", 1024, 10),
    ] {
        let (len, ch) = (BATCH * channels * size * size, channels);
        let (x, gamma, beta) = (
            filled(gpu, len, 0.5),
            filled(gpu, ch, 1.0),
            filled(gpu, ch, 0.0),
        );
        let (mut y, mut dx) = (filled(gpu, len, 0.0), filled(gpu, len, 0.0));
        let [mut mean, mut inv_std, mut rm, mut rv, mut dg, mut db] =
            std::array::from_fn(|_| filled(gpu, ch, 1.0));
        let shape = BatchNormGeom {
            batch: BATCH,
            channels,
            spatial: size * size,
        };
        let act = Activation::LEAKY_0_1;
        group.throughput(Throughput::Elements(len as u64));
        group.bench_function(BenchmarkId::new("forward_backward", name), |b| {
            b.iter(|| {
                gpu.batch_norm_train_forward(
                    &shape,
                    act,
                    &x,
                    &gamma,
                    &beta,
                    &mut y,
                    (&mut mean, &mut inv_std),
                    (&mut rm, &mut rv),
                    1e-5,
                    0.9,
                )
                .expect("bn");
                // y stands in for the incoming gradient.
                gpu.batch_norm_train_backward(
                    &shape,
                    act,
                    &x,
                    &y,
                    &y,
                    &gamma,
                    (&mean, &inv_std),
                    &mut dx,
                    &mut dg,
                    &mut db,
                )
                .expect("bn");
                gpu.synchronize().expect("sync");
            })
        });
    }
    group.finish();
}

fn decode_and_nms(c: &mut Criterion, gpu: &Gpu) {
    // YOLOv3 at 320x320 over 20 classes: 6300 boxes per image, decoded and
    // through PaddleDetection's multiclass NMS; logits give ~1k candidates.
    let cfg = YoloConfig::yolov3(20);
    let grids = [10usize, 20, 40];
    let heads: Vec<_> = grids
        .iter()
        .enumerate()
        .map(|(level, &g)| {
            let len = BATCH * cfg.head_channels(level) * g * g;
            let host: Vec<f32> = (0..len)
                .map(|i| ((i * 2654435761) % 1_000_003) as f32 / 250_000.0 - 3.0)
                .collect();
            gpu.upload(&host).expect("upload")
        })
        .collect();
    let heads: Vec<_> = heads.iter().zip(grids).map(|(h, g)| (h, g, g)).collect();
    let sizes = vec![[320u32, 320]; BATCH];
    let nms = NmsConfig::yolov3();
    let boxes: usize = grids.iter().map(|g| 3 * g * g).sum();
    let mut group = c.benchmark_group("yolo_detect");
    group.throughput(Throughput::Elements((BATCH * boxes) as u64));
    group.bench_function("320_batch8_20classes", |b| {
        b.iter(|| gpu.yolo_detect(&cfg, &heads, &sizes, &nms).expect("detect"))
    });
    group.finish();

    // NMS at 1k..20k single-class boxes scattered over a 640x640 image,
    // normalized (no +1), every box a candidate: torchvision.ops.nms's work.
    let mut group = c.benchmark_group("nms");
    for count in [1_000usize, 5_000, 20_000] {
        let host_boxes: Vec<f32> = (0..count)
            .flat_map(|i| {
                let (x, y) = ((i * 7919 % 600) as f32, (i * 104729 % 600) as f32);
                let size = 20.0 + (i % 37) as f32;
                [x, y, x + size, y + size]
            })
            .collect();
        let host_scores: Vec<f32> = (0..count)
            .map(|i| ((i * 2654435761) % 1_000_003) as f32 / 1_000_003.0)
            .collect();
        let (boxes, scores) = (
            gpu.upload(&host_boxes).expect("upload"),
            gpu.upload(&host_scores).expect("upload"),
        );
        let nms = NmsConfig {
            score_threshold: -1.0,
            nms_top_k: None,
            keep_top_k: None,
            nms_threshold: 0.5,
            normalized: true,
            background_label: None,
        };
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(BenchmarkId::from_parameter(count), |b| {
            b.iter(|| {
                gpu.multiclass_nms(&boxes, &scores, [1, count, 1], &nms)
                    .expect("nms")
            })
        });
    }
    group.finish();
}

fn main() {
    let gpu = match Gpu::open() {
        Ok(gpu) => gpu,
        Err(err) => {
            println!("gpu_kernels: skipped: {err}");
            return;
        }
    };
    println!("gpu_kernels on {}", gpu.info);
    let mut c = Criterion::default().configure_from_args();
    conv(&mut c, &gpu);
    gemm(&mut c, &gpu);
    batch_norm(&mut c, &gpu);
    decode_and_nms(&mut c, &gpu);
    c.final_summary();
    let stats = gpu.pool.stats();
    println!(
        "gpu_kernels: peak pooled device memory {:.1} MiB",
        stats.peak_held_bytes as f64 / (1 << 20) as f64
    );
}
