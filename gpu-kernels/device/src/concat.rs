//! Channel concatenation (YOLOv3's route layers) as one strided copy: forward
//! copies each input into its channel range of the output, backward copies
//! the gradient's channel range back out. Same kernel, swapped arguments.
use crate::{grid_stride, kernel};

kernel! {
    /// For every image `n < batch`: `dst[n][dst_first + c] = src[n][src_first + c]`
    /// for `c < count` channels of `plane` = H*W values each.
    pub fn copy_channels(ctx, src: *const f32, src_channels: u32, src_first: u32,
        dst: *mut f32, dst_channels: u32, dst_first: u32, count: u32, batch: u32, plane: u32) {
        grid_stride(ctx, batch * count * plane, |i| {
            let i = i as u32;
            let (n, c, p) = (i / (count * plane), i % (count * plane) / plane, i % plane);
            *dst.add(((n * dst_channels + dst_first + c) * plane + p) as usize) =
                *src.add(((n * src_channels + src_first + c) * plane + p) as usize);
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
        fn concat_then_split_round_trips(batch in 1u32..3, ca in 1u32..4, cb in 1u32..4, plane in 1u32..20) {
            let a: Vec<f32> = (0..batch * ca * plane).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..batch * cb * plane).map(|i| -(i as f32) - 1.0).collect();
            let total = ca + cb;
            let (ab, bb, out) = (DeviceBuf::new(&a), DeviceBuf::new(&b), DeviceBuf::filled((batch * total * plane) as usize, f32::NAN));
            let grid = (Dim3::x(2), Dim3::x(32));
            launch_independent(grid.0, grid.1, |c| unsafe { copy_channels(c, ab.ptr(), ca, 0, out.ptr(), total, 0, ca, batch, plane) });
            launch_independent(grid.0, grid.1, |c| unsafe { copy_channels(c, bb.ptr(), cb, 0, out.ptr(), total, ca, cb, batch, plane) });
            let o = out.to_vec();
            for n in 0..batch { for c in 0..total { for p in 0..plane {
                let got = o[((n * total + c) * plane + p) as usize];
                let want = if c < ca { a[((n * ca + c) * plane + p) as usize] } else { b[((n * cb + c - ca) * plane + p) as usize] };
                prop_assert_eq!(got, want);
            } } }
            // Backward of the second input: its channel range, copied back out.
            let back = DeviceBuf::filled(b.len(), f32::NAN);
            launch_independent(grid.0, grid.1, |c| unsafe { copy_channels(c, out.ptr(), total, ca, back.ptr(), cb, 0, cb, batch, plane) });
            prop_assert_eq!(back.to_vec(), b);
        }
    }
}
