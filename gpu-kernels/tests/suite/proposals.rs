//! `generate_proposals`: the RPN's top-k, decode, clip, size filter, NMS
//! (pixel IoU, adaptive `eta`) and post-NMS cut per level and image. The
//! scores are inputs and every decision is a comparison, so the emulator
//! (std `exp`) must give the CPU's proposals to the bit. A GPU's `exp`
//! (`ex2.approx`) moves a box edge by about 1e-5 of its size; its
//! proposals must then have the CPU's scores in the same order and boxes
//! within 1e-3 pixels plus 1e-5 relative (a box at a threshold of the size
//! filter or of NMS could honestly flip there; these seeds draw none).
use pulsefocus_core::backend::RpnProposalInput;
use pulsefocus_core::rcnn::{ProposalConfig, Proposals};
use pulsefocus_core::Backend;

use super::{assert_unchanged, buffer, cpu, input, Rng, SEEDS};

/// (name, anchors per cell, level sizes, each image's im_info).
type Case = (&'static str, usize, Vec<[usize; 2]>, Vec<[f32; 3]>);

fn cases() -> Vec<Case> {
    vec![
        (
            "C4 one level, 2 images",
            6,
            vec![[6, 7]],
            vec![[90.0, 110.0, 1.0], [70.0, 100.0, 1.5]],
        ),
        (
            "FPN 3 levels, 3 images",
            3,
            vec![[8, 10], [4, 5], [2, 3]],
            vec![[30.0, 38.0, 1.0], [32.0, 40.0, 1.5], [25.0, 40.0, 0.8]],
        ),
    ]
}

fn settings() -> Vec<(&'static str, ProposalConfig)> {
    let base = ProposalConfig {
        pre_nms_top_n: 40,
        post_nms_top_n: 12,
        nms_thresh: 0.7,
        min_size: 0.0,
        eta: 1.0,
    };
    vec![
        ("pre 40, post 12", base.clone()),
        (
            "adaptive NMS",
            ProposalConfig {
                pre_nms_top_n: 0,
                post_nms_top_n: 0,
                nms_thresh: 0.9,
                min_size: 2.0,
                eta: 0.8,
            },
        ),
        (
            "no NMS",
            ProposalConfig {
                pre_nms_top_n: 25,
                post_nms_top_n: 5,
                nms_thresh: 0.0,
                ..base.clone()
            },
        ),
        (
            "negative threshold, every anchor",
            ProposalConfig {
                pre_nms_top_n: 100_000,
                nms_thresh: -1.0,
                ..base.clone()
            },
        ),
        (
            "every box filtered",
            ProposalConfig {
                min_size: 1000.0,
                ..base
            },
        ),
    ]
}

/// One level's host inputs: scores, deltas, anchors, variances (each with
/// a NaN tail), and its size.
struct Level {
    host: [Vec<f32>; 4],
    size: [usize; 2],
}

/// Anchors of `a` shapes centred on each cell of a `h x w` map with
/// stride `4 << level` (sizes 4 to 6 strides, so that neighbours overlap
/// by about 0.5 to 0.9), scores in eighths (many ties), deltas up to 2,
/// every 13th log-size past the cap.
fn level(rng: &mut Rng, images: usize, a: usize, level: usize, [h, w]: [usize; 2]) -> Level {
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
    let variances: Vec<f32> = (0..count).flat_map(|_| [0.1, 0.1, 0.2, 0.2]).collect();
    let scores = rng.steps(images * count, 0.0, 1.0, 0.125);
    let deltas: Vec<f32> = rng
        .values(images * 4 * count, -2.0, 2.0)
        .iter()
        .enumerate()
        .map(|(i, &d)| if i % 13 == 0 { 60.0 } else { d })
        .collect();
    Level {
        host: [
            input(&scores),
            input(&deltas),
            input(&anchors),
            input(&variances),
        ],
        size: [h, w],
    }
}

fn run<B: Backend>(
    b: &B,
    cfg: &ProposalConfig,
    levels: &[Level],
    a: usize,
    im_info: &[[f32; 3]],
) -> Vec<Vec<Proposals>> {
    let bufs: Vec<Vec<B::Buffer>> = levels
        .iter()
        .map(|l| l.host.iter().map(|h| buffer(b, h)).collect())
        .collect();
    let inputs: Vec<RpnProposalInput<'_, B::Buffer>> = bufs
        .iter()
        .zip(levels)
        .map(|(buf, l)| RpnProposalInput {
            scores: &buf[0],
            deltas: &buf[1],
            anchors: &buf[2],
            variances: &buf[3],
            height: l.size[0],
            width: l.size[1],
        })
        .collect();
    let proposals = b.generate_proposals(cfg, &inputs, a, im_info);
    if let Err(err) = b.check() {
        panic!("{}: {err}", b.name());
    }
    for (buf, l) in bufs.iter().zip(levels) {
        for (what, (buf, host)) in ["scores", "deltas", "anchors", "variances"]
            .into_iter()
            .zip(buf.iter().zip(&l.host))
        {
            assert_unchanged(b, what, buf, host);
        }
    }
    proposals
}

pub fn generate_proposals_matches<B: Backend>(b: &B) {
    let exact = !b.name().starts_with("cuda");
    for (name, a, sizes, im_info) in cases() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let levels: Vec<Level> = sizes
                .iter()
                .enumerate()
                .map(|(l, &size)| level(&mut rng, im_info.len(), a, l, size))
                .collect();
            for (setting, cfg) in settings() {
                let what = format!("generate_proposals {name}, {setting} seed {seed}");
                let got = run(b, &cfg, &levels, a, &im_info);
                let want = run(&cpu(), &cfg, &levels, a, &im_info);
                let found: usize = want.iter().flatten().map(|p| p.boxes.len()).sum();
                assert_eq!(
                    found == 0,
                    cfg.min_size >= 1000.0,
                    "{what}: the reference found {found}"
                );
                assert_eq!(got.len(), sizes.len(), "{what}: levels");
                for (l, (got, want)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(got.len(), im_info.len(), "{what}: images");
                    for (n, (g, w)) in got.iter().zip(want).enumerate() {
                        let at = format!("{what}, level {l}, image {n}");
                        assert_eq!(g.boxes.len(), w.boxes.len(), "{at}: proposal count");
                        let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&g.scores), bits(&w.scores), "{at}: scores");
                        for (k, (gb, wb)) in g.boxes.iter().zip(&w.boxes).enumerate() {
                            for (p, q) in gb.iter().zip(wb) {
                                let close = if exact {
                                    p.to_bits() == q.to_bits()
                                } else {
                                    (p - q).abs() <= 1e-3 + 1e-5 * q.abs()
                                };
                                assert!(close, "{at}, proposal {k}: {gb:?} vs {wb:?}");
                            }
                        }
                    }
                }
            }
        }
    }
}
