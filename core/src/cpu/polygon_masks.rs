//! Mask R-CNN's mask targets drawn from polygons (see `PolygonMaskGeom`):
//! each polygon as pycocotools' `rleFrPoly` draws it (formats'
//! `Rle::from_polygon`), the polygons of a RoI OR-ed.
//!
//! `rleFrPoly` walks the closed boundary at 5x resolution, one point per
//! step along each edge's longer axis, the other coordinate rounded. Where
//! two consecutive points' upsampled x differ and the step passes a pixel
//! column's centre, it records a toggle at the column-major position
//! `column * M + row` (`row` from the lower of the two y, clamped to
//! `[0, M]`); the mask is, at each pixel, the parity of the toggles at or
//! before its position (its RLE runs start and end at the toggles). The walk
//! is 5x the perimeter long, which for an object much larger than its RoI
//! is far more than the mask has pixels; but along one edge the upsampled x
//! is monotone, so the one step of an edge that can pass a given column is
//! found by bisection. The steps between edges (from one edge's last point
//! to the next one's first) are taken as they are.
//!
//! The GPU kernel (`gpu-kernels/device/src/polygon_masks.rs`) applies the
//! same rules per mask column.

use crate::backend::PolygonMaskGeom;
use pulsefocus_formats::rle::Rle;
use rayon::prelude::*;

/// `rleFrPoly`'s upsampling factor.
const SCALE: f64 = 5.0;

/// One polygon edge as `rleFrPoly` walks it: `steps` steps from `(x0, y0)`
/// along its longer axis (y when `steep`), the other coordinate `start +
/// slope * t` rounded as C's `(int)(v + .5)`. The ends are swapped to put
/// the lower one first (`reversed`: walked from `t = steps` down to 0).
struct Edge {
    x0: i64,
    y0: i64,
    steps: i64,
    steep: bool,
    slope: f64,
    reversed: bool,
}

impl Edge {
    /// The edge from upsampled vertex `(xs, ys)` to `(xe, ye)`.
    fn new((xs, ys): (i64, i64), (xe, ye): (i64, i64)) -> Edge {
        let (dx, dy) = ((xe - xs).abs(), (ys - ye).abs());
        let steep = dx < dy;
        let reversed = if steep { ys > ye } else { xs > xe };
        let ((x0, y0), (x1, y1)) = if reversed {
            ((xe, ye), (xs, ys))
        } else {
            ((xs, ys), (xe, ye))
        };
        // A repeated vertex has 0 / 0 = NaN, as in C: its one point's y
        // rounds to 0 (Rust's saturating cast), and only its x is compared.
        let (steps, slope) = if steep {
            (dy, (x1 - x0) as f64 / dy as f64)
        } else {
            (dx, (y1 - y0) as f64 / dx as f64)
        };
        Edge {
            x0,
            y0,
            steps,
            steep,
            slope,
            reversed,
        }
    }

    /// Point `t` (`0..=steps`) of the edge.
    fn point(&self, t: i64) -> (i64, i64) {
        let rounded = |start: i64| (start as f64 + self.slope * t as f64 + 0.5) as i64;
        if self.steep {
            (rounded(self.x0), self.y0 + t)
        } else {
            (self.x0 + t, rounded(self.y0))
        }
    }

    /// The first and the last point the walk visits.
    fn first(&self) -> (i64, i64) {
        self.point(if self.reversed { self.steps } else { 0 })
    }

    fn last(&self) -> (i64, i64) {
        self.point(if self.reversed { 0 } else { self.steps })
    }

    /// The toggle of the edge's step across the centre of `column`, if it
    /// has one: its row. x is monotone in `t`, so the only step that can
    /// pass upsampled x `5 * column + 2 | + 3` is the one where x goes from
    /// at most `5 * column + 2` to more (or back).
    fn toggle_in(&self, column: usize, side: usize) -> Option<usize> {
        let centre = 5 * column as i64 + 2;
        let x = |t: i64| self.point(t).0;
        let rising = x(self.steps) >= x(0);
        let past = |t: i64| {
            if rising {
                x(t) > centre
            } else {
                x(t) <= centre
            }
        };
        // The first t past the centre (steps + 1: none).
        let (mut lo, mut hi) = (0, self.steps + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if past(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if lo == 0 || lo > self.steps {
            return None;
        }
        let (a, b) = (self.point(lo - 1), self.point(lo));
        let (previous, current) = if self.reversed { (b, a) } else { (a, b) };
        match toggle(previous, current, side) {
            Some((c, row)) if c == column => Some(row),
            _ => None,
        }
    }
}

/// `rleFrPoly`'s toggle for the consecutive boundary points `previous`,
/// `current` (upsampled) in an `side x side` mask: `(column, row)`, row in
/// `0..=side` (a row of `side` toggles the next column's top).
fn toggle((pu, pv): (i64, i64), (u, v): (i64, i64), side: usize) -> Option<(usize, usize)> {
    if u == pu {
        return None;
    }
    let xd = (if u < pu { u } else { u - 1 }) as f64;
    let xd = (xd + 0.5) / SCALE - 0.5;
    if xd.floor() != xd || xd < 0.0 || xd > (side - 1) as f64 {
        return None;
    }
    let yd = ((v.min(pv) as f64 + 0.5) / SCALE - 0.5)
        .clamp(0.0, side as f64)
        .ceil();
    Some((xd as usize, yd as usize))
}

/// The polygon's edges (upsampled, the first vertex repeated at the end).
fn edges(polygon: &[f32]) -> Vec<Edge> {
    let upsample = |v: f32| (SCALE * v as f64 + 0.5) as i64;
    let vertices: Vec<(i64, i64)> = polygon
        .chunks_exact(2)
        .map(|p| (upsample(p[0]), upsample(p[1])))
        .collect();
    (0..vertices.len())
        .map(|j| Edge::new(vertices[j], vertices[(j + 1) % vertices.len()]))
        .collect()
}

/// One polygon OR-ed into `mask` (`side x side`, row-major): the toggles'
/// parity, column-major. `flips` is scratch of `side * side + 1`.
fn draw(polygon: &[f32], side: usize, mask: &mut [f32], flips: &mut [u8]) {
    let edges = edges(polygon);
    flips.fill(0);
    let mut flip = |(column, row): (usize, usize)| flips[column * side + row] ^= 1;
    for column in 0..side {
        for edge in &edges {
            if let Some(row) = edge.toggle_in(column, side) {
                flip((column, row));
            }
        }
    }
    for pair in edges.windows(2) {
        if let Some(at) = toggle(pair[0].last(), pair[1].first(), side) {
            flip(at);
        }
    }
    let mut parity = 0;
    for x in 0..side {
        for y in 0..side {
            parity ^= flips[x * side + y];
            if parity == 1 {
                mask[y * side + x] = 1.0;
            }
        }
    }
}

/// A table entry `[first, count]` (floats) as a range, checked against
/// `total` items.
fn range(table: &[f32], i: usize, total: usize, what: &str) -> std::ops::Range<usize> {
    let (first, count) = (table[2 * i], table[2 * i + 1]);
    let end = first + count;
    assert!(
        first >= 0.0
            && count >= 0.0
            && first.fract() == 0.0
            && count.fract() == 0.0
            && end <= total as f32,
        "polygon_masks: {what} {i} has entries {first}..{end} of {total}"
    );
    first as usize..end as usize
}

/// Every RoI's mask (`masks`, `[rois, side, side]`, overwritten).
pub fn polygon_masks(
    g: &PolygonMaskGeom,
    points: &[f32],
    polygons: &[f32],
    roi_polygons: &[f32],
    masks: &mut [f32],
) {
    if let Err(msg) = g.validate() {
        panic!("{msg}");
    }
    for (name, got, want) in [
        ("points", points.len(), 2 * g.points),
        ("polygons", polygons.len(), 2 * g.polygons),
        ("roi_polygons", roi_polygons.len(), 2 * g.rois),
        ("masks", masks.len(), g.masks_len()),
    ] {
        assert!(got >= want, "polygon_masks: {name} too short for {g:?}");
    }
    let cells = g.side * g.side;
    masks[..g.masks_len()]
        .par_chunks_mut(cells)
        .enumerate()
        .for_each(|(roi, mask)| {
            mask.fill(0.0);
            let mut flips = vec![0u8; cells + 1];
            for p in range(roi_polygons, roi, g.polygons, "RoI") {
                let vertices = range(polygons, p, g.points, "polygon");
                let polygon = &points[2 * vertices.start..2 * vertices.end];
                let coordinates: Vec<f64> = polygon.iter().map(|&v| v as f64).collect();
                if let Err(e) = Rle::check_polygon(&coordinates) {
                    panic!("polygon_masks: polygon {p}: {e}");
                }
                draw(polygon, g.side, mask, &mut flips);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RoiPolygons;
    use proptest::prelude::*;

    /// `Rle::from_polygon` of each polygon, decoded and OR-ed.
    fn reference(polygons: &[Vec<f32>], side: usize) -> Vec<f32> {
        let mut mask = vec![0.0; side * side];
        for polygon in polygons {
            let coordinates: Vec<f64> = polygon.iter().map(|&v| v as f64).collect();
            let part = Rle::from_polygon(&coordinates, side as u32, side as u32)
                .expect("a valid polygon")
                .decode();
            for (m, p) in mask.iter_mut().zip(part) {
                if p == 1 {
                    *m = 1.0;
                }
            }
        }
        mask
    }

    /// The op on one RoI per entry of `rois`.
    fn run(rois: &[Vec<Vec<f32>>], side: usize) -> Vec<f32> {
        let mut tables = RoiPolygons::default();
        for polygons in rois {
            tables.push_roi(polygons.iter().map(|p| p.as_slice()));
        }
        let g = tables.geom(side);
        let mut masks = vec![f32::NAN; g.masks_len()];
        polygon_masks(
            &g,
            &tables.points,
            &tables.polygons,
            &tables.roi_polygons,
            &mut masks,
        );
        masks
    }

    #[test]
    fn by_hand() {
        // A square over the left half of a 4x4 mask (pixel centres inside),
        // and an empty RoI.
        let square = vec![0.0, 0.0, 2.0, 0.0, 2.0, 4.0, 0.0, 4.0];
        let masks = run(&[vec![square], vec![]], 4);
        let row = [1.0, 1.0, 0.0, 0.0];
        assert_eq!(masks[..16], [row, row, row, row].concat());
        assert_eq!(masks[16..], [0.0; 16]);
    }

    /// A polygon larger than the mask on every side fills it; one wholly
    /// to its right, left, above or below leaves it empty.
    #[test]
    fn polygons_past_the_mask() {
        let around = vec![-900.0, -500.0, 700.0, -800.0, 1000.0, 2000.0, -300.0, 800.0];
        assert_eq!(run(&[vec![around]], 7), vec![1.0; 49]);
        for (dx, dy) in [(40.0, 0.0), (-40.0, 0.0), (0.0, -40.0), (0.0, 40.0)] {
            let square = [1.0, 1.0, 30.0, 1.0, 30.0, 30.0, 1.0, 30.0];
            let moved: Vec<f32> = square
                .chunks(2)
                .flat_map(|p| [p[0] + dx, p[1] + dy])
                .collect();
            assert_eq!(run(&[vec![moved]], 7), vec![0.0; 49], "{dx}, {dy}");
        }
    }

    #[test]
    #[should_panic(expected = "polygon_masks: polygon 1 has entries 4..6 of 5")]
    fn a_polygon_past_the_points_is_refused() {
        let g = PolygonMaskGeom {
            rois: 1,
            side: 2,
            polygons: 2,
            points: 5,
        };
        let points = [0.0; 10];
        let mut masks = [0.0; 4];
        polygon_masks(&g, &points, &[0.0, 3.0, 4.0, 2.0], &[0.0, 2.0], &mut masks);
    }

    #[test]
    #[should_panic(
        expected = "polygon_masks: polygon 0: polygon coordinate 1000000000 is out of range"
    )]
    fn coordinates_out_of_rle_range_are_refused() {
        let polygon = vec![0.0, 0.0, 1e9, 0.0, 2.0, 2.0];
        run(&[vec![polygon]], 3);
    }

    /// A coordinate: mostly inside the mask or near it, some far outside
    /// (objects much larger than their RoI), some on the grid (ties of the
    /// rounding, vertices repeated or collinear).
    fn coordinate(side: usize) -> impl Strategy<Value = f32> {
        let s = side as f32;
        prop_oneof![
            4 => -2.0f32..s + 2.0,
            2 => -3000.0f32..3000.0,
            2 => (-8i32..(4 * side as i32 + 8)).prop_map(|q| q as f32 / 4.0),
            1 => (-3i32..4).prop_map(|q| q as f32 * 0.1 + 0.5),
        ]
    }

    fn polygon(side: usize) -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec((coordinate(side), coordinate(side)), 3..9).prop_map(|points| {
            // A polygon whose first x is negative has its second vertex
            // repeated (an edge of no length).
            let mut flat: Vec<f32> = points.into_iter().flat_map(|(x, y)| [x, y]).collect();
            if flat[0] < 0.0 {
                let (x, y) = (flat[2], flat[3]);
                flat.splice(2..2, [x, y]);
            }
            flat
        })
    }

    fn case() -> impl Strategy<Value = (usize, Vec<Vec<Vec<f32>>>)> {
        (1usize..20).prop_flat_map(|side| {
            (
                Just(side),
                prop::collection::vec(prop::collection::vec(polygon(side), 0..4), 1..4),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Every RoI's mask is `Rle::from_polygon` of its polygons, decoded
        /// and OR-ed, to the bit.
        #[test]
        fn equals_rle_from_polygon((side, rois) in case()) {
            let masks = run(&rois, side);
            let cells = side * side;
            for (r, polygons) in rois.iter().enumerate() {
                prop_assert_eq!(&masks[r * cells..][..cells], &reference(polygons, side)[..], "RoI {}", r);
            }
        }
    }
}
