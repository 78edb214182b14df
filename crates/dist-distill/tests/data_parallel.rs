//! GDD data-parallel on crate `parallel` (CPU, tiny random teacher, random-weight EfficientNet):
//! two peers in one process against one device on the same global batch, the driver with two
//! peers, and a run resumed on a different number of peers.
//!
//! As under the reference's DDP, each peer's discriminator batch norm sees its own shard only, so
//! the single-device runs use ghost batches of the shard size (`d_batch_group`) to match it.

// DistillError is what the trainer returns; its size is not this test's concern.
#![allow(clippy::result_large_err)]

use burn::backend::Flex;
use burn::module::AutodiffModule;
use dist_distill::disc::DiscConfig;
use dist_distill::effnet::EfficientNetLite0;
use dist_distill::train::{run, GddConfig, GddTrainer, RunOptions, StepMetrics};
use dist_distill::DistillError;
use edm_core::ImageDataset;
use parallel::testing::{max_abs_diff, update_distance};
use parallel::{run_peers, ParallelConfig};

mod common;
use common::{dataset, teacher, AB};

fn backbone() -> EfficientNetLite0<AB> {
    EfficientNetLite0::random(1, &Default::default())
}

/// Batch 4 in ghost batches of 2 (one per peer of two), R1 every step from step 1.
fn config(total_kimg: f64) -> GddConfig {
    GddConfig {
        batch_size: 4,
        total_kimg,
        lr: 1e-3,
        dlr: 1e-3,
        r1_interval: 1,
        d_batch_group: 2,
        disc: DiscConfig {
            input_res: 32,
            cout: 8,
            ..DiscConfig::default()
        },
        seed: 3,
        ..GddConfig::default()
    }
}

const STEPS: usize = 3;

/// Generator parameters and EMA after `STEPS` steps, and the steps' metrics.
type Outcome = (Vec<f32>, Vec<f32>, Vec<StepMetrics>);

fn train(mut tr: GddTrainer<AB>, data: &ImageDataset) -> Result<Outcome, DistillError> {
    let mut m = Vec::new();
    for _ in 0..STEPS {
        m.push(tr.step(data)?);
    }
    Ok((tr.g.valid().flat_parameters(), tr.ema.flat_parameters(), m))
}

#[test]
fn two_local_peers_match_one_device_for_three_steps() {
    let _turn = parallel::testing::exclusive::<Flex>();
    let data = dataset(16);
    let dev = Default::default();
    let start = teacher().valid().flat_parameters();
    let t0 = std::time::Instant::now();
    let (one_g, one_ema, one_m) = train(
        GddTrainer::new(teacher(), backbone(), config(0.0), &dev).unwrap(),
        &data,
    )
    .unwrap();
    let t_one = t0.elapsed();
    let cfg = ParallelConfig {
        timeout: std::time::Duration::from_secs(300),
        ..ParallelConfig::local(2)
    };
    let (t, b) = (teacher(), backbone());
    let t0 = std::time::Instant::now();
    let peers = run_peers::<Flex, _, DistillError, _>(&cfg, &[dev, dev], |peer, dev| {
        let mut tr = GddTrainer::new(t.clone(), b.clone(), config(0.0), dev)?;
        tr.set_peer(peer)?;
        train(tr, &data)
    })
    .unwrap();
    let t_two = t0.elapsed();
    // Every peer holds the same generator and the same EMA (same reduced gradients, same Adam).
    assert_eq!(peers[0].0, peers[1].0, "generators differ between peers");
    assert_eq!(peers[0].1, peers[1].1, "EMAs differ between peers");
    let (g, ema, m) = &peers[0];
    for (a, b) in one_m.iter().zip(m) {
        eprintln!(
            "step {}: G loss {:.7} vs {:.7}, D real {:.7} vs {:.7}, R1 {:?} vs {:?}",
            a.step, a.g_loss, b.g_loss, a.d_loss_real, b.d_loss_real, a.r1_penalty, b.r1_penalty
        );
        let rel = |x: f64, y: f64| (x - y).abs() / x.abs().max(1e-6);
        // Step 1's losses come from identical parameters: only summation order differs.
        if a.step == 1 {
            assert!(
                rel(a.g_loss, b.g_loss) < 1e-5,
                "{} vs {}",
                a.g_loss,
                b.g_loss
            );
            assert!(rel(a.d_loss_real, b.d_loss_real) < 1e-5);
        }
        assert_eq!(a.r1_penalty.is_some(), b.r1_penalty.is_some());
    }
    let (d, update) = update_distance(g, &one_g, &start);
    let dmax = max_abs_diff(g, &one_g);
    let emax = max_abs_diff(ema, &one_ema);
    // Without the all-reduce (one peer on its half of the batch) the run must end far away.
    let mut half_cfg = config(0.0);
    half_cfg.batch_size = 2;
    let (half_g, _, _) = train(
        GddTrainer::new(teacher(), backbone(), half_cfg, &dev).unwrap(),
        &data,
    )
    .unwrap();
    let (d_half, _) = update_distance(&half_g, &one_g, &start);
    eprintln!(
        "2 peers vs 1 device after {STEPS} steps ({} generator floats): max |diff| {dmax:e} \
         (EMA {emax:e}), L2 {d:.3e} vs update {update:.3e}; half batch alone: L2 {d_half:.3e}; \
         time 1 device {t_one:?}, 2 peers {t_two:?}",
        g.len()
    );
    assert!(update > 0.0);
    // Adam with β1 = 0 moves a parameter by ≈ lr·sign(g) on its first steps, so a gradient near
    // 0 whose sign the summation order flips moves it by up to 2·lr·steps (6e-3) either way:
    // the bound is that, not rounding. A missing or wrongly scaled shard moves the whole update.
    assert!(dmax <= 6e-3, "max |diff| {dmax:e}");
    assert!(
        d < 0.25 * update,
        "data-parallel drifted: {d} vs update {update}"
    );
    assert!(
        d_half > 2.0 * d,
        "the half-batch control is as close ({d_half} vs {d})"
    );
}

fn options(out: &std::path::Path, peers: usize) -> RunOptions<Flex> {
    RunOptions {
        out_dir: out.to_path_buf(),
        checkpoint_every: 2,
        grid_every: 100,
        parallel: ParallelConfig {
            timeout: std::time::Duration::from_secs(300),
            ..ParallelConfig::local(peers)
        },
        fid: None,
    }
}

fn drive(out: &std::path::Path, total_kimg: f64, peers: usize) -> GddTrainer<AB> {
    run(
        teacher(),
        backbone(),
        config(total_kimg),
        &dataset(16),
        &options(out, peers),
        &Default::default(),
        &mut |_| {},
    )
    .unwrap()
}

/// The driver on two peers writes one set of outputs (rank 0), and a run checkpointed on two
/// peers resumes on one peer to end where an uninterrupted one-device run ends.
#[test]
fn driver_on_two_peers_resumes_on_one() {
    let _turn = parallel::testing::exclusive::<Flex>();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // 0.0159 kimg at batch 4: 4 steps (0.0079: 2).
    let whole = drive(&a, 0.0159, 1);
    let two = drive(&b, 0.0079, 2);
    assert_eq!(two.state.step, 2);
    assert_eq!(two.world_size(), 2);
    let lines = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count(),
        2,
        "one metrics line per step, rank 0 only"
    );
    assert!(b.join("checkpoint/state.json").exists());
    let resumed = drive(&b, 0.0159, 1);
    assert_eq!(resumed.state.step, 4);
    let lines = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);
    let start = teacher().valid().flat_parameters();
    let (x, y) = (
        resumed.g.valid().flat_parameters(),
        whole.g.valid().flat_parameters(),
    );
    let (d, update) = update_distance(&x, &y, &start);
    let dmax = max_abs_diff(&x, &y);
    eprintln!(
        "2 peers x 2 steps then 1 device x 2 steps vs 1 device x 4 steps: max |diff| {dmax:e}, \
         L2 {d:.3e} vs update {update:.3e}"
    );
    assert!(dmax <= 8e-3, "max |diff| {dmax:e}");
    assert!(
        d < 0.25 * update,
        "resumed run drifted: {d} vs update {update}"
    );
}
