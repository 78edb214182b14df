//! Training-loop properties on a tiny random teacher and a random-weight EfficientNet-Lite0
//! (no assets needed): GDD-I freezing keeps frozen weights bit-identical, resume after a
//! checkpoint reproduces the uninterrupted run, a NaN stops training with a typed error.

use burn::backend::Flex;
use burn::module::AutodiffModule;
use dist_distill::disc::DiscConfig;
use dist_distill::effnet::EfficientNetLite0;
use dist_distill::freeze::is_frozen;
use dist_distill::train::{GddConfig, GddTrainer};
use dist_distill::DistillError;
use edm_core::EdmPrecond;

mod common;
use common::{dataset, teacher, AB};

fn config(freeze: u8) -> GddConfig {
    GddConfig {
        batch_size: 4,
        total_kimg: 1.0,
        lr: 1e-3,
        dlr: 1e-3,
        r1_interval: 2,
        freeze,
        disc: DiscConfig {
            input_res: 32,
            cout: 8,
            ..DiscConfig::default()
        },
        seed: 3,
        ..GddConfig::default()
    }
}

fn backbone() -> EfficientNetLite0<AB> {
    EfficientNetLite0::random(1, &Default::default())
}

fn params(net: &EdmPrecond<Flex>) -> Vec<(String, Vec<f32>)> {
    net.state_dict()
        .into_iter()
        .map(|(n, _, v)| (n, v))
        .collect()
}

#[test]
fn freezing_keeps_frozen_weights_bit_identical() {
    let data = dataset(16);
    let t0 = teacher();
    let before = params(&t0.valid());
    let mut tr = GddTrainer::new(t0, backbone(), config(1), &Default::default()).unwrap();
    assert!(tr.freeze_report.frozen_params > 0 && tr.freeze_report.trainable_params > 0);
    for _ in 0..3 {
        let m = tr.step(&data).unwrap();
        assert!(m.g_loss.is_finite() && m.d_loss_fake.is_finite() && m.d_loss_real.is_finite());
    }
    let after = params(&tr.g.valid());
    let (mut frozen, mut moved) = (0, 0);
    for ((n, a), (_, b)) in before.iter().zip(&after) {
        if is_frozen(n, 1) {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{n} changed"
            );
            frozen += 1;
        } else if a != b {
            moved += 1;
        }
    }
    assert!(frozen > 0, "no frozen tensors");
    assert!(moved > 0, "no trainable tensor moved");
    // The EMA of a frozen parameter is the parameter itself.
    let ema = params(&tr.ema);
    for ((n, a), (_, e)) in before.iter().zip(&ema) {
        if is_frozen(n, 1) {
            // (value equality: the EMA lerp may turn a +0.0 into -0.0)
            assert!(a.iter().zip(e).all(|(x, y)| x == y), "EMA {n}");
        }
    }
}

#[test]
fn resume_reproduces_uninterrupted_run() {
    let data = dataset(16);
    let dev = Default::default();
    // Uninterrupted: 4 steps (R1 runs at step 2).
    let mut a = GddTrainer::new(teacher(), backbone(), config(0), &dev).unwrap();
    let mut ma = Vec::new();
    for _ in 0..4 {
        ma.push(a.step(&data).unwrap());
    }
    // Interrupted after 2 steps: checkpoint, drop everything, resume, 2 more steps.
    let dir = tempfile::tempdir().unwrap();
    let mut b = GddTrainer::new(teacher(), backbone(), config(0), &dev).unwrap();
    let mut mb = vec![b.step(&data).unwrap(), b.step(&data).unwrap()];
    b.checkpoint(dir.path()).unwrap();
    drop(b);
    let mut b = GddTrainer::resume(dir.path(), teacher(), backbone(), &dev).unwrap();
    assert_eq!(b.state.step, 2);
    mb.push(b.step(&data).unwrap());
    mb.push(b.step(&data).unwrap());
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x.g_loss.to_bits(), y.g_loss.to_bits(), "step {}", x.step);
        assert_eq!(
            x.d_loss_real.to_bits(),
            y.d_loss_real.to_bits(),
            "step {}",
            x.step
        );
        assert_eq!(
            x.r1_penalty.map(f64::to_bits),
            y.r1_penalty.map(f64::to_bits)
        );
    }
    assert!(ma[2].r1_penalty.is_some());
    let (pa, pb) = (params(&a.g.valid()), params(&b.g.valid()));
    for ((n, x), (_, y)) in pa.iter().zip(&pb) {
        assert!(
            x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits()),
            "{n} differs"
        );
    }
    let (ea, eb) = (params(&a.ema), params(&b.ema));
    for ((n, x), (_, y)) in ea.iter().zip(&eb) {
        assert!(
            x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits()),
            "EMA {n} differs"
        );
    }
}

#[test]
fn nan_stops_with_a_typed_error_and_keeps_the_checkpoint() {
    let mut data = dataset(8);
    let dev = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut tr = GddTrainer::new(teacher(), backbone(), config(0), &dev).unwrap();
    tr.step(&data).unwrap();
    tr.checkpoint(dir.path()).unwrap();
    for v in data.images.iter_mut() {
        *v = f32::NAN;
    }
    let err = tr.step(&data).unwrap_err();
    assert!(matches!(err, DistillError::NonFinite { .. }), "{err}");
    assert!(err.to_string().contains("non-finite"));
    assert!(dir.path().join("checkpoint/state.json").exists());
}
