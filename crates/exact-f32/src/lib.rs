//! Full-float32 matmuls and convolutions where the backend would use TF32.
//!
//! burn 0.21's CUDA backend lets autotune pick tensor-core kernels for float32 matmuls and
//! convolutions, which round both operands to TF32 (10-bit mantissa, relative rounding 2^-11 ≈ 4.9e-4)
//! and accumulate in float32. That is right for training throughput and wrong where small
//! differences of large quantities matter: golden parity checks, FID features that are compared to
//! references made in full float32, and the finite-difference R1 gradient of GDD (a central
//! difference of two discriminator outputs, whose perturbation is only ~1e-3 of the input).
//!
//! With exact mode on, every float32 product here is computed as four products on split operands,
//! `a·b = a_hi·b_hi + a_hi·b_lo + a_lo·b_hi + a_lo·b_lo`, where `a_hi` is `a` rounded to bfloat16
//! (8 mantissa bits, so TF32 holds it exactly) and `a_lo = a − a_hi` (exact in float32,
//! |a_lo| ≤ 2^-9·|a|). TF32 rounding then only touches the `lo` operands, ≤ 2^-11·2^-9 = 2^-20 ≈ 1e-6
//! relative, at four times the cost. (Three products, dropping `lo·lo`, would leave 2^-18 ≈ 4e-6: the
//! EfficientNet features then miss their 1e-5 golden limit.) On backends without TF32 (the CPU) the
//! split reproduces float32 up to summation order, so exact mode is off by default.
//!
//! Turn it on with the environment variable `ICLGDD_EXACT_F32=1`, [`set_enabled`], or, for one
//! region, [`ExactGuard`]. Half-precision operands are never split (they are what the user asked for).

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::backend::Backend;
use burn::tensor::module::conv_transpose2d as burn_conv_transpose2d;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{DType, Tensor};
use flex_kernels::conv::conv2d as fast_conv2d;

/// The process-wide default. 0: not yet read from the environment; 1: off; 2: on.
static MODE: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// A per-thread override set by [`ExactGuard`]: a guard in one thread (say, GDD's R1 passes)
    /// must not change the numerics of work running in other threads.
    static OVERRIDE: Cell<Option<bool>> = const { Cell::new(None) };
}

fn process_default() -> bool {
    match MODE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("ICLGDD_EXACT_F32")
                .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
                .unwrap_or(false);
            MODE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        m => m == 2,
    }
}

/// Whether exact float32 mode is on in this thread: an [`ExactGuard`] if one is alive, else the
/// process default (first read from `ICLGDD_EXACT_F32`: `1`/`true`/`yes`/`on` = on).
pub fn enabled() -> bool {
    OVERRIDE.with(|o| o.get()).unwrap_or_else(process_default)
}

/// Sets the process default (threads inside an [`ExactGuard`] keep the guard's setting).
pub fn set_enabled(on: bool) {
    MODE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Turns exact mode on in the current thread until dropped, then restores what was there.
pub struct ExactGuard {
    previous: Option<bool>,
}

impl ExactGuard {
    pub fn new() -> Self {
        let previous = OVERRIDE.with(|o| o.replace(Some(true)));
        Self { previous }
    }
}

impl Default for ExactGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ExactGuard {
    fn drop(&mut self) {
        OVERRIDE.with(|o| o.set(self.previous));
    }
}

/// `(hi, lo)` with `hi` = `t` rounded to bfloat16 (exactly representable in TF32), `lo = t − hi`.
pub fn split<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Tensor<B, D>, Tensor<B, D>) {
    let hi = t.clone().cast(DType::BF16).cast(DType::F32);
    let lo = t - hi.clone();
    (hi, lo)
}

fn split_applies<B: Backend, const D: usize>(a: &Tensor<B, D>, b: &Tensor<B, D>) -> bool {
    enabled() && a.dtype() == DType::F32 && b.dtype() == DType::F32
}

/// `op(a, b)` for an operation bilinear in its two operands, as the four products of their split
/// parts (see the crate docs).
fn four_products<B: Backend, const DA: usize, const DB: usize, const DO: usize>(
    a: Tensor<B, DA>,
    b: Tensor<B, DB>,
    op: impl Fn(Tensor<B, DA>, Tensor<B, DB>) -> Tensor<B, DO>,
) -> Tensor<B, DO> {
    let (a_hi, a_lo) = split(a);
    let (b_hi, b_lo) = split(b);
    op(a_hi.clone(), b_hi.clone())
        + op(a_hi, b_lo.clone())
        + op(a_lo.clone(), b_hi)
        + op(a_lo, b_lo)
}

/// `a.matmul(b)`, in exact float32 when exact mode is on.
pub fn matmul<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    if !split_applies(&a, &b) {
        return a.matmul(b);
    }
    four_products(a, b, |x, y| x.matmul(y))
}

/// A per-channel vector `[C]` as `[N, C, 1, 1]`, materialised for every batch row, ready to be
/// broadcast against an `[N, C, H, W]` activation.
///
/// Why not `v.reshape([1, C, 1, 1])`: burn-flex 0.21 (the CPU backend) runs a binary op whose
/// right-hand side broadcasts with strides `[0, 1, 0, 0]` through its scalar strided iterator,
/// because that pattern is neither of the two it vectorises (a shared innermost row, or one
/// scalar per contiguous outer row). `[N, C, 1, 1]` has strides `[C, 1, 0, 0]`, the second
/// pattern, and takes the SIMD path. Measured on EDM's DDPM++ one-step forward (batch 8, 2-core
/// CPU): the strided iterator was 17 % of all samples, from exactly these bias adds and
/// GroupNorm affines. Repeating `C` values `N` times costs `N·C` floats.
pub fn per_channel<B: Backend>(v: Tensor<B, 1>, n: usize) -> Tensor<B, 4> {
    let c = v.dims()[0];
    v.reshape([1, c, 1, 1]).repeat_dim(0, n)
}

/// Adds a per-channel bias `[C]` to `[N, C, H, W]`.
fn add_bias<B: Backend>(y: Tensor<B, 4>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 4> {
    match bias {
        Some(b) => {
            let n = y.dims()[0];
            y + per_channel(b, n)
        }
        None => y,
    }
}

/// burn's `conv2d`, in exact float32 when exact mode is on (the bias is added once).
///
/// Every convolution goes through `flex_kernels::conv::conv2d`: on the plain `Flex` CPU backend
/// that is a faster float32 kernel (burn-flex 0.21's own spends more time copying than in its
/// GEMM; docs/performance.md, issue 18), on every other backend and for `Autodiff<Flex>` it is
/// burn's `conv2d` itself.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvOptions<2>,
) -> Tensor<B, 4> {
    if !split_applies(&x, &weight) {
        return fast_conv2d(x, weight, bias, options);
    }
    let y = four_products(x, weight, |x, w| fast_conv2d(x, w, None, options.clone()));
    add_bias(y, bias)
}

/// burn's `conv_transpose2d`, in exact float32 when exact mode is on (the bias is added once).
pub fn conv_transpose2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvTransposeOptions<2>,
) -> Tensor<B, 4> {
    if !split_applies(&x, &weight) {
        return burn_conv_transpose2d(x, weight, bias, options);
    }
    let y = four_products(x, weight, |x, w| {
        burn_conv_transpose2d(x, w, None, options.clone())
    });
    add_bias(y, bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::{Distribution, TensorData};

    type B = Flex;

    /// What a tensor core does to a float32 operand: keep 10 mantissa bits (round to nearest even).
    fn tf32(x: f32) -> f32 {
        let b = x.to_bits();
        let rounded = b.wrapping_add(0xFFF + ((b >> 13) & 1)) & !0x1FFF;
        f32::from_bits(rounded)
    }

    fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().into_vec::<f32>().unwrap()
    }

    #[test]
    fn per_channel_equals_the_broadcast_it_replaces() {
        let dev = Default::default();
        let x = Tensor::<B, 4>::random([3, 5, 4, 2], Distribution::Normal(0.0, 1.0), &dev);
        let v = Tensor::<B, 1>::random([5], Distribution::Normal(0.0, 1.0), &dev);
        let fast = per_channel(v.clone(), 3);
        assert_eq!(fast.dims(), [3, 5, 1, 1]);
        let want = host(x.clone() * v.reshape([1, 5, 1, 1]));
        let got = host(x * fast);
        assert_eq!(want, got, "same products, bit for bit");
    }

    #[test]
    fn a_guard_is_scoped_to_its_thread() {
        let outside = enabled();
        {
            let _g = ExactGuard::new();
            assert!(enabled());
            let other = std::thread::spawn(enabled).join().unwrap();
            assert_eq!(
                other,
                process_default(),
                "other threads keep the process default"
            );
        }
        assert_eq!(enabled(), outside);
    }

    #[test]
    fn split_is_exact_and_hi_fits_tf32() {
        let t = Tensor::<B, 1>::random([4096], Distribution::Normal(0.0, 3.0), &Default::default());
        let x = host(t.clone());
        let (hi, lo) = split(t);
        let (hi, lo) = (host(hi), host(lo));
        for ((x, h), l) in x.iter().zip(&hi).zip(&lo) {
            assert_eq!(h + l, *x, "hi + lo reconstructs x exactly");
            assert_eq!(tf32(*h), *h, "hi survives TF32 rounding");
            assert!(l.abs() <= x.abs() * 2f32.powi(-8), "lo is small");
        }
    }

    /// The scheme on emulated tensor cores: TF32-rounded operands, f32 accumulation; the four split
    /// products are far closer to the exact dot product than one plain TF32 product.
    #[test]
    fn four_split_products_recover_float32_under_tf32_rounding() {
        let n = 512;
        let a = Tensor::<B, 1>::random([n], Distribution::Normal(0.0, 1.0), &Default::default());
        let b = Tensor::<B, 1>::random([n], Distribution::Normal(0.0, 1.0), &Default::default());
        let (av, bv) = (host(a.clone()), host(b.clone()));
        let (ah, al) = split(a);
        let (bh, bl) = split(b);
        let (ah, al, bh, bl) = (host(ah), host(al), host(bh), host(bl));
        let exact: f64 = av.iter().zip(&bv).map(|(x, y)| *x as f64 * *y as f64).sum();
        let abs_sum: f64 = av
            .iter()
            .zip(&bv)
            .map(|(x, y)| (*x as f64 * *y as f64).abs())
            .sum();
        let dot = |x: &[f32], y: &[f32]| -> f32 {
            x.iter().zip(y).map(|(p, q)| tf32(*p) * tf32(*q)).sum()
        };
        let plain = dot(&av, &bv) as f64;
        let split4 = dot(&ah, &bh) as f64
            + dot(&ah, &bl) as f64
            + dot(&al, &bh) as f64
            + dot(&al, &bl) as f64;
        let (e_plain, e_split) = (
            (plain - exact).abs() / abs_sum,
            (split4 - exact).abs() / abs_sum,
        );
        println!("relative error: plain TF32 {e_plain:.2e}, split {e_split:.2e}");
        assert!(e_split < 2e-6, "{e_split}");
        assert!(
            e_split < e_plain / 10.0,
            "split {e_split} vs plain {e_plain}"
        );
    }

    #[test]
    fn exact_ops_equal_plain_float32_on_the_cpu() {
        let dev = Default::default();
        let _on = ExactGuard::new();
        assert!(enabled());
        let a = Tensor::<B, 3>::random([2, 33, 65], Distribution::Normal(0.0, 1.0), &dev);
        let b = Tensor::<B, 3>::random([2, 65, 17], Distribution::Normal(0.0, 1.0), &dev);
        let rel = |x: Vec<f32>, y: Vec<f32>| {
            let num: f64 = x
                .iter()
                .zip(&y)
                .map(|(p, q)| ((p - q) as f64).powi(2))
                .sum();
            let den: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum();
            (num / den).sqrt()
        };
        let e = rel(host(matmul(a.clone(), b.clone())), host(a.matmul(b)));
        assert!(e < 1e-6, "matmul {e}");
        let x = Tensor::<B, 4>::random([2, 8, 9, 9], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<B, 4>::random([4, 8, 3, 3], Distribution::Normal(0.0, 1.0), &dev);
        let bias =
            Tensor::<B, 1>::from_data(TensorData::new(vec![1.0f32, -2.0, 3.0, 0.5], [4]), &dev);
        let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let e = rel(
            host(conv2d(
                x.clone(),
                w.clone(),
                Some(bias.clone()),
                opts.clone(),
            )),
            host(burn_conv2d(x.clone(), w.clone(), Some(bias.clone()), opts)),
        );
        assert!(e < 1e-6, "conv2d {e}");
        let wt = Tensor::<B, 4>::random([8, 4, 3, 3], Distribution::Normal(0.0, 1.0), &dev);
        let topts = ConvTransposeOptions::new([2, 2], [1, 1], [1, 1], [1, 1], 1);
        let e = rel(
            host(conv_transpose2d(
                x.clone(),
                wt.clone(),
                Some(bias.clone()),
                topts.clone(),
            )),
            host(burn_conv_transpose2d(x, wt, Some(bias), topts)),
        );
        assert!(e < 1e-6, "conv_transpose2d {e}");
        drop(_on);
    }
}
