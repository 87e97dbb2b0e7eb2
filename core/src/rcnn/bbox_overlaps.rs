//! Paddle's `BboxOverlaps` (`detection/bbox_util.h`), the IoU the R-CNN
//! target operators (`rpn_target_assign`, `generate_proposal_labels`) match
//! boxes to ground truth with.
//!
//! It differs from NMS's `jaccard_overlap` at the edges: there is no "apart"
//! test, only the intersection's sides clamped at 0 after the pixel `+1`, so
//! boxes less than a pixel apart still overlap a little; and an inverted box
//! keeps its (negative) area instead of 0.

use crate::box_coder::BoxXyxy;

/// IoU of two pixel boxes (width `x2 - x1 + 1`), 0 when they do not meet.
pub fn bbox_overlap(a: &BoxXyxy, b: &BoxXyxy) -> f32 {
    let area_a = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0);
    let area_b = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let inter_w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let inter_h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = inter_w * inter_h;
    if inter == 0.0 {
        return 0.0;
    }
    inter / (area_a + area_b - inter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yolo::nms::jaccard_overlap;

    #[test]
    fn overlaps_by_hand() {
        let a = [0.0, 0.0, 9.0, 9.0];
        assert_eq!(bbox_overlap(&a, &a), 1.0);
        // 10x10 against 20x10 sharing the left edge: 100 / 200.
        assert_eq!(bbox_overlap(&a, &[0.0, 0.0, 19.0, 9.0]), 0.5);
        // Half a pixel to the right of `a`: NMS's overlap says apart, this
        // one counts a 0.5-pixel-wide strip.
        let right = [9.5, 0.0, 19.0, 9.0];
        assert_eq!(jaccard_overlap(&a, &right, false), 0.0);
        let strip = 0.5 * 10.0;
        assert_eq!(bbox_overlap(&a, &right), strip / (100.0 + 105.0 - strip));
        assert_eq!(bbox_overlap(&a, &[11.0, 0.0, 19.0, 9.0]), 0.0);
    }
}
