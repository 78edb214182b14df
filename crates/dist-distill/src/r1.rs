//! R1 gradient penalty on real images, `γ/2 · E‖∇ₓ Σ D(x)‖²` (Mescheder et al. 2018), lazy: every
//! `interval` steps with gain `interval` (StyleGAN2), as in GDD's `DO_DR1` stage.
//!
//! burn's autodiff is first order, so the penalty's *parameter* gradient (a mixed second
//! derivative) is computed with a directional finite difference instead of double backprop:
//!
//! ∇_θ ½‖g‖² = (∂g/∂θ)ᵀ g = ∇_θ [ gᵀ ∇ₓ S(x; θ) ]  (g held fixed)
//!           ≈ ∇_θ [ (S(x + εg) − S(x − εg)) / 2ε ],
//!
//! where `S` is the sum of all logits and `g = ∇ₓ S` from an ordinary backward pass. The central
//! difference is exact up to O(ε²); ε is chosen so the perturbation's RMS is `rel_step` (default
//! 1e-3 of the [-1, 1] image range). The penalty *value* itself is exact.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

/// The R1 terms of one lazy step.
pub struct R1Terms<AB: AutodiffBackend> {
    /// Mean over samples of ‖∇ₓ S‖² (what the reference logs as `Loss/r1_penalty`).
    pub penalty: f64,
    /// A scalar whose parameter gradient is that of `gain · γ/2 · mean_i ‖g_i‖²`.
    pub surrogate: Tensor<AB, 1>,
}

/// Per-sample squared gradient norms ‖∇ₓ S(x)‖² of the logit sum at `real`, and the gradient.
pub fn input_gradient<AB: AutodiffBackend>(
    d: &impl Fn(Tensor<AB, 4>) -> Tensor<AB, 2>,
    real: Tensor<AB::InnerBackend, 4>,
) -> (Vec<f64>, Tensor<AB::InnerBackend, 4>) {
    let x = Tensor::<AB, 4>::from_inner(real).require_grad();
    let s = d(x.clone()).sum();
    let grads = s.backward();
    let g = x.grad(&grads).expect("input requires grad");
    let n = g.dims()[0];
    let per: Vec<f64> = g
        .clone()
        .square()
        .reshape([n as i32, -1])
        .sum_dim(1)
        .into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .expect("float data");
    (per, g)
}

/// Computes the R1 penalty and its first-order surrogate (see the module docs).
pub fn r1_terms<AB: AutodiffBackend>(
    d: &impl Fn(Tensor<AB, 4>) -> Tensor<AB, 2>,
    real: Tensor<AB::InnerBackend, 4>,
    gamma: f64,
    gain: f64,
    rel_step: f64,
) -> R1Terms<AB> {
    let n = real.dims()[0];
    let (per, g) = input_gradient(d, real.clone());
    let penalty = per.iter().sum::<f64>() / n as f64;
    let numel = g.shape().num_elements() as f64;
    let rms = (per.iter().sum::<f64>() / numel).sqrt();
    if !(rms > 0.0 && rms.is_finite()) {
        // Zero (or non-finite) input gradient: nothing to penalise; a zero surrogate that still
        // depends on D keeps the caller's backward well-formed.
        let s = d(Tensor::from_inner(real)).sum().mul_scalar(0.0);
        return R1Terms {
            penalty,
            surrogate: s,
        };
    }
    let eps = rel_step / rms;
    let plus = real.clone() + g.clone().mul_scalar(eps);
    let minus = real - g.mul_scalar(eps);
    let s_plus = d(Tensor::from_inner(plus)).sum();
    let s_minus = d(Tensor::from_inner(minus)).sum();
    let directional = (s_plus - s_minus).div_scalar(2.0 * eps);
    R1Terms {
        penalty,
        surrogate: directional.mul_scalar(gain * gamma / n as f64),
    }
}
