//! Two projected discriminators side by side (the reference's CIFAR-10 setting: vgg16_bn beside
//! EfficientNet-Lite0), on a tiny random teacher with random-weight backbones (no assets): the
//! summed losses are the single-backbone losses added, R1 runs, a checkpoint of both resumes, a
//! resume with another backbone list is refused, and two data-parallel peers agree.
// The peers' closures return the crate's error type, as the trainer does.
#![allow(clippy::result_large_err)]

use burn::backend::Flex;
use burn::module::AutodiffModule;
use dist_distill::disc::{BackboneKind, Backbones, DiscConfig, FeatureNet};
use dist_distill::effnet::EfficientNetLite0;
use dist_distill::train::{check_resume, GddConfig, GddTrainer};
use dist_distill::vgg::{Vgg16Bn, VggConfig};
use dist_distill::DistillError;
use parallel::{run_peers, ParallelConfig};

mod common;
use common::{dataset, teacher, AB};

fn lite0() -> FeatureNet<AB> {
    EfficientNetLite0::random(1, &Default::default()).into()
}

/// torchvision's vgg16_bn at 1/16 of its widths (random weights).
fn vgg() -> FeatureNet<AB> {
    Vgg16Bn::random(&VggConfig::width_divided(16), 5, &Default::default()).into()
}

fn both() -> Backbones<AB> {
    vec![vgg(), lite0()].into()
}

/// Batch 4, R1 every step from step 1, discriminators on 32x32 inputs (a size both backbones
/// take), in the reference's order: vgg16_bn, then Lite0.
fn config(backbones: &[BackboneKind]) -> GddConfig {
    let mut disc = DiscConfig {
        input_res: 32,
        cout: 8,
        seed: 11,
        ..DiscConfig::default()
    };
    disc.set_backbones(backbones).unwrap();
    GddConfig {
        batch_size: 4,
        total_kimg: 1.0,
        lr: 1e-3,
        dlr: 1e-3,
        r1_interval: 1,
        disc,
        seed: 3,
        ..GddConfig::default()
    }
}

const DUAL: [BackboneKind; 2] = [BackboneKind::Vgg16Bn, BackboneKind::EfficientNetLite0];

/// The dual run's configuration with discriminator `i` alone (same seeds, so the same fixed
/// projections and head initialisation as the dual run's member `i`).
fn member_config(i: usize) -> GddConfig {
    let mut c = config(&DUAL);
    c.disc = c.disc.member(i);
    c
}

#[test]
fn summed_losses_equal_the_single_backbone_losses_added() {
    let dev = Default::default();
    let data = dataset(16);
    let dual = GddTrainer::new(teacher(), both(), config(&DUAL), &dev).unwrap();
    assert_eq!((dual.d.len(), dual.feats.len()), (2, 2));
    let singles = [
        GddTrainer::new(teacher(), vgg(), member_config(0), &dev).unwrap(),
        GddTrainer::new(teacher(), lite0(), member_config(1), &dev).unwrap(),
    ];
    // The same step draws the same batch and noise in all three runs.
    let draws = dual.draw(&data);
    assert_eq!(draws, singles[0].draw(&data));
    let (_, g_dual) = dual.generator_grads(&draws);
    let g: Vec<f64> = singles
        .iter()
        .map(|t| t.generator_grads(&draws).1)
        .collect();
    let (_, d_dual) = dual.discriminator_grads(&draws);
    let d: Vec<_> = singles
        .iter()
        .map(|t| t.discriminator_grads(&draws).1)
        .collect();
    eprintln!(
        "G {g_dual} = {} + {}; D fake {} = {} + {}; D real {} = {} + {}",
        g[0],
        g[1],
        d_dual.loss_fake,
        d[0].loss_fake,
        d[1].loss_fake,
        d_dual.loss_real,
        d[0].loss_real,
        d[1].loss_real
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
    assert!(close(g_dual, g[0] + g[1]), "G {g_dual} vs {}", g[0] + g[1]);
    assert!(close(d_dual.loss_fake, d[0].loss_fake + d[1].loss_fake));
    assert!(close(d_dual.loss_real, d[0].loss_real + d[1].loss_real));
    // The control: each single loss alone differs from the sum (both discriminators contribute).
    for x in &g {
        assert!(!close(g_dual, *x), "G {g_dual} equals one member's {x}");
    }
    // The dual run's first discriminator is configured exactly as the single-backbone run's with
    // the same seed; the second draws its fixed projections and heads from the next seed.
    assert_eq!(config(&DUAL).disc.member(0), config(&DUAL[..1]).disc);
    assert_eq!(config(&DUAL).disc.member(1).seed, 12);
}

#[test]
fn dual_run_steps_with_r1_and_resumes_bit_identically() {
    let dev = Default::default();
    let data = dataset(16);
    let mut a = GddTrainer::new(teacher(), both(), config(&DUAL), &dev).unwrap();
    let ma: Vec<_> = (0..3).map(|_| a.step(&data).unwrap()).collect();
    for m in &ma {
        assert!(m.g_loss.is_finite() && m.d_loss_fake.is_finite() && m.d_loss_real.is_finite());
    }
    assert!(ma[1].r1_penalty.unwrap() > 0.0, "{:?}", ma[1]);

    let dir = tempfile::tempdir().unwrap();
    let mut b = GddTrainer::new(teacher(), both(), config(&DUAL), &dev).unwrap();
    b.step(&data).unwrap();
    b.checkpoint(dir.path()).unwrap();
    let ck = dir.path().join("checkpoint");
    assert!(ck.join("d.bin").is_file() && ck.join("d1.bin").is_file());
    let mut b = GddTrainer::resume(dir.path(), teacher(), both(), &dev).unwrap();
    let mb: Vec<_> = (0..2).map(|_| b.step(&data).unwrap()).collect();
    for (x, y) in ma[1..].iter().zip(&mb) {
        assert_eq!(
            (x.g_loss, x.d_loss_fake, x.d_loss_real, x.r1_penalty),
            (y.g_loss, y.d_loss_fake, y.d_loss_real, y.r1_penalty),
            "resumed step {} differs",
            x.step
        );
    }
    assert_eq!(a.g.valid().state_dict(), b.g.valid().state_dict());

    // The saved configuration names both backbones; a resume with one of them is refused by
    // name (before any work), and so is a trainer handed one network for two discriminators.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["config"]["disc"]["backbone"], "vgg16_bn");
    assert_eq!(
        state["config"]["disc"]["extra_backbones"],
        serde_json::json!(["tf_efficientnet_lite0"])
    );
    assert!(check_resume(dir.path(), &config(&DUAL), false)
        .unwrap()
        .is_none());
    let Err(err) = check_resume(dir.path(), &config(&DUAL[..1]), false) else {
        panic!("a resume with vgg16_bn alone was accepted")
    };
    assert!(
        matches!(err, DistillError::OptionsChanged { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("extra_backbones"), "{err}");
    let Err(err) = GddTrainer::resume(dir.path(), teacher(), vgg(), &dev) else {
        panic!("one backbone for a two-discriminator checkpoint was accepted")
    };
    assert!(err.to_string().contains("2 backbone(s)"), "{err}");
    // Swapped order: the first network is not the configured vgg16_bn.
    let swapped: Backbones<AB> = vec![lite0(), vgg()].into();
    assert!(GddTrainer::resume(dir.path(), teacher(), swapped, &dev).is_err());
}

#[test]
fn a_backbone_list_must_be_nonempty_and_without_repeats() {
    let mut disc = DiscConfig::default();
    assert!(matches!(
        disc.set_backbones(&[]),
        Err(DistillError::Config(_))
    ));
    let Err(e) = disc.set_backbones(&[BackboneKind::Vgg16Bn, BackboneKind::Vgg16Bn]) else {
        panic!("a repeated backbone was accepted")
    };
    assert!(e.to_string().contains("listed twice"), "{e}");
    // A single backbone serialises as before (no extra field), so old checkpoints compare equal.
    disc.set_backbones(&[BackboneKind::Vgg16Bn]).unwrap();
    let json = serde_json::to_value(&disc).unwrap();
    assert!(json.get("extra_backbones").is_none(), "{json}");
    assert_eq!(disc.member(0), disc);
}

#[test]
fn two_local_peers_match_one_device_with_two_discriminators() {
    let dev = Default::default();
    let data = dataset(16);
    let mut cfg = config(&DUAL);
    cfg.d_batch_group = 2;
    let mut one = GddTrainer::new(teacher(), both(), cfg.clone(), &dev).unwrap();
    let one_m: Vec<_> = (0..2).map(|_| one.step(&data).unwrap()).collect();
    let pcfg = ParallelConfig {
        timeout: std::time::Duration::from_secs(300),
        ..ParallelConfig::local(2)
    };
    let _turn = parallel::testing::exclusive::<Flex>();
    let (t, b) = (teacher(), both());
    let peers = run_peers::<Flex, _, DistillError, _>(&pcfg, &[dev, dev], |peer, dev| {
        let mut tr = GddTrainer::new(t.clone(), b.clone(), cfg.clone(), dev)?;
        tr.set_peer(peer)?;
        let m: Vec<_> = (0..2).map(|_| tr.step(&data)).collect::<Result<_, _>>()?;
        Ok((tr.g.valid().state_dict(), m))
    })
    .unwrap();
    assert_eq!(peers[0].0, peers[1].0, "generators differ between peers");
    let rel = |x: f64, y: f64| (x - y).abs() / x.abs().max(1e-6);
    let (a, p) = (&one_m[0], &peers[0].1[0]);
    eprintln!(
        "step 1: G {} vs {}, D real {} vs {}, D fake {} vs {}; step 2 R1 {:?} vs {:?}",
        a.g_loss,
        p.g_loss,
        a.d_loss_real,
        p.d_loss_real,
        a.d_loss_fake,
        p.d_loss_fake,
        one_m[1].r1_penalty,
        peers[0].1[1].r1_penalty
    );
    // Step 1 starts from identical parameters: only the summation order differs.
    assert!(rel(a.g_loss, p.g_loss) < 1e-5);
    assert!(rel(a.d_loss_real, p.d_loss_real) < 1e-5);
    assert!(rel(a.d_loss_fake, p.d_loss_fake) < 1e-5);
    let (r_one, r_two) = (
        one_m[1].r1_penalty.unwrap(),
        peers[0].1[1].r1_penalty.unwrap(),
    );
    assert!(rel(r_one, r_two) < 1e-3, "R1 {r_one} vs {r_two}");
}
