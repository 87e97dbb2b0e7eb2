//! `yolo_box` decoding of one 608x608 image's three YOLOv3 levels (grids 19,
//! 38, 76; 22743 boxes) with 20 classes, as at evaluation.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pulsefocus_core::yolo::{yolo_box, DecodeConfig, YoloConfig};

fn bench_decode(c: &mut Criterion) {
    let yolo = YoloConfig::yolov3(20);
    let input = 608;
    let levels: Vec<(DecodeConfig, Vec<f32>, usize)> = (0..3)
        .map(|level| {
            let ratio = yolo.downsample_ratios[level];
            let grid = input / ratio;
            let cfg = DecodeConfig {
                anchors: yolo.anchor_masks[level]
                    .iter()
                    .map(|&a| yolo.anchors[a])
                    .collect(),
                num_classes: 20,
                conf_thresh: 0.005,
                downsample_ratio: ratio,
                clip_bbox: true,
                scale_x_y: 1.0,
            };
            // Logits spread over [-4, 4] without a generator: decoding cost does
            // not depend on their order, only on how many pass conf_thresh.
            let data = (0..yolo.head_channels(level) * grid * grid)
                .map(|i| (i as f32 * 0.754_877_7).sin() * 4.0)
                .collect();
            (cfg, data, grid)
        })
        .collect();
    c.bench_function("decode/yolov3_608_20_classes", |b| {
        b.iter(|| {
            for (cfg, data, grid) in &levels {
                black_box(yolo_box(cfg, black_box(data), *grid, *grid, &[[480, 640]]));
            }
        })
    });
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
