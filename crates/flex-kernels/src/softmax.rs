//! Softmax over the last dimension, rows in parallel.
//!
//! Why: burn's `softmax` is five tensor passes (max, subtract, exp, sum, divide) of which `exp` is
//! burn-flex's scalar single-thread `expf`; attention runs it on every `[B, H, T, T]` score tensor.
//! Here each row is read twice and written once, with the vectorised [`exp_f32`].

use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::elementwise::{exp_f32, rows_in_place};
use crate::{back, flex_if_enabled};

/// One row in place: `x ← e^(x − max) / Σ e^(x − max)` (max-subtracted, so no overflow; a row of
/// −∞ gives NaN as burn's does; NaN anywhere gives a NaN row).
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    // Sixteen running maxima/sums so the reductions vectorise (float addition is not associative,
    // so LLVM will not reorder a single accumulator).
    const L: usize = 16;
    let mut m = [f32::NEG_INFINITY; L];
    let mut nan = false;
    let chunks = row.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            m[i] = if c[i] > m[i] { c[i] } else { m[i] };
            nan |= c[i].is_nan();
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in m.iter().chain(rest) {
        max = if v > max { v } else { max };
        nan |= v.is_nan();
    }
    if nan {
        max = f32::NAN;
    }
    let mut s = [0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        for i in 0..L {
            let e = exp_f32(c[i] - max);
            c[i] = e;
            s[i] += e;
        }
    }
    let mut sum: f32 = s.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_f32(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Softmax over the last dimension of a tensor (burn's `softmax(x, D - 1)` on other backends,
/// for other dtypes, and with the kernels switched off).
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let last = D.saturating_sub(1);
    let ft = match flex_if_enabled(x) {
        Ok(ft) if D > 0 => ft,
        Ok(ft) => return activation::softmax(back::<B, D>(ft), last),
        Err(t) => return activation::softmax(t, last),
    };
    let len = ft.layout().shape()[last];
    // A closure marked `#[inline(always)]`, not the fn item: the fn item's `Fn` shim is not
    // inlined into `with_isa`'s copies, and softmax then ran 1.5x slower (timing_report).
    #[allow(clippy::redundant_closure)]
    let done = rows_in_place(
        ft,
        len,
        #[inline(always)]
        |r| softmax_row(r),
    );
    match done {
        Ok(ft) => back(ft),
        Err(ft) => activation::softmax(back::<B, D>(ft), last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elementwise::tests::{max_rel, vals, SWITCH};
    use crate::set_enabled;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, TensorData};

    /// Softmax of each row of `len` values in float64 (burn's float32 reference differs from it by
    /// up to ~1e-6 itself: a sequential float32 sum over the row).
    fn truth(v: &[f32], len: usize) -> Vec<f32> {
        v.chunks(len)
            .flat_map(|r| {
                let m = r.iter().fold(f64::NEG_INFINITY, |m, &x| {
                    if x.is_nan() || m.is_nan() {
                        f64::NAN
                    } else {
                        m.max(x as f64)
                    }
                });
                // The exponent as float32 forms it: x − max rounds to ulp(max), which moves e^(x−max)
                // by up to ~1e-6 relative whatever computes the exponential.
                let d = move |x: f32| (x - m as f32) as f64;
                let s: f64 = r.iter().map(|&x| d(x).exp()).sum();
                r.iter()
                    .map(move |&x| (d(x).exp() / s) as f32)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn softmax_matches_burn() {
        let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        set_enabled(true);
        let dev = Default::default();
        for shape in [
            [1, 1, 1],
            [2, 3, 5],
            [3, 7, 17],
            [2, 64, 129],
            [4, 128, 128],
        ] {
            let x = Tensor::<Flex, 3>::random(shape, Distribution::Normal(0.0, 5.0), &dev);
            let mut v = vals(x.clone());
            // Extremes in the first row: a masked score, large values, and a NaN in the last row.
            for (i, e) in [100.0, -100.0, -3e4, 30.0].into_iter().enumerate() {
                if i < shape[2] {
                    v[i] = e;
                }
            }
            let nlast = v.len() - 1;
            if shape[0] * shape[1] > 1 {
                v[nlast] = f32::NAN;
            }
            let x = Tensor::<Flex, 3>::from_data(TensorData::new(v, shape), &dev);
            let want = truth(&vals(x.clone()), shape[2]);
            let burn = vals(activation::softmax(x.clone(), 2));
            let before = vals(x.clone());
            let got = vals(softmax_last(x.clone()));
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(
                bits(vals(x.clone())),
                bits(before),
                "the input was modified"
            );
            let e = max_rel(&got, &want, 1e-30);
            assert!(e <= 1e-6, "{shape:?}: rel error {e:e} against f64");
            let e = max_rel(&got, &burn, 1e-30);
            assert!(e <= 1e-5, "{shape:?}: rel error {e:e} against burn");
            // Non-contiguous: softmax over what is the middle dimension in memory.
            let xt = x.clone().swap_dims(1, 2);
            let e = max_rel(
                &vals(softmax_last(xt.clone())),
                &truth(&vals(xt), shape[1]),
                1e-30,
            );
            assert!(e <= 1e-6, "{shape:?} transposed: rel error {e:e}");
            // Unique input, in place.
            let got_u = vals(softmax_last(Tensor::<Flex, 3>::from_data(
                x.to_data(),
                &dev,
            )));
            assert_eq!(max_rel(&got_u, &got, 1e-30), 0.0);
        }
    }

    #[test]
    fn softmax_autodiff_falls_back() {
        let dev = Default::default();
        let x = Tensor::<Autodiff<Flex>, 2>::from_data([[1.0f32, 2.0, 3.0]], &dev).require_grad();
        let w = Tensor::<Autodiff<Flex>, 2>::from_data([[1.0f32, 0.0, 0.0]], &dev);
        let g = (softmax_last(x.clone()) * w).sum().backward();
        let gx = x
            .grad(&g)
            .expect("gradient")
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let e: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).collect();
        let s: f32 = e.iter().sum();
        let p: Vec<f32> = e.iter().map(|v| v / s).collect();
        let want = [p[0] * (1.0 - p[0]), -p[0] * p[1], -p[0] * p[2]];
        for (g, w) in gx.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
