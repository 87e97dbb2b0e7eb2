//! Winograd's minimal filtering F(2x2, 3x3) for the 3x3 stride-1
//! convolutions that do most of the work in VGG, the ResNet blocks' middle
//! convs, FPN's outputs, the RPN and the RetinaNet head (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016). Each 2x2 block of
//! outputs costs 16 multiplications per (input, output) channel pair instead
//! of 36, so the GEMMs do 2.25x less work than im2col's.
//!
//! With `d` the 4x4 input tile under the output block `(ty, tx)` (input rows
//! `2ty - pad ..`, columns `2tx - pad ..`, zero outside the map), `g` a 3x3
//! filter and
//!
//! ```text
//! B^T = [1  0 -1  0]    G = [  1    0    0 ]    A^T = [1 1  1  0]
//!       [0  1  1  0]        [ 1/2  1/2  1/2]          [0 1 -1 -1]
//!       [0 -1  1  0]        [ 1/2 -1/2  1/2]
//!       [0  1  0 -1]        [  0    0    1 ]
//! ```
//!
//! the output block is `Y = A^T [ sum_ci U(co, ci) .* V(ci) ] A` with
//! `U = G g G^T` and `V = B^T d B`. At each of the 16 tile positions `xi` the
//! sum over input channels is one GEMM `M[xi] = U[xi] V[xi]`
//! (`[c_out x c_in] x [c_in x tiles]`); the transforms are row operations.
//!
//! Backward:
//! - data: `dx` is the stride-1 convolution of `dy` with each filter rotated
//!   by 180 degrees and the channels' roles swapped, padded by `2 - pad`, so
//!   it runs through the same convolution;
//! - filter: each step's adjoint: `dM = A dY A^T`, `dU[xi] = sum over tiles of
//!   dM[xi] V[xi]^T` (16 GEMMs), `dg = G^T dU G`.
//!
//! Layouts: `U` (and `dU`) is `[16][c_out][c_in]`, a worker's `V` is
//! `[c_in][16][cols]`, its `M` `[16][c_out][cols]` and its `dM`
//! `[c_out][16][cols]`, `cols` being the tiles of the images and band of
//! tile rows in hand: each channel's transform writes one contiguous block,
//! and so does each of the 16 GEMMs, so that both run one task per block.
//! The 16 GEMMs are single-threaded and run side by side, which splits the
//! work with no synchronisation inside a product.

use super::conv::{images_per_worker, sum_partials, workers, MAX_COL_LEN, MIN_GEMM_COLUMNS};
use super::gemm::{sgemm, Operand};
use crate::backend::Conv2dGeom;
use multiversion::multiversion;
use rayon::prelude::*;
use std::ops::Range;

/// Fewest input and output channels for which the transforms cost less than
/// the multiplications they save (`benches/conv.rs`: at 32 channels the
/// forward pass is 1.2x as fast as im2col, both backward passes as fast; at
/// 256 and 512 channels all three are about 2x as fast). The tests take
/// every 3x3 stride-1 convolution through here, so that every model's
/// gradient checks and parity with Paddle run on this path.
#[cfg(not(test))]
const MIN_CHANNELS: usize = 32;
#[cfg(test)]
const MIN_CHANNELS: usize = 1;

/// Fewest 2x2 output blocks (over the batch) for which the GEMMs' savings
/// pay for transforming every filter, a fixed cost per call: a 256-channel
/// conv on a 16x16 map (64 blocks) runs 1.2-1.35x as fast through im2col in
/// every pass, on 24x24 (144 blocks) 1.05-1.3x as fast through here
/// (`benches/conv.rs`). Small maps are the deep stages and the upper
/// pyramid levels of small pictures (RetinaNet at 256 pixels: res4, res5,
/// P4-P7). The tests take even one block through here, as for
/// `MIN_CHANNELS`.
#[cfg(not(test))]
const MIN_TILES: usize = 100;
#[cfg(test)]
const MIN_TILES: usize = 1;

/// Values per 4x4 tile.
const TILE: usize = 16;

/// Whether `g` runs here rather than through im2col. The backward data pass
/// pads by `2 - pad`, hence at most 2.
pub(super) fn applies(g: &Conv2dGeom) -> bool {
    g.kernel_h == 3
        && g.kernel_w == 3
        && g.stride_h == 1
        && g.stride_w == 1
        && g.dilation_h == 1
        && g.dilation_w == 1
        && g.groups == 1
        && g.pad_h <= 2
        && g.pad_w <= 2
        && g.c_in >= MIN_CHANNELS
        && g.c_out >= MIN_CHANNELS
        && blocks(g) >= MIN_TILES
}

/// 2x2 output blocks over the batch.
fn blocks(g: &Conv2dGeom) -> usize {
    let (tiles_h, tiles_w) = tiles(g);
    g.batch * tiles_h * tiles_w
}

/// 2x2 output blocks of one image: (rows, columns).
fn tiles(g: &Conv2dGeom) -> (usize, usize) {
    (g.h_out().div_ceil(2), g.w_out().div_ceil(2))
}

/// The convolution whose output is `g`'s input gradient: `dy` in, `dx` out,
/// padded by `2 - pad`.
fn transposed(g: &Conv2dGeom) -> Conv2dGeom {
    Conv2dGeom {
        c_in: g.c_out,
        h_in: g.h_out(),
        w_in: g.w_out(),
        c_out: g.c_in,
        pad_h: 2 - g.pad_h,
        pad_w: 2 - g.pad_w,
        ..*g
    }
}

/// How one convolution's work is cut: 2x2 output blocks (tiles), images
/// split into one run per worker, runs into chunks of images whose tiles
/// share the GEMMs, and the tile rows of a chunk into bands whose `V` and
/// `M` fit in `MAX_COL_LEN` values.
struct Plan {
    tiles_h: usize,
    tiles_w: usize,
    images_per_gemm: usize,
    band_rows: usize,
}

impl Plan {
    fn new(g: &Conv2dGeom) -> Plan {
        let (tiles_h, tiles_w) = tiles(g);
        let images_per_gemm = MIN_GEMM_COLUMNS
            .div_ceil(tiles_h * tiles_w)
            .clamp(1, images_per_worker(g));
        let row_len = TILE * (g.c_in + g.c_out) * images_per_gemm * tiles_w;
        Plan {
            tiles_h,
            tiles_w,
            images_per_gemm,
            band_rows: (MAX_COL_LEN / row_len).clamp(1, tiles_h),
        }
    }

    fn bands(&self) -> impl Iterator<Item = Range<usize>> {
        let (rows, h) = (self.band_rows, self.tiles_h);
        (0..h).step_by(rows).map(move |r| r..(r + rows).min(h))
    }

    /// Most tile columns one band's GEMMs have.
    fn max_cols(&self) -> usize {
        self.images_per_gemm * self.band_rows * self.tiles_w
    }

    /// A worker's scratch: `V`, `M` and a partial filter gradient.
    fn worker_len(&self, g: &Conv2dGeom) -> usize {
        TILE * ((g.c_in + g.c_out) * self.max_cols() + g.c_in * g.c_out)
    }
}

/// The shared transformed filters, then each worker's scratch, for the
/// forward and both backward passes.
pub(super) fn workspace_len(g: &Conv2dGeom) -> usize {
    let len = |g: &Conv2dGeom| workers(g) * Plan::new(g).worker_len(g);
    TILE * g.c_in * g.c_out + len(g).max(len(&transposed(g)))
}

/// `y = conv(x, w) + bias`.
pub(super) fn forward(
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    workspace: &mut [f32],
) {
    let (u, scratch) = workspace.split_at_mut(TILE * g.c_in * g.c_out);
    transform_filters(g.c_out, g.c_in, |co, ci| filter(w, g.c_in, co, ci), u);
    convolve(g, x, u, bias, y, false, scratch);
}

/// `dx = d conv / d x` applied to `dy`, or `dx +=` it with `accumulate`.
pub(super) fn backward_data(
    g: &Conv2dGeom,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    workspace: &mut [f32],
) {
    let (u, scratch) = workspace.split_at_mut(TILE * g.c_in * g.c_out);
    // Output channel `ci` of the transposed convolution reads input channel
    // `co` through `w[co][ci]` turned by 180 degrees.
    let rotated = |ci: usize, co: usize| {
        let mut f = filter(w, g.c_in, co, ci);
        f.reverse();
        f
    };
    transform_filters(g.c_in, g.c_out, rotated, u);
    convolve(&transposed(g), dy, u, None, dx, accumulate, scratch);
}

/// `dw = d conv / d w` applied to `dy` (the bias gradient is the caller's).
pub(super) fn backward_filter(
    g: &Conv2dGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    workspace: &mut [f32],
) {
    let plan = Plan::new(g);
    let (du, scratch) = workspace.split_at_mut(TILE * g.c_in * g.c_out);
    let (in_image, out_image) = (g.c_in * g.h_in * g.w_in, g.c_out * g.h_out() * g.w_out());
    let ipw = images_per_worker(g);
    let runs = g.batch.div_ceil(ipw);
    let worker_len = plan.worker_len(g);
    // Each worker sums its run's gradient, in the Winograd domain, into the
    // last part of its scratch.
    scratch[..runs * worker_len]
        .par_chunks_mut(worker_len)
        .zip(x[..g.input_len()].par_chunks(ipw * in_image))
        .zip(dy[..g.output_len()].par_chunks(ipw * out_image))
        .for_each(|((ws, x_run), dy_run)| {
            let (v, rest) = ws.split_at_mut(TILE * g.c_in * plan.max_cols());
            let (dm, partial) = rest.split_at_mut(TILE * g.c_out * plan.max_cols());
            let mut first = true;
            let m = plan.images_per_gemm;
            for (x_chunk, dy_chunk) in x_run.chunks(m * in_image).zip(dy_run.chunks(m * out_image))
            {
                let images = x_chunk.len() / in_image;
                for band in plan.bands() {
                    let cols = images * band.len() * plan.tiles_w;
                    transform_input(
                        g,
                        &plan,
                        x_chunk,
                        images,
                        band.clone(),
                        &mut v[..TILE * g.c_in * cols],
                    );
                    transform_output_grad(
                        g,
                        &plan,
                        dy_chunk,
                        images,
                        band,
                        &mut dm[..TILE * g.c_out * cols],
                    );
                    // dU[xi] [c_out x c_in] (+)= dM[xi] [c_out x cols] * V[xi]^T:
                    // 16 independent products, one task each.
                    let (dm, v) = (&*dm, &*v);
                    partial
                        .par_chunks_mut(g.c_out * g.c_in)
                        .enumerate()
                        .for_each(|(xi, du_xi)| {
                            let lhs = Operand::new(&dm[xi * cols..], TILE * cols);
                            let rhs = Operand::transposed(&v[xi * cols..], TILE * cols);
                            let (m, n) = (g.c_out, g.c_in);
                            sgemm(m, n, cols, lhs, rhs, du_xi, n, !first, 1);
                        });
                    first = false;
                }
            }
        });
    let partial_at = worker_len - TILE * g.c_in * g.c_out;
    sum_partials(&scratch[..runs * worker_len], worker_len, partial_at, du);
    // dg = G^T dU G for every filter.
    let du = &*du;
    dw[..g.weight_len()]
        .par_chunks_mut(9)
        .enumerate()
        .for_each(|(f, dg)| {
            let at = |xi: usize| du[xi * g.c_out * g.c_in + f];
            dg.copy_from_slice(&filter_grad_transform(std::array::from_fn(at)));
        });
}

/// Filter `(co, ci)` of `w` (`[c_out][c_in][3][3]`), row-major.
fn filter(w: &[f32], c_in: usize, co: usize, ci: usize) -> [f32; 9] {
    w[(co * c_in + ci) * 9..][..9].try_into().unwrap()
}

/// `u[xi][o][i] = (G f G^T)[xi]` for `f = filter(o, i)`, every output
/// channel `o < outputs` and input channel `i < inputs`.
fn transform_filters(
    outputs: usize,
    inputs: usize,
    filter: impl Fn(usize, usize) -> [f32; 9] + Sync,
    u: &mut [f32],
) {
    let len = outputs * inputs;
    // Each thread transforms a run of filters into its own rows of every
    // `u[xi]`: the 16 planes are split alike and zipped.
    let chunk = len.div_ceil(4 * rayon::current_num_threads()).max(1);
    let mut runs: Vec<Vec<&mut [f32]>> = (0..len.div_ceil(chunk)).map(|_| Vec::new()).collect();
    for plane in u[..TILE * len].chunks_mut(len) {
        for (run, part) in runs.iter_mut().zip(plane.chunks_mut(chunk)) {
            run.push(part);
        }
    }
    runs.into_par_iter().enumerate().for_each(|(r, mut parts)| {
        for k in 0..parts[0].len() {
            let f = r * chunk + k;
            let t = filter_transform(&filter(f / inputs, f % inputs));
            for (xi, part) in parts.iter_mut().enumerate() {
                part[k] = t[xi];
            }
        }
    });
}

/// `G f G^T` (4x4, row-major) of a 3x3 filter.
fn filter_transform(f: &[f32; 9]) -> [f32; 16] {
    // t = G f, 4x3.
    let mut t = [[0.0f32; 3]; 4];
    for c in 0..3 {
        let (f0, f1, f2) = (f[c], f[3 + c], f[6 + c]);
        t[0][c] = f0;
        t[1][c] = 0.5 * (f0 + f1 + f2);
        t[2][c] = 0.5 * (f0 - f1 + f2);
        t[3][c] = f2;
    }
    let mut u = [0.0f32; 16];
    for (r, [t0, t1, t2]) in t.into_iter().enumerate() {
        u[4 * r] = t0;
        u[4 * r + 1] = 0.5 * (t0 + t1 + t2);
        u[4 * r + 2] = 0.5 * (t0 - t1 + t2);
        u[4 * r + 3] = t2;
    }
    u
}

/// `G^T du G` (3x3): the adjoint of `filter_transform`.
fn filter_grad_transform(du: [f32; 16]) -> [f32; 9] {
    // t = G^T du, 3x4.
    let mut t = [[0.0f32; 4]; 3];
    for c in 0..4 {
        let (d0, d1, d2, d3) = (du[c], du[4 + c], du[8 + c], du[12 + c]);
        t[0][c] = d0 + 0.5 * (d1 + d2);
        t[1][c] = 0.5 * (d1 - d2);
        t[2][c] = 0.5 * (d1 + d2) + d3;
    }
    let mut dg = [0.0f32; 9];
    for (r, [t0, t1, t2, t3]) in t.into_iter().enumerate() {
        dg[3 * r] = t0 + 0.5 * (t1 + t2);
        dg[3 * r + 1] = 0.5 * (t1 - t2);
        dg[3 * r + 2] = 0.5 * (t1 + t2) + t3;
    }
    dg
}

/// `y (+)= conv(x)` through the transformed filters `u`: for each chunk of
/// images and band of tile rows, `V` of the input, the 16 GEMMs into `M`,
/// and `M`'s output transform into `y`.
fn convolve(
    g: &Conv2dGeom,
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    accumulate: bool,
    scratch: &mut [f32],
) {
    let plan = Plan::new(g);
    let (in_image, out_image) = (g.c_in * g.h_in * g.w_in, g.c_out * g.h_out() * g.w_out());
    let ipw = images_per_worker(g);
    y[..g.output_len()]
        .par_chunks_mut(ipw * out_image)
        .zip(x[..g.input_len()].par_chunks(ipw * in_image))
        .zip(scratch.par_chunks_mut(plan.worker_len(g)))
        .for_each(|((y_run, x_run), ws)| {
            let (v, m) = ws.split_at_mut(TILE * g.c_in * plan.max_cols());
            let k = plan.images_per_gemm;
            for (y_chunk, x_chunk) in y_run
                .chunks_mut(k * out_image)
                .zip(x_run.chunks(k * in_image))
            {
                let images = x_chunk.len() / in_image;
                for band in plan.bands() {
                    let cols = images * band.len() * plan.tiles_w;
                    let v = &mut v[..TILE * g.c_in * cols];
                    let m = &mut m[..TILE * g.c_out * cols];
                    transform_input(g, &plan, x_chunk, images, band.clone(), v);
                    // M[xi] [c_out x cols] = U[xi] [c_out x c_in] * V[xi] [c_in x cols]:
                    // 16 independent products, one task each.
                    m.par_chunks_mut(g.c_out * cols)
                        .enumerate()
                        .for_each(|(xi, m_xi)| {
                            let lhs = Operand::new(&u[xi * g.c_out * g.c_in..], g.c_in);
                            let rhs = Operand::new(&v[xi * cols..], TILE * cols);
                            sgemm(g.c_out, cols, g.c_in, lhs, rhs, m_xi, cols, false, 1);
                        });
                    transform_output(g, &plan, m, images, band, bias, accumulate, y_chunk);
                }
            }
        });
}

/// Where tile row `ty` of image `i` starts in a band's columns.
fn tile_row_at(plan: &Plan, band: &Range<usize>, i: usize, ty: usize) -> usize {
    (i * band.len() + ty - band.start) * plan.tiles_w
}

/// `V` of tile rows `band` of a chunk of `images` images, one input channel
/// per task: `v[ci][xi][col]`.
fn transform_input(
    g: &Conv2dGeom,
    plan: &Plan,
    x_chunk: &[f32],
    images: usize,
    band: Range<usize>,
    v: &mut [f32],
) {
    let cols = v.len() / (TILE * g.c_in);
    let plane = g.h_in * g.w_in;
    v.par_chunks_mut(TILE * cols)
        .enumerate()
        .for_each(|(ci, v_ci)| {
            let mut rows = vec![0.0f32; 16 * (plan.tiles_w + 1)];
            for i in 0..images {
                let x_plane = &x_chunk[(i * g.c_in + ci) * plane..][..plane];
                for ty in band.clone() {
                    let at = tile_row_at(plan, &band, i, ty);
                    input_tile_row(g, plan.tiles_w, x_plane, ty, &mut rows, v_ci, cols, at);
                }
            }
        });
}

/// `even[j]`, `odd[j]` = padded columns `2j`, `2j + 1` of `x_row` (input
/// column `px - pad`, zero outside the row). The columns inside the row
/// are one run of pairs, split without bounds tests.
#[inline(always)]
fn split_columns(x_row: &[f32], pad: usize, even: &mut [f32], odd: &mut [f32]) {
    let w = x_row.len();
    // Pairs j whose both columns are inside: pad <= 2j, 2j + 1 < w + pad.
    let first = pad.div_ceil(2);
    let end = ((w + pad) / 2).clamp(first, even.len());
    let at = |px: usize| {
        px.checked_sub(pad)
            .and_then(|ix| x_row.get(ix))
            .copied()
            .unwrap_or(0.0)
    };
    for j in (0..first).chain(end..even.len()) {
        even[j] = at(2 * j);
        odd[j] = at(2 * j + 1);
    }
    let pairs = x_row[2 * first - pad..].chunks_exact(2);
    for ((e, o), pair) in even[first..end]
        .iter_mut()
        .zip(&mut odd[first..end])
        .zip(pairs)
    {
        *e = pair[0];
        *o = pair[1];
    }
}

/// `V` of tile row `ty` of one plane into `v_ci[xi * cols + at ..]`, using
/// `rows` (16 rows of `tiles_w + 1`) as scratch.
///
/// The four input rows under the tile row are split into their even and odd
/// padded columns (tile `tx` covers padded columns `2tx .. 2tx + 4`: even
/// `tx`, odd `tx`, even `tx + 1`, odd `tx + 1`); `B^T` then combines rows and
/// `B` columns, each a loop over the tiles.
#[multiversion(targets = "simd")]
#[allow(clippy::too_many_arguments)]
fn input_tile_row(
    g: &Conv2dGeom,
    tiles_w: usize,
    x_plane: &[f32],
    ty: usize,
    rows: &mut [f32],
    v_ci: &mut [f32],
    cols: usize,
    at: usize,
) {
    let n = tiles_w + 1;
    let (d, t) = rows.split_at_mut(8 * n);
    // d: even then odd columns of the 4 input rows.
    for r in 0..4 {
        let (even, odd) = d[2 * r * n..][..2 * n].split_at_mut(n);
        let iy = (2 * ty + r) as isize - g.pad_h as isize;
        if iy < 0 || iy >= g.h_in as isize {
            even.fill(0.0);
            odd.fill(0.0);
            continue;
        }
        let x_row = &x_plane[iy as usize * g.w_in..][..g.w_in];
        split_columns(x_row, g.pad_w, even, odd);
    }
    // t = B^T d, row by row, even and odd halves alike.
    let (d0, d1, d2, d3) = (&d[..2 * n], &d[2 * n..4 * n], &d[4 * n..6 * n], &d[6 * n..]);
    let (t0, rest) = t.split_at_mut(2 * n);
    let (t1, rest) = rest.split_at_mut(2 * n);
    let (t2, t3) = rest.split_at_mut(2 * n);
    for j in 0..2 * n {
        t0[j] = d0[j] - d2[j];
        t1[j] = d1[j] + d2[j];
        t2[j] = d2[j] - d1[j];
        t3[j] = d1[j] - d3[j];
    }
    // V = t B: four values per row of t and tile.
    for (r, t_r) in [&*t0, &*t1, &*t2, &*t3].into_iter().enumerate() {
        let (even, odd) = t_r.split_at(n);
        let [v0, v1, v2, v3] = [0, 1, 2, 3].map(|c| (4 * r + c) * cols + at);
        for tx in 0..tiles_w {
            v_ci[v0 + tx] = even[tx] - even[tx + 1];
            v_ci[v1 + tx] = odd[tx] + even[tx + 1];
            v_ci[v2 + tx] = even[tx + 1] - odd[tx];
            v_ci[v3 + tx] = odd[tx] - odd[tx + 1];
        }
    }
}

/// `y (+)= A^T M A (+ bias)` for tile rows `band` of a chunk of images, one
/// output plane per task.
#[allow(clippy::too_many_arguments)]
fn transform_output(
    g: &Conv2dGeom,
    plan: &Plan,
    m: &[f32],
    images: usize,
    band: Range<usize>,
    bias: Option<&[f32]>,
    accumulate: bool,
    y_chunk: &mut [f32],
) {
    let cols = m.len() / (TILE * g.c_out);
    let plane = g.h_out() * g.w_out();
    y_chunk[..images * g.c_out * plane]
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(p, y_plane)| {
            let (i, co) = (p / g.c_out, p % g.c_out);
            let m_co = &m[co * cols..];
            let base = bias.map_or(0.0, |b| b[co]);
            let mut t = vec![0.0f32; 4 * plan.tiles_w];
            for ty in band.clone() {
                let at = tile_row_at(plan, &band, i, ty);
                let tw = plan.tiles_w;
                let xi_stride = g.c_out * cols;
                output_tile_row(
                    g, tw, m_co, xi_stride, at, ty, &mut t, base, accumulate, y_plane,
                );
            }
        });
}

/// Output rows `2ty, 2ty + 1` (those inside the map) of one plane from the
/// tiles' `M` at `m_co[xi * xi_stride + at ..]`, using `t` (4 rows of `tiles_w`)
/// as scratch.
#[multiversion(targets = "simd")]
#[allow(clippy::too_many_arguments)]
fn output_tile_row(
    g: &Conv2dGeom,
    tiles_w: usize,
    m_co: &[f32],
    xi_stride: usize,
    at: usize,
    ty: usize,
    t: &mut [f32],
    base: f32,
    accumulate: bool,
    y_plane: &mut [f32],
) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let m = |xi: usize| &m_co[xi * xi_stride + at..][..tiles_w];
    for r in 0..2.min(h_out - 2 * ty) {
        // t[c] = (A^T M)[r][c] for each column c of the tiles.
        for c in 0..4 {
            let (m0, m1, m2, m3) = (m(c), m(4 + c), m(8 + c), m(12 + c));
            let t_c = &mut t[c * tiles_w..][..tiles_w];
            if r == 0 {
                for tx in 0..tiles_w {
                    t_c[tx] = m0[tx] + m1[tx] + m2[tx];
                }
            } else {
                for tx in 0..tiles_w {
                    t_c[tx] = m1[tx] - m2[tx] - m3[tx];
                }
            }
        }
        // Y[r] = t A: (t0 + t1 + t2, t1 - t2 - t3), the second column only
        // where it is inside the map.
        let (t0, rest) = t.split_at(tiles_w);
        let (t1, rest) = rest.split_at(tiles_w);
        let (t2, t3) = rest.split_at(tiles_w);
        let y_row = &mut y_plane[(2 * ty + r) * w_out..][..w_out];
        let blocks = (t0.iter().zip(t1))
            .zip(t2.iter().zip(t3))
            .map(|((a, b), (c, d))| [a + b + c, b - c - d]);
        for (pair, block) in y_row.chunks_mut(2).zip(blocks) {
            for (y, value) in pair.iter_mut().zip(block) {
                *y = if accumulate { *y } else { base } + value;
            }
        }
    }
}

/// `dM = A dY A^T` of tile rows `band` of a chunk of images' output
/// gradient (zero beyond the map), one output channel per task:
/// `dm[co][xi][col]`.
fn transform_output_grad(
    g: &Conv2dGeom,
    plan: &Plan,
    dy_chunk: &[f32],
    images: usize,
    band: Range<usize>,
    dm: &mut [f32],
) {
    let cols = dm.len() / (TILE * g.c_out);
    let plane = g.h_out() * g.w_out();
    dm.par_chunks_mut(TILE * cols)
        .enumerate()
        .for_each(|(co, dm_co)| {
            let mut rows = vec![0.0f32; 4 * plan.tiles_w];
            for i in 0..images {
                let dy_plane = &dy_chunk[(i * g.c_out + co) * plane..][..plane];
                for ty in band.clone() {
                    let at = tile_row_at(plan, &band, i, ty);
                    output_grad_tile_row(g, plan.tiles_w, dy_plane, ty, &mut rows, dm_co, cols, at);
                }
            }
        });
}

/// `dM` of tile row `ty` of one gradient plane into `dm_co[xi * cols + at ..]`,
/// using `rows` (4 rows of `tiles_w`) as scratch: the two gradient rows'
/// even and odd columns.
#[multiversion(targets = "simd")]
#[allow(clippy::too_many_arguments)]
fn output_grad_tile_row(
    g: &Conv2dGeom,
    tiles_w: usize,
    dy_plane: &[f32],
    ty: usize,
    rows: &mut [f32],
    dm_co: &mut [f32],
    cols: usize,
    at: usize,
) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    for r in 0..2 {
        let (even, odd) = rows[2 * r * tiles_w..][..2 * tiles_w].split_at_mut(tiles_w);
        let oy = 2 * ty + r;
        if oy >= h_out {
            even.fill(0.0);
            odd.fill(0.0);
            continue;
        }
        let dy_row = &dy_plane[oy * w_out..][..w_out];
        for tx in 0..tiles_w {
            even[tx] = dy_row[2 * tx];
            odd[tx] = dy_row.get(2 * tx + 1).copied().unwrap_or(0.0);
        }
    }
    let (e0, o0) = rows[..2 * tiles_w].split_at(tiles_w);
    let (e1, o1) = rows[2 * tiles_w..].split_at(tiles_w);
    // t = A dY: rows dY0, dY0 + dY1, dY0 - dY1, -dY1 (even and odd columns);
    // then dM[r] = t[r] A^T: (even, even + odd, even - odd, -odd).
    for tx in 0..tiles_w {
        let t_even = [e0[tx], e0[tx] + e1[tx], e0[tx] - e1[tx], -e1[tx]];
        let t_odd = [o0[tx], o0[tx] + o1[tx], o0[tx] - o1[tx], -o1[tx]];
        for r in 0..4 {
            let (e, o) = (t_even[r], t_odd[r]);
            dm_co[(4 * r) * cols + at + tx] = e;
            dm_co[(4 * r + 1) * cols + at + tx] = e + o;
            dm_co[(4 * r + 2) * cols + at + tx] = e - o;
            dm_co[(4 * r + 3) * cols + at + tx] = -o;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    proptest! {
        /// `<G f G^T, du> = <f, G^T du G>`: the filter gradient is the
        /// adjoint of the filter transform.
        #[test]
        fn filter_transforms_are_adjoint(
            f in prop::array::uniform9(-1.0f32..1.0),
            du in prop::array::uniform16(-1.0f32..1.0),
        ) {
            let lhs = dot(&filter_transform(&f), &du);
            let rhs = dot(&f, &filter_grad_transform(du));
            prop_assert!((lhs - rhs).abs() < 1e-5, "{lhs} vs {rhs}");
        }
    }

    /// A 4x4 input tile convolved through the transforms equals the direct
    /// 3x3 correlation at its four outputs.
    #[test]
    fn one_tile_equals_direct_correlation() {
        let d: Vec<f32> = (0..16).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let f: [f32; 9] = std::array::from_fn(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0);
        let g = Conv2dGeom {
            batch: 1,
            c_in: 1,
            h_in: 4,
            w_in: 4,
            c_out: 1,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 1,
            stride_w: 1,
            pad_h: 0,
            pad_w: 0,
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        };
        let mut v = vec![0.0; 16];
        let mut rows = vec![0.0; 16 * 2];
        input_tile_row(&g, 1, &d, 0, &mut rows, &mut v, 1, 0);
        let u = filter_transform(&f);
        let m: Vec<f32> = u.iter().zip(&v).map(|(a, b)| a * b).collect();
        let mut y = vec![0.0; 4];
        let mut t = vec![0.0; 4];
        output_tile_row(&g, 1, &m, 1, 0, 0, &mut t, 0.0, false, &mut y);
        for oy in 0..2 {
            for ox in 0..2 {
                let want: f32 = (0..9)
                    .map(|k| f[k] * d[(oy + k / 3) * 4 + ox + k % 3])
                    .sum();
                assert!((y[oy * 2 + ox] - want).abs() < 1e-5, "{oy} {ox}");
            }
        }
    }
}
