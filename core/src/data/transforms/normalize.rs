//! NormalizeImage and Permute in one pass, writing channel-first (CHW) as the
//! network reads it. One pass because this is the widest memory traffic of
//! the pipeline.
//!
//! Both transforms change each channel on its own (NormalizeImage:
//! `(v [/ 255] - mean[c]) / std[c]`; Permute with `to_bgr`: reverse the
//! channels), so any sequence of them is, per output channel, an input
//! channel times a scale plus a shift: a [`ChannelNorm`]. The order matters
//! and is kept: `mean[0]` applies to whatever channel is first at that point,
//! red or blue.

/// ImageNet statistics on the 0..1 scale, those of the YOLOv3 configs.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Output channel `c` is `pixel[source[c]] * scale[c] + shift[c]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelNorm {
    pub source: [usize; 3],
    pub scale: [f32; 3],
    pub shift: [f32; 3],
}

impl ChannelNorm {
    /// The values as they are, channels in their order.
    pub const IDENTITY: ChannelNorm = ChannelNorm {
        source: [0, 1, 2],
        scale: [1.0; 3],
        shift: [0.0; 3],
    };

    /// The YOLOv3 readers': ImageNet statistics, `is_scale: true`, RGB.
    pub fn imagenet() -> ChannelNorm {
        ChannelNorm::IDENTITY.then_normalize(IMAGENET_MEAN, IMAGENET_STD, true)
    }

    /// This, then NormalizeImage: `(v [/ 255] - mean[c]) / std[c]` for the
    /// channel now at position `c`.
    pub fn then_normalize(self, mean: [f32; 3], std: [f32; 3], is_scale: bool) -> ChannelNorm {
        let unit = if is_scale { 1.0 / 255.0 } else { 1.0 };
        ChannelNorm {
            source: self.source,
            scale: std::array::from_fn(|c| self.scale[c] * unit / std[c]),
            shift: std::array::from_fn(|c| (self.shift[c] * unit - mean[c]) / std[c]),
        }
    }

    /// This, then Permute's `to_bgr`: the channels in reverse order.
    pub fn then_reverse(self) -> ChannelNorm {
        let reverse = |a: [f32; 3]| [a[2], a[1], a[0]];
        ChannelNorm {
            source: [self.source[2], self.source[1], self.source[0]],
            scale: reverse(self.scale),
            shift: reverse(self.shift),
        }
    }
}

/// `hwc` (`w * h * 3`) -> `chw` (`3 * h * w`), each channel as `norm` says.
pub fn normalize_permute(hwc: &[f32], norm: &ChannelNorm, chw: &mut [f32]) {
    assert_eq!(hwc.len(), chw.len());
    let plane = hwc.len() / 3;
    let ChannelNorm {
        source,
        scale,
        shift,
    } = *norm;
    let (first, rest) = chw.split_at_mut(plane);
    let (second, third) = rest.split_at_mut(plane);
    for (i, px) in hwc.chunks_exact(3).enumerate() {
        first[i] = px[source[0]] * scale[0] + shift[0];
        second[i] = px[source[1]] * scale[1] + shift[1];
        third[i] = px[source[2]] * scale[2] + shift[2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(norm: &ChannelNorm) -> [f32; 6] {
        let hwc = [0.0, 255.0, 127.5, 255.0, 0.0, 0.0];
        let mut chw = [0.0; 6];
        normalize_permute(&hwc, norm, &mut chw);
        chw
    }

    fn assert_close(got: [f32; 6], want: [f32; 6]) {
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn imagenet_on_two_pixels() {
        assert_close(
            run(&ChannelNorm::imagenet()),
            [
                (0.0 - 0.485) / 0.229,
                (1.0 - 0.485) / 0.229,
                (1.0 - 0.456) / 0.224,
                (0.0 - 0.456) / 0.224,
                (0.5 - 0.406) / 0.225,
                (0.0 - 0.406) / 0.225,
            ],
        );
    }

    #[test]
    fn without_is_scale_the_mean_is_on_the_0_255_scale() {
        let ssd = ChannelNorm::IDENTITY.then_normalize([127.5; 3], [127.5; 3], false);
        assert_close(run(&ssd), [-1.0, 1.0, 1.0, -1.0, 0.0, -1.0]);
    }

    #[test]
    fn the_mean_applies_to_the_channel_in_place_at_that_point() {
        let mean = [10.0, 20.0, 30.0];
        let reverse_then_normalize = ChannelNorm::IDENTITY
            .then_reverse()
            .then_normalize(mean, [1.0; 3], false);
        // Blue first, minus mean[0].
        assert_close(
            run(&reverse_then_normalize),
            [117.5, -10.0, 235.0, -20.0, -30.0, 225.0],
        );
        let normalize_then_reverse = ChannelNorm::IDENTITY
            .then_normalize(mean, [1.0; 3], false)
            .then_reverse();
        assert_close(
            run(&normalize_then_reverse),
            [97.5, -30.0, 235.0, -20.0, -10.0, 245.0],
        );
        assert_close(
            run(&ChannelNorm::IDENTITY.then_reverse().then_reverse()),
            run(&ChannelNorm::IDENTITY),
        );
    }
}
