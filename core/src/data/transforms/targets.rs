//! The training targets of one image: NormalizeBox (pixels -> 0..1 of the
//! image), BboxXYXY2XYWH (corners -> centre and size) and PadBox (a fixed
//! 50 slots, zeros after the real boxes; boxes beyond 50 are dropped, as in
//! PaddleDetection).

/// PaddleDetection's `num_max_boxes` for YOLOv3.
pub const MAX_BOXES: usize = 50;

/// Writes the boxes of an image `width` x `height` as normalised
/// `[cx, cy, w, h]` into `boxes` (`slots * 4`), with their classes and scores
/// into `classes` and `scores` (`slots` each); unused slots become zero.
pub fn write_targets(
    xyxy: &[[f32; 4]],
    class_of: &[u32],
    score_of: &[f32],
    (width, height): (usize, usize),
    boxes: &mut [f32],
    classes: &mut [i32],
    scores: &mut [f32],
) {
    let slots = classes.len();
    assert!(boxes.len() == slots * 4 && scores.len() == slots);
    boxes.fill(0.0);
    classes.fill(0);
    scores.fill(0.0);
    let (w, h) = (width as f32, height as f32);
    for (i, b) in xyxy.iter().take(slots).enumerate() {
        let [x1, y1, x2, y2] = [b[0] / w, b[1] / h, b[2] / w, b[3] / h];
        boxes[i * 4..i * 4 + 4].copy_from_slice(&[
            (x1 + x2) / 2.0,
            (y1 + y2) / 2.0,
            x2 - x1,
            y2 - y1,
        ]);
        classes[i] = class_of[i] as i32;
        scores[i] = score_of[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_converts_and_pads() {
        let mut boxes = [9.0; 3 * 4];
        let mut classes = [9; 3];
        let mut scores = [9.0; 3];
        write_targets(
            &[[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 100.0, 80.0]],
            &[4, 1],
            &[1.0, 0.5],
            (100, 80),
            &mut boxes,
            &mut classes,
            &mut scores,
        );
        let want = [0.2, 0.5, 0.2, 0.5, 0.5, 0.5, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        for (a, b) in boxes.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{boxes:?}");
        }
        assert_eq!(classes, [4, 1, 0]);
        assert_eq!(scores, [1.0, 0.5, 0.0]);
    }

    #[test]
    fn boxes_beyond_the_slots_are_dropped() {
        let xyxy = vec![[0.0, 0.0, 1.0, 1.0]; 4];
        let mut boxes = [0.0; 2 * 4];
        let mut classes = [0; 2];
        let mut scores = [0.0; 2];
        write_targets(
            &xyxy,
            &[1; 4],
            &[1.0; 4],
            (2, 2),
            &mut boxes,
            &mut classes,
            &mut scores,
        );
        assert_eq!(classes, [1, 1]);
        assert_eq!(boxes[..4], [0.25, 0.25, 0.5, 0.5]);
    }
}
