//! EDM's training losses (`training/loss.py`): how σ is drawn for each training image and how the
//! denoising error ‖D(y + n; σ) − y‖² is weighted, for each of the three formulations the paper
//! compares.
//!
//! - [`EdmLossConfig`] (`EDMLoss`, the paper's proposal): ln σ ~ N(P_mean, P_std²), λ(σ) =
//!   (σ² + σ_data²) / (σ·σ_data)², which makes the effective training target unit-variance at every σ.
//! - [`VpLossConfig`] (`VPLoss`, DDPM++ "VP" baseline): σ = σ_VP(t) at t ~ U(ε_t, 1), λ = 1/σ².
//! - [`VeLossConfig`] (`VELoss`, NCSN++ "VE" baseline): σ log-uniform in [σ_min, σ_max], λ = 1/σ².
//!
//! Each loss returns the per-element weighted error `[N, C, H, W]`; EDM's training loop sums it and
//! divides by the batch size ([`crate::train::Trainer::step`]).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::precond::EdmPrecond;

/// What every EDM loss defines: the σ distribution of training and the loss weight λ(σ).
pub trait DenoisingLoss {
    /// Draws one training σ from `rng` (one draw per image, as `loss.py` draws one per batch row).
    fn draw_sigma<R: Rng + ?Sized>(&self, rng: &mut R) -> f64;
    /// The loss weight λ(σ).
    fn weight(&self, sigma: f64) -> f64;
}

/// EDM's loss settings (`EDMLoss`: P_mean −1.2, P_std 1.2, σ_data 0.5).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdmLossConfig {
    pub p_mean: f64,
    pub p_std: f64,
    pub sigma_data: f64,
}

impl Default for EdmLossConfig {
    fn default() -> Self {
        EdmLossConfig {
            p_mean: -1.2,
            p_std: 1.2,
            sigma_data: 0.5,
        }
    }
}

impl DenoisingLoss for EdmLossConfig {
    /// σ = exp(r·P_std + P_mean), r ~ N(0, 1) (drawn in f64).
    fn draw_sigma<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let r: f64 = rng.sample(StandardNormal);
        (r * self.p_std + self.p_mean).exp()
    }

    fn weight(&self, sigma: f64) -> f64 {
        edm_loss_weight(sigma, self.sigma_data)
    }
}

/// EDM's loss weight λ(σ) = (σ² + σ_d²) / (σ·σ_d)².
pub fn edm_loss_weight(sigma: f64, sigma_data: f64) -> f64 {
    (sigma * sigma + sigma_data * sigma_data) / (sigma * sigma_data).powi(2)
}

/// EDM's per-element loss λ(σ)·(D(y + n; σ) − y)² for given σ [N] and noise n [N,C,H,W] (already
/// unit-variance; scaled by σ here). Returns [N,C,H,W].
pub fn edm_loss<B: Backend>(
    net: &EdmPrecond<B>,
    images: Tensor<B, 4>,
    sigma: Tensor<B, 1>,
    noise: Tensor<B, 4>,
    class_labels: Option<Tensor<B, 2>>,
    sigma_data: f64,
) -> Tensor<B, 4> {
    let n = sigma.dims()[0];
    let s = sigma.clone().reshape([n, 1, 1, 1]);
    let sd2 = sigma_data * sigma_data;
    let weight = (s.clone().square() + sd2) / (s.clone().square().mul_scalar(sd2));
    let noisy = images.clone() + noise * s;
    let denoised = net.forward(noisy, sigma, class_labels);
    weight * (denoised - images).square()
}

/// The variance-preserving loss (`VPLoss`: β_d 19.9, β_min 0.1, ε_t 1e-5).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VpLossConfig {
    pub beta_d: f64,
    pub beta_min: f64,
    pub epsilon_t: f64,
}

impl Default for VpLossConfig {
    fn default() -> Self {
        VpLossConfig {
            beta_d: 19.9,
            beta_min: 0.1,
            epsilon_t: 1e-5,
        }
    }
}

impl VpLossConfig {
    /// σ_VP(t) = sqrt(exp(½β_d t² + β_min t) − 1).
    pub fn sigma(&self, t: f64) -> f64 {
        ((0.5 * self.beta_d * t * t + self.beta_min * t).exp() - 1.0).sqrt()
    }
}

impl DenoisingLoss for VpLossConfig {
    /// σ = σ_VP(1 + u·(ε_t − 1)), u ~ U(0, 1): t uniform in (ε_t, 1].
    fn draw_sigma<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let u: f64 = rng.random();
        self.sigma(1.0 + u * (self.epsilon_t - 1.0))
    }

    fn weight(&self, sigma: f64) -> f64 {
        1.0 / (sigma * sigma)
    }
}

/// The variance-exploding loss (`VELoss`: σ_min 0.02, σ_max 100).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VeLossConfig {
    pub sigma_min: f64,
    pub sigma_max: f64,
}

impl Default for VeLossConfig {
    fn default() -> Self {
        VeLossConfig {
            sigma_min: 0.02,
            sigma_max: 100.0,
        }
    }
}

impl DenoisingLoss for VeLossConfig {
    /// σ = σ_min·(σ_max/σ_min)^u, u ~ U(0, 1).
    fn draw_sigma<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let u: f64 = rng.random();
        self.sigma_min * (self.sigma_max / self.sigma_min).powf(u)
    }

    fn weight(&self, sigma: f64) -> f64 {
        1.0 / (sigma * sigma)
    }
}

/// The per-element loss 1/σ²·(D(y + n; σ) − y)² of `VPLoss` and `VELoss` (their weight is the same;
/// only the σ distribution differs). σ [N], unit-variance noise n [N,C,H,W]. Returns [N,C,H,W].
pub fn inverse_variance_loss<B: Backend>(
    net: &EdmPrecond<B>,
    images: Tensor<B, 4>,
    sigma: Tensor<B, 1>,
    noise: Tensor<B, 4>,
    class_labels: Option<Tensor<B, 2>>,
) -> Tensor<B, 4> {
    let n = sigma.dims()[0];
    let s = sigma.clone().reshape([n, 1, 1, 1]);
    let weight = s.clone().square().recip();
    let noisy = images.clone() + noise * s;
    let denoised = net.forward(noisy, sigma, class_labels);
    weight * (denoised - images).square()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha12Rng;

    #[test]
    fn loss_weight_by_hand() {
        // σ = σ_d = 0.5: (0.25 + 0.25) / 0.0625 = 8
        assert!((edm_loss_weight(0.5, 0.5) - 8.0).abs() < 1e-12);
        // σ = 1: (1 + 0.25) / 0.25 = 5
        assert!((edm_loss_weight(1.0, 0.5) - 5.0).abs() < 1e-12);
        // σ = 0.1: (0.01 + 0.25) / 0.0025 = 104
        assert!((edm_loss_weight(0.1, 0.5) - 104.0).abs() < 1e-9);
        assert_eq!(VpLossConfig::default().weight(0.5), 4.0);
        assert_eq!(VeLossConfig::default().weight(2.0), 0.25);
    }

    #[test]
    fn vp_sigma_by_hand() {
        let vp = VpLossConfig::default();
        // t = 1: sqrt(exp(9.95 + 0.1) − 1)
        assert!((vp.sigma(1.0) - ((10.05f64).exp() - 1.0).sqrt()).abs() < 1e-9);
        assert_eq!(vp.sigma(0.0), 0.0);
    }

    /// The σ draws land where `loss.py` puts them: ln σ of EDM's has mean P_mean and std P_std; VE's
    /// ln σ is uniform between ln σ_min and ln σ_max; VP's σ stays in [σ_VP(ε_t), σ_VP(1)].
    #[test]
    fn sigma_draws_follow_their_distributions() {
        let mut rng = ChaCha12Rng::seed_from_u64(0);
        let n = 20_000;
        let edm = EdmLossConfig::default();
        let ln: Vec<f64> = (0..n).map(|_| edm.draw_sigma(&mut rng).ln()).collect();
        let mean = ln.iter().sum::<f64>() / n as f64;
        let std = (ln.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!((mean + 1.2).abs() < 0.03, "mean {mean}");
        assert!((std - 1.2).abs() < 0.03, "std {std}");

        let ve = VeLossConfig::default();
        let (lo, hi) = (ve.sigma_min.ln(), ve.sigma_max.ln());
        let ln: Vec<f64> = (0..n).map(|_| ve.draw_sigma(&mut rng).ln()).collect();
        assert!(ln.iter().all(|v| (lo - 1e-12..=hi + 1e-12).contains(v)));
        let mean = ln.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5 * (lo + hi)).abs() < 0.05, "mean {mean}");

        let vp = VpLossConfig::default();
        let (lo, hi) = (vp.sigma(vp.epsilon_t), vp.sigma(1.0));
        assert!((0..n).all(|_| (lo..=hi).contains(&vp.draw_sigma(&mut rng))));
    }
}
