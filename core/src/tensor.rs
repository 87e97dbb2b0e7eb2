//! pulsefocus's tensor: a shape (NCHW for images) and a backend buffer of f32.
//!
//! The buffer may be larger than the shape needs: a tensor planned for the
//! largest input size keeps its memory when a smaller batch or image size comes
//! through (`reshape_reuse`), so a training step allocates nothing once planned.

use crate::backend::Backend;
use half::{bf16, f16};

pub struct Tensor<B: Backend> {
    shape: Vec<usize>,
    buf: B::Buffer,
}

impl<B: Backend> Tensor<B> {
    pub fn zeros(backend: &B, shape: &[usize]) -> Self {
        let len = shape.iter().product();
        Tensor {
            shape: shape.to_vec(),
            buf: backend.alloc(len),
        }
    }

    /// A tensor holding `data`, which must have exactly `shape`'s element count.
    pub fn from_host(backend: &B, shape: &[usize], data: &[f32]) -> Self {
        let mut t = Self::zeros(backend, shape);
        assert_eq!(
            data.len(),
            t.numel(),
            "Tensor::from_host: {} values for shape {:?}",
            data.len(),
            shape
        );
        backend.upload(data, &mut t.buf);
        t
    }

    /// Half-precision storage widened to f32 for compute.
    pub fn from_f16(backend: &B, shape: &[usize], data: &[f16]) -> Self {
        let wide: Vec<f32> = data.iter().map(|v| v.to_f32()).collect();
        Self::from_host(backend, shape, &wide)
    }

    pub fn from_bf16(backend: &B, shape: &[usize], data: &[bf16]) -> Self {
        let wide: Vec<f32> = data.iter().map(|v| v.to_f32()).collect();
        Self::from_host(backend, shape, &wide)
    }

    pub fn to_host(&self, backend: &B) -> Vec<f32> {
        let mut out = vec![0.0; self.numel()];
        backend.download(&self.buf, &mut out);
        out
    }

    pub fn to_f16(&self, backend: &B) -> Vec<f16> {
        self.to_host(backend)
            .into_iter()
            .map(f16::from_f32)
            .collect()
    }

    /// Overwrites the contents with `data` (same element count as the shape).
    pub fn upload(&mut self, backend: &B, data: &[f32]) {
        assert_eq!(
            data.len(),
            self.numel(),
            "Tensor::upload: {} values for shape {:?}",
            data.len(),
            self.shape
        );
        backend.upload(data, &mut self.buf);
    }

    /// Gives the tensor a new shape, reusing its memory when it is large
    /// enough and allocating (zeroed) memory otherwise. Contents are
    /// unspecified afterwards.
    pub fn reshape_reuse(&mut self, backend: &B, shape: &[usize]) {
        let len: usize = shape.iter().product();
        if backend.buffer_len(&self.buf) < len {
            self.buf = backend.alloc(len);
        }
        self.shape.clear();
        self.shape.extend_from_slice(shape);
    }

    pub fn fill(&mut self, backend: &B, value: f32) {
        let len = self.numel();
        backend.fill(&mut self.buf, len, value);
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of device memory held (the capacity, not just the shape).
    pub fn capacity_bytes(&self, backend: &B) -> usize {
        backend.buffer_len(&self.buf) * std::mem::size_of::<f32>()
    }

    /// `(n, c, h, w)` of a 4-D tensor.
    pub fn nchw(&self) -> (usize, usize, usize, usize) {
        assert_eq!(
            self.shape.len(),
            4,
            "expected an NCHW tensor, got shape {:?}",
            self.shape
        );
        (self.shape[0], self.shape[1], self.shape[2], self.shape[3])
    }

    pub fn buf(&self) -> &B::Buffer {
        &self.buf
    }

    pub fn buf_mut(&mut self) -> &mut B::Buffer {
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuBackend;

    #[test]
    fn round_trip_and_reuse() {
        let b = CpuBackend::new();
        let mut t = Tensor::from_host(&b, &[1, 2, 2, 1], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(t.to_host(&b), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(t.nchw(), (1, 2, 2, 1));
        // Smaller shape keeps the buffer; larger reallocates.
        t.reshape_reuse(&b, &[1, 1, 1, 2]);
        assert_eq!(t.capacity_bytes(&b), 16);
        assert_eq!(t.to_host(&b), vec![1.0, 2.0]);
        t.reshape_reuse(&b, &[3, 3]);
        assert_eq!(t.capacity_bytes(&b), 36);
    }

    #[test]
    fn half_storage_widens() {
        let b = CpuBackend::new();
        let halves = [f16::from_f32(0.5), f16::from_f32(-2.0)];
        let t = Tensor::from_f16(&b, &[2], &halves);
        assert_eq!(t.to_host(&b), vec![0.5, -2.0]);
        assert_eq!(t.to_f16(&b), halves.to_vec());
        let t = Tensor::from_bf16(&b, &[1], &[bf16::from_f32(3.0)]);
        assert_eq!(t.to_host(&b), vec![3.0]);
    }
}
