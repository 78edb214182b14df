//! GDD's adversarial losses and the lazy R1 penalty (`training/loss.py::GDDLoss`).
//!
//! Reduction follows the reference exactly: the discriminator returns per-sample logit vectors
//! that the reference collects into a *list over samples* (`logits += disc(...)` extends by the
//! first dimension), then sums the per-sample means: `Σ_i mean_j f(l_ij)`. The loss therefore scales
//! with the (per-GPU) batch size, which matters for how R1 (a mean over samples) weighs against it.

use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Adversarial loss family (`--loss-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossType {
    /// Non-saturating logistic loss (reference default `ns`).
    Ns,
    /// Hinge loss.
    Hinge,
}

impl std::str::FromStr for LossType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ns" => Ok(Self::Ns),
            "hinge" => Ok(Self::Hinge),
            _ => Err(format!("unknown loss type `{s}` (ns | hinge)")),
        }
    }
}

/// Numerically stable softplus: `max(x,0) + log1p(exp(-|x|))`.
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    relu(x.clone()) + x.abs().neg().exp().log1p()
}

/// `Σ_i mean_j t_ij` for a [N, P] tensor, as a 1-element tensor.
fn sum_of_sample_means<B: Backend>(t: Tensor<B, 2>) -> Tensor<B, 1> {
    t.mean_dim(1).sum()
}

/// Generator loss on the discriminator's logits of generated images.
pub fn generator_loss<B: Backend>(kind: LossType, fake_logits: Tensor<B, 2>) -> Tensor<B, 1> {
    match kind {
        LossType::Ns => sum_of_sample_means(softplus(fake_logits.neg())),
        LossType::Hinge => sum_of_sample_means(fake_logits.neg()),
    }
}

/// Discriminator loss on fake logits (push down).
pub fn disc_fake_loss<B: Backend>(kind: LossType, fake_logits: Tensor<B, 2>) -> Tensor<B, 1> {
    match kind {
        LossType::Ns => sum_of_sample_means(softplus(fake_logits)),
        LossType::Hinge => sum_of_sample_means(relu(fake_logits.add_scalar(1.0))),
    }
}

/// Discriminator loss on real logits (push up).
pub fn disc_real_loss<B: Backend>(kind: LossType, real_logits: Tensor<B, 2>) -> Tensor<B, 1> {
    match kind {
        LossType::Ns => sum_of_sample_means(softplus(real_logits.neg())),
        LossType::Hinge => sum_of_sample_means(relu(real_logits.neg().add_scalar(1.0))),
    }
}

/// Lazy-regularisation adjustment of the discriminator's Adam (StyleGAN2 / GDD
/// `training_loop.py`): with R1 every `interval` steps, `lr·c` and `beta2^c`, `c = k/(k+1)`.
pub fn lazy_adam_adjust(lr: f64, beta2: f64, interval: usize) -> (f64, f64) {
    if interval == 0 {
        return (lr, beta2);
    }
    let c = interval as f64 / (interval as f64 + 1.0);
    (lr * c, beta2.powf(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn logits() -> Tensor<Flex, 2> {
        Tensor::from_data(
            TensorData::new(vec![0.0f32, 2.0, -1.0, 30.0, -30.0, 0.5], [2, 3]),
            &Default::default(),
        )
    }

    fn sp(x: f64) -> f64 {
        (1.0 + x.exp()).ln()
    }

    fn close(a: f32, b: f64) {
        assert!((a as f64 - b).abs() < 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn ns_losses_match_hand_computation() {
        // sample 0: (0, 2, -1); sample 1: (30, -30, 0.5)
        let g: f32 = generator_loss(LossType::Ns, logits()).into_scalar();
        let want = (sp(0.0) + sp(-2.0) + sp(1.0)) / 3.0
            + (sp(-30.0) + 30.0 + sp(30.0 - 30.0) * 0.0 + sp(-0.5)) / 3.0;
        // sp(30) = 30 + sp(-30); written out: sample 1 G terms sp(-30), sp(30), sp(-0.5)
        let want_exact =
            (sp(0.0) + sp(-2.0) + sp(1.0)) / 3.0 + (sp(-30.0) + sp(30.0) + sp(-0.5)) / 3.0;
        assert!((want - want_exact).abs() < 1e-9);
        close(g, want_exact);
        let f: f32 = disc_fake_loss(LossType::Ns, logits()).into_scalar();
        close(
            f,
            (sp(0.0) + sp(2.0) + sp(-1.0)) / 3.0 + (sp(30.0) + sp(-30.0) + sp(0.5)) / 3.0,
        );
        let r: f32 = disc_real_loss(LossType::Ns, logits()).into_scalar();
        close(r, want_exact);
    }

    #[test]
    fn hinge_losses_match_hand_computation() {
        let g: f32 = generator_loss(LossType::Hinge, logits()).into_scalar();
        close(g, -(0.0 + 2.0 - 1.0) / 3.0 - (30.0 - 30.0 + 0.5) / 3.0);
        // relu(1 + l): (1, 3, 0) and (31, 0, 1.5)
        let f: f32 = disc_fake_loss(LossType::Hinge, logits()).into_scalar();
        close(f, 4.0 / 3.0 + 32.5 / 3.0);
        // relu(1 - l): (1, 0, 2) and (0, 31, 0.5)
        let r: f32 = disc_real_loss(LossType::Hinge, logits()).into_scalar();
        close(r, 3.0 / 3.0 + 31.5 / 3.0);
    }

    #[test]
    fn softplus_is_stable_for_large_inputs() {
        let x = Tensor::<Flex, 1>::from_data(
            TensorData::new(vec![100.0f32, -100.0], [2]),
            &Default::default(),
        );
        let y: Vec<f32> = softplus(x).into_data().into_vec().unwrap();
        assert!((y[0] - 100.0).abs() < 1e-4 && y[1] >= 0.0 && y[1] < 1e-30);
    }

    #[test]
    fn lazy_adjustment_matches_reference() {
        let (lr, b2) = lazy_adam_adjust(1e-4, 0.99, 16);
        assert!((lr - 1e-4 * 16.0 / 17.0).abs() < 1e-15);
        assert!((b2 - 0.99f64.powf(16.0 / 17.0)).abs() < 1e-15);
    }
}
