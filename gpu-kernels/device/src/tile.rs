//! The one tiled matrix-multiply engine behind GEMM and the three implicit-GEMM
//! convolutions: `C[m][n] = sum_k A(m, k) * B(k, n)` where `A` and `B` are
//! loader functions (a strided matrix, or convolution input gathered on the
//! fly) and `store` receives each finished `C` element.
//!
//! A block of [`THREADS`] threads computes a [`BM`] x [`BN`] tile of `C`. Each
//! step stages a `BM x BK` slice of `A` and a `BK x BN` slice of `B` in shared
//! memory, then every thread accumulates its [`TM`] x [`TN`] outputs in
//! registers (register blocking), reading each staged value once per use.
//! Grid: x over column tiles, y over row tiles; z is free for the caller
//! (batch or convolution group).
use crate::{shared_array, Ctx};

pub const BM: u32 = 64;
pub const BN: u32 = 64;
pub const BK: u32 = 16;
pub const TM: u32 = 4;
pub const TN: u32 = 4;
/// Threads per block: (BM / TM) * (BN / TN).
pub const THREADS: u32 = (BM / TM) * (BN / TN);

/// Runs the tile of `C` this block owns. Every thread of the block must call
/// it (it synchronises). Loaders are only called in bounds (`m < rows`,
/// `k < depth`, `n < cols`); out-of-range tile entries are zero.
///
/// # Safety
/// The loaders and `store` must be valid for every in-range index.
#[inline(always)]
pub unsafe fn tiled_matmul(
    ctx: &Ctx,
    rows: u32,
    cols: u32,
    depth: u32,
    load_a: impl Fn(u32, u32) -> f32,
    load_b: impl Fn(u32, u32) -> f32,
    mut store: impl FnMut(u32, u32, f32),
) {
    // Staged tiles, k-major so that a thread's TM (or TN) reads walk along a row.
    let a_tile = shared_array!(ctx, f32, (BK * BM) as usize);
    let b_tile = shared_array!(ctx, f32, (BK * BN) as usize);

    let tid = ctx.thread_x();
    // This thread's outputs are rows ty + 16 i and columns tx + 16 j of the
    // tile: neighbouring threads read neighbouring shared-memory words.
    let tx = tid % (BN / TN);
    let ty = tid / (BN / TN);
    let row0 = ctx.block_y() * BM;
    let col0 = ctx.block_x() * BN;

    let mut acc = [[0.0f32; TN as usize]; TM as usize];
    let mut k0 = 0;
    while k0 < depth {
        // Stage A: BM*BK values, THREADS at a time; consecutive threads take
        // consecutive k (contiguous in a row-major A).
        let mut e = tid;
        while e < BM * BK {
            let (mm, kk) = (e / BK, e % BK);
            let (m, k) = (row0 + mm, k0 + kk);
            let v = if m < rows && k < depth {
                load_a(m, k)
            } else {
                0.0
            };
            *a_tile.add((kk * BM + mm) as usize) = v;
            e += THREADS;
        }
        // Stage B: consecutive threads take consecutive n.
        let mut e = tid;
        while e < BK * BN {
            let (kk, nn) = (e / BN, e % BN);
            let (k, n) = (k0 + kk, col0 + nn);
            let v = if k < depth && n < cols {
                load_b(k, n)
            } else {
                0.0
            };
            *b_tile.add((kk * BN + nn) as usize) = v;
            e += THREADS;
        }
        ctx.sync_threads();

        let mut kk = 0;
        while kk < BK {
            let mut a = [0.0f32; TM as usize];
            let mut b = [0.0f32; TN as usize];
            let mut i = 0;
            while i < TM {
                a[i as usize] = *a_tile.add((kk * BM + ty + i * (BM / TM)) as usize);
                i += 1;
            }
            let mut j = 0;
            while j < TN {
                b[j as usize] = *b_tile.add((kk * BN + tx + j * (BN / TN)) as usize);
                j += 1;
            }
            let mut i = 0;
            while i < TM {
                let mut j = 0;
                while j < TN {
                    acc[i as usize][j as usize] += a[i as usize] * b[j as usize];
                    j += 1;
                }
                i += 1;
            }
            kk += 1;
        }
        // Everyone must be done reading before the next stage overwrites.
        ctx.sync_threads();
        k0 += BK;
    }

    let mut i = 0;
    while i < TM {
        let m = row0 + ty + i * (BM / TM);
        let mut j = 0;
        while j < TN {
            let n = col0 + tx + j * (BN / TN);
            if m < rows && n < cols {
                store(m, n, acc[i as usize][j as usize]);
            }
            j += 1;
        }
        i += 1;
    }
}

/// Blocks needed along (x, y) for a `rows x cols` result.
pub const fn grid_for(rows: u32, cols: u32) -> (u32, u32) {
    (cols.div_ceil(BN), rows.div_ceil(BM))
}
