//! RoIAlign as Paddle 1.8's CPU `roi_align` kernel computes it (see
//! `RoiAlignGeom`), forward and backward side by side, with Paddle's
//! operation order so that the GPU kernels, which repeat it, give the same
//! bits.
//!
//! A bilinear sample's y and x are independent (the weight of a corner is
//! the product of its row and column weights, and a sample is dropped when
//! either coordinate is off the map), so each RoI precomputes its rows'
//! and columns' taps once, `pooled * grid` of each, instead of Paddle's
//! `pooled_h * pooled_w * grid_h * grid_w` table: a huge box with an
//! adaptive grid stays cheap in memory.

use rayon::prelude::*;

use crate::backend::RoiAlignGeom;

fn check(g: &RoiAlignGeom, x: usize, rois: usize, roi_batch: usize, y: usize) {
    if let Err(msg) = g.validate() {
        panic!("{msg}");
    }
    let lens = [
        ("feature map", x, g.input_len()),
        ("rois", rois, g.rois_len()),
        ("roi_batch", roi_batch, g.rois),
        ("pooled", y, g.output_len()),
    ];
    for (what, got, want) in lens {
        assert!(
            got >= want,
            "roi_align: {what} buffer has {got} elements, needs {want} for {g:?}"
        );
    }
}

/// The RoI's image when `value` is an integer in `0..batch` (`-0.0` is 0).
pub fn image_index(value: f32, batch: usize) -> Option<usize> {
    // `as` saturates (NaN to 0), so only an exact integer converts back.
    let n = value as usize;
    (n as f32 == value && n < batch).then_some(n)
}

/// One RoI on the feature map, as Paddle's kernel derives it from the box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiBins {
    pub y1: f32,
    pub x1: f32,
    pub bin_h: f32,
    pub bin_w: f32,
    /// Samples per bin along y and x.
    pub grid_h: usize,
    pub grid_w: usize,
    /// `grid_h * grid_w`, what each bin's sum is divided by.
    pub count: f32,
}

impl RoiBins {
    /// `roi` is `[x1, y1, x2, y2]` in input pixels.
    pub fn new(g: &RoiAlignGeom, roi: &[f32]) -> RoiBins {
        let scale = g.spatial_scale;
        let (x1, y1, x2, y2) = (
            roi[0] * scale,
            roi[1] * scale,
            roi[2] * scale,
            roi[3] * scale,
        );
        // Paddle's std::max(size, 1): a NaN size stays NaN.
        let at_least_one = |size: f32| if size < 1.0 { 1.0 } else { size };
        let (roi_w, roi_h) = (at_least_one(x2 - x1), at_least_one(y2 - y1));
        let bin_h = roi_h / g.pooled_h as f32;
        let bin_w = roi_w / g.pooled_w as f32;
        let grid = |bin: f32| {
            if g.sampling_ratio > 0 {
                g.sampling_ratio as usize
            } else {
                bin.ceil() as usize
            }
        };
        let (grid_h, grid_w) = (grid(bin_h), grid(bin_w));
        RoiBins {
            y1,
            x1,
            bin_h,
            bin_w,
            grid_h,
            grid_w,
            count: (grid_h * grid_w) as f32,
        }
    }

    /// Sample `i` (of `grid`) of bin `p` along one axis starting at `start`.
    fn sample(start: f32, bin: f32, grid: usize, p: usize, i: usize) -> f32 {
        start + p as f32 * bin + (i as f32 + 0.5) * bin / grid as f32
    }

    /// The taps of every sample row, bin-major (`ph * grid_h + iy`).
    pub fn row_taps(&self, height: usize, pooled_h: usize) -> Vec<Option<Tap>> {
        (0..pooled_h * self.grid_h)
            .map(|k| {
                let y = Self::sample(
                    self.y1,
                    self.bin_h,
                    self.grid_h,
                    k / self.grid_h,
                    k % self.grid_h,
                );
                Tap::at(height, y)
            })
            .collect()
    }

    /// The taps of every sample column, bin-major (`pw * grid_w + ix`).
    pub fn column_taps(&self, width: usize, pooled_w: usize) -> Vec<Option<Tap>> {
        (0..pooled_w * self.grid_w)
            .map(|k| {
                let x = Self::sample(
                    self.x1,
                    self.bin_w,
                    self.grid_w,
                    k / self.grid_w,
                    k % self.grid_w,
                );
                Tap::at(width, x)
            })
            .collect()
    }
}

/// A sample coordinate along one axis of the map: the two pixels it lies
/// between and their linear weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tap {
    pub low: usize,
    pub high: usize,
    /// `1 - fraction`, the weight of `low`.
    pub low_weight: f32,
    /// The fraction past `low`, the weight of `high`.
    pub high_weight: f32,
}

impl Tap {
    /// Paddle's rules along an axis `size` pixels long: None more than one
    /// pixel outside; within a pixel below 0 it reads pixel 0, from the
    /// last pixel on it reads the last pixel alone.
    pub fn at(size: usize, v: f32) -> Option<Tap> {
        // Paddle's `v < -1 || v > size`, written so that NaN (a NaN box;
        // undefined in Paddle) is off the map too.
        if !(v >= -1.0 && v <= size as f32) {
            return None;
        }
        let v = if v <= 0.0 { 0.0 } else { v };
        let low = v as usize;
        let (low, high, v) = if low >= size - 1 {
            (size - 1, size - 1, (size - 1) as f32)
        } else {
            (low, low + 1, v)
        };
        let fraction = v - low as f32;
        Some(Tap {
            low,
            high,
            low_weight: 1.0 - fraction,
            high_weight: fraction,
        })
    }
}

/// The four pixels (offsets in a `width`-wide plane) a sample at row tap
/// `ty` and column tap `tx` reads, with their weights, in Paddle's order.
pub fn corners(ty: &Tap, tx: &Tap, width: usize) -> [(usize, f32); 4] {
    [
        (ty.low * width + tx.low, ty.low_weight * tx.low_weight),
        (ty.low * width + tx.high, ty.low_weight * tx.high_weight),
        (ty.high * width + tx.low, ty.high_weight * tx.low_weight),
        (ty.high * width + tx.high, ty.high_weight * tx.high_weight),
    ]
}

/// Calls `f(bin, pixel, weight)` for every corner of every sample of the
/// RoI, in Paddle's order (bin row-major, then sample row, sample column,
/// corner); samples off the map are skipped.
fn for_each_corner(
    g: &RoiAlignGeom,
    bins: &RoiBins,
    rows: &[Option<Tap>],
    columns: &[Option<Tap>],
    mut f: impl FnMut(usize, usize, f32),
) {
    for ph in 0..g.pooled_h {
        for pw in 0..g.pooled_w {
            let bin = ph * g.pooled_w + pw;
            for ty in rows[ph * bins.grid_h..][..bins.grid_h].iter().flatten() {
                for tx in columns[pw * bins.grid_w..][..bins.grid_w].iter().flatten() {
                    for (pixel, weight) in corners(ty, tx, g.width) {
                        f(bin, pixel, weight);
                    }
                }
            }
        }
    }
}

/// `y[r, c, ph, pw]`: the mean over bin (ph, pw)'s samples of the bilinear
/// interpolation of `x[roi_batch[r], c]`; NaN for a RoI whose image index
/// is bad.
pub fn forward(g: &RoiAlignGeom, x: &[f32], rois: &[f32], roi_batch: &[f32], y: &mut [f32]) {
    check(g, x.len(), rois.len(), roi_batch.len(), y.len());
    let plane = g.height * g.width;
    let bins_per_plane = g.pooled_h * g.pooled_w;
    let roi_len = g.channels * bins_per_plane;
    for r in 0..g.rois {
        let out = &mut y[r * roi_len..][..roi_len];
        let Some(image) = image_index(roi_batch[r], g.batch) else {
            out.fill(f32::NAN);
            continue;
        };
        let bins = RoiBins::new(g, &rois[4 * r..][..4]);
        let rows = bins.row_taps(g.height, g.pooled_h);
        let columns = bins.column_taps(g.width, g.pooled_w);
        let image_x = &x[image * g.channels * plane..][..g.channels * plane];
        out.par_chunks_mut(bins_per_plane)
            .zip(image_x.par_chunks(plane))
            .for_each(|(out, x)| {
                out.fill(0.0);
                for_each_corner(g, &bins, &rows, &columns, |bin, pixel, weight| {
                    out[bin] += weight * x[pixel];
                });
                for v in out.iter_mut() {
                    *v /= bins.count;
                }
            });
    }
}

/// `dx` (overwritten): every sample's share `dy[r, c, bin] * weight /
/// count` added to its four pixels of image `roi_batch[r]`, RoI by RoI in
/// Paddle's order; RoIs with a bad image index add nothing.
pub fn backward(g: &RoiAlignGeom, dy: &[f32], rois: &[f32], roi_batch: &[f32], dx: &mut [f32]) {
    check(g, dx.len(), rois.len(), roi_batch.len(), dy.len());
    let plane = g.height * g.width;
    let bins_per_plane = g.pooled_h * g.pooled_w;
    let roi_len = g.channels * bins_per_plane;
    dx[..g.input_len()].fill(0.0);
    for r in 0..g.rois {
        let Some(image) = image_index(roi_batch[r], g.batch) else {
            continue;
        };
        let bins = RoiBins::new(g, &rois[4 * r..][..4]);
        let rows = bins.row_taps(g.height, g.pooled_h);
        let columns = bins.column_taps(g.width, g.pooled_w);
        let image_dx = &mut dx[image * g.channels * plane..][..g.channels * plane];
        // Channels write disjoint planes: parallel, and each plane still
        // receives its additions in Paddle's order.
        image_dx
            .par_chunks_mut(plane)
            .zip(dy[r * roi_len..][..roi_len].par_chunks(bins_per_plane))
            .for_each(|(dx, dy)| {
                for_each_corner(g, &bins, &rows, &columns, |bin, pixel, weight| {
                    dx[pixel] += dy[bin] * weight / bins.count;
                });
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(height: usize, width: usize, pooled: usize, sampling_ratio: i32) -> RoiAlignGeom {
        RoiAlignGeom {
            batch: 1,
            channels: 1,
            height,
            width,
            rois: 1,
            pooled_h: pooled,
            pooled_w: pooled,
            spatial_scale: 1.0,
            sampling_ratio,
        }
    }

    /// On a map that is linear in x and y, bilinear interpolation is exact:
    /// each bin is the value at its centre (the samples are symmetric about
    /// it), as long as every sample stays inside the map's last pixel.
    #[test]
    fn a_linear_map_pools_to_its_bin_centres() {
        let g = geom(6, 8, 2, 2);
        let x: Vec<f32> = (0..48)
            .map(|i| (i / 8) as f32 * 10.0 + (i % 8) as f32)
            .collect();
        let mut y = vec![0.0; 4];
        forward(&g, &x, &[1.0, 0.5, 5.0, 4.5], &[0.0], &mut y);
        // Bins are 2 wide and 2 high from (1, 0.5): centres x 2, 4; y 1.5, 3.5.
        assert_eq!(y, [17.0, 19.0, 37.0, 39.0]);
    }

    /// Paddle's border rules: a sample within a pixel outside reads the
    /// border pixel; further out it adds 0 but still counts.
    #[test]
    fn samples_off_the_map_count_as_zero() {
        let g = geom(2, 2, 1, 2);
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut y = [0.0];
        // Box [-4, -4, 0, 0]: samples at -3 and -1 on each axis; only
        // (-1, -1) is within a pixel of the map, and it reads pixel (0, 0).
        forward(&g, &x, &[-4.0, -4.0, 0.0, 0.0], &[0.0], &mut y);
        assert_eq!(y, [0.25]);
        let mut dx = [9.0; 4];
        backward(&g, &[1.0], &[-4.0, -4.0, 0.0, 0.0], &[0.0], &mut dx);
        assert_eq!(dx, [0.25, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn adaptive_grid_is_the_ceiling_of_the_bin() {
        let g = geom(20, 20, 2, 0);
        let bins = RoiBins::new(&g, &[0.0, 0.0, 5.0, 9.0]);
        assert_eq!((bins.grid_h, bins.grid_w, bins.count), (5, 3, 15.0));
        // Boxes smaller than a pixel are one pixel.
        let tiny = RoiBins::new(&g, &[3.0, 3.0, 3.2, 3.0]);
        assert_eq!((tiny.bin_h, tiny.bin_w, tiny.grid_h), (0.5, 0.5, 1));
    }

    #[test]
    fn a_bad_image_index_gives_nan_and_no_gradient() {
        let g = RoiAlignGeom {
            batch: 2,
            rois: 3,
            ..geom(3, 3, 1, 1)
        };
        let x = [1.0; 18];
        let rois = [0.0, 0.0, 2.0, 2.0].repeat(3);
        let mut y = [0.0; 3];
        forward(&g, &x, &rois, &[1.0, 2.0, 0.5], &mut y);
        assert_eq!(y[0], 1.0);
        assert!(y[1].is_nan() && y[2].is_nan(), "{y:?}");
        let mut dx = [5.0; 18];
        backward(&g, &[1.0, 1.0, 1.0], &rois, &[1.0, -1.0, f32::NAN], &mut dx);
        assert_eq!(dx[..9], [0.0; 9]);
        assert_eq!(dx[9..].iter().sum::<f32>(), 1.0);
        assert_eq!(image_index(-0.0, 2), Some(0));
    }

    /// Paddle 1.8.5's `roi_align` with a LoD RoI tensor
    /// (`core/tests/fixtures/roi_align/make_fixtures.py`): outputs and the
    /// input gradient of a random upstream gradient.
    #[test]
    fn matches_paddle_roi_align() {
        use crate::fixtures::{floats, read};
        let fixture = read("roi_align/roi_align.json");
        for case in fixture["cases"].as_array().expect("cases") {
            let shape = floats(&case["shape"]);
            let rois = floats(&case["rois"]);
            let size = |key: &str| case[key].as_u64().expect(key) as usize;
            let g = RoiAlignGeom {
                batch: shape[0] as usize,
                channels: shape[1] as usize,
                height: shape[2] as usize,
                width: shape[3] as usize,
                rois: rois.len() / 4,
                pooled_h: size("pooled_h"),
                pooled_w: size("pooled_w"),
                spatial_scale: case["spatial_scale"].as_f64().expect("spatial_scale") as f32,
                sampling_ratio: case["sampling_ratio"].as_i64().expect("sampling_ratio") as i32,
            };
            let roi_batch = floats(&case["roi_batch"]);
            let mut y = vec![f32::NAN; g.output_len()];
            forward(&g, &floats(&case["x"]), &rois, &roi_batch, &mut y);
            let mut dx = vec![f32::NAN; g.input_len()];
            backward(&g, &floats(&case["dy"]), &rois, &roi_batch, &mut dx);
            for (what, got, want) in [
                ("out", &y, floats(&case["out"])),
                ("dx", &dx, floats(&case["dx"])),
            ] {
                assert_eq!(got.len(), want.len(), "{what} length");
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5,
                        "{g:?} {what}[{i}]: {a} vs Paddle {b}"
                    );
                }
            }
            assert!(y.iter().any(|&v| v != 0.0) && dx.iter().any(|&v| v != 0.0));
        }
    }

    #[test]
    #[should_panic(expected = "roi_batch buffer has 1 elements, needs 2")]
    fn short_buffers_are_refused() {
        let g = RoiAlignGeom {
            rois: 2,
            ..geom(2, 2, 1, 1)
        };
        forward(&g, &[0.0; 4], &[0.0; 8], &[0.0], &mut [0.0; 2]);
    }
}
