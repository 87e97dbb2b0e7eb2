//! Channel concatenation (`device/src/concat.rs`): a block of channels
//! copied between two NCHW tensors, forward and backward of a route layer.
use pulsefocus_core::backend::ChannelCopy;

use super::{elementwise, fail, index_count, need_len};
use crate::driver::KernelArgs;
use crate::{DeviceBuffer, Gpu, GpuError};

impl Gpu {
    pub fn copy_channels(
        &self,
        c: &ChannelCopy,
        src: &DeviceBuffer,
        dst: &mut DeviceBuffer,
    ) -> Result<(), GpuError> {
        const NAME: &str = "copy_channels";
        if c.src_first + c.count > c.src_channels || c.dst_first + c.count > c.dst_channels {
            fail::<()>(
                NAME,
                format!(
                    "channels {}+{} of {} -> {}+{} of {} out of range",
                    c.src_first, c.count, c.src_channels, c.dst_first, c.count, c.dst_channels
                ),
            )?;
        }
        let src_len = c.batch * c.src_channels * c.spatial;
        let dst_len = c.batch * c.dst_channels * c.spatial;
        need_len(NAME, "src", src.len(), src_len)?;
        need_len(NAME, "dst", dst.len(), dst_len)?;
        index_count(NAME, "src", src_len)?;
        index_count(NAME, "dst", dst_len)?;
        let n = index_count(NAME, "copy", c.batch * c.count * c.spatial)?;
        let small = |v: usize| index_count(NAME, "channel copy", v);
        let mut args = KernelArgs::new();
        args.input(src, src_len)
            .u32(small(c.src_channels)?)
            .u32(small(c.src_first)?);
        args.output(dst, dst_len)
            .u32(small(c.dst_channels)?)
            .u32(small(c.dst_first)?);
        args.u32(small(c.count)?)
            .u32(small(c.batch)?)
            .u32(small(c.spatial)?);
        self.launch(NAME, elementwise(n), &args)
    }
}
