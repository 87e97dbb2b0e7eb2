//! YOLOv3 box decoding (Paddle's `yolo_box`) and the objectness ignore mask of
//! its loss. One thread per (image, anchor, cell): the grid offset comes from
//! the thread index and the level's three anchors are kernel arguments, so
//! no anchor or grid tensor exists.
//!
//! Head layout: `[N, 3 * (5 + classes), grid_h, grid_w]`, per anchor the
//! channels tx, ty, tw, th, objectness, class logits.
use crate::{grid_stride, kernel, math};

/// Anchors of one level (pixels of the network input), picked by index.
#[derive(Clone, Copy)]
pub struct LevelAnchors(pub [f32; 6]);

impl LevelAnchors {
    #[inline(always)]
    fn get(&self, a: u32) -> (f32, f32) {
        // No array indexing on the device (it would bring a panic path).
        let [w0, h0, w1, h1, w2, h2] = self.0;
        match a {
            0 => (w0, h0),
            1 => (w1, h1),
            _ => (w2, h2),
        }
    }
}

/// One head cell: its coordinates and the raw channel values around it.
struct Cell {
    n: u32,
    a: u32,
    gy: u32,
    gx: u32,
    /// Index of the cell's tx; the next channels are `plane` apart.
    base: usize,
    plane: usize,
}

#[inline(always)]
fn cell(i: u32, classes: u32, grid_h: u32, grid_w: u32) -> Cell {
    let plane = grid_h * grid_w;
    let (na, p) = (i / plane, i % plane);
    let (n, a) = (na / 3, na % 3);
    let channel0 = (n * 3 + a) * (5 + classes);
    Cell {
        n,
        a,
        gy: p / grid_w,
        gx: p % grid_w,
        base: (channel0 * plane + p) as usize,
        plane: plane as usize,
    }
}

/// Decoded box centre and size, as fractions of the network input.
#[inline(always)]
unsafe fn decode(
    x: *const f32,
    c: &Cell,
    anchors: LevelAnchors,
    grid_h: u32,
    grid_w: u32,
    downsample: u32,
    scale_x_y: f32,
) -> [f32; 4] {
    let bias = -0.5 * (scale_x_y - 1.0);
    let (aw, ah) = anchors.get(c.a);
    let cx = (c.gx as f32 + math::sigmoid(*x.add(c.base)) * scale_x_y + bias) / grid_w as f32;
    let cy =
        (c.gy as f32 + math::sigmoid(*x.add(c.base + c.plane)) * scale_x_y + bias) / grid_h as f32;
    let w = math::exp(*x.add(c.base + 2 * c.plane)) * aw / (downsample * grid_w) as f32;
    let h = math::exp(*x.add(c.base + 3 * c.plane)) * ah / (downsample * grid_h) as f32;
    [cx, cy, w, h]
}

kernel! {
    /// Paddle `yolo_box`: `boxes [N, 3*H*W, 4]` as x1,y1,x2,y2 in image pixels
    /// (`image_size [N, 2]` = height, width), clipped to the image when `clip`
    /// is non-zero; `scores [N, 3*H*W, classes]` = objectness x class
    /// probability, all zero (box too) where objectness < `conf_thresh`.
    pub fn yolo_decode(ctx, x: *const f32, image_size: *const f32, boxes: *mut f32, scores: *mut f32,
        batch: u32, classes: u32, grid_h: u32, grid_w: u32, downsample: u32,
        a0w: f32, a0h: f32, a1w: f32, a1h: f32, a2w: f32, a2h: f32,
        conf_thresh: f32, scale_x_y: f32, clip: u32) {
        let anchors = LevelAnchors([a0w, a0h, a1w, a1h, a2w, a2h]);
        grid_stride(ctx, batch * 3 * grid_h * grid_w, |i| {
            let c = cell(i as u32, classes, grid_h, grid_w);
            let out_box = boxes.add(i * 4);
            let out_scores = scores.add(i * classes as usize);
            let conf = math::sigmoid(*x.add(c.base + 4 * c.plane));
            if conf < conf_thresh {
                let mut k = 0;
                while k < 4 { *out_box.add(k) = 0.0; k += 1; }
                let mut k = 0;
                while k < classes as usize { *out_scores.add(k) = 0.0; k += 1; }
                return;
            }
            let img_h = *image_size.add(2 * c.n as usize);
            let img_w = *image_size.add(2 * c.n as usize + 1);
            let [cx, cy, w, h] = decode(x, &c, anchors, grid_h, grid_w, downsample, scale_x_y);
            let (mut x1, mut y1) = ((cx - w / 2.0) * img_w, (cy - h / 2.0) * img_h);
            let (mut x2, mut y2) = ((cx + w / 2.0) * img_w, (cy + h / 2.0) * img_h);
            if clip != 0 {
                x1 = x1.max(0.0);
                y1 = y1.max(0.0);
                x2 = x2.min(img_w - 1.0);
                y2 = y2.min(img_h - 1.0);
            }
            *out_box = x1;
            *out_box.add(1) = y1;
            *out_box.add(2) = x2;
            *out_box.add(3) = y2;
            let mut k = 0;
            while k < classes as usize {
                *out_scores.add(k) = conf * math::sigmoid(*x.add(c.base + (5 + k) * c.plane));
                k += 1;
            }
        });
    }
}

/// IoU of two centre-size boxes.
#[inline(always)]
fn iou_cxcywh(a: [f32; 4], b: [f32; 4]) -> f32 {
    let ix =
        (a[0] + a[2] / 2.0).min(b[0] + b[2] / 2.0) - (a[0] - a[2] / 2.0).max(b[0] - b[2] / 2.0);
    let iy =
        (a[1] + a[3] / 2.0).min(b[1] + b[3] / 2.0) - (a[1] - a[3] / 2.0).max(b[1] - b[3] / 2.0);
    let inter = ix.max(0.0) * iy.max(0.0);
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

kernel! {
    /// YOLOv3 loss: `negative [N, 3, H, W]` = 1 where the decoded prediction's
    /// best IoU with the image's ground truth (`gt [N, max_boxes, 4]`,
    /// normalised cx, cy, w, h; boxes with w or h < 1e-6 are padding) is at
    /// most `ignore_thresh`, else 0 (ignored in the objectness loss).
    pub fn yolo_ignore_mask(ctx, x: *const f32, gt: *const f32, negative: *mut f32,
        batch: u32, classes: u32, grid_h: u32, grid_w: u32, downsample: u32, max_boxes: u32,
        a0w: f32, a0h: f32, a1w: f32, a1h: f32, a2w: f32, a2h: f32,
        ignore_thresh: f32, scale_x_y: f32) {
        let anchors = LevelAnchors([a0w, a0h, a1w, a1h, a2w, a2h]);
        grid_stride(ctx, batch * 3 * grid_h * grid_w, |i| {
            let c = cell(i as u32, classes, grid_h, grid_w);
            let pred = decode(x, &c, anchors, grid_h, grid_w, downsample, scale_x_y);
            let mut best = 0.0f32;
            let mut b = 0;
            while b < max_boxes {
                let g = gt.add(((c.n * max_boxes + b) * 4) as usize);
                let truth = [*g, *g.add(1), *g.add(2), *g.add(3)];
                if truth[2] >= 1e-6 && truth[3] >= 1e-6 {
                    best = best.max(iou_cxcywh(pred, truth));
                }
                b += 1;
            }
            *negative.add(i) = if best > ignore_thresh { 0.0 } else { 1.0 };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    const ANCHORS: [f32; 6] = [116.0, 90.0, 156.0, 198.0, 373.0, 326.0];

    /// Direct transcription of Paddle's yolo_box CPU kernel loops.
    #[allow(clippy::too_many_arguments)]
    fn paddle_yolo_box(
        x: &[f32],
        img: &[f32],
        n: usize,
        classes: usize,
        gh: usize,
        gw: usize,
        ds: usize,
        conf: f32,
        s: f32,
        clip: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        let stride = gh * gw;
        let box_num = 3 * stride;
        let (mut boxes, mut scores) =
            (vec![0.0; n * box_num * 4], vec![0.0; n * box_num * classes]);
        let at = |i: usize, j: usize, ch: usize, k: usize, l: usize| {
            x[((i * 3 + j) * (5 + classes) + ch) * stride + k * gw + l]
        };
        for i in 0..n {
            let (ih, iw) = (img[2 * i], img[2 * i + 1]);
            for j in 0..3 {
                for k in 0..gh {
                    for l in 0..gw {
                        let obj = sig(at(i, j, 4, k, l));
                        if obj < conf {
                            continue;
                        }
                        let bias = -0.5 * (s - 1.0);
                        let cx = (l as f32 + sig(at(i, j, 0, k, l)) * s + bias) * iw / gw as f32;
                        let cy = (k as f32 + sig(at(i, j, 1, k, l)) * s + bias) * ih / gh as f32;
                        let w = at(i, j, 2, k, l).exp() * ANCHORS[2 * j] * iw / (ds * gw) as f32;
                        let h =
                            at(i, j, 3, k, l).exp() * ANCHORS[2 * j + 1] * ih / (ds * gh) as f32;
                        let mut bx = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
                        if clip {
                            bx = [
                                bx[0].max(0.0),
                                bx[1].max(0.0),
                                bx[2].min(iw - 1.0),
                                bx[3].min(ih - 1.0),
                            ];
                        }
                        let idx = i * box_num + j * stride + k * gw + l;
                        boxes[idx * 4..idx * 4 + 4].copy_from_slice(&bx);
                        for c in 0..classes {
                            scores[idx * classes + c] = obj * sig(at(i, j, 5 + c, k, l));
                        }
                    }
                }
            }
        }
        (boxes, scores)
    }

    proptest! {
        #[test]
        fn decode_matches_paddle_yolo_box(n in 1usize..3, classes in 1usize..4, gh in 1usize..6, gw in 1usize..6,
            conf in 0.0f32..0.6, s in prop_oneof![Just(1.0f32), 1.0f32..1.2], clip: bool, seed in 0u32..1000) {
            let len = n * 3 * (5 + classes) * gh * gw;
            let x: Vec<f32> = (0..len).map(|i| (((i as u32 * 7919 + seed) % 601) as f32) / 150.0 - 2.0).collect();
            let img: Vec<f32> = (0..n).flat_map(|i| [300.0 + i as f32 * 20.0, 400.0 - i as f32 * 10.0]).collect();
            let (xb, ib) = (DeviceBuf::new(&x), DeviceBuf::new(&img));
            let boxes = DeviceBuf::filled(n * 3 * gh * gw * 4, f32::NAN);
            let scores = DeviceBuf::filled(n * 3 * gh * gw * classes, f32::NAN);
            let a = ANCHORS;
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                yolo_decode(c, xb.ptr(), ib.ptr(), boxes.ptr(), scores.ptr(), n as u32, classes as u32, gh as u32, gw as u32, 32,
                    a[0], a[1], a[2], a[3], a[4], a[5], conf, s, clip as u32)
            });
            let (want_boxes, want_scores) = paddle_yolo_box(&x, &img, n, classes, gh, gw, 32, conf, s, clip);
            for (g, w) in boxes.to_vec().iter().zip(&want_boxes) { prop_assert!((g - w).abs() < 1e-3 * (1.0 + w.abs()), "{} vs {}", g, w); }
            for (g, w) in scores.to_vec().iter().zip(&want_scores) { prop_assert!((g - w).abs() < 1e-6); }
        }

        #[test]
        fn ignore_mask_marks_predictions_overlapping_truth(gh in 1usize..5, gw in 1usize..5, thresh in 0.1f32..0.9, seed in 0u32..1000) {
            let classes = 2;
            let len = 3 * (5 + classes) * gh * gw;
            let x: Vec<f32> = (0..len).map(|i| (((i as u32 * 7919 + seed) % 401) as f32) / 100.0 - 2.0).collect();
            // Two real boxes and one padding row.
            let gt = [0.5f32, 0.5, 0.6, 0.4, 0.2, 0.3, 0.3, 0.5, 0.0, 0.0, 0.0, 0.0];
            let (xb, gb) = (DeviceBuf::new(&x), DeviceBuf::new(&gt));
            let neg = DeviceBuf::filled(3 * gh * gw, f32::NAN);
            let a = ANCHORS;
            launch_independent(Dim3::x(1), Dim3::x(16), |c| unsafe {
                yolo_ignore_mask(c, xb.ptr(), gb.ptr(), neg.ptr(), 1, classes as u32, gh as u32, gw as u32, 32, 3,
                    a[0], a[1], a[2], a[3], a[4], a[5], thresh, 1.0)
            });
            let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
            let stride = gh * gw;
            for j in 0..3 { for k in 0..gh { for l in 0..gw {
                let at = |ch: usize| x[(j * (5 + classes) + ch) * stride + k * gw + l];
                let pred = [(l as f32 + sig(at(0))) / gw as f32, (k as f32 + sig(at(1))) / gh as f32,
                    at(2).exp() * a[2 * j] / (32 * gw) as f32, at(3).exp() * a[2 * j + 1] / (32 * gh) as f32];
                let corners = |b: [f32; 4]| (b[0] - b[2] / 2.0, b[1] - b[3] / 2.0, b[0] + b[2] / 2.0, b[1] + b[3] / 2.0);
                let best = gt.chunks(4).take(2).map(|t| {
                    let (p, q) = (corners(pred), corners([t[0], t[1], t[2], t[3]]));
                    let inter = (p.2.min(q.2) - p.0.max(q.0)).max(0.0) * (p.3.min(q.3) - p.1.max(q.1)).max(0.0);
                    inter / (pred[2] * pred[3] + t[2] * t[3] - inter)
                }).fold(0.0f32, f32::max);
                prop_assume!((best - thresh).abs() > 1e-4);
                prop_assert_eq!(neg.to_vec()[j * stride + k * gw + l], if best > thresh { 0.0 } else { 1.0 });
            } } }
        }
    }
}
