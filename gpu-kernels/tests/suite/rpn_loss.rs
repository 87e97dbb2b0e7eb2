//! `rpn_loss`: the RPN's targets drawn from the ground truth (core's
//! `rpn_target_assign` per image, random draw or the first ones) and its
//! loss over a batch and every level, gradients written in place (zero off
//! the sampled anchors). The matching and the draw are comparisons and
//! integer hashes, so every backend samples the CPU's anchors: the
//! gradients' zeros are the CPU's. The emulator gives the CPU's box
//! gradients to the bit; on a GPU the box targets' `ln` is `lg2.approx`,
//! and the logit gradients go through `exp`; the loss sums run in another
//! order on a device.
use pulsefocus_core::backend::{RpnTargetsGeom, RpnTruth};
use pulsefocus_core::box_coder::BoxXyxy;
use pulsefocus_core::models::rpn_head::{AnchorGeneratorSpec, RpnHeadSpec, RpnLevels};
use pulsefocus_core::rcnn::anchors::rpn_anchors;
use pulsefocus_core::rcnn::{RpnLevelGrad, RpnLevelOutput, RpnLoss, RpnTargetConfig};
use pulsefocus_core::Backend;

use super::{
    assert_close, assert_same_bits, assert_tail_kept, assert_unchanged, buffer, cpu, garbage,
    input, read, Rng, Tol, SEEDS,
};

struct Case {
    name: &'static str,
    spec: RpnHeadSpec,
    sizes: Vec<[usize; 2]>,
    /// The first level's stride: the image is `stride * sizes[0]` pixels.
    stride: f32,
    /// Each image's boxes (0: an image without boxes).
    boxes: &'static [usize],
}

fn cases() -> Vec<Case> {
    let head = |levels| RpnHeadSpec {
        channels: 8,
        anchors: AnchorGeneratorSpec::faster_rcnn(),
        levels,
    };
    vec![
        Case {
            name: "C4 one level, 15 anchors, 2 images",
            spec: head(None),
            sizes: vec![[5, 7]],
            stride: 16.0,
            boxes: &[4, 0],
        },
        Case {
            name: "FPN three levels, 3 anchors, 3 images",
            spec: head(Some(RpnLevels {
                anchor_start_size: 16.0,
                min_level: 2,
                max_level: 4,
            })),
            sizes: vec![[16, 12], [8, 6], [4, 3]],
            stride: 4.0,
            boxes: &[3, 0, 6],
        },
    ]
}

/// `(loss, [cls, bbox] gradient buffers per level)`, whole buffers.
fn run<B: Backend>(
    b: &B,
    g: &RpnTargetsGeom<'_>,
    case: &Case,
    anchors: &[Vec<f32>],
    outputs: &[[Vec<f32>; 2]],
    initial: &[[Vec<f32>; 2]],
) -> (RpnLoss, Vec<[Vec<f32>; 2]>) {
    let anchor_bufs: Vec<B::Buffer> = anchors.iter().map(|a| buffer(b, a)).collect();
    let bufs: Vec<[B::Buffer; 2]> = outputs
        .iter()
        .map(|[c, d]| [buffer(b, c), buffer(b, d)])
        .collect();
    let mut grads: Vec<[B::Buffer; 2]> = initial
        .iter()
        .map(|[c, d]| [buffer(b, c), buffer(b, d)])
        .collect();
    let levels: Vec<RpnLevelOutput<B::Buffer>> = bufs
        .iter()
        .zip(&case.sizes)
        .map(|([c, d], &[height, width])| RpnLevelOutput {
            height,
            width,
            cls_logits: c,
            bbox_pred: d,
        })
        .collect();
    let mut grad_refs: Vec<RpnLevelGrad<B::Buffer>> = grads
        .iter_mut()
        .map(|[c, d]| RpnLevelGrad {
            cls_logits: c,
            bbox_pred: d,
        })
        .collect();
    let anchor_refs: Vec<&B::Buffer> = anchor_bufs.iter().collect();
    let per_cell = case.spec.anchors_per_cell();
    let loss = b.rpn_loss(g, &anchor_refs, &levels, per_cell, &mut grad_refs);
    for ([c, d], [hc, hd]) in bufs.iter().zip(outputs) {
        assert_unchanged(b, "cls_logits", c, hc);
        assert_unchanged(b, "bbox_pred", d, hd);
    }
    for (buf, host) in anchor_bufs.iter().zip(anchors) {
        assert_unchanged(b, "anchors", buf, host);
    }
    let grads = grads
        .iter()
        .map(|[c, d]| [read(b, c), read(b, d)])
        .collect();
    (loss, grads)
}

pub fn rpn_loss_matches<B: Backend>(b: &B) {
    let exact = !b.name().starts_with("cuda");
    for case in cases() {
        let per_cell = case.spec.anchors_per_cell();
        let all = rpn_anchors(&case.spec, &case.sizes);
        let mut anchors = Vec::new();
        let mut first = 0;
        for &[h, w] in &case.sizes {
            let count = h * w * per_cell;
            anchors.push(input(all.boxes[first..first + count].as_flattened()));
            first += count;
        }
        let extent = [
            case.stride * case.sizes[0][0] as f32,
            case.stride * case.sizes[0][1] as f32,
        ];
        let images = case.boxes.len();
        let lens: Vec<usize> = case
            .sizes
            .iter()
            .map(|[h, w]| images * per_cell * h * w)
            .collect();
        for use_random in [true, false] {
            let draw = if use_random {
                "random draw"
            } else {
                "first ones"
            };
            for seed in SEEDS {
                let mut rng = Rng::new(seed);
                // Boxes of 16 to 60 pixels inside the image (some anchors
                // straddle its border), the image scaled by 1.25.
                let scale = 1.25;
                let truths: Vec<Vec<BoxXyxy>> = case
                    .boxes
                    .iter()
                    .map(|&count| {
                        (0..count)
                            .map(|_| {
                                let (w, h) = (rng.uniform(16.0, 60.0), rng.uniform(16.0, 60.0));
                                let x = rng.uniform(0.0, extent[1] - w);
                                let y = rng.uniform(0.0, extent[0] - h);
                                [x, y, x + w - 1.0, y + h - 1.0].map(|v| v / scale)
                            })
                            .collect()
                    })
                    .collect();
                let truth: Vec<RpnTruth<'_>> = truths
                    .iter()
                    .map(|boxes| RpnTruth {
                        boxes,
                        im_info: [extent[0], extent[1], scale],
                    })
                    .collect();
                let config = RpnTargetConfig {
                    batch_size_per_im: 16,
                    use_random,
                    ..RpnTargetConfig::default()
                };
                let g = RpnTargetsGeom {
                    config: &config,
                    images: &truth,
                    seed: rng.below(1 << 30) as u64 * 0x9e37_79b9,
                };
                // Logits on both sides of 0 and far out (the stable
                // cross-entropy); deltas on both smooth-L1 branches.
                let outputs: Vec<[Vec<f32>; 2]> = lens
                    .iter()
                    .map(|&n| {
                        [
                            input(&rng.values(n, -9.0, 9.0)),
                            input(&rng.values(4 * n, -1.5, 1.5)),
                        ]
                    })
                    .collect();
                let initial: Vec<[Vec<f32>; 2]> = lens
                    .iter()
                    .map(|&n| [garbage(&mut rng, n), garbage(&mut rng, 4 * n)])
                    .collect();
                let what = format!("rpn_loss {}, {draw} seed {seed}", case.name);
                let (got, got_grads) = run(b, &g, &case, &anchors, &outputs, &initial);
                let (want, want_grads) = run(&cpu(), &g, &case, &anchors, &outputs, &initial);
                // The case has foreground anchors and leaves anchors out.
                let regressed = want_grads
                    .iter()
                    .zip(&lens)
                    .any(|(w, &n)| w[1][..4 * n].iter().any(|&g| g != 0.0));
                let left_out = want_grads
                    .iter()
                    .zip(&lens)
                    .any(|(w, &n)| w[0][..n].contains(&0.0));
                assert!(regressed && left_out, "{what}: a case without foreground");
                for (part, g, w) in [
                    ("loss_rpn_cls", got.loss_rpn_cls, want.loss_rpn_cls),
                    ("loss_rpn_bbox", got.loss_rpn_bbox, want.loss_rpn_bbox),
                ] {
                    assert!(
                        (g - w).abs() <= 1e-5 * w.abs() + 1e-7,
                        "{what}: {part} {g}, reference {w}"
                    );
                }
                for (l, ((got, want), initial)) in
                    got_grads.iter().zip(&want_grads).zip(&initial).enumerate()
                {
                    let n = lens[l];
                    let what = format!("{what}: level {l}");
                    // The same anchors sampled: the same zeros.
                    for (k, part) in ["cls", "bbox"].iter().enumerate() {
                        let len = if k == 0 { n } else { 4 * n };
                        let zeros = |v: &[f32]| v[..len].iter().map(|&g| g == 0.0).collect();
                        let (got_zeros, want_zeros): (Vec<bool>, Vec<bool>) =
                            (zeros(&got[k]), zeros(&want[k]));
                        assert!(
                            got_zeros == want_zeros,
                            "{what}: {part} gradient: other anchors sampled"
                        );
                    }
                    // sigmoid(x) - z to a few ulps of 1, times 1 / sampled.
                    let tol = Tol {
                        abs: 1e-6,
                        rel: 1e-5,
                    };
                    assert_close(&format!("{what} cls gradient"), &got[0], &want[0], n, tol);
                    assert_tail_kept(&format!("{what} cls gradient"), &got[0], n, &initial[0]);
                    let bbox = format!("{what} bbox gradient");
                    if exact {
                        assert_same_bits(&bbox, &got[1][..4 * n], &want[1][..4 * n]);
                    } else {
                        assert_close(&bbox, &got[1], &want[1], 4 * n, tol);
                    }
                    assert_tail_kept(&bbox, &got[1], 4 * n, &initial[1]);
                }
            }
        }
    }
}
