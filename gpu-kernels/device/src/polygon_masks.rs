//! Mask R-CNN's mask targets drawn from polygons (core's `PolygonMaskGeom`):
//! each polygon as pycocotools' `rleFrPoly` draws it, the polygons of a RoI
//! OR-ed, with the rules of core's `cpu::polygon_masks` (whose notes say
//! why they are `rleFrPoly`'s): a pixel is set when the boundary's toggles
//! at or before its column-major position are odd in number, and the one
//! step of an edge that can pass a column's centre is found by bisection,
//! in the same f64 and i64 arithmetic. A thread per mask column: the
//! toggles of the columns before it give its top pixel's parity, its own
//! toggles each pixel's below that.
//! Launch: grid-stride over `rois * side` columns, any 1-D grid.
use crate::{grid_stride, kernel, math};

/// `rleFrPoly`'s upsampling factor.
const SCALE: f64 = 5.0;

/// One polygon edge as `rleFrPoly` walks it (core's `cpu::polygon_masks`
/// `Edge`): `steps` steps from `(x0, y0)` along its longer axis (y when
/// `steep`), the other coordinate rounded as C's `(int)(v + .5)`, the ends
/// swapped to put the lower one first (`reversed`).
struct Edge {
    x0: i64,
    y0: i64,
    steps: i64,
    steep: bool,
    slope: f64,
    reversed: bool,
}

impl Edge {
    /// The edge from vertex `j` to vertex `j + 1` (the last back to the
    /// first) of the `count` vertices at `vertices` (x, y pairs, mask
    /// pixels), upsampled.
    #[inline(always)]
    unsafe fn of(vertices: *const f32, count: usize, j: usize) -> Edge {
        let upsample = |v: f32| (SCALE * v as f64 + 0.5) as i64;
        let next = if j + 1 == count { 0 } else { j + 1 };
        let (xs, ys) = (
            upsample(*vertices.add(2 * j)),
            upsample(*vertices.add(2 * j + 1)),
        );
        let (xe, ye) = (
            upsample(*vertices.add(2 * next)),
            upsample(*vertices.add(2 * next + 1)),
        );
        let (dx, dy) = ((xe - xs).abs(), (ys - ye).abs());
        let steep = dx < dy;
        let reversed = if steep { ys > ye } else { xs > xe };
        let ((x0, y0), (x1, y1)) = if reversed {
            ((xe, ye), (xs, ys))
        } else {
            ((xs, ys), (xe, ye))
        };
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

    #[inline(always)]
    fn point(&self, t: i64) -> (i64, i64) {
        let rounded = |start: i64| (start as f64 + self.slope * t as f64 + 0.5) as i64;
        if self.steep {
            (rounded(self.x0), self.y0 + t)
        } else {
            (self.x0 + t, rounded(self.y0))
        }
    }

    #[inline(always)]
    fn first(&self) -> (i64, i64) {
        self.point(if self.reversed { self.steps } else { 0 })
    }

    #[inline(always)]
    fn last(&self) -> (i64, i64) {
        self.point(if self.reversed { 0 } else { self.steps })
    }

    /// The row of the edge's toggle in `column`, if it has one there.
    #[inline(always)]
    fn toggle_in(&self, column: usize, side: usize) -> Option<usize> {
        let centre = 5 * column as i64 + 2;
        let rising = self.point(self.steps).0 >= self.point(0).0;
        let (mut lo, mut hi) = (0, self.steps + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let x = self.point(mid).0;
            let past = if rising { x > centre } else { x <= centre };
            if past {
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

/// `rleFrPoly`'s toggle for consecutive boundary points: `(column, row)`,
/// row in `0..=side`.
#[inline(always)]
fn toggle((pu, pv): (i64, i64), (u, v): (i64, i64), side: usize) -> Option<(usize, usize)> {
    if u == pu {
        return None;
    }
    let xd = (if u < pu { u } else { u - 1 }) as f64;
    let xd = (xd + 0.5) / SCALE - 0.5;
    if math::floor64(xd) != xd || xd < 0.0 || xd > (side - 1) as f64 {
        return None;
    }
    let yd = (if v < pv { v } else { pv }) as f64;
    let yd = math::ceil64(((yd + 0.5) / SCALE - 0.5).max(0.0).min(side as f64));
    Some((xd as usize, yd as usize))
}

/// Entry `i` `[first, count]` of a table of ranges (floats), cut to
/// `total` items.
#[inline(always)]
unsafe fn range(table: *const f32, i: usize, total: u32) -> (usize, usize) {
    let first = *table.add(2 * i) as u32;
    let count = *table.add(2 * i + 1) as u32;
    let end = first.saturating_add(count).min(total);
    (first.min(end) as usize, end as usize)
}

kernel! {
    /// Column `i % side` of RoI `i / side`'s mask in `masks` `[rois, side,
    /// side]` (row-major, overwritten with 0/1): the union of the RoI's
    /// polygons (`roi_polygons` `[rois, 2]` first polygon and count,
    /// `polygons` `[polygon_count, 2]` first point and count, `points`
    /// `[point_count, 2]`; ranges past the tables are cut to them).
    pub fn polygon_masks(ctx, points: *const f32, polygons: *const f32, roi_polygons: *const f32,
        masks: *mut f32, rois: u32, side: u32, polygon_count: u32, point_count: u32) {
        grid_stride(ctx, rois * side, |i| {
            let side = side as usize;
            let (roi, x) = (i / side, i % side);
            let column = masks.add(roi * side * side + x);
            for y in 0..side {
                *column.add(y * side) = 0.0;
            }
            let (first, end) = range(roi_polygons, roi, polygon_count);
            for p in first..end {
                let (start, stop) = range(polygons, p, point_count);
                let count = stop - start;
                if count == 0 {
                    continue;
                }
                let vertices = points.add(2 * start);
                let edge = |j: usize| Edge::of(vertices, count, j);
                // The toggles of the columns before this one (each at or
                // before this column's top), along the edges and between
                // them.
                let mut top = false;
                for c in 0..x {
                    for j in 0..count {
                        if edge(j).toggle_in(c, side).is_some() {
                            top = !top;
                        }
                    }
                }
                for j in 0..count - 1 {
                    if let Some((c, _)) = toggle(edge(j).last(), edge(j + 1).first(), side) {
                        if c < x {
                            top = !top;
                        }
                    }
                }
                for y in 0..side {
                    let mut set = top;
                    for j in 0..count {
                        if let Some(row) = edge(j).toggle_in(x, side) {
                            if row <= y {
                                set = !set;
                            }
                        }
                    }
                    for j in 0..count - 1 {
                        if let Some((c, row)) = toggle(edge(j).last(), edge(j + 1).first(), side) {
                            if c == x && row <= y {
                                set = !set;
                            }
                        }
                    }
                    if set {
                        *column.add(y * side) = 1.0;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;
    use pulsefocus_core::backend::RoiPolygons;
    use pulsefocus_core::cpu::polygon_masks::polygon_masks as cpu_polygon_masks;

    fn coordinate() -> impl Strategy<Value = f32> {
        prop_oneof![
            3 => -2.0f32..14.0,
            1 => -2000.0f32..2000.0,
            1 => (-8i32..56).prop_map(|q| q as f32 / 4.0),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Against the CPU backend's op, bit for bit: RoIs of 0..3
        /// polygons of 3..7 points inside, across and far outside a mask of
        /// 1..12 pixels a side, grids smaller than the columns; nothing
        /// written past the masks.
        #[test]
        fn matches_the_cpu_op(
            side in 1usize..12,
            rois in prop::collection::vec(
                prop::collection::vec(prop::collection::vec((coordinate(), coordinate()), 3..7), 0..3),
                1..4),
            blocks in 1u32..3,
        ) {
            let mut tables = RoiPolygons::default();
            let flat: Vec<Vec<Vec<f32>>> = rois
                .iter()
                .map(|polygons| polygons.iter().map(|p| p.iter().flat_map(|&(x, y)| [x, y]).collect()).collect())
                .collect();
            for polygons in &flat {
                tables.push_roi(polygons.iter().map(|p: &Vec<f32>| p.as_slice()));
            }
            let g = tables.geom(side);
            let mut want = vec![0.0; g.masks_len()];
            cpu_polygon_masks(&g, &tables.points, &tables.polygons, &tables.roi_polygons, &mut want);
            // A buffer is never empty on the device: pad the tables by one.
            let pad = |v: &[f32]| { let mut v = v.to_vec(); v.push(f32::NAN); v };
            let (pb, tb, rb) = (
                DeviceBuf::new(&pad(&tables.points)),
                DeviceBuf::new(&pad(&tables.polygons)),
                DeviceBuf::new(&pad(&tables.roi_polygons)),
            );
            let masks = DeviceBuf::filled(g.masks_len() + 1, f32::NAN);
            launch_independent(Dim3::x(blocks), Dim3::x(32), |c| unsafe {
                polygon_masks(c, pb.ptr(), tb.ptr(), rb.ptr(), masks.ptr(), g.rois as u32,
                    side as u32, g.polygons as u32, g.points as u32)
            });
            let got = masks.to_vec();
            let differing = got[..g.masks_len()].iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            prop_assert_eq!(differing, 0);
            prop_assert!(got[g.masks_len()].is_nan());
        }
    }
}
