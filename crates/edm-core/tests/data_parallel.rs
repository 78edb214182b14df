//! EDM training data-parallel on crate `parallel` (CPU, tiny SongUNet): two peers in one process,
//! each on half of the global batch, against one device on the whole batch, 3 steps; the driver
//! (`train_run_parallel`, what `edm train --devices 2` runs) likewise, and resumed on one device.

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use edm_core::{EdmConfig, EdmError, EdmPrecond, ImageDataset, ModelType, TrainOptions, Trainer};
use parallel::testing::max_abs_diff;
use parallel::{run_peers, ParallelConfig};

type AB = Autodiff<Flex>;

fn tiny_config() -> EdmConfig {
    let mut c = EdmConfig::tiny(ModelType::SongUNet, 8, 1, 0);
    c.model_channels = Some(16);
    c.channel_mult = Some(vec![1, 1]);
    c.num_blocks = Some(1);
    c.attn_resolutions = Some(vec![4]);
    c
}

/// 8×8 images with a bright left or top half.
fn data(n: usize) -> ImageDataset {
    let mut images = Vec::with_capacity(n * 64);
    for k in 0..n {
        for y in 0..8 {
            for x in 0..8 {
                let on = if k % 2 == 0 { x < 4 } else { y < 4 };
                images.push(if on { 0.8 } else { -0.8 } + 0.01 * ((k * 7 + x * 3 + y) % 5) as f32);
            }
        }
    }
    ImageDataset {
        images,
        labels: None,
        num_classes: 0,
        len: n,
        channels: 1,
        resolution: 8,
    }
}

fn options(batch: usize) -> TrainOptions {
    TrainOptions {
        batch_size: batch,
        total_kimg: 1.0,
        lr: 2e-3,
        lr_rampup_kimg: 0.0,
        ema_halflife_kimg: 0.05,
        ema_rampup_ratio: Some(0.05),
        seed: 5,
        ..Default::default()
    }
}

const STEPS: usize = 3;

/// Network and EMA after `STEPS` steps, and the losses.
type Outcome = (Vec<f32>, Vec<f32>, Vec<f64>);

fn train(mut t: Trainer<AB>, d: &ImageDataset) -> Result<Outcome, EdmError> {
    let mut losses = Vec::new();
    for _ in 0..STEPS {
        losses.push(t.step(d)?.loss);
    }
    Ok((
        t.net.valid().flat_parameters(),
        t.ema.flat_parameters(),
        losses,
    ))
}

#[test]
fn two_local_peers_match_one_device_for_three_steps() {
    let _turn = parallel::testing::exclusive::<Flex>();
    let d = data(32);
    let dev = Default::default();
    let net = EdmPrecond::<AB>::init(&tiny_config(), 5, &dev).unwrap();
    let start = net.valid().flat_parameters();
    let (one, one_ema, one_loss) =
        train(Trainer::from_network(net.clone(), options(8), &dev), &d).unwrap();
    let cfg = ParallelConfig {
        timeout: std::time::Duration::from_secs(300),
        ..ParallelConfig::local(2)
    };
    let peers = run_peers::<Flex, _, EdmError, _>(&cfg, &[dev, dev], |peer, dev| {
        let mut t = Trainer::from_network(net.clone(), options(8), dev);
        t.set_peer(peer)?;
        train(t, &d)
    })
    .unwrap();
    assert_eq!(peers[0].0, peers[1].0, "networks differ between peers");
    assert_eq!(peers[0].1, peers[1].1, "EMAs differ between peers");
    let (two, two_ema, two_loss) = &peers[0];
    let dmax = max_abs_diff(two, &one);
    let emax = max_abs_diff(two_ema, &one_ema);
    let update = max_abs_diff(&one, &start);
    // Control: one device on half the batch (no all-reduce) ends far away.
    let (half, _, _) = train(Trainer::from_network(net.clone(), options(4), &dev), &d).unwrap();
    let dhalf = max_abs_diff(&half, &one);
    eprintln!(
        "EDM, 2 peers vs 1 device, {STEPS} steps, {} floats: max |diff| {dmax:e} (EMA {emax:e}); \
         largest update {update:e}; half batch alone {dhalf:e}; losses {one_loss:?} vs \
         {two_loss:?}",
        one.len()
    );
    for (a, b) in one_loss.iter().zip(two_loss) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "loss {a} vs {b}");
    }
    assert!(dmax <= 1e-4, "max |diff| {dmax:e}");
    assert!(emax <= 1e-4, "EMA max |diff| {emax:e}");
    assert!(
        dhalf > 10.0 * dmax.max(1e-6),
        "half-batch control too close: {dhalf:e}"
    );
}

/// The driver `edm train` runs: 2 local peers for 3 steps of a global batch of 8, against
/// `train_run` on one device, then the 2-peer run resumed on 1 device for 2 more steps against the
/// single-device run resumed likewise. Checkpoints (written by rank 0 alone, one `stats.jsonl`,
/// one `log.txt` naming the peers) within 1e-4 of one device; control: the single-device run's
/// own update is far larger.
#[test]
fn driver_with_two_peers_matches_one_device_and_resumes_on_one() {
    let _turn = parallel::testing::exclusive::<Flex>();
    let d = data(32);
    let dev = Default::default();
    let tmp = tempfile::tempdir().unwrap();
    let (two, one) = (tmp.path().join("two"), tmp.path().join("one"));
    let cfg = ParallelConfig {
        timeout: std::time::Duration::from_secs(300),
        ..ParallelConfig::local(2)
    };
    // 3 steps of 8 images, then 5.
    let opts = |steps: usize| TrainOptions {
        total_kimg: (steps * 8) as f64 / 1000.0,
        checkpoint_every: 100,
        tick_kimg: 0.008,
        snap_ticks: 0,
        ..options(8)
    };
    let net = |dir: &std::path::Path| {
        let t = Trainer::<AB>::resume(dir, &dev).unwrap();
        (
            t.state.step,
            t.net.valid().flat_parameters(),
            t.ema.flat_parameters(),
        )
    };
    let mut logs = Vec::new();
    let mut on_event = |e: edm_core::TrainEvent<'_>| {
        if let edm_core::TrainEvent::Log(l) = e {
            logs.push(l.to_string())
        }
    };
    edm_core::train_run_parallel::<AB>(
        &tiny_config(),
        &d,
        opts(STEPS),
        &two,
        false,
        &cfg,
        &dev,
        &mut on_event,
    )
    .unwrap();
    edm_core::train_run::<AB>(
        &tiny_config(),
        &d,
        opts(STEPS),
        &one,
        false,
        &dev,
        &mut |_| {},
    )
    .unwrap();
    let start = EdmPrecond::<Flex>::init(&tiny_config(), 5, &dev)
        .unwrap()
        .flat_parameters();
    let ((s2, n2, e2), (s1, n1, e1)) = (net(&two), net(&one));
    assert_eq!((s2, s1), (3, 3));
    let (dmax, emax, update) = (
        max_abs_diff(&n2, &n1),
        max_abs_diff(&e2, &e1),
        max_abs_diff(&n1, &start),
    );
    let log = std::fs::read_to_string(two.join("log.txt")).unwrap();
    assert!(log.contains("data-parallel over 2 devices"), "{log}");
    assert_eq!(log.matches("training options").count(), 1, "{log}");
    assert_eq!(logs.iter().filter(|l| l.starts_with("tick")).count(), 3);
    assert_eq!(
        std::fs::read_to_string(two.join("stats.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );

    // Resumed on one device (the checkpoint holds no peer count).
    let one_dev = ParallelConfig::local(1);
    edm_core::train_run_parallel::<AB>(
        &tiny_config(),
        &d,
        opts(5),
        &two,
        false,
        &one_dev,
        &dev,
        &mut |_| {},
    )
    .unwrap();
    edm_core::train_run::<AB>(&tiny_config(), &d, opts(5), &one, false, &dev, &mut |_| {}).unwrap();
    let ((s2, n2r, _), (s1, n1r, _)) = (net(&two), net(&one));
    assert_eq!((s2, s1), (5, 5));
    let rmax = max_abs_diff(&n2r, &n1r);
    eprintln!(
        "EDM driver, 2 peers vs 1 device, 3 steps: max |diff| {dmax:e} (EMA {emax:e}), largest \
         update {update:e}; resumed on 1 device to step 5: {rmax:e}"
    );
    assert!(update > 1e-3, "{update:e}");
    assert!(dmax <= 1e-4 && emax <= 1e-4, "{dmax:e} {emax:e}");
    assert!(rmax <= 1e-4, "{rmax:e}");
}
