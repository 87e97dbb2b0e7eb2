//! Global average pooling (core's `GlobalPoolGeom`, Paddle's `pool2d` with
//! `global_pooling`), forward and backward side by side. Forward runs a
//! thread per plane adding its values in order and dividing by the count,
//! as the CPU and Paddle do, so the means are theirs to the bit; backward a
//! thread per input value (coalesced writes).
//! Launch: grid-stride, any 1-D grid.
use crate::{grid_stride, kernel};

kernel! {
    /// `y[p] = (x[p * spatial] + ... + x[p * spatial + spatial - 1]) / spatial`
    /// for each of the `planes`.
    pub fn global_avg_pool_forward(ctx, x: *const f32, y: *mut f32, planes: u32, spatial: u32) {
        grid_stride(ctx, planes, |p| {
            let first = p * spatial as usize;
            let mut sum = 0.0f32;
            let mut i = 0;
            while i < spatial {
                sum += *x.add(first + i as usize);
                i += 1;
            }
            *y.add(p) = sum / spatial as f32;
        });
    }
}

kernel! {
    /// `dx[i] = dy[i / spatial] * scale` over the `len` input values
    /// (`scale` = 1 / spatial, rounded by the host).
    pub fn global_avg_pool_backward(ctx, dy: *const f32, dx: *mut f32, len: u32, spatial: u32, scale: f32) {
        grid_stride(ctx, len, |i| *dx.add(i) = *dy.add(i / spatial as usize) * scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Forward equals the in-order sum over the count bit for bit;
        /// backward spreads each gradient over its plane; neither touches
        /// the elements past its output.
        #[test]
        fn means_and_their_gradient(planes in 1usize..40, spatial in 1usize..60, blocks in 1u32..3) {
            let x: Vec<f32> = (0..planes * spatial).map(|i| ((i * 7919) % 1001) as f32 / 500.0 - 1.0).collect();
            let dy: Vec<f32> = (0..planes).map(|p| p as f32 - 3.5).collect();
            let (xb, dyb) = (DeviceBuf::new(&x), DeviceBuf::new(&dy));
            let y = DeviceBuf::filled(planes + 1, f32::NAN);
            let dx = DeviceBuf::filled(planes * spatial + 1, f32::NAN);
            let scale = (1.0 / spatial as f64) as f32;
            let (p, s) = (planes as u32, spatial as u32);
            launch_independent(Dim3::x(blocks), Dim3::x(32), |c| unsafe {
                global_avg_pool_forward(c, xb.ptr(), y.ptr(), p, s)
            });
            launch_independent(Dim3::x(blocks), Dim3::x(32), |c| unsafe {
                global_avg_pool_backward(c, dyb.ptr(), dx.ptr(), p * s, s, scale)
            });
            let (y, dx) = (y.to_vec(), dx.to_vec());
            for (plane, values) in x.chunks(spatial).enumerate() {
                let mut sum = 0.0f32;
                for &v in values {
                    sum += v;
                }
                prop_assert_eq!(y[plane].to_bits(), (sum / spatial as f32).to_bits());
                for i in 0..spatial {
                    prop_assert_eq!(dx[plane * spatial + i], dy[plane] * scale);
                }
            }
            prop_assert!(y[planes].is_nan() && dx[planes * spatial].is_nan());
        }
    }
}
