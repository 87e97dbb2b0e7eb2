//! `yolo_detect`: YOLOv3 decode (Paddle's `yolo_box`) and multiclass NMS of
//! the three heads. Tolerances: scores are products of two sigmoids (the
//! GPU's fast exp: 1e-5 relative, see `elementwise`), box sides are anchors
//! times an exp of the logit, so a box edge may move by 1e-5 of the image
//! size: 1e-3 pixels plus 1e-5 relative. Detections must come out in the
//! same order with the same classes. Two candidates whose scores or IoU lie
//! within those tolerances of each other or of a threshold could honestly
//! swap or drop out on another device; the logits these seeds draw have
//! none (a failure names the detection and both values).
use pulsefocus_core::backend::HeadOutput;
use pulsefocus_core::yolo::{Detection, NmsConfig, YoloConfig};
use pulsefocus_core::Backend;

use super::{assert_unchanged, buffer, cpu, input, Rng, SEEDS};

/// (batch, input height, input width, classes, image sizes).
type Case = (usize, usize, usize, usize, Vec<[u32; 2]>);

fn cases() -> Vec<Case> {
    vec![
        (2, 64, 96, 3, vec![[480, 640], [96, 64]]),
        (1, 96, 96, 20, vec![[333, 500]]),
        // The old parity test's 10x10, 20x20 and 40x40 heads: thousands of
        // candidates per class (one seed and the default NMS only: the
        // emulator takes seconds over it).
        (2, 320, 320, 20, vec![[320, 320], [480, 640]]),
    ]
}

fn run<B: Backend>(
    b: &B,
    cfg: &YoloConfig,
    heads: &[(Vec<f32>, usize, usize)],
    sizes: &[[u32; 2]],
    nms: &NmsConfig,
) -> Vec<Vec<Detection>> {
    let bufs: Vec<B::Buffer> = heads.iter().map(|(h, _, _)| buffer(b, h)).collect();
    let outputs: Vec<HeadOutput<'_, B::Buffer>> = bufs
        .iter()
        .zip(heads)
        .map(|(buf, &(_, height, width))| HeadOutput { buf, height, width })
        .collect();
    let detections = b.yolo_detect(cfg, &outputs, sizes, nms);
    for (buf, (host, _, _)) in bufs.iter().zip(heads) {
        assert_unchanged(b, "head", buf, host);
    }
    detections
}

pub fn yolo_detect_matches<B: Backend>(b: &B) {
    for (batch, in_h, in_w, classes, sizes) in cases() {
        let big = in_h * in_w > 96 * 96;
        for seed in SEEDS.into_iter().take(if big { 1 } else { SEEDS.len() }) {
            let cfg = YoloConfig::yolov3(classes);
            let mut rng = Rng::new(seed);
            let heads: Vec<(Vec<f32>, usize, usize)> = cfg
                .downsample_ratios
                .iter()
                .enumerate()
                .map(|(level, &ratio)| {
                    let (h, w) = (in_h / ratio, in_w / ratio);
                    let len = batch * cfg.head_channels(level) * h * w;
                    (input(&rng.values(len, -4.0, 4.0)), h, w)
                })
                .collect();
            let settings = [
                NmsConfig::yolov3(),
                NmsConfig {
                    score_threshold: 0.3,
                    nms_top_k: Some(7),
                    keep_top_k: Some(5),
                    nms_threshold: 0.3,
                    normalized: false,
                    background_label: None,
                },
            ];
            for nms in settings.into_iter().take(if big { 1 } else { 2 }) {
                let what = format!(
                    "yolo_detect {batch}x{in_h}x{in_w}, {classes} classes, {nms:?}, seed {seed}"
                );
                let got = run(b, &cfg, &heads, &sizes, &nms);
                let want = run(&cpu(), &cfg, &heads, &sizes, &nms);
                assert_eq!(got.len(), batch, "{what}: images");
                for (image, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        !w.is_empty() || nms.score_threshold > 0.1,
                        "{what}: the reference found nothing"
                    );
                    assert_eq!(g.len(), w.len(), "{what}, image {image}: detection count");
                    for (k, (gd, wd)) in g.iter().zip(w).enumerate() {
                        let at = format!("{what}, image {image}, detection {k}: {gd:?} vs {wd:?}");
                        assert_eq!(gd.class, wd.class, "{at}");
                        assert!(
                            (gd.score - wd.score).abs() <= 1e-5 * wd.score.abs() + 1e-7,
                            "{at}"
                        );
                        for (p, q) in gd.bbox.iter().zip(&wd.bbox) {
                            assert!((p - q).abs() <= 1e-3 + 1e-5 * q.abs(), "{at}");
                        }
                    }
                }
            }
        }
    }
}
