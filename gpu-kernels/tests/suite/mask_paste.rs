//! `mask_paste`: Mask R-CNN's detections' masks resized into their widened
//! boxes as OpenCV 4.2 does and thresholded. Correctly rounded f64 and f32
//! arithmetic in a fixed order: every backend gives the same bits.
use pulsefocus_core::backend::{MaskPasteGeom, MASK_PASTE_FIELDS};
use pulsefocus_core::rcnn::PasteRegion;
use pulsefocus_core::Backend;

use super::{assert_same_bits, assert_unchanged, buffer, cpu, garbage, input, read, Rng, SEEDS};

/// C4's 14x14 masks over a few classes, FPN's 28x28 over COCO's 81, and
/// masks of one pixel: `(name, rows, channels, side)`.
fn shapes() -> Vec<(&'static str, usize, usize, usize)> {
    vec![
        ("C4 14x14, 5 classes", 4, 5, 14),
        ("FPN 28x28, 81 classes", 3, 81, 28),
        ("one pixel", 3, 2, 1),
    ]
}

/// A detection's box in a `height x width` picture: across its edges,
/// inside, wholly outside (every fifth: no pixels), thinner than a pixel,
/// or (every fourth) of the size whose widened box is half the padded
/// mask (`INTER_AREA`).
fn bbox(rng: &mut Rng, k: usize, side: usize, [height, width]: [u32; 2]) -> [f32; 4] {
    let (h, w) = (height as f32, width as f32);
    let (x, y) = (rng.uniform(-0.2 * w, w), rng.uniform(-0.2 * h, h));
    match k % 5 {
        4 => [w + 5.0, y, w + 30.0, y + 10.0],
        3 => {
            // Widened to side / 2 around a centre 0.4 past a pixel (at
            // least 8 pixels in), it spans side / 2 + 1 pixels, half the
            // padded side when that is even.
            let half = side as f32 / 4.0 * side as f32 / (side + 2) as f32;
            let (cx, cy) = (8.4 + rng.below(10) as f32, 8.4 + rng.below(10) as f32);
            [cx - half, cy - half, cx + half, cy + half]
        }
        2 => [x, y, x + 0.4, y + rng.uniform(0.0, h)],
        _ => [x, y, x + rng.uniform(1.0, w), y + rng.uniform(1.0, h)],
    }
}

fn run<B: Backend>(
    b: &B,
    g: &MaskPasteGeom,
    [probs, detections]: [&[f32]; 2],
    pixels0: &[f32],
) -> Vec<f32> {
    let (pb, tb) = (buffer(b, probs), buffer(b, detections));
    let mut out = buffer(b, pixels0);
    b.mask_paste(g, &pb, &tb, &mut out);
    assert_unchanged(b, "probs", &pb, probs);
    assert_unchanged(b, "detections", &tb, detections);
    read(b, &out)
}

pub fn mask_paste_matches<B: Backend>(b: &B) {
    for (name, rows, channels, side) in shapes() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            // Probabilities in [0, 1], every third within 1e-6 of 0.5.
            let probs: Vec<f32> = (0..rows * channels * side * side)
                .map(|i| {
                    let p = rng.uniform(0.0, 1.0);
                    if i % 3 == 0 {
                        0.5 + (p - 0.5) * 2e-6
                    } else {
                        p
                    }
                })
                .collect();
            let (mut table, mut pixels, mut halves) = (Vec::new(), 0, 0);
            let detections = 7;
            for k in 0..detections {
                let image = [20 + rng.below(40) as u32, 20 + rng.below(60) as u32];
                let bbox = bbox(&mut rng, k, side, image);
                let region = PasteRegion::new(&bbox, side, image[0], image[1]);
                table.extend(region.entry(rng.below(rows), rng.below(channels), pixels));
                pixels += region.len();
                if 2 * region.width == side + 2 && 2 * region.height == side + 2 {
                    halves += 1;
                }
            }
            if side % 2 == 0 {
                assert!(halves > 0, "{name}: no resize to an exact half");
            }
            let g = MaskPasteGeom {
                detections,
                rows,
                channels,
                side,
                pixels,
                threshold: 0.5,
            };
            assert_eq!(table.len(), detections * MASK_PASTE_FIELDS);
            let data = [input(&probs), input(&table)];
            let data = [data[0].as_slice(), data[1].as_slice()];
            let initial = garbage(&mut rng, pixels);
            let what = format!("mask_paste {name} {g:?} seed {seed}");
            let got = run(b, &g, data, &initial);
            let want = run(&cpu(), &g, data, &initial);
            assert_same_bits(&what, &got, &want);
        }
    }
}
