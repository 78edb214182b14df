//! The one-step generator: a copy of the EDM teacher evaluated once at σ = 80 on z·80, with GDD's
//! preconditioning (`training/networks.py::GDDPrecond` in Zyriix/GDD):
//!
//! ```text
//! c_skip = σ_d² / ((σ − ε)² + σ_d²)      c_out = (σ − ε)·σ_d / √(σ² + σ_d²)
//! c_in   = 1 / √(σ² + σ_d²)               c_noise = ln(σ) / 4          ε = 2e-3
//! G(z) = c_skip·(80 z) + c_out·F(c_in·80 z, c_noise)
//! ```
//!
//! (Note the reference's `c_out` keeps `σ² + σ_d²`, not `(σ − ε)²`, in the square root.) With ε = 0 this
//! is exactly EDM's preconditioning, so before training `G(z)` is the teacher's one-step denoising
//! `D(80 z; 80)`.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use edm_core::{EdmPrecond, Precision};

/// GDD preconditioning coefficients at one noise level (scalars; the generator only uses σ_max).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GddCoefficients {
    pub c_skip: f64,
    pub c_out: f64,
    pub c_in: f64,
    pub c_noise: f64,
}

/// GDD's preconditioning at `sigma` with data std `sigma_data` and offset `eps` (2e-3).
pub fn gdd_coefficients(sigma: f64, sigma_data: f64, eps: f64) -> GddCoefficients {
    let sd2 = sigma_data * sigma_data;
    GddCoefficients {
        c_skip: sd2 / ((sigma - eps).powi(2) + sd2),
        c_out: (sigma - eps) * sigma_data / (sigma * sigma + sd2).sqrt(),
        c_in: 1.0 / (sd2 + sigma * sigma).sqrt(),
        c_noise: sigma.ln() / 4.0,
    }
}

/// One-step generation settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneStep {
    /// The generator's fixed noise level (80).
    pub sigma: f64,
    /// GDD's ε (2e-3).
    pub eps: f64,
    /// Precision of the U-Net body (F16/BF16 only on backends that support them, e.g. CUDA).
    pub precision: Precision,
}

impl Default for OneStep {
    fn default() -> Self {
        Self {
            sigma: 80.0,
            eps: 2e-3,
            precision: Precision::F32,
        }
    }
}

/// G(z): `z` is standard normal noise [N, C, H, W]; returns images in the data range.
pub fn generate<B: Backend>(
    net: &EdmPrecond<B>,
    z: Tensor<B, 4>,
    class_labels: Option<Tensor<B, 2>>,
    one: &OneStep,
) -> Tensor<B, 4> {
    let n = z.dims()[0];
    let k = gdd_coefficients(one.sigma, net.sigma_data(), one.eps);
    let x = z.mul_scalar(one.sigma);
    let c_noise = Tensor::<B, 1>::full([n], k.c_noise, &x.device());
    let labels = if net.config.label_dim == 0 {
        None
    } else {
        Some(class_labels.unwrap_or_else(|| Tensor::zeros([n, net.config.label_dim], &x.device())))
    };
    let input = x.clone().mul_scalar(k.c_in);
    let input = match one.precision {
        Precision::F32 => input,
        p => input.cast(p.dtype()),
    };
    let f = net.model.forward(input, c_noise, labels, None);
    let f = if f.dtype() == DType::F32 {
        f
    } else {
        f.cast(DType::F32)
    };
    x.mul_scalar(k.c_skip) + f.mul_scalar(k.c_out)
}

/// Loads an EDM network (a teacher, or a generator's EMA) from `dir` (`config.json` +
/// `model.safetensors`), also accepting an `edm train` output folder, whose network is in
/// `dir/checkpoint`.
pub fn load_net<B: Backend>(dir: &Path, device: &B::Device) -> crate::Result<EdmPrecond<B>> {
    Ok(edm_core::load_precond(net_dir(dir), device)?)
}

/// `dir`, or `dir/checkpoint` when only that one holds a `config.json`.
pub fn net_dir(dir: &Path) -> PathBuf {
    if !dir.join("config.json").exists() && dir.join("checkpoint/config.json").exists() {
        dir.join("checkpoint")
    } else {
        dir.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_by_hand() {
        let k = gdd_coefficients(80.0, 0.5, 2e-3);
        let s = 80.0f64;
        assert!((k.c_skip - 0.25 / ((s - 0.002).powi(2) + 0.25)).abs() < 1e-15);
        assert!((k.c_out - (s - 0.002) * 0.5 / (s * s + 0.25).sqrt()).abs() < 1e-15);
        assert!((k.c_in - 1.0 / (0.25 + s * s).sqrt()).abs() < 1e-15);
        assert!((k.c_noise - s.ln() / 4.0).abs() < 1e-15);
        // eps = 0 gives EDM's preconditioning.
        let e = gdd_coefficients(80.0, 0.5, 0.0);
        assert!((e.c_skip - 0.25 / (6400.25)).abs() < 1e-15);
        assert!((e.c_out - 40.0 / 6400.25f64.sqrt()).abs() < 1e-15);
    }
}
