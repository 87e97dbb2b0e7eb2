//! `yolo_detect` and `ssd_detect`.
//!
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
use pulsefocus_core::ssd::ssd_nms;
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

/// (images, priors, classes, images whose background logit drowns every
/// class: no detections there).
type SsdCase = (usize, usize, usize, Vec<usize>);

fn ssd_cases() -> Vec<SsdCase> {
    vec![
        (2, 50, 3, vec![]),
        // COCO's 81 classes: thousands of candidates above 0.01.
        (1, 40, 81, vec![]),
        (3, 30, 5, vec![1]),
    ]
}

#[allow(clippy::too_many_arguments)]
fn ssd_run<B: Backend>(
    b: &B,
    nms: &NmsConfig,
    [priors, variances, location, confidence]: [&[f32]; 4],
    classes: usize,
    images: usize,
    priors_count: usize,
) -> Vec<Vec<Detection>> {
    let bufs = [priors, variances, location, confidence].map(|host| buffer(b, host));
    let detections = b.ssd_detect(
        nms,
        &bufs[0],
        &bufs[1],
        classes,
        &bufs[2],
        &bufs[3],
        images,
        priors_count,
    );
    for (buf, (host, what)) in bufs.iter().zip([
        (priors, "priors"),
        (variances, "variances"),
        (location, "location"),
        (confidence, "confidence"),
    ]) {
        assert_unchanged(b, what, buf, host);
    }
    detections
}

/// `ssd_detect`: box decode (normalised, one exp per side), softmax (exps
/// over a sum) and multiclass NMS with the background skipped. Tolerances
/// as for YOLO: scores within 1e-5 relative (the GPU's fast exp), box
/// edges within 1e-5 of the unit square plus 1e-5 relative; the same
/// detections in the same order.
pub fn ssd_detect_matches<B: Backend>(b: &B) {
    for (images, priors_count, classes, empty) in ssd_cases() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let priors: Vec<f32> = (0..priors_count)
                .flat_map(|_| {
                    let (x, y) = (rng.uniform(0.0, 0.8), rng.uniform(0.0, 0.8));
                    let (w, h) = (rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4));
                    [x, y, x + w, y + h]
                })
                .collect();
            let variances: Vec<f32> = (0..priors_count)
                .flat_map(|_| [0.1, 0.1, 0.2, 0.2])
                .collect();
            let location = rng.values(images * priors_count * 4, -1.5, 1.5);
            let mut confidence = rng.values(images * priors_count * classes, -3.0, 3.0);
            for &image in &empty {
                for p in 0..priors_count {
                    confidence[(image * priors_count + p) * classes] = 30.0;
                }
            }
            let host = [
                input(&priors),
                input(&variances),
                input(&location),
                input(&confidence),
            ];
            let host = [&host[0][..], &host[1], &host[2], &host[3]];
            let settings = [
                ssd_nms(),
                NmsConfig {
                    score_threshold: 0.05,
                    nms_top_k: Some(5),
                    keep_top_k: Some(7),
                    nms_threshold: 0.3,
                    normalized: true,
                    background_label: Some(0),
                },
            ];
            for nms in settings {
                let what = format!(
                    "ssd_detect {images} images, {priors_count} priors, {classes} classes, {nms:?}, seed {seed}"
                );
                let got = ssd_run(b, &nms, host, classes, images, priors_count);
                let want = ssd_run(&cpu(), &nms, host, classes, images, priors_count);
                assert_eq!(got.len(), images, "{what}: images");
                for (image, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        w.is_empty(),
                        empty.contains(&image),
                        "{what}, image {image}: the reference's detections {w:?}"
                    );
                    assert!(w.iter().all(|d| d.class != 0), "{what}: background kept");
                    assert_eq!(g.len(), w.len(), "{what}, image {image}: detection count");
                    for (k, (gd, wd)) in g.iter().zip(w).enumerate() {
                        let at = format!("{what}, image {image}, detection {k}: {gd:?} vs {wd:?}");
                        assert_eq!(gd.class, wd.class, "{at}");
                        assert!(
                            (gd.score - wd.score).abs() <= 1e-5 * wd.score.abs() + 1e-7,
                            "{at}"
                        );
                        for (p, q) in gd.bbox.iter().zip(&wd.bbox) {
                            assert!((p - q).abs() <= 1e-5 + 1e-5 * q.abs(), "{at}");
                        }
                    }
                }
            }
        }
    }
}
