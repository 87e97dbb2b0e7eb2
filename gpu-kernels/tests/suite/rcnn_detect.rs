//! `rcnn_detect`: the Faster R-CNN box head's detection output: softmax,
//! per-class decode of each RoI (scaled back to the original picture) and
//! clip, multiclass NMS with the background left out, each class's
//! detections listed by RoI. The emulator (std `exp`) must give the CPU's
//! detections to the bit. A GPU's `exp` (`ex2.approx`) moves a score by
//! about 1e-5 of itself and a box edge by about 1e-5 of its size; its
//! detections must then have the CPU's labels in the same order, scores
//! within 1e-5 relative and boxes within 1e-3 pixels plus 1e-5 relative
//! (two scores or an IoU that close to each other or to a threshold could
//! honestly flip there; these seeds draw none).
use pulsefocus_core::backend::BoxHeadRois;
use pulsefocus_core::rcnn::RcnnConfig;
use pulsefocus_core::yolo::Detection;
use pulsefocus_core::Backend;

use super::{assert_unchanged, buffer, cpu, input, Rng, SEEDS};

/// (name, classes, each image's RoI count, scale and original (height,
/// width)).
type Case = (&'static str, usize, Vec<(usize, f32, [f32; 2])>);

fn cases() -> Vec<Case> {
    vec![
        (
            "2 images, 4 classes",
            4,
            vec![(24, 1.0, [90.0, 110.0]), (17, 1.5, [60.0, 70.0])],
        ),
        (
            "3 images, one without RoIs, 81 classes",
            81,
            vec![
                (12, 0.8, [120.0, 100.0]),
                (0, 1.0, [50.0, 50.0]),
                (30, 2.0, [40.0, 60.0]),
            ],
        ),
    ]
}

fn settings(classes: usize) -> Vec<(&'static str, RcnnConfig)> {
    let base = RcnnConfig::faster_rcnn(classes);
    let with = |score_threshold, nms_top_k, keep_top_k| {
        let mut cfg = base.clone();
        cfg.nms.score_threshold = score_threshold;
        cfg.nms.nms_top_k = nms_top_k;
        cfg.nms.keep_top_k = keep_top_k;
        cfg
    };
    vec![
        ("Paddle's settings", base.clone()),
        ("threshold 0, keep 6", with(0.0, None, Some(6))),
        ("threshold 0.02, top 3", with(0.02, Some(3), None)),
        ("keep none", with(0.05, None, Some(0))),
    ]
}

/// The batch's RoIs (resized-input pixels, on a coarse grid so that many
/// overlap and some cross the picture's edge), logits in quarters (ties),
/// deltas up to 1.5, and the device rows of the RoIs: every other RoI
/// first, as FPN's levels reorder them.
struct Batch {
    boxes: Vec<[f32; 4]>,
    counts: Vec<usize>,
    rows: Vec<usize>,
    scales: Vec<f32>,
    im_shapes: Vec<[f32; 3]>,
    host: [Vec<f32>; 2],
}

fn batch(rng: &mut Rng, classes: usize, images: &[(usize, f32, [f32; 2])]) -> Batch {
    let mut boxes = Vec::new();
    for &(count, scale, [h, w]) in images {
        for _ in 0..count {
            let x = (rng.uniform(-0.1, 0.9) * w * scale / 8.0).round() * 8.0;
            let y = (rng.uniform(-0.1, 0.9) * h * scale / 8.0).round() * 8.0;
            let (bw, bh) = (rng.uniform(8.0, 40.0), rng.uniform(8.0, 40.0));
            boxes.push([x, y, x + bw.round(), y + bh.round()]);
        }
    }
    let total = boxes.len();
    let rows = (0..total)
        .map(|i| {
            if i % 2 == 0 {
                i / 2
            } else {
                total.div_ceil(2) + i / 2
            }
        })
        .collect();
    let cls_score = rng.steps(total * classes, -2.0, 2.0, 0.25);
    let bbox_pred = rng.values(total * 4 * classes, -1.5, 1.5);
    Batch {
        boxes,
        counts: images.iter().map(|i| i.0).collect(),
        rows,
        scales: images.iter().map(|i| i.1).collect(),
        im_shapes: images.iter().map(|&(_, _, [h, w])| [h, w, 1.0]).collect(),
        host: [input(&cls_score), input(&bbox_pred)],
    }
}

fn run<B: Backend>(b: &B, cfg: &RcnnConfig, batch: &Batch) -> Vec<Vec<Detection>> {
    let [cls_score, bbox_pred] = [0, 1].map(|k| buffer(b, &batch.host[k]));
    let rois = BoxHeadRois {
        boxes: &batch.boxes,
        counts: &batch.counts,
        rows: &batch.rows,
        scales: &batch.scales,
        im_shapes: &batch.im_shapes,
    };
    let detections = b.rcnn_detect(cfg, &rois, &cls_score, &bbox_pred);
    if let Err(err) = b.check() {
        panic!("{}: {err}", b.name());
    }
    assert_unchanged(b, "cls_score", &cls_score, &batch.host[0]);
    assert_unchanged(b, "bbox_pred", &bbox_pred, &batch.host[1]);
    detections
}

pub fn rcnn_detect_matches<B: Backend>(b: &B) {
    let exact = !b.name().starts_with("cuda");
    for (name, classes, images) in cases() {
        for seed in SEEDS {
            let batch = batch(&mut Rng::new(seed), classes, &images);
            for (setting, cfg) in settings(classes) {
                let what = format!("rcnn_detect {name}, {setting} seed {seed}");
                let got = run(b, &cfg, &batch);
                let want = run(&cpu(), &cfg, &batch);
                let found: usize = want.iter().map(Vec::len).sum();
                assert_eq!(
                    found == 0,
                    cfg.nms.keep_top_k == Some(0),
                    "{what}: the reference found {found}"
                );
                assert_eq!(got.len(), images.len(), "{what}: images");
                for (n, (g, w)) in got.iter().zip(&want).enumerate() {
                    let at = format!("{what}, image {n}");
                    assert_eq!(g.len(), w.len(), "{at}: detection count");
                    for (k, (gd, wd)) in g.iter().zip(w).enumerate() {
                        let at = format!("{at}, detection {k}: {gd:?} vs {wd:?}");
                        assert_eq!(gd.class, wd.class, "{at}");
                        let close = |p: f32, q: f32, abs: f32| {
                            if exact {
                                p.to_bits() == q.to_bits()
                            } else {
                                (p - q).abs() <= abs + 1e-5 * q.abs()
                            }
                        };
                        assert!(close(gd.score, wd.score, 1e-7), "{at}");
                        for (&p, &q) in gd.bbox.iter().zip(&wd.bbox) {
                            assert!(close(p, q, 1e-3), "{at}");
                        }
                    }
                }
            }
        }
    }
}
