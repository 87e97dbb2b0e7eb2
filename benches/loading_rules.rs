//! The loading rules on the DarkNet53 YOLOv3 parameter list (366 tensors)
//! against a COCO checkpoint's tensor list: target under a millisecond, so
//! `plan` and `train` are dominated by reading the checkpoint file.

use criterion::{criterion_group, criterion_main, Criterion};
use pulsefocus_core::loading::{plan_loading, ExcludePatterns, TensorInfo};
use pulsefocus_core::models::Yolov3Spec;
use pulsefocus_formats::DType;
use std::hint::black_box;

fn loading_rules(c: &mut Criterion) {
    // The model trains 20 classes; the checkpoint was trained on 80.
    let model = Yolov3Spec::darknet53(20).param_specs();
    let checkpoint: Vec<TensorInfo> = Yolov3Spec::darknet53(80)
        .param_specs()
        .into_iter()
        .map(|p| TensorInfo {
            name: p.name,
            shape: p.shape,
            dtype: DType::F32,
        })
        .collect();
    let preset = ExcludePatterns::new(&["yolo_output".to_string()]).unwrap();
    c.bench_function("loading_rules darknet53 preset", |b| {
        b.iter(|| plan_loading(black_box(&model), black_box(&checkpoint), &preset))
    });
    // Compiling the patterns is part of every plan too.
    c.bench_function("loading_rules darknet53 compile+plan 3 patterns", |b| {
        b.iter(|| {
            let patterns: Vec<String> = ["yolo_output", "yolo_block\\.2\\..*", "^stage\\.4"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let exclude = ExcludePatterns::new(black_box(&patterns)).unwrap();
            plan_loading(black_box(&model), black_box(&checkpoint), &exclude)
        })
    });
}

criterion_group!(benches, loading_rules);
criterion_main!(benches);
