//! Normalize and Permute in one pass: scale 0..255 to 0..1, subtract the
//! ImageNet mean and divide by its standard deviation per RGB channel
//! (PaddleDetection `NormalizeImage` with `is_scale: true`), writing
//! channel-first (CHW) as the network reads it (`Permute`). One pass because
//! this is the widest memory traffic of the pipeline.

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `hwc` (`w * h * 3`, 0..255) -> normalised `chw` (`3 * h * w`).
pub fn normalize_permute(hwc: &[f32], chw: &mut [f32]) {
    assert_eq!(hwc.len(), chw.len());
    let plane = hwc.len() / 3;
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * IMAGENET_STD[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| IMAGENET_MEAN[c] / IMAGENET_STD[c]);
    let (r, rest) = chw.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in hwc.chunks_exact(3).enumerate() {
        r[i] = px[0] * scale[0] - shift[0];
        g[i] = px[1] * scale[1] - shift[1];
        b[i] = px[2] * scale[2] - shift[2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_pixels() {
        let hwc = [0.0, 255.0, 127.5, 255.0, 0.0, 0.0];
        let mut chw = [0.0; 6];
        normalize_permute(&hwc, &mut chw);
        let want = [
            (0.0 - 0.485) / 0.229,
            (1.0 - 0.485) / 0.229,
            (1.0 - 0.456) / 0.224,
            (0.0 - 0.456) / 0.224,
            (0.5 - 0.406) / 0.225,
            (0.0 - 0.406) / 0.225,
        ];
        for (a, b) in chw.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{chw:?}");
        }
    }
}
