//! The Fréchet distance between two Gaussians,
//! `‖mu1 − mu2‖² + tr(s1) + tr(s2) − 2·tr((s1·s2)^½)`.
//!
//! EDM and pytorch-fid take `scipy.linalg.sqrtm(s1 @ s2)` and its real trace. For symmetric positive
//! semi-definite `s1`, `s2` the eigenvalues of `s1·s2` are those of `A·s2·A` with `A = s1^½`, which is
//! symmetric; so two symmetric eigen-decompositions give the trace without a general matrix square root,
//! and stay well defined when the covariances are singular (fewer images than features). Tiny negative
//! eigenvalues from rounding are clamped to zero.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::error::{FidError, Result};
use crate::stats::RefStats;

/// Fréchet distance between `(mu1, sigma1)` and `(mu2, sigma2)`.
pub fn frechet_distance(a: &RefStats, b: &RefStats) -> Result<f64> {
    PreparedStats::new(a)?.distance(b)
}

/// Statistics with `√sigma` precomputed, so that repeated distances to it (FID during training, against
/// fixed reference statistics) cost one eigen-decomposition each instead of two.
#[derive(Debug, Clone)]
pub struct PreparedStats {
    stats: RefStats,
    sigma: DMatrix<f64>,
    sqrt_sigma: DMatrix<f64>,
}

impl PreparedStats {
    pub fn new(stats: &RefStats) -> Result<Self> {
        check(stats)?;
        let d = stats.dim();
        let sigma = symmetrize(DMatrix::from_row_slice(d, d, &stats.sigma));
        let sqrt_sigma = psd_sqrt(sigma.clone());
        Ok(Self {
            stats: stats.clone(),
            sigma,
            sqrt_sigma,
        })
    }

    pub fn stats(&self) -> &RefStats {
        &self.stats
    }

    /// Fréchet distance from these statistics to `other`.
    pub fn distance(&self, other: &RefStats) -> Result<f64> {
        check(other)?;
        let d = self.stats.dim();
        if other.dim() != d {
            return Err(FidError::Stats(format!(
                "dimension mismatch: {d} vs {} features",
                other.dim()
            )));
        }
        let mu1 = DVector::from_column_slice(&self.stats.mu);
        let mu2 = DVector::from_column_slice(&other.mu);
        let s2 = symmetrize(DMatrix::from_row_slice(d, d, &other.sigma));
        let mean_term = (&mu1 - &mu2).norm_squared();
        let m = symmetrize(&self.sqrt_sigma * &s2 * &self.sqrt_sigma);
        let tr_covmean: f64 = SymmetricEigen::new(m)
            .eigenvalues
            .iter()
            .map(|&l| l.max(0.0).sqrt())
            .sum();
        Ok(mean_term + self.sigma.trace() + s2.trace() - 2.0 * tr_covmean)
    }
}

fn check(s: &RefStats) -> Result<()> {
    let d = s.dim();
    if d == 0 || s.sigma.len() != d * d {
        return Err(FidError::Stats(format!(
            "mu has {d} values, sigma {} (expected {})",
            s.sigma.len(),
            d * d
        )));
    }
    if s.mu.iter().chain(&s.sigma).any(|v| !v.is_finite()) {
        return Err(FidError::Stats("statistics contain NaN or infinity".into()));
    }
    Ok(())
}

fn symmetrize(m: DMatrix<f64>) -> DMatrix<f64> {
    (&m + m.transpose()) * 0.5
}

/// Square root of a symmetric positive semi-definite matrix, negative eigenvalues clamped to zero.
fn psd_sqrt(m: DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new(m);
    let q = eig.eigenvectors;
    let sqrt_l = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    let scaled = DMatrix::from_fn(q.nrows(), q.ncols(), |i, j| q[(i, j)] * sqrt_l[j]);
    scaled * q.transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_is_zero_and_shift_is_squared_norm() {
        let s = RefStats {
            mu: vec![0.0, 1.0],
            sigma: vec![2.0, 0.3, 0.3, 1.0],
        };
        assert!(frechet_distance(&s, &s).unwrap().abs() < 1e-12);
        let mut t = s.clone();
        t.mu = vec![3.0, 5.0];
        let d = frechet_distance(&s, &t).unwrap();
        assert!((d - 25.0).abs() < 1e-12, "{d}");
    }

    #[test]
    fn diagonal_case_closed_form() {
        // diag(a), diag(b): sum (sqrt a − sqrt b)²
        let a = RefStats {
            mu: vec![0.0; 3],
            sigma: vec![4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        };
        let b = RefStats {
            mu: vec![0.0; 3],
            sigma: vec![1.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 2.0],
        };
        let want = 1.0 + 4.0 + 2.0;
        assert!((frechet_distance(&a, &b).unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn mismatched_dims_error() {
        let a = RefStats {
            mu: vec![0.0],
            sigma: vec![1.0],
        };
        let b = RefStats {
            mu: vec![0.0, 0.0],
            sigma: vec![1.0, 0.0, 0.0, 1.0],
        };
        assert!(frechet_distance(&a, &b).is_err());
    }
}
