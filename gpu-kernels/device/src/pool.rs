//! Max pooling over NCHW (square window, floor or ceil mode, padding that
//! never wins), forward and backward side by side. The backward pass recomputes
//! each window's winner from `x` (the first maximum in row-major order, as
//! the CPU backend), so forward stores nothing extra; one thread per input
//! pixel gathers the gradients of the outputs it won (no atomics).
use crate::{grid_stride, kernel};

/// Outputs along one axis; `ceil` non-zero for Paddle's `ceil_mode`.
#[inline(always)]
fn pooled(len: u32, size: u32, stride: u32, pad: u32, ceil: u32) -> u32 {
    let span = len + 2 * pad - size;
    if ceil != 0 {
        span.div_ceil(stride) + 1
    } else {
        span / stride + 1
    }
}

/// A square pooling window.
#[derive(Clone, Copy)]
struct Window {
    size: u32,
    stride: u32,
    pad: u32,
}

/// The maximum of output (oy, ox)'s window in one `h x w` plane, and its
/// index in the plane (the first one in row-major order on ties).
#[inline(always)]
unsafe fn window_max(
    plane: *const f32,
    h: u32,
    w: u32,
    oy: u32,
    ox: u32,
    win: Window,
) -> (f32, u32) {
    let mut best = f32::NEG_INFINITY;
    let mut best_at = u32::MAX;
    let mut ky = 0;
    while ky < win.size {
        let mut kx = 0;
        while kx < win.size {
            let iy = (oy * win.stride + ky).wrapping_sub(win.pad);
            let ix = (ox * win.stride + kx).wrapping_sub(win.pad);
            if iy < h && ix < w {
                let v = *plane.add((iy * w + ix) as usize);
                if v > best || best_at == u32::MAX {
                    best = v;
                    best_at = iy * w + ix;
                }
            }
            kx += 1;
        }
        ky += 1;
    }
    (best, best_at)
}

kernel! {
    /// `y = max over the window`, over `planes` = N*C planes.
    pub fn max_pool_forward(ctx, x: *const f32, y: *mut f32, planes: u32, h: u32, w: u32, size: u32, stride: u32, pad: u32, ceil: u32) {
        let (ho, wo) = (pooled(h, size, stride, pad, ceil), pooled(w, size, stride, pad, ceil));
        grid_stride(ctx, planes * ho * wo, |i| {
            let i = i as u32;
            let (plane, oy, ox) = (i / (ho * wo), i % (ho * wo) / wo, i % wo);
            *y.add(i as usize) = window_max(x.add((plane * h * w) as usize), h, w, oy, ox, Window { size, stride, pad }).0;
        });
    }
}

kernel! {
    /// `dx[p] = sum of dy over the outputs whose window's first maximum is p`.
    pub fn max_pool_backward(ctx, x: *const f32, dy: *const f32, dx: *mut f32, planes: u32, h: u32, w: u32, size: u32, stride: u32, pad: u32, ceil: u32) {
        let (ho, wo) = (pooled(h, size, stride, pad, ceil), pooled(w, size, stride, pad, ceil));
        grid_stride(ctx, planes * h * w, |i| {
            let i = i as u32;
            let (plane, at) = (i / (h * w), i % (h * w));
            let x_plane = x.add((plane * h * w) as usize);
            let (iy, ix) = (at / w + pad, at % w + pad);
            // Outputs o with o * stride <= i + pad < o * stride + size.
            let first = |p: u32| if p + 1 >= size { (p + 1 - size).div_ceil(stride) } else { 0 };
            let mut acc = 0.0;
            let mut oy = first(iy);
            while oy <= iy / stride && oy < ho {
                let mut ox = first(ix);
                while ox <= ix / stride && ox < wo {
                    if window_max(x_plane, h, w, oy, ox, Window { size, stride, pad }).1 == at {
                        acc += *dy.add((plane * ho * wo + oy * wo + ox) as usize);
                    }
                    ox += 1;
                }
                oy += 1;
            }
            *dx.add(i as usize) = acc;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn forward_and_backward_match_reference(planes in 1u32..4, h in 2u32..10, w in 2u32..10,
            size in 1u32..4, stride in 1u32..3, pad in 0u32..2, levels in 2u32..50, seed in 0u32..1000, ceil in 0u32..2) {
            prop_assume!(h + 2 * pad >= size && w + 2 * pad >= size && pad < size);
            // In ceil mode every window must still start inside the input.
            prop_assume!((pooled(h, size, stride, pad, ceil) - 1) * stride < h + pad);
            prop_assume!((pooled(w, size, stride, pad, ceil) - 1) * stride < w + pad);
            // Few distinct values, so ties happen and the first maximum must win.
            let x: Vec<f32> = (0..planes * h * w).map(|i| ((i * 7919 + seed) % levels) as f32).collect();
            let (ho, wo) = (pooled(h, size, stride, pad, ceil), pooled(w, size, stride, pad, ceil));
            let dy: Vec<f32> = (0..planes * ho * wo).map(|i| i as f32 * 0.5 + 1.0).collect();
            let (xb, yb) = (DeviceBuf::new(&x), DeviceBuf::filled(dy.len(), f32::NAN));
            let (dyb, dxb) = (DeviceBuf::new(&dy), DeviceBuf::filled(x.len(), f32::NAN));
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe { max_pool_forward(c, xb.ptr(), yb.ptr(), planes, h, w, size, stride, pad, ceil) });
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe { max_pool_backward(c, xb.ptr(), dyb.ptr(), dxb.ptr(), planes, h, w, size, stride, pad, ceil) });
            let mut want_dx = vec![0.0f32; x.len()];
            let y = yb.to_vec();
            for p in 0..planes { for oy in 0..ho { for ox in 0..wo {
                let mut best: Option<(f32, usize)> = None;
                for ky in 0..size { for kx in 0..size {
                    let (iy, ix) = ((oy * stride + ky) as i64 - pad as i64, (ox * stride + kx) as i64 - pad as i64);
                    if iy >= 0 && ix >= 0 && iy < h as i64 && ix < w as i64 {
                        let at = (p * h * w) as usize + iy as usize * w as usize + ix as usize;
                        if best.is_none_or(|(v, _)| x[at] > v) { best = Some((x[at], at)); }
                    }
                } }
                let (v, at) = best.unwrap();
                let o = ((p * ho + oy) * wo + ox) as usize;
                prop_assert_eq!(y[o], v);
                want_dx[at] += dy[o];
            } } }
            prop_assert_eq!(dxb.to_vec(), want_dx);
        }
    }
}
