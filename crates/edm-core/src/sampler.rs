//! EDM's samplers (`generate.py`): the time-step discretisation, Euler, Heun (Algorithm 1), the
//! stochastic sampler (Algorithm 2: S_churn, S_min, S_max, S_noise) and the one-step map D(z·σ_max, σ_max).
//!
//! Noise levels are computed in float64 on the host, as EDM does; images stay in the backend's float.

use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{EdmError, Result};
use crate::precond::Denoiser;

/// Which solver integrates the probability-flow ODE (or SDE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Solver {
    /// First-order Euler, NFE = N.
    Euler,
    /// EDM's deterministic 2nd-order Heun, NFE = 2N − 1 (no correction on the last step).
    Heun,
    /// EDM's stochastic sampler: Heun with churn (S_churn, S_min, S_max, S_noise).
    Stochastic,
    /// One network evaluation: D(z·σ_max; σ_max).
    OneStep,
}

impl std::str::FromStr for Solver {
    type Err = EdmError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "euler" => Ok(Solver::Euler),
            "heun" => Ok(Solver::Heun),
            "stochastic" => Ok(Solver::Stochastic),
            "onestep" => Ok(Solver::OneStep),
            other => Err(EdmError::Input(format!(
                "unknown solver `{other}` (expected heun, euler, stochastic or onestep)"
            ))),
        }
    }
}

/// EDM's sampler settings (`edm_sampler` keyword arguments).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    pub num_steps: usize,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    pub s_churn: f64,
    pub s_min: f64,
    pub s_max: f64,
    pub s_noise: f64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            num_steps: 18,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            s_churn: 0.0,
            s_min: 0.0,
            s_max: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

/// The most sampler steps accepted by default (EDM uses 18 to 256; 100,000 steps of a small network
/// are hours of work already). `EDM_MAX_STEPS` raises it.
pub const MAX_STEPS: usize = 100_000;
/// The most seeds one run takes by default (EDM's FID needs 50,000). `EDM_MAX_SEEDS` raises it.
pub const MAX_SEEDS: u64 = 10_000_000;

fn env_limit(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

impl SamplerConfig {
    /// Refuses settings that make no sense or cannot be run, before anything is allocated: 0 steps
    /// or more than [`MAX_STEPS`] (`edm_sigma_steps` allocates one f64 per step), noise levels that
    /// are not finite and positive, `sigma_max <= sigma_min`, `rho <= 0`, negative churn.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EdmError::Input(m));
        let max_steps = env_limit("EDM_MAX_STEPS", MAX_STEPS as u64);
        if self.num_steps == 0 || self.num_steps as u64 > max_steps {
            return bad(format!(
                "--steps {} is not in 1..={max_steps} (set EDM_MAX_STEPS to raise the limit)",
                self.num_steps
            ));
        }
        if !(self.sigma_min.is_finite() && self.sigma_min > 0.0) {
            return bad(format!(
                "--sigma-min {} must be a positive finite number",
                self.sigma_min
            ));
        }
        if !(self.sigma_max.is_finite() && self.sigma_max > 0.0) {
            return bad(format!(
                "--sigma-max {} must be a positive finite number",
                self.sigma_max
            ));
        }
        if self.sigma_max <= self.sigma_min {
            return bad(format!(
                "--sigma-max {} is not above --sigma-min {} (an inverted noise range)",
                self.sigma_max, self.sigma_min
            ));
        }
        if !(self.rho.is_finite() && self.rho > 0.0) {
            return bad(format!(
                "--rho {} must be a positive finite number",
                self.rho
            ));
        }
        if !(self.s_churn.is_finite() && self.s_churn >= 0.0) {
            return bad(format!(
                "--s-churn {} must be finite and >= 0",
                self.s_churn
            ));
        }
        if !(self.s_noise.is_finite() && self.s_noise >= 0.0) {
            return bad(format!(
                "--s-noise {} must be finite and >= 0",
                self.s_noise
            ));
        }
        if self.s_min.is_nan() || self.s_max.is_nan() || self.s_min < 0.0 || self.s_min > self.s_max
        {
            return bad(format!(
                "--s-min {} and --s-max {} must satisfy 0 <= s_min <= s_max",
                self.s_min, self.s_max
            ));
        }
        Ok(())
    }

    /// The noise levels clamped to what the network supports, as EDM's sampler does.
    pub fn clamped<B: Backend>(&self, net: &impl Denoiser<B>) -> (f64, f64) {
        (
            self.sigma_min.max(net.sigma_min()),
            self.sigma_max.min(net.sigma_max()),
        )
    }
}

/// EDM's time steps: σ_i = (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, i = 0..N−1, then 0.
pub fn edm_sigma_steps(num_steps: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let mut t: Vec<f64> = (0..num_steps)
        .map(|i| {
            let frac = if num_steps > 1 {
                i as f64 / (num_steps - 1) as f64
            } else {
                0.0
            };
            (sigma_max.powf(1.0 / rho)
                + frac * (sigma_min.powf(1.0 / rho) - sigma_max.powf(1.0 / rho)))
            .powf(rho)
        })
        .collect();
    t.push(0.0);
    t
}

/// One random generator per image (EDM's `StackedRandomGenerator`): the latents and the stochastic
/// sampler's noise of image i come from seed i alone, so results do not depend on the batch.
pub struct StackedRng {
    rngs: Vec<ChaCha12Rng>,
}

impl StackedRng {
    pub fn new(seeds: &[u64]) -> Self {
        StackedRng {
            rngs: seeds
                .iter()
                .map(|&s| ChaCha12Rng::seed_from_u64(s))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.rngs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rngs.is_empty()
    }

    /// One class index in 0..num_classes per image (EDM's `rnd.randint(label_dim)`).
    pub fn randint(&mut self, num_classes: usize) -> Vec<usize> {
        use rand::Rng;
        self.rngs
            .iter_mut()
            .map(|r| r.random_range(0..num_classes))
            .collect()
    }

    /// Standard normal [N, C, H, W], image i drawn from generator i.
    pub fn randn<B: Backend>(&mut self, chw: [usize; 3], device: &B::Device) -> Tensor<B, 4> {
        let per: usize = chw.iter().product();
        let mut data = Vec::with_capacity(per * self.rngs.len());
        for rng in &mut self.rngs {
            data.extend((0..per).map(|_| {
                let v: f64 = StandardNormal.sample(rng);
                v as f32
            }));
        }
        let [c, h, w] = chw;
        Tensor::from_data(TensorData::new(data, [self.rngs.len(), c, h, w]), device)
    }
}

/// Parses EDM's seed lists: "0-63", "1,2,5-10".
///
/// At most [`MAX_SEEDS`] seeds (`EDM_MAX_SEEDS` raises it): the count is checked before the list is
/// built, so `0-4000000000` is an error naming the limit, not a 32 GB allocation.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    let max = env_limit("EDM_MAX_SEEDS", MAX_SEEDS);
    let mut ranges = Vec::new();
    let mut count: u64 = 0;
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let bad = || EdmError::Input(format!("bad seed list `{s}`"));
        let (a, b): (u64, u64) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            ),
            None => {
                let v = part.trim().parse().map_err(|_| bad())?;
                (v, v)
            }
        };
        if b < a {
            return Err(bad());
        }
        count = count.saturating_add((b - a).saturating_add(1));
        if count > max {
            return Err(EdmError::Input(format!(
                "seed list `{s}` has more than {max} seeds (set EDM_MAX_SEEDS to raise the limit)"
            )));
        }
        ranges.push((a, b));
    }
    let out: Vec<u64> = ranges.into_iter().flat_map(|(a, b)| a..=b).collect();
    if out.is_empty() {
        return Err(EdmError::Input(format!("empty seed list `{s}`")));
    }
    Ok(out)
}

fn full<B: Backend>(n: usize, value: f64, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(vec![value as f32; n], [n]), device)
}

/// Runs a sampler from latents z [N,C,H,W] (unit variance). `noise` feeds the stochastic sampler
/// (required only for [`Solver::Stochastic`]); `on_step(i, x_i)` sees every step's x (i = 1..=N).
pub fn sample<B: Backend>(
    net: &impl Denoiser<B>,
    latents: Tensor<B, 4>,
    class_labels: Option<Tensor<B, 2>>,
    solver: Solver,
    cfg: &SamplerConfig,
    noise: Option<&mut StackedRng>,
    on_step: &mut dyn FnMut(usize, &Tensor<B, 4>),
) -> Result<Tensor<B, 4>> {
    cfg.validate()?;
    let (sigma_min, sigma_max) = cfg.clamped(net);
    let n = latents.dims()[0];
    let device = latents.device();
    if solver == Solver::OneStep {
        let x = latents.mul_scalar(sigma_max);
        let out = net.denoise(x, full(n, sigma_max, &device), class_labels);
        on_step(1, &out);
        return Ok(out);
    }
    if cfg.num_steps == 0 {
        return Err(EdmError::Input("num_steps must be at least 1".into()));
    }
    let mut noise = match (solver, noise) {
        (Solver::Stochastic, None) => {
            return Err(EdmError::Input(
                "the stochastic sampler needs a noise generator".into(),
            ))
        }
        (_, n) => n,
    };
    let t_steps = edm_sigma_steps(cfg.num_steps, sigma_min, sigma_max, cfg.rho);
    let [_, c, h, w] = latents.dims();
    let mut x_next = latents.mul_scalar(t_steps[0]);
    for i in 0..cfg.num_steps {
        let (t_cur, t_next) = (t_steps[i], t_steps[i + 1]);
        let x_cur = x_next;

        // Increase noise temporarily (stochastic sampler only).
        let mut t_hat = t_cur;
        let mut x_hat = x_cur;
        if solver == Solver::Stochastic {
            let gamma = if cfg.s_min <= t_cur && t_cur <= cfg.s_max {
                (cfg.s_churn / cfg.num_steps as f64).min(2f64.sqrt() - 1.0)
            } else {
                0.0
            };
            t_hat = t_cur + gamma * t_cur;
            let eps = noise
                .as_deref_mut()
                .expect("checked above")
                .randn::<B>([c, h, w], &device);
            x_hat = x_hat + eps.mul_scalar((t_hat * t_hat - t_cur * t_cur).sqrt() * cfg.s_noise);
        }

        // Euler step.
        let denoised = net.denoise(x_hat.clone(), full(n, t_hat, &device), class_labels.clone());
        let d_cur = (x_hat.clone() - denoised).div_scalar(t_hat);
        x_next = x_hat.clone() + d_cur.clone().mul_scalar(t_next - t_hat);

        // 2nd-order correction, except on the last step.
        if solver != Solver::Euler && i < cfg.num_steps - 1 {
            let denoised = net.denoise(
                x_next.clone(),
                full(n, t_next, &device),
                class_labels.clone(),
            );
            let d_prime = (x_next - denoised).div_scalar(t_next);
            x_next = x_hat + (d_cur + d_prime).mul_scalar(0.5 * (t_next - t_hat));
        }
        on_step(i + 1, &x_next);
    }
    Ok(x_next)
}

/// Number of network evaluations a solver makes for `num_steps` steps.
pub fn nfe(solver: Solver, num_steps: usize) -> usize {
    match solver {
        Solver::OneStep => 1,
        Solver::Euler => num_steps,
        Solver::Heun | Solver::Stochastic => 2 * num_steps - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_steps_endpoints_and_rho() {
        let t = edm_sigma_steps(18, 0.002, 80.0, 7.0);
        assert_eq!(t.len(), 19);
        assert!((t[0] - 80.0).abs() < 1e-12);
        assert!((t[17] - 0.002).abs() < 1e-12);
        assert_eq!(t[18], 0.0);
        // midpoint by hand: ((80^(1/7) + 0.5·(0.002^(1/7) − 80^(1/7)))^7
        let t9 = edm_sigma_steps(3, 0.002, 80.0, 7.0)[1];
        let hand = ((80f64.powf(1.0 / 7.0) + 0.002f64.powf(1.0 / 7.0)) / 2.0).powi(7);
        assert!((t9 - hand).abs() < 1e-12);
    }

    #[test]
    fn seeds_parse_like_edm() {
        assert_eq!(parse_seeds("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_seeds("1,2,5-6").unwrap(), vec![1, 2, 5, 6]);
        assert!(parse_seeds("5-1").is_err());
        assert!(parse_seeds("a").is_err());
        // Issue #20: a huge range is refused before the list is built (it was a 32 GB allocation).
        for huge in [
            "0-4000000000",
            "0-18446744073709551615",
            "0-9999999,0-9999999",
        ] {
            let err = parse_seeds(huge).unwrap_err().to_string();
            assert!(err.contains("EDM_MAX_SEEDS"), "{huge}: {err}");
        }
        assert_eq!(parse_seeds("7").unwrap(), vec![7]);
    }

    #[test]
    fn latents_depend_only_on_the_seed() {
        type B = burn::backend::Flex;
        let d = Default::default();
        let a = StackedRng::new(&[3, 7]).randn::<B>([1, 2, 2], &d);
        let b = StackedRng::new(&[7]).randn::<B>([1, 2, 2], &d);
        let a1: Vec<f32> = a.narrow(0, 1, 1).into_data().into_vec().unwrap();
        let b0: Vec<f32> = b.into_data().into_vec().unwrap();
        assert_eq!(a1, b0);
    }

    #[test]
    fn sampler_settings_are_validated() {
        SamplerConfig::default().validate().unwrap();
        let with = |f: &dyn Fn(&mut SamplerConfig)| {
            let mut c = SamplerConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(with(&|c| c.num_steps = 0).contains("--steps 0"));
        assert!(with(&|c| c.num_steps = 2_000_000_000).contains("EDM_MAX_STEPS"));
        assert!(with(&|c| c.sigma_max = 0.001).contains("inverted"));
        assert!(with(&|c| c.sigma_min = f64::NAN).contains("--sigma-min NaN"));
        assert!(with(&|c| c.sigma_min = -1.0).contains("--sigma-min -1"));
        assert!(with(&|c| c.sigma_max = f64::INFINITY).contains("--sigma-max inf"));
        assert!(with(&|c| c.rho = 0.0).contains("--rho"));
        assert!(with(&|c| c.s_churn = -1.0).contains("--s-churn"));
        assert!(with(&|c| {
            c.s_min = 5.0;
            c.s_max = 1.0;
        })
        .contains("--s-min"));
    }

    #[test]
    fn nfe_counts() {
        assert_eq!(nfe(Solver::Heun, 18), 35);
        assert_eq!(nfe(Solver::Euler, 18), 18);
        assert_eq!(nfe(Solver::OneStep, 18), 1);
    }
}
