//! `retinanet_targets`: RetinaNet's target assignment of a batch over the
//! anchors of every level, each level's labels, box targets and weights
//! and each image's foreground count. The emulator runs the CPU's
//! expressions and decides as it does, so everything is the CPU's bits; on
//! a GPU the box targets' `ln` is `lg2.approx` (a few 1e-7 absolute, the
//! targets being below 10), the rest still exact.
use pulsefocus_core::backend::{RetinaTargetLevel, RetinaTargetsGeom, RetinaTruth};
use pulsefocus_core::box_coder::BoxXyxy;
use pulsefocus_core::models::retina_head::RetinaHeadSpec;
use pulsefocus_core::rcnn::anchors::retina_anchors;
use pulsefocus_core::retinanet::RetinaTargetConfig;
use pulsefocus_core::Backend;

use super::{
    assert_same_bits, assert_tail_kept, assert_unchanged, assert_within, buffer, cpu, garbage,
    input, read, Rng, SEEDS,
};

/// A case: its name, the levels' sizes (P3 first), and each image's boxes
/// and scale.
struct Case {
    name: &'static str,
    sizes: &'static [[usize; 2]],
    boxes: &'static [usize],
    scales: &'static [f32],
}

/// RetinaNet's P3..P7 on a 128 x 192 input with two images (one with no
/// box); one level with tiny boxes only, whose best anchors fall below
/// the negative threshold (Paddle's "fake" foreground rows).
fn cases() -> [Case; 2] {
    [
        Case {
            name: "P3-P7 on 128x192, 3 images",
            sizes: &[[16, 24], [8, 12], [4, 6], [2, 3], [1, 2]],
            boxes: &[5, 0, 3],
            scales: &[1.0, 1.5, 0.8],
        },
        Case {
            name: "one level, tiny boxes",
            sizes: &[[6, 5]],
            boxes: &[4],
            scales: &[1.0],
        },
    ]
}

/// One image's boxes (original pixels, inside `extent` once scaled) and
/// classes from 1; the second box repeats the first with another class
/// (every overlap with it ties), the boxes `sides` pixels wide and high.
fn truth(
    rng: &mut Rng,
    boxes: usize,
    extent: [f32; 2],
    sides: [f32; 2],
) -> (Vec<BoxXyxy>, Vec<i32>) {
    let mut truth: (Vec<BoxXyxy>, Vec<i32>) = (0..boxes)
        .map(|_| {
            let (w, h) = (
                rng.uniform(sides[0], sides[1]),
                rng.uniform(sides[0], sides[1]),
            );
            let (x, y) = (
                rng.uniform(0.0, extent[1] - w),
                rng.uniform(0.0, extent[0] - h),
            );
            ([x, y, x + w - 1.0, y + h - 1.0], 1 + rng.below(4) as i32)
        })
        .unzip();
    if boxes >= 2 {
        truth.0[1] = truth.0[0];
        truth.1[1] = truth.1[0] % 4 + 1;
    }
    truth
}

/// Each image's foreground count and every level's whole labels, box
/// targets and box weights buffers.
fn run<B: Backend>(
    b: &B,
    g: &RetinaTargetsGeom<'_>,
    anchors: &[(Vec<f32>, usize)],
    initial: &[[Vec<f32>; 3]],
) -> (Vec<f32>, Vec<[Vec<f32>; 3]>) {
    let anchor_bufs: Vec<B::Buffer> = anchors.iter().map(|(a, _)| buffer(b, a)).collect();
    let mut outputs: Vec<[B::Buffer; 3]> = initial
        .iter()
        .map(|bufs| [0, 1, 2].map(|k| buffer(b, &bufs[k])))
        .collect();
    let mut levels: Vec<RetinaTargetLevel<'_, B::Buffer>> = anchor_bufs
        .iter()
        .zip(anchors)
        .zip(&mut outputs)
        .map(
            |((buf, &(_, count)), [labels, box_targets, box_weights])| RetinaTargetLevel {
                anchors: buf,
                count,
                labels,
                box_targets,
                box_weights,
            },
        )
        .collect();
    let fg_num = b.retinanet_targets(g, &mut levels);
    for (buf, (host, _)) in anchor_bufs.iter().zip(anchors) {
        assert_unchanged(b, "anchors", buf, host);
    }
    let outputs = outputs
        .iter()
        .map(|bufs| [0, 1, 2].map(|k| read(b, &bufs[k])))
        .collect();
    (fg_num, outputs)
}

pub fn retinanet_targets_matches<B: Backend>(b: &B) {
    let exact = !b.name().starts_with("cuda");
    let config = RetinaTargetConfig {
        positive_overlap: 0.5,
        negative_overlap: 0.4,
    };
    let head = RetinaHeadSpec::r50_fpn(5);
    for case in cases() {
        let all = retina_anchors(&head, case.sizes);
        let mut anchors = Vec::new();
        let mut first = 0;
        for &[h, w] in case.sizes {
            let count = h * w * head.anchors_per_cell();
            anchors.push((input(all.boxes[first..first + count].as_flattened()), count));
            first += count;
        }
        let extent = [8.0 * case.sizes[0][0] as f32, 8.0 * case.sizes[0][1] as f32];
        // Boxes about the size of P3's anchors (32 to 50 pixels), or far
        // smaller than any.
        let tiny = case.sizes.len() == 1;
        let sides = if tiny { [2.0, 6.0] } else { [24.0, 60.0] };
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let truths: Vec<(Vec<BoxXyxy>, Vec<i32>)> = case
                .boxes
                .iter()
                .zip(case.scales)
                .map(|(&boxes, &scale)| truth(&mut rng, boxes, extent.map(|e| e / scale), sides))
                .collect();
            let images: Vec<RetinaTruth<'_>> = truths
                .iter()
                .zip(case.scales)
                .map(|((boxes, classes), &scale)| RetinaTruth {
                    boxes,
                    classes,
                    im_info: [extent[0], extent[1], scale],
                })
                .collect();
            let g = RetinaTargetsGeom {
                config: &config,
                images: &images,
            };
            let rows: Vec<usize> = anchors.iter().map(|(_, c)| images.len() * c).collect();
            let initial: Vec<[Vec<f32>; 3]> = rows
                .iter()
                .map(|&r| [r, 4 * r, r].map(|len| garbage(&mut rng, len)))
                .collect();
            let what = format!("retinanet_targets {} seed {seed}", case.name);
            let (got_fg, got) = run(b, &g, &anchors, &initial);
            let (want_fg, want) = run(&cpu(), &g, &anchors, &initial);
            assert_same_bits(&format!("{what}: fg_num"), &got_fg, &want_fg);
            // The case has what it claims: foreground regressed, or only
            // fake rows (a foreground count above the weight-1 rows plus one
            // per image).
            let real: f32 = want
                .iter()
                .zip(&rows)
                .map(|(w, &r)| w[2][..r].iter().sum::<f32>())
                .sum();
            let counted = want_fg.iter().sum::<f32>() - images.len() as f32;
            if tiny {
                assert!(
                    real == 0.0 && counted > 0.0,
                    "{what}: {real} real rows, {counted} counted"
                );
            } else {
                assert!(real > 0.0, "{what}: no foreground");
            }
            for (l, ((got, want), (&r, initial))) in got
                .iter()
                .zip(&want)
                .zip(rows.iter().zip(&initial))
                .enumerate()
            {
                for (k, part) in ["labels", "box_targets", "box_weights"].iter().enumerate() {
                    let what = format!("{what}: level {l} {part}");
                    let len = if k == 1 { 4 * r } else { r };
                    let bound: Vec<f32> = want[k][..len]
                        .iter()
                        .map(|_| if exact || k != 1 { 0.0 } else { 1e-6 })
                        .collect();
                    assert_within(&what, &got[k], &want[k], &bound);
                    assert_tail_kept(&what, &got[k], len, &initial[k]);
                }
            }
        }
    }
}
