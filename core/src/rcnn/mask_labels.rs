//! Paddle 1.8's `generate_mask_labels` for one image (PaddleDetection's
//! `MaskAssigner`): which of the sampled RoIs the mask head is trained on,
//! and the `resolution x resolution` binary target of each.
//!
//! As `generate_mask_labels_op.cc` and `mask_util.cc` do it:
//! 1. the ground truth that has a mask is every object of class > 0 that is
//!    not a crowd; each one's box is the min/max of its polygons' points
//!    (`Poly2Boxes`, whose running maximum starts at `FLT_MIN`, the smallest
//!    positive float, not at `-FLT_MAX`);
//! 2. the foreground RoIs are those labelled > 0, in order. Each, divided by
//!    the image's scale (to original pixels), is matched to the box of (1)
//!    it overlaps most ([`bbox_overlap`], first maximum, the running maximum
//!    again starting at `FLT_MIN`: a RoI that meets no box takes the first);
//! 3. that object's polygons are moved into the RoI and scaled to
//!    `resolution` pixels: `(x - x1) * M / w` with `w = max(x2 - x1, 1)`
//!    (no pixel `+1` here), in f32; each polygon is rasterised as
//!    pycocotools' `rleFrPoly` and decoded row-major (`Poly2Mask`, the same
//!    code), and the polygons are OR-ed. The rasterising is
//!    `Backend::polygon_masks` (on the device in training); here the
//!    polygons are moved and scaled, and checked as `Rle::from_polygon`
//!    checks them;
//! 4. `MaskInt32` has `num_classes * M * M` values per foreground RoI: -1
//!    (ignored by the loss) except the `M * M` of the RoI's class, which
//!    hold the 0/1 target (`Backend::mask_loss` takes the class and the
//!    target instead); `MaskRois` are the RoIs divided by the scale and
//!    multiplied back (so they can differ from the input in the last bit);
//!    `RoiHasMaskInt32` their indices among the image's RoIs.
//!
//! An image without foreground RoIs still gets one row ("the network cannot
//! handle empty blobs"): the first background RoI's index, with RoI 0's box
//! (Paddle copies the box of RoI 0 whichever background RoI it names; with
//! no foreground and labels >= 0 these are the same RoI), and all -1 (class
//! 0 writes nothing): no polygons here. An image without RoIs yields no rows (Paddle skips it).
//!
//! Where Paddle is undefined we refuse: foreground RoIs in an image without
//! any mask ground truth (Paddle reads past an empty vector), an object of
//! (1) without polygons or a polygon of fewer than three points (Paddle
//! refuses an empty polygon and rasterises shorter ones to nothing useful).

use crate::box_coder::BoxXyxy;
use crate::rcnn::bbox_overlaps::bbox_overlap;
use crate::rcnn::ImInfo;
use pulsefocus_formats::rle::{Rle, RleError};

/// One image's mask-head targets (Paddle's `MaskRois`, `RoiHasMaskInt32`,
/// and what `MaskInt32` is drawn from), one entry per foreground RoI in RoI
/// order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MaskTargets {
    /// `[x1, y1, x2, y2]` in resized-image pixels (the RoI Align input).
    pub rois: Vec<BoxXyxy>,
    /// Index of each into the RoIs given (to gather the box head's features).
    pub roi_indices: Vec<usize>,
    /// Each RoI's object's polygons `[x0, y0, x1, y1, ...]` moved into it
    /// and scaled to `resolution` pixels (none for the placeholder row),
    /// for `Backend::polygon_masks`.
    pub polygons: Vec<Vec<Vec<f32>>>,
}

/// The mask targets of one image's sampled RoIs.
///
/// - `rois`, `labels`: `generate_proposal_labels`' RoIs (resized-image
///   pixels) and classes (0 background), e.g. `SampledRois::{rois, labels}`;
/// - `gt_polygons[g]`: object `g`'s polygons, each `[x0, y0, x1, y1, ...]`
///   in original-image pixels; `gt_classes`, `is_crowd`: its class and flag;
/// - `num_classes` including the background; `resolution` the mask side `M`.
#[allow(clippy::too_many_arguments)] // Paddle's six inputs and two settings
pub fn generate_mask_labels(
    rois: &[BoxXyxy],
    labels: &[i32],
    im_info: ImInfo,
    gt_polygons: &[Vec<Vec<f32>>],
    gt_classes: &[i32],
    is_crowd: &[bool],
    num_classes: usize,
    resolution: usize,
) -> Result<MaskTargets, RleError> {
    assert_eq!(labels.len(), rois.len(), "one label per RoI");
    assert_eq!(gt_classes.len(), gt_polygons.len(), "one class per object");
    assert_eq!(
        is_crowd.len(),
        gt_polygons.len(),
        "one crowd flag per object"
    );
    assert!(
        labels.iter().all(|&l| l >= 0 && (l as usize) < num_classes),
        "RoI labels outside 0..{num_classes}"
    );
    let mut out = MaskTargets::default();
    if rois.is_empty() {
        return Ok(out);
    }
    let scale = im_info.scale;

    // 1. The objects with masks and the boxes of their polygons.
    let mut mask_gts: Vec<&[Vec<f32>]> = Vec::new();
    let mut gt_boxes: Vec<BoxXyxy> = Vec::new();
    for (g, polygons) in gt_polygons.iter().enumerate() {
        if gt_classes[g] <= 0 || is_crowd[g] {
            continue;
        }
        if polygons.is_empty() {
            return Err(RleError(format!("object {g} has a mask but no polygon")));
        }
        for (p, polygon) in polygons.iter().enumerate() {
            if polygon.len() < 6 || polygon.len() % 2 != 0 {
                return Err(RleError(format!(
                    "object {g} polygon {p}: {} numbers, expected x, y pairs of at least 3 points",
                    polygon.len()
                )));
            }
        }
        let mut b = [f32::MAX, f32::MAX, f32::MIN_POSITIVE, f32::MIN_POSITIVE];
        for point in polygons.iter().flat_map(|p| p.chunks_exact(2)) {
            b[0] = b[0].min(point[0]);
            b[1] = b[1].min(point[1]);
            b[2] = b[2].max(point[0]);
            b[3] = b[3].max(point[1]);
        }
        mask_gts.push(polygons);
        gt_boxes.push(b);
    }

    // 2-3. Foreground RoIs, matched, their polygons moved and scaled.
    for (i, (roi, &label)) in rois.iter().zip(labels).enumerate() {
        if label <= 0 {
            continue;
        }
        if mask_gts.is_empty() {
            return Err(RleError(format!(
                "RoI {i} is foreground (class {label}) but the image has no object with a mask"
            )));
        }
        let original = roi.map(|v| v / scale);
        let (mut best, mut matched) = (f32::MIN_POSITIVE, 0);
        for (g, gt_box) in gt_boxes.iter().enumerate() {
            let overlap = bbox_overlap(&original, gt_box);
            if overlap > best {
                (best, matched) = (overlap, g);
            }
        }
        out.polygons
            .push(polygons_in_box(mask_gts[matched], &original, resolution)?);
        out.rois.push(original.map(|v| v * scale));
        out.roi_indices.push(i);
    }
    if out.roi_indices.is_empty() {
        out.rois.push(rois[0].map(|v| v / scale * scale));
        out.roi_indices.push(0);
        out.polygons.push(Vec::new());
    }
    Ok(out)
}

/// Paddle's `Polys2MaskWrtBox` up to the drawing: `polygons` (original
/// pixels) moved into `roi` and scaled to `m x m`, each checked as
/// `Rle::from_polygon` checks it (`Backend::polygon_masks` draws them).
fn polygons_in_box(
    polygons: &[Vec<f32>],
    roi: &BoxXyxy,
    m: usize,
) -> Result<Vec<Vec<f32>>, RleError> {
    let w = (roi[2] - roi[0]).max(1.0);
    let h = (roi[3] - roi[1]).max(1.0);
    let side = m as f32;
    let mut scaled = Vec::with_capacity(polygons.len());
    for polygon in polygons {
        // f32 as in Paddle; `rleFrPoly` then works in double, as Poly2Mask.
        let moved: Vec<f32> = polygon
            .chunks_exact(2)
            .flat_map(|p| [(p[0] - roi[0]) * side / w, (p[1] - roi[1]) * side / h])
            .collect();
        let coordinates: Vec<f64> = moved.iter().map(|&v| v as f64).collect();
        Rle::check_polygon(&coordinates)?;
        scaled.push(moved);
    }
    Ok(scaled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, RoiPolygons};
    use crate::fixtures::{floats, quads, read};
    use crate::CpuBackend;
    use proptest::prelude::*;

    const INFO: ImInfo = ImInfo {
        height: 100.0,
        width: 100.0,
        scale: 1.0,
    };

    fn polygons(v: &serde_json::Value) -> Vec<Vec<f32>> {
        v.as_array().expect("polygons").iter().map(floats).collect()
    }

    /// Paddle's `MaskInt32` of `got`: each row's polygons drawn by the CPU
    /// backend's `polygon_masks` into the slot of its RoI's class (`labels`
    /// of the image's RoIs), -1 elsewhere; all -1 for a background RoI.
    fn mask_int32(
        got: &MaskTargets,
        labels: &[i32],
        num_classes: usize,
        resolution: usize,
    ) -> Vec<i32> {
        if got.roi_indices.is_empty() {
            return Vec::new();
        }
        let mut tables = RoiPolygons::default();
        for polygons in &got.polygons {
            tables.push_roi(polygons.iter().map(|p| p.as_slice()));
        }
        let g = tables.geom(resolution);
        let mut masks = vec![0.0; g.masks_len()];
        CpuBackend::new().polygon_masks(
            &g,
            &tables.points,
            &tables.polygons,
            &tables.roi_polygons,
            &mut masks,
        );
        let area = resolution * resolution;
        let mut rows = vec![-1; got.roi_indices.len() * num_classes * area];
        for (r, &i) in got.roi_indices.iter().enumerate() {
            if labels[i] > 0 {
                let slot = (r * num_classes + labels[i] as usize) * area;
                for (t, &m) in rows[slot..][..area].iter_mut().zip(&masks[r * area..]) {
                    *t = m as i32;
                }
            }
        }
        rows
    }

    /// Paddle's `generate_mask_labels` on three images (concave and
    /// two-part objects, a crowd, RoIs thinner than a pixel or away from
    /// every object; an image without foreground; one without RoIs) at
    /// resolutions 14 and 28 (`core/tests/fixtures/mask_rcnn/mask_labels.py`):
    /// every output equal.
    #[test]
    fn equals_paddles_generate_mask_labels() {
        let fixture = read("mask_rcnn/mask_labels.json");
        let num_classes = fixture["num_classes"].as_u64().expect("classes") as usize;
        let mut compared = 0;
        for case in fixture["cases"].as_array().expect("cases") {
            let resolution = case["resolution"].as_u64().expect("resolution") as usize;
            for (image, gts) in fixture["gt"].as_array().expect("gt").iter().enumerate() {
                let info = floats(&fixture["im_info"][image]);
                let im_info = ImInfo {
                    height: info[0],
                    width: info[1],
                    scale: info[2],
                };
                let gts = gts.as_array().expect("objects");
                let gt_polygons: Vec<_> = gts.iter().map(|g| polygons(&g["polygons"])).collect();
                let gt_classes: Vec<i32> = gts
                    .iter()
                    .map(|g| g["class"].as_i64().expect("class") as i32)
                    .collect();
                let is_crowd: Vec<bool> =
                    gts.iter().map(|g| g["crowd"].as_i64() == Some(1)).collect();
                let rois = quads(&case["rois"][image]);
                let labels: Vec<i32> = floats(&fixture["labels"][image])
                    .iter()
                    .map(|&l| l as i32)
                    .collect();
                let got = generate_mask_labels(
                    &rois,
                    &labels,
                    im_info,
                    &gt_polygons,
                    &gt_classes,
                    &is_crowd,
                    num_classes,
                    resolution,
                )
                .expect("valid input");
                assert_eq!(
                    got.rois,
                    quads(&case["mask_rois"][image]),
                    "image {image} M {resolution}"
                );
                let indices: Vec<usize> = floats(&case["roi_has_mask"][image])
                    .iter()
                    .map(|&i| i as usize)
                    .collect();
                assert_eq!(got.roi_indices, indices, "image {image} M {resolution}");
                let expected: Vec<i32> = case["mask_int32"][image]
                    .as_array()
                    .expect("rows")
                    .iter()
                    .flat_map(|r| r.as_str().expect("a row").chars())
                    .map(|c| match c {
                        '.' => -1,
                        '0' => 0,
                        _ => 1,
                    })
                    .collect();
                let rows = mask_int32(&got, &labels, num_classes, resolution);
                assert_eq!(rows.len(), expected.len(), "image {image} M {resolution}");
                let differing = rows.iter().zip(&expected).filter(|(a, b)| a != b).count();
                assert_eq!(differing, 0, "image {image} M {resolution}: values differ");
                compared += got.roi_indices.len();
            }
        }
        assert_eq!(compared, 2 * (11 + 1), "every image's rows compared");
    }

    /// A square object filling the left half of a RoI: the class slot holds
    /// it (pixel centres inside the polygon), the other classes -1.
    #[test]
    fn half_square_by_hand() {
        let square = vec![vec![10.0, 10.0, 14.0, 10.0, 14.0, 18.0, 10.0, 18.0]];
        let rois = [[10.0, 10.0, 18.0, 18.0]];
        let got = generate_mask_labels(&rois, &[2], INFO, &[square], &[2], &[false], 3, 4)
            .expect("valid");
        assert_eq!(got.roi_indices, vec![0]);
        assert_eq!(got.rois, rois.to_vec());
        let mut expected = vec![-1; 3 * 16];
        for y in 0..4 {
            expected[2 * 16 + y * 4..2 * 16 + y * 4 + 4].copy_from_slice(&[1, 1, 0, 0]);
        }
        assert_eq!(mask_int32(&got, &[2], 3, 4), expected);
    }

    #[test]
    fn no_foreground_gives_one_ignored_row() {
        let square = vec![vec![0.0, 0.0, 5.0, 0.0, 5.0, 5.0]];
        let info = ImInfo { scale: 2.0, ..INFO };
        let rois = [[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 8.0, 8.0]];
        let got = generate_mask_labels(
            &rois,
            &[0, 0],
            info,
            std::slice::from_ref(&square),
            &[1],
            &[false],
            2,
            3,
        )
        .expect("valid");
        assert_eq!(got.roi_indices, vec![0]);
        assert_eq!(got.rois, vec![rois[0]]);
        assert_eq!(got.polygons, vec![Vec::<Vec<f32>>::new()]);
        let none =
            generate_mask_labels(&[], &[], info, &[square], &[1], &[false], 2, 3).expect("valid");
        assert_eq!(none, MaskTargets::default());
    }

    #[test]
    fn crowds_and_bad_polygons() {
        let square = vec![vec![0.0, 0.0, 5.0, 0.0, 5.0, 5.0]];
        let rois = [[0.0, 0.0, 4.0, 4.0]];
        // Foreground over a crowd, the only object: Paddle is undefined.
        let err = generate_mask_labels(
            &rois,
            &[1],
            INFO,
            std::slice::from_ref(&square),
            &[1],
            &[true],
            2,
            3,
        )
        .unwrap_err();
        assert!(err.0.contains("no object with a mask"), "{err}");
        let err = generate_mask_labels(
            &rois,
            &[1],
            INFO,
            &[vec![vec![0.0, 0.0, 5.0, 5.0]]],
            &[1],
            &[false],
            2,
            3,
        )
        .unwrap_err();
        assert!(err.0.contains("object 0 polygon 0"), "{err}");
        // A crowd object's polygons are not checked (Paddle skips them).
        let got = generate_mask_labels(
            &rois,
            &[1],
            INFO,
            &[vec![], square],
            &[1, 1],
            &[true, false],
            2,
            3,
        );
        assert!(got.is_ok());
    }

    fn polygon() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec((-5.0f32..60.0, -5.0f32..60.0), 3..8)
            .prop_map(|points| points.into_iter().flat_map(|(x, y)| [x, y]).collect())
    }

    proptest! {
        /// Every foreground RoI has a row, 0/1 exactly in its class's slot
        /// and -1 everywhere else; background RoIs have none.
        #[test]
        fn targets_only_in_the_class_slot(
            objects in prop::collection::vec(prop::collection::vec(polygon(), 1..3), 1..4),
            rois in prop::collection::vec((0.0f32..50.0, 0.0f32..50.0, 0.5f32..30.0, 0.5f32..30.0), 1..8),
            labels in prop::collection::vec(0i32..4, 8),
            resolution in 1usize..9,
        ) {
            let rois: Vec<BoxXyxy> = rois.iter().map(|&(x, y, w, h)| [x, y, x + w, y + h]).collect();
            let labels = &labels[..rois.len()];
            let classes = vec![1; objects.len()];
            let crowd = vec![false; objects.len()];
            let got = generate_mask_labels(&rois, labels, INFO, &objects, &classes, &crowd, 4, resolution).expect("valid");
            let area = resolution * resolution;
            let fg: Vec<usize> = (0..rois.len()).filter(|&i| labels[i] > 0).collect();
            let rows = mask_int32(&got, labels, 4, resolution);
            prop_assert_eq!(rows.len(), got.roi_indices.len() * 4 * area);
            prop_assert_eq!(got.polygons.len(), got.roi_indices.len());
            if fg.is_empty() {
                prop_assert_eq!(&got.roi_indices, &vec![0]);
                prop_assert!(got.polygons[0].is_empty());
                prop_assert!(rows.iter().all(|&t| t == -1));
            } else {
                prop_assert_eq!(&got.roi_indices, &fg);
                for (row, &i) in rows.chunks(4 * area).zip(&fg) {
                    let slot = labels[i] as usize * area;
                    for (j, &t) in row.iter().enumerate() {
                        if (slot..slot + area).contains(&j) {
                            prop_assert!(t == 0 || t == 1);
                        } else {
                            prop_assert_eq!(t, -1);
                        }
                    }
                }
            }
        }
    }
}
