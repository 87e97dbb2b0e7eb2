//! Reading and writing a DarkNet53 + YOLOv3-head shaped checkpoint (366
//! tensors, about 248 MB of float32) in every format.
//!
//! `load` is `load_checkpoint` alone (files are memory-mapped, so tensor bytes
//! are not touched); `load_and_read` also reads every byte once (what a
//! trainer does when it copies the weights into its model), which is the fair
//! comparison with readers that copy. `save` writes each format.
//!
//! With `PULSEFOCUS_BENCH_DIR` set, the files already there are used
//! (`benches/checkpoint_vs_paddle.py` does this so both sides read the same
//! files); otherwise they are generated in a temporary directory.
//!
//! `cargo bench -p pulsefocus-benches --bench checkpoint_io`

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use pulsefocus_formats::{load_checkpoint, save_checkpoint, Checkpoint, Format, RawTensor};

/// (name, shape) of every tensor of DarkNet53 with the YOLOv3 head, 80 classes
/// (spec `paddle-formats.md` section 4).
fn darknet53_yolov3_shapes() -> Vec<(String, Vec<usize>)> {
    let mut shapes = Vec::new();
    let mut unit = |name: String, cout: usize, cin: usize, k: usize| {
        shapes.push((format!("{name}.conv.weights"), vec![cout, cin, k, k]));
        for part in ["scale", "offset", "mean", "var"] {
            shapes.push((format!("{name}.bn.{part}"), vec![cout]));
        }
    };
    unit("yolo_input".into(), 32, 3, 3);
    unit("yolo_input.downsample".into(), 64, 32, 3);
    for (s, blocks) in [1, 2, 8, 8, 4].into_iter().enumerate() {
        let ch = 32 << s;
        for b in 0..blocks {
            unit(format!("stage.{s}.{b}.0"), ch, 2 * ch, 1);
            unit(format!("stage.{s}.{b}.1"), 2 * ch, ch, 3);
        }
        if s < 4 {
            unit(format!("stage.{s}.downsample"), 4 * ch, 2 * ch, 3);
        }
    }
    let mut outputs = Vec::new();
    for (i, (channel, input)) in [(512, 1024), (256, 768), (128, 384)]
        .into_iter()
        .enumerate()
    {
        for j in 0..2 {
            let cin = if j == 0 { input } else { 2 * channel };
            unit(format!("yolo_block.{i}.{j}.0"), channel, cin, 1);
            unit(format!("yolo_block.{i}.{j}.1"), 2 * channel, channel, 3);
        }
        unit(format!("yolo_block.{i}.2"), channel, 2 * channel, 1);
        unit(format!("yolo_block.{i}.tip"), 2 * channel, channel, 3);
        if i < 2 {
            unit(format!("yolo_transition.{i}"), channel / 2, channel, 1);
        }
        outputs.push((
            format!("yolo_output.{i}.conv.weights"),
            vec![255, 2 * channel, 1, 1],
        ));
        outputs.push((format!("yolo_output.{i}.conv.bias"), vec![255]));
    }
    shapes.extend(outputs);
    shapes
}

fn synthetic_checkpoint() -> Checkpoint {
    let mut checkpoint = Checkpoint::new();
    let mut state = 12345u32;
    for (name, shape) in darknet53_yolov3_shapes() {
        let values: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect();
        checkpoint.insert(name, RawTensor::from_f32(shape, &values));
    }
    assert_eq!(checkpoint.len(), 366, "DarkNet53 + YOLOv3 head");
    checkpoint
}

/// The file names used for each format, here and in checkpoint_vs_paddle.py.
const FILES: [(&str, Format); 5] = [
    ("m_dir", Format::Dir),
    ("m.tar", Format::Tar),
    ("m.pdparams", Format::Pdparams),
    ("m.safetensors", Format::Safetensors),
    ("comb", Format::Combined),
];

/// Sums every byte in 8-byte words: touches all tensor data once.
fn read_every_byte(checkpoint: &Checkpoint) -> u64 {
    checkpoint
        .iter()
        .flat_map(|(_, t)| t.bytes.as_slice().chunks(8))
        .fold(0u64, |acc, c| {
            let mut word = [0u8; 8];
            word[..c.len()].copy_from_slice(c);
            acc.wrapping_add(u64::from_le_bytes(word))
        })
}

fn bench(c: &mut Criterion) {
    let generated = tempfile::tempdir().unwrap();
    let dir: PathBuf = match std::env::var_os("PULSEFOCUS_BENCH_DIR") {
        Some(dir) => dir.into(),
        None => {
            let checkpoint = synthetic_checkpoint();
            for (name, format) in FILES {
                save_checkpoint(&checkpoint, &generated.path().join(name), format).unwrap();
            }
            generated.path().to_path_buf()
        }
    };
    let path = |name: &str| -> PathBuf { Path::new(&dir).join(name) };

    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    for (name, _) in FILES {
        group.bench_function(name, |b| {
            b.iter(|| load_checkpoint(&path(name)).unwrap().len())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("load_and_read");
    group.sample_size(10);
    for (name, _) in FILES {
        group.bench_function(name, |b| {
            b.iter(|| read_every_byte(&load_checkpoint(&path(name)).unwrap()))
        });
    }
    group.finish();

    let checkpoint = load_checkpoint(&path("m.safetensors")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("save");
    group.sample_size(10);
    for (name, format) in FILES {
        let target = out.path().join(name);
        group.bench_function(name, |b| {
            b.iter(|| save_checkpoint(&checkpoint, &target, format).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
