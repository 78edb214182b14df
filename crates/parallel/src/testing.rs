//! What the workspace's data-parallel tests share: comparing a run on several peers with the same
//! run on one device, and running such tests one at a time. Public so that a downstream user can
//! check a data-parallel setup of their own the same way.

use std::sync::{Mutex, MutexGuard};

use burn::tensor::backend::Backend;

/// The largest `|a[i] - b[i]|`; infinite when the lengths differ (two parameter lists of different
/// networks are never "close").
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `(‖a − b‖₂, ‖b − start‖₂)` in float64: how far run `a` ended from run `b`, next to how far `b`
/// moved from the common `start`. A data-parallel run matches when the first is a small fraction of
/// the second; comparing with the update (not the weights) keeps the check meaningful when a few
/// steps barely move the weights. Infinite distances when the lengths differ.
pub fn update_distance(a: &[f32], b: &[f32], start: &[f32]) -> (f64, f64) {
    if a.len() != b.len() || b.len() != start.len() {
        return (f64::INFINITY, f64::INFINITY);
    }
    let (mut d, mut u) = (0.0f64, 0.0f64);
    for ((x, y), z) in a.iter().zip(b).zip(start) {
        d += (*x as f64 - *y as f64).powi(2);
        u += (*y as f64 - *z as f64).powi(2);
    }
    (d.sqrt(), u.sqrt())
}

static COLLECTIVE: Mutex<()> = Mutex::new(());

/// Holds the process's collective until dropped, after clearing what an earlier (possibly failed)
/// holder left behind ([`crate::reset`]). burn-collective keeps one server per backend type per
/// process, and cargo runs a test binary's tests on parallel threads: tests that start peers take
/// turns through this guard.
pub fn exclusive<B: Backend>() -> MutexGuard<'static, ()> {
    let guard = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    crate::reset::<B>();
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 1.0]), 1.0);
        assert_eq!(max_abs_diff(&[1.0], &[1.0, 2.0]), f32::INFINITY);
        let (d, u) = update_distance(&[3.0, 0.0], &[0.0, 4.0], &[0.0, 0.0]);
        assert_eq!((d, u), (5.0, 4.0));
        assert!(update_distance(&[1.0], &[1.0], &[]).0.is_infinite());
    }
}
