//! `roi_align_forward` / `roi_align_backward`: Paddle 1.8's RoIAlign. The
//! GPU kernels repeat the CPU's operation order (backward gathers each
//! pixel's shares in the order the CPU scatters them), so every backend
//! gives the CPU's bits. The boxes cover what Faster R-CNN feeds it and the
//! edges of Paddle's rules: inside the map, partly and wholly outside,
//! smaller than a pixel, larger than the map, the adaptive grid and a fixed
//! one, a stride-16 map, two images with their RoIs interleaved, and a RoI
//! with a bad image index (NaN outputs, no gradient).
use pulsefocus_core::backend::RoiAlignGeom;
use pulsefocus_core::Backend;

use super::{
    assert_same_bits, assert_tail_kept, assert_unchanged, buffer, cpu, garbage, input, read, Rng,
    SEEDS, TAIL,
};

/// A geometry (its `rois` set from the boxes), fixed boxes in input pixels
/// with their image indices, and how many random boxes each seed adds.
struct Case {
    g: RoiAlignGeom,
    boxes: Vec<([f32; 4], f32)>,
    random: usize,
}

fn geom(
    (batch, channels, height, width): (usize, usize, usize, usize),
    (pooled_h, pooled_w): (usize, usize),
    spatial_scale: f32,
    sampling_ratio: i32,
) -> RoiAlignGeom {
    RoiAlignGeom {
        batch,
        channels,
        height,
        width,
        rois: 0,
        pooled_h,
        pooled_w,
        spatial_scale,
        sampling_ratio,
    }
}

fn cases() -> Vec<Case> {
    vec![
        // Faster R-CNN C4: stride 16, adaptive grid (here a 112 x 144 image).
        Case {
            g: geom((1, 3, 7, 9), (3, 2), 1.0 / 16.0, 0),
            boxes: vec![
                ([10.0, 20.0, 60.0, 90.0], 0.0),
                ([-40.0, -30.0, 50.0, 40.0], 0.0),
                ([100.0, 70.0, 200.0, 160.0], 0.0),
                ([33.0, 41.0, 35.5, 42.0], 0.0),
                ([-100.0, -90.0, 300.0, 250.0], 0.0),
                ([150.0, 120.0, 180.0, 140.0], 0.0),
            ],
            random: 3,
        },
        // Two images, RoIs interleaved, 2x2 samples per bin, one bad index.
        Case {
            g: geom((2, 2, 6, 5), (2, 2), 1.0 / 16.0, 2),
            boxes: vec![
                ([0.0, 0.0, 79.0, 95.0], 1.0),
                ([8.0, 8.0, 40.0, 30.0], 0.0),
                ([-20.0, 50.0, 30.0, 120.0], 1.0),
                ([60.0, -10.0, 90.0, 20.0], 2.0),
                ([41.0, 42.0, 41.5, 42.5], 0.0),
            ],
            random: 4,
        },
        // 7x7 bins over a finer map: many samples per bin for the big box.
        Case {
            g: geom((2, 2, 12, 10), (7, 7), 0.5, 0),
            boxes: vec![
                ([-10.0, -10.0, 60.0, 50.0], 1.0),
                ([3.0, 5.0, 9.0, 8.0], 0.0),
                ([17.5, 21.25, 19.0, 23.5], 1.0),
            ],
            random: 3,
        },
    ]
}

/// The case's geometry, boxes `[R * 4]` and image indices `[R]` for a seed:
/// the fixed boxes, then random ones anywhere from half a map before it to
/// half a map past it, 0.1 to 1.2 maps in size, on random images.
fn instance(case: &Case, rng: &mut Rng) -> (RoiAlignGeom, Vec<f32>, Vec<f32>) {
    let g = case.g;
    let (h, w) = (
        g.height as f32 / g.spatial_scale,
        g.width as f32 / g.spatial_scale,
    );
    let mut boxes = Vec::new();
    let mut images = Vec::new();
    for &(b, n) in &case.boxes {
        boxes.extend(b);
        images.push(n);
    }
    for _ in 0..case.random {
        let (x1, y1) = (rng.uniform(-0.5, 1.5) * w, rng.uniform(-0.5, 1.5) * h);
        let (bw, bh) = (rng.uniform(0.1, 1.2) * w, rng.uniform(0.1, 1.2) * h);
        boxes.extend([x1, y1, x1 + bw, y1 + bh]);
        images.push(rng.below(g.batch) as f32);
    }
    let g = RoiAlignGeom {
        rois: images.len(),
        ..g
    };
    (g, boxes, images)
}

fn forward_run<B: Backend>(
    b: &B,
    g: &RoiAlignGeom,
    (x, rois, images): (&[f32], &[f32], &[f32]),
    y0: &[f32],
) -> Vec<f32> {
    let (xb, rb, nb) = (buffer(b, x), buffer(b, rois), buffer(b, images));
    let mut y = buffer(b, y0);
    b.roi_align_forward(g, &xb, &rb, &nb, &mut y);
    assert_unchanged(b, "x", &xb, x);
    assert_unchanged(b, "rois", &rb, rois);
    assert_unchanged(b, "roi_batch", &nb, images);
    read(b, &y)
}

fn backward_run<B: Backend>(
    b: &B,
    g: &RoiAlignGeom,
    (dy, rois, images): (&[f32], &[f32], &[f32]),
    dx0: &[f32],
) -> Vec<f32> {
    let (dyb, rb, nb) = (buffer(b, dy), buffer(b, rois), buffer(b, images));
    let mut dx = buffer(b, dx0);
    b.roi_align_backward(g, &dyb, &rb, &nb, &mut dx);
    assert_unchanged(b, "dy", &dyb, dy);
    assert_unchanged(b, "rois", &rb, rois);
    assert_unchanged(b, "roi_batch", &nb, images);
    read(b, &dx)
}

pub fn roi_align_forward_matches<B: Backend>(b: &B) {
    for case in cases() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let (g, rois, images) = instance(&case, &mut rng);
            let x = input(&rng.values(g.input_len(), -1.0, 1.0));
            let y0 = garbage(&mut rng, g.output_len());
            let what = format!("roi_align_forward {g:?} seed {seed}");
            let inputs = (&x[..], &input(&rois)[..], &input(&images)[..]);
            let got = forward_run(b, &g, inputs, &y0);
            let want = forward_run(&cpu(), &g, inputs, &y0);
            assert_same_bits(&what, &got, &want);
            assert_tail_kept(&what, &got, g.output_len(), &y0);
            // Only the RoIs with a bad index are NaN, and something pooled.
            let per_roi = g.output_len() / g.rois;
            for (r, &n) in images.iter().enumerate() {
                let out = &want[r * per_roi..][..per_roi];
                let bad = n as usize >= g.batch;
                assert!(
                    out.iter().all(|v| v.is_nan() == bad),
                    "{what}: RoI {r} (image {n}) NaN only for a bad index"
                );
            }
            assert!(
                want.iter().any(|&v| v != 0.0 && !v.is_nan()),
                "{what}: all zero"
            );
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> (f64, f64) {
    a.iter()
        .zip(b)
        .filter(|(a, b)| !a.is_nan() && !b.is_nan())
        .map(|(&a, &b)| (a as f64 * b as f64, (a as f64 * b as f64).abs()))
        .fold((0.0, 0.0), |(s, m), (t, a)| (s + t, m + a))
}

/// Backward equals the CPU's, overwrites `dx`, and is the adjoint of
/// forward on this backend: `<forward(x), dy> = <x, backward(dy)>` (the
/// bad RoI's NaN outputs left out: it has no gradient either).
pub fn roi_align_backward_matches<B: Backend>(b: &B) {
    for case in cases() {
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let (g, rois, images) = instance(&case, &mut rng);
            let dy = input(&rng.values(g.output_len(), -1.0, 1.0));
            let dx0 = garbage(&mut rng, g.input_len());
            let what = format!("roi_align_backward {g:?} seed {seed}");
            let inputs = (&dy[..], &input(&rois)[..], &input(&images)[..]);
            let got = backward_run(b, &g, inputs, &dx0);
            let want = backward_run(&cpu(), &g, inputs, &dx0);
            assert_same_bits(&what, &got, &want);
            assert_tail_kept(&what, &got, g.input_len(), &dx0);

            let x = input(&rng.values(g.input_len(), -1.0, 1.0));
            let y0 = vec![0.0; g.output_len() + TAIL];
            let forward = forward_run(b, &g, (&x, &input(&rois), &input(&images)), &y0);
            let (lhs, lhs_size) = dot(&forward[..g.output_len()], &dy[..g.output_len()]);
            let (rhs, _) = dot(&x[..g.input_len()], &got[..g.input_len()]);
            // Both sides are f32 sums of the same products: within a few
            // f32 roundings of their magnitude.
            assert!(
                (lhs - rhs).abs() <= 1e-5 * (1.0 + lhs_size),
                "{what}: <forward x, dy> = {lhs}, <x, backward dy> = {rhs}"
            );
            assert!(
                got[..g.input_len()].iter().any(|&v| v != 0.0),
                "{what}: all zero"
            );
        }
    }
}
