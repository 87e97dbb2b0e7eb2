//! SSD's output decoder before NMS (Paddle's `detection_output`): each
//! prior's predicted offsets decoded into a normalised box (`box_coder`,
//! `decode_center_size`, with the prior's variances) and each prior's class
//! logits softmaxed. The arithmetic is core's `box_coder::decode` and
//! `ssd::detect`'s softmax, operation for operation, so that under the
//! emulator (std `exp`) boxes and scores are bit-identical to the CPU's and
//! NMS (`nms.rs`) decides exactly as it does there; on a GPU only `exp`
//! (`ex2.approx`) differs.
use crate::{grid_stride, kernel, math};

kernel! {
    /// For each image `n < batch` and prior `p < priors`: `boxes[n, p]` =
    /// `location[n, p]` (`dx, dy, dw, dh`) decoded against `prior_boxes[p]`
    /// (x1, y1, x2, y2, normalised) with `variances[p]`: centre `v * d *
    /// size + centre`, size `exp(v * d) * size`; written x1, y1, x2, y2.
    pub fn ssd_decode(ctx, location: *const f32, prior_boxes: *const f32, variances: *const f32,
        boxes: *mut f32, batch: u32, priors: u32) {
        grid_stride(ctx, batch * priors, |i| {
            let prior = prior_boxes.add(4 * (i % priors as usize));
            let variance = variances.add(4 * (i % priors as usize));
            let delta = location.add(4 * i);
            let (pw, ph) = (*prior.add(2) - *prior, *prior.add(3) - *prior.add(1));
            let (px, py) = (*prior + pw / 2.0, *prior.add(1) + ph / 2.0);
            let cx = *variance * *delta * pw + px;
            let cy = *variance.add(1) * *delta.add(1) * ph + py;
            let w = math::exp(*variance.add(2) * *delta.add(2)) * pw;
            let h = math::exp(*variance.add(3) * *delta.add(3)) * ph;
            let out = boxes.add(4 * i);
            *out = cx - w / 2.0;
            *out.add(1) = cy - h / 2.0;
            *out.add(2) = cx + w / 2.0;
            *out.add(3) = cy + h / 2.0;
        });
    }
}

kernel! {
    /// Softmax of each of `rows` rows of `cols` logits, one thread per row:
    /// `y = exp(x - max) / sum`, the sum taken in column order (as the CPU).
    pub fn softmax_rows(ctx, x: *const f32, y: *mut f32, rows: u32, cols: u32) {
        grid_stride(ctx, rows, |r| {
            let (x, y) = (x.add(r * cols as usize), y.add(r * cols as usize));
            let mut max = f32::NEG_INFINITY;
            let mut c = 0;
            while c < cols as usize { max = max.max(*x.add(c)); c += 1; }
            let mut sum = 0.0;
            let mut c = 0;
            while c < cols as usize {
                let e = math::exp(*x.add(c) - max);
                *y.add(c) = e;
                sum += e;
                c += 1;
            }
            let mut c = 0;
            while c < cols as usize { *y.add(c) /= sum; c += 1; }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;
    use pulsefocus_core::box_coder::BoxXyxy;
    use pulsefocus_core::ssd::detect;
    use pulsefocus_core::yolo::{Detection, NmsConfig};

    fn bits(d: &[Vec<Detection>]) -> Vec<Vec<(usize, u32, [u32; 4])>> {
        d.iter()
            .map(|i| {
                i.iter()
                    .map(|d| (d.class, d.score.to_bits(), d.bbox.map(f32::to_bits)))
                    .collect()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Decode, softmax and NMS through the kernels equal core's
        /// `ssd::detect` of each image to the bit, in order: logits from a
        /// few levels (so that scores tie), priors on a coarse grid (so that
        /// boxes coincide), Paddle's settings and small top-k limits.
        #[test]
        fn decode_softmax_and_nms_equal_the_cpu_detect(n in 1usize..3, classes in 1usize..6,
            priors in 1usize..24, logits in prop::collection::vec(0u8..5, 2 * 24 * 5),
            deltas in prop::collection::vec(-8i8..8, 2 * 24 * 4),
            nms_top_k in prop::option::of(1usize..8), keep_top_k in prop::option::of(1usize..12),
            score_threshold in prop_oneof![Just(0.01f32), 0.0f32..0.6],
            background in prop::option::of(0usize..2)) {
            let prior_boxes: Vec<BoxXyxy> = (0..priors)
                .map(|p| {
                    let (x, y, s) = ((p % 4) as f32 * 0.2, (p / 4 % 3) as f32 * 0.25, 0.1 + (p % 3) as f32 * 0.15);
                    [x, y, x + s, y + s * 1.5]
                })
                .collect();
            let variances: Vec<[f32; 4]> = (0..priors).map(|p| [0.1, 0.1, 0.2 + p as f32 * 0.01, 0.2]).collect();
            let location: Vec<f32> = deltas[..n * priors * 4].iter().map(|&d| d as f32 / 4.0).collect();
            let confidence: Vec<f32> = logits[..n * priors * classes].iter().map(|&l| l as f32 - 2.0).collect();
            let nms = NmsConfig { score_threshold, nms_top_k, keep_top_k, nms_threshold: 0.45, normalized: true, background_label: background };
            let want: Vec<Vec<Detection>> = (0..n)
                .map(|i| detect(&nms, &prior_boxes, &variances, classes,
                    &location[i * priors * 4..][..priors * 4], &confidence[i * priors * classes..][..priors * classes]))
                .collect();

            let (lb, cb) = (DeviceBuf::new(&location), DeviceBuf::new(&confidence));
            let pb = DeviceBuf::new(&prior_boxes.concat());
            let vb = DeviceBuf::new(&variances.concat());
            let boxes = DeviceBuf::filled(n * priors * 4, f32::NAN);
            let scores = DeviceBuf::filled(n * priors * classes, f32::NAN);
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                ssd_decode(c, lb.ptr(), pb.ptr(), vb.ptr(), boxes.ptr(), n as u32, priors as u32)
            });
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                softmax_rows(c, cb.ptr(), scores.ptr(), (n * priors) as u32, classes as u32)
            });
            let got = crate::nms::emulated::multiclass_nms(&nms, &boxes, &scores, n, classes);
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
