//! COCO's run-length encoding of binary masks, computed as pycocotools'
//! `maskApi.c` does so that areas, boxes and IoUs equal pycocotools' own.
//!
//! A mask of `height x width` pixels is read column by column (x outer, y
//! inner) and stored as alternating run lengths, the first run counting zeros
//! (0 when the first pixel is set). The JSON form is either that list of
//! counts ("uncompressed") or a string (`to_compressed`/`from_compressed`).
//!
//! Every `Rle` holds counts that sum to exactly `height * width`: the run
//! loops below (merge, IoU) only end on inputs of equal length, and reading
//! checks it, so a lying `size` or `counts` is an error, never a hang or a
//! huge allocation. Only `decode` allocates `height * width` bytes.

/// One mask, as pycocotools' `RLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    height: u32,
    width: u32,
    counts: Vec<u32>,
}

/// Bad input to an RLE function, as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RleError(pub String);

fn fail<T>(message: String) -> Result<T, RleError> {
    Err(RleError(message))
}

/// `rleFrPoly` walks the boundary at 5x resolution; a polygon whose boundary
/// is longer than this many upsampled steps (13 million pixels of perimeter)
/// is refused rather than walked for seconds.
const MAX_POLYGON_STEPS: u64 = 1 << 26;

/// `rleFrPoly`'s vertices at 5x resolution, `(x, y)`, the first repeated at
/// the end, after the checks `Rle::check_polygon` names.
fn upsample_polygon(poly: &[f64]) -> Result<(Vec<i64>, Vec<i64>), RleError> {
    if poly.len() < 6 {
        return fail(format!(
            "a polygon needs at least 6 numbers (3 points), found {}",
            poly.len()
        ));
    }
    if let Some(v) = poly.iter().find(|v| !v.is_finite()) {
        return fail(format!("polygon coordinate {v} is not a finite number"));
    }
    let k = poly.len() / 2;
    // C's `(int)(scale * v + .5)`, which truncates towards zero.
    let upsample = |v: f64| -> Result<i64, RleError> {
        let s = 5.0 * v + 0.5;
        if s.abs() >= i32::MAX as f64 {
            return fail(format!("polygon coordinate {v} is out of range"));
        }
        Ok(s as i64)
    };
    let mut x = Vec::with_capacity(k + 1);
    let mut y = Vec::with_capacity(k + 1);
    for point in poly.chunks_exact(2) {
        x.push(upsample(point[0])?);
        y.push(upsample(point[1])?);
    }
    x.push(x[0]);
    y.push(y[0]);
    let steps: u64 = (0..k)
        .map(|j| {
            (x[j] - x[j + 1])
                .unsigned_abs()
                .max((y[j] - y[j + 1]).unsigned_abs())
                + 1
        })
        .sum();
    if steps > MAX_POLYGON_STEPS {
        return fail(format!(
            "polygon boundary is {steps} steps long at 5x resolution (limit {MAX_POLYGON_STEPS})"
        ));
    }
    Ok((x, y))
}

impl Rle {
    /// Counts as read from a file; they must cover the mask exactly.
    pub fn new(height: u32, width: u32, counts: Vec<u32>) -> Result<Rle, RleError> {
        let total: u64 = counts.iter().map(|&c| c as u64).sum();
        let pixels = height as u64 * width as u64;
        if total != pixels {
            return fail(format!(
                "RLE counts sum to {total}, but size {height}x{width} has {pixels} pixels"
            ));
        }
        Ok(Rle {
            height,
            width,
            counts,
        })
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    /// `rleEncode` of a row-major mask (`mask[y * width + x]`, any non-zero
    /// byte set), walked column by column as pycocotools' Fortran-order array.
    pub fn encode(mask: &[u8], height: u32, width: u32) -> Result<Rle, RleError> {
        let (h, w) = (height as usize, width as usize);
        if mask.len() as u64 != height as u64 * width as u64 {
            return fail(format!(
                "mask has {} bytes, expected {height}x{width}",
                mask.len()
            ));
        }
        let mut counts = Vec::new();
        let (mut value, mut run) = (false, 0u32);
        for x in 0..w {
            for y in 0..h {
                let pixel = mask[y * w + x] != 0;
                if pixel != value {
                    counts.push(run);
                    run = 0;
                    value = pixel;
                }
                run += 1;
            }
        }
        counts.push(run);
        Ok(Rle {
            height,
            width,
            counts,
        })
    }

    /// The row-major 0/1 mask (allocates `height * width` bytes).
    pub fn decode(&self) -> Vec<u8> {
        let (h, w) = (self.height as usize, self.width as usize);
        let mut mask = vec![0u8; h * w];
        let mut at = 0usize;
        for (i, &count) in self.counts.iter().enumerate() {
            if i % 2 == 1 {
                for p in at..at + count as usize {
                    // Column-major position p is pixel (x = p / h, y = p % h).
                    mask[(p % h) * w + p / h] = 1;
                }
            }
            at += count as usize;
        }
        mask
    }

    /// `rleArea`: the number of set pixels.
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| c as u64)
            .sum()
    }

    /// `rleToBbox`: `[x, y, width, height]` of the set pixels, `[0; 4]` for a
    /// mask of at most one run. Computed in `uint` as the C code is, including
    /// its wrap-around when every foreground run has length 0.
    pub fn to_bbox(&self) -> [f64; 4] {
        let (h, w) = (self.height, self.width);
        // An odd count ends on a background run, which cannot widen the box.
        let m = self.counts.len() / 2 * 2;
        if m == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (w, h, 0u32, 0u32);
        let mut end = 0u32;
        for (j, &count) in self.counts[..m].iter().enumerate() {
            let start = end;
            end = end.wrapping_add(count);
            if j % 2 == 0 || count == 0 {
                continue;
            }
            let (x_start, y_start) = (start / h, start % h);
            let (x_end, y_end) = ((end - 1) / h, (end - 1) % h);
            xs = xs.min(x_start);
            xe = xe.max(x_end);
            if x_start < x_end {
                // The run wraps to another column: the box spans the full height.
                ys = 0;
                ye = h - 1;
            } else {
                ys = ys.min(y_start);
                ye = ye.max(y_end);
            }
        }
        [
            xs as f64,
            ys as f64,
            xe.wrapping_sub(xs).wrapping_add(1) as f64,
            ye.wrapping_sub(ys).wrapping_add(1) as f64,
        ]
    }

    /// Whether `from_polygon` takes `poly`: at least three points, finite
    /// coordinates whose 5x upsampled values fit C's `int`, a boundary of at
    /// most `MAX_POLYGON_STEPS` upsampled steps. A rasteriser that follows
    /// `from_polygon`'s rules elsewhere (core's `Backend::polygon_masks`)
    /// checks its polygons here.
    pub fn check_polygon(poly: &[f64]) -> Result<(), RleError> {
        upsample_polygon(poly).map(|_| ())
    }

    /// `rleFrPoly`: one polygon `[x1, y1, x2, y2, ...]` rasterised exactly as
    /// pycocotools does (its boundary walked at 5x resolution, then the
    /// crossings of pixel-column centres turned into runs). As `frPoly`, an odd
    /// trailing number is ignored; fewer than three points is an error.
    pub fn from_polygon(poly: &[f64], height: u32, width: u32) -> Result<Rle, RleError> {
        let (x, y) = upsample_polygon(poly)?;
        let scale = 5.0;
        let k = poly.len() / 2;
        if height == 0 || width == 0 {
            return Ok(Rle {
                height,
                width,
                counts: vec![0],
            });
        }

        // Walk the closed boundary point by point; where the upsampled x
        // changes and lands on a pixel-column centre, the column's pixels
        // from the boundary's y down toggle. The C code stores every point
        // first; only consecutive pairs matter, so the walk keeps the last one.
        let (h, w) = (height as u64, width as u64);
        let mut toggles: Vec<u64> = Vec::new();
        let mut previous: Option<(i64, i64)> = None;
        let mut visit = |u: i64, v: i64| {
            if let Some((pu, pv)) = previous {
                if u != pu {
                    let xd = (if u < pu { u } else { u - 1 }) as f64;
                    let xd = (xd + 0.5) / scale - 0.5;
                    if xd.floor() == xd && xd >= 0.0 && xd <= (w - 1) as f64 {
                        let yd = v.min(pv) as f64;
                        let yd = ((yd + 0.5) / scale - 0.5).clamp(0.0, h as f64).ceil();
                        toggles.push(xd as u64 * h + yd as u64);
                    }
                }
            }
            previous = Some((u, v));
        };
        for j in 0..k {
            let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
            let dx = (xe - xs).abs();
            let dy = (ys - ye).abs();
            // Each edge is walked along its longer axis from its lower end.
            let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
            if flip {
                std::mem::swap(&mut xs, &mut xe);
                std::mem::swap(&mut ys, &mut ye);
            }
            // 0/0 (a repeated vertex) is NaN as in C; that single point's y
            // is never used, its x equals its neighbours'.
            if dx >= dy {
                let slope = (ye - ys) as f64 / dx as f64;
                for d in 0..=dx {
                    let t = if flip { dx - d } else { d };
                    visit(t + xs, (ys as f64 + slope * t as f64 + 0.5) as i64);
                }
            } else {
                let slope = (xe - xs) as f64 / dy as f64;
                for d in 0..=dy {
                    let t = if flip { dy - d } else { d };
                    visit((xs as f64 + slope * t as f64 + 0.5) as i64, t + ys);
                }
            }
        }

        // Sorted toggle positions become run lengths; two toggles at the same
        // position cancel (a zero run is dropped and its neighbours joined).
        toggles.push(h * w);
        toggles.sort_unstable();
        let mut previous_at = 0;
        for t in toggles.iter_mut() {
            let at = *t;
            *t -= previous_at;
            previous_at = at;
        }
        let mut runs: Vec<u64> = vec![toggles[0]];
        let mut j = 1;
        while j < toggles.len() {
            if toggles[j] > 0 {
                runs.push(toggles[j]);
                j += 1;
            } else {
                j += 1;
                if j < toggles.len() {
                    *runs.last_mut().expect("runs starts non-empty") += toggles[j];
                    j += 1;
                }
            }
        }
        let counts = runs
            .into_iter()
            .map(u32::try_from)
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|_| RleError(format!("a {height}x{width} mask is too large for RLE")))?;
        Ok(Rle {
            height,
            width,
            counts,
        })
    }

    /// `rleMerge` with `intersect = 0`: the union of masks of one size, as
    /// `annToRLE` merges an object's polygons.
    pub fn merge(rles: &[Rle]) -> Result<Rle, RleError> {
        let Some(first) = rles.first() else {
            return fail("nothing to merge: no masks".into());
        };
        let mut merged = first.clone();
        for b in &rles[1..] {
            if (b.height, b.width) != (first.height, first.width) {
                return fail(format!(
                    "cannot merge a {}x{} mask with a {}x{} one",
                    b.height, b.width, first.height, first.width
                ));
            }
            let mut counts = Vec::new();
            let mut runs = RunPair::new(&merged.counts, &b.counts);
            let (mut value, mut accumulated) = (false, 0u32);
            loop {
                let step = runs.step();
                accumulated += step.length;
                let previous = value;
                value = step.a || step.b;
                // A run ends where the union changes value or both masks end.
                if value != previous || step.last {
                    counts.push(accumulated);
                    accumulated = 0;
                }
                if step.last {
                    break;
                }
            }
            merged.counts = counts;
        }
        Ok(merged)
    }

    /// The compressed `counts` string (`rleToString`): each count, after the
    /// third minus the count two before it, in 5-bit groups with a
    /// continuation bit, as the characters 48..111.
    pub fn to_compressed(&self) -> String {
        let mut s = String::new();
        for (i, &count) in self.counts.iter().enumerate() {
            let mut x = count as i64;
            if i > 2 {
                x -= self.counts[i - 2] as i64;
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push((c + 48) as char);
                if !more {
                    break;
                }
            }
        }
        s
    }

    /// `rleFrString`, refusing characters outside 48..111, a string that ends
    /// inside a count, negative counts and counts that do not sum to
    /// `height * width`.
    pub fn from_compressed(s: &str, height: u32, width: u32) -> Result<Rle, RleError> {
        let pixels = height as u64 * width as u64;
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::new();
        let mut total = 0u64;
        let mut p = 0;
        while p < bytes.len() {
            let (mut x, mut k) = (0i64, 0);
            loop {
                let Some(&byte) = bytes.get(p) else {
                    return fail(format!("RLE string ends inside count {}", counts.len()));
                };
                if !(48..=111).contains(&byte) {
                    return fail(format!(
                        "RLE string has {:?} at byte {p}; only characters '0' to 'o' are used",
                        byte as char
                    ));
                }
                // 7 groups hold 35 bits, more than any difference of two u32 counts.
                if k == 7 {
                    return fail(format!("RLE string count {} is too long", counts.len()));
                }
                let c = (byte - 48) as i64;
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            let m = counts.len();
            if m > 2 {
                x += counts[m - 2] as i64;
            }
            let Ok(count) = u32::try_from(x) else {
                return fail(format!("RLE string count {m} decodes to {x}"));
            };
            total += count as u64;
            if total > pixels {
                return fail(format!(
                    "RLE string decodes past the {height}x{width} mask at count {m}"
                ));
            }
            counts.push(count);
        }
        Rle::new(height, width, counts)
    }
}

/// Two run-length sequences of one length walked together, one common piece
/// at a time, as the loops of `rleMerge` and `rleIou` do.
struct RunPair<'a> {
    a: &'a [u32],
    b: &'a [u32],
    /// Next run index in each.
    next_a: usize,
    next_b: usize,
    /// What is left of the current run in each, and its value.
    left_a: u32,
    left_b: u32,
    value_a: bool,
    value_b: bool,
}

/// One common piece: its length, the values each mask had over it, and
/// whether both masks ended with it.
struct Step {
    length: u32,
    a: bool,
    b: bool,
    last: bool,
}

impl<'a> RunPair<'a> {
    fn new(a: &'a [u32], b: &'a [u32]) -> Self {
        RunPair {
            a,
            b,
            next_a: 1,
            next_b: 1,
            left_a: a.first().copied().unwrap_or(0),
            left_b: b.first().copied().unwrap_or(0),
            value_a: false,
            value_b: false,
        }
    }

    /// The C loop's body: consume the shorter remainder, then move each mask
    /// that ran out to its next run (flipping its value). The values reported
    /// are those after the move, as the C code tests them; `last` is its
    /// `ct == 0`. Both sequences sum to the same total (checked on
    /// construction), so the caller stops at `last`.
    fn step(&mut self) -> Step {
        let length = self.left_a.min(self.left_b);
        self.left_a -= length;
        if self.left_a == 0 && self.next_a < self.a.len() {
            self.left_a = self.a[self.next_a];
            self.next_a += 1;
            self.value_a = !self.value_a;
        }
        self.left_b -= length;
        if self.left_b == 0 && self.next_b < self.b.len() {
            self.left_b = self.b[self.next_b];
            self.next_b += 1;
            self.value_b = !self.value_b;
        }
        Step {
            length,
            a: self.value_a,
            b: self.value_b,
            last: self.left_a == 0 && self.left_b == 0,
        }
    }
}

/// pycocotools' box IoU (`bbIou`) of `[x, y, w, h]` boxes; for a crowd
/// ground truth the union is the detection alone.
pub fn bbox_iou(dt: &[f64; 4], gt: &[f64; 4], iscrowd: bool) -> f64 {
    let w = (dt[0] + dt[2]).min(gt[0] + gt[2]) - dt[0].max(gt[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (dt[1] + dt[3]).min(gt[1] + gt[3]) - dt[1].max(gt[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let dt_area = dt[2] * dt[3];
    let union = if iscrowd {
        dt_area
    } else {
        dt_area + gt[2] * gt[3] - inter
    };
    inter / union
}

/// `rleIou` of a detection and a ground truth mask: intersection over union,
/// or over the detection's area for a crowd ground truth. As in C, masks whose
/// boxes do not overlap score 0 and overlapping masks of different sizes -1.
pub fn iou(dt: &Rle, gt: &Rle, iscrowd: bool) -> f64 {
    if bbox_iou(&dt.to_bbox(), &gt.to_bbox(), iscrowd) <= 0.0 {
        return 0.0;
    }
    if (dt.height, dt.width) != (gt.height, gt.width) {
        return -1.0;
    }
    let (mut intersection, mut union) = (0u64, 0u64);
    let mut runs = RunPair::new(&dt.counts, &gt.counts);
    // The C loop counts each piece under the values before the move.
    let (mut in_dt, mut in_gt) = (false, false);
    loop {
        let step = runs.step();
        if in_dt || in_gt {
            union += step.length as u64;
            if in_dt && in_gt {
                intersection += step.length as u64;
            }
        }
        if step.last {
            break;
        }
        (in_dt, in_gt) = (step.a, step.b);
    }
    if intersection == 0 {
        union = 1;
    } else if iscrowd {
        union = dt.area();
    }
    intersection as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encode_is_column_major_starting_with_zeros() {
        // 2x3, row-major:   0 1 1
        //                   1 1 0
        // columns: (0,1) (1,1) (1,0) -> 0 1 1 1 1 0
        let rle = Rle::encode(&[0, 1, 1, 1, 1, 0], 2, 3).unwrap();
        assert_eq!(rle.counts(), [1, 4, 1]);
        assert_eq!(rle.area(), 4);
        assert_eq!(rle.to_bbox(), [0.0, 0.0, 3.0, 2.0]);
        assert_eq!(rle.decode(), [0, 1, 1, 1, 1, 0]);
        let full = Rle::encode(&[1; 4], 2, 2).unwrap();
        assert_eq!(full.counts(), [0, 4]);
        assert_eq!(Rle::encode(&[], 0, 5).unwrap().counts(), [0]);
        assert!(Rle::encode(&[1; 5], 2, 2).is_err());
    }

    #[test]
    fn bad_inputs_are_one_line_errors() {
        let err = |r: Result<Rle, RleError>| r.unwrap_err().to_string();
        assert!(err(Rle::new(2, 2, vec![1, 2])).contains("sum to 3"));
        assert!(err(Rle::from_polygon(&[0.0, 0.0, 1.0, 1.0], 4, 4)).contains("at least 6"));
        assert!(err(Rle::from_polygon(
            &[0.0, 0.0, 1.0, f64::NAN, 2.0, 2.0],
            4,
            4
        ))
        .contains("finite"));
        assert!(
            err(Rle::from_polygon(&[0.0, 0.0, 1e9, 0.0, 2.0, 2.0], 4, 4)).contains("out of range")
        );
        assert!(
            err(Rle::from_polygon(&[0.0, 0.0, 1e8, 0.0, 2.0, 2.0], 4, 4)).contains("steps long")
        );
        // "7" is count 7, past a 2x2 mask; "x" is not an RLE character.
        assert!(err(Rle::from_compressed("7", 2, 2)).contains("past"));
        assert!(err(Rle::from_compressed("0x", 2, 2)).contains("'x'"));
        // 0x20 set (continuation) and then nothing.
        assert!(err(Rle::from_compressed("P", 2, 2)).contains("ends inside"));
        assert!(err(Rle::from_compressed("PPPPPPPP0", 2, 2)).contains("too long"));
        // "O" is 0x1f: no continuation, sign bit set, so -1.
        assert!(err(Rle::from_compressed("O", 2, 2)).contains("decodes to -1"));
        assert!(err(Rle::from_compressed("1", 2, 2)).contains("sum to 1"));
        let a = Rle::new(2, 2, vec![4]).unwrap();
        let b = Rle::new(1, 4, vec![4]).unwrap();
        assert!(err(Rle::merge(&[a, b])).contains("cannot merge"));
        assert!(err(Rle::merge(&[])).contains("no masks"));
    }

    #[test]
    fn crowd_iou_divides_by_the_detection_area() {
        // 4x4: gt the left half (8 px), dt the top-left 2x2 (4 px).
        let gt = Rle::new(4, 4, vec![0, 8, 8]).unwrap();
        let dt = Rle::new(4, 4, vec![0, 2, 2, 2, 10]).unwrap();
        assert_eq!(iou(&dt, &gt, false), 4.0 / 8.0);
        assert_eq!(iou(&dt, &gt, true), 1.0);
        let far = Rle::new(4, 4, vec![12, 4]).unwrap();
        assert_eq!(iou(&far, &gt, false), 0.0);
        let other_size = Rle::new(2, 8, vec![0, 8, 8]).unwrap();
        assert_eq!(iou(&other_size, &gt, false), -1.0);
    }

    /// A random row-major mask with blobs rather than noise, so that runs
    /// have various lengths.
    fn mask_strategy() -> impl Strategy<Value = (u32, u32, Vec<u8>)> {
        (1u32..12, 1u32..12).prop_flat_map(|(h, w)| {
            (
                Just(h),
                Just(w),
                proptest::collection::vec(
                    prop_oneof![3 => Just(0u8), 2 => Just(1u8)],
                    (h * w) as usize,
                ),
            )
        })
    }

    proptest! {
        /// Any string and any polygon give an RLE covering the mask exactly,
        /// or an error; never a panic.
        #[test]
        fn arbitrary_input_never_panics(
            s in "[0-o]{0,24}|\\PC{0,8}",
            poly in proptest::collection::vec(-1e4f64..1e4, 0..16),
            h in 0u32..50, w in 0u32..50,
        ) {
            if let Ok(rle) = Rle::from_compressed(&s, h, w) {
                prop_assert_eq!(rle.counts().iter().map(|&c| c as u64).sum::<u64>(), (h * w) as u64);
            }
            if let Ok(rle) = Rle::from_polygon(&poly, h, w) {
                prop_assert!(Rle::new(h, w, rle.counts().to_vec()).is_ok());
                prop_assert!(rle.area() <= (h * w) as u64);
            }
        }

        #[test]
        fn encode_decode_round_trip((h, w, mask) in mask_strategy()) {
            let rle = Rle::encode(&mask, h, w).unwrap();
            prop_assert_eq!(rle.decode(), mask.clone());
            prop_assert_eq!(rle.area(), mask.iter().filter(|&&p| p != 0).count() as u64);
            prop_assert_eq!(Rle::new(h, w, rle.counts().to_vec()).unwrap(), rle);
        }

        #[test]
        fn string_form_round_trips(
            h in 1u32..3000, w in 1u32..3000,
            cuts in proptest::collection::vec(any::<u32>(), 0..40),
            full_first in any::<bool>(),
        ) {
            // Random runs covering h*w pixels, including long ones.
            let pixels = h as u64 * w as u64;
            let mut at: Vec<u64> = cuts.iter().map(|&c| c as u64 % (pixels + 1)).collect();
            at.sort_unstable();
            at.dedup();
            let mut counts = Vec::new();
            if full_first { counts.push(0); }
            let mut previous = 0;
            for a in at.into_iter().chain([pixels]) {
                if a > previous { counts.push((a - previous) as u32); previous = a; }
            }
            if counts.is_empty() { counts.push(0); }
            let rle = Rle::new(h, w, counts).unwrap();
            let s = rle.to_compressed();
            prop_assert!(s.bytes().all(|b| (48..=111).contains(&b)));
            prop_assert_eq!(Rle::from_compressed(&s, h, w).unwrap(), rle);
        }

        #[test]
        fn merge_and_iou_equal_pixel_counts(
            (h, w, a) in mask_strategy(),
            flips in proptest::collection::vec(0u8..10, 144),
            crowd in any::<bool>(),
        ) {
            // b is a with about 30% of its pixels flipped.
            let b: Vec<u8> = a.iter().zip(&flips).map(|(&p, &f)| if f < 3 { 1 - p } else { p }).collect();
            let (ra, rb) = (Rle::encode(&a, h, w).unwrap(), Rle::encode(&b, h, w).unwrap());
            let union: Vec<u8> = a.iter().zip(&b).map(|(&x, &y)| x | y).collect();
            let merged = Rle::merge(&[ra.clone(), rb.clone()]).unwrap();
            prop_assert_eq!(&merged, &Rle::encode(&union, h, w).unwrap());
            let inter = a.iter().zip(&b).filter(|(&x, &y)| x & y == 1).count() as f64;
            let denominator = if crowd { ra.area() as f64 } else { merged.area() as f64 };
            let expected = if inter == 0.0 { 0.0 } else { inter / denominator };
            prop_assert_eq!(iou(&ra, &rb, crowd), expected);
        }
    }

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rle/cases.json");

    fn numbers(v: &serde_json::Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    /// `make_cases.py` beside the fixture: pycocotools' strings, areas and
    /// boxes of polygons (merged per object) and its IoU matrices with crowds.
    #[test]
    fn polygons_and_ious_equal_pycocotools() {
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
        let mut objects = 0;
        for case in cases["polygons"].as_array().unwrap() {
            let (h, w) = (
                case["h"].as_u64().unwrap() as u32,
                case["w"].as_u64().unwrap() as u32,
            );
            let mut masks = Vec::new();
            for obj in case["objects"].as_array().unwrap() {
                let parts: Vec<Rle> = obj["polygons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| Rle::from_polygon(&numbers(p), h, w).unwrap())
                    .collect();
                for (part, counts) in parts.iter().zip(obj["part_counts"].as_array().unwrap()) {
                    assert_eq!(part.to_compressed(), counts.as_str().unwrap(), "{obj}");
                }
                let rle = Rle::merge(&parts).unwrap();
                assert_eq!(
                    rle.to_compressed(),
                    obj["counts"].as_str().unwrap(),
                    "{obj}"
                );
                assert_eq!(rle.area() as f64, obj["area"].as_f64().unwrap(), "{obj}");
                assert_eq!(rle.to_bbox().to_vec(), numbers(&obj["bbox"]), "{obj}");
                masks.push(rle);
                objects += 1;
            }
            let crowd: Vec<bool> = case["iscrowd"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64() == Some(1))
                .collect();
            let half = masks.len() / 2;
            let (dts, gts) = masks.split_at(half);
            let expected = case["iou"].as_array().unwrap();
            for (d, row) in dts.iter().zip(expected) {
                for ((g, c), want) in gts.iter().zip(&crowd).zip(numbers(row)) {
                    let got = iou(d, g, *c);
                    assert!((got - want).abs() <= 1e-12, "{got} vs {want}");
                }
            }
        }
        assert!(objects >= 50, "only {objects} objects checked");
    }

    /// pycocotools' `encode` of random masks, which it reads column by column.
    #[test]
    fn encode_equals_pycocotools() {
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
        let masks = cases["masks"].as_array().unwrap();
        assert!(masks.len() >= 10);
        for case in masks {
            let (h, w) = (
                case["h"].as_u64().unwrap() as u32,
                case["w"].as_u64().unwrap() as u32,
            );
            let mask: Vec<u8> = case["mask"]
                .as_str()
                .unwrap()
                .bytes()
                .map(|b| b - b'0')
                .collect();
            let rle = Rle::encode(&mask, h, w).unwrap();
            assert_eq!(rle.to_compressed(), case["counts"].as_str().unwrap());
            assert_eq!(rle.decode(), mask);
        }
    }
}
