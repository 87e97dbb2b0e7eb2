//! Nearest-neighbour upsampling by an integer factor (YOLOv3's 2x route
//! upsample), NCHW. Backward sums each input's `factor x factor` outputs.
use crate::{grid_stride, kernel};

kernel! {
    /// `y[p][oy][ox] = x[p][oy / factor][ox / factor]`, over `planes` = N*C planes.
    pub fn upsample_nearest_forward(ctx, x: *const f32, y: *mut f32, planes: u32, h: u32, w: u32, factor: u32) {
        let (ho, wo) = (h * factor, w * factor);
        grid_stride(ctx, planes * ho * wo, |i| {
            let i = i as u32;
            let (plane, oy, ox) = (i / (ho * wo), i % (ho * wo) / wo, i % wo);
            *y.add(i as usize) = *x.add((plane * h * w + oy / factor * w + ox / factor) as usize);
        });
    }
}

kernel! {
    /// `dx[p][iy][ix] = sum of dy over the block of outputs copied from it`.
    pub fn upsample_nearest_backward(ctx, dy: *const f32, dx: *mut f32, planes: u32, h: u32, w: u32, factor: u32) {
        let wo = w * factor;
        grid_stride(ctx, planes * h * w, |i| {
            let i = i as u32;
            let (plane, iy, ix) = (i / (h * w), i % (h * w) / w, i % w);
            let base = plane * h * factor * wo;
            let mut acc = 0.0;
            let mut dy_ = 0;
            while dy_ < factor {
                let mut dx_ = 0;
                while dx_ < factor {
                    acc += *dy.add((base + (iy * factor + dy_) * wo + ix * factor + dx_) as usize);
                    dx_ += 1;
                }
                dy_ += 1;
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
        fn forward_copies_and_backward_is_its_adjoint(planes in 1u32..4, h in 1u32..7, w in 1u32..7, factor in 1u32..4) {
            let x: Vec<f32> = (0..planes * h * w).map(|i| i as f32).collect();
            let (ho, wo) = (h * factor, w * factor);
            let dy: Vec<f32> = (0..planes * ho * wo).map(|i| (i % 11) as f32 - 5.0).collect();
            let (xb, yb) = (DeviceBuf::new(&x), DeviceBuf::filled(dy.len(), f32::NAN));
            let (dyb, dxb) = (DeviceBuf::new(&dy), DeviceBuf::filled(x.len(), f32::NAN));
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe { upsample_nearest_forward(c, xb.ptr(), yb.ptr(), planes, h, w, factor) });
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe { upsample_nearest_backward(c, dyb.ptr(), dxb.ptr(), planes, h, w, factor) });
            let y = yb.to_vec();
            let mut want_dx = vec![0.0f32; x.len()];
            for p in 0..planes { for oy in 0..ho { for ox in 0..wo {
                let src = (p * h * w + oy / factor * w + ox / factor) as usize;
                let o = ((p * ho + oy) * wo + ox) as usize;
                prop_assert_eq!(y[o], x[src]);
                want_dx[src] += dy[o];
            } } }
            prop_assert_eq!(dxb.to_vec(), want_dx);
        }
    }
}
