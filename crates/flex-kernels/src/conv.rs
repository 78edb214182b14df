//! A 2-D convolution (forward) for burn-flex float32 tensors that spends its time in the GEMM.
//!
//! Why: burn-flex 0.21's general convolution (`conv3d_impl`, which every conv2d goes through)
//! transposes the whole input to NHWC on the calling thread, fills each im2col tile element by
//! element with a bounds check per element, writes each tile's GEMM result back with one strided
//! store per element, and zero-fills fresh buffers per tile. On a 2-core AVX-512 machine profiles
//! put Inception-v3's time 38 % in those copies (+ 4 % `memset`, 6 % transpose) against 34 % in the
//! GEMM, and its 3×3 conv of 64 channels on 32² at 85 GFLOP/s against PyTorch's 289
//! (docs/performance.md, issue 18). The fix belongs in burn-flex; this is the workaround.
//!
//! What this does instead, per image, group and tile of output pixels:
//! - gathers the im2col tile `[K = C_in/g·kh·kw, tile]` straight from the NCHW input (no
//!   transpose): one kernel tap of one channel is one contiguous row of the tile, filled by one
//!   slice copy per output row for stride 1 (a strided gather otherwise), with padding written as
//!   whole zero runs found analytically (no per-element bounds checks);
//! - multiplies `W[C_out/g, K] × tile` with gemm 0.19, whose destination takes arbitrary strides:
//!   the result lands directly in the NCHW output (row stride `H_out·W_out`), and the bias is
//!   written there first and accumulated into (`dst = dst + W·tile`), so no scatter and no bias pass;
//! - skips the im2col entirely for 1×1 stride-1 unpadded convolutions (an NCHW image *is* the
//!   `[C_in, H·W]` matrix);
//! - runs the (image, group, tile) tasks on rayon with one single-threaded GEMM each, and reuses
//!   one tile buffer per thread (never zero-filled: the gather writes every element).
//!
//! Depthwise convolutions and those with very few channels on both sides stay on burn-flex, which
//! has direct kernels for exactly those (its `conv3d_depthwise_impl` / `conv3d_small_channel_impl`):
//! a GEMM with one or a handful of output rows cannot use its register tile.

use std::cell::RefCell;

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use crate::{enabled, from_flex, is_flex, to_flex};

/// `conv2d(x, weight, bias, options)` as burn's [`burn::tensor::module::conv2d`] computes it.
///
/// Takes the fast path (module docs) when `B` is the plain `Flex` backend, the fast kernels are
/// [`enabled`], every operand is float32 and the shapes are valid for a convolution that this
/// kernel covers; everything else (other backends, `Autodiff<Flex>`, other dtypes, depthwise,
/// invalid shapes) goes to burn's own `conv2d` unchanged, so burn's checks and errors stay burn's.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvOptions<2>,
) -> Tensor<B, 4> {
    if let Some(plan) = fast_plan(&x, &weight, bias.as_ref(), &options) {
        // Cloning a Flex tensor clones an `Arc`: the originals stay for the (unreachable) case
        // where a downcast fails after the type check.
        let xf = to_flex(x.clone()).ok();
        let wf = to_flex(weight.clone()).ok();
        let bf = match &bias {
            Some(b) => to_flex(b.clone()).ok().map(Some),
            None => Some(None),
        };
        if let (Some(xf), Some(wf), Some(bf)) = (xf, wf, bf) {
            if let Some(out) = conv2d_flex_planned(&plan, &xf, &wf, bf.as_ref()) {
                if let Some(t) = from_flex::<B, 4>(out) {
                    return t;
                }
            }
        }
    }
    burn_conv2d(x, weight, bias, options)
}

/// The fast path on burn-flex tensors directly: `None` when it does not apply (dtype, shapes,
/// depthwise), in which case the caller uses burn's convolution. Ignores [`enabled`] (tests call
/// it to be sure the fast path is what they measure).
pub fn conv2d_flex(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    options: &ConvOptions<2>,
) -> Option<FlexTensor> {
    if x.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || bias.is_some_and(|b| b.dtype() != DType::F32)
    {
        return None;
    }
    let dims4 =
        |t: &FlexTensor| -> Option<[usize; 4]> { t.layout().shape().as_slice().try_into().ok() };
    let bias_len = match bias {
        Some(b) => match b.layout().shape().as_slice() {
            [c] => Some(*c),
            _ => return None,
        },
        None => None,
    };
    let plan = Plan::new(dims4(x)?, dims4(weight)?, bias_len, options)?;
    conv2d_flex_planned(&plan, x, weight, bias)
}

/// Decides on the fast path from the tensors' metadata alone (nothing is moved or copied).
fn fast_plan<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
    options: &ConvOptions<2>,
) -> Option<Plan> {
    if !enabled() || !is_flex::<B>() {
        return None;
    }
    if x.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || bias.is_some_and(|b| b.dtype() != DType::F32)
    {
        return None;
    }
    Plan::new(x.dims(), weight.dims(), bias.map(|b| b.dims()[0]), options)
}

fn conv2d_flex_planned(
    plan: &Plan,
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> Option<FlexTensor> {
    // Only a view that is not already a plain row-major buffer is copied (burn-flex's own
    // `to_contiguous` returns the same storage otherwise).
    let x = x.to_contiguous();
    let weight = weight.to_contiguous();
    let bias = bias.map(FlexTensor::to_contiguous);
    let xs = x.as_slice::<f32>()?;
    let ws = weight.as_slice::<f32>()?;
    let bs = match &bias {
        Some(b) => Some(b.as_slice::<f32>()?),
        None => None,
    };
    if xs.len() != plan.n * plan.c_in * plan.h * plan.w
        || ws.len() != plan.c_out * plan.k
        || bs.is_some_and(|b| b.len() != plan.c_out)
    {
        return None;
    }
    let out = conv2d_f32(plan, xs, ws, bs);
    Some(crate::elementwise::from_vec(
        out,
        vec![plan.n, plan.c_out, plan.oh, plan.ow],
    ))
}

/// Shapes and options of one convolution, validated: every product below fits in `usize`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    groups: usize,
    /// Input channels per group.
    cpg: usize,
    /// Output channels per group: the GEMM's M.
    ocpg: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    dh: usize,
    dw: usize,
    oh: usize,
    ow: usize,
    /// `cpg·kh·kw`: the GEMM's K, one row of the im2col tile per (channel, tap).
    k: usize,
}

/// Depthwise and tiny-channel convolutions are better served by burn-flex's direct kernels than by
/// a GEMM with one or a few output rows (module docs). burn-flex 0.21's thresholds, kept in step.
const SMALL_CHANNEL_IN: usize = 4;
const SMALL_CHANNEL_OUT: usize = 16;

impl Plan {
    /// `None` for anything the fast path does not cover, including every invalid shape (those then
    /// reach burn's `conv2d`, whose checks report them).
    fn new(
        x: [usize; 4],
        wt: [usize; 4],
        bias_len: Option<usize>,
        o: &ConvOptions<2>,
    ) -> Option<Self> {
        let [n, c_in, h, w] = x;
        let [c_out, cpg, kh, kw] = wt;
        let groups = o.groups;
        let [sh, sw] = o.stride;
        let [ph, pw] = o.padding;
        let [dh, dw] = o.dilation;
        if [n, c_in, h, w, c_out, cpg, kh, kw, groups, sh, sw, dh, dw].contains(&0) {
            return None;
        }
        if cpg.checked_mul(groups)? != c_in || c_out % groups != 0 {
            return None;
        }
        if bias_len.is_some_and(|b| b != c_out) {
            return None;
        }
        let ocpg = c_out / groups;
        // Depthwise (burn-flex's direct kernel handles it) and tiny channel counts.
        if groups > 1 && cpg == 1 && ocpg == 1 {
            return None;
        }
        if groups == 1 && c_in <= SMALL_CHANNEL_IN && c_out <= SMALL_CHANNEL_OUT {
            return None;
        }
        let out_size = |size: usize, k: usize, s: usize, p: usize, d: usize| -> Option<usize> {
            let padded = size.checked_add(p.checked_mul(2)?)?;
            let span = d.checked_mul(k - 1)?.checked_add(1)?;
            Some(padded.checked_sub(span)? / s + 1)
        };
        let oh = out_size(h, kh, sh, ph, dh)?;
        let ow = out_size(w, kw, sw, pw, dw)?;
        let k = cpg.checked_mul(kh)?.checked_mul(kw)?;
        // Every index computed later stays below one of these products.
        n.checked_mul(c_out)?.checked_mul(oh)?.checked_mul(ow)?;
        n.checked_mul(c_in)?.checked_mul(h)?.checked_mul(w)?;
        c_out.checked_mul(k)?;
        k.checked_mul(oh)?.checked_mul(ow)?;
        // Largest input index touched with padding included, as a signed offset.
        isize::try_from((oh - 1) * sh + (kh - 1) * dh).ok()?;
        isize::try_from((ow - 1) * sw + (kw - 1) * dw).ok()?;
        Some(Self {
            n,
            c_in,
            h,
            w,
            c_out,
            groups,
            cpg,
            ocpg,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            oh,
            ow,
            k,
        })
    }

    /// 1×1, stride 1, no padding: the image is the GEMM's right-hand side as it stands.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }
}

/// Bytes of im2col tile aimed for: half of this machine's 2 MiB L2 per core, so that the tile the
/// gather writes is still in L2 when the GEMM reads it.
const TILE_BYTES: usize = 1 << 20;
/// Tile width bounds in output pixels: below ~64 columns the GEMM re-packs `W` too often for its
/// work; above ~1024 the gain is nil.
const MIN_TILE_COLS: usize = 64;
const MAX_TILE_COLS: usize = 1024;
/// Tile widths are multiples of this (gemm's f32 vector width on AVX-512): gemm 0.19 then reads
/// the tile in place instead of packing a copy when the layer has few output channels (its
/// `do_pack_lhs` test, on the transposed problem: `m % 16 != 0` forces a pack).
const COL_ALIGN: usize = 16;

/// Output pixels per tile: aimed at [`TILE_BYTES`] of im2col, a multiple of [`COL_ALIGN`], and
/// small enough that there are at least two tasks per thread when the batch alone does not give
/// them. Tiles cut across output rows: the gather handles partial rows.
fn tile_cols(p: &Plan, threads: usize) -> usize {
    let ohw = p.oh * p.ow;
    let per_col = if p.pointwise() { 1 } else { p.k };
    let mut cols = (TILE_BYTES / 4 / per_col.max(1)).clamp(MIN_TILE_COLS, MAX_TILE_COLS);
    cols -= cols % COL_ALIGN;
    let images = p.n * p.groups;
    let want_tasks = 2 * threads;
    if images * ohw.div_ceil(cols) < want_tasks {
        let tiles = want_tasks.div_ceil(images);
        cols = ohw.div_ceil(tiles).next_multiple_of(COL_ALIGN);
    }
    cols.clamp(1, ohw)
}

/// The output pointer shared by the tasks; each task writes a disjoint set of elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (channel, pixel) ranges of one allocation that outlives them.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

thread_local! {
    /// Each rayon thread's im2col tile, grown on demand and reused across calls.
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The convolution on contiguous NCHW `x`, `[C_out, K]` weights and an optional bias.
fn conv2d_f32(p: &Plan, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let ohw = p.oh * p.ow;
    // `vec![0.0; n]` is `calloc`: large outputs come as fresh zero pages, not a `memset`.
    let mut out = vec![0.0f32; p.n * p.c_out * ohw];
    let threads = rayon::current_num_threads().max(1);
    let cols = tile_cols(p, threads);
    let tiles = ohw.div_ceil(cols);
    let tasks = p.n * p.groups * tiles;
    let dst = OutPtr(out.as_mut_ptr());
    let run = |task: usize, parallel_gemm: bool| {
        let tile = task % tiles;
        let g = (task / tiles) % p.groups;
        let b = task / (tiles * p.groups);
        let p0 = tile * cols;
        let p1 = (p0 + cols).min(ohw);
        // SAFETY: the task's pixels of the output are in bounds (Plan::new checked the products)
        // and no other task writes them.
        unsafe { run_task(p, x, w, bias, dst, b, g, p0, p1, parallel_gemm) };
    };
    if tasks >= threads {
        (0..tasks).into_par_iter().for_each(|t| run(t, false));
    } else {
        // One or few big GEMMs (a single small image): let gemm split each across the threads.
        (0..tasks).for_each(|t| run(t, true));
    }
    out
}

/// One (image `b`, group `g`, output pixels `p0..p1` of `oh·ow`) tile: bias, gather, GEMM into the
/// output.
///
/// # Safety
/// `dst` points to the `[n, c_out, oh, ow]` output; the caller makes sure no other thread writes
/// this task's pixels of group `g`'s channels of image `b` meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn run_task(
    p: &Plan,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    dst: OutPtr,
    b: usize,
    g: usize,
    p0: usize,
    p1: usize,
    parallel_gemm: bool,
) {
    let ohw = p.oh * p.ow;
    let cols = p1 - p0;
    let hw = p.h * p.w;
    let x_img = &x[(b * p.c_in + g * p.cpg) * hw..][..p.cpg * hw];
    let w_g = &w[g * p.ocpg * p.k..][..p.ocpg * p.k];
    let co0 = b * p.c_out + g * p.ocpg;
    // SAFETY (caller): in bounds of the output, written by this task only.
    let dst_ptr = unsafe { dst.0.add(co0 * ohw + p0) };
    if let Some(bias) = bias {
        for co in 0..p.ocpg {
            // SAFETY: row `co` of this tile: `cols` elements starting inside the output.
            let row = unsafe { std::slice::from_raw_parts_mut(dst_ptr.add(co * ohw), cols) };
            row.fill(bias[g * p.ocpg + co]);
        }
    }
    let gemm_into = |rhs: *const f32, rhs_rs: usize| {
        let parallelism = if parallel_gemm && p.ocpg * cols * p.k >= 128 * 128 * 128 {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: dst is [ocpg, cols] with row stride ohw inside the output; lhs is w_g
        // [ocpg, k] row-major; rhs is [k, cols] with row stride rhs_rs inside its buffer.
        unsafe {
            gemm::gemm(
                p.ocpg,
                cols,
                p.k,
                dst_ptr,
                1,
                ohw as isize,
                bias.is_some(),
                w_g.as_ptr(),
                1,
                p.k as isize,
                rhs,
                1,
                rhs_rs as isize,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism,
            )
        }
    };
    if p.pointwise() {
        // Pointwise: output pixel = input pixel (oh = h, ow = w).
        gemm_into(x_img[p0..].as_ptr(), hw);
        return;
    }
    let len = p.k * cols;
    let with_tile = |tile: &mut Vec<f32>| {
        if tile.len() < len {
            tile.resize(len, 0.0);
        }
        gather(p, x_img, p0, p1, &mut tile[..len]);
        gemm_into(tile.as_ptr(), cols);
    };
    // A thread inside gemm's own rayon split may run another conv's task (nested parallelism):
    // the buffer is then taken, and that task uses a fresh one.
    TILE.with(|t| match t.try_borrow_mut() {
        Ok(mut tile) => with_tile(&mut tile),
        Err(_) => with_tile(&mut Vec::new()),
    });
}

/// Output positions `o` in `0..out` whose input index `o·s + off` (with `off = tap·d − pad`) lies
/// in `0..size`, as a half-open range.
fn valid_range(off: isize, s: usize, size: usize, out: usize) -> (usize, usize) {
    let s = s as isize;
    // First o with o·s + off ≥ 0.
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    // First o with o·s + off ≥ size.
    let hi_num = size as isize - off;
    let hi = if hi_num <= 0 { 0 } else { (hi_num + s - 1) / s };
    let hi = (hi as usize).min(out);
    let lo = (lo as usize).min(hi);
    (lo, hi)
}

/// Fills `tile` (`[k, p1 − p0]`, row `(c·kh + i)·kw + j`) with the input pixels that kernel tap
/// `(i, j)` of channel `c` sees for output pixels `p0..p1` (row-major over `oh × ow`), zero where
/// that falls in the padding. Each output-row segment is one slice copy (stride 1) or one strided
/// gather, with the padding as zero runs from [`valid_range`]: no per-element bounds checks.
fn gather(p: &Plan, x_img: &[f32], p0: usize, p1: usize, tile: &mut [f32]) {
    let cols = p1 - p0;
    let hw = p.h * p.w;
    let mut rows = tile.chunks_exact_mut(cols);
    for c in 0..p.cpg {
        let plane = &x_img[c * hw..][..hw];
        for i in 0..p.kh {
            let y_off = (i * p.dh) as isize - p.ph as isize;
            for j in 0..p.kw {
                let x_off = (j * p.dw) as isize - p.pw as isize;
                let (lo, hi) = valid_range(x_off, p.sw, p.w, p.ow);
                let Some(dst_row) = rows.next() else { return };
                let mut pix = p0;
                while pix < p1 {
                    // The part [x0, x1) of output row `oy` inside this tile.
                    let (oy, x0) = (pix / p.ow, pix % p.ow);
                    let x1 = p.ow.min(x0 + (p1 - pix));
                    let d = &mut dst_row[pix - p0..][..x1 - x0];
                    pix += x1 - x0;
                    let iy = (oy * p.sh) as isize + y_off;
                    let (a, b) = (lo.clamp(x0, x1), hi.clamp(x0, x1));
                    if iy < 0 || iy >= p.h as isize || a == b {
                        d.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * p.w..][..p.w];
                    d[..a - x0].fill(0.0);
                    d[b - x0..].fill(0.0);
                    // First input column read: a·sw + x_off ≥ 0 because a ≥ lo.
                    let s0 = (a as isize * p.sw as isize + x_off) as usize;
                    let d = &mut d[a - x0..b - x0];
                    if p.sw == 1 {
                        d.copy_from_slice(&src[s0..s0 + (b - a)]);
                    } else {
                        for (dv, sv) in d.iter_mut().zip(src[s0..].iter().step_by(p.sw)) {
                            *dv = *sv;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, TensorData};

    type B = Flex;

    fn host<const D: usize, BB: Backend>(t: Tensor<BB, D>) -> Vec<f32> {
        t.into_data().into_vec::<f32>().unwrap()
    }

    /// Relative L2 error and max |diff| / max |ref|.
    fn errors(got: &[f32], want: &[f32]) -> (f64, f64) {
        assert_eq!(got.len(), want.len());
        let num: f64 = got
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        let max_ref = want.iter().fold(0f64, |m, b| m.max(b.abs() as f64));
        let max_diff = got
            .iter()
            .zip(want)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs() as f64));
        (
            (num / den.max(1e-300)).sqrt(),
            max_diff / max_ref.max(1e-30),
        )
    }

    struct Case {
        n: usize,
        c_in: usize,
        c_out: usize,
        hw: [usize; 2],
        k: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        dil: [usize; 2],
        groups: usize,
        bias: bool,
    }

    /// Runs one case through the fast path (asserting it is taken) and through burn-flex's own
    /// conv2d, with a contiguous input and with a non-contiguous view of the same values.
    fn check(c: &Case) {
        let dev = Default::default();
        let x = Tensor::<B, 4>::random(
            [c.n, c.c_in, c.hw[0], c.hw[1]],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let w = Tensor::<B, 4>::random(
            [c.c_out, c.c_in / c.groups, c.k[0], c.k[1]],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let bias = c
            .bias
            .then(|| Tensor::<B, 1>::random([c.c_out], Distribution::Normal(0.0, 1.0), &dev));
        let opts = ConvOptions::new(c.stride, c.pad, c.dil, c.groups);
        let want = host(burn_conv2d(
            x.clone(),
            w.clone(),
            bias.clone(),
            opts.clone(),
        ));

        // The same values as a non-contiguous view: stored as [n, h, w, c], permuted back.
        let x_nhwc = x.clone().permute([0, 2, 3, 1]).into_data();
        let x_view = Tensor::<B, 4>::from_data(x_nhwc, &dev).permute([0, 3, 1, 2]);
        for (what, xin) in [("contiguous", x), ("permuted view", x_view)] {
            let xf = to_flex(xin.clone()).unwrap();
            assert_eq!(xf.is_contiguous(), what == "contiguous");
            let wf = to_flex(w.clone()).unwrap();
            let bf = bias.clone().map(|b| to_flex(b).unwrap());
            let fast = conv2d_flex(&xf, &wf, bf.as_ref(), &opts)
                .unwrap_or_else(|| panic!("fast path not taken for {what}"));
            let got = host(from_flex::<B, 4>(fast).unwrap());
            let (rel, max) = errors(&got, &want);
            assert!(
                rel <= 1e-5 && max <= 1e-4,
                "{what}: n{} c{}->{} {:?} k{:?} s{:?} p{:?} d{:?} g{} bias {}: rel L2 {rel:.2e}, max {max:.2e}",
                c.n, c.c_in, c.c_out, c.hw, c.k, c.stride, c.pad, c.dil, c.groups, c.bias
            );
            // The public entry point (through the Tensor API) agrees too.
            let got = host(conv2d(xin, w.clone(), bias.clone(), opts.clone()));
            let (rel, max) = errors(&got, &want);
            assert!(
                rel <= 1e-5 && max <= 1e-4,
                "{what} via conv2d: {rel:.2e} {max:.2e}"
            );
        }
    }

    #[test]
    fn fast_path_equals_burn_on_many_shapes() {
        // A deterministic sweep over the shapes the networks use and their corners.
        let kernels = [[1, 1], [3, 3], [5, 5], [1, 7], [7, 1], [3, 1]];
        let mut i = 0usize;
        for k in kernels {
            for stride in [[1, 1], [2, 2], [1, 2]] {
                for (pad, dil) in [
                    ([0, 0], [1, 1]),
                    ([1, 2], [1, 1]),
                    ([3, 0], [1, 1]),
                    ([2, 1], [2, 2]),
                ] {
                    i += 1;
                    let groups = [1, 2, 1][i % 3];
                    let hw = [[35, 17], [9, 12], [17, 35]][i % 3];
                    // Skip shapes whose dilated kernel does not fit (burn's own error, tested below).
                    let span = |kk: usize, d: usize| d * (kk - 1) + 1;
                    if hw[0] + 2 * pad[0] < span(k[0], dil[0])
                        || hw[1] + 2 * pad[1] < span(k[1], dil[1])
                    {
                        continue;
                    }
                    check(&Case {
                        n: [1, 3][i % 2],
                        c_in: 6 * groups,
                        c_out: [8, 20][i % 2] * groups,
                        hw,
                        k,
                        stride,
                        pad,
                        dil,
                        groups,
                        bias: i.is_multiple_of(2),
                    });
                }
            }
        }
    }

    #[test]
    fn network_shapes_and_tile_edges() {
        // (n, c_in, c_out, hw, k, stride, pad, groups, bias), dilation 1.
        #[rustfmt::skip]
        let cases = [
            // Inception stem (3→32, 3×3/2), the 147² stem conv, a 1×7 tower conv, 1×1 mixing.
            (2, 3, 32, [71, 71], [3, 3], [2, 2], [0, 0], 1, true),
            (1, 32, 32, [147, 147], [3, 3], [1, 1], [0, 0], 1, false),
            (2, 64, 48, [17, 17], [1, 7], [1, 1], [0, 3], 1, true),
            (3, 40, 24, [13, 11], [1, 1], [1, 1], [0, 0], 1, true),
            // DDPM++-like 3×3 on 16² with many channels (one image: gemm's own parallelism).
            (1, 128, 192, [16, 16], [3, 3], [1, 1], [1, 1], 1, true),
            // Grouped with 4 groups, 1×1 grouped, and a single output pixel.
            (2, 16, 32, [10, 9], [3, 3], [1, 1], [1, 1], 4, true),
            (2, 16, 8, [5, 7], [1, 1], [1, 1], [0, 0], 2, false),
            (3, 8, 24, [3, 3], [3, 3], [1, 1], [0, 0], 1, true),
            // Padding wider than the kernel reach (all-zero border rows and columns).
            (1, 8, 24, [4, 5], [3, 3], [2, 1], [3, 3], 1, true),
        ];
        for (n, c_in, c_out, hw, k, stride, pad, groups, bias) in cases {
            check(&Case {
                n,
                c_in,
                c_out,
                hw,
                k,
                stride,
                pad,
                dil: [1, 1],
                groups,
                bias,
            });
        }
    }

    #[test]
    fn depthwise_and_tiny_channels_stay_on_burn_and_agree() {
        let dev = Default::default();
        let x = Tensor::<B, 4>::random([2, 12, 9, 9], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<B, 4>::random([12, 1, 3, 3], Distribution::Normal(0.0, 1.0), &dev);
        let opts = ConvOptions::new([2, 2], [1, 1], [1, 1], 12);
        let (xf, wf) = (to_flex(x.clone()).unwrap(), to_flex(w.clone()).unwrap());
        assert!(
            conv2d_flex(&xf, &wf, None, &opts).is_none(),
            "depthwise goes to burn-flex"
        );
        let got = host(conv2d(x.clone(), w.clone(), None, opts.clone()));
        assert_eq!(got, host(burn_conv2d(x, w, None, opts)));
    }

    #[test]
    fn invalid_shapes_are_left_to_burn() {
        let dev = Default::default();
        let x = Tensor::<B, 4>::random([1, 6, 5, 5], Distribution::Normal(0.0, 1.0), &dev);
        let (xf, opts) = (
            to_flex(x.clone()).unwrap(),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        // Channel mismatch, kernel larger than the padded input, bias of the wrong length.
        let w_bad = to_flex(Tensor::<B, 4>::zeros([8, 5, 3, 3], &dev)).unwrap();
        assert!(conv2d_flex(&xf, &w_bad, None, &opts).is_none());
        let w_big = to_flex(Tensor::<B, 4>::zeros([8, 6, 7, 7], &dev)).unwrap();
        assert!(conv2d_flex(&xf, &w_big, None, &opts).is_none());
        let w = to_flex(Tensor::<B, 4>::zeros([8, 6, 3, 3], &dev)).unwrap();
        let b_bad = to_flex(Tensor::<B, 1>::zeros([7], &dev)).unwrap();
        assert!(conv2d_flex(&xf, &w, Some(&b_bad), &opts).is_none());
        // (A zero stride or dilation never gets here: `ConvOptions::new` refuses it.)
        assert!(conv2d_flex(&xf, &w, None, &ConvOptions::new([1, 1], [0, 0], [1, 1], 4)).is_none());
    }

    #[test]
    #[should_panic(expected = "Number of channels")]
    fn a_channel_mismatch_reports_burns_error() {
        let dev = Default::default();
        let x = Tensor::<B, 4>::zeros([1, 6, 5, 5], &dev);
        let w = Tensor::<B, 4>::zeros([8, 5, 3, 3], &dev);
        let _ = conv2d(x, w, None, ConvOptions::new([1, 1], [0, 0], [1, 1], 1));
    }

    #[test]
    fn autodiff_falls_back_and_keeps_gradients() {
        type A = Autodiff<Flex>;
        let dev = Default::default();
        let x0 = Tensor::<B, 4>::random([2, 6, 8, 7], Distribution::Normal(0.0, 1.0), &dev);
        let w0 = Tensor::<B, 4>::random([10, 6, 3, 3], Distribution::Normal(0.0, 1.0), &dev);
        let b0 = Tensor::<B, 1>::from_data(
            TensorData::new((0..10).map(|v| v as f32).collect::<Vec<_>>(), [10]),
            &dev,
        );
        let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let grads_of = |ours: bool| {
            let x = Tensor::<A, 4>::from_data(x0.to_data(), &dev).require_grad();
            let w = Tensor::<A, 4>::from_data(w0.to_data(), &dev).require_grad();
            let b = Tensor::<A, 1>::from_data(b0.to_data(), &dev).require_grad();
            let y = if ours {
                conv2d(x.clone(), w.clone(), Some(b.clone()), opts.clone())
            } else {
                burn_conv2d(x.clone(), w.clone(), Some(b.clone()), opts.clone())
            };
            let g = (y.clone() * y).sum().backward();
            (
                host(x.grad(&g).expect("x grad")),
                host(w.grad(&g).expect("w grad")),
                host(b.grad(&g).expect("b grad")),
            )
        };
        assert_eq!(grads_of(true), grads_of(false));
    }
}
