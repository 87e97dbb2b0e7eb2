//! Fully connected layer forward (core's `FcGeom`, Paddle's
//! `fluid.layers.fc`): `y = act(x W + b)` on the shared [`tile`] engine, the
//! bias and the activation applied as each output leaves the tile, so `y` is
//! written once. The two backward products (`dz W^T`, `x^T dz`) are plain
//! GEMMs with transposed strides: the host runs them on `gemm`, and the bias
//! gradient on `reduce::channel_sum`.
//! Launch: grid `tile::grid_for(rows, outputs)`, block `tile::THREADS`.
use crate::elementwise::activate;
use crate::{kernel, tile};

kernel! {
    /// `y[r, j] = act(sum_k x[r, k] * w[k, j] + bias[j])`: `x` `[rows,
    /// inputs]`, `w` `[inputs, outputs]` (Paddle's layout), `act` an
    /// `elementwise::ACT_*` code with its `slope`.
    pub fn fc_forward(ctx, x: *const f32, w: *const f32, bias: *const f32, y: *mut f32,
        rows: u32, inputs: u32, outputs: u32, act: u32, slope: f32) {
        tile::tiled_matmul(
            ctx, rows, outputs, inputs,
            |r, k| *x.add((r * inputs + k) as usize),
            |k, j| *w.add((k * outputs + j) as usize),
            |r, j, v| {
                *y.add((r * outputs + j) as usize) = activate(act, slope, v + *bias.add(j as usize));
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elementwise::{ACT_IDENTITY, ACT_LEAKY_RELU, ACT_RELU};
    use crate::emu::{launch, DeviceBuf, Dim3};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Ragged shapes (not multiples of the tile) against an f64
        /// reference, each activation; the garbage past `y` stays.
        #[test]
        fn matches_an_f64_reference(rows in 1usize..80, inputs in 1usize..40, outputs in 1usize..90,
            act in prop::sample::select(vec![ACT_IDENTITY, ACT_RELU, ACT_LEAKY_RELU]), seed in 0u32..1000) {
            let value = |i: usize, salt: u32| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed * salt) % 2001) as f32 / 1000.0 - 1.0;
            let x: Vec<f32> = (0..rows * inputs).map(|i| value(i, 3)).collect();
            let w: Vec<f32> = (0..inputs * outputs).map(|i| value(i, 5)).collect();
            let bias: Vec<f32> = (0..outputs).map(|i| value(i, 7)).collect();
            let (xb, wb, bb) = (DeviceBuf::new(&x), DeviceBuf::new(&w), DeviceBuf::new(&bias));
            let y = DeviceBuf::filled(rows * outputs + 3, 9.0f32);
            let (gx, gy) = tile::grid_for(rows as u32, outputs as u32);
            launch(Dim3::xyz(gx, gy, 1), Dim3::x(tile::THREADS), |c| unsafe {
                fc_forward(c, xb.ptr(), wb.ptr(), bb.ptr(), y.ptr(), rows as u32, inputs as u32, outputs as u32, act, 0.1)
            });
            let y = y.to_vec();
            for r in 0..rows {
                for j in 0..outputs {
                    let z: f64 = (0..inputs).map(|k| x[r * inputs + k] as f64 * w[k * outputs + j] as f64).sum::<f64>() + bias[j] as f64;
                    let want = match act {
                        ACT_RELU => z.max(0.0),
                        ACT_LEAKY_RELU => if z > 0.0 { z } else { 0.1 * z },
                        _ => z,
                    };
                    let got = y[r * outputs + j] as f64;
                    prop_assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "y[{}, {}] = {} vs {}", r, j, got, want);
                }
            }
            prop_assert_eq!(&y[rows * outputs..], &[9.0; 3]);
        }
    }
}
