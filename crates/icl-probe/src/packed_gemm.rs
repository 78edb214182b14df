//! `x·Wᵀ (+ b)` for a packed (quantised or half-precision) `W` on the plain Flex CPU backend,
//! decoding `W` tile by tile straight into the GEMM, so a float32 copy of the matrix never exists.
//!
//! Why: the generic packed matmul ([`crate::linear`]) decodes up to 64 MiB of weights into a fresh
//! buffer per projection, hands it to burn as a tensor and multiplies. A profile of SmolLM2-135M
//! prefill (1 × 128 tokens, 2 threads; docs/performance.md) put ~10 % of the time in decoding
//! and ~7 % in page faults and `memset` of those fresh buffers, and the decoded matrix streams
//! once more through memory into the GEMM's packing. Here each rayon task takes a tile of output
//! columns (weight rows), decodes that tile into a buffer owned by its thread and reused for every
//! later call (never re-zeroed: the decode writes every element), and runs one single-threaded
//! `gemm` 0.19 call (the GEMM burn-flex itself uses) from that buffer, still hot in L2, into its
//! columns of the output. The bias is added to those columns right after, as burn's broadcast add
//! would (one rounding per element).
//!
//! Numerics: the same decoded float32 weights and the same GEMM kernel family as the generic path;
//! only the summation order inside the GEMM may differ (the `real_models` and golden tests hold
//! both paths to transformers' logits). Exact float32 mode (`exact_f32`) and every backend or
//! dtype other than plain Flex float32 take the generic path, as does `ICLGDD_FLEX_KERNELS=0`
//! (every fast kernel off) or `ICLGDD_PACKED_GEMM=0` (this one only: the A/B switch it was
//! measured with).

use std::cell::RefCell;
use std::sync::OnceLock;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use flex_kernels::back;
use flex_kernels::elementwise::from_vec;

use crate::linear::PackedMatrix;

/// Decoded weights per tile (1 MiB of float32): the tile and the GEMM's packed panels of it stay in
/// this CPU's 2 MiB L2.
const TILE_FLOATS: usize = 1 << 18;

/// Fewest weight rows in a tile when the matrix has that many: every tile's GEMM streams all of
/// `x` once more (gemm 0.19 reads it in place on x86: a unit-stride right-hand side is not packed),
/// so tiles of few rows re-read `x` often. On Qwen2.5-1.5B (k up to 8,960, one thread) 16/32/64-row
/// minima and 64 Ki–512 Ki-float tiles measured within noise of each other (39.5–44.3 tokens per
/// CPU-second, 2026-12-03 19:25 UTC, load 4.2-4.5); these values were kept.
const MIN_TILE_ROWS: usize = 64;

thread_local! {
    /// Each rayon thread's decoded tile, grown on demand and reused across calls.
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The output pointer the tasks share; each task writes its own columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint column ranges of one allocation that outlives them.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Whether this kernel is on: not turned off by `ICLGDD_PACKED_GEMM=0` (or `off`/`false`/`no`),
/// read once per process.
fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| !flex_kernels::switched_off("ICLGDD_PACKED_GEMM"))
}

/// `x·Wᵀ + bias` (`x` `[N, in]`, `W` `[out, in]` packed, `bias` `[1, out]`) when `x` is a plain
/// Flex float32 tensor, the fast kernels are on and exact mode is off; `Err(x)` (unchanged) for the
/// caller's generic path otherwise.
pub(crate) fn try_packed_matmul<B: Backend>(
    x: Tensor<B, 2>,
    w: &PackedMatrix,
    bias: Option<&Tensor<B, 2>>,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    if x.dtype() != DType::F32
        || !enabled()
        || exact_f32::enabled()
        || bias.is_some_and(|b| b.dtype() != DType::F32)
    {
        return Err(x);
    }
    let [n, k] = x.dims();
    if k != w.cols() {
        return Err(x);
    }
    let ft = flex_kernels::flex_if_enabled(x)?;
    let ft = if ft.as_slice::<f32>().is_some() {
        ft
    } else {
        ft.to_contiguous()
    };
    let bias_ft = match bias.map(|b| flex_kernels::to_flex(b.clone())) {
        None => None,
        Some(Ok(b)) => Some(b.to_contiguous()),
        // Unreachable (x was Flex, so B is); handled by the generic path all the same.
        Some(Err(_)) => return Err(back(ft)),
    };
    let (Some(xs), bs) = (
        ft.as_slice::<f32>(),
        bias_ft.as_ref().and_then(|b| b.as_slice::<f32>()),
    ) else {
        return Err(back(ft));
    };
    if xs.len() != n * k || bias_ft.is_some() && bs.is_none_or(|b| b.len() != w.rows()) {
        return Err(back(ft));
    }
    let out = packed_matmul_f32(xs, n, w, bs);
    Ok(back(from_vec(out, vec![n, w.rows()])))
}

/// Weight rows per tile for `[n, k]` activations, `rows` weight rows and `threads` workers:
/// about [`TILE_FLOATS`] decoded weights, at least [`MIN_TILE_ROWS`] rows, a multiple of 16
/// (the GEMM's register tile), and small enough that every thread gets at least two tiles.
fn tile_rows(n: usize, k: usize, rows: usize, threads: usize) -> usize {
    let by_cache = (TILE_FLOATS / k.max(1)).max(MIN_TILE_ROWS).max(n / 4);
    let by_balance = rows.div_ceil(2 * threads.max(1)).next_multiple_of(16);
    by_cache
        .min(by_balance)
        .next_multiple_of(16)
        .min(rows)
        .max(1)
}

/// The product on host slices: `x` `[n, k]` row-major, `W` packed `[rows, k]`, `bias` `[rows]`;
/// returns `[n, rows]` row-major.
pub(crate) fn packed_matmul_f32(
    x: &[f32],
    n: usize,
    w: &PackedMatrix,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (rows, k) = (w.rows(), w.cols());
    debug_assert_eq!(x.len(), n * k);
    // `vec![0.0; n]` is `calloc`: a large output comes as fresh zero pages, not a `memset`.
    let mut out = vec![0.0f32; n * rows];
    if n == 0 || rows == 0 {
        return out;
    }
    let tile = tile_rows(n, k, rows, rayon::current_num_threads());
    let dst = OutPtr(out.as_mut_ptr());
    (0..rows.div_ceil(tile)).into_par_iter().for_each(|t| {
        let r0 = t * tile;
        let r1 = (r0 + tile).min(rows);
        TILE.with(|buf| {
            let mut buf = buf.borrow_mut();
            let len = (r1 - r0) * k;
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            let wt = &mut buf[..len];
            w.decode_rows_to(r0..r1, wt);
            // SAFETY: columns r0..r1 of the [n, rows] output are in bounds and written by this
            // task only; `wt` holds (r1 − r0) decoded rows of k weights.
            unsafe { gemm_tile(x, n, k, wt, r1 - r0, dst, rows, r0, bias) };
        });
    });
    out
}

/// `dst[:, r0..r0+m] = x·wtᵀ (+ bias[r0..])` with one single-threaded GEMM.
///
/// # Safety
/// `dst` points to an `[n, ld]` row-major output with `r0 + m ≤ ld`, and no other thread touches
/// its columns `r0..r0 + m` meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_tile(
    x: &[f32],
    n: usize,
    k: usize,
    wt: &[f32],
    m: usize,
    dst: OutPtr,
    ld: usize,
    r0: usize,
    bias: Option<&[f32]>,
) {
    // SAFETY (caller): column r0 of row 0 is inside the output.
    let base = unsafe { dst.0.add(r0) };
    // SAFETY: dst is [n, m] with row stride ld; lhs x is [n, k] row-major; rhs is wtᵀ, i.e.
    // element (kk, j) at wt[j·k + kk]: row stride 1, column stride k.
    unsafe {
        gemm::gemm(
            n,
            m,
            k,
            base,
            1,
            ld as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            wt.as_ptr(),
            k as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
    if let Some(bias) = bias {
        let b = &bias[r0..r0 + m];
        for i in 0..n {
            // SAFETY: row i's columns r0..r0 + m, owned by this task (caller).
            let row = unsafe { std::slice::from_raw_parts_mut(base.add(i * ld), m) };
            for (y, &c) in row.iter_mut().zip(b) {
                *y += c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_are_multiples_of_16_and_balance_the_threads() {
        // SmolLM2 q|k|v: 960 rows of 576, 128 tokens, 2 threads: 4 tiles of 240.
        assert_eq!(tile_rows(128, 576, 960, 2), 240);
        // A wide input (Qwen2.5-1.5B down projection, k = 8,960): never below 64 rows.
        assert_eq!(tile_rows(128, 8960, 1536, 2), 64);
        // A matrix smaller than one tile: the whole matrix.
        assert_eq!(tile_rows(1, 64, 5, 2), 5);
        // Many tokens: tiles grow with n so x is re-packed less often.
        assert!(tile_rows(1024, 1536, 8960, 2) >= 256);
    }
}
