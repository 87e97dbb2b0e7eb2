//! `head_rows_forward` / `head_rows_backward`: each level of a multi-box head
//! transposed to NHWC into its rows of one concatenation, and back. Pure
//! data movement: exact. Several levels go into one buffer with spare rows
//! no level writes, which must keep what they held.
use pulsefocus_core::backend::HeadRows;
use pulsefocus_core::Backend;

use super::{
    assert_same_bits, assert_tail_kept, assert_unchanged, buffer, cpu, garbage, input, read, Rng,
    SEEDS, TAIL,
};

/// (batch, values, levels as (anchors, height, width), spare rows at the end).
type Case = (usize, usize, Vec<(usize, usize, usize)>, usize);

fn cases() -> Vec<Case> {
    vec![
        (1, 4, vec![(3, 5, 3)], 0),
        // SSD-like: box offsets and 21 class scores of three odd levels.
        (2, 4, vec![(3, 5, 5), (6, 3, 2), (6, 1, 1)], 2),
        (2, 21, vec![(3, 5, 5), (6, 3, 2), (6, 1, 1)], 0),
        (3, 7, vec![(1, 1, 7), (2, 4, 1)], 5),
    ]
}

/// Each level's geometry, in row order.
fn levels(&(batch, values, ref levels, spare): &Case) -> Vec<HeadRows> {
    let total_rows = levels.iter().map(|(a, h, w)| a * h * w).sum::<usize>() + spare;
    let mut first_row = 0;
    levels
        .iter()
        .map(|&(anchors, height, width)| {
            let g = HeadRows {
                batch,
                anchors,
                values,
                height,
                width,
                total_rows,
                first_row,
            };
            first_row += g.level_rows();
            g
        })
        .collect()
}

/// Every level's input (NaN tails) into one row buffer that starts as `rows0`.
fn forward_run<B: Backend>(b: &B, levels: &[HeadRows], xs: &[Vec<f32>], rows0: &[f32]) -> Vec<f32> {
    let mut rows = buffer(b, rows0);
    for (g, x) in levels.iter().zip(xs) {
        let xb = buffer(b, x);
        b.head_rows_forward(g, &xb, &mut rows);
        assert_unchanged(b, "x", &xb, x);
    }
    read(b, &rows)
}

pub fn head_rows_forward_matches<B: Backend>(b: &B) {
    for case in cases() {
        let levels = levels(&case);
        for seed in SEEDS {
            let mut rng = Rng::new(seed);
            let xs: Vec<Vec<f32>> = levels
                .iter()
                .map(|g| input(&rng.values(g.input_len(), -1.0, 1.0)))
                .collect();
            let rows_len = levels[0].rows_len();
            let rows0 = garbage(&mut rng, rows_len);
            let what = format!("head_rows_forward {case:?} seed {seed}");
            let got = forward_run(b, &levels, &xs, &rows0);
            let want = forward_run(&cpu(), &levels, &xs, &rows0);
            assert_same_bits(&what, &got, &want);
            assert_tail_kept(&what, &got, rows_len, &rows0);
            // The reference: each row from its level's channel, spare rows kept.
            let mut expected = rows0[..rows_len].to_vec();
            for (g, x) in levels.iter().zip(&xs) {
                let plane = g.height * g.width;
                for n in 0..g.batch {
                    for p in 0..plane {
                        for a in 0..g.anchors {
                            for k in 0..g.values {
                                let row = g.first_row + p * g.anchors + a;
                                expected[(n * g.total_rows + row) * g.values + k] =
                                    x[((n * g.anchors + a) * g.values + k) * plane + p];
                            }
                        }
                    }
                }
            }
            assert_same_bits(&format!("{what}: reference"), &want[..rows_len], &expected);
        }
    }
}

fn backward_run<B: Backend>(b: &B, g: &HeadRows, rows_grad: &[f32], x_grad0: &[f32]) -> Vec<f32> {
    let rg = buffer(b, rows_grad);
    let mut xg = buffer(b, x_grad0);
    b.head_rows_backward(g, &rg, &mut xg);
    assert_unchanged(b, "rows_grad", &rg, rows_grad);
    read(b, &xg)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Backward equals the CPU's, and is the adjoint of forward on this
/// backend: `<forward(x), y> = <x, backward(y)>` with forward writing into
/// zeros (the other levels' rows then add nothing).
pub fn head_rows_backward_matches<B: Backend>(b: &B) {
    for case in cases() {
        for g in levels(&case) {
            for seed in SEEDS {
                let mut rng = Rng::new(seed);
                let rows_len = g.rows_len();
                let rows_grad = input(&rng.values(rows_len, -1.0, 1.0));
                let x_grad0 = garbage(&mut rng, g.input_len());
                let what = format!("head_rows_backward {g:?} seed {seed}");
                let got = backward_run(b, &g, &rows_grad, &x_grad0);
                let want = backward_run(&cpu(), &g, &rows_grad, &x_grad0);
                assert_same_bits(&what, &got, &want);
                assert_tail_kept(&what, &got, g.input_len(), &x_grad0);

                let x = input(&rng.values(g.input_len(), -1.0, 1.0));
                let mut zeros = vec![0.0; rows_len];
                zeros.extend([0.0; TAIL]);
                let forward = forward_run(b, &[g], std::slice::from_ref(&x), &zeros);
                let (lhs, rhs) = (
                    dot(&forward[..rows_len], &rows_grad[..rows_len]),
                    dot(&x[..g.input_len()], &got[..g.input_len()]),
                );
                assert!(
                    (lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()),
                    "{what}: <forward x, y> = {lhs}, <x, backward y> = {rhs}"
                );
            }
        }
    }
}
