//! Feature statistics: a streaming mean and covariance in float64, and EDM's `.npz` reference files.
//!
//! Accumulation is per image, in a fixed order, into the sum and the upper triangle of the sum of outer
//! products (rows of the triangle run in parallel, but every element adds the images in order), so the
//! result is bit-for-bit the same for any batch size or number of batches. Finalisation uses EDM's
//! formula: `mu = Σx / n`, `sigma = (Σxxᵀ − n·mu·muᵀ) / (n − 1)`.

use std::path::Path;

use rayon::prelude::*;

use crate::error::{FidError, Result};

/// Running sums over feature vectors.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    dim: usize,
    count: u64,
    sum: Vec<f64>,
    /// Row-major `dim × dim`; only the upper triangle (j ≥ i) is accumulated.
    outer: Vec<f64>,
}

impl FeatureStats {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            count: 0,
            sum: vec![0.0; dim],
            outer: vec![0.0; dim * dim],
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of feature vectors seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds a batch of feature vectors, row-major `[rows, dim]`.
    pub fn update(&mut self, features: &[f32]) -> Result<()> {
        let rows: Vec<f64> = features.iter().map(|&v| v as f64).collect();
        self.update_f64(&rows)
    }

    /// Adds a batch of float64 feature vectors, row-major `[rows, dim]`.
    pub fn update_f64(&mut self, features: &[f64]) -> Result<()> {
        let d = self.dim;
        if d == 0 || !features.len().is_multiple_of(d) {
            return Err(FidError::Stats(format!(
                "{} values are not whole rows of {d} features",
                features.len()
            )));
        }
        if let Some(bad) = features.iter().position(|v| !v.is_finite()) {
            return Err(FidError::Stats(format!(
                "feature row {} has a non-finite value",
                bad / d
            )));
        }
        let n = features.len() / d;
        for x in features.chunks_exact(d) {
            for (s, v) in self.sum.iter_mut().zip(x) {
                *s += v;
            }
        }
        self.outer
            .par_chunks_mut(d)
            .enumerate()
            .for_each(|(i, row)| {
                for x in features.chunks_exact(d) {
                    let xi = x[i];
                    for (r, xj) in row[i..].iter_mut().zip(&x[i..]) {
                        *r += xi * xj;
                    }
                }
            });
        self.count += n as u64;
        Ok(())
    }

    /// Mean and unbiased covariance. Needs at least two vectors.
    pub fn finalize(&self) -> Result<RefStats> {
        if self.count < 2 {
            return Err(FidError::Stats(format!(
                "need at least 2 feature vectors for a covariance, have {}",
                self.count
            )));
        }
        let d = self.dim;
        let n = self.count as f64;
        let mu: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let mut sigma = vec![0.0; d * d];
        for i in 0..d {
            for j in i..d {
                let v = (self.outer[i * d + j] - n * mu[i] * mu[j]) / (n - 1.0);
                sigma[i * d + j] = v;
                sigma[j * d + i] = v;
            }
        }
        Ok(RefStats { mu, sigma })
    }
}

/// Mean `mu` `[d]` and covariance `sigma` `[d, d]` (row-major), as in EDM's `fid-refs/*.npz`.
#[derive(Debug, Clone, PartialEq)]
pub struct RefStats {
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
}

impl RefStats {
    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// Reads an `.npz` with `mu` `[d]` and `sigma` `[d, d]` (float64, or float32 widened). Declared
    /// shapes are checked against the bytes and members inflate at most to their declared size
    /// ([`formats::npz::read_npz_f64`]): a header claiming a huge `sigma` is an error, not an abort.
    pub fn load_npz(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut arrays = formats::npz::read_npz_f64(path, &["mu", "sigma"])?;
        let npz_err = |reason: String| FidError::Npz {
            path: path.to_path_buf(),
            reason,
        };
        let (Some(mu), Some(sigma)) = (arrays.remove("mu"), arrays.remove("sigma")) else {
            return Err(npz_err("no `mu` or `sigma`".into()));
        };
        Self::from_arrays(mu, sigma).map_err(npz_err)
    }

    fn from_arrays(
        mu: formats::npz::NpyArray,
        sigma: formats::npz::NpyArray,
    ) -> std::result::Result<Self, String> {
        if mu.shape.len() != 1 {
            return Err(format!("mu has shape {:?}, expected [d]", mu.shape));
        }
        let d = mu.shape[0];
        if sigma.shape != [d, d] {
            return Err(format!(
                "sigma has shape {:?}, expected [{d}, {d}] to match mu",
                sigma.shape
            ));
        }
        Ok(Self {
            mu: mu.data,
            sigma: sigma.data,
        })
    }

    /// Reads the statistics from any seekable `.npz` stream, bounded like [`Self::load_npz`].
    pub fn read_npz<R: std::io::Read + std::io::Seek>(
        reader: R,
    ) -> std::result::Result<Self, String> {
        let mut arrays =
            formats::npz::read_npz_f64_from(reader, Path::new("<stream>"), &["mu", "sigma"])
                .map_err(|e| e.to_string())?;
        match (arrays.remove("mu"), arrays.remove("sigma")) {
            (Some(mu), Some(sigma)) => Self::from_arrays(mu, sigma),
            _ => Err("no `mu` or `sigma`".into()),
        }
    }

    /// Writes `mu` and `sigma` as float64 (`np.savez` layout, readable by EDM's `fid.py`),
    /// atomically: an interrupted run never leaves a truncated reference file.
    pub fn save_npz(&self, path: impl AsRef<Path>) -> Result<()> {
        let d = self.dim();
        if self.sigma.len() != d * d {
            return Err(FidError::Stats(format!(
                "sigma has {} values, not {d}×{d}",
                self.sigma.len()
            )));
        }
        formats::npz::write_npz_f64(
            path.as_ref(),
            &[("mu", &[d], &self.mu), ("sigma", &[d, d], &self.sigma)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(n: usize, d: usize) -> Vec<f32> {
        (0..n * d)
            .map(|i| ((i * 7919 % 1000) as f32 / 100.0).sin())
            .collect()
    }

    #[test]
    fn batching_does_not_change_the_result() {
        let d = 5;
        let x = feats(23, d);
        let mut one = FeatureStats::new(d);
        one.update(&x).unwrap();
        let mut many = FeatureStats::new(d);
        for chunk in x.chunks(3 * d) {
            many.update(chunk).unwrap();
        }
        assert_eq!(one.finalize().unwrap(), many.finalize().unwrap());
    }

    #[test]
    fn matches_two_pass_covariance() {
        let (n, d) = (40, 4);
        let x: Vec<f64> = feats(n, d).iter().map(|&v| v as f64 + 3.0).collect();
        let mut s = FeatureStats::new(d);
        s.update_f64(&x).unwrap();
        let r = s.finalize().unwrap();
        for i in 0..d {
            let mi: f64 = (0..n).map(|k| x[k * d + i]).sum::<f64>() / n as f64;
            assert!((mi - r.mu[i]).abs() < 1e-12);
            for j in 0..d {
                let mj: f64 = (0..n).map(|k| x[k * d + j]).sum::<f64>() / n as f64;
                let c: f64 = (0..n)
                    .map(|k| (x[k * d + i] - mi) * (x[k * d + j] - mj))
                    .sum::<f64>()
                    / (n - 1) as f64;
                assert!((c - r.sigma[i * d + j]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn rejects_ragged_and_nan() {
        let mut s = FeatureStats::new(3);
        assert!(s.update(&[1.0, 2.0]).is_err());
        assert!(s.update(&[1.0, f32::NAN, 2.0]).is_err());
        s.update(&[1.0, 2.0, 3.0]).unwrap();
        assert!(s.finalize().is_err());
    }

    #[test]
    fn npz_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ref.npz");
        let r = RefStats {
            mu: vec![1.0, -2.5],
            sigma: vec![2.0, 0.5, 0.5, 1.0],
        };
        r.save_npz(&p).unwrap();
        assert_eq!(RefStats::load_npz(&p).unwrap(), r);
        std::fs::write(&p, b"not a zip").unwrap();
        assert!(matches!(
            RefStats::load_npz(&p),
            Err(FidError::Format(formats::FormatError::Corrupt { .. }))
        ));
    }
}
