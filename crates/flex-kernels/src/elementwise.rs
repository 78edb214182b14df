//! Element-wise float32 kernels: `exp`, `sigmoid`, `silu` and the tanh GELU, vectorised and split
//! over rayon's pool.
//!
//! Why: burn-flex 0.21's `unary_op` calls scalar libm (`expf`) per element on the calling thread
//! only, so on this workspace's CPU runs every SiLU, softmax and GELU used one core at ~3.5 GB/s
//! while PyTorch's vectorised, OpenMP-parallel `exp` ran at ~40 GB/s (docs/performance.md, issue
//! 18). Here [`exp_f32`] is a branch-free range reduction plus polynomial that LLVM vectorises; the
//! loops are compiled three times (AVX-512, AVX2+FMA, baseline) and the widest the CPU has is picked
//! once at run time, because the workspace is built for the generic x86-64 target.

use std::sync::OnceLock;

use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::{Bytes, DType, Tensor};
use rayon::prelude::*;

use crate::{back, flex_if_enabled, from_flex};

/// Below this many elements a kernel stays on the calling thread: rayon's fork/join costs a few
/// microseconds, the time to stream ~64 Ki floats through `exp` on one core (measured with
/// `icl-gdd-bench primitives`, docs/performance.md).
pub const PARALLEL_MIN: usize = 64 * 1024;

/// Elements per rayon task once a kernel is parallel: large enough to amortise the task, small
/// enough that both cores of a 2-core machine get several (load balance under other load).
const CHUNK: usize = 16 * 1024;

/// `e^x` in float32 without a libm call, written so that LLVM vectorises a loop of it.
///
/// `x = n·ln2 + r` with `n = round(x/ln2)` and `|r| ≤ ln2/2` (Cody–Waite: `ln2` split in a 9-bit
/// high part, so `n·LN2_HI` is exact, and a low part); `e^r` by its degree-7 Taylor polynomial
/// (truncation < 1e-8 relative on that interval); `2^n` built from exponent bits in two halves so
/// that `n` from −150 to 128 stays representable and the product rounds to `inf` above ~88.72 and
/// to denormals, then 0, below ~−87.3. Inputs are clamped to [−110, 89] with comparisons that keep
/// NaN (`f32::max` would not), so NaN → NaN, +∞ → +∞, −∞ → 0.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 355/512, exact in 9 bits
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer (|v| < 2^22)
    let x = if x < -110.0 { -110.0 } else { x };
    let x = if x > 89.0 { 89.0 } else { x };
    let k = x * LOG2E + ROUND;
    let nf = k - ROUND;
    let r = (x - nf * LN2_HI) - nf * LN2_LO;
    // 1 + r + r²/2 + … + r⁷/7!, with the constant and linear terms added last (less rounding).
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = (p * r) * r + r + 1.0;
    // `n` from the bits of `k` (1.5·2^23 + n has n in its low mantissa bits): `nf as i32` would
    // be a saturating conversion that LLVM does not vectorise. For NaN the bits are garbage, but
    // `p` is NaN and so is the product.
    let n = (k.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let n1 = n >> 1;
    let n2 = n - n1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((n2 + 127) as u32) << 23);
    p * s1 * s2
}

/// `1 / (1 + e^−x)`: 0 at −∞ (e^∞ = ∞), 1 at +∞, NaN for NaN.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `x·σ(x)` computed as `x / (1 + e^−x)` (one division, −0 for large negative x).
#[inline(always)]
pub fn silu_f32(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

/// The tanh GELU (HF `gelu_new`) as icl-probe computes it: `x·σ(2y)`, `y = √(2/π)(x + 0.044715x³)`,
/// equal to `0.5x(1 + tanh y)`.
#[inline(always)]
pub fn gelu_tanh_f32(x: f32) -> f32 {
    const K: f32 = 1.595_769_121_605_730_8_f64 as f32; // 2·√(2/π), rounded as burn rounds a scalar
    let y2 = (x * x * 0.044715 + 1.0) * x * K;
    x / (1.0 + exp_f32(-y2))
}

/// The widest vector extension this CPU has, detected once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Base,
}

pub(crate) fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Base
    })
}

/// Runs `g` compiled for the widest vector ISA this CPU has. `g` and what it calls must be
/// `#[inline(always)]`, the closure included (`with_isa(#[inline(always)] || ...)`), so that their
/// loops are vectorised with the caller's target features: the usual multiversioning pattern on
/// stable Rust. A closure without the attribute is not reliably inlined: the GroupNorm, row-norm
/// and softmax bodies (large closures) were compiled as functions of their own without a single
/// ymm/zmm instruction (objdump of icl-gdd-bench, 2026-12-03 18:45 UTC) until they got it.
#[inline(always)]
pub(crate) fn with_isa<R>(g: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
    unsafe fn avx512<R>(g: impl FnOnce() -> R) -> R {
        g()
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<R>(g: impl FnOnce() -> R) -> R {
        g()
    }
    match isa() {
        // SAFETY: `isa()` returns this level only after detecting its features at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512(g) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2(g) },
        Isa::Base => g(),
    }
}

#[inline(always)]
fn map_body<F: Fn(f32) -> f32>(f: &F, src: &[f32], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f(s);
    }
}

/// `dst[i] = f(src[i])` with the widest vector ISA.
pub(crate) fn map_slice<F: Fn(f32) -> f32>(f: &F, src: &[f32], dst: &mut [f32]) {
    with_isa(
        #[inline(always)]
        || map_body(f, src, dst),
    )
}

/// `dst[i] = f(src[i])` into uninitialised memory (every element written once), widest ISA.
pub(crate) fn map_slice_uninit<F: Fn(f32) -> f32>(
    f: &F,
    src: &[f32],
    dst: &mut [std::mem::MaybeUninit<f32>],
) {
    with_isa(
        #[inline(always)]
        || {
            for (d, &s) in dst.iter_mut().zip(src) {
                d.write(f(s));
            }
        },
    )
}

/// A new buffer holding `f(src[i])`, in parallel above [`PARALLEL_MIN`]. Allocated without
/// zeroing: `vec![0.0; n]` is a `calloc`, which for a buffer the allocator reuses (a 4 MiB
/// activation freed by the previous op) is a `memset` pass before the real one.
pub(crate) fn map_to_new<F: Fn(f32) -> f32 + Sync>(f: &F, src: &[f32]) -> Vec<f32> {
    let n = src.len();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    if n < PARALLEL_MIN {
        map_slice_uninit(f, src, spare);
    } else {
        spare
            .par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| map_slice_uninit(f, s, d));
    }
    // SAFETY: the loops above wrote all `n` elements (the chunks of `spare` and `src` pair up
    // one to one, with equal lengths).
    unsafe { out.set_len(n) };
    out
}

/// `buf[i] = f(buf[i])`: through a small stack block, so one vectorised two-slice loop serves both.
pub(crate) fn map_in_place<F: Fn(f32) -> f32>(f: &F, buf: &mut [f32]) {
    const BLOCK: usize = 1024;
    let mut tmp = [0f32; BLOCK];
    for chunk in buf.chunks_mut(BLOCK) {
        let t = &mut tmp[..chunk.len()];
        t.copy_from_slice(chunk);
        map_slice(f, t, chunk);
    }
}

/// A contiguous float32 Flex tensor this kernel may overwrite: in place when `ft` is contiguous,
/// covers its whole buffer and is the only owner of it; otherwise a fresh copy (a shared tensor's
/// other handles must not see the change). `None` for other dtypes.
pub(crate) fn unique_f32(ft: FlexTensor) -> Option<FlexTensor> {
    if ft.dtype() != DType::F32 {
        return None;
    }
    // A clone (sharing the buffer) when already contiguous and whole, a fresh copy otherwise; the
    // original handle is dropped here, so the count is back to what the caller had.
    let mut ft = ft.to_contiguous();
    if ft.try_storage_mut::<f32>().is_none() {
        let data = ft.storage::<f32>().to_vec();
        ft = from_vec(data, ft.layout().shape().clone());
    }
    Some(ft)
}

/// `row(r)` on every `len`-element row of a float32 Flex tensor, in place when its buffer is unique
/// (a fresh copy otherwise, see [`unique_f32`]); rows split over rayon in tasks of ~16 Ki elements
/// above [`PARALLEL_MIN`]. Each task's loop over its rows runs inside [`with_isa`], so `row` must be
/// `#[inline(always)]` (`#[inline(always)] |r| ...` calling `#[inline(always)]` functions) to be
/// vectorised with it. The one row loop of softmax and the row norms. `Err(ft)` for other dtypes.
pub(crate) fn rows_in_place<F: Fn(&mut [f32]) + Sync>(
    ft: FlexTensor,
    len: usize,
    row: F,
) -> Result<FlexTensor, FlexTensor> {
    if ft.dtype() != DType::F32 {
        return Err(ft);
    }
    let Some(mut ft) = unique_f32(ft) else {
        unreachable!("float32 was checked above")
    };
    let n = ft.layout().num_elements();
    if n == 0 || len == 0 {
        return Ok(ft);
    }
    let Some(buf) = ft.try_storage_mut::<f32>() else {
        unreachable!("unique_f32 returns an unshared buffer")
    };
    let buf = &mut buf[..n];
    // Plain `for` loops, not `Iterator::for_each` (not always inlined, and then compiled for the
    // baseline ISA instead of `with_isa`'s).
    if n < PARALLEL_MIN {
        with_isa(
            #[inline(always)]
            || {
                for r in buf.chunks_mut(len) {
                    row(r)
                }
            },
        );
    } else {
        let rows_per_task = (16 * 1024 / len).max(1);
        buf.par_chunks_mut(rows_per_task * len).for_each(|block| {
            with_isa(
                #[inline(always)]
                || {
                    for r in block.chunks_mut(len) {
                        row(r)
                    }
                },
            )
        });
    }
    Ok(ft)
}

/// A contiguous float32 Flex tensor owning `data` (row-major, `shape`): how every kernel hands back
/// a fresh output.
pub fn from_vec(data: Vec<f32>, shape: impl Into<burn::tensor::Shape>) -> FlexTensor {
    let shape = shape.into();
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// Applies `f` to every element of a float32 Flex tensor, in parallel above [`PARALLEL_MIN`].
/// Shared tensors are read once and written to a new buffer (no second pass to copy them first).
pub(crate) fn map_flex<F: Fn(f32) -> f32 + Sync>(f: F, ft: FlexTensor) -> Option<FlexTensor> {
    if ft.dtype() != DType::F32 {
        return None;
    }
    let mut ft = ft.to_contiguous();
    let n = ft.layout().num_elements();
    if let Some(buf) = ft.try_storage_mut::<f32>() {
        let buf = &mut buf[..n];
        if n < PARALLEL_MIN {
            map_in_place(&f, buf);
        } else {
            buf.par_chunks_mut(CHUNK).for_each(|c| map_in_place(&f, c));
        }
        return Some(ft);
    }
    let out = map_to_new(&f, &ft.storage::<f32>()[..n]);
    Some(from_vec(out, ft.layout().shape().clone()))
}

/// Runs `f` on a float32 Flex tensor, or `fallback` (burn's own ops) for every other case.
fn unary<B: Backend, const D: usize, F: Fn(f32) -> f32 + Sync>(
    x: Tensor<B, D>,
    f: F,
    fallback: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    match flex_if_enabled(x) {
        Ok(ft) if ft.dtype() == DType::F32 => match map_flex(f, ft).and_then(from_flex) {
            Some(t) => t,
            None => unreachable!("an F32 Flex tensor maps to an F32 Flex tensor"),
        },
        Ok(ft) => fallback(back(ft)),
        Err(t) => fallback(t),
    }
}

/// `e^x` element-wise ([`exp_f32`] on Flex float32, burn's `exp` otherwise).
pub fn exp<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    unary(x, exp_f32, |t| t.exp())
}

/// The logistic sigmoid element-wise.
pub fn sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    unary(x, sigmoid_f32, activation::sigmoid)
}

/// SiLU (`x·σ(x)`) element-wise.
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    unary(x, silu_f32, activation::silu)
}

/// The tanh GELU (HF `gelu_new`, GPT-2) as `x·σ(2y)`; the fallback computes the same formula with
/// burn's ops (`x³` as two products, not burn 0.21's `powf`).
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    unary(x, gelu_tanh_f32, |x| {
        let k = 2.0 * (2.0 / std::f64::consts::PI).sqrt();
        let x2 = x.clone() * x.clone();
        let y = (x2 * 0.044715 + 1.0) * x.clone() * k;
        x * activation::sigmoid(y)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::set_enabled;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, TensorData};
    use std::sync::Mutex;

    /// Tests that flip the process-wide switch hold this lock.
    pub(crate) static SWITCH: Mutex<()> = Mutex::new(());

    pub(crate) fn vals<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32")
    }

    /// Largest `|a−b| / max(|b|, floor)`; NaN positions must agree exactly.
    pub(crate) fn max_rel(a: &[f32], b: &[f32], floor: f32) -> f32 {
        assert_eq!(a.len(), b.len());
        let mut m = 0f32;
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            if x.is_nan() || y.is_nan() {
                assert!(x.is_nan() && y.is_nan(), "NaN mismatch at {i}: {x} vs {y}");
                continue;
            }
            if x == y {
                continue;
            }
            m = m.max((x - y).abs() / y.abs().max(floor));
        }
        m
    }

    #[test]
    fn exp_matches_f64_on_a_dense_sweep() {
        let (lo, hi, steps) = (-87.0f64, 88.0f64, 2_000_000);
        let mut worst = (0f64, 0f64);
        for i in 0..=steps {
            let x = (lo + (hi - lo) * i as f64 / steps as f64) as f32;
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            let rel = ((got - want) / want).abs();
            if rel > worst.0 {
                worst = (rel, x as f64);
            }
        }
        assert!(
            worst.0 <= 2e-7,
            "max rel error {:e} at x = {}",
            worst.0,
            worst.1
        );
    }

    #[test]
    fn exp_special_values() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-104.0), 0.0);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
        // The largest finite result and a denormal one, near libm's.
        let big = exp_f32(88.7);
        assert!(big.is_finite() && ((big as f64 / (88.7f32 as f64).exp()) - 1.0).abs() < 1e-6);
        // e^−95 is a denormal of ~3900 steps: its resolution is 2.6e-4.
        let tiny = exp_f32(-95.0);
        assert!(tiny > 0.0 && ((tiny as f64 / (-95f64).exp()) - 1.0).abs() < 1e-3);
        assert_eq!(sigmoid_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(sigmoid_f32(f32::INFINITY), 1.0);
        assert_eq!(silu_f32(-200.0), 0.0);
    }

    /// The fast kernel against float64 truth (≤ `tol` relative) and against burn's op (≤ 1e-5:
    /// burn's own float32 error is larger than ours in places, e.g. its sigmoid is
    /// `exp(log_sigmoid(x))`, 2e-6 off at x = −30), on shared, unique, transposed and offset views.
    fn check_unary(
        fast: fn(Tensor<Flex, 3>) -> Tensor<Flex, 3>,
        slow: fn(Tensor<Flex, 3>) -> Tensor<Flex, 3>,
        truth: fn(f64) -> f64,
        tol: f32,
    ) {
        let dev = Default::default();
        let check = |x: Tensor<Flex, 3>, what: &str| {
            let input = vals(x.clone());
            let want: Vec<f32> = input.iter().map(|&v| truth(v as f64) as f32).collect();
            let got = vals(fast(x.clone()));
            let e = max_rel(&got, &want, 1e-30);
            assert!(e <= tol, "{what}: rel error {e:e} against f64");
            let e = max_rel(&got, &vals(slow(x.clone())), 1e-30);
            assert!(e <= 1e-5, "{what}: rel error {e:e} against burn");
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(bits(vals(x)), bits(input), "{what}: the input was modified");
            got
        };
        for shape in [[1, 1, 1], [3, 5, 7], [2, 3, 1025], [4, 64, 513]] {
            let x = Tensor::<Flex, 3>::random(shape, Distribution::Normal(0.0, 4.0), &dev);
            // Extremes in the first elements.
            let mut v = vals(x);
            for (i, e) in [100.0, -100.0, f32::NAN, 30.0, -30.0, 0.0, -0.0, 88.0, -87.0]
                .into_iter()
                .enumerate()
            {
                if i < v.len() {
                    v[i] = e;
                }
            }
            let x = Tensor::<Flex, 3>::from_data(TensorData::new(v, shape), &dev);
            // Shared input (the caller keeps `x`): a new buffer.
            let got = check(x.clone(), &format!("{shape:?} shared"));
            // Unique input (in place) gives the same values.
            let got_unique = vals(fast(Tensor::from_data(x.to_data(), &dev)));
            assert_eq!(max_rel(&got_unique, &got, 1e-30), 0.0);
            check(x.clone().swap_dims(0, 2), &format!("{shape:?} transposed"));
            if shape[2] > 2 {
                check(
                    x.clone().narrow(2, 1, shape[2] - 2),
                    &format!("{shape:?} narrowed"),
                );
            }
        }
    }

    fn sigmoid64(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn kernels_match_burn() {
        let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        set_enabled(true);
        check_unary(exp, |t| t.exp(), f64::exp, 1e-6);
        check_unary(sigmoid, activation::sigmoid, sigmoid64, 1e-6);
        check_unary(silu, activation::silu, |x| x * sigmoid64(x), 1e-6);
        // The same formula on the burn path (the switch off) as the reference.
        check_unary(
            gelu_tanh,
            |t| {
                set_enabled(false);
                let y = gelu_tanh(t);
                set_enabled(true);
                y
            },
            // Truth from the float32 argument `2y` (as the kernel forms it): in the tail σ(2y) ≈
            // e^(2y) magnifies the rounding of 2y by |2y|, a property of the formula, not of exp.
            |x| {
                let xf = x as f32;
                let y2 = (xf * xf * 0.044715 + 1.0) * xf * (1.595_769_121_605_730_8_f64 as f32);
                x * sigmoid64(y2 as f64)
            },
            1e-6,
        );
    }

    #[test]
    fn gelu_tanh_equals_the_tanh_formula() {
        for i in 0..=4000 {
            let x = (-20.0 + 40.0 * i as f64 / 4000.0) as f32 as f64;
            let want = 0.5
                * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
            let got = gelu_tanh_f32(x as f32) as f64;
            // In the tail σ(2y) ≈ e^(2y) turns the float32 rounding of 2y (~2 ulp) into a relative
            // error of ~|2y|·1.2e-7: the formula's, whatever computes the exponential.
            let y2 = 2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            assert!(
                (got - want).abs() <= 2e-7 * (4.0 + y2.abs()) * want.abs().max(1e-3),
                "x = {x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn autodiff_falls_back_and_stays_differentiable() {
        let dev = Default::default();
        let x = Tensor::<Autodiff<Flex>, 1>::from_data([0.5f32, -1.0, 2.0], &dev).require_grad();
        let y = silu(x.clone()).sum();
        let g = y.backward();
        let gx = x
            .grad(&g)
            .expect("gradient")
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for (v, g) in [0.5f32, -1.0, 2.0].iter().zip(gx) {
            let s = 1.0 / (1.0 + (-v).exp());
            let want = s * (1.0 + v * (1.0 - s));
            assert!((g - want).abs() < 1e-6, "{g} vs {want}");
        }
    }

    #[test]
    fn other_dtypes_fall_back() {
        let dev = Default::default();
        let x =
            Tensor::<Flex, 1>::from_data([0.5f32, -1.0, 2.0], &dev).cast(burn::tensor::DType::F16);
        let y = exp(x).cast(burn::tensor::DType::F32);
        let v = vals(y);
        assert!((v[2] - 2f32.exp()).abs() < 1e-2);
    }
}

/// Timings of every kernel against burn's ops, in one process: `cargo test --release -p
/// flex-kernels -- --ignored timing --nocapture` (docs/performance.md). The minimum over runs, so a
/// loaded machine shows what the code costs when it gets the cores.
#[cfg(test)]
pub(crate) mod timing {
    use crate::norm::{group_norm, norm_last, RowNorm};
    use crate::softmax::softmax_last;
    use crate::{elementwise, set_enabled};
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tensor};
    use std::time::Instant;

    pub(crate) fn min_ms<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
        let mut best = f64::INFINITY;
        for _ in 0..runs {
            let t = Instant::now();
            std::hint::black_box(f());
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        best
    }

    #[test]
    #[ignore = "timing, not a check"]
    fn timing_report() {
        let _g = super::tests::SWITCH
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dev = Default::default();
        let x4 = Tensor::<Flex, 4>::random([16, 64, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<Flex, 1>::ones([64], &dev);
        let b = Tensor::<Flex, 1>::zeros([64], &dev);
        let s = Tensor::<Flex, 3>::random([48, 128, 128], Distribution::Normal(0.0, 1.0), &dev);
        let r = Tensor::<Flex, 2>::random([512, 768], Distribution::Normal(0.0, 1.0), &dev);
        let wr = Tensor::<Flex, 1>::ones([768], &dev);
        let m = Tensor::<Flex, 2>::random([512, 3072], Distribution::Normal(0.0, 1.0), &dev);
        for on in [true, false, true, false] {
            set_enabled(on);
            let mb = |ms: f64, n: usize| 2.0 * 4.0 * n as f64 / ms / 1e6;
            let n4 = 16 * 64 * 32 * 32;
            let t_exp = min_ms(20, || elementwise::exp(x4.clone()));
            let t_exp_u = min_ms(20, || elementwise::exp(x4.clone() + 0.0));
            let t_add = min_ms(20, || x4.clone() + 0.0);
            let t_gn = min_ms(20, || {
                group_norm(x4.clone(), 32, 1e-5, Some((&w, &b)), true)
            });
            let t_sm = min_ms(20, || softmax_last(s.clone()));
            let t_ln = min_ms(20, || {
                norm_last(r.clone(), RowNorm::Layer, Some(&wr), None, 1e-5)
            });
            let t_gelu = min_ms(20, || elementwise::gelu_tanh(m.clone()));
            let t_silu = min_ms(20, || elementwise::silu(m.clone()));
            eprintln!(
                "kernels {}: exp 16x64x32² shared {t_exp:.2} ms ({:.1} GB/s), unique {:.2} ms \
                 (after an add of {t_add:.2} ms); GroupNorm+affine+SiLU {t_gn:.2} ms ({:.1} GB/s); \
                 softmax 48x128x128 {t_sm:.2} ms; LayerNorm 512x768 {t_ln:.3} ms; \
                 GELU-tanh 512x3072 {t_gelu:.2} ms; SiLU 512x3072 {t_silu:.2} ms; load {}",
                if on { "on " } else { "off" },
                mb(t_exp, n4),
                t_exp_u - t_add,
                mb(t_gn, n4),
                std::fs::read_to_string("/proc/loadavg")
                    .unwrap_or_default()
                    .split(' ')
                    .next()
                    .unwrap_or("?"),
            );
        }
        set_enabled(true);
    }
}
