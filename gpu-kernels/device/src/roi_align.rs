//! RoIAlign (core's `RoiAlignGeom`, Paddle 1.8's `roi_align`) with core's
//! `cpu::roi_align` operation order, so both give the same bits.
//!
//! Forward: one thread per output bin, summing its samples in order.
//! Backward: one thread per input pixel gathering, RoI by RoI, the shares of
//! the samples that read it, in the order the CPU scatters them (bin, sample
//! row, sample column, corner): no atomics, deterministic, and equal to the
//! CPU's sums to the bit. A thread skips a RoI, or one of its bins, whose
//! samples cannot reach its pixel; the cost is a few comparisons per
//! (pixel, RoI of its image) on top of the samples that do.
use crate::math::floor;
use crate::{grid_stride, kernel};

/// The RoI's image when `value` is an integer in `0..batch` (core's
/// `image_index`).
#[inline(always)]
fn image_index(value: f32, batch: u32) -> Option<u32> {
    let n = value as u32;
    if n as f32 == value && n < batch {
        Some(n)
    } else {
        None
    }
}

/// One RoI on the feature map (core's `RoiBins`).
#[derive(Clone, Copy)]
struct Roi {
    y1: f32,
    x1: f32,
    bin_h: f32,
    bin_w: f32,
    grid_h: u32,
    grid_w: u32,
    count: f32,
}

#[inline(always)]
fn at_least_one(size: f32) -> f32 {
    if size < 1.0 {
        1.0
    } else {
        size
    }
}

impl Roi {
    /// `roi` points at `[x1, y1, x2, y2]`; `sampling_ratio` 0 is adaptive.
    #[inline(always)]
    unsafe fn new(
        roi: *const f32,
        scale: f32,
        pooled_h: u32,
        pooled_w: u32,
        sampling_ratio: u32,
    ) -> Roi {
        let (x1, y1) = (*roi * scale, *roi.add(1) * scale);
        let (x2, y2) = (*roi.add(2) * scale, *roi.add(3) * scale);
        let bin_h = at_least_one(y2 - y1) / pooled_h as f32;
        let bin_w = at_least_one(x2 - x1) / pooled_w as f32;
        let grid = |bin: f32| {
            if sampling_ratio > 0 {
                sampling_ratio
            } else {
                -floor(-bin) as u32
            }
        };
        let (grid_h, grid_w) = (grid(bin_h), grid(bin_w));
        Roi {
            y1,
            x1,
            bin_h,
            bin_w,
            grid_h,
            grid_w,
            count: (grid_h * grid_w) as f32,
        }
    }
}

/// Sample `i` (of `grid`) of bin `p` along one axis starting at `start`.
#[inline(always)]
fn sample(start: f32, bin: f32, grid: u32, p: u32, i: u32) -> f32 {
    start + p as f32 * bin + (i as f32 + 0.5) * bin / grid as f32
}

/// A sample coordinate along one axis (core's `Tap`).
#[derive(Clone, Copy)]
struct Tap {
    low: u32,
    high: u32,
    low_weight: f32,
    high_weight: f32,
}

/// Core's `Tap::at`: None more than a pixel outside an axis `size` long.
#[inline(always)]
fn tap(size: u32, v: f32) -> Option<Tap> {
    // Paddle's `v < -1 || v > size`, written so that NaN is off the map too.
    if !(v >= -1.0 && v <= size as f32) {
        return None;
    }
    let v = if v <= 0.0 { 0.0 } else { v };
    let low = v as u32;
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

/// Core's `corners`: the sample's four pixels in a `width`-wide plane and
/// their weights, in Paddle's order.
#[inline(always)]
fn corners(ty: Tap, tx: Tap, width: u32) -> [(u32, f32); 4] {
    [
        (ty.low * width + tx.low, ty.low_weight * tx.low_weight),
        (ty.low * width + tx.high, ty.low_weight * tx.high_weight),
        (ty.high * width + tx.low, ty.high_weight * tx.low_weight),
        (ty.high * width + tx.high, ty.high_weight * tx.high_weight),
    ]
}

/// Whether samples in `[lo, hi]` may read pixel `p` of their axis: a tap
/// reads `p` only from within a pixel of it (the clamps at both ends stay
/// within that too). Samples of a bin never leave its computed
/// `[lo, lo + bin]`: each is `lo` plus a nonnegative offset below `bin`,
/// rounded, and rounding is monotonic.
#[inline(always)]
fn may_read(lo: f32, hi: f32, p: u32) -> bool {
    let p = p as f32;
    hi >= p - 1.0 && lo <= p + 1.0
}

kernel! {
    /// `y[r, c, ph, pw]` = the mean of bin (ph, pw)'s bilinear samples of
    /// `x[roi_batch[r], c]`, for all `rois * channels * pooled_h * pooled_w`
    /// outputs; NaN for a RoI whose image index is bad.
    pub fn roi_align_forward(ctx, x: *const f32, rois: *const f32, roi_batch: *const f32,
        y: *mut f32, batch: u32, channels: u32, height: u32, width: u32, roi_count: u32,
        pooled_h: u32, pooled_w: u32, spatial_scale: f32, sampling_ratio: u32) {
        let bins = pooled_h * pooled_w;
        grid_stride(ctx, roi_count * channels * bins, |i| {
            let i = i as u32;
            let (r, c, bin) = (i / (channels * bins), i / bins % channels, i % bins);
            let (ph, pw) = (bin / pooled_w, bin % pooled_w);
            let Some(n) = image_index(*roi_batch.add(r as usize), batch) else {
                *y.add(i as usize) = f32::NAN;
                return;
            };
            let roi = Roi::new(rois.add(4 * r as usize), spatial_scale, pooled_h, pooled_w, sampling_ratio);
            let plane = x.add(((n * channels + c) * height * width) as usize);
            let mut sum = 0.0f32;
            let mut iy = 0;
            while iy < roi.grid_h {
                if let Some(ty) = tap(height, sample(roi.y1, roi.bin_h, roi.grid_h, ph, iy)) {
                    let mut ix = 0;
                    while ix < roi.grid_w {
                        if let Some(tx) = tap(width, sample(roi.x1, roi.bin_w, roi.grid_w, pw, ix)) {
                            for (pixel, weight) in corners(ty, tx, width) {
                                sum += weight * *plane.add(pixel as usize);
                            }
                        }
                        ix += 1;
                    }
                }
                iy += 1;
            }
            *y.add(i as usize) = sum / roi.count;
        });
    }
}

kernel! {
    /// `dx[n, c, py, px]` (overwritten, all `batch * channels * height *
    /// width`) = the sum, over the RoIs of image n in order and their
    /// samples in the CPU's order, of `dy[r, c, bin] * weight / count` for
    /// each corner of the sample that is this pixel.
    pub fn roi_align_backward(ctx, dy: *const f32, rois: *const f32, roi_batch: *const f32,
        dx: *mut f32, batch: u32, channels: u32, height: u32, width: u32, roi_count: u32,
        pooled_h: u32, pooled_w: u32, spatial_scale: f32, sampling_ratio: u32) {
        let plane = height * width;
        let bins = pooled_h * pooled_w;
        grid_stride(ctx, batch * channels * plane, |i| {
            let i = i as u32;
            let (n, c, pixel) = (i / (channels * plane), i / plane % channels, i % plane);
            let (py, px) = (pixel / width, pixel % width);
            let mut sum = 0.0f32;
            let mut r = 0;
            while r < roi_count {
                if image_index(*roi_batch.add(r as usize), batch) != Some(n) {
                    r += 1;
                    continue;
                }
                let roi = Roi::new(rois.add(4 * r as usize), spatial_scale, pooled_h, pooled_w, sampling_ratio);
                // The whole RoI's samples lie in its first bin's lo to its
                // last bin's hi (each bin's bounds as `may_read` takes them).
                let y_last = roi.y1 + (pooled_h - 1) as f32 * roi.bin_h;
                let x_last = roi.x1 + (pooled_w - 1) as f32 * roi.bin_w;
                if may_read(roi.y1, y_last + roi.bin_h, py) && may_read(roi.x1, x_last + roi.bin_w, px) {
                    let grad = dy.add(((r * channels + c) * bins) as usize);
                    let mut ph = 0;
                    while ph < pooled_h {
                        let y_lo = roi.y1 + ph as f32 * roi.bin_h;
                        if may_read(y_lo, y_lo + roi.bin_h, py) {
                            let mut pw = 0;
                            while pw < pooled_w {
                                let x_lo = roi.x1 + pw as f32 * roi.bin_w;
                                if may_read(x_lo, x_lo + roi.bin_w, px) {
                                    let g = *grad.add((ph * pooled_w + pw) as usize);
                                    sum = gather_bin(sum, g, &roi, (ph, pw), (height, width), pixel);
                                }
                                pw += 1;
                            }
                        }
                        ph += 1;
                    }
                }
                r += 1;
            }
            *dx.add(i as usize) = sum;
        });
    }
}

/// `sum` plus the shares bin (ph, pw) of `roi`, whose gradient is `g`,
/// sends to `pixel` of a `height x width` plane, in the CPU's order.
#[inline(always)]
fn gather_bin(
    mut sum: f32,
    g: f32,
    roi: &Roi,
    (ph, pw): (u32, u32),
    (height, width): (u32, u32),
    pixel: u32,
) -> f32 {
    let (py, px) = (pixel / width, pixel % width);
    let mut iy = 0;
    while iy < roi.grid_h {
        if let Some(ty) = tap(height, sample(roi.y1, roi.bin_h, roi.grid_h, ph, iy)) {
            if ty.low == py || ty.high == py {
                let mut ix = 0;
                while ix < roi.grid_w {
                    match tap(width, sample(roi.x1, roi.bin_w, roi.grid_w, pw, ix)) {
                        Some(tx) if tx.low == px || tx.high == px => {
                            for (at, weight) in corners(ty, tx, width) {
                                if at == pixel {
                                    sum += g * weight / roi.count;
                                }
                            }
                        }
                        _ => {}
                    }
                    ix += 1;
                }
            }
        }
        iy += 1;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;
    use pulsefocus_core::backend::RoiAlignGeom;
    use pulsefocus_core::cpu::roi_align;

    /// Boxes in input pixels around a `height x width` map at `scale`:
    /// from 0.3 to 1.5 map sizes wide, anywhere from a map size before it to
    /// one past it; each on a random image, some with bad indices.
    fn case() -> impl Strategy<Value = (RoiAlignGeom, Vec<f32>, Vec<f32>, u64)> {
        (
            1usize..3,
            1usize..3,
            1usize..7,
            1usize..7,
            0usize..5,
            1usize..4,
            1usize..4,
            0i32..3,
            0usize..2,
            any::<u64>(),
        )
            .prop_map(
                |(
                    batch,
                    channels,
                    height,
                    width,
                    rois,
                    pooled_h,
                    pooled_w,
                    sampling_ratio,
                    scale,
                    seed,
                )| {
                    let spatial_scale = [1.0, 0.25][scale];
                    let g = RoiAlignGeom {
                        batch,
                        channels,
                        height,
                        width,
                        rois,
                        pooled_h,
                        pooled_w,
                        spatial_scale,
                        sampling_ratio,
                    };
                    let mut state = seed | 1;
                    let mut unit = move || {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state >> 40) as f32 / (1u64 << 24) as f32
                    };
                    let (h, w) = (height as f32 / spatial_scale, width as f32 / spatial_scale);
                    let mut boxes = Vec::new();
                    let mut images = Vec::new();
                    for _ in 0..rois {
                        let (x1, y1) = ((3.0 * unit() - 1.5) * w, (3.0 * unit() - 1.5) * h);
                        boxes.extend([
                            x1,
                            y1,
                            x1 + (0.3 + 1.2 * unit()) * w,
                            y1 + (0.3 + 1.2 * unit()) * h,
                        ]);
                        images.push(if unit() < 0.1 {
                            batch as f32
                        } else {
                            (unit() * batch as f32).floor()
                        });
                    }
                    (g, boxes, images, seed)
                },
            )
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u64 * 2654435761 + seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn sizes(g: &RoiAlignGeom) -> [u32; 7] {
        [
            g.batch, g.channels, g.height, g.width, g.rois, g.pooled_h, g.pooled_w,
        ]
        .map(|v| v as u32)
    }

    proptest! {
        /// Forward and backward equal core's CPU RoIAlign to the bit.
        #[test]
        fn equals_the_cpu_roi_align((g, boxes, images, seed) in case()) {
            let x = values(g.input_len(), seed);
            let dy = values(g.output_len(), seed ^ 7);
            let [batch, channels, height, width, roi_count, pooled_h, pooled_w] = sizes(&g);
            let ratio = g.sampling_ratio.max(0) as u32;
            let (xb, rb, nb, dyb) = (DeviceBuf::new(&x), DeviceBuf::new(&boxes), DeviceBuf::new(&images), DeviceBuf::new(&dy));
            let y = DeviceBuf::filled(g.output_len(), 7.0);
            launch_independent(Dim3::x(3), Dim3::x(32), |c| unsafe {
                roi_align_forward(c, xb.ptr(), rb.ptr(), nb.ptr(), y.ptr(), batch, channels, height, width,
                    roi_count, pooled_h, pooled_w, g.spatial_scale, ratio)
            });
            let mut want = vec![0.0; g.output_len()];
            roi_align::forward(&g, &x, &boxes, &images, &mut want);
            prop_assert_eq!(bits(&y.to_vec()), bits(&want));

            let dx = DeviceBuf::filled(g.input_len(), 7.0);
            launch_independent(Dim3::x(3), Dim3::x(32), |c| unsafe {
                roi_align_backward(c, dyb.ptr(), rb.ptr(), nb.ptr(), dx.ptr(), batch, channels, height, width,
                    roi_count, pooled_h, pooled_w, g.spatial_scale, ratio)
            });
            let mut want = vec![0.0; g.input_len()];
            roi_align::backward(&g, &dy, &boxes, &images, &mut want);
            prop_assert_eq!(bits(&dx.to_vec()), bits(&want));
        }
    }
}
