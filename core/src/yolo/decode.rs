//! Paddle's `yolo_box`: one level's raw output to boxes in image pixels and
//! per-class scores (objectness x class probability), predictions below
//! `conf_thresh` objectness left as zeros.

use super::nms::{multiclass_nms, Detection, NmsConfig};
use super::{sigmoid, Head, YoloConfig};

#[derive(Debug, Clone, PartialEq)]
pub struct DecodeConfig {
    /// This level's anchors (the masked ones), width and height in input pixels.
    pub anchors: Vec<[f32; 2]>,
    pub num_classes: usize,
    pub conf_thresh: f32,
    /// Input pixels per grid cell.
    pub downsample_ratio: usize,
    /// Clip boxes to `[0, W-1] x [0, H-1]` of the image.
    pub clip_bbox: bool,
    pub scale_x_y: f32,
}

/// Decoded boxes of a batch, `M = anchors x height x width` per image in the
/// order anchor, row, column.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBoxes {
    pub boxes_per_image: usize,
    /// `[N, M, 4]`: x1, y1, x2, y2 in image pixels.
    pub boxes: Vec<f32>,
    /// `[N, M, classes]`.
    pub scores: Vec<f32>,
}

/// Decodes `input` (`[N, anchors*(5+classes), height, width]`); `image_sizes`
/// holds each image's (height, width) in pixels, as Paddle's `ImgSize`.
pub fn yolo_box(
    cfg: &DecodeConfig,
    input: &[f32],
    height: usize,
    width: usize,
    image_sizes: &[[u32; 2]],
) -> DecodedBoxes {
    let batch = image_sizes.len();
    let classes = cfg.num_classes;
    let anchors = cfg.anchors.len();
    let stride = height * width;
    let anchor_stride = (5 + classes) * stride;
    let per_image = anchors * stride;
    assert_eq!(
        input.len(),
        batch * anchors * anchor_stride,
        "yolo_box input shape"
    );
    let input_h = (cfg.downsample_ratio * height) as f32;
    let input_w = (cfg.downsample_ratio * width) as f32;
    let scale = cfg.scale_x_y;
    let bias = -0.5 * (scale - 1.0);

    let mut boxes = vec![0.0f32; batch * per_image * 4];
    let mut scores = vec![0.0f32; batch * per_image * classes];
    for (i, &[image_h, image_w]) in image_sizes.iter().enumerate() {
        let (image_h, image_w) = (image_h as f32, image_w as f32);
        let x = &input[i * anchors * anchor_stride..(i + 1) * anchors * anchor_stride];
        for (j, &[anchor_w, anchor_h]) in cfg.anchors.iter().enumerate() {
            for k in 0..height {
                for l in 0..width {
                    let at = j * anchor_stride + k * width + l;
                    let confidence = sigmoid(x[at + 4 * stride]);
                    if confidence < cfg.conf_thresh {
                        continue;
                    }
                    // Same operation order as Paddle, so results agree to the bit
                    // as far as exp and division do.
                    let cx = (l as f32 + sigmoid(x[at]) * scale + bias) * image_w / width as f32;
                    let cy = (k as f32 + sigmoid(x[at + stride]) * scale + bias) * image_h
                        / height as f32;
                    let w = x[at + 2 * stride].exp() * anchor_w * image_w / input_w;
                    let h = x[at + 3 * stride].exp() * anchor_h * image_h / input_h;
                    let mut corners = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
                    if cfg.clip_bbox {
                        corners[0] = corners[0].max(0.0);
                        corners[1] = corners[1].max(0.0);
                        corners[2] = corners[2].min(image_w - 1.0);
                        corners[3] = corners[3].min(image_h - 1.0);
                    }
                    let m = i * per_image + j * stride + k * width + l;
                    boxes[m * 4..m * 4 + 4].copy_from_slice(&corners);
                    for c in 0..classes {
                        scores[m * classes + c] = confidence * sigmoid(x[at + (5 + c) * stride]);
                    }
                }
            }
        }
    }
    DecodedBoxes {
        boxes_per_image: per_image,
        boxes,
        scores,
    }
}

/// PaddleDetection's YOLOv3 prediction: every level decoded with its own
/// anchors (objectness threshold = the NMS score threshold, boxes clipped),
/// the levels' boxes concatenated, then multiclass NMS per image. `image_sizes`
/// are each image's (height, width); boxes come out in those pixels.
pub fn detect(
    cfg: &YoloConfig,
    heads: &[Head],
    image_sizes: &[[u32; 2]],
    nms: &NmsConfig,
) -> Vec<Vec<Detection>> {
    let classes = cfg.num_classes;
    let mut boxes: Vec<Vec<[f32; 4]>> = vec![Vec::new(); image_sizes.len()];
    let mut scores: Vec<Vec<f32>> = vec![Vec::new(); image_sizes.len()];
    for (level, head) in heads.iter().enumerate() {
        assert_eq!(head.batch, image_sizes.len(), "one image size per image");
        let decode = DecodeConfig {
            anchors: cfg.anchor_masks[level]
                .iter()
                .map(|&a| cfg.anchors[a])
                .collect(),
            num_classes: classes,
            conf_thresh: nms.score_threshold,
            downsample_ratio: cfg.downsample_ratios[level],
            clip_bbox: true,
            scale_x_y: cfg.scale_x_y,
        };
        let out = yolo_box(&decode, head.data, head.height, head.width, image_sizes);
        let m = out.boxes_per_image;
        for i in 0..image_sizes.len() {
            let image_boxes = &out.boxes[i * m * 4..(i + 1) * m * 4];
            boxes[i].extend(
                image_boxes
                    .chunks_exact(4)
                    .map(|b| [b[0], b[1], b[2], b[3]]),
            );
            scores[i].extend_from_slice(&out.scores[i * m * classes..(i + 1) * m * classes]);
        }
    }
    boxes
        .iter()
        .zip(&scores)
        .map(|(b, s)| multiclass_nms(nms, b, s, classes))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cell_by_hand() {
        // 1x1 grid, one anchor 64x32 on a 32 px input, image 100 high 200 wide.
        // Logits 0 put the centre mid-cell: (100, 50); tw = ln 0.5 gives width
        // 0.5 * 64 * 200 / 32 = 200, th = 0 gives height 32 * 100 / 32 = 100.
        let cfg = DecodeConfig {
            anchors: vec![[64.0, 32.0]],
            num_classes: 2,
            conf_thresh: 0.1,
            downsample_ratio: 32,
            clip_bbox: false,
            scale_x_y: 1.0,
        };
        let input = [0.0, 0.0, 0.5f32.ln(), 0.0, 0.0, 0.0, 20.0];
        let out = yolo_box(&cfg, &input, 1, 1, &[[100, 200]]);
        let expected = [0.0, 0.0, 200.0, 100.0];
        for (a, b) in out.boxes.iter().zip(expected) {
            assert!((a - b).abs() < 1e-4, "{:?}", out.boxes);
        }
        assert!((out.scores[0] - 0.25).abs() < 1e-6);
        assert!((out.scores[1] - 0.5).abs() < 1e-6);

        let clipped = yolo_box(
            &DecodeConfig {
                clip_bbox: true,
                ..cfg.clone()
            },
            &input,
            1,
            1,
            &[[100, 200]],
        );
        assert_eq!(clipped.boxes[2], 199.0);
        assert_eq!(clipped.boxes[3], 99.0);

        let below = yolo_box(
            &DecodeConfig {
                conf_thresh: 0.6,
                ..cfg
            },
            &input,
            1,
            1,
            &[[100, 200]],
        );
        assert!(below.boxes.iter().chain(&below.scores).all(|&v| v == 0.0));
    }

    #[test]
    fn detect_finds_the_one_confident_box() {
        // Two classes on a 64 px input: levels of 2x2, 4x4, 8x8 cells, all
        // logits -10 (objectness ~0) except anchor 0 of level 1 at row 1,
        // column 2, with class 1 confident. Logits 0 for x, y, w, h put the
        // box centre mid-cell, (2.5 * 16, 1.5 * 16) = (40, 24) in input pixels,
        // sized as the anchor (30 x 61); the image is 128 x 128: twice that.
        let cfg = YoloConfig::yolov3(2);
        let grids = [2usize, 4, 8];
        let mut data: Vec<Vec<f32>> = grids
            .iter()
            .enumerate()
            .map(|(level, &g)| vec![-10.0; cfg.head_channels(level) * g * g])
            .collect();
        let (g, cell) = (4, 4 + 2);
        for c in 0..4 {
            data[1][c * g * g + cell] = 0.0;
        }
        data[1][4 * g * g + cell] = 10.0;
        data[1][6 * g * g + cell] = 10.0;
        let heads: Vec<Head> = data
            .iter()
            .zip(grids)
            .map(|(d, g)| Head {
                data: d,
                batch: 1,
                height: g,
                width: g,
            })
            .collect();
        let found = detect(&cfg, &heads, &[[128, 128]], &NmsConfig::yolov3());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), 1, "{:?}", found[0]);
        let d = found[0][0];
        assert_eq!(d.class, 1);
        assert!(d.score > 0.99);
        let expected = [80.0 - 30.0, 48.0 - 61.0, 80.0 + 30.0, 48.0 + 61.0];
        let clipped = [expected[0], 0.0, expected[2], expected[3]];
        for (a, b) in d.bbox.iter().zip(clipped) {
            assert!((a - b).abs() < 1e-3, "{:?}", d.bbox);
        }
    }

    fn floats(v: &serde_json::Value) -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    }

    /// Equal to real Paddle's `yolo_box` (fixture made by
    /// `core/tests/fixtures/yolo/make_fixtures.py`): non-square grid, clipping,
    /// scale_x_y and two image sizes.
    #[test]
    fn matches_paddle_fixture() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/yolo/yolo_box.json"
        );
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for case in cases.as_array().unwrap() {
            let anchors = floats(&case["anchors"]);
            let cfg = DecodeConfig {
                anchors: anchors.chunks(2).map(|a| [a[0], a[1]]).collect(),
                num_classes: case["num_classes"].as_u64().unwrap() as usize,
                conf_thresh: case["conf_thresh"].as_f64().unwrap() as f32,
                downsample_ratio: case["downsample_ratio"].as_u64().unwrap() as usize,
                clip_bbox: case["clip_bbox"].as_bool().unwrap(),
                scale_x_y: case["scale_x_y"].as_f64().unwrap() as f32,
            };
            let sizes: Vec<[u32; 2]> = floats(&case["img_size"])
                .chunks(2)
                .map(|s| [s[0] as u32, s[1] as u32])
                .collect();
            let out = yolo_box(
                &cfg,
                &floats(&case["input"]),
                case["grid_h"].as_u64().unwrap() as usize,
                case["grid_w"].as_u64().unwrap() as usize,
                &sizes,
            );
            for (name, ours, theirs) in [
                ("box", &out.boxes, floats(&case["boxes"])),
                ("score", &out.scores, floats(&case["scores"])),
            ] {
                assert_eq!(ours.len(), theirs.len());
                for (at, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "{name} {at}: {a} vs paddle {b}"
                    );
                }
            }
        }
    }
}
