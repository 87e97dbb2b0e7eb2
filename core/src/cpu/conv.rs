//! Convolution on the CPU.
//!
//! Three paths, chosen by shape:
//! - 1x1 stride-1 unpadded: the image *is* the `[c_in, h*w]` matrix, so each
//!   group is a single GEMM (no copies).
//! - depthwise (one channel per group): a direct loop per plane; im2col would
//!   turn it into thousands of tiny GEMMs.
//! - everything else: im2col into a `[c_in/g * kh * kw, h_out * w_out]`
//!   matrix, then GEMM with the `[c_out/g, c_in/g * kh * kw]` weights.
//!
//! Images are split into one contiguous run per worker thread; each worker has
//! its own slice of the workspace (its im2col matrix and, for the filter
//! gradient, its partial weight gradient, summed at the end). With a single
//! image the GEMM itself is threaded instead.

use super::gemm::{sgemm, Operand};
use crate::backend::Conv2dGeom;
use rayon::prelude::*;

/// Threads to split the batch over.
fn workers(g: &Conv2dGeom) -> usize {
    g.batch.min(rayon::current_num_threads()).max(1)
}

/// Threads each GEMM may use: all of them when there is only one worker.
fn gemm_threads(g: &Conv2dGeom) -> usize {
    if workers(g) == 1 {
        rayon::current_num_threads()
    } else {
        1
    }
}

fn images_per_worker(g: &Conv2dGeom) -> usize {
    g.batch.div_ceil(workers(g))
}

/// Rows of the im2col matrix of one group (its GEMM depth).
fn col_rows(g: &Conv2dGeom) -> usize {
    g.c_in_per_group() * g.kernel_h * g.kernel_w
}

fn col_len(g: &Conv2dGeom) -> usize {
    if g.is_pointwise() || g.is_depthwise() {
        0
    } else {
        col_rows(g) * g.h_out() * g.w_out()
    }
}

/// Per-worker scratch: the im2col matrix, then a partial weight gradient.
fn worker_workspace_len(g: &Conv2dGeom) -> usize {
    if g.is_depthwise() {
        0
    } else {
        col_len(g) + g.weight_len()
    }
}

pub fn workspace_len(g: &Conv2dGeom) -> usize {
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

/// Unrolls one group of one image into `col` (`col_rows x h_out*w_out`);
/// taps that fall in the padding are zero.
fn im2col(g: &Conv2dGeom, x_group: &[f32], col: &mut [f32]) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let plane = g.h_in * g.w_in;
    for c in 0..g.c_in_per_group() {
        let x_plane = &x_group[c * plane..(c + 1) * plane];
        for ki in 0..g.kernel_h {
            for kj in 0..g.kernel_w {
                let row = (c * g.kernel_h + ki) * g.kernel_w + kj;
                let col_row = &mut col[row * h_out * w_out..(row + 1) * h_out * w_out];
                for oy in 0..h_out {
                    let iy = (oy * g.stride_h + ki * g.dilation_h) as isize - g.pad_h as isize;
                    let out = &mut col_row[oy * w_out..(oy + 1) * w_out];
                    if iy < 0 || iy >= g.h_in as isize {
                        out.fill(0.0);
                        continue;
                    }
                    let x_row = &x_plane[iy as usize * g.w_in..(iy as usize + 1) * g.w_in];
                    for (ox, o) in out.iter_mut().enumerate() {
                        let ix = (ox * g.stride_w + kj * g.dilation_w) as isize - g.pad_w as isize;
                        *o = if ix >= 0 && ix < g.w_in as isize {
                            x_row[ix as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// The adjoint of `im2col`: adds every column entry back onto the input
/// position it was copied from. `x_group` must be zeroed first.
fn col2im(g: &Conv2dGeom, col: &[f32], x_group: &mut [f32]) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let plane = g.h_in * g.w_in;
    for c in 0..g.c_in_per_group() {
        let x_plane = &mut x_group[c * plane..(c + 1) * plane];
        for ki in 0..g.kernel_h {
            for kj in 0..g.kernel_w {
                let row = (c * g.kernel_h + ki) * g.kernel_w + kj;
                let col_row = &col[row * h_out * w_out..(row + 1) * h_out * w_out];
                for oy in 0..h_out {
                    let iy = (oy * g.stride_h + ki * g.dilation_h) as isize - g.pad_h as isize;
                    if iy < 0 || iy >= g.h_in as isize {
                        continue;
                    }
                    let x_row = &mut x_plane[iy as usize * g.w_in..(iy as usize + 1) * g.w_in];
                    for (ox, v) in col_row[oy * w_out..(oy + 1) * w_out].iter().enumerate() {
                        let ix = (ox * g.stride_w + kj * g.dilation_w) as isize - g.pad_w as isize;
                        if ix >= 0 && ix < g.w_in as isize {
                            x_row[ix as usize] += v;
                        }
                    }
                }
            }
        }
    }
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
    if g.is_depthwise() {
        depthwise_forward(g, x, w, bias, y);
        return;
    }
    let in_image = g.c_in * g.h_in * g.w_in;
    let out_plane = g.h_out() * g.w_out();
    let out_image = g.c_out * out_plane;
    let ipw = images_per_worker(g);
    let threads = gemm_threads(g);
    let k = col_rows(g);
    let (cin_g, cout_g) = (g.c_in_per_group(), g.c_out_per_group());
    let wws = worker_workspace_len(g);
    y[..g.output_len()]
        .par_chunks_mut(ipw * out_image)
        .zip(x[..g.input_len()].par_chunks(ipw * in_image))
        .zip(workspace.par_chunks_mut(wws.max(1)))
        .for_each(|((y_run, x_run), ws)| {
            let col = &mut ws[..col_len(g)];
            for (y_img, x_img) in y_run.chunks_mut(out_image).zip(x_run.chunks(in_image)) {
                for grp in 0..g.groups {
                    let x_group =
                        &x_img[grp * cin_g * g.h_in * g.w_in..][..cin_g * g.h_in * g.w_in];
                    let rhs = if g.is_pointwise() {
                        Operand::new(x_group, out_plane)
                    } else {
                        im2col(g, x_group, col);
                        Operand::new(col, out_plane)
                    };
                    let w_group = &w[grp * cout_g * k..(grp + 1) * cout_g * k];
                    let y_group =
                        &mut y_img[grp * cout_g * out_plane..(grp + 1) * cout_g * out_plane];
                    sgemm(
                        cout_g,
                        out_plane,
                        k,
                        Operand::new(w_group, k),
                        rhs,
                        y_group,
                        out_plane,
                        false,
                        threads,
                    );
                }
                if let Some(bias) = bias {
                    for (plane, b) in y_img.chunks_mut(out_plane).zip(bias) {
                        plane.iter_mut().for_each(|v| *v += b);
                    }
                }
            }
        });
}

pub fn backward_data(g: &Conv2dGeom, dy: &[f32], w: &[f32], dx: &mut [f32], workspace: &mut [f32]) {
    check_lengths(g, dx.len(), w.len(), dy.len(), workspace.len());
    if g.is_depthwise() {
        depthwise_backward_data(g, dy, w, dx);
        return;
    }
    let in_image = g.c_in * g.h_in * g.w_in;
    let out_plane = g.h_out() * g.w_out();
    let out_image = g.c_out * out_plane;
    let ipw = images_per_worker(g);
    let threads = gemm_threads(g);
    let k = col_rows(g);
    let (cin_g, cout_g) = (g.c_in_per_group(), g.c_out_per_group());
    let wws = worker_workspace_len(g);
    dx[..g.input_len()]
        .par_chunks_mut(ipw * in_image)
        .zip(dy[..g.output_len()].par_chunks(ipw * out_image))
        .zip(workspace.par_chunks_mut(wws.max(1)))
        .for_each(|((dx_run, dy_run), ws)| {
            let col = &mut ws[..col_len(g)];
            for (dx_img, dy_img) in dx_run.chunks_mut(in_image).zip(dy_run.chunks(out_image)) {
                for grp in 0..g.groups {
                    let w_group = &w[grp * cout_g * k..(grp + 1) * cout_g * k];
                    let dy_group =
                        &dy_img[grp * cout_g * out_plane..(grp + 1) * cout_g * out_plane];
                    let dx_group =
                        &mut dx_img[grp * cin_g * g.h_in * g.w_in..][..cin_g * g.h_in * g.w_in];
                    // [k x out_plane] = w_group^T [k x cout_g] * dy_group [cout_g x out_plane]
                    let lhs = Operand::transposed(w_group, k);
                    let rhs = Operand::new(dy_group, out_plane);
                    if g.is_pointwise() {
                        sgemm(
                            k, out_plane, cout_g, lhs, rhs, dx_group, out_plane, false, threads,
                        );
                    } else {
                        sgemm(
                            k, out_plane, cout_g, lhs, rhs, col, out_plane, false, threads,
                        );
                        dx_group.fill(0.0);
                        col2im(g, col, dx_group);
                    }
                }
            }
        });
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
    let out_plane = g.h_out() * g.w_out();
    if let Some(dbias) = dbias {
        assert!(
            dbias.len() >= g.c_out,
            "conv2d: bias gradient buffer too short"
        );
        dbias[..g.c_out]
            .par_iter_mut()
            .enumerate()
            .for_each(|(c, db)| {
                let mut sum = 0.0f64;
                for n in 0..g.batch {
                    let plane = &dy[(n * g.c_out + c) * out_plane..][..out_plane];
                    sum += plane.iter().map(|&v| v as f64).sum::<f64>();
                }
                *db = sum as f32;
            });
    }
    if g.is_depthwise() {
        depthwise_backward_filter(g, x, dy, dw);
        return;
    }
    let in_image = g.c_in * g.h_in * g.w_in;
    let out_image = g.c_out * out_plane;
    let ipw = images_per_worker(g);
    let threads = gemm_threads(g);
    let k = col_rows(g);
    let (cin_g, cout_g) = (g.c_in_per_group(), g.c_out_per_group());
    let wws = worker_workspace_len(g);
    let wlen = g.weight_len();
    let used = workers(g) * wws;
    workspace[..used]
        .par_chunks_mut(wws)
        .zip(x[..g.input_len()].par_chunks(ipw * in_image))
        .zip(dy[..g.output_len()].par_chunks(ipw * out_image))
        .for_each(|((ws, x_run), dy_run)| {
            let (col, partial) = ws.split_at_mut(col_len(g));
            let mut first = true;
            for (x_img, dy_img) in x_run.chunks(in_image).zip(dy_run.chunks(out_image)) {
                for grp in 0..g.groups {
                    let x_group =
                        &x_img[grp * cin_g * g.h_in * g.w_in..][..cin_g * g.h_in * g.w_in];
                    let dy_group =
                        &dy_img[grp * cout_g * out_plane..(grp + 1) * cout_g * out_plane];
                    // dw_group [cout_g x k] += dy_group [cout_g x out_plane] * col^T [out_plane x k]
                    let rhs = if g.is_pointwise() {
                        Operand::transposed(x_group, out_plane)
                    } else {
                        im2col(g, x_group, col);
                        Operand::transposed(col, out_plane)
                    };
                    let dw_group = &mut partial[grp * cout_g * k..(grp + 1) * cout_g * k];
                    sgemm(
                        cout_g,
                        k,
                        out_plane,
                        Operand::new(dy_group, out_plane),
                        rhs,
                        dw_group,
                        k,
                        !first,
                        threads,
                    );
                }
                first = false;
            }
        });
    // Sum the workers' partial gradients (the workers that got no image never
    // exist: `par_chunks` made exactly one run per worker).
    let runs = g.batch.div_ceil(ipw);
    let dw = &mut dw[..wlen];
    dw.par_chunks_mut(4096)
        .enumerate()
        .for_each(|(chunk, out)| {
            let start = chunk * 4096;
            for (i, o) in out.iter_mut().enumerate() {
                *o = (0..runs)
                    .map(|r| workspace[r * wws + col_len(g) + start + i])
                    .sum();
            }
        });
}

// ---- depthwise: direct loops, one plane (image, channel) at a time ----

fn depthwise_forward(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let taps = g.kernel_h * g.kernel_w;
    let in_plane = g.h_in * g.w_in;
    y[..g.output_len()]
        .par_chunks_mut(h_out * w_out)
        .enumerate()
        .for_each(|(plane, y_plane)| {
            let c = plane % g.c_out;
            let x_plane = &x[plane * in_plane..(plane + 1) * in_plane];
            let w_c = &w[c * taps..(c + 1) * taps];
            let b = bias.map_or(0.0, |b| b[c]);
            for oy in 0..h_out {
                for ox in 0..w_out {
                    let mut acc = b;
                    for ki in 0..g.kernel_h {
                        let iy = (oy * g.stride_h + ki * g.dilation_h) as isize - g.pad_h as isize;
                        if iy < 0 || iy >= g.h_in as isize {
                            continue;
                        }
                        for kj in 0..g.kernel_w {
                            let ix =
                                (ox * g.stride_w + kj * g.dilation_w) as isize - g.pad_w as isize;
                            if ix >= 0 && ix < g.w_in as isize {
                                acc += w_c[ki * g.kernel_w + kj]
                                    * x_plane[iy as usize * g.w_in + ix as usize];
                            }
                        }
                    }
                    y_plane[oy * w_out + ox] = acc;
                }
            }
        });
}

fn depthwise_backward_data(g: &Conv2dGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let taps = g.kernel_h * g.kernel_w;
    let in_plane = g.h_in * g.w_in;
    dx[..g.input_len()]
        .par_chunks_mut(in_plane)
        .enumerate()
        .for_each(|(plane, dx_plane)| {
            let c = plane % g.c_in;
            let dy_plane = &dy[plane * h_out * w_out..(plane + 1) * h_out * w_out];
            let w_c = &w[c * taps..(c + 1) * taps];
            dx_plane.fill(0.0);
            for oy in 0..h_out {
                for ox in 0..w_out {
                    let d = dy_plane[oy * w_out + ox];
                    for ki in 0..g.kernel_h {
                        let iy = (oy * g.stride_h + ki * g.dilation_h) as isize - g.pad_h as isize;
                        if iy < 0 || iy >= g.h_in as isize {
                            continue;
                        }
                        for kj in 0..g.kernel_w {
                            let ix =
                                (ox * g.stride_w + kj * g.dilation_w) as isize - g.pad_w as isize;
                            if ix >= 0 && ix < g.w_in as isize {
                                dx_plane[iy as usize * g.w_in + ix as usize] +=
                                    w_c[ki * g.kernel_w + kj] * d;
                            }
                        }
                    }
                }
            }
        });
}

fn depthwise_backward_filter(g: &Conv2dGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let taps = g.kernel_h * g.kernel_w;
    let in_plane = g.h_in * g.w_in;
    dw[..g.weight_len()]
        .par_chunks_mut(taps)
        .enumerate()
        .for_each(|(c, dw_c)| {
            dw_c.fill(0.0);
            for n in 0..g.batch {
                let plane = n * g.c_in + c;
                let x_plane = &x[plane * in_plane..(plane + 1) * in_plane];
                let dy_plane = &dy[plane * h_out * w_out..(plane + 1) * h_out * w_out];
                for ki in 0..g.kernel_h {
                    for kj in 0..g.kernel_w {
                        let mut acc = 0.0;
                        for oy in 0..h_out {
                            let iy =
                                (oy * g.stride_h + ki * g.dilation_h) as isize - g.pad_h as isize;
                            if iy < 0 || iy >= g.h_in as isize {
                                continue;
                            }
                            for ox in 0..w_out {
                                let ix = (ox * g.stride_w + kj * g.dilation_w) as isize
                                    - g.pad_w as isize;
                                if ix >= 0 && ix < g.w_in as isize {
                                    acc += dy_plane[oy * w_out + ox]
                                        * x_plane[iy as usize * g.w_in + ix as usize];
                                }
                            }
                        }
                        dw_c[ki * g.kernel_w + kj] += acc;
                    }
                }
            }
        });
}
