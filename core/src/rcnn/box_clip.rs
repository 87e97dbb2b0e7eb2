//! Paddle's `box_clip`: boxes clipped to an image given as an `im_info` row
//! `(height, width, scale)`. The image is `round(height / scale)` by
//! `round(width / scale)` pixels, so that a resized image's `im_info` clips
//! to the original picture; PaddleDetection's box head passes `im_shape`
//! (the original height, width and 1) instead, which clips to the same.
//! Coordinates are kept within `[0, width - 1]` and `[0, height - 1]`
//! (pixel boxes: the last pixel is `width - 1`).

use crate::box_coder::BoxXyxy;

/// `b` clipped to the image `im_info` describes.
pub fn box_clip(b: &BoxXyxy, im_info: &[f32; 3]) -> BoxXyxy {
    let height = (im_info[0] / im_info[2]).round();
    let width = (im_info[1] / im_info[2]).round();
    let clip = |v: f32, size: f32| v.min(size - 1.0).max(0.0);
    [
        clip(b[0], width),
        clip(b[1], height),
        clip(b[2], width),
        clip(b[3], height),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_to_the_unscaled_image() {
        // 96 x 128 at scale 1.5 is a 64 x 85.33 picture: rounded, 64 x 85,
        // so x within [0, 84] and y within [0, 63].
        let b = box_clip(&[-3.0, 10.0, 90.5, 70.0], &[96.0, 128.0, 1.5]);
        assert_eq!(b, [0.0, 10.0, 84.0, 63.0]);
        // Inside boxes are unchanged.
        let inside = [1.5, 2.5, 80.0, 60.0];
        assert_eq!(box_clip(&inside, &[64.0, 85.0, 1.0]), inside);
    }
}
