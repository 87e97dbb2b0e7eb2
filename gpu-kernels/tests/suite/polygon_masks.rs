//! `polygon_masks`: Mask R-CNN's mask targets drawn from each RoI's
//! polygons as pycocotools' `rleFrPoly` draws them, OR-ed. Integer and
//! correctly rounded f64 arithmetic only: every backend gives the same bits.
use pulsefocus_core::backend::{PolygonMaskGeom, RoiPolygons};
use pulsefocus_core::Backend;

use super::{assert_same_bits, assert_unchanged, buffer, cpu, garbage, input, read, Rng, SEEDS};

/// C4's 14x14 masks, FPN's 28x28 (more columns than a block), and masks
/// of one pixel; RoI 1 of each (every fourth) has no polygon, as Paddle's
/// placeholder row.
fn shapes() -> Vec<(&'static str, usize, usize)> {
    vec![
        ("C4 14x14", 6, 14),
        ("FPN 28x28", 3, 28),
        ("one pixel", 3, 1),
    ]
}

/// A star-shaped polygon of 3..9 vertices around a point of the mask, in
/// mask pixels: every third one blown up 40 times (an object much larger
/// than its RoI, its edges far outside the mask), every fourth on the
/// quarter-pixel grid (ties of `rleFrPoly`'s rounding), every fifth with a
/// vertex repeated, every seventh around a point up and to the right of
/// the mask.
fn polygon(rng: &mut Rng, side: usize, k: usize) -> Vec<f32> {
    let s = side as f32;
    let (cx, cy) = if k % 7 == 6 {
        (rng.uniform(2.0 * s, 4.0 * s), rng.uniform(-3.0 * s, -s))
    } else {
        (rng.uniform(0.0, s), rng.uniform(0.0, s))
    };
    let radius = rng.uniform(0.5, s);
    let blow = if k % 3 == 2 { 40.0 } else { 1.0 };
    let n = 3 + rng.below(6);
    let mut points = Vec::new();
    for v in 0..n {
        let angle = (v as f32 + rng.uniform(0.0, 0.9)) * std::f32::consts::TAU / n as f32;
        let r = radius * blow * rng.uniform(0.3, 1.0);
        let mut p = [cx + r * angle.cos(), cy + r * angle.sin()];
        if k % 4 == 3 {
            p = p.map(|c| (c * 4.0).round() / 4.0);
        }
        points.extend(p);
        if k % 5 == 4 && v == 0 {
            points.extend(p);
        }
    }
    points
}

/// The masks, whole buffer.
fn run<B: Backend>(
    b: &B,
    g: &PolygonMaskGeom,
    [points, polygons, roi_polygons]: [&[f32]; 3],
    masks0: &[f32],
) -> Vec<f32> {
    let (pb, tb, rb) = (
        buffer(b, points),
        buffer(b, polygons),
        buffer(b, roi_polygons),
    );
    let mut mb = buffer(b, masks0);
    b.polygon_masks(g, &pb, &tb, &rb, &mut mb);
    assert_unchanged(b, "points", &pb, points);
    assert_unchanged(b, "polygons", &tb, polygons);
    assert_unchanged(b, "roi_polygons", &rb, roi_polygons);
    read(b, &mb)
}

pub fn polygon_masks_matches<B: Backend>(b: &B) {
    for (name, rois, side) in shapes() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let mut tables = RoiPolygons::default();
            let mut k = 0;
            for roi in 0..rois {
                // RoI 0 has two polygons or more: the second must add to
                // the first.
                let count = match roi % 4 {
                    0 => 2 + rng.below(2),
                    1 => 0,
                    _ => 1 + rng.below(3),
                };
                let polygons: Vec<Vec<f32>> = (0..count)
                    .map(|_| {
                        k += 1;
                        polygon(&mut rng, side, k)
                    })
                    .collect();
                tables.push_roi(polygons.iter().map(|p| p.as_slice()));
            }
            let g = tables.geom(side);
            let data = [
                input(&tables.points),
                input(&tables.polygons),
                input(&tables.roi_polygons),
            ];
            let data = [data[0].as_slice(), data[1].as_slice(), data[2].as_slice()];
            let initial = garbage(&mut rng, g.masks_len());
            let what = format!("polygon_masks {name} {g:?} seed {seed}");
            let got = run(b, &g, data, &initial);
            let want = run(&cpu(), &g, data, &initial);
            assert_same_bits(&what, &got, &want);
        }
    }
}
