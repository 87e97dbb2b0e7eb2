//! One training or evaluation sample on its way through the transforms.
//!
//! The pixels are kept as decoded (or as mixed); the colour and geometric
//! transforms do not rewrite them. ColorDistort composes a [`ColorAffine`]
//! (every distortion is an affine map of RGB), applied as pixels are read;
//! the geometric transforms edit a [`View`]: where the
//! picture sits on a larger fill-coloured canvas (RandomExpand), which
//! window of that canvas is shown (RandomCrop) and whether it is mirrored
//! (RandomFlip). The resize at the end reads every output pixel through the
//! view, so the result is exactly that of building the (up to 4x4 times
//! larger) canvas and cropping it as PaddleDetection does, at a fraction of
//! the memory traffic.

use pulsefocus_formats::dataset::Record;
use pulsefocus_formats::image::RgbImage;

/// `rgb -> matrix * rgb + offset`, the colour change still to be applied to
/// the pixels (a ColorDistort after a RandomExpand changes the fill itself).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorAffine {
    pub matrix: [[f32; 3]; 3],
    pub offset: [f32; 3],
}

impl ColorAffine {
    pub const IDENTITY: ColorAffine = ColorAffine {
        matrix: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        offset: [0.0; 3],
    };

    pub fn apply(&self, rgb: [f32; 3]) -> [f32; 3] {
        self.apply_weighted(rgb, 1.0)
    }

    /// `matrix * sum + offset * weight`: the map applied to a weighted sum of
    /// pixels whose weights add up to `weight` (how the resize uses it).
    pub fn apply_weighted(&self, sum: [f32; 3], weight: f32) -> [f32; 3] {
        let m = &self.matrix;
        std::array::from_fn(|c| {
            m[c][0] * sum[0] + m[c][1] * sum[1] + m[c][2] * sum[2] + self.offset[c] * weight
        })
    }

    /// This map followed by `next`.
    pub fn then(&self, next: &ColorAffine) -> ColorAffine {
        let (a, b) = (&next.matrix, &self.matrix);
        ColorAffine {
            matrix: std::array::from_fn(|i| {
                std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum())
            }),
            offset: next.apply(self.offset),
        }
    }
}

/// Where the sample's pixels sit and which part of them it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Size of the canvas the pixels were placed on (the pixels' own size
    /// until RandomExpand).
    pub canvas_w: usize,
    pub canvas_h: usize,
    /// Top-left corner of the pixels on the canvas.
    pub pixels_x: usize,
    pub pixels_y: usize,
    /// Colour of the canvas around the pixels, 0..255 RGB.
    pub fill: [f32; 3],
    /// The shown window of the canvas: its top-left corner and size.
    pub crop_x: usize,
    pub crop_y: usize,
    pub width: usize,
    pub height: usize,
    /// Mirrored left-right (RandomFlip).
    pub flipped: bool,
}

impl View {
    /// The whole of a `width` x `height` picture, unmirrored.
    pub fn whole(width: usize, height: usize) -> View {
        View {
            canvas_w: width,
            canvas_h: height,
            pixels_x: 0,
            pixels_y: 0,
            fill: [0.0; 3],
            crop_x: 0,
            crop_y: 0,
            width,
            height,
            flipped: false,
        }
    }

    pub fn is_whole(&self) -> bool {
        self.canvas_w == self.width
            && self.canvas_h == self.height
            && self.pixels_x == 0
            && self.pixels_y == 0
            && !self.flipped
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// RGB, row-major HWC, values on the 0..255 scale. Floats because colour
    /// distortion and mixup produce fractions (and, as in PaddleDetection,
    /// values slightly outside 0..255 that are not clipped).
    pub pixels: Vec<f32>,
    pub pixels_w: usize,
    pub pixels_h: usize,
    /// Colour change to apply to `pixels` when they are read.
    pub color: ColorAffine,
    pub view: View,
    /// Boxes `[x1, y1, x2, y2]` in the view's pixel coordinates.
    pub boxes: Vec<[f32; 4]>,
    pub classes: Vec<u32>,
    /// 1 for an ordinary box; mixup weights the two images' boxes by f and 1 - f.
    pub scores: Vec<f32>,
    /// Per box, its polygons `[x1, y1, x2, y2, ...]` in the pixels of the
    /// picture as shown, when the loader carries them (`with_polygons`, the
    /// Mask R-CNN readers, whose only geometric transform is the flip);
    /// `None` otherwise.
    pub polygons: Option<Vec<Vec<Vec<f64>>>>,
}

impl Sample {
    /// A decoded image with no boxes (what `infer` feeds the network).
    pub fn from_image(image: &RgbImage) -> Sample {
        let (w, h) = (image.width as usize, image.height as usize);
        Sample {
            pixels: image.data.iter().map(|&v| v as f32).collect(),
            pixels_w: w,
            pixels_h: h,
            color: ColorAffine::IDENTITY,
            view: View::whole(w, h),
            boxes: Vec::new(),
            classes: Vec::new(),
            scores: Vec::new(),
            polygons: None,
        }
    }

    /// The decoded image of `record` with its boxes, each with score 1.
    pub fn new(image: &RgbImage, record: &Record) -> Sample {
        Sample {
            boxes: record.objects.iter().map(|o| o.bbox).collect(),
            classes: record.objects.iter().map(|o| o.class).collect(),
            scores: vec![1.0; record.objects.len()],
            ..Sample::from_image(image)
        }
    }

    /// Reverses the order of the channels of the pixels: what DecodeImage's
    /// `to_rgb: false` leaves (BGR, as OpenCV decodes).
    pub fn reverse_channels(&mut self) {
        for px in self.pixels.chunks_exact_mut(3) {
            px.swap(0, 2);
        }
    }

    /// Builds what the sample shows as its pixels (colour map applied, fill
    /// drawn, window cropped, mirror done), so that a transform that needs
    /// the picture as decoded (mixup, expand) can follow any other. The
    /// boxes are already in the view's coordinates.
    pub fn materialize(&mut self) {
        let (w, h) = (self.width(), self.height());
        let mut pixels = Vec::with_capacity(w * h * 3);
        for v in 0..h {
            for u in 0..w {
                pixels.extend_from_slice(&self.at(u, v));
            }
        }
        self.pixels = pixels;
        (self.pixels_w, self.pixels_h) = (w, h);
        self.color = ColorAffine::IDENTITY;
        self.view = View::whole(w, h);
    }

    /// Width and height of what the sample shows.
    pub fn width(&self) -> usize {
        self.view.width
    }

    pub fn height(&self) -> usize {
        self.view.height
    }

    /// The pixel column behind view column `u` (`u < width`), or `None` where
    /// the view shows the canvas fill.
    pub fn source_x(&self, u: usize) -> Option<usize> {
        let v = &self.view;
        let canvas_x = if v.flipped {
            v.crop_x + v.width - 1 - u
        } else {
            v.crop_x + u
        };
        canvas_x
            .checked_sub(v.pixels_x)
            .filter(|&x| x < self.pixels_w)
    }

    /// The pixel row behind view row `v`, or `None` where it shows fill.
    pub fn source_y(&self, v: usize) -> Option<usize> {
        (self.view.crop_y + v)
            .checked_sub(self.view.pixels_y)
            .filter(|&y| y < self.pixels_h)
    }

    /// The colour shown at view pixel `(u, v)`.
    pub fn at(&self, u: usize, v: usize) -> [f32; 3] {
        match (self.source_x(u), self.source_y(v)) {
            (Some(x), Some(y)) => {
                let i = (y * self.pixels_w + x) * 3;
                self.color
                    .apply([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
            }
            _ => self.view.fill,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pulsefocus_formats::dataset::GroundTruth;

    /// A `w` x `h` sample whose pixel `(x, y)` is `[x, y, 7]`, with `boxes`
    /// of classes 0, 1, 2, ...
    pub fn gradient_sample(w: usize, h: usize, boxes: &[[f32; 4]]) -> Sample {
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[x as u8, y as u8, 7]);
            }
        }
        let image = RgbImage {
            width: w as u32,
            height: h as u32,
            data,
        };
        let record = Record {
            image_path: "gradient.png".into(),
            id: 0,
            width: w as u32,
            height: h as u32,
            objects: boxes
                .iter()
                .enumerate()
                .map(|(i, &bbox)| GroundTruth {
                    bbox,
                    class: i as u32,
                    difficult: false,
                    crowd: false,
                })
                .collect(),
            polygons: Vec::new(),
        };
        Sample::new(&image, &record)
    }

    #[test]
    fn whole_view_shows_the_pixels() {
        let s = gradient_sample(5, 4, &[]);
        assert_eq!(s.at(3, 2), [3.0, 2.0, 7.0]);
        assert!(s.view.is_whole());
    }

    #[test]
    fn materializing_keeps_what_the_sample_shows() {
        let mut s = gradient_sample(4, 3, &[[1.0, 0.0, 3.0, 2.0]]);
        s.color = ColorAffine {
            offset: [1.0, 0.0, 0.0],
            ..ColorAffine::IDENTITY
        };
        s.view.flipped = true;
        let shown: Vec<[f32; 3]> = (0..3)
            .flat_map(|v| (0..4).map(move |u| (u, v)))
            .map(|(u, v)| s.at(u, v))
            .collect();
        s.materialize();
        assert!(s.view.is_whole() && s.color == ColorAffine::IDENTITY);
        assert_eq!(s.at(0, 0), [4.0, 0.0, 7.0]);
        for (i, px) in shown.iter().enumerate() {
            assert_eq!(s.at(i % 4, i / 4), *px);
        }
        assert_eq!(s.boxes, vec![[1.0, 0.0, 3.0, 2.0]]);
        s.reverse_channels();
        assert_eq!(s.at(0, 0), [7.0, 0.0, 4.0]);
    }

    #[test]
    fn color_maps_compose_in_order() {
        let scale = ColorAffine {
            matrix: [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]],
            offset: [0.0; 3],
        };
        let shift = ColorAffine {
            offset: [1.0, 2.0, 3.0],
            ..ColorAffine::IDENTITY
        };
        let px = [10.0, 20.0, 30.0];
        assert_eq!(scale.then(&shift).apply(px), [21.0, 42.0, 63.0]);
        assert_eq!(shift.then(&scale).apply(px), [22.0, 44.0, 66.0]);
        let mut s = gradient_sample(3, 3, &[]);
        s.color = shift;
        assert_eq!(s.at(2, 1), [3.0, 3.0, 10.0]);
    }
}
