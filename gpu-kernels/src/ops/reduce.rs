//! Reductions (`device/src/reduce.rs`): sums of a buffer, per-channel sums.
use pulsefocus_gpu_device::reduce::REDUCE_THREADS;

use super::{block_per_item, elementwise_len, index_count, need_len, LaunchShape};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    /// The sum (or, with `square`, the sum of squares) of the first `len`
    /// elements: per-block partial sums on the device, added in f64 here
    /// (waits for the result).
    pub fn sum(&self, len: usize, x: &DeviceBuffer, square: bool) -> Result<f64, GpuError> {
        const NAME: &str = "sum_blocks";
        let n = elementwise_len(NAME, &[("x", x.len())], len)?;
        let blocks = n.div_ceil(REDUCE_THREADS).clamp(1, 1024);
        let mut partial = self.alloc::<f32>(blocks as usize)?;
        let shape = LaunchShape {
            grid: (blocks, 1, 1),
            block: (REDUCE_THREADS, 1, 1),
        };
        let mut args = KernelArgs::new();
        args.input(x, len)
            .u32(n)
            .u32(square as u32)
            .output(&mut partial, blocks as usize);
        self.launch(NAME, shape, &args)?;
        let partials = self.download(&partial)?;
        Ok(partials.iter().map(|&v| v as f64).sum())
    }

    /// Per-channel sum over N, H, W (the bias gradient) of an NCHW tensor.
    pub fn channel_sum(
        &self,
        x: &DeviceBuffer,
        out: &mut DeviceBuffer,
        (batch, channels, plane): (usize, usize, usize),
    ) -> Result<(), GpuError> {
        const NAME: &str = "channel_sum";
        let len = batch * channels * plane;
        index_count(NAME, "x", len)?;
        need_len(NAME, "x", x.len(), len)?;
        need_len(NAME, "out", out.len(), channels)?;
        let shape = [
            index_count(NAME, "batch", batch)?,
            index_count(NAME, "channels", channels)?,
            index_count(NAME, "plane", plane)?,
        ];
        let mut args = KernelArgs::new();
        args.input(x, len).output(out, channels);
        args.u32(shape[0]).u32(shape[1]).u32(shape[2]);
        self.launch(NAME, block_per_item(NAME, shape[1])?, &args)
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::testing::{down, gpu, up, values};

    #[test]
    fn sums_match_the_host() {
        let gpu = gpu();
        let x = values(1000, 5);
        let dx = up(&gpu, &x);
        let want: f64 = x[..999].iter().map(|&v| v as f64).sum();
        assert!((gpu.sum(999, &dx, false).unwrap() - want).abs() < 1e-4);
        let want: f64 = x.iter().map(|&v| (v * v) as f64).sum();
        assert!((gpu.sum(1000, &dx, true).unwrap() - want).abs() < 1e-3);
        let mut out = gpu.zeros(5).unwrap();
        gpu.channel_sum(&dx, &mut out, (4, 5, 50)).unwrap();
        let got = down(&gpu, &out);
        for (c, got) in got.iter().enumerate() {
            let want: f32 = (0..4)
                .flat_map(|n| (0..50).map(move |p| (n * 5 + c) * 50 + p))
                .map(|i| x[i])
                .sum();
            assert!((got - want).abs() < 1e-4, "{c}: {got} vs {want}");
        }
    }
}
