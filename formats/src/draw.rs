//! Drawing detections onto an RGB8 image: translucent instance masks (Mask
//! R-CNN), box outlines, filled label backgrounds and text in a small
//! built-in bitmap font, with one colour per class for boxes and labels and
//! one per instance for masks. `infer` and the demo use it to write pictures
//! of what the detector found. Labels are kept whole inside the picture and
//! off each other.
//!
//! Everything is clipped to the image, so boxes that stick out (or lie wholly
//! outside) are drawn partly or not at all, never out of bounds.

use crate::image::RgbImage;
use crate::rle::Rle;

/// Glyph cell: 5 columns of 8 rows, plus one blank column between letters.
pub const GLYPH_WIDTH: u32 = 5;
pub const GLYPH_HEIGHT: u32 = 8;
const ADVANCE: u32 = GLYPH_WIDTH + 1;

/// Printable ASCII 0x20..=0x7E in the classic 5x8 LCD font: five column bytes
/// per character, bit 0 the top row, bit 7 the bottom (descenders of g, p, q,
/// y). Anything outside this range is drawn as '?'.
#[rustfmt::skip]
const FONT: [[u8; 5]; 95] = [
    [0x00, 0x00, 0x00, 0x00, 0x00], // ' '
    [0x00, 0x00, 0x5F, 0x00, 0x00], // !
    [0x00, 0x07, 0x00, 0x07, 0x00], // "
    [0x14, 0x7F, 0x14, 0x7F, 0x14], // #
    [0x24, 0x2A, 0x7F, 0x2A, 0x12], // $
    [0x23, 0x13, 0x08, 0x64, 0x62], // %
    [0x36, 0x49, 0x56, 0x20, 0x50], // &
    [0x00, 0x08, 0x07, 0x03, 0x00], // '
    [0x00, 0x1C, 0x22, 0x41, 0x00], // (
    [0x00, 0x41, 0x22, 0x1C, 0x00], // )
    [0x2A, 0x1C, 0x7F, 0x1C, 0x2A], // *
    [0x08, 0x08, 0x3E, 0x08, 0x08], // +
    [0x00, 0x80, 0x70, 0x30, 0x00], // ,
    [0x08, 0x08, 0x08, 0x08, 0x08], // -
    [0x00, 0x00, 0x60, 0x60, 0x00], // .
    [0x20, 0x10, 0x08, 0x04, 0x02], // /
    [0x3E, 0x51, 0x49, 0x45, 0x3E], // 0
    [0x00, 0x42, 0x7F, 0x40, 0x00], // 1
    [0x72, 0x49, 0x49, 0x49, 0x46], // 2
    [0x21, 0x41, 0x49, 0x4D, 0x33], // 3
    [0x18, 0x14, 0x12, 0x7F, 0x10], // 4
    [0x27, 0x45, 0x45, 0x45, 0x39], // 5
    [0x3C, 0x4A, 0x49, 0x49, 0x31], // 6
    [0x41, 0x21, 0x11, 0x09, 0x07], // 7
    [0x36, 0x49, 0x49, 0x49, 0x36], // 8
    [0x46, 0x49, 0x49, 0x29, 0x1E], // 9
    [0x00, 0x00, 0x14, 0x00, 0x00], // :
    [0x00, 0x40, 0x34, 0x00, 0x00], // ;
    [0x00, 0x08, 0x14, 0x22, 0x41], // <
    [0x14, 0x14, 0x14, 0x14, 0x14], // =
    [0x00, 0x41, 0x22, 0x14, 0x08], // >
    [0x02, 0x01, 0x59, 0x09, 0x06], // ?
    [0x3E, 0x41, 0x5D, 0x59, 0x4E], // @
    [0x7C, 0x12, 0x11, 0x12, 0x7C], // A
    [0x7F, 0x49, 0x49, 0x49, 0x36], // B
    [0x3E, 0x41, 0x41, 0x41, 0x22], // C
    [0x7F, 0x41, 0x41, 0x41, 0x3E], // D
    [0x7F, 0x49, 0x49, 0x49, 0x41], // E
    [0x7F, 0x09, 0x09, 0x09, 0x01], // F
    [0x3E, 0x41, 0x41, 0x51, 0x73], // G
    [0x7F, 0x08, 0x08, 0x08, 0x7F], // H
    [0x00, 0x41, 0x7F, 0x41, 0x00], // I
    [0x20, 0x40, 0x41, 0x3F, 0x01], // J
    [0x7F, 0x08, 0x14, 0x22, 0x41], // K
    [0x7F, 0x40, 0x40, 0x40, 0x40], // L
    [0x7F, 0x02, 0x1C, 0x02, 0x7F], // M
    [0x7F, 0x04, 0x08, 0x10, 0x7F], // N
    [0x3E, 0x41, 0x41, 0x41, 0x3E], // O
    [0x7F, 0x09, 0x09, 0x09, 0x06], // P
    [0x3E, 0x41, 0x51, 0x21, 0x5E], // Q
    [0x7F, 0x09, 0x19, 0x29, 0x46], // R
    [0x26, 0x49, 0x49, 0x49, 0x32], // S
    [0x03, 0x01, 0x7F, 0x01, 0x03], // T
    [0x3F, 0x40, 0x40, 0x40, 0x3F], // U
    [0x1F, 0x20, 0x40, 0x20, 0x1F], // V
    [0x3F, 0x40, 0x38, 0x40, 0x3F], // W
    [0x63, 0x14, 0x08, 0x14, 0x63], // X
    [0x03, 0x04, 0x78, 0x04, 0x03], // Y
    [0x61, 0x59, 0x49, 0x4D, 0x43], // Z
    [0x00, 0x7F, 0x41, 0x41, 0x41], // [
    [0x02, 0x04, 0x08, 0x10, 0x20], // backslash
    [0x00, 0x41, 0x41, 0x41, 0x7F], // ]
    [0x04, 0x02, 0x01, 0x02, 0x04], // ^
    [0x40, 0x40, 0x40, 0x40, 0x40], // _
    [0x00, 0x03, 0x07, 0x08, 0x00], // `
    [0x20, 0x54, 0x54, 0x78, 0x40], // a
    [0x7F, 0x28, 0x44, 0x44, 0x38], // b
    [0x38, 0x44, 0x44, 0x44, 0x28], // c
    [0x38, 0x44, 0x44, 0x28, 0x7F], // d
    [0x38, 0x54, 0x54, 0x54, 0x18], // e
    [0x00, 0x08, 0x7E, 0x09, 0x02], // f
    [0x18, 0xA4, 0xA4, 0x9C, 0x78], // g
    [0x7F, 0x08, 0x04, 0x04, 0x78], // h
    [0x00, 0x44, 0x7D, 0x40, 0x00], // i
    [0x20, 0x40, 0x40, 0x3D, 0x00], // j
    [0x7F, 0x10, 0x28, 0x44, 0x00], // k
    [0x00, 0x41, 0x7F, 0x40, 0x00], // l
    [0x7C, 0x04, 0x78, 0x04, 0x78], // m
    [0x7C, 0x08, 0x04, 0x04, 0x78], // n
    [0x38, 0x44, 0x44, 0x44, 0x38], // o
    [0xFC, 0x18, 0x24, 0x24, 0x18], // p
    [0x18, 0x24, 0x24, 0x18, 0xFC], // q
    [0x7C, 0x08, 0x04, 0x04, 0x08], // r
    [0x48, 0x54, 0x54, 0x54, 0x24], // s
    [0x04, 0x04, 0x3F, 0x44, 0x24], // t
    [0x3C, 0x40, 0x40, 0x20, 0x7C], // u
    [0x1C, 0x20, 0x40, 0x20, 0x1C], // v
    [0x3C, 0x40, 0x30, 0x40, 0x3C], // w
    [0x44, 0x28, 0x10, 0x28, 0x44], // x
    [0x4C, 0x90, 0x90, 0x90, 0x7C], // y
    [0x44, 0x64, 0x54, 0x4C, 0x44], // z
    [0x00, 0x08, 0x36, 0x41, 0x00], // {
    [0x00, 0x00, 0x77, 0x00, 0x00], // |
    [0x00, 0x41, 0x36, 0x08, 0x00], // }
    [0x02, 0x01, 0x02, 0x04, 0x02], // ~
];

/// The column bytes of `c`, '?' for anything not printable ASCII.
fn glyph(c: char) -> &'static [u8; 5] {
    let code = c as u32;
    if (0x20..=0x7E).contains(&code) {
        &FONT[(code - 0x20) as usize]
    } else {
        &FONT[(b'?' - 0x20) as usize]
    }
}

/// A distinct, saturated colour for class `class`: hues spread by the golden
/// angle so neighbouring class indices never look alike, for any class count.
pub fn class_color(class: u32) -> [u8; 3] {
    let hue = (class as f32 * 0.618_034).fract() * 6.0;
    let (value, saturation) = (0.95f32, 0.85f32);
    let sector = hue.floor();
    let f = hue - sector;
    let p = value * (1.0 - saturation);
    let q = value * (1.0 - saturation * f);
    let t = value * (1.0 - saturation * (1.0 - f));
    let (r, g, b) = match sector as u32 {
        0 => (value, t, p),
        1 => (q, value, p),
        2 => (p, value, t),
        3 => (p, q, value),
        4 => (t, p, value),
        _ => (value, p, q),
    };
    [(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8]
}

/// The colour of the `index`-th instance's mask: the hues of
/// [`class_color`] by instance, 40% towards white (as PaddleDetection's
/// `draw_mask` lightens its colour map) so that a mask stands apart from
/// the saturated box and label colours.
pub fn instance_color(index: usize) -> [u8; 3] {
    class_color(index as u32).map(|c| (c as f32 * 0.6 + 255.0 * 0.4).round() as u8)
}

/// How much of a mask's colour covers the picture under it.
pub const MASK_ALPHA: f32 = 0.5;

/// Blends `color` at `alpha` over every pixel `mask` covers (an RLE of the
/// image's own size; a mask of another size is drawn where the two
/// overlap).
pub fn blend_mask(img: &mut RgbImage, mask: &Rle, color: [u8; 3], alpha: f32) {
    let pixels = mask.decode();
    let mask_width = mask.width() as usize;
    let width = img.width.min(mask.width()) as usize;
    let height = img.height.min(mask.height()) as usize;
    let stride = img.width as usize * 3;
    for y in 0..height {
        for x in (0..width).filter(|&x| pixels[y * mask_width + x] != 0) {
            let pixel = &mut img.data[y * stride + x * 3..][..3];
            for (p, &c) in pixel.iter_mut().zip(&color) {
                *p = (*p as f32 * (1.0 - alpha) + c as f32 * alpha).round() as u8;
            }
        }
    }
}

/// Black or white, whichever reads better on `background`.
pub fn text_color_on(background: [u8; 3]) -> [u8; 3] {
    let luma =
        0.299 * background[0] as f32 + 0.587 * background[1] as f32 + 0.114 * background[2] as f32;
    if luma > 140.0 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

/// Fills the pixels with `x0 <= x < x1`, `y0 <= y < y1` (clipped to the image).
pub fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, color: [u8; 3]) {
    let x0 = x0.clamp(0, img.width as i64) as usize;
    let x1 = x1.clamp(0, img.width as i64) as usize;
    let y0 = y0.clamp(0, img.height as i64) as usize;
    let y1 = y1.clamp(0, img.height as i64) as usize;
    let stride = img.width as usize * 3;
    for y in y0..y1 {
        for x in x0..x1 {
            img.data[y * stride + x * 3..y * stride + x * 3 + 3].copy_from_slice(&color);
        }
    }
}

/// A box coordinate as a pixel index, bounded so that adding a thickness can
/// never overflow (a detector can output anything, NaN included).
fn to_pixel(v: f32) -> i64 {
    if v.is_finite() {
        v.clamp(-1e7, 1e7).round() as i64
    } else {
        0
    }
}

/// Outlines the box with corners `[x1, y1, x2, y2]` (pixels), the lines
/// `thickness` pixels wide and growing inwards so the box keeps its extent.
pub fn draw_box(img: &mut RgbImage, bbox: [f32; 4], thickness: u32, color: [u8; 3]) {
    let [x0, y0, x1, y1] = bbox.map(to_pixel);
    let t = thickness.max(1) as i64;
    fill_rect(img, x0, y0, x1, y0 + t, color); // top
    fill_rect(img, x0, y1 - t, x1, y1, color); // bottom
    fill_rect(img, x0, y0, x0 + t, y1, color); // left
    fill_rect(img, x1 - t, y0, x1, y1, color); // right
}

/// Width and height in pixels of `text` drawn at `scale`.
pub fn text_size(text: &str, scale: u32) -> (u32, u32) {
    let chars = text.chars().count() as u32;
    let width = if chars == 0 { 0 } else { chars * ADVANCE - 1 };
    (width * scale, GLYPH_HEIGHT * scale)
}

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel a
/// `scale` x `scale` square. Only the glyph pixels are painted.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: [u8; 3]) {
    let s = scale.max(1) as i64;
    for (i, c) in text.chars().enumerate() {
        let left = x + i as i64 * ADVANCE as i64 * s;
        for (col, bits) in glyph(c).iter().enumerate() {
            for row in 0..GLYPH_HEIGHT as i64 {
                if bits >> row & 1 == 1 {
                    let px = left + col as i64 * s;
                    let py = y + row * s;
                    fill_rect(img, px, py, px + s, py + s, color);
                }
            }
        }
    }
}

/// A detection to draw: its box `[x1, y1, x2, y2]` in pixels, its class (for
/// the colour), its label ("class score"; empty for none) and, from a model
/// with masks, its mask in the image's pixels.
pub struct Detection {
    pub bbox: [f32; 4],
    pub class: u32,
    pub label: String,
    pub mask: Option<Rle>,
}

/// A label's background, the pixels `x0 <= x < x1`, `y0 <= y < y1`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Rect {
    fn overlaps(&self, other: &Rect) -> bool {
        self.x0 < other.x1 && other.x0 < self.x1 && self.y0 < other.y1 && other.y0 < self.y1
    }
}

/// Where a `width` x `height` label of the box `[x1, y1, x2, y2]` goes: at
/// the box's left edge, moved left as far as needed to end inside the image,
/// and at the first of these heights that lies inside the image and overlaps
/// no label in `placed`: above the box, inside its top, further down inside
/// it a label height at a time, below it. When all of them overlap (a
/// crowded picture), the first inside the image.
fn place_label(
    bbox: [i64; 4],
    width: i64,
    height: i64,
    image: (u32, u32),
    placed: &[Rect],
) -> Rect {
    let (image_width, image_height) = (image.0 as i64, image.1 as i64);
    let x0 = bbox[0].min(image_width - width).max(0);
    let top = bbox[1].clamp(0, image_height);
    let bottom = bbox[3].clamp(top, image_height);
    let at = |y0: i64| Rect {
        x0,
        y0,
        x1: x0 + width,
        y1: y0 + height,
    };
    let inside_box = (top..bottom - height).step_by(height.max(1) as usize);
    let inside_image: Vec<Rect> = std::iter::once(top - height)
        .chain(inside_box)
        .chain(std::iter::once(bottom))
        .filter(|&y| y >= 0 && y + height <= image_height)
        .map(at)
        .collect();
    inside_image
        .iter()
        .find(|r| !placed.iter().any(|p| p.overlaps(r)))
        .or(inside_image.first())
        .copied()
        // A label taller than the picture: from its top edge.
        .unwrap_or_else(|| at(0))
}

/// Detections as `infer` shows them: each mask translucent in its
/// instance's colour, then over them each box in its class colour, then
/// each label on a filled background of the same colour, placed by
/// [`place_label`] in the order given (the first detections get the best
/// places), so that labels stay inside the picture and do not cover one
/// another.
pub fn draw_detections(img: &mut RgbImage, detections: &[Detection]) {
    // Lines and text grow with the picture so they stay readable on big photos.
    let short_side = img.width.min(img.height);
    let thickness = (short_side / 300).max(2);
    let scale = (short_side / 400).max(1);
    for (i, d) in detections.iter().enumerate() {
        if let Some(mask) = &d.mask {
            blend_mask(img, mask, instance_color(i), MASK_ALPHA);
        }
    }
    for d in detections {
        draw_box(img, d.bbox, thickness, class_color(d.class));
    }
    let pad = scale as i64;
    let mut placed = Vec::with_capacity(detections.len());
    for d in detections.iter().filter(|d| !d.label.is_empty()) {
        let (tw, th) = text_size(&d.label, scale);
        let (width, height) = (tw as i64 + 2 * pad, th as i64 + 2 * pad);
        let bbox = d.bbox.map(to_pixel);
        let rect = place_label(bbox, width, height, (img.width, img.height), &placed);
        let color = class_color(d.class);
        fill_rect(img, rect.x0, rect.y0, rect.x1, rect.y1, color);
        draw_text(
            img,
            rect.x0 + pad,
            rect.y0 + pad,
            &d.label,
            scale,
            text_color_on(color),
        );
        placed.push(rect);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLACK: [u8; 3] = [0, 0, 0];
    const RED: [u8; 3] = [255, 0, 0];

    fn painted(img: &RgbImage) -> Vec<(u32, u32)> {
        let mut out = vec![];
        for y in 0..img.height {
            for x in 0..img.width {
                if img.pixel(x, y) != BLACK {
                    out.push((x, y));
                }
            }
        }
        out
    }

    #[test]
    fn box_outline_has_the_given_thickness() {
        let mut img = RgbImage::filled(20, 20, BLACK);
        draw_box(&mut img, [2.0, 3.0, 12.0, 10.0], 2, RED);
        // Outline of 10x7 with 2-pixel lines: all minus the 6x3 hole inside.
        assert_eq!(painted(&img).len(), 10 * 7 - 6 * 3);
        assert_eq!(img.pixel(2, 3), RED);
        assert_eq!(img.pixel(11, 9), RED);
        assert_eq!(img.pixel(4, 5), BLACK);
        assert_eq!(img.pixel(12, 10), BLACK);
    }

    #[test]
    fn boxes_outside_the_image_are_clipped() {
        let mut img = RgbImage::filled(10, 10, BLACK);
        draw_box(&mut img, [-5.0, -5.0, 30.0, 30.0], 1, RED);
        assert!(painted(&img).is_empty());
        draw_box(&mut img, [f32::NAN, 5.0, 1e30, -1e30], 3, RED);
        draw_box(&mut img, [-5.0, 2.0, 4.0, 30.0], 1, RED);
        assert_eq!(img.pixel(3, 5), RED);
        assert_eq!(img.pixel(0, 2), RED);
    }

    #[test]
    fn text_draws_the_font_bitmap() {
        let mut img = RgbImage::filled(12, 8, BLACK);
        draw_text(&mut img, 0, 0, "I1", 1, RED);
        // 'I' is columns 0x41 0x7F 0x41 at x = 1..=3: top and bottom bars and a stem.
        let i_pixels = [
            (1, 0),
            (2, 0),
            (3, 0),
            (2, 1),
            (2, 2),
            (2, 3),
            (2, 4),
            (2, 5),
            (1, 6),
            (2, 6),
            (3, 6),
        ];
        // '1' is columns 0x42 0x7F 0x40 at x = 7..=9.
        let one_pixels = [
            (7, 1),
            (8, 0),
            (8, 1),
            (8, 2),
            (8, 3),
            (8, 4),
            (8, 5),
            (8, 6),
            (7, 6),
            (9, 6),
        ];
        let mut want: Vec<(u32, u32)> = i_pixels.iter().chain(&one_pixels).copied().collect();
        want.sort_by_key(|&(x, y)| (y, x));
        assert_eq!(painted(&img), want);
        assert_eq!(text_size("I1", 1), (11, 8));
        assert_eq!(text_size("I1", 3), (33, 24));
    }

    #[test]
    fn non_ascii_is_drawn_as_question_mark() {
        let mut a = RgbImage::filled(6, 8, BLACK);
        let mut b = a.clone();
        draw_text(&mut a, 0, 0, "é", 1, RED);
        draw_text(&mut b, 0, 0, "?", 1, RED);
        assert_eq!(a, b);
        assert!(!painted(&a).is_empty());
    }

    #[test]
    fn class_colors_differ() {
        let colors: Vec<[u8; 3]> = (0..20).map(class_color).collect();
        for i in 0..colors.len() {
            for j in i + 1..colors.len() {
                let d: i32 = (0..3)
                    .map(|c| (colors[i][c] as i32 - colors[j][c] as i32).abs())
                    .sum();
                assert!(
                    d > 20,
                    "classes {i} and {j}: {:?} {:?}",
                    colors[i],
                    colors[j]
                );
            }
        }
    }

    fn detection(bbox: [f32; 4], class: u32, label: &str) -> Detection {
        Detection {
            bbox,
            class,
            label: label.to_string(),
            mask: None,
        }
    }

    /// Each mask is blended at half strength in its instance's colour, two
    /// instances of one class apart; the box outline is drawn over it and
    /// pixels outside every mask keep their colour.
    #[test]
    fn masks_are_translucent_in_instance_colours_under_their_boxes() {
        let (w, h) = (40u32, 30u32);
        let grey = [100, 100, 100];
        // Row-major: a block at x 5..15, y 5..15 and one at x 20..30, y 10..20.
        let block = |x0: u32, y0: u32| {
            let mut m = vec![0u8; (w * h) as usize];
            for y in y0..y0 + 10 {
                for x in x0..x0 + 10 {
                    m[(y * w + x) as usize] = 1;
                }
            }
            Rle::encode(&m, h, w).unwrap()
        };
        let mut img = RgbImage::filled(w, h, grey);
        let mut first = detection([5.0, 5.0, 15.0, 15.0], 2, "");
        first.mask = Some(block(5, 5));
        let mut second = detection([20.0, 10.0, 30.0, 20.0], 2, "");
        second.mask = Some(block(20, 10));
        draw_detections(&mut img, &[first, second]);
        let blended = |c: [u8; 3]| c.map(|c| ((100.0 + c as f32) / 2.0).round() as u8);
        assert_eq!(img.pixel(10, 10), blended(instance_color(0)));
        assert_eq!(img.pixel(25, 15), blended(instance_color(1)));
        assert_ne!(img.pixel(10, 10), img.pixel(25, 15));
        // The outline (2 pixels, inwards) is the class colour, over the mask.
        assert_eq!(img.pixel(5, 5), class_color(2));
        assert_eq!(img.pixel(21, 12), class_color(2));
        assert_eq!(img.pixel(0, 0), grey);
        assert_eq!(img.pixel(17, 10), grey);
    }

    #[test]
    fn a_mask_of_another_size_is_drawn_where_it_overlaps() {
        let mut img = RgbImage::filled(4, 3, BLACK);
        let full = Rle::encode(&[1; 6 * 5], 5, 6).unwrap();
        blend_mask(&mut img, &full, [200, 100, 0], 1.0);
        assert!((0..3).all(|y| (0..4).all(|x| img.pixel(x, y) == [200, 100, 0])));
        let mut big = RgbImage::filled(6, 5, BLACK);
        let small = Rle::encode(&[1; 2 * 2], 2, 2).unwrap();
        blend_mask(&mut big, &small, RED, 1.0);
        assert_eq!(painted(&big), vec![(0, 0), (1, 0), (0, 1), (1, 1)]);
    }

    #[test]
    fn label_sits_above_the_box_or_inside_at_the_top() {
        let mut img = RgbImage::filled(100, 60, BLACK);
        draw_detections(
            &mut img,
            &[detection([10.0, 30.0, 60.0, 55.0], 3, "cat 0.9")],
        );
        let color = class_color(3);
        // Label background (8 + 2 rows high) directly above the box.
        assert_eq!(img.pixel(10, 20), color);
        assert_eq!(img.pixel(10, 19), BLACK);
        let mut top = RgbImage::filled(100, 60, BLACK);
        draw_detections(&mut top, &[detection([10.0, 2.0, 60.0, 55.0], 3, "cat")]);
        assert_eq!(top.pixel(10, 11), color);
        assert_eq!(top.pixel(10, 1), BLACK);
    }

    #[test]
    fn a_label_at_the_right_edge_moves_left_to_stay_whole() {
        // "blue_triangle 0.93" is 18 * 6 - 1 + 2 = 109 pixels wide with padding.
        let mut img = RgbImage::filled(200, 100, BLACK);
        let label = "blue_triangle 0.93";
        draw_detections(&mut img, &[detection([150.0, 40.0, 199.0, 90.0], 1, label)]);
        let color = class_color(1);
        let width = text_size(label, 1).0 + 2;
        // The background ends at the image's last column and starts `width` before.
        assert_eq!(img.pixel(199, 30), color);
        assert_eq!(img.pixel(200 - width, 30), color);
        assert_eq!(img.pixel(200 - width - 1, 30), BLACK);
        // All of the text is there: the same label drawn alone on a wide canvas.
        let mut alone = RgbImage::filled(width, 10, color);
        draw_text(&mut alone, 1, 1, label, 1, text_color_on(color));
        for y in 0..10 {
            for x in 0..width {
                assert_eq!(
                    img.pixel(200 - width + x, 30 + y),
                    alone.pixel(x, y),
                    "({x}, {y})"
                );
            }
        }
    }

    #[test]
    fn labels_of_neighbouring_boxes_do_not_overlap() {
        // Three boxes side by side with the same top: each label is wider than
        // the gap to the next box, so they would cover each other at one height.
        let boxes = [
            [10.0, 40.0, 40.0, 120.0],
            [30.0, 42.0, 60.0, 120.0],
            [50.0, 38.0, 80.0, 120.0],
        ];
        let (w, h) = (text_size("circle 0.99", 1).0 as i64 + 2, 10);
        let mut placed: Vec<Rect> = Vec::new();
        for b in boxes {
            let rect = place_label(b.map(to_pixel), w, h, (100, 130), &placed);
            assert!(rect.x0 >= 0 && rect.x1 <= 100 && rect.y0 >= 0 && rect.y1 <= 130);
            assert!(
                !placed.iter().any(|p| p.overlaps(&rect)),
                "{rect:?} {placed:?}"
            );
            placed.push(rect);
        }
        // The first keeps its place above its box; the others move down.
        assert_eq!(placed[0].y1, 40);
        assert!(placed[1].y0 >= placed[0].y1 && placed[2].y0 >= placed[1].y1);

        // The same through drawing: the second label's background is there,
        // below the first one's.
        let mut img = RgbImage::filled(100, 130, BLACK);
        let detections: Vec<Detection> = boxes
            .iter()
            .enumerate()
            .map(|(i, b)| detection(*b, i as u32, "circle 0.99"))
            .collect();
        draw_detections(&mut img, &detections);
        assert_eq!(img.pixel(placed[0].x0 as u32, 30), class_color(0));
        let second = placed[1];
        assert_eq!(
            img.pixel(second.x0 as u32, second.y0 as u32),
            class_color(1)
        );
    }

    #[test]
    fn labels_stay_inside_for_any_box() {
        let (w, h) = (40, 10);
        for bbox in [
            [-50, -50, 500, 500],
            [95, 95, 120, 120],
            [0, 0, 0, 0],
            [60, 10, 20, 5],
        ] {
            let rect = place_label(bbox, w, h, (100, 100), &[]);
            assert!(rect.x0 >= 0 && rect.x1 <= 100, "{bbox:?} {rect:?}");
            assert!(rect.y0 >= 0 && rect.y1 <= 100, "{bbox:?} {rect:?}");
        }
    }
}
