//! Fused normalisations: GroupNorm over `[N, C, H, W]` (with the per-channel affine and an optional
//! SiLU) and LayerNorm / RMSNorm over the last dimension.
//!
//! Why: with burn's ops a GroupNorm+SiLU is ~10 tensor passes (mean, subtract, square, mean, sqrt,
//! recip, scale, shift, SiLU's exp and product), each a separate allocation, most of them on one
//! thread under burn-flex 0.21; PyTorch runs it at ~14 GB/s here against our ~1 GB/s
//! (docs/performance.md, issue 18). Here each group or row is read twice (statistics) and written
//! once, groups and rows in parallel, in place when the tensor is not shared.
//!
//! Statistics follow the formulas of the callers (EDM's `GroupNorm`, icl-probe's `Norm`): the mean,
//! then the variance as the mean of squared deviations (two passes, not `E[x²] − E[x]²`), then
//! `1 / √(var + eps)` in float32. Sums are accumulated in float64 lanes, so they are at least as accurate as burn's float32
//! sums (which the tests show: the two differ by burn's rounding).

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use std::mem::MaybeUninit;

use crate::elementwise::{from_vec, rows_in_place, silu_f32, with_isa, PARALLEL_MIN};
use crate::{back, flex_if_enabled, to_flex};

/// `Σ f(x)` over `xs` in eight float64 lanes (vectorised: AVX-512 holds eight). Float64 because
/// a group or row with a few large values (±100 among O(1) ones) loses ~ulp(100) = 8e-6 per
/// float32 addition, which the mean and the deviations `x − mean` would carry.
#[inline(always)]
fn sum_by(xs: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    const L: usize = 8;
    let mut acc = [0f64; L];
    let chunks = xs.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            acc[i] += f(c[i] as f64);
        }
    }
    let mut s: f64 = acc.iter().sum();
    for &v in rest {
        s += f(v as f64);
    }
    s
}

/// Mean and `1/√(var + eps)` of `xs` (two passes, float32 results as the burn formulas give).
#[inline(always)]
fn mean_inv_std(xs: &[f32], eps: f32) -> (f32, f32) {
    let n = xs.len() as f64;
    let mean = sum_by(xs, |v| v) / n;
    let var = (sum_by(xs, |v| (v - mean) * (v - mean)) / n) as f32;
    (mean as f32, 1.0 / (var + eps).sqrt())
}

/// A float32 Flex tensor's values as a contiguous whole-buffer tensor (a view when it already is
/// one); `None` when `t` is not Flex float32.
fn f32_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Option<FlexTensor> {
    let ft = to_flex(t).ok()?;
    (ft.dtype() == DType::F32).then(|| ft.to_contiguous())
}

/// Which normalisation over the last dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowNorm {
    /// `(x − mean) / √(var + eps)`.
    Layer,
    /// `x / √(mean(x²) + eps)`.
    Rms,
}

/// GroupNorm of `x: [N, C, H, W]` in `groups` groups, then `y·weight[c] + bias[c]` when `affine`
/// is given, then SiLU when `silu`, as one pass per group on Flex float32.
///
/// `Err(x)` (the input back, untouched) when the fast path does not apply: another backend
/// (including `Autodiff<Flex>`), another dtype, the kernels switched off, `C` not a multiple of
/// `groups`, or affine vectors that are not `[C]` float32. The caller then runs its own ops, so
/// that path stays exactly what it was.
pub fn try_group_norm<B: Backend>(
    x: Tensor<B, 4>,
    groups: usize,
    eps: f64,
    affine: Option<(&Tensor<B, 1>, &Tensor<B, 1>)>,
    silu: bool,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let [n, c, h, w] = x.dims();
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(x);
    }
    if let Some((wt, bs)) = affine {
        if wt.dims() != [c] || bs.dims() != [c] {
            return Err(x);
        }
    }
    let ft = match flex_if_enabled(x) {
        Ok(ft) if ft.dtype() == DType::F32 => ft,
        Ok(ft) => return Err(back(ft)),
        Err(t) => return Err(t),
    };
    let aff = match affine {
        Some((wt, bs)) => match (f32_values(wt.clone()), f32_values(bs.clone())) {
            (Some(wt), Some(bs)) => Some((wt, bs)),
            _ => return Err(back(ft)),
        },
        None => None,
    };
    // In place when unique; a shared input is copied group by group into a fresh (not zeroed)
    // buffer right before its group is normalised there, so the copy is read back from L1/L2
    // instead of being a whole-tensor pass of its own (burn-flex `to_vec`, then three passes).
    let mut ft = ft.to_contiguous();
    let shape = ft.layout().shape().clone();
    let total = n * c * h * w;
    let cpg = c / groups;
    let hw = h * w;
    let glen = cpg * hw;
    if total > 0 {
        let (wv, bv) = match &aff {
            Some((wt, bs)) => (
                Some(&wt.storage::<f32>()[..c]),
                Some(&bs.storage::<f32>()[..c]),
            ),
            None => (None, None),
        };
        let eps = eps as f32;
        // One group: its index `gi` over N·G gives the channel range.
        let run = |gi: usize, xs: &mut [f32]| {
            with_isa(
                #[inline(always)]
                || {
                    let (mean, inv) = mean_inv_std(xs, eps);
                    let c0 = (gi % groups) * cpg;
                    for (k, ch) in xs.chunks_mut(hw).enumerate() {
                        let (scale, shift) = match (wv, bv) {
                            (Some(wv), Some(bv)) => (inv * wv[c0 + k], bv[c0 + k]),
                            _ => (inv, 0.0),
                        };
                        if silu {
                            for v in ch.iter_mut() {
                                *v = silu_f32((*v - mean) * scale + shift);
                            }
                        } else {
                            for v in ch.iter_mut() {
                                *v = (*v - mean) * scale + shift;
                            }
                        }
                    }
                },
            )
        };
        if let Some(buf) = ft.try_storage_mut::<f32>() {
            for_each_group(&mut buf[..total], glen, &run);
            return Ok(back(ft));
        }
        let src = &ft.storage::<f32>()[..total];
        let mut out: Vec<f32> = Vec::with_capacity(total);
        for_each_group(
            &mut out.spare_capacity_mut()[..total],
            glen,
            &|gi: usize, dst: &mut [MaybeUninit<f32>]| {
                for (d, &v) in dst.iter_mut().zip(&src[gi * glen..]) {
                    d.write(v);
                }
                // SAFETY: every element of `dst` was written just above; `MaybeUninit<f32>` has
                // the layout of `f32`.
                let xs = unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) };
                run(gi, xs)
            },
        );
        // SAFETY: `for_each_group` visited every group of `glen` elements, `total` in all, and
        // each visit wrote its whole group.
        unsafe { out.set_len(total) };
        return Ok(back(from_vec(out, shape)));
    }
    Ok(back(ft))
}

/// `f(group_index, group)` over consecutive groups of `glen` elements of `buf`, in parallel (tasks
/// of ~16 Ki elements) above [`PARALLEL_MIN`].
fn for_each_group<T: Send>(buf: &mut [T], glen: usize, f: &(impl Fn(usize, &mut [T]) + Sync)) {
    if buf.len() < PARALLEL_MIN {
        buf.chunks_mut(glen)
            .enumerate()
            .for_each(|(gi, xs)| f(gi, xs));
    } else {
        let per_task = (16 * 1024 / glen).max(1);
        buf.par_chunks_mut(per_task * glen)
            .enumerate()
            .for_each(|(t, block)| {
                for (k, xs) in block.chunks_mut(glen).enumerate() {
                    f(t * per_task + k, xs);
                }
            });
    }
}

/// [`try_group_norm`] with burn's ops as the fallback (mean, variance of the deviations,
/// `1/√(var + eps)`, the affine with `[1, C, 1, 1]` vectors, burn's SiLU).
pub fn group_norm<B: Backend>(
    x: Tensor<B, 4>,
    groups: usize,
    eps: f64,
    affine: Option<(&Tensor<B, 1>, &Tensor<B, 1>)>,
    silu: bool,
) -> Tensor<B, 4> {
    match try_group_norm(x, groups, eps, affine, silu) {
        Ok(y) => y,
        Err(x) => {
            let [n, c, h, w] = x.dims();
            let g = groups.max(1);
            let xg = x.reshape([n, g, (c / g) * h * w]);
            let mean = xg.clone().mean_dim(2);
            let xc = xg - mean;
            let var = (xc.clone() * xc.clone()).mean_dim(2);
            let y = (xc * (var + eps).sqrt().recip()).reshape([n, c, h, w]);
            let y = match affine {
                Some((wt, bs)) => {
                    y * wt.clone().reshape([1, c, 1, 1]) + bs.clone().reshape([1, c, 1, 1])
                }
                None => y,
            };
            if silu {
                burn::tensor::activation::silu(y)
            } else {
                y
            }
        }
    }
}

/// LayerNorm or RMSNorm over the last dimension, then `·weight + bias` (each optional, `[D_last]`),
/// as icl-probe's `Norm` computes it in float32: `y = (x − mean)·(1/√(var + eps))` or
/// `y = x·(1/√(mean(x²) + eps))`, then `y·weight`, then `+ bias`. Gemma's `1 + w` is the caller's
/// weight. `Err(x)` under the same conditions as [`try_group_norm`].
pub fn try_norm_last<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    kind: RowNorm,
    weight: Option<&Tensor<B, 1>>,
    bias: Option<&Tensor<B, 1>>,
    eps: f32,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if D == 0 {
        return Err(x);
    }
    let d = x.dims()[D - 1];
    if weight.is_some_and(|t| t.dims() != [d]) || bias.is_some_and(|t| t.dims() != [d]) {
        return Err(x);
    }
    let ft = match flex_if_enabled(x) {
        Ok(ft) if ft.dtype() == DType::F32 => ft,
        Ok(ft) => return Err(back(ft)),
        Err(t) => return Err(t),
    };
    let wt = match weight.map(|t| f32_values(t.clone())) {
        Some(None) => return Err(back(ft)),
        w => w.flatten(),
    };
    let bs = match bias.map(|t| f32_values(t.clone())) {
        Some(None) => return Err(back(ft)),
        b => b.flatten(),
    };
    let wv = wt.as_ref().map(|t| &t.storage::<f32>()[..d]);
    let bv = bs.as_ref().map(|t| &t.storage::<f32>()[..d]);
    let ft = match rows_in_place(
        ft,
        d,
        #[inline(always)]
        |r| norm_row(r, kind, eps, wv, bv),
    ) {
        Ok(ft) => ft,
        Err(ft) => return Err(back(ft)),
    };
    Ok(back(ft))
}

/// One row of [`try_norm_last`] in place. `#[inline(always)]` so that it is compiled inside
/// `with_isa`'s vectorised copies.
#[inline(always)]
fn norm_row(xs: &mut [f32], kind: RowNorm, eps: f32, wv: Option<&[f32]>, bv: Option<&[f32]>) {
    let n = xs.len() as f64;
    let (mean, inv) = match kind {
        RowNorm::Layer => mean_inv_std(xs, eps),
        RowNorm::Rms => {
            let ms = (sum_by(xs, |v| v * v) / n) as f32;
            (0.0, 1.0 / (ms + eps).sqrt())
        }
    };
    match (wv, bv) {
        (Some(w), Some(b)) => {
            for ((v, &w), &b) in xs.iter_mut().zip(w).zip(b) {
                *v = (*v - mean) * inv * w + b;
            }
        }
        (Some(w), None) => {
            for (v, &w) in xs.iter_mut().zip(w) {
                *v = (*v - mean) * inv * w;
            }
        }
        (None, Some(b)) => {
            for (v, &b) in xs.iter_mut().zip(b) {
                *v = (*v - mean) * inv + b;
            }
        }
        (None, None) => {
            for v in xs.iter_mut() {
                *v = (*v - mean) * inv;
            }
        }
    }
}

/// [`try_norm_last`] with burn's ops as the fallback (the same formula).
pub fn norm_last<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    kind: RowNorm,
    weight: Option<&Tensor<B, 1>>,
    bias: Option<&Tensor<B, 1>>,
    eps: f32,
) -> Tensor<B, D> {
    match try_norm_last(x, kind, weight, bias, eps) {
        Ok(y) => y,
        Err(x) => {
            let last = D - 1;
            let y = match kind {
                RowNorm::Layer => {
                    let xc = x.clone() - x.mean_dim(last);
                    let var = (xc.clone() * xc.clone()).mean_dim(last);
                    xc * (var + eps).sqrt().recip()
                }
                RowNorm::Rms => {
                    let ms = (x.clone() * x.clone()).mean_dim(last);
                    x * (ms + eps).sqrt().recip()
                }
            };
            let y = match weight {
                Some(w) => y * w.clone().unsqueeze::<D>(),
                None => y,
            };
            match bias {
                Some(b) => y + b.clone().unsqueeze::<D>(),
                None => y,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elementwise::tests::{max_rel, vals, SWITCH};
    use crate::set_enabled;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, TensorData};

    fn with_extremes<const D: usize>(x: Tensor<Flex, D>, nan: bool) -> Tensor<Flex, D> {
        let shape = x.shape();
        let mut v = vals(x);
        v[0] = 100.0;
        if v.len() > 1 {
            v[1] = -100.0;
        }
        if nan && v.len() > 2 {
            let last = v.len() - 1;
            v[last] = f32::NAN;
        }
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn silu64(y: f64) -> f64 {
        y / (1.0 + (-y).exp())
    }

    /// GroupNorm in float64 on the logical values of `[N, C, H, W]`.
    fn gn_truth(
        v: &[f32],
        c: usize,
        hw: usize,
        groups: usize,
        aff: Option<(&[f32], &[f32])>,
        silu: bool,
    ) -> Vec<f32> {
        let glen = c / groups * hw;
        let mut out = Vec::with_capacity(v.len());
        for (gi, g) in v.chunks(glen).enumerate() {
            let n = g.len() as f64;
            let mean = g.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = g.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for (k, &x) in g.iter().enumerate() {
                let ch = (gi % groups) * (c / groups) + k / hw;
                let mut y = (x as f64 - mean) * inv;
                if let Some((w, b)) = aff {
                    y = y * w[ch] as f64 + b[ch] as f64;
                }
                out.push(if silu { silu64(y) } else { y } as f32);
            }
        }
        out
    }

    /// LayerNorm / RMSNorm in float64 on rows of `d` values.
    fn row_truth(
        v: &[f32],
        d: usize,
        kind: RowNorm,
        w: Option<&[f32]>,
        b: Option<&[f32]>,
    ) -> Vec<f32> {
        v.chunks(d)
            .flat_map(|r| {
                let n = r.len() as f64;
                let mean = match kind {
                    RowNorm::Layer => r.iter().map(|&x| x as f64).sum::<f64>() / n,
                    RowNorm::Rms => 0.0,
                };
                let var = r.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
                let inv = 1.0 / (var + 1e-5).sqrt();
                r.iter()
                    .enumerate()
                    .map(|(i, &x)| {
                        let y = (x as f64 - mean) * inv * w.map_or(1.0, |w| w[i] as f64);
                        (y + b.map_or(0.0, |b| b[i] as f64)) as f32
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The fast path against the same function with the kernels off (burn's ops).
    fn both<T>(f: impl Fn() -> T) -> (T, T) {
        set_enabled(true);
        let fast = f();
        set_enabled(false);
        let slow = f();
        set_enabled(true);
        (fast, slow)
    }

    #[test]
    fn group_norm_matches_burn() {
        let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        let dev = Default::default();
        for (shape, groups) in [
            ([1, 4, 1, 1], 2),
            ([2, 6, 3, 5], 3),
            ([3, 64, 7, 9], 32),
            ([8, 128, 16, 16], 32),
            ([2, 12, 33, 17], 4),
        ] {
            let c = shape[1];
            let x = Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.5, 3.0), &dev);
            let x = with_extremes(x, shape[0] > 1);
            let wt = Tensor::<Flex, 1>::random([c], Distribution::Normal(1.0, 0.5), &dev);
            let bs = Tensor::<Flex, 1>::random([c], Distribution::Normal(0.0, 0.5), &dev);
            for silu in [false, true] {
                for affine in [None, Some((&wt, &bs))] {
                    let (wv, bv) = (vals(wt.clone()), vals(bs.clone()));
                    let aff = affine.map(|_| (&wv[..], &bv[..]));
                    for (x, what) in [
                        (x.clone(), "shared"),
                        (x.clone().swap_dims(2, 3), "transposed"),
                    ] {
                        let before = vals(x.clone());
                        let (fast, slow) =
                            both(|| vals(group_norm(x.clone(), groups, 1e-5, affine, silu)));
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&vals(x.clone())), bits(&before), "input modified");
                        let [_, c, h, w] = x.dims();
                        let want = gn_truth(&before, c, h * w, groups, aff, silu);
                        // Relative for |y| ≥ 1, absolute below: small outputs are differences of O(1)
                        // terms (x − mean, then `·w + b`), each rounded at ~1e-7 in float32.
                        let e = max_rel(&fast, &want, 1.0);
                        assert!(
                            e <= 1e-5,
                            "{shape:?} g{groups} silu {silu} {what}: {e:e} vs f64"
                        );
                        // burn's float32 sums over a group holding ±100 are off by ~1e-5 themselves.
                        let e = max_rel(&fast, &slow, 1.0);
                        assert!(
                            e <= 1e-4,
                            "{shape:?} g{groups} silu {silu} {what}: {e:e} vs burn"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn group_norm_refuses_what_it_cannot_do() {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::ones([1, 6, 2, 2], &dev);
        assert!(try_group_norm(x.clone(), 4, 1e-5, None, false).is_err());
        let w = Tensor::<Flex, 1>::ones([5], &dev);
        assert!(try_group_norm(x.clone(), 3, 1e-5, Some((&w, &w)), false).is_err());
        let xa = Tensor::<Autodiff<Flex>, 4>::ones([1, 6, 2, 2], &dev);
        assert!(try_group_norm(xa, 3, 1e-5, None, true).is_err());
    }

    #[test]
    fn row_norms_match_burn() {
        let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        let dev = Default::default();
        for shape in [[1, 1], [3, 7], [5, 576], [128, 768], [200, 1025]] {
            let d = shape[1];
            let x = Tensor::<Flex, 2>::random(shape, Distribution::Normal(0.3, 2.0), &dev);
            let x = with_extremes(x, shape[0] > 1);
            let wt = Tensor::<Flex, 1>::random([d], Distribution::Normal(1.0, 0.5), &dev);
            let bs = Tensor::<Flex, 1>::random([d], Distribution::Normal(0.0, 0.5), &dev);
            for kind in [RowNorm::Layer, RowNorm::Rms] {
                for (w, b) in [(None, None), (Some(&wt), None), (Some(&wt), Some(&bs))] {
                    let before = vals(x.clone());
                    let (wv, bv) = (w.map(|t| vals(t.clone())), b.map(|t| vals(t.clone())));
                    let want = row_truth(&before, d, kind, wv.as_deref(), bv.as_deref());
                    let (fast, slow) = both(|| vals(norm_last(x.clone(), kind, w, b, 1e-5)));
                    let e = max_rel(&fast, &want, 1.0);
                    assert!(e <= 1e-5, "{shape:?} {kind:?}: {e:e} vs f64");
                    assert_eq!(
                        vals(x.clone())
                            .iter()
                            .zip(&before)
                            .filter(|(a, b)| a.to_bits() != b.to_bits())
                            .count(),
                        0,
                        "input modified"
                    );
                    let e = max_rel(&fast, &slow, 1.0);
                    assert!(e <= 1e-4, "{shape:?} {kind:?}: {e:e} vs burn");
                    // A non-contiguous 3-D view: rows of the transposed tensor.
                    let x3 = x.clone().reshape([1, shape[0], d]).swap_dims(0, 1);
                    let (fast, slow) = both(|| vals(norm_last(x3.clone(), kind, w, b, 1e-5)));
                    let e = max_rel(&fast, &slow, 1.0);
                    assert!(e <= 1e-4, "{shape:?} {kind:?} 3-D: {e:e} vs burn");
                    let want3 = row_truth(&vals(x3.clone()), d, kind, wv.as_deref(), bv.as_deref());
                    let e = max_rel(&fast, &want3, 1.0);
                    assert!(e <= 1e-5, "{shape:?} {kind:?} 3-D: {e:e} vs f64");
                }
            }
        }
    }

    #[test]
    fn row_norm_autodiff_falls_back() {
        let dev = Default::default();
        let x = Tensor::<Autodiff<Flex>, 2>::from_data([[1.0f32, 2.0, 4.0]], &dev).require_grad();
        let y = norm_last(x.clone(), RowNorm::Rms, None, None, 0.0);
        let g = (y * Tensor::from_data([[1.0f32, 0.0, 0.0]], &dev))
            .sum()
            .backward();
        let gx = x
            .grad(&g)
            .expect("gradient")
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        // d/dx0 of x0 / sqrt(mean(x²)): r = √7, (1/r)(1 − x0²/(3r²)).
        let r = 7f32.sqrt();
        assert!(
            (gx[0] - (1.0 / r) * (1.0 - 1.0 / 21.0)).abs() < 1e-6,
            "{gx:?}"
        );
    }
}
