//! Bootstrap confidence intervals, the one statistics helper every experiment shares.
//!
//! An accuracy here is a mean of per-query 0/1 outcomes pooled over seeds of demonstration draws;
//! its 95 % interval is the percentile bootstrap over queries (resampling the outcomes with
//! replacement). A result counts as an effect over a control only when its interval *clears* the
//! control's ([`Interval::clears`]): the lower end above the control's upper end, a deliberately
//! conservative rule (two non-overlapping 95 % intervals). [`bootstrap_paired_difference`] gives the
//! sharper paired interval of a difference on the same queries, reported beside it.
//!
//! Why our own: the percentile bootstrap of a mean is twenty lines over `rand`; the Rust crates
//! that offer it are small single-author packages that would pin their own `rand`, and we need the
//! seeded, reproducible stream of the rest of this crate.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use super::{ExperimentError, Result};

/// Resamples per interval: enough that the 2.5 % / 97.5 % quantiles move by well under a
/// percentage point between seeds for the sample sizes here (tens to hundreds of queries).
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// Confidence level of every interval in the reports.
pub const LEVEL: f64 = 0.95;

/// A point estimate with its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The sample mean (the accuracy).
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    /// Number of outcomes (queries × seeds).
    pub n: usize,
}

impl Interval {
    /// `mean [lo, hi]` in per cent, rounded to whole points: how every report prints an accuracy.
    pub fn pct(&self) -> String {
        format!(
            "{:.0} [{:.0}, {:.0}]",
            100.0 * self.mean,
            100.0 * self.lo,
            100.0 * self.hi
        )
    }

    /// Whether this interval lies entirely above `control`'s: the rule for calling an effect.
    pub fn clears(&self, control: &Interval) -> bool {
        self.lo > control.hi
    }

    /// `0.62 [0.51, 0.72]`.
    pub fn show(&self) -> String {
        format!("{:.2} [{:.2}, {:.2}]", self.mean, self.lo, self.hi)
    }
}

/// Linear-interpolation quantile of sorted data (numpy's default), `q` in [0, 1].
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 < sorted.len() {
        sorted[i] + frac * (sorted[i + 1] - sorted[i])
    } else {
        sorted[i]
    }
}

fn percentile_interval(mean: f64, n: usize, mut stats: Vec<f64>, level: f64) -> Interval {
    stats.sort_by(f64::total_cmp);
    let a = (1.0 - level) / 2.0;
    Interval {
        mean,
        lo: quantile_sorted(&stats, a),
        hi: quantile_sorted(&stats, 1.0 - a),
        n,
    }
}

fn check(n: usize, resamples: usize, level: f64) -> Result<()> {
    if n == 0 {
        return Err(ExperimentError::Invalid(
            "bootstrap of an empty sample".into(),
        ));
    }
    if resamples == 0 || !(level > 0.0 && level < 1.0) {
        return Err(ExperimentError::Invalid(format!(
            "bootstrap needs resamples > 0 and a level in (0, 1), got {resamples} and {level}"
        )));
    }
    Ok(())
}

/// Percentile-bootstrap interval of the mean of `values` at `level`, deterministic in `seed`.
pub fn bootstrap_mean(values: &[f64], resamples: usize, level: f64, seed: u64) -> Result<Interval> {
    let n = values.len();
    check(n, resamples, level)?;
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let stats = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    Ok(percentile_interval(mean, n, stats, level))
}

/// [`bootstrap_mean`] of 0/1 outcomes at [`LEVEL`] with [`BOOTSTRAP_RESAMPLES`].
pub fn accuracy_interval(correct: &[bool], seed: u64) -> Result<Interval> {
    let v: Vec<f64> = correct.iter().map(|&c| f64::from(u8::from(c))).collect();
    bootstrap_mean(&v, BOOTSTRAP_RESAMPLES, LEVEL, seed)
}

/// Percentile-bootstrap interval of `mean(a) − mean(b)` where `a[i]` and `b[i]` are outcomes on
/// the same query (resampling queries, keeping pairs together).
pub fn bootstrap_paired_difference(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Result<Interval> {
    if a.len() != b.len() {
        return Err(ExperimentError::Invalid(format!(
            "paired bootstrap of {} and {} outcomes",
            a.len(),
            b.len()
        )));
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    bootstrap_mean(&d, resamples, level, seed)
}

/// The `(layer, interval)` with the highest mean, the first one on ties (so the earliest layer wins
/// when two do equally well); `None` for none. Every experiment picks its best layer this way.
pub fn best_by_mean(
    items: impl IntoIterator<Item = (usize, Interval)>,
) -> Option<(usize, Interval)> {
    items.into_iter().fold(None, |best, x| match best {
        Some(b) if b.1.mean >= x.1.mean => Some(b),
        _ => Some(x),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_by_mean_takes_the_first_maximum_and_pct_rounds() {
        let iv = |mean: f64| Interval {
            mean,
            lo: mean - 0.1,
            hi: mean + 0.1,
            n: 10,
        };
        let best = best_by_mean([(1, iv(0.5)), (3, iv(0.8)), (5, iv(0.8)), (7, iv(0.2))]);
        assert_eq!(best.map(|b| b.0), Some(3));
        assert!(best_by_mean([]).is_none());
        assert_eq!(iv(0.456).pct(), "46 [36, 56]");
    }

    fn bernoulli(p: f64, n: usize, rng: &mut ChaCha12Rng) -> Vec<f64> {
        (0..n)
            .map(|_| f64::from(u8::from(rng.random_bool(p))))
            .collect()
    }

    #[test]
    fn intervals_cover_a_known_bernoulli_mean_about_95_percent_of_the_time() {
        // 400 samples of 100 draws from Bernoulli(0.3): the percentile bootstrap's 95 % interval
        // should contain 0.3 in about 95 % of them (a little less is the known small-sample
        // behaviour of the percentile method); 400 trials put 2 binomial SDs at ±2.2 points.
        let mut rng = ChaCha12Rng::seed_from_u64(7);
        let trials = 400;
        let mut covered = 0;
        for t in 0..trials {
            let x = bernoulli(0.3, 100, &mut rng);
            let iv = bootstrap_mean(&x, 1000, 0.95, t).unwrap();
            assert!(iv.lo <= iv.mean && iv.mean <= iv.hi);
            covered += usize::from(iv.lo <= 0.3 && 0.3 <= iv.hi);
        }
        let c = covered as f64 / trials as f64;
        assert!((0.91..=0.98).contains(&c), "coverage {c}");
    }

    #[test]
    fn the_width_matches_the_normal_approximation() {
        // For p = 0.5, n = 400 the 95 % interval is about ±1.96·sqrt(p(1−p)/n) = ±0.049.
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        let x = bernoulli(0.5, 400, &mut rng);
        let iv = bootstrap_mean(&x, 4000, 0.95, 3).unwrap();
        let half = (iv.hi - iv.lo) / 2.0;
        assert!((half - 0.049).abs() < 0.006, "half width {half}");
    }

    #[test]
    fn deterministic_in_the_seed() {
        let mut rng = ChaCha12Rng::seed_from_u64(2);
        let x = bernoulli(0.4, 60, &mut rng);
        let a = bootstrap_mean(&x, 500, 0.95, 11).unwrap();
        let b = bootstrap_mean(&x, 500, 0.95, 11).unwrap();
        let c = bootstrap_mean(&x, 500, 0.95, 12).unwrap();
        assert_eq!(a, b);
        assert_ne!((a.lo, a.hi), (c.lo, c.hi));
    }

    #[test]
    fn constant_samples_give_a_point_and_paired_identity_gives_zero() {
        let ones = vec![1.0; 30];
        let iv = bootstrap_mean(&ones, 200, 0.95, 0).unwrap();
        assert_eq!((iv.mean, iv.lo, iv.hi, iv.n), (1.0, 1.0, 1.0, 30));
        let mut rng = ChaCha12Rng::seed_from_u64(5);
        let x = bernoulli(0.5, 50, &mut rng);
        let d = bootstrap_paired_difference(&x, &x, 300, 0.95, 0).unwrap();
        assert_eq!((d.mean, d.lo, d.hi), (0.0, 0.0, 0.0));
    }

    #[test]
    fn clears_only_when_the_intervals_do_not_overlap() {
        let iv = |lo, hi| Interval {
            mean: (lo + hi) / 2.0,
            lo,
            hi,
            n: 10,
        };
        assert!(iv(0.5, 0.7).clears(&iv(0.2, 0.4)));
        assert!(!iv(0.4, 0.7).clears(&iv(0.2, 0.4)));
        assert!(!iv(0.2, 0.4).clears(&iv(0.5, 0.7)));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(bootstrap_mean(&[], 100, 0.95, 0).is_err());
        assert!(bootstrap_mean(&[1.0], 0, 0.95, 0).is_err());
        assert!(bootstrap_mean(&[1.0], 10, 1.0, 0).is_err());
        assert!(bootstrap_paired_difference(&[1.0], &[1.0, 0.0], 10, 0.95, 0).is_err());
    }
}
