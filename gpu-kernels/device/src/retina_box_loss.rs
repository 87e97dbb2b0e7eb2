//! RetinaNet's box loss over one level (core's `RetinaBoxLossGeom`): a
//! thread per delta writes its smooth-L1 loss and gradient with the
//! expressions of core's `losses::smooth_l1` (the CPU backend's), so the
//! emulator and the GPU give the CPU's bits (no transcendental function).
//! Launch: grid-stride, any 1-D grid.
use crate::{grid_stride, kernel, math};

kernel! {
    /// Delta `i` of `deltas` `[N, 4A, H, W]` (`len` of them, `cells` =
    /// H*W, `anchors_per_cell` = A), channel `4a + j`, against its anchor's
    /// row `r = (n * cells + cell) * A + a`: target `targets[4r + j]`,
    /// weight `weights[r]`. With `d = (delta - target) * weight`,
    /// `losses[i] = weight * value / normalizer` and `grad[i] = weight^2 *
    /// slope / normalizer`, `(value, slope)` being `(0.5 sigma^2 d^2,
    /// sigma^2 d)` where `|d| < 1 / sigma^2`, else `(|d| - 0.5 / sigma^2,
    /// sign d)`.
    pub fn retina_box_loss(ctx, deltas: *const f32, targets: *const f32, weights: *const f32,
        grad: *mut f32, losses: *mut f32, len: u32, cells: u32, anchors_per_cell: u32,
        sigma: f32, normalizer: f32) {
        grid_stride(ctx, len, |i| {
            let (cells, a_count) = (cells as usize, anchors_per_cell as usize);
            let plane = i / cells;
            let channel = plane % (4 * a_count);
            let (n, cell) = (plane / (4 * a_count), i % cells);
            let row = (n * cells + cell) * a_count + channel / 4;
            let weight = *weights.add(row);
            let target = *targets.add(4 * row + channel % 4);
            let sigma2 = sigma * sigma;
            let scale = 1.0 / normalizer;
            let d = (*deltas.add(i) - target) * weight;
            let (value, slope) = math::smooth_l1(d, sigma2);
            *losses.add(i) = weight * value * scale;
            *grad.add(i) = scale * weight * weight * slope;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{launch_independent, DeviceBuf, Dim3};
    use proptest::prelude::*;
    use pulsefocus_core::backend::RetinaBoxLossGeom;
    use pulsefocus_core::cpu::retina_box_loss::forward_backward;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The kernel's losses and gradients equal the CPU backend's to
        /// the bit, deltas on both smooth-L1 branches and weights 0 and 1.
        #[test]
        fn equals_the_cpu_retina_box_loss(
            batch in 0usize..3,
            anchors_per_cell in 1usize..4,
            height in 1usize..4,
            width in 1usize..5,
            sigma in prop_oneof![Just(3.015_113_4f32), 0.5f32..4.0],
            normalizer in 1.0f32..40.0,
            seed: u64,
        ) {
            let g = RetinaBoxLossGeom { batch, anchors_per_cell, height, width, sigma, normalizer };
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32
            };
            let deltas: Vec<f32> = (0..g.deltas_len()).map(|_| 2.0 * next() - 1.0).collect();
            let targets: Vec<f32> = (0..4 * g.anchors()).map(|_| 2.0 * next() - 1.0).collect();
            let weights: Vec<f32> = (0..g.anchors()).map(|_| (next() < 0.5) as u8 as f32).collect();
            let (mut want_grad, mut want_losses) = (vec![f32::NAN; g.deltas_len()], vec![f32::NAN; g.deltas_len()]);
            forward_backward(&g, &deltas, &targets, &weights, &mut want_grad, &mut want_losses);
            let (d, t, w) = (DeviceBuf::new(&deltas), DeviceBuf::new(&targets), DeviceBuf::new(&weights));
            let grad = DeviceBuf::filled(g.deltas_len(), f32::NAN);
            let losses = DeviceBuf::filled(g.deltas_len(), f32::NAN);
            launch_independent(Dim3::x(2), Dim3::x(32), |c| unsafe {
                retina_box_loss(c, d.ptr(), t.ptr(), w.ptr(), grad.ptr(), losses.ptr(),
                    g.deltas_len() as u32, (height * width) as u32, anchors_per_cell as u32, sigma, normalizer)
            });
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&grad.to_vec()), bits(&want_grad));
            prop_assert_eq!(bits(&losses.to_vec()), bits(&want_losses));
        }
    }
}
