//! Convolution on the CPU.
//!
//! Four paths, chosen by shape:
//! - 3x3 stride 1 with enough channels: Winograd's F(2x2, 3x3)
//!   (`super::winograd`), 2.25x fewer multiplications than im2col;
//! - depthwise (one channel per group): a direct loop per plane; im2col would
//!   turn it into thousands of tiny GEMMs.
//! - 1x1 stride-1 unpadded on a large map: the image *is* the `[c_in, h*w]`
//!   matrix, so each group is a single GEMM reading the input in place.
//! - everything else: im2col into a `[c_in/g * kh * kw, columns]` matrix, then
//!   GEMM with the `[c_out/g, c_in/g * kh * kw]` weights.
//!
//! Images are split into one contiguous run per worker thread; each worker has
//! its own slice of the workspace. On small maps (YOLO's 10x10 and 20x20
//! levels) one image gives a GEMM too thin to run at full speed, so a worker
//! puts the columns of several images side by side into one GEMM and moves the
//! result between that `[c_out, images * h*w]` staging matrix and NCHW. With a
//! single image the GEMM itself is threaded instead, and a large map is
//! unrolled one band of output rows at a time, so that the im2col matrix
//! stays under `MAX_COL_LEN` whatever the picture's size.

use super::gemm::{sgemm, Operand};
use super::winograd;
use crate::backend::Conv2dGeom;
use multiversion::multiversion;
use rayon::prelude::*;
use std::ops::Range;

/// Columns a GEMM should have to run near the machine's peak; smaller maps
/// batch images until they reach it.
pub(super) const MIN_GEMM_COLUMNS: usize = 512;

/// Most values an im2col matrix holds. Unrolled whole, FPN's 3x3 conv on
/// P2 at 800 pixels (256 channels, 200x200) needs 368 MiB; in bands of
/// output rows it needs 32 MiB, and a band of that size (3640 columns for
/// that conv) still runs the GEMM at full speed.
#[cfg(not(test))]
pub(super) const MAX_COL_LEN: usize = 8 << 20;
/// This crate's tests run small maps: a small cap makes every convolution
/// they run with one image per GEMM (the direct-convolution checks, the
/// layers' gradient checks, the models' parity with Paddle) go band by
/// band, several bands to a map.
#[cfg(test)]
pub(super) const MAX_COL_LEN: usize = 4096;

/// Threads to split the batch over.
pub(super) fn workers(g: &Conv2dGeom) -> usize {
    g.batch.min(rayon::current_num_threads()).max(1)
}

/// Threads each GEMM may use: all of them when there is only one worker.
pub(super) fn gemm_threads(g: &Conv2dGeom) -> usize {
    if workers(g) == 1 {
        rayon::current_num_threads()
    } else {
        1
    }
}

pub(super) fn images_per_worker(g: &Conv2dGeom) -> usize {
    g.batch.div_ceil(workers(g))
}

/// Images whose columns share one GEMM.
fn images_per_gemm(g: &Conv2dGeom) -> usize {
    MIN_GEMM_COLUMNS
        .div_ceil(g.h_out() * g.w_out())
        .clamp(1, images_per_worker(g))
}

/// A 1x1 convolution on a map large enough for one GEMM per image reads its
/// input (and writes its input gradient) in place, without im2col.
fn reads_input_in_place(g: &Conv2dGeom) -> bool {
    g.is_pointwise() && images_per_gemm(g) == 1
}

/// Rows of the im2col matrix of one group (its GEMM depth).
fn col_rows(g: &Conv2dGeom) -> usize {
    g.c_in_per_group() * g.kernel_h * g.kernel_w
}

/// Output rows unrolled at once: the whole map when images share a GEMM
/// (small maps) or the input is read in place, else as many as fit in
/// `MAX_COL_LEN` (at least one).
fn band_rows(g: &Conv2dGeom) -> usize {
    if images_per_gemm(g) > 1 || reads_input_in_place(g) {
        return g.h_out();
    }
    (MAX_COL_LEN / (col_rows(g) * g.w_out()).max(1)).clamp(1, g.h_out().max(1))
}

/// The bands of output rows one image's GEMMs run on, top to bottom.
fn bands(g: &Conv2dGeom) -> impl Iterator<Item = Range<usize>> {
    let (rows, h) = (band_rows(g), g.h_out());
    (0..h).step_by(rows).map(move |r| r..(r + rows).min(h))
}

fn col_len(g: &Conv2dGeom) -> usize {
    if reads_input_in_place(g) {
        0
    } else {
        col_rows(g) * images_per_gemm(g) * band_rows(g) * g.w_out()
    }
}

/// The `[c_out/g, images * h_out*w_out]` staging matrix of batched GEMMs.
fn stage_len(g: &Conv2dGeom) -> usize {
    if images_per_gemm(g) > 1 {
        g.c_out_per_group() * images_per_gemm(g) * g.h_out() * g.w_out()
    } else {
        0
    }
}

/// Per-worker scratch: im2col matrix, staging matrix, partial weight gradient.
fn worker_workspace_len(g: &Conv2dGeom) -> usize {
    if g.is_depthwise() {
        0
    } else {
        col_len(g) + stage_len(g) + g.weight_len()
    }
}

/// Whether `g` runs Winograd's F(2x2, 3x3) here (its rounding differs from
/// a direct sum's: the backend suite widens its bounds for it).
pub fn runs_winograd(g: &Conv2dGeom) -> bool {
    winograd::applies(g)
}

pub fn workspace_len(g: &Conv2dGeom) -> usize {
    if winograd::applies(g) {
        return winograd::workspace_len(g);
    }
    workers(g) * worker_workspace_len(g)
}

fn check_lengths(g: &Conv2dGeom, x: usize, w: usize, y: usize, workspace: usize) {
    if let Err(msg) = g.validate() {
        panic!("{msg}");
    }
    assert!(
        x >= g.input_len(),
        "conv2d: input buffer too short for {g:?}"
    );
    assert!(
        w >= g.weight_len(),
        "conv2d: weight buffer too short for {g:?}"
    );
    assert!(
        y >= g.output_len(),
        "conv2d: output buffer too short for {g:?}"
    );
    assert!(
        workspace >= workspace_len(g),
        "conv2d: workspace too short for {g:?}"
    );
}

/// The output columns of kernel column `kj` whose input column lies inside
/// the row, and the input column of the first of them.
fn column_span(g: &Conv2dGeom, kj: usize) -> (Range<usize>, usize) {
    let offset = tap_offset(kj, g.dilation_w, g.pad_w);
    let outputs = valid_outputs(g.w_out(), g.w_in, g.stride_w, offset);
    let first = (outputs.start * g.stride_w) as isize + offset;
    (outputs, first.max(0) as usize)
}

/// Unrolls output rows `band` of one group of one image into `col`
/// (`col_rows` rows of `band.len() * w_out` values, rows `ld` apart); taps
/// in the padding are zero.
/// Each (tap, output row) copies its valid column range in one run (a
/// plain copy at stride 1) and zero-fills the padding either side.
// Kept out of line: inlined into `unrolled_input`, the stem and 3x3 forward
// and filter-gradient passes measured 2-6% slower (docs/benchmarks.md).
#[inline(never)]
#[multiversion(targets = "simd")]
fn im2col(g: &Conv2dGeom, x_group: &[f32], band: Range<usize>, col: &mut [f32], ld: usize) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let plane = g.h_in * g.w_in;
    let band_len = band.len() * w_out;
    for c in 0..g.c_in_per_group() {
        let x_plane = &x_group[c * plane..(c + 1) * plane];
        for ki in 0..g.kernel_h {
            let row_offset = tap_offset(ki, g.dilation_h, g.pad_h);
            let rows = valid_outputs(h_out, g.h_in, g.stride_h, row_offset);
            for kj in 0..g.kernel_w {
                let (columns, first) = column_span(g, kj);
                let row = (c * g.kernel_h + ki) * g.kernel_w + kj;
                let col_row = &mut col[row * ld..row * ld + band_len];
                for oy in band.clone() {
                    let at = (oy - band.start) * w_out;
                    let out = &mut col_row[at..at + w_out];
                    if !rows.contains(&oy) || columns.is_empty() {
                        out.fill(0.0);
                        continue;
                    }
                    let iy = ((oy * g.stride_h) as isize + row_offset) as usize;
                    let x_row = &x_plane[iy * g.w_in + first..(iy + 1) * g.w_in];
                    out[..columns.start].fill(0.0);
                    out[columns.end..].fill(0.0);
                    let out = &mut out[columns.clone()];
                    if g.stride_w == 1 {
                        out.copy_from_slice(&x_row[..out.len()]);
                    } else {
                        for (o, &v) in out.iter_mut().zip(x_row.iter().step_by(g.stride_w)) {
                            *o = v;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of `im2col` on output rows `band`: adds every column entry
/// back onto the input position it was copied from. `x_group` must be
/// zeroed before the first band.
#[multiversion(targets = "simd")]
fn col2im(g: &Conv2dGeom, col: &[f32], ld: usize, band: Range<usize>, x_group: &mut [f32]) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let plane = g.h_in * g.w_in;
    let band_len = band.len() * w_out;
    for c in 0..g.c_in_per_group() {
        let x_plane = &mut x_group[c * plane..(c + 1) * plane];
        for ki in 0..g.kernel_h {
            let row_offset = tap_offset(ki, g.dilation_h, g.pad_h);
            for kj in 0..g.kernel_w {
                let (columns, first) = column_span(g, kj);
                if columns.is_empty() {
                    continue;
                }
                let row = (c * g.kernel_h + ki) * g.kernel_w + kj;
                let col_row = &col[row * ld..row * ld + band_len];
                let rows = valid_outputs(h_out, g.h_in, g.stride_h, row_offset);
                for oy in rows.start.max(band.start)..rows.end.min(band.end) {
                    let iy = ((oy * g.stride_h) as isize + row_offset) as usize;
                    let x_row = &mut x_plane[iy * g.w_in + first..(iy + 1) * g.w_in];
                    let at = (oy - band.start) * w_out;
                    let values = &col_row[at..at + w_out][columns.clone()];
                    if g.stride_w == 1 {
                        for (x, &v) in x_row.iter_mut().zip(values) {
                            *x += v;
                        }
                    } else {
                        for (x, &v) in x_row.iter_mut().step_by(g.stride_w).zip(values) {
                            *x += v;
                        }
                    }
                }
            }
        }
    }
}

/// Where one group of a chunk of images lives in an NCHW buffer: image `i`'s
/// planes are `buf[plane_range(i)]`.
struct GroupPlanes {
    image_len: usize,
    first: usize,
    len: usize,
}

impl GroupPlanes {
    fn range(&self, image: usize) -> Range<usize> {
        let start = image * self.image_len + self.first;
        start..start + self.len
    }
}

/// Group `grp`'s input channels in the input (or input gradient).
fn input_planes(g: &Conv2dGeom, grp: usize) -> GroupPlanes {
    let len = g.c_in_per_group() * g.h_in * g.w_in;
    GroupPlanes {
        image_len: g.c_in * g.h_in * g.w_in,
        first: grp * len,
        len,
    }
}

/// Group `grp`'s output channels in the output (or output gradient).
fn output_planes(g: &Conv2dGeom, grp: usize) -> GroupPlanes {
    let len = g.c_out_per_group() * g.h_out() * g.w_out();
    GroupPlanes {
        image_len: g.c_out * g.h_out() * g.w_out(),
        first: grp * len,
        len,
    }
}

/// Group `grp`'s `[c_out/g, col_rows]` block of the weights.
fn group_weights(g: &Conv2dGeom, grp: usize) -> Range<usize> {
    let len = g.c_out_per_group() * col_rows(g);
    grp * len..(grp + 1) * len
}

/// `stage[co][i * plane ..]` = image `i`'s plane `co` (NCHW to staging).
fn gather(src: &[f32], planes: &GroupPlanes, images: usize, plane: usize, stage: &mut [f32]) {
    let ld = images * plane;
    for i in 0..images {
        for (co, p) in src[planes.range(i)].chunks(plane).enumerate() {
            stage[co * ld + i * plane..][..plane].copy_from_slice(p);
        }
    }
}

/// The inverse of `gather` (staging to NCHW).
fn scatter(stage: &[f32], planes: &GroupPlanes, images: usize, plane: usize, dst: &mut [f32]) {
    let ld = images * plane;
    for i in 0..images {
        for (co, p) in dst[planes.range(i)].chunks_mut(plane).enumerate() {
            p.copy_from_slice(&stage[co * ld + i * plane..][..plane]);
        }
    }
}

/// Slices a worker's workspace into (im2col, staging, partial weight gradient).
fn split_workspace<'a>(
    g: &Conv2dGeom,
    ws: &'a mut [f32],
) -> (&'a mut [f32], &'a mut [f32], &'a mut [f32]) {
    let (col, rest) = ws.split_at_mut(col_len(g));
    let (stage, rest) = rest.split_at_mut(stage_len(g));
    (col, stage, &mut rest[..g.weight_len()])
}

/// The `[col_rows, images * band.len() * w_out]` GEMM operand of output
/// rows `band` of one group of a chunk of images: the input itself for a
/// 1x1 read in place (one band, the whole map), else its im2col unrolling
/// in `col`.
fn unrolled_input<'a>(
    g: &Conv2dGeom,
    x_chunk: &'a [f32],
    x_planes: &GroupPlanes,
    images: usize,
    band: Range<usize>,
    col: &'a mut [f32],
) -> &'a [f32] {
    if reads_input_in_place(g) {
        return &x_chunk[x_planes.range(0)];
    }
    let band_len = band.len() * g.w_out();
    let ld = images * band_len;
    for i in 0..images {
        im2col(
            g,
            &x_chunk[x_planes.range(i)],
            band.clone(),
            &mut col[i * band_len..],
            ld,
        );
    }
    col
}

/// The `[c_out/g, images * h_out*w_out]` GEMM operand of one group's output
/// gradient: read in place for a single image, else gathered into `stage`.
fn staged_output<'a>(
    g: &Conv2dGeom,
    dy_chunk: &'a [f32],
    y_planes: &GroupPlanes,
    images: usize,
    stage: &'a mut [f32],
) -> &'a [f32] {
    if images_per_gemm(g) == 1 {
        return &dy_chunk[y_planes.range(0)];
    }
    gather(dy_chunk, y_planes, images, g.h_out() * g.w_out(), stage);
    stage
}

/// Splits the batch into one contiguous run of images per worker, each with
/// its own slice of the workspace, and hands every run's chunks of up to
/// `images_per_gemm` images to `body(written, read, images, col, stage)`:
/// the chunk's images in the buffer being written and in the buffer being
/// read (NCHW, `written_image` / `read_image` values per image), their count,
/// and the worker's im2col and staging scratch.
fn for_each_chunk(
    g: &Conv2dGeom,
    (written, written_image): (&mut [f32], usize),
    (read, read_image): (&[f32], usize),
    workspace: &mut [f32],
    body: impl Fn(&mut [f32], &[f32], usize, &mut [f32], &mut [f32]) + Sync,
) {
    let (ipw, m) = (images_per_worker(g), images_per_gemm(g));
    written
        .par_chunks_mut(ipw * written_image)
        .zip(read.par_chunks(ipw * read_image))
        .zip(workspace.par_chunks_mut(worker_workspace_len(g)))
        .for_each(|((written_run, read_run), ws)| {
            let (col, stage, _) = split_workspace(g, ws);
            for (written, read) in written_run
                .chunks_mut(m * written_image)
                .zip(read_run.chunks(m * read_image))
            {
                let images = written.len() / written_image;
                body(written, read, images, col, stage);
            }
        });
}

pub fn forward(
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    workspace: &mut [f32],
) {
    check_lengths(g, x.len(), w.len(), y.len(), workspace.len());
    if winograd::applies(g) {
        winograd::forward(g, x, w, bias, y, workspace);
        return;
    }
    if g.is_depthwise() {
        depthwise_forward(g, x, w, bias, y);
        return;
    }
    let (plane, w_out) = (g.h_out() * g.w_out(), g.w_out());
    let out_image = g.c_out * plane;
    let threads = gemm_threads(g);
    let (k, cout_g) = (col_rows(g), g.c_out_per_group());
    for_each_chunk(
        g,
        (&mut y[..g.output_len()], out_image),
        (&x[..g.input_len()], g.c_in * g.h_in * g.w_in),
        workspace,
        |y_chunk, x_chunk, images, col, stage| {
            let ld = images * plane;
            let batched = images_per_gemm(g) > 1;
            for grp in 0..g.groups {
                // y [cout_g x columns] = w_group [cout_g x k] * col [k x columns],
                // band by band (the output's columns `band` rows in).
                let (y_planes, x_planes) = (output_planes(g, grp), input_planes(g, grp));
                for band in bands(g) {
                    let n = images * band.len() * w_out;
                    let cols = unrolled_input(g, x_chunk, &x_planes, images, band.clone(), col);
                    let out = if batched {
                        &mut *stage
                    } else {
                        &mut y_chunk[y_planes.range(0)]
                    };
                    let lhs = Operand::new(&w[group_weights(g, grp)], k);
                    let rhs = Operand::new(cols, n);
                    let out = &mut out[band.start * w_out..];
                    sgemm(cout_g, n, k, lhs, rhs, out, ld, false, threads);
                }
                if batched {
                    scatter(stage, &y_planes, images, plane, y_chunk);
                }
            }
            if let Some(bias) = bias {
                for y_img in y_chunk.chunks_mut(out_image) {
                    for (p, b) in y_img.chunks_mut(plane).zip(bias) {
                        p.iter_mut().for_each(|v| *v += b);
                    }
                }
            }
        },
    );
}

/// `dx = d conv / d x` applied to `dy`, or `dx +=` it with `accumulate`.
pub fn backward_data(
    g: &Conv2dGeom,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    workspace: &mut [f32],
) {
    check_lengths(g, dx.len(), w.len(), dy.len(), workspace.len());
    if winograd::applies(g) {
        winograd::backward_data(g, dy, w, dx, accumulate, workspace);
        return;
    }
    if g.is_depthwise() {
        depthwise_backward_data(g, dy, w, dx, accumulate);
        return;
    }
    let (plane, w_out) = (g.h_out() * g.w_out(), g.w_out());
    let threads = gemm_threads(g);
    let (k, cout_g) = (col_rows(g), g.c_out_per_group());
    for_each_chunk(
        g,
        (&mut dx[..g.input_len()], g.c_in * g.h_in * g.w_in),
        (&dy[..g.output_len()], g.c_out * plane),
        workspace,
        |dx_chunk, dy_chunk, images, col, stage| {
            let ld = images * plane;
            for grp in 0..g.groups {
                // dcol [k x columns] = w_group^T [k x cout_g] * dy [cout_g x columns];
                // a 1x1 read in place writes dcol straight into dx, any other
                // conv band by band through col2im.
                let x_planes = input_planes(g, grp);
                let dy_rows = staged_output(g, dy_chunk, &output_planes(g, grp), images, stage);
                if reads_input_in_place(g) {
                    let lhs = Operand::transposed(&w[group_weights(g, grp)], k);
                    let dx_group = &mut dx_chunk[x_planes.range(0)];
                    sgemm(
                        k,
                        ld,
                        cout_g,
                        lhs,
                        Operand::new(dy_rows, ld),
                        dx_group,
                        ld,
                        accumulate,
                        threads,
                    );
                    continue;
                }
                if !accumulate {
                    for i in 0..images {
                        dx_chunk[x_planes.range(i)].fill(0.0);
                    }
                }
                for band in bands(g) {
                    let band_len = band.len() * w_out;
                    let n = images * band_len;
                    let lhs = Operand::transposed(&w[group_weights(g, grp)], k);
                    let rhs = Operand::new(&dy_rows[band.start * w_out..], ld);
                    sgemm(k, n, cout_g, lhs, rhs, col, n, false, threads);
                    for i in 0..images {
                        let dx_group = &mut dx_chunk[x_planes.range(i)];
                        col2im(g, &col[i * band_len..], n, band.clone(), dx_group);
                    }
                }
            }
        },
    );
}

pub fn backward_filter(
    g: &Conv2dGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
    workspace: &mut [f32],
) {
    check_lengths(g, x.len(), dw.len(), dy.len(), workspace.len());
    let (plane, w_out) = (g.h_out() * g.w_out(), g.w_out());
    if let Some(dbias) = dbias {
        assert!(
            dbias.len() >= g.c_out,
            "conv2d: bias gradient buffer too short"
        );
        super::elementwise::channel_sum(g.batch, g.c_out, plane, dy, dbias);
    }
    if winograd::applies(g) {
        winograd::backward_filter(g, x, dy, dw, workspace);
        return;
    }
    if g.is_depthwise() {
        depthwise_backward_filter(g, x, dy, dw);
        return;
    }
    let in_image = g.c_in * g.h_in * g.w_in;
    let out_image = g.c_out * plane;
    let (ipw, m) = (images_per_worker(g), images_per_gemm(g));
    let threads = gemm_threads(g);
    let (k, cout_g) = (col_rows(g), g.c_out_per_group());
    let wws = worker_workspace_len(g);
    let runs = g.batch.div_ceil(ipw);
    // Each worker sums its run's gradient into its own partial, so the
    // chunks are walked here rather than by `for_each_chunk`.
    workspace[..runs * wws]
        .par_chunks_mut(wws)
        .zip(x[..g.input_len()].par_chunks(ipw * in_image))
        .zip(dy[..g.output_len()].par_chunks(ipw * out_image))
        .for_each(|((ws, x_run), dy_run)| {
            let (col, stage, partial) = split_workspace(g, ws);
            let mut first = true;
            for (x_chunk, dy_chunk) in x_run.chunks(m * in_image).zip(dy_run.chunks(m * out_image))
            {
                let images = dy_chunk.len() / out_image;
                let ld = images * plane;
                for grp in 0..g.groups {
                    // dw_group [cout_g x k] += dy [cout_g x columns] * col^T [columns x k],
                    // summed band by band.
                    let x_planes = input_planes(g, grp);
                    let dy_rows = staged_output(g, dy_chunk, &output_planes(g, grp), images, stage);
                    let dw_group = &mut partial[group_weights(g, grp)];
                    for band in bands(g) {
                        let n = images * band.len() * w_out;
                        let cols = unrolled_input(g, x_chunk, &x_planes, images, band.clone(), col);
                        let lhs = Operand::new(&dy_rows[band.start * w_out..], ld);
                        let rhs = Operand::transposed(cols, n);
                        let accumulate = !first || band.start > 0;
                        sgemm(cout_g, k, n, lhs, rhs, dw_group, k, accumulate, threads);
                    }
                }
                first = false;
            }
        });
    // Sum the workers' partial gradients (`par_chunks` made one run per worker).
    let partial_at = col_len(g) + stage_len(g);
    sum_partials(
        &workspace[..runs * wws],
        wws,
        partial_at,
        &mut dw[..g.weight_len()],
    );
}

/// `out[i]` = the sum over workers of `scratch[w * worker_len + at + i]`:
/// each worker's partial weight gradient, `at` into its scratch.
pub(super) fn sum_partials(scratch: &[f32], worker_len: usize, at: usize, out: &mut [f32]) {
    let runs = scratch.len() / worker_len;
    out.par_chunks_mut(4096)
        .enumerate()
        .for_each(|(chunk, out)| {
            let start = at + chunk * 4096;
            for (i, o) in out.iter_mut().enumerate() {
                *o = (0..runs).map(|r| scratch[r * worker_len + start + i]).sum();
            }
        });
}

// ---- depthwise: direct loops, one plane (image, channel) at a time ----
//
// Each kernel tap (ki, kj) touches, for output row `oy`, the input row
// `oy * stride + ki * dilation - pad`, and within it the columns
// `ox * stride + kj * dilation - pad`. The loops go row by row and, per tap,
// over exactly the valid column range, so the inner loop has no bounds test.
// With stride s the input row is first split into its s phases (every s-th
// element, starting at 0, 1, ..): each tap then reads one phase contiguously,
// and the inner loops vectorise for every stride.

/// The output positions `o < out_len` whose input position
/// `o * stride + offset` lies inside `0..in_len`.
fn valid_outputs(out_len: usize, in_len: usize, stride: usize, offset: isize) -> Range<usize> {
    let lo = if offset >= 0 {
        0
    } else {
        (offset.unsigned_abs()).div_ceil(stride)
    };
    let last_in = in_len as isize - 1 - offset;
    let hi = if last_in < 0 {
        0
    } else {
        (last_in as usize / stride + 1).min(out_len)
    };
    lo.min(hi)..hi
}

/// Offset of tap `k` relative to the output position times stride.
fn tap_offset(k: usize, dilation: usize, pad: usize) -> isize {
    (k * dilation) as isize - pad as isize
}

/// A plane whose rows are each split into `stride` phases of `phase_len`
/// elements: `row(y)[p * phase_len + j] = plane[y][j * stride + p]`. Split
/// once per plane, so every tap of every output row reads one phase
/// contiguously.
struct PhasedPlane {
    width: usize,
    stride: usize,
    phase_len: usize,
    data: Vec<f32>,
}

impl PhasedPlane {
    fn new(g: &Conv2dGeom) -> Self {
        let (width, stride) = (g.w_in, g.stride_w);
        let phase_len = width.div_ceil(stride);
        // Stride 1 reads the plane in place and needs no copy.
        let len = if stride == 1 {
            0
        } else {
            g.h_in * stride * phase_len
        };
        PhasedPlane {
            width,
            stride,
            phase_len,
            data: vec![0.0; len],
        }
    }

    /// Values per row in the phased layout (the width itself at stride 1).
    fn row_len(&self) -> usize {
        if self.stride == 1 {
            self.width
        } else {
            self.stride * self.phase_len
        }
    }

    /// The plane's rows in phase order: the plane itself at stride 1, else
    /// a copy split into phases.
    fn split<'a>(&'a mut self, plane: &'a [f32]) -> &'a [f32] {
        let (width, phase_len) = (self.width, self.phase_len);
        // A constant stride lets the strided loads vectorise (as shuffles);
        // 2 is the only stride the models use.
        match self.stride {
            1 => return plane,
            2 => split_rows(2, width, phase_len, plane, &mut self.data),
            stride => split_rows(stride, width, phase_len, plane, &mut self.data),
        }
        &self.data
    }

    /// `plane = phases`, back in row order (the inverse of `split`).
    fn merge(&self, plane: &mut [f32]) {
        let (width, phase_len) = (self.width, self.phase_len);
        match self.stride {
            2 => merge_rows(2, width, phase_len, &self.data, plane),
            stride => merge_rows(stride, width, phase_len, &self.data, plane),
        }
    }
}

/// `PhasedPlane::split`'s loops: phase `p` of a row takes the first element
/// of each group of `stride` starting at `p`.
#[inline(always)]
fn split_rows(stride: usize, width: usize, phase_len: usize, plane: &[f32], data: &mut [f32]) {
    for (row, phased) in plane
        .chunks_exact(width)
        .zip(data.chunks_exact_mut(stride * phase_len))
    {
        for (p, phase) in phased.chunks_exact_mut(phase_len).enumerate() {
            let groups = row[p.min(width)..].chunks_exact(stride);
            let (full, tail) = (groups.len(), groups.remainder());
            for (dst, group) in phase.iter_mut().zip(groups) {
                *dst = group[0];
            }
            if let Some(&v) = tail.first() {
                phase[full] = v;
            }
        }
    }
}

/// The inverse of `split_rows`.
#[inline(always)]
fn merge_rows(stride: usize, width: usize, phase_len: usize, data: &[f32], plane: &mut [f32]) {
    for (row, phased) in plane
        .chunks_exact_mut(width)
        .zip(data.chunks_exact(stride * phase_len))
    {
        for (p, phase) in phased.chunks_exact(phase_len).enumerate() {
            let mut groups = row[p.min(width)..].chunks_exact_mut(stride);
            let full = groups.len();
            for (group, &src) in (&mut groups).zip(phase) {
                group[0] = src;
            }
            if let Some(v) = groups.into_remainder().first_mut() {
                *v = phase[full];
            }
        }
    }
}

/// Index, in a row of `width` split into `stride` phases, of row element
/// `o * stride + offset` (for stride 1, simply that element).
fn index_in_phases(width: usize, stride: usize, o: usize, offset: isize) -> usize {
    let s = stride as isize;
    let phase_len = width.div_ceil(stride);
    (offset.rem_euclid(s) as usize) * phase_len + (o as isize + offset.div_euclid(s)) as usize
}

/// Every (kernel row, output row, input row) whose input row lies inside
/// the image, kernel row by kernel row.
fn row_taps(g: &Conv2dGeom) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    (0..g.kernel_h).flat_map(move |ki| {
        let offset = tap_offset(ki, g.dilation_h, g.pad_h);
        valid_outputs(g.h_out(), g.h_in, g.stride_h, offset)
            .map(move |oy| (ki, oy, ((oy * g.stride_h) as isize + offset) as usize))
    })
}

/// A kernel column that touches the image: the output columns whose input
/// column lies inside the row, and where the first of those input columns is
/// in the row's phases. The same for every row.
struct ColumnTap {
    kj: usize,
    outputs: Range<usize>,
    first: usize,
}

fn column_taps(g: &Conv2dGeom) -> Vec<ColumnTap> {
    (0..g.kernel_w)
        .filter_map(|kj| {
            let offset = tap_offset(kj, g.dilation_w, g.pad_w);
            let outputs = valid_outputs(g.w_out(), g.w_in, g.stride_w, offset);
            if outputs.is_empty() {
                return None;
            }
            let first = index_in_phases(g.w_in, g.stride_w, outputs.start, offset);
            Some(ColumnTap { kj, outputs, first })
        })
        .collect()
}

/// `sum(a[i] * b[i])` with eight independent accumulators so it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += ca[i] * cb[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn depthwise_forward(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let taps = g.kernel_h * g.kernel_w;
    let in_plane = g.h_in * g.w_in;
    let columns = column_taps(g);
    y[..g.output_len()]
        .par_chunks_mut(g.h_out() * g.w_out())
        .enumerate()
        .for_each(|(plane, y_plane)| {
            let c = plane % g.c_out;
            let x_plane = &x[plane * in_plane..(plane + 1) * in_plane];
            let w_c = &w[c * taps..(c + 1) * taps];
            y_plane.fill(bias.map_or(0.0, |b| b[c]));
            depthwise_forward_plane(g, &columns, x_plane, w_c, y_plane);
        });
}

/// `y_plane += w_c (*) x_plane` for one (image, channel) plane.
// The per-plane kernels are free functions rather than rayon closures
// because only functions get `multiversion`'s AVX2/FMA clones.
#[multiversion(targets = "simd")]
fn depthwise_forward_plane(
    g: &Conv2dGeom,
    columns: &[ColumnTap],
    x_plane: &[f32],
    w_c: &[f32],
    y_plane: &mut [f32],
) {
    let w_out = g.w_out();
    let mut phased = PhasedPlane::new(g);
    let row_len = phased.row_len();
    let x_rows = phased.split(x_plane);
    for (ki, oy, iy) in row_taps(g) {
        let x_row = &x_rows[iy * row_len..(iy + 1) * row_len];
        let y_row = &mut y_plane[oy * w_out..(oy + 1) * w_out];
        for tap in columns {
            let wv = w_c[ki * g.kernel_w + tap.kj];
            let outputs = y_row[tap.outputs.clone()].iter_mut();
            for (yv, xv) in outputs.zip(&x_row[tap.first..]) {
                *yv += wv * xv;
            }
        }
    }
}

fn depthwise_backward_data(
    g: &Conv2dGeom,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    accumulate: bool,
) {
    let out_plane = g.h_out() * g.w_out();
    let taps = g.kernel_h * g.kernel_w;
    let columns = column_taps(g);
    dx[..g.input_len()]
        .par_chunks_mut(g.h_in * g.w_in)
        .enumerate()
        .for_each(|(plane, dx_plane)| {
            let c = plane % g.c_in;
            let dy_plane = &dy[plane * out_plane..(plane + 1) * out_plane];
            let w_c = &w[c * taps..(c + 1) * taps];
            if !accumulate {
                dx_plane.fill(0.0);
            }
            depthwise_backward_data_plane(g, &columns, dy_plane, w_c, dx_plane, accumulate);
        });
}

/// `dx_plane += w_c^T (*) dy_plane` for one (image, channel) plane.
#[multiversion(targets = "simd")]
fn depthwise_backward_data_plane(
    g: &Conv2dGeom,
    columns: &[ColumnTap],
    dy_plane: &[f32],
    w_c: &[f32],
    dx_plane: &mut [f32],
    accumulate: bool,
) {
    let w_out = g.w_out();
    // Stride 1 accumulates straight into the plane, else into its phases,
    // merged back at the end.
    let mut phased = PhasedPlane::new(g);
    let row_len = phased.row_len();
    let target: &mut [f32] = if g.stride_w == 1 {
        dx_plane
    } else {
        // The phases start at zero; the plane's values are zeros unless
        // the caller accumulates into them.
        if accumulate {
            phased.split(dx_plane);
        }
        &mut phased.data
    };
    for (ki, oy, iy) in row_taps(g) {
        let dy_row = &dy_plane[oy * w_out..(oy + 1) * w_out];
        let dx_row = &mut target[iy * row_len..(iy + 1) * row_len];
        for tap in columns {
            let wv = w_c[ki * g.kernel_w + tap.kj];
            let gradients = &dy_row[tap.outputs.clone()];
            for (d, gv) in dx_row[tap.first..].iter_mut().zip(gradients) {
                *d += wv * gv;
            }
        }
    }
    if g.stride_w != 1 {
        phased.merge(dx_plane);
    }
}

fn depthwise_backward_filter(g: &Conv2dGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let taps = g.kernel_h * g.kernel_w;
    let columns = column_taps(g);
    dw[..g.weight_len()]
        .par_chunks_mut(taps)
        .enumerate()
        .for_each(|(c, dw_c)| depthwise_backward_filter_channel(g, &columns, x, dy, c, dw_c));
}

/// Channel `c`'s filter gradient over the whole batch: row dot products in
/// f32, summed over rows and images in f64.
#[multiversion(targets = "simd")]
fn depthwise_backward_filter_channel(
    g: &Conv2dGeom,
    columns: &[ColumnTap],
    x: &[f32],
    dy: &[f32],
    c: usize,
    dw_c: &mut [f32],
) {
    let (out_plane, in_plane) = (g.h_out() * g.w_out(), g.h_in * g.w_in);
    let w_out = g.w_out();
    let mut acc = vec![0.0f64; dw_c.len()];
    let mut phased = PhasedPlane::new(g);
    let row_len = phased.row_len();
    for n in 0..g.batch {
        let plane = n * g.c_in + c;
        let x_rows = phased.split(&x[plane * in_plane..(plane + 1) * in_plane]);
        let dy_plane = &dy[plane * out_plane..(plane + 1) * out_plane];
        for (ki, oy, iy) in row_taps(g) {
            let x_row = &x_rows[iy * row_len..(iy + 1) * row_len];
            let dy_row = &dy_plane[oy * w_out..(oy + 1) * w_out];
            for tap in columns {
                let grad = &dy_row[tap.outputs.clone()];
                let partial = dot(grad, &x_row[tap.first..tap.first + grad.len()]);
                acc[ki * g.kernel_w + tap.kj] += partial as f64;
            }
        }
    }
    for (d, a) in dw_c.iter_mut().zip(&acc) {
        *d = *a as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_outputs_keeps_taps_inside_the_input() {
        for (out_len, in_len, stride, offset) in [
            (5, 5, 1, -1),
            (5, 5, 1, 1),
            (3, 6, 2, -1),
            (4, 8, 2, 2),
            (2, 1, 1, 3),
        ] {
            let r = valid_outputs(out_len, in_len, stride, offset);
            for o in 0..out_len {
                let i = (o * stride) as isize + offset;
                assert_eq!(
                    r.contains(&o),
                    i >= 0 && i < in_len as isize,
                    "{out_len} {in_len} {stride} {offset} o={o}"
                );
            }
        }
    }
}
