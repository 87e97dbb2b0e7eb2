//! The R-CNN operators that run on the host every training step, as
//! PaddleDetection runs them (Paddle 1.8 registers only a CPU kernel for
//! `generate_proposal_labels`, so even its GPU training brings the proposals
//! to the host for it): `generate_proposal_labels` on one image's 2000
//! proposals (`post_nms_top_n` in training) against 10 and 50 ground-truth
//! boxes, at faster_rcnn_r50_1x.yml's settings (512 RoIs, a quarter
//! foreground, `use_random`).
//!
//! The proposals sit around the boxes (a third of them within a few
//! pixels, so that the foreground quota is met and sampled) and across an
//! 800x1216 picture.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pulsefocus_core::box_coder::BoxXyxy;
use pulsefocus_core::data::rng::Rng;
use pulsefocus_core::rcnn::{generate_proposal_labels, BBoxAssignerConfig};

const PROPOSALS: usize = 2000;

/// `gts` boxes of 30 to 230 pixels in an 800x1216 picture, and the
/// proposals: every third one a box moved by up to 8 pixels, the rest
/// anywhere.
fn scene(gts: usize, rng: &mut Rng) -> (Vec<BoxXyxy>, Vec<BoxXyxy>) {
    let truth: Vec<BoxXyxy> = (0..gts).map(|_| a_box(rng)).collect();
    let proposals = (0..PROPOSALS)
        .map(|i| {
            if i % 3 == 0 {
                truth[i / 3 % gts].map(|v| v + (rng.uniform_f32() - 0.5) * 16.0)
            } else {
                a_box(rng)
            }
        })
        .collect();
    (truth, proposals)
}

/// A box of 30 to 230 pixels a side inside the picture.
fn a_box(rng: &mut Rng) -> BoxXyxy {
    let (x, y) = (rng.uniform_f32() * 980.0, rng.uniform_f32() * 560.0);
    let (w, h) = (
        30.0 + rng.uniform_f32() * 200.0,
        30.0 + rng.uniform_f32() * 200.0,
    );
    [x, y, x + w, y + h]
}

fn bench_generate_proposal_labels(c: &mut Criterion) {
    let mut group = c.benchmark_group("generate_proposal_labels");
    let cfg = BBoxAssignerConfig::faster_rcnn(81);
    for gts in [10, 50] {
        let mut rng = Rng::from_state(gts as u64);
        let (truth, proposals) = scene(gts, &mut rng);
        let classes: Vec<i32> = (0..gts).map(|i| 1 + (i % 80) as i32).collect();
        let crowd = vec![false; gts];
        // 800x1216 resized from a 640x973 picture (scale 1.25).
        let truth: Vec<BoxXyxy> = truth.iter().map(|b| b.map(|v| v / 1.25)).collect();
        let id = BenchmarkId::new(format!("{PROPOSALS}_proposals"), format!("{gts}_boxes"));
        group.bench_with_input(id, &gts, |b, _| {
            b.iter(|| {
                let sampled = generate_proposal_labels(
                    &cfg,
                    black_box(&proposals),
                    &truth,
                    &classes,
                    &crowd,
                    [800.0, 1216.0, 1.25],
                    &mut rng,
                );
                assert_eq!(sampled.rois.len(), 512, "the quota is met");
                sampled
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_generate_proposal_labels);
criterion_main!(benches);
