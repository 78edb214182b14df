//! Improved precision and recall (Kynkäänniemi et al. 2019) as StyleGAN3's
//! `metrics/precision_recall.py` computes it.
//!
//! Each feature set is a manifold: the union of balls around its points, each ball's radius the
//! distance to the point's k-th nearest neighbour in the same set (k = 3, the point itself not
//! counted: StyleGAN3 takes `kthvalue(k + 1)` of the distances, which include the zero to itself).
//! Precision is the fraction of generated features inside the real manifold, recall the fraction of
//! real features inside the generated one (`distance <= radius` for any ball).
//!
//! StyleGAN3 feeds VGG16 fc7 features (NVIDIA's `vgg16.pkl`); this function takes whatever features
//! it is given, and callers label which network made them. Distances here are float64 Euclidean;
//! StyleGAN3 stores features in float16 before `torch.cdist`, so a point lying on a ball's boundary
//! to within float16 rounding can be counted differently.

use crate::error::{FidError, Result};

/// Precision and recall of `gen` against `real`, both row-major `[n, dim]`.
pub fn precision_recall(real: &[f32], gen: &[f32], dim: usize, k: usize) -> Result<(f64, f64)> {
    let bad = FidError::Stats;
    if dim == 0 || !real.len().is_multiple_of(dim) || !gen.len().is_multiple_of(dim) {
        return Err(bad(format!(
            "feature buffers of {} and {} values are not rows of {dim}",
            real.len(),
            gen.len()
        )));
    }
    let (nr, ng) = (real.len() / dim, gen.len() / dim);
    if nr <= k || ng <= k {
        return Err(bad(format!(
            "precision/recall with k = {k} needs more than {k} real and generated features \
             ({nr} real, {ng} generated)"
        )));
    }
    if real.iter().chain(gen).any(|v| !v.is_finite()) {
        return Err(bad("non-finite feature value".into()));
    }
    let precision = coverage(real, gen, dim, k);
    let recall = coverage(gen, real, dim, k);
    Ok((precision, recall))
}

fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = *x as f64 - *y as f64;
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

/// The fraction of `probes` rows inside the k-NN manifold of `manifold` rows.
fn coverage(manifold: &[f32], probes: &[f32], dim: usize, k: usize) -> f64 {
    let rows: Vec<&[f32]> = manifold.chunks_exact(dim).collect();
    let radii: Vec<f64> = rows
        .iter()
        .map(|a| {
            let mut d: Vec<f64> = rows.iter().map(|b| dist(a, b)).collect();
            // k-th smallest counting the zero distance to itself as the first (kthvalue(k + 1)).
            let (_, kth, _) = d.select_nth_unstable_by(k, |x, y| x.total_cmp(y));
            *kth
        })
        .collect();
    let inside = probes
        .chunks_exact(dim)
        .filter(|p| rows.iter().zip(&radii).any(|(m, &r)| dist(p, m) <= r))
        .count();
    inside as f64 / (probes.len() / dim) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_sets_cover_each_other_and_far_sets_do_not() {
        let a: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
        let (p, r) = precision_recall(&a, &a, 2, 3).unwrap();
        assert_eq!((p, r), (1.0, 1.0));
        let far: Vec<f32> = a.iter().map(|v| v + 100.0).collect();
        let (p, r) = precision_recall(&a, &far, 2, 3).unwrap();
        assert_eq!((p, r), (0.0, 0.0));
    }

    #[test]
    fn radius_is_the_kth_neighbour_not_counting_itself() {
        // Real points on a line at 0, 1, 2, 3, 10; k = 3 gives the radii 3, 2, 2, 3, 9 (the third
        // neighbour other than the point itself). Generated: -3 lies on the ball of 0, -3.5 in no
        // ball, 19 on the ball of 10, 19.5 in none.
        let real = [0.0f32, 1.0, 2.0, 3.0, 10.0];
        let gen = [-3.0f32, -3.5, 19.0, 19.5];
        let (p, _) = precision_recall(&real, &gen, 1, 3).unwrap();
        assert_eq!(p, 0.5);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(precision_recall(&[0.0; 6], &[0.0; 6], 4, 3).is_err());
        assert!(precision_recall(&[0.0; 6], &[0.0; 6], 2, 3).is_err());
        assert!(precision_recall(&[f32::NAN; 8], &[0.0; 8], 1, 3).is_err());
    }
}
