//! EDM training data-parallel on crate `parallel` (CPU, tiny SongUNet): two peers in one process,
//! each on half of the global batch, against one device on the whole batch, 3 steps.

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use edm_core::{EdmConfig, EdmError, EdmPrecond, ImageDataset, ModelType, TrainOptions, Trainer};
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

fn flat(net: &EdmPrecond<Flex>) -> Vec<f32> {
    net.state_dict()
        .into_iter()
        .flat_map(|(_, _, v)| v)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const STEPS: usize = 3;

/// Network and EMA after `STEPS` steps, and the losses.
type Outcome = (Vec<f32>, Vec<f32>, Vec<f64>);

fn train(mut t: Trainer<AB>, d: &ImageDataset) -> Result<Outcome, EdmError> {
    let mut losses = Vec::new();
    for _ in 0..STEPS {
        losses.push(t.step(d)?.loss);
    }
    Ok((flat(&t.net.valid()), flat(&t.ema), losses))
}

#[test]
fn two_local_peers_match_one_device_for_three_steps() {
    let d = data(32);
    let dev = Default::default();
    let net = EdmPrecond::<AB>::init(&tiny_config(), 5, &dev).unwrap();
    let start = flat(&net.valid());
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
