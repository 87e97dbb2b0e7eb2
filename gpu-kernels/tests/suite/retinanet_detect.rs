//! `retinanet_detect`: RetinaNet's per-level threshold (none on the last
//! level) and top-k over (anchor, class) pairs, decode, scale and clip,
//! class-aware NMS over all levels and the per-image cut. The scores are
//! inputs and every decision is a comparison, so the emulator (std `exp`)
//! must give the CPU's detections to the bit. A GPU's `exp`
//! (`ex2.approx`) moves a box edge by about 1e-5 of its size; its
//! detections must then have the CPU's labels and scores in the same order
//! and boxes within 1e-3 pixels plus 1e-5 relative (a box at an NMS
//! threshold could honestly flip there; these seeds draw none).
use pulsefocus_core::backend::RetinaLevelInput;
use pulsefocus_core::retinanet::RetinaOutputConfig;
use pulsefocus_core::yolo::Detection;
use pulsefocus_core::Backend;

use super::{assert_unchanged, buffer, cpu, input, Rng, SEEDS};

/// (name, anchors per cell, classes, level sizes, each image's im_info).
type Case = (&'static str, usize, usize, Vec<[usize; 2]>, Vec<[f32; 3]>);

fn cases() -> Vec<Case> {
    vec![
        (
            "one level, 2 images",
            6,
            2,
            vec![[6, 7]],
            vec![[90.0, 110.0, 1.0], [70.0, 100.0, 1.5]],
        ),
        (
            "3 levels, 3 images",
            3,
            4,
            vec![[8, 10], [4, 5], [2, 3]],
            vec![[60.0, 76.0, 1.0], [64.0, 80.0, 1.5], [50.0, 80.0, 0.8]],
        ),
    ]
}

fn settings() -> Vec<(&'static str, RetinaOutputConfig)> {
    let base = RetinaOutputConfig {
        score_thresh: 0.3,
        nms_thresh: 0.5,
        pre_nms_top_n: 40,
        detections_per_im: 30,
        nms_eta: 1.0,
    };
    vec![
        ("threshold 0.3, top 40, keep 30", base.clone()),
        (
            "adaptive NMS, no cuts",
            RetinaOutputConfig {
                nms_thresh: 0.9,
                pre_nms_top_n: 100_000,
                detections_per_im: 100_000,
                nms_eta: 0.8,
                ..base.clone()
            },
        ),
        (
            "threshold 0, top 40",
            RetinaOutputConfig {
                score_thresh: 0.0,
                ..base.clone()
            },
        ),
        (
            "top 3, keep 5",
            RetinaOutputConfig {
                pre_nms_top_n: 3,
                detections_per_im: 5,
                ..base.clone()
            },
        ),
        (
            "keep none",
            RetinaOutputConfig {
                detections_per_im: 0,
                ..base
            },
        ),
    ]
}

/// One level's host inputs: scores, deltas, anchors (each with a NaN
/// tail), and its size.
struct Level {
    host: [Vec<f32>; 3],
    size: [usize; 2],
}

/// Anchors of `a` shapes centred on each cell of a `h x w` map with
/// stride `4 << level` (neighbours overlap by about 0.5 to 0.9), scores in
/// eighths (many ties, some exactly at the threshold, some 0), deltas up to
/// 2.
fn level(
    rng: &mut Rng,
    images: usize,
    a: usize,
    classes: usize,
    level: usize,
    [h, w]: [usize; 2],
) -> Level {
    let count = h * w * a;
    let stride = (4 << level) as f32;
    let mut anchors = Vec::with_capacity(count * 4);
    for cell in 0..h * w {
        let (cx, cy) = (
            (cell % w) as f32 * stride + (stride - 1.0) / 2.0,
            (cell / w) as f32 * stride + (stride - 1.0) / 2.0,
        );
        for k in 0..a {
            let half_w = stride * (2.0 + (k % 3) as f32 * 0.5) - 0.5;
            let half_h = stride * (2.0 + (k / 3) as f32 * 0.5) - 0.5;
            anchors.extend([cx - half_w, cy - half_h, cx + half_w, cy + half_h]);
        }
    }
    let scores = rng.steps(images * count * classes, 0.0, 1.0, 0.125);
    let deltas = rng.values(images * 4 * count, -2.0, 2.0);
    Level {
        host: [input(&scores), input(&deltas), input(&anchors)],
        size: [h, w],
    }
}

fn run<B: Backend>(
    b: &B,
    cfg: &RetinaOutputConfig,
    levels: &[Level],
    a: usize,
    classes: usize,
    im_info: &[[f32; 3]],
) -> Vec<Vec<Detection>> {
    let bufs: Vec<Vec<B::Buffer>> = levels
        .iter()
        .map(|l| l.host.iter().map(|h| buffer(b, h)).collect())
        .collect();
    let inputs: Vec<RetinaLevelInput<'_, B::Buffer>> = bufs
        .iter()
        .zip(levels)
        .map(|(buf, l)| RetinaLevelInput {
            scores: &buf[0],
            deltas: &buf[1],
            anchors: &buf[2],
            height: l.size[0],
            width: l.size[1],
        })
        .collect();
    let detections = b.retinanet_detect(cfg, &inputs, a, classes, im_info);
    if let Err(err) = b.check() {
        panic!("{}: {err}", b.name());
    }
    for (buf, l) in bufs.iter().zip(levels) {
        for (what, (buf, host)) in ["scores", "deltas", "anchors"]
            .into_iter()
            .zip(buf.iter().zip(&l.host))
        {
            assert_unchanged(b, what, buf, host);
        }
    }
    detections
}

pub fn retinanet_detect_matches<B: Backend>(b: &B) {
    let exact = !b.name().starts_with("cuda");
    for (name, a, classes, sizes, im_info) in cases() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let levels: Vec<Level> = sizes
                .iter()
                .enumerate()
                .map(|(l, &size)| level(&mut rng, im_info.len(), a, classes, l, size))
                .collect();
            for (setting, cfg) in settings() {
                let what = format!("retinanet_detect {name}, {setting} seed {seed}");
                let got = run(b, &cfg, &levels, a, classes, &im_info);
                let want = run(&cpu(), &cfg, &levels, a, classes, &im_info);
                let found: usize = want.iter().map(Vec::len).sum();
                assert_eq!(
                    found == 0,
                    cfg.detections_per_im == 0,
                    "{what}: the reference found {found}"
                );
                assert_eq!(got.len(), im_info.len(), "{what}: images");
                for (n, (g, w)) in got.iter().zip(&want).enumerate() {
                    let at = format!("{what}, image {n}");
                    assert_eq!(g.len(), w.len(), "{at}: detection count");
                    for (k, (gd, wd)) in g.iter().zip(w).enumerate() {
                        let at = format!("{at}, detection {k}: {gd:?} vs {wd:?}");
                        assert_eq!(gd.class, wd.class, "{at}");
                        assert_eq!(gd.score.to_bits(), wd.score.to_bits(), "{at}");
                        for (p, q) in gd.bbox.iter().zip(&wd.bbox) {
                            let close = if exact {
                                p.to_bits() == q.to_bits()
                            } else {
                                (p - q).abs() <= 1e-3 + 1e-5 * q.abs()
                            };
                            assert!(close, "{at}");
                        }
                    }
                }
            }
        }
    }
}
