//! Golden parity of the samplers against EDM's `edm_sampler` on the three tiny fixtures.

mod common;

use common::*;
use edm_core::{load_precond, sample, SamplerConfig, Solver};

fn check_samplers(name: &str) {
    let device = Default::default();
    let net = load_precond::<B>(fixture_dir(name), &device).unwrap();
    let exp = expected(name);
    let z = tensor::<4>(&exp["latents"]);
    let labels = labels(&exp);
    let cfg = SamplerConfig::default();

    let sigmas = edm_core::edm_sigma_steps(18, 0.002, 80.0, 7.0);
    let sig_ref: Vec<f64> = exp["heun_sigmas"].data.iter().map(|&v| v as f64).collect();
    let sigmas32: Vec<f32> = sigmas.iter().map(|&v| v as f32).collect();
    assert!(
        rel_err(&sigmas32, &exp["heun_sigmas"].data) < 1e-6,
        "{sig_ref:?}"
    );

    let traj = &exp["heun18_trajectory"];
    let per = traj.data.len() / 19;
    let mut worst: f64 = 0.0;
    let mut steps = 0;
    let heun = sample(
        &net,
        z.clone(),
        labels.clone(),
        Solver::Heun,
        &cfg,
        None,
        &mut |i, x| {
            let e = rel_err(&values(x.clone()), &traj.data[i * per..(i + 1) * per]);
            worst = worst.max(e);
            steps += 1;
        },
    )
    .unwrap();
    assert_eq!(steps, 18);
    let e_heun = rel_err(&values(heun), &traj.data[18 * per..]);
    let euler = sample(
        &net,
        z.clone(),
        labels.clone(),
        Solver::Euler,
        &cfg,
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let e_euler = rel_err(&values(euler), &exp["euler18_out"].data);
    let one = sample(
        &net,
        z.clone(),
        labels,
        Solver::OneStep,
        &cfg,
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let e_one = rel_err(&values(one), &exp["onestep_out"].data);
    let e_start = rel_err(&values(z.mul_scalar(80.0)), &traj.data[..per]);
    println!("{name}: heun traj worst {worst:.3e}, heun out {e_heun:.3e}, euler {e_euler:.3e}, onestep {e_one:.3e}, x0 {e_start:.3e}");
    assert!(e_start <= 1e-6);
    assert!(worst <= 1e-4, "{name}: heun trajectory {worst}");
    assert!(e_euler <= 1e-4, "{name}: euler {e_euler}");
    assert!(e_one <= 1e-4, "{name}: onestep {e_one}");
}

#[test]
fn ddpmpp_samplers_match_edm() {
    check_samplers("edm_ddpmpp_tiny");
}

#[test]
fn ncsnpp_samplers_match_edm() {
    check_samplers("edm_ncsnpp_tiny");
}

#[test]
fn adm_samplers_match_edm() {
    check_samplers("edm_adm_tiny");
}

#[test]
fn stochastic_sampler_without_churn_is_heun_and_with_churn_is_seeded() {
    let device = Default::default();
    let net = load_precond::<B>(fixture_dir("edm_ncsnpp_tiny"), &device).unwrap();
    let mut cfg = SamplerConfig {
        num_steps: 4,
        ..Default::default()
    };
    let z = edm_core::StackedRng::new(&[1, 2]).randn::<B>([3, 16, 16], &device);
    let heun = values(
        sample(
            &net,
            z.clone(),
            None,
            Solver::Heun,
            &cfg,
            None,
            &mut |_, _| {},
        )
        .unwrap(),
    );
    let mut rng = edm_core::StackedRng::new(&[10, 11]);
    let st0 = values(
        sample(
            &net,
            z.clone(),
            None,
            Solver::Stochastic,
            &cfg,
            Some(&mut rng),
            &mut |_, _| {},
        )
        .unwrap(),
    );
    assert!(rel_err(&st0, &heun) < 1e-6);
    cfg.s_churn = 40.0;
    cfg.s_min = 0.05;
    cfg.s_max = 50.0;
    let run = |seeds: &[u64]| {
        let mut rng = edm_core::StackedRng::new(seeds);
        values(
            sample(
                &net,
                z.clone(),
                None,
                Solver::Stochastic,
                &cfg,
                Some(&mut rng),
                &mut |_, _| {},
            )
            .unwrap(),
        )
    };
    let a = run(&[10, 11]);
    let b = run(&[10, 11]);
    let c = run(&[12, 13]);
    assert_eq!(a, b);
    assert!(rel_err(&a, &heun) > 1e-4);
    assert!(rel_err(&a, &c) > 1e-4);
}
