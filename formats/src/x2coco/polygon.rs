//! The pixel extent of a polygon as Pillow's `ImageDraw.polygon(xy, fill=1,
//! outline=1)` fills it, which is how `tools/x2coco.py` turns a polygon into a
//! bbox (it draws onto a mask and takes the min/max filled row and column).
//!
//! This follows Pillow's `Draw.c` (`polygon_generic`, Pillow 10+): vertices
//! truncated towards zero (a C `int` cast), one scanline per integer row, edge
//! intersections in f32, a vertex counted twice where an edge ends (except
//! on the last row), the "connect discontiguous corners" adjustment,
//! horizontal edges drawn whole, and spans `[round_up(a), round_down(b)]`,
//! all clipped to the mask. `formats/tests/fixtures/x2coco/pil_polygons.json`
//! holds extents Pillow computed for random polygons; the tests compare.

/// Pillow's `ROUND_UP`: halves away from zero.
fn round_up(f: f32) -> i64 {
    if f >= 0.0 {
        (f + 0.5).floor() as i64
    } else {
        -((f.abs() + 0.5).floor() as i64)
    }
}

/// Pillow's `ROUND_DOWN`: halves towards zero.
fn round_down(f: f32) -> i64 {
    if f >= 0.0 {
        (f - 0.5).ceil() as i64
    } else {
        -((f.abs() - 0.5).ceil() as i64)
    }
}

struct Edge {
    x0: i64,
    y0: i64,
    xmin: i64,
    xmax: i64,
    ymin: i64,
    ymax: i64,
    dx: f32,
}

impl Edge {
    fn new(x0: i64, y0: i64, x1: i64, y1: i64) -> Edge {
        Edge {
            x0,
            y0,
            xmin: x0.min(x1),
            xmax: x0.max(x1),
            ymin: y0.min(y1),
            ymax: y0.max(y1),
            dx: if y0 == y1 {
                0.0
            } else {
                (x1 - x0) as f32 / (y1 - y0) as f32
            },
        }
    }

    fn x_at(&self, y: i64) -> f32 {
        (y - self.y0) as f32 * self.dx + self.x0 as f32
    }
}

/// Min/max column and row Pillow fills, as `[x_min, y_min, x_max, y_max]`
/// (inclusive), or `None` when nothing lands inside the `width x height` mask.
pub fn fill_extent(points: &[[f64; 2]], width: i64, height: i64) -> Option<[i64; 4]> {
    // Pillow refuses fewer than two vertices.
    if points.len() < 2 || width <= 0 || height <= 0 {
        return None;
    }
    let xy: Vec<(i64, i64)> = points
        .iter()
        .map(|p| (p[0] as f32 as i64, p[1] as f32 as i64))
        .collect();
    let mut extent: Option<[i64; 4]> = None;
    // Pillow's hline: clip to the mask, then mark the run.
    let mut hline = |x0: i64, y: i64, x1: i64| {
        if y < 0 || y >= height {
            return;
        }
        let (x0, x1) = (x0.max(0), x1.min(width - 1));
        if x0 > x1 {
            return;
        }
        let e = extent.get_or_insert([x0, y, x1, y]);
        *e = [e[0].min(x0), e[1].min(y), e[2].max(x1), e[3].max(y)];
    };

    // Edge list: consecutive horizontal edges running the same way merge.
    let mut edges: Vec<Edge> = Vec::with_capacity(xy.len());
    for i in 0..xy.len() - 1 {
        let ((x0, y0), (x1, y1)) = (xy[i], xy[i + 1]);
        if y0 == y1 && i != 0 && y0 == xy[i - 1].1 {
            let prev_x = xy[i - 1].0;
            let last = edges.last_mut().unwrap();
            if x1 > x0 && x0 > prev_x {
                last.xmax = x1;
                continue;
            } else if x1 < x0 && x0 < prev_x {
                last.xmin = x1;
                continue;
            }
        }
        edges.push(Edge::new(x0, y0, x1, y1));
    }
    let (first, last) = (xy[0], xy[xy.len() - 1]);
    if last != first {
        edges.push(Edge::new(last.0, last.1, first.0, first.1));
    }

    let mut ymin = height - 1;
    let mut ymax = 0;
    let mut table = Vec::with_capacity(edges.len());
    for e in &edges {
        ymin = ymin.min(e.ymin);
        ymax = ymax.max(e.ymax);
        if e.ymin == e.ymax {
            hline(e.xmin, e.ymin, e.xmax);
        } else {
            table.push(e);
        }
    }
    let ymin = ymin.max(0);
    let ymax = ymax.min(height);

    let mut xx: Vec<f32> = Vec::with_capacity(table.len() * 2);
    for y in ymin..=ymax {
        xx.clear();
        for (i, current) in table.iter().enumerate() {
            if y < current.ymin || y > current.ymax {
                continue;
            }
            xx.push(current.x_at(y));
            let last = xx.len() - 1;
            if y == current.ymax && y < ymax {
                // Pillow: "needed to draw consistent polygons".
                xx.push(xx[last]);
            } else if (y == current.ymin || y == current.ymax) && current.dx != 0.0 {
                // Pillow: "connect discontiguous corners" — a sharp corner is
                // pulled in to one pixel beyond the neighbouring row's extent.
                for other in &table[..i] {
                    if (y != other.ymin && y != other.ymax) || other.dx == 0.0 {
                        continue;
                    }
                    if round_up(xx[last]) != round_up(other.x_at(y)) {
                        continue;
                    }
                    let offset = if y == current.ymax { -1 } else { 1 };
                    let adjacent = current.x_at(y + offset);
                    if y + offset >= other.ymin && y + offset <= other.ymax {
                        let adjacent_other = other.x_at(y + offset);
                        if xx[last] > adjacent + 1.0 && xx[last] > adjacent_other + 1.0 {
                            xx[last] = round_up(adjacent.max(adjacent_other)) as f32 + 1.0;
                        } else if xx[last] < adjacent - 1.0 && xx[last] < adjacent_other - 1.0 {
                            xx[last] = round_up(adjacent.min(adjacent_other)) as f32 - 1.0;
                        }
                        break;
                    }
                }
            }
        }
        xx.sort_by(f32::total_cmp);
        for pair in xx.chunks_exact(2) {
            let (x_start, x_end) = (round_up(pair[0]), round_down(pair[1]));
            if x_end >= x_start {
                hline(x_start, y, x_end);
            }
        }
    }
    extent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_match_pillow_on_random_polygons() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/x2coco/pil_polygons.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        let mut mismatches = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let points: Vec<[f64; 2]> = serde_json::from_value(case["points"].clone()).unwrap();
            let want: Option<[i64; 4]> = serde_json::from_value(case["extent"].clone()).unwrap();
            let got = fill_extent(
                &points,
                case["width"].as_i64().unwrap(),
                case["height"].as_i64().unwrap(),
            );
            if got != want {
                mismatches.push((i, got, want));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{} of {} differ: {:?}",
            mismatches.len(),
            cases.len(),
            &mismatches[..mismatches.len().min(8)]
        );
    }

    #[test]
    fn rounding_follows_pillow() {
        assert_eq!(
            (
                round_up(2.5),
                round_up(-2.5),
                round_down(2.5),
                round_down(-2.5)
            ),
            (3, -3, 2, -2)
        );
        assert_eq!(fill_extent(&[[0.0, 0.0]], 5, 5), None);
        assert_eq!(
            fill_extent(&[[1.0, 1.0], [3.0, 1.0], [3.0, 4.0]], 10, 10),
            Some([1, 1, 3, 4])
        );
    }
}
