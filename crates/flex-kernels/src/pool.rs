//! 2-D max and average pooling over `[N, C, H, W]` float32, row-vectorised and split over rayon.
//!
//! Why: burn-flex 0.21's pools visit every output pixel with a bounds check per tap and, for the
//! average pool, call its `add` and `div` through function pointers per element (`avg_pool3d_impl`
//! takes `fn(T, T) -> T`), which LLVM cannot inline or vectorise. In Inception-v3 (FID), whose
//! A/C/E blocks average-pool 192–2048 channels at 35², 17² and 8², a `perf record` of the pool3
//! forward (b8, 2026-12-03 18:22 UTC) put ~35 % of all samples in those closures
//! (docs/performance.md, "The networks' element-wise work and conv packing").
//!
//! Here each output row is accumulated tap by tap: for one tap `(kh, kw)` the output columns whose
//! window holds it form one analytic range, so the inner loop is a plain strided (stride 1:
//! contiguous) slice operation without branches that LLVM vectorises. Taps are visited in the
//! order burn-flex visits them (`kh` outer, `kw` inner), each output starting from burn-flex's
//! starting value, so the results are **bit-identical** to burn-flex's (tested), NaN included.

use burn::tensor::backend::Backend;
use burn::tensor::module::{avg_pool2d as burn_avg_pool2d, max_pool2d as burn_max_pool2d};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use crate::elementwise::{from_vec, isa, Isa};
use crate::{back, flex_if_enabled};

/// Shape of a pooling window, resolved against one input: what both kernels need.
#[derive(Clone, Debug)]
struct Geometry {
    /// For each output column, how many kernel columns of its window lie inside the input
    /// (the average pool's divisor without padding, times the valid rows).
    col_taps: Vec<usize>,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
}

impl Geometry {
    /// `None` when this module's kernels do not cover the case (then burn's op runs, with its own
    /// checks and messages): dilation other than 1, `ceil_mode`, a zero kernel or stride, padding
    /// above half the kernel (PyTorch's limit; a window could then lie wholly in the padding), a
    /// kernel larger than the padded input, or an empty input.
    fn new(
        dims: [usize; 4],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    ) -> Option<Self> {
        let [_, _, h, w] = dims;
        if ceil_mode || dilation != [1, 1] {
            return None;
        }
        let mut out = [0usize; 2];
        for (i, &size) in [h, w].iter().enumerate() {
            let (k, s, p) = (kernel[i], stride[i], padding[i]);
            // An empty input with padding could still have outputs (all padding): burn's case.
            if size == 0 || k == 0 || s == 0 || 2 * p > k || size + 2 * p < k {
                return None;
            }
            out[i] = (size + 2 * p - k) / s + 1;
        }
        let col_taps = (0..out[1])
            .map(|ow| Self::valid_taps(ow, stride[1], padding[1], kernel[1], w).len())
            .collect();
        Some(Self {
            col_taps,
            h,
            w,
            oh: out[0],
            ow: out[1],
            kernel,
            stride,
            padding,
        })
    }

    /// The kernel offsets along one axis whose input index `o·s + k − p` lies in `[0, size)`.
    #[inline(always)]
    fn valid_taps(o: usize, s: usize, p: usize, k: usize, size: usize) -> std::ops::Range<usize> {
        let start = o * s;
        let lo = p.saturating_sub(start);
        let hi = (size + p).saturating_sub(start).min(k);
        lo..hi.max(lo)
    }

    /// For kernel column `kw`: the output columns whose window holds input column
    /// `ow·s + kw − p` inside `[0, w)`.
    #[inline(always)]
    fn cols_for_tap(&self, kw: usize) -> std::ops::Range<usize> {
        let (s, p) = (self.stride[1], self.padding[1]);
        // ow·s + kw ≥ p  ⇔  ow ≥ ⌈(p − kw)/s⌉;  ow·s + kw − p ≤ w − 1  ⇔  ow ≤ ⌊(w − 1 + p − kw)/s⌋.
        let lo = p.saturating_sub(kw).div_ceil(s);
        let hi = if self.w + p > kw {
            ((self.w - 1 + p - kw) / s + 1).min(self.ow)
        } else {
            0
        };
        lo..hi.max(lo)
    }
}

/// `dst[i] = op(dst[i], src[i·stride])` for every `i`, vectorised (`op` is inlined).
///
/// Stride 1 goes in fixed blocks of 8: the rows here are short (8–35 columns), and a plain loop
/// is vectorised by LLVM 4×16 wide with a scalar remainder, so a 35-column row ran wholly in the
/// scalar remainder (avg pool 3×3 on 8×288×35²: 20–36 ms before, against burn-flex's 124–143 ms).
#[inline(always)]
fn combine_strided(dst: &mut [f32], src: &[f32], stride: usize, op: impl Fn(f32, f32) -> f32) {
    if stride == 1 {
        const V: usize = 8;
        let src = &src[..dst.len()];
        let mut d8 = dst.chunks_exact_mut(V);
        let mut s8 = src.chunks_exact(V);
        for (d, s) in (&mut d8).zip(&mut s8) {
            for i in 0..V {
                d[i] = op(d[i], s[i]);
            }
        }
        for (d, &s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
            *d = op(*d, s);
        }
    } else if stride == 2 {
        // Blocks of 8 outputs from 15 consecutive inputs: LLVM turns the even-index reads into
        // vector shuffles (a `step_by(2)` loop stayed scalar: `vmaxss` in the profile of
        // Inception's stride-2 max pools).
        const V: usize = 8;
        let mut done = 0;
        for (d, s) in dst.chunks_exact_mut(V).zip(src.chunks(2 * V)) {
            if s.len() < 2 * V - 1 {
                break;
            }
            for i in 0..V {
                d[i] = op(d[i], s[2 * i]);
            }
            done += V;
        }
        let rest = src.get(2 * done..).unwrap_or(&[]);
        for (d, s) in dst[done..].iter_mut().zip(rest.iter().step_by(2)) {
            *d = op(*d, *s);
        }
    } else {
        for (d, s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
            *d = op(*d, *s);
        }
    }
}

/// One output row of one plane: taps in burn-flex's order (`kh` outer, `kw` inner), each a
/// vectorised range of output columns.
#[inline(always)]
fn row_taps(
    g: &Geometry,
    plane: &[f32],
    oh: usize,
    out: &mut [f32],
    op: impl Fn(f32, f32) -> f32 + Copy,
) {
    let (sw, pw) = (g.stride[1], g.padding[1]);
    let rows = Geometry::valid_taps(oh, g.stride[0], g.padding[0], g.kernel[0], g.h);
    for kh in rows {
        let ih = oh * g.stride[0] + kh - g.padding[0];
        let row = &plane[ih * g.w..(ih + 1) * g.w];
        for kw in 0..g.kernel[1] {
            let cols = g.cols_for_tap(kw);
            if cols.is_empty() {
                continue;
            }
            let first_in = cols.start * sw + kw - pw;
            combine_strided(&mut out[cols.clone()], &row[first_in..], sw, op);
        }
    }
}

/// Which pool [`per_plane`] runs.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Max,
    Avg { count_include_pad: bool },
}

/// Max pool of one plane: each output starts from its window's first valid tap (row `kh_first`,
/// column `max(ow·s − p, 0)`), then takes every tap that is `> current`.
#[inline(always)]
fn max_plane(g: &Geometry, plane: &[f32], out: &mut [f32]) {
    for (oh, orow) in out.chunks_mut(g.ow).enumerate() {
        let kh0 = Geometry::valid_taps(oh, g.stride[0], g.padding[0], g.kernel[0], g.h).start;
        let ih = oh * g.stride[0] + kh0 - g.padding[0];
        let row = &plane[ih * g.w..(ih + 1) * g.w];
        for (ow, o) in orow.iter_mut().enumerate() {
            *o = row[(ow * g.stride[1]).saturating_sub(g.padding[1])];
        }
        row_taps(g, plane, oh, orow, |m, v| if v > m { v } else { m });
    }
}

/// Average pool of one plane: valid taps summed from 0, then divided by their count (or by the
/// kernel area with `count_include_pad`).
#[inline(always)]
fn avg_plane(g: &Geometry, plane: &[f32], out: &mut [f32], count_include_pad: bool) {
    for (oh, orow) in out.chunks_mut(g.ow).enumerate() {
        row_taps(g, plane, oh, orow, |a, v| a + v);
        let rows = Geometry::valid_taps(oh, g.stride[0], g.padding[0], g.kernel[0], g.h).len();
        for (ow, o) in orow.iter_mut().enumerate() {
            let count = if count_include_pad {
                g.kernel[0] * g.kernel[1]
            } else {
                rows * g.col_taps[ow]
            };
            *o /= count.max(1) as f32;
        }
    }
}

#[inline(always)]
fn plane(kind: Kind, g: &Geometry, i: &[f32], o: &mut [f32]) {
    match kind {
        Kind::Max => max_plane(g, i, o),
        Kind::Avg { count_include_pad } => avg_plane(g, i, o, count_include_pad),
    }
}

/// [`plane`] compiled for the widest ISA this CPU has. Not through `with_isa`: its closure argument
/// holding both pool bodies was not inlined into the target-feature function (the profile showed it
/// as a function of its own, baseline SSE2 code), while an `#[inline(always)]` fn always is.
fn plane_for_isa(kind: Kind, g: &Geometry, i: &[f32], o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
    unsafe fn avx512(kind: Kind, g: &Geometry, i: &[f32], o: &mut [f32]) {
        plane(kind, g, i, o)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(kind: Kind, g: &Geometry, i: &[f32], o: &mut [f32]) {
        plane(kind, g, i, o)
    }
    match isa() {
        // SAFETY: `isa()` returns this level only after detecting its features at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512(kind, g, i, o) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2(kind, g, i, o) },
        Isa::Base => plane(kind, g, i, o),
    }
}

/// Runs the pool `kind` over every `(n, c)` plane in parallel (sequentially when the
/// whole tensor is small). Returns `None` when `x` is not a float32 Flex tensor.
fn per_plane<B: Backend>(
    x: Tensor<B, 4>,
    g: &Geometry,
    kind: Kind,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let ft = match flex_if_enabled(x) {
        Ok(ft) if ft.dtype() == DType::F32 => ft.to_contiguous(),
        Ok(ft) => return Err(back(ft)),
        Err(t) => return Err(t),
    };
    let dims = ft.layout().shape().clone();
    let (n, c) = (dims[0], dims[1]);
    let src = &ft.storage::<f32>()[..n * c * g.h * g.w];
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let mut out = vec![0f32; n * c * plane_out];
    if plane_out > 0 && plane_in > 0 {
        let run = |(o, i): (&mut [f32], &[f32])| plane_for_isa(kind, g, i, o);
        if src.len() < crate::elementwise::PARALLEL_MIN {
            out.chunks_mut(plane_out)
                .zip(src.chunks(plane_in))
                .for_each(run);
        } else {
            out.par_chunks_mut(plane_out)
                .zip(src.par_chunks(plane_in))
                .for_each(run);
        }
    }
    Ok(back(from_vec(out, [n, c, g.oh, g.ow])))
}

/// burn's `max_pool2d`, with a fast float32 path on Flex for dilation 1 without `ceil_mode`.
///
/// Same result as burn-flex bit for bit: each output starts from its window's first valid tap and
/// takes a later tap when `tap > current` (so a NaN first tap stays, later NaNs are skipped).
pub fn max_pool2d<B: Backend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> Tensor<B, 4> {
    let fallback = |x| burn_max_pool2d(x, kernel, stride, padding, dilation, ceil_mode);
    let Some(g) = Geometry::new(x.dims(), kernel, stride, padding, dilation, ceil_mode) else {
        return fallback(x);
    };
    per_plane(x, &g, Kind::Max).unwrap_or_else(fallback)
}

/// burn's `avg_pool2d`, with a fast float32 path on Flex without `ceil_mode`.
///
/// Same result as burn-flex bit for bit: the window's valid taps summed from 0 in burn-flex's
/// order, divided by their count (`count_include_pad = false`, TF's `SAME` pools as Inception
/// uses) or by the whole kernel area (`true`; without `ceil_mode` every window lies inside the
/// padded input).
pub fn avg_pool2d<B: Backend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    count_include_pad: bool,
    ceil_mode: bool,
) -> Tensor<B, 4> {
    let fallback = |x| burn_avg_pool2d(x, kernel, stride, padding, count_include_pad, ceil_mode);
    let Some(g) = Geometry::new(x.dims(), kernel, stride, padding, [1, 1], ceil_mode) else {
        return fallback(x);
    };
    per_plane(x, &g, Kind::Avg { count_include_pad }).unwrap_or_else(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elementwise::tests::{max_rel, vals, SWITCH};
    use crate::set_enabled;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, TensorData};

    type Case = ([usize; 2], [usize; 2], [usize; 2]);

    /// Kernel, stride, padding: Inception's pools, odd and asymmetric ones, stride above the
    /// kernel, padding exactly half the kernel.
    const CASES: &[Case] = &[
        ([3, 3], [2, 2], [0, 0]),
        ([3, 3], [1, 1], [1, 1]),
        ([8, 8], [8, 8], [0, 0]),
        ([2, 2], [2, 2], [0, 0]),
        ([3, 2], [1, 2], [1, 1]),
        ([1, 3], [3, 1], [0, 1]),
        ([5, 5], [2, 3], [2, 2]),
        ([2, 3], [3, 4], [1, 0]),
        ([4, 1], [1, 1], [2, 0]),
    ];

    /// `[2, 3, 11, 9]` inputs in four layouts: contiguous, a permuted view, a narrowed view and
    /// a shared one; with ±inf and NaN in some.
    fn inputs(special: bool) -> Vec<(&'static str, Tensor<Flex, 4>)> {
        let dev = Default::default();
        let mut x = Tensor::<Flex, 4>::random([2, 3, 11, 9], Distribution::Normal(0.0, 3.0), &dev);
        if special {
            let mut v = vals(x.clone());
            v[0] = f32::NAN; // a first tap
            v[13] = f32::INFINITY;
            v[40] = f32::NEG_INFINITY;
            v[77] = f32::NAN; // a later tap
            v[150] = 100.0;
            x = Tensor::from_data(TensorData::new(v, [2, 3, 11, 9]), &dev);
        }
        let t = Tensor::<Flex, 4>::random([2, 9, 11, 3], Distribution::Normal(0.0, 3.0), &dev)
            .permute([0, 3, 2, 1]);
        let n = Tensor::<Flex, 4>::random([2, 5, 12, 10], Distribution::Normal(0.0, 3.0), &dev)
            .narrow(1, 1, 3)
            .narrow(2, 1, 11)
            .narrow(3, 0, 9);
        // Wide rows: several full blocks of 8 outputs at strides 1 and 2 (width 33 with a 3-wide
        // stride-2 window ends a block exactly at the end of the row).
        let wide = Tensor::<Flex, 4>::random([1, 2, 19, 33], Distribution::Normal(0.0, 3.0), &dev);
        let wide_even =
            Tensor::<Flex, 4>::random([1, 1, 9, 32], Distribution::Normal(0.0, 3.0), &dev);
        vec![
            ("wide", wide),
            ("wide even", wide_even),
            ("contiguous", x.clone()),
            ("permuted", t),
            ("narrowed", n),
            ("shared", x),
        ]
    }

    fn both(f: impl Fn() -> Tensor<Flex, 4>) -> (Vec<f32>, Vec<f32>) {
        set_enabled(true);
        let fast = vals(f());
        set_enabled(false);
        let burn = vals(f());
        set_enabled(true);
        (fast, burn)
    }

    /// Average pool in float64 from the definition, for the same window rules.
    fn avg_truth(x: &[f32], dims: [usize; 4], c: Case, include_pad: bool) -> Vec<f32> {
        let [n, ch, h, w] = dims;
        let ([kh, kw], [sh, sw], [ph, pw]) = c;
        let (oh, ow) = ((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1);
        let mut out = Vec::new();
        for p in 0..n * ch {
            for i in 0..oh {
                for j in 0..ow {
                    let (mut s, mut k) = (0f64, 0usize);
                    for a in 0..kh {
                        for b in 0..kw {
                            let (y, z) = (
                                (i * sh + a) as isize - ph as isize,
                                (j * sw + b) as isize - pw as isize,
                            );
                            if y >= 0 && z >= 0 && (y as usize) < h && (z as usize) < w {
                                s += x[p * h * w + y as usize * w + z as usize] as f64;
                                k += 1;
                            }
                        }
                    }
                    let k = if include_pad { kh * kw } else { k };
                    out.push((s / k as f64) as f32);
                }
            }
        }
        out
    }

    #[test]
    fn pools_match_burn_bit_for_bit_and_f64_truth() {
        let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        for special in [false, true] {
            for (name, x) in inputs(special) {
                let keep = x.clone(); // the "shared" case: a second handle on the buffer
                let before = vals(keep.clone());
                for &(k, s, p) in CASES {
                    let (fast, burn) = both(|| max_pool2d(x.clone(), k, s, p, [1, 1], false));
                    assert_eq!(fast.len(), burn.len(), "max {name} {k:?} {s:?} {p:?}");
                    for (i, (a, b)) in fast.iter().zip(&burn).enumerate() {
                        assert!(
                            a.to_bits() == b.to_bits(),
                            "max {name} {k:?} {s:?} {p:?} at {i}: {a} vs {b}"
                        );
                    }
                    for include_pad in [false, true] {
                        let (fast, burn) =
                            both(|| avg_pool2d(x.clone(), k, s, p, include_pad, false));
                        for (i, (a, b)) in fast.iter().zip(&burn).enumerate() {
                            assert!(
                                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                                "avg {name} {k:?} {s:?} {p:?} pad {include_pad} at {i}: {a} vs {b}"
                            );
                        }
                        if !special {
                            let dense = vals(x.clone());
                            let truth = avg_truth(&dense, x.dims(), (k, s, p), include_pad);
                            let e = max_rel(&fast, &truth, 1.0);
                            assert!(e <= 1e-6, "avg {name} {k:?} vs f64: {e:e}");
                        }
                    }
                }
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                assert_eq!(bits(vals(keep)), bits(before), "{name}: the input changed");
            }
        }
    }

    #[test]
    fn pools_refuse_what_they_cannot_do() {
        let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        set_enabled(true);
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::random([1, 2, 9, 9], Distribution::Normal(0.0, 1.0), &dev);
        // ceil_mode and dilation fall back to burn: same values as burn's op.
        let a = vals(max_pool2d(x.clone(), [3, 3], [2, 2], [0, 0], [2, 2], false));
        let b = vals(burn_max_pool2d(
            x.clone(),
            [3, 3],
            [2, 2],
            [0, 0],
            [2, 2],
            false,
        ));
        assert_eq!(a, b);
        let a = vals(avg_pool2d(x.clone(), [3, 3], [2, 2], [1, 1], false, true));
        let b = vals(burn_avg_pool2d(
            x.clone(),
            [3, 3],
            [2, 2],
            [1, 1],
            false,
            true,
        ));
        assert_eq!(a, b);
        assert!(Geometry::new([1, 1, 4, 4], [3, 3], [1, 1], [2, 2], [1, 1], false).is_none());
        assert!(Geometry::new([1, 1, 2, 2], [5, 5], [1, 1], [1, 1], [1, 1], false).is_none());
        assert!(Geometry::new([1, 1, 4, 4], [3, 3], [0, 1], [1, 1], [1, 1], false).is_none());
        assert!(Geometry::new([1, 1, 0, 4], [2, 2], [1, 1], [1, 1], [1, 1], false).is_none());

        // Autodiff<Flex>: burn's op, and its gradient flows.
        type A = Autodiff<Flex>;
        let xa = Tensor::<A, 4>::from_data(x.to_data(), &dev).require_grad();
        let y = avg_pool2d(xa.clone(), [3, 3], [1, 1], [1, 1], false, false);
        let want = vals(avg_pool2d(x.clone(), [3, 3], [1, 1], [1, 1], false, false));
        let got = y.clone().into_data().to_vec::<f32>().expect("f32");
        assert_eq!(got, want);
        let g = y.sum().backward();
        let gx = xa.grad(&g).expect("gradient");
        assert!(gx
            .into_data()
            .to_vec::<f32>()
            .expect("f32")
            .iter()
            .all(|v| *v > 0.0));
    }

    /// Inception's pools (its 35² A-block shape, b8), kernels on against burn-flex, one process:
    /// `flex_kernels-* --ignored pool_timing --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn pool_timing() {
        use crate::elementwise::timing::min_ms;
        let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::random([8, 288, 35, 35], Distribution::Normal(0.0, 1.0), &dev);
        for on in [true, false, true, false] {
            set_enabled(on);
            let t_avg = min_ms(10, || {
                avg_pool2d(x.clone(), [3, 3], [1, 1], [1, 1], false, false)
            });
            let t_max = min_ms(10, || {
                max_pool2d(x.clone(), [3, 3], [2, 2], [0, 0], [1, 1], false)
            });
            eprintln!(
                "kernels {}: avg_pool 3x3/1 pad 1 8x288x35² {t_avg:.2} ms; max_pool 3x3/2 {t_max:.2} ms; \
                 load {}",
                if on { "on " } else { "off" },
                std::fs::read_to_string("/proc/loadavg")
                    .unwrap_or_default()
                    .split(' ')
                    .next()
                    .unwrap_or("?")
            );
        }
        set_enabled(true);
    }
}
