//! Layout changes and element-wise steps of attention and the gated MLP as single passes over
//! contiguous buffers on the plain Flex float32 backend, with burn's ops as the fallback.
//!
//! Why: in a profile of SmolLM2-135M prefill (1 × 128 tokens, 2 threads; docs/performance.md)
//! ~13 % of the time went to burn-flex's element-by-element strided copies (`StridedIter::next`,
//! `to_contiguous`): q/k/v were `narrow`ed out of the fused projection and `reshape`d, the heads
//! moved in front of the tokens with `swap_dims`, rotary embedding ran eight burn ops over those
//! strided views, the attention output went back through `swap_dims` + `reshape`, and the gated
//! MLP multiplied two `narrow`ed halves. Here each of those is one pass that copies whole `d_head`
//! rows (or computes one output element per input pair) on rayon.
//!
//! Every kernel computes exactly what the burn ops it replaces compute, operation for operation in
//! float32 (copies; `x·cos + r·sin` with the same two products and one sum; `act(g)·u` with
//! flex-kernels' own activation functions), so the fast and fallback paths agree bit for bit
//! (tested below), and hooks see the same numbers on either path.

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use flex_kernels::back;
use flex_kernels::elementwise::from_vec;

use crate::config::Activation;

/// Work per rayon task, in floats (small tensors run on the calling thread).
const TASK_FLOATS: usize = 1 << 14;

/// A float32 Flex tensor's elements as one row-major slice, copying only when it is a view that is
/// not already contiguous; `Err` gives the tensor back for the fallback.
fn f32_flex<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    let ft = flex_kernels::flex_if_enabled(x)?;
    Ok(if ft.as_slice::<f32>().is_some() {
        ft
    } else {
        ft.to_contiguous()
    })
}

/// Heads `[h0, h0 + nh)` of the rows of `x` (`[b·t, width]`, each row `… | head h0 | head h0+1 | …`
/// with heads of `dh` values from column 0) as a contiguous `[b, nh, t, dh]` tensor: TransformerLens
/// `[b, t, nh, dh]` with the heads moved in front of the tokens, as attention multiplies them.
pub(crate) fn heads_first<B: Backend>(
    x: Tensor<B, 2>,
    b: usize,
    t: usize,
    h0: usize,
    nh: usize,
    dh: usize,
) -> Tensor<B, 4> {
    let fallback = |x: Tensor<B, 2>| {
        x.narrow(1, h0 * dh, nh * dh)
            .reshape([b, t, nh, dh])
            .swap_dims(1, 2)
    };
    let ft = match f32_flex(x) {
        Ok(ft) => ft,
        Err(x) => return fallback(x),
    };
    let width = ft.layout().shape()[1];
    let Some(src) = ft.as_slice::<f32>() else {
        return fallback(back(ft));
    };
    if src.len() != b * t * width || (h0 + nh) * dh > width {
        return fallback(back(ft));
    }
    let mut out = vec![0f32; b * nh * t * dh];
    let copy = |(bh, dst): (usize, &mut [f32])| {
        let (bi, h) = (bh / nh, h0 + bh % nh);
        for (ti, row) in dst.chunks_exact_mut(dh).enumerate() {
            let s = (bi * t + ti) * width + h * dh;
            row.copy_from_slice(&src[s..s + dh]);
        }
    };
    if out.len() <= TASK_FLOATS {
        out.chunks_mut(t * dh).enumerate().for_each(copy);
    } else {
        out.par_chunks_mut(t * dh).enumerate().for_each(copy);
    }
    back(from_vec(out, vec![b, nh, t, dh]))
}

/// `[b, h, t, dh]` → `[b, t, h, dh]`, contiguous (so the `[b·t, h·dh]` reshape for the output
/// projection is free): attention's per-head outputs back in token order.
pub(crate) fn tokens_first<B: Backend>(z: Tensor<B, 4>) -> Tensor<B, 4> {
    let ft = match f32_flex(z) {
        Ok(ft) => ft,
        Err(z) => return z.swap_dims(1, 2),
    };
    let [b, h, t, dh]: [usize; 4] = match ft.layout().shape().as_slice().try_into() {
        Ok(s) => s,
        Err(_) => unreachable!("a Tensor<B, 4> has four dimensions"),
    };
    let Some(src) = ft.as_slice::<f32>() else {
        return back::<B, 4>(ft).swap_dims(1, 2);
    };
    let mut out = vec![0f32; b * t * h * dh];
    let copy = |(bt, dst): (usize, &mut [f32])| {
        let (bi, ti) = (bt / t, bt % t);
        for (hi, row) in dst.chunks_exact_mut(dh).enumerate() {
            let s = ((bi * h + hi) * t + ti) * dh;
            row.copy_from_slice(&src[s..s + dh]);
        }
    };
    if out.len() <= TASK_FLOATS {
        out.chunks_mut(h * dh).enumerate().for_each(copy);
    } else {
        out.par_chunks_mut(h * dh).enumerate().for_each(copy);
    }
    back(from_vec(out, vec![b, t, h, dh]))
}

/// Rotary embedding of `x` `[b, h, t, dh]` with tables `cos`/`sin` `[b, 1, t, rot]` (HF
/// `rotate_half`: dimension `i < rot/2` pairs with `i + rot/2`; dimensions from `rot` pass through),
/// in one pass: `x·cos + rotate_half(x)·sin`, the same two products and sum per element as the
/// burn formula in [`crate::rope::RopeTables::apply`]. `None` when not plain Flex float32.
pub(crate) fn rope_flex<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let [b, h, t, dh] = x.dims();
    let rot = cos.dims()[3];
    if cos.dtype() != DType::F32
        || cos.dims() != [b, 1, t, rot]
        || rot > dh
        || !rot.is_multiple_of(2)
    {
        return Err(x);
    }
    let ft = f32_flex(x)?;
    let (Ok(cf), Ok(sf)) = (f32_flex(cos.clone()), f32_flex(sin.clone())) else {
        return Err(back(ft));
    };
    let (Some(cs), Some(ss)) = (cf.as_slice::<f32>(), sf.as_slice::<f32>()) else {
        return Err(back(ft));
    };
    let n = b * h * t * dh;
    let Some(src) = ft.as_slice::<f32>().filter(|s| s.len() == n) else {
        return Err(back(ft));
    };
    let half = rot / 2;
    let rotate = |(row_idx, (dst, src)): (usize, (&mut [f32], &[f32]))| {
        // Row (bi, hi, ti) of dh values; its tables are row (bi, ti).
        let (bi, ti) = (row_idx / (h * t), row_idx % t);
        let c = &cs[(bi * t + ti) * rot..][..rot];
        let s = &ss[(bi * t + ti) * rot..][..rot];
        for j in 0..half {
            dst[j] = src[j] * c[j] + -src[j + half] * s[j];
            dst[j + half] = src[j + half] * c[j + half] + src[j] * s[j + half];
        }
        dst[rot..].copy_from_slice(&src[rot..]);
    };
    let mut out = vec![0f32; n];
    if n <= TASK_FLOATS {
        out.chunks_exact_mut(dh)
            .zip(src.chunks_exact(dh))
            .enumerate()
            .for_each(rotate);
    } else {
        out.par_chunks_exact_mut(dh)
            .zip(src.par_chunks_exact(dh))
            .enumerate()
            .for_each(rotate);
    }
    Ok(back(from_vec(out, vec![b, h, t, dh])))
}

/// `scores·scale + mask` for `scores` `[b, h, t, s]` and an additive `mask` `[b, 1, t, s]` shared
/// by the heads, in one pass (in place when `scores` is not shared): the same product and sum per
/// element as the two burn ops, whose broadcast of the mask over the heads burn-flex 0.21 runs
/// through its element-by-element strided iterator (6 % of SmolLM2 prefill in a profile).
pub(crate) fn scale_add_mask<B: Backend>(
    scores: Tensor<B, 4>,
    scale: f32,
    mask: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b, h, t, s] = scores.dims();
    let fallback = |x: Tensor<B, 4>| x * scale + mask.clone();
    if mask.dims() != [b, 1, t, s] {
        return fallback(scores);
    }
    let mut ft = match f32_flex(scores) {
        Ok(ft) => ft,
        Err(x) => return fallback(x),
    };
    let Ok(mf) = f32_flex(mask.clone()) else {
        return fallback(back(ft));
    };
    let Some(m) = mf.as_slice::<f32>().filter(|m| m.len() == b * t * s) else {
        return fallback(back(ft));
    };
    let n = b * h * t * s;
    let run = |(i, rows): (usize, &mut [f32])| {
        // One (image, head) block of t·s scores; its mask is image i / h's.
        let mb = &m[(i / h) * t * s..][..t * s];
        for (x, &c) in rows.iter_mut().zip(mb) {
            *x = *x * scale + c;
        }
    };
    if !ft.is_contiguous() || ft.layout().start_offset() != 0 {
        ft = ft.to_contiguous();
    }
    match ft.try_storage_mut::<f32>() {
        Some(buf) if buf.len() >= n => {
            let buf = &mut buf[..n];
            if n <= TASK_FLOATS {
                buf.chunks_mut(t * s).enumerate().for_each(run);
            } else {
                buf.par_chunks_mut(t * s).enumerate().for_each(run);
            }
            back(ft)
        }
        _ => {
            let Some(src) = ft.as_slice::<f32>().filter(|x| x.len() == n) else {
                return fallback(back(ft));
            };
            let mut out = src.to_vec();
            if n <= TASK_FLOATS {
                out.chunks_mut(t * s).enumerate().for_each(run);
            } else {
                out.par_chunks_mut(t * s).enumerate().for_each(run);
            }
            back(from_vec(out, vec![b, h, t, s]))
        }
    }
}

/// A gated MLP's `act(gate)·up` from the fused projection `pre` = `[N, gate | up]` (`2f` columns),
/// as `[N, f]`, in one pass; `Err(pre)` when not plain Flex float32 or for an activation other
/// than the two flex-kernels computes for [`super::forward`] (SiLU and tanh GELU).
pub(crate) fn gated_act<B: Backend>(
    act: Activation,
    pre: Tensor<B, 2>,
    f: usize,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    use flex_kernels::elementwise::{gelu_tanh_f32, silu_f32};
    let [n, w] = pre.dims();
    if w != 2 * f || !matches!(act, Activation::Silu | Activation::GeluTanh) {
        return Err(pre);
    }
    let ft = f32_flex(pre)?;
    let Some(src) = ft.as_slice::<f32>().filter(|s| s.len() == n * w) else {
        return Err(back(ft));
    };
    let out = match act {
        Activation::Silu => gated_with(silu_f32, src, n, f),
        Activation::GeluTanh => gated_with(gelu_tanh_f32, src, n, f),
        Activation::Gelu | Activation::Relu => unreachable!("returned above"),
    };
    Ok(back(from_vec(out, vec![n, f])))
}

fn gated_with<F: Fn(f32) -> f32 + Copy + Sync>(g: F, src: &[f32], n: usize, f: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * f];
    let run = |(dst, row): (&mut [f32], &[f32])| {
        let (gate, up) = row.split_at(f);
        gated_row(g, gate, up, dst);
    };
    if out.len() <= TASK_FLOATS {
        out.chunks_exact_mut(f)
            .zip(src.chunks_exact(2 * f))
            .for_each(run);
    } else {
        out.par_chunks_exact_mut(f)
            .zip(src.par_chunks_exact(2 * f))
            .for_each(run);
    }
    out
}

/// `dst[j] = g(gate[j])·up[j]`, compiled for AVX-512 or AVX2 when the CPU has them (the activation
/// functions are `#[inline(always)]` loops LLVM vectorises; the arithmetic is the same IEEE float32
/// sequence at every width, so the result does not depend on the ISA).
fn gated_row<F: Fn(f32) -> f32 + Copy>(g: F, gate: &[f32], up: &[f32], dst: &mut [f32]) {
    #[inline(always)]
    fn body<F: Fn(f32) -> f32>(g: F, gate: &[f32], up: &[f32], dst: &mut [f32]) {
        for ((d, &a), &u) in dst.iter_mut().zip(gate).zip(up) {
            *d = g(a) * u;
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
        unsafe fn avx512<F: Fn(f32) -> f32>(g: F, gate: &[f32], up: &[f32], dst: &mut [f32]) {
            body(g, gate, up, dst)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<F: Fn(f32) -> f32>(g: F, gate: &[f32], up: &[f32], dst: &mut [f32]) {
            body(g, gate, up, dst)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the features were detected at run time.
            return unsafe { avx512(g, gate, up, dst) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { avx2(g, gate, up, dst) };
        }
    }
    body(g, gate, up, dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RopeConfig, RopeScaling};
    use crate::rope::RopeTables;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    /// Autodiff<Flex> is not plain Flex, so every function here takes its burn fallback on it: the
    /// fast path on Flex must give the same bits.
    type Slow = Autodiff<Flex>;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = (i ^ seed).wrapping_mul(2_654_435_761) >> 8;
                h as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
            })
            .collect()
    }

    fn both<const D: usize>(v: &[f32], shape: [usize; D]) -> (Tensor<Flex, D>, Tensor<Slow, D>) {
        let dev = Default::default();
        (
            Tensor::from_data(TensorData::new(v.to_vec(), shape), &dev),
            Tensor::from_data(TensorData::new(v.to_vec(), shape), &dev),
        )
    }

    fn bits<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<u32>) {
        let d = t.into_data();
        let shape = d.shape.to_vec();
        let v: Vec<f32> = d.into_vec().unwrap();
        (shape, v.iter().map(|x| x.to_bits()).collect())
    }

    #[test]
    fn heads_first_and_tokens_first_equal_narrow_reshape_swap() {
        // b = 2, t = 5, heads q 3 | k 2 | v 2 of dh 4: width 28; also one big enough for rayon.
        for (b, t, dh) in [(2usize, 5usize, 4usize), (3, 200, 64)] {
            let width = 7 * dh;
            let v = values(b * t * width, 11);
            let (fast, slow) = both(&v, [b * t, width]);
            for (h0, n) in [(0, 3), (3, 2), (5, 2)] {
                let f = heads_first(fast.clone(), b, t, h0, n, dh);
                let s = heads_first(slow.clone(), b, t, h0, n, dh);
                assert!(to_flex_ok(&f), "fast path taken");
                assert_eq!(bits(f.clone()), bits(s.clone()));
                assert_eq!(bits(tokens_first(f)), bits(tokens_first(s)));
            }
            // A strided input (a column slice of a wider matrix) is read correctly too.
            let (wide, wide_slow) = both(&values(b * t * (width + 3), 5), [b * t, width + 3]);
            let f = heads_first(wide.narrow(1, 3, width), b, t, 3, 2, dh);
            let s = heads_first(wide_slow.narrow(1, 3, width), b, t, 3, 2, dh);
            assert_eq!(bits(f), bits(s));
        }
    }

    fn to_flex_ok(t: &Tensor<Flex, 4>) -> bool {
        flex_kernels::to_flex(t.clone()).is_ok_and(|f| f.is_contiguous())
    }

    #[test]
    fn rope_one_pass_equals_the_burn_formula() {
        let dev = Default::default();
        let (b, h, t) = (2, 3, 7);
        for (dh, rot) in [(8usize, 8usize), (16, 8)] {
            let cfg = RopeConfig {
                theta: 10_000.0,
                rotary_dim: rot,
                scaling: RopeScaling::None,
            };
            let positions: Vec<usize> = (0..b * t).map(|i| (i * 3) % 11).collect();
            let tf = RopeTables::<Flex>::new(&cfg, &positions, b, t, &dev);
            let ts = RopeTables::<Slow>::new(&cfg, &positions, b, t, &dev);
            let v = values(b * h * t * dh, 3);
            let (xf, xs) = both(&v, [b, h, t, dh]);
            assert_eq!(bits(tf.apply(xf.clone())), bits(ts.apply(xs.clone())));
            // A transposed view (the hooked path's `[b, t, h, dh]` swapped) as input.
            let (yf, ys) = both(&v, [b, t, h, dh]);
            assert_eq!(
                bits(tf.apply(yf.swap_dims(1, 2))),
                bits(ts.apply(ys.swap_dims(1, 2)))
            );
        }
    }

    #[test]
    fn scale_add_mask_equals_mul_then_broadcast_add() {
        for (b, h, t) in [(1usize, 3usize, 4usize), (2, 9, 64)] {
            let (x, _) = both(&values(b * h * t * t, 2), [b, h, t, t]);
            let (m, _) = both(&values(b * t * t, 9), [b, 1, t, t]);
            let want = x.clone() * 0.125 + m.clone();
            // Unique input (written in place) and a shared one (copied).
            assert_eq!(
                bits(scale_add_mask(x.clone(), 0.125, &m)),
                bits(want.clone())
            );
            let keep = x.clone();
            assert_eq!(bits(scale_add_mask(x, 0.125, &m)), bits(want));
            drop(keep);
        }
    }

    #[test]
    fn gated_act_equals_activation_times_up() {
        for act in [Activation::Silu, Activation::GeluTanh] {
            for (n, f) in [(3usize, 5usize), (130, 300)] {
                let (pre, _) = both(&values(n * 2 * f, 7), [n, 2 * f]);
                let fast = gated_act(act, pre.clone(), f).expect("Flex float32 takes the kernel");
                let g = pre.clone().narrow(1, 0, f);
                let want = match act {
                    Activation::Silu => flex_kernels::elementwise::silu(g),
                    _ => flex_kernels::elementwise::gelu_tanh(g),
                } * pre.narrow(1, f, f);
                assert_eq!(bits(fast), bits(want));
            }
        }
        let (pre, _) = both(&values(12, 1), [2, 6]);
        assert!(gated_act(Activation::Gelu, pre.clone(), 3).is_err());
        assert!(
            gated_act(Activation::Silu, pre, 2).is_err(),
            "width is not 2f"
        );
    }
}
