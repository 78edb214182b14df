//! End to end on real data: a tiny U-Net teacher (random init), a few hundred Fashion-MNIST images,
//! the real EfficientNet-Lite0 (D input resized to 32 for speed), a few dozen GDD steps; losses stay
//! finite, the generator changes, and FID (TF-Inception) is computed on in-memory samples.
//! Skips when an asset is not cached.

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use dist_distill::disc::DiscConfig;
use dist_distill::effnet::EfficientNetLite0;
use dist_distill::eval::{self, Sampler};
use dist_distill::train::{GddConfig, GddTrainer};
use edm_core::{EdmConfig, EdmPrecond, ImageDataset, ModelType};

type AB = Autodiff<Flex>;

#[test]
fn gdd_end_to_end_on_fashion_mnist() {
    let mut missing = Vec::new();
    for a in [
        "fashion-mnist",
        "efficientnet-lite0",
        "inception-2015-12-05",
    ] {
        if assets::cached(a).is_none() {
            missing.push(a);
        }
    }
    if !missing.is_empty() {
        for a in missing {
            eprintln!("skipped: asset {a} not in cache, run `cargo run --release -p assets-cli -- fetch {a}`");
        }
        return;
    }
    let dev = Default::default();
    let data = ImageDataset::fashion_mnist(
        &assets::cached("fashion-mnist").unwrap(),
        true,
        32,
        Some(300),
    )
    .unwrap();
    let mut c = EdmConfig::tiny(ModelType::SongUNet, 32, 1, 0);
    c.model_channels = Some(16);
    c.num_blocks = Some(1);
    let teacher = EdmPrecond::<AB>::init(&c, 11, &dev).unwrap();
    let backbone =
        EfficientNetLite0::<AB>::load_pth(&assets::cached("efficientnet-lite0").unwrap(), &dev)
            .unwrap();
    let cfg = GddConfig {
        batch_size: 8,
        total_kimg: 0.192,
        lr: 1e-3,
        dlr: 1e-3,
        r1_interval: 8,
        freeze: 1,
        disc: DiscConfig {
            input_res: 32,
            ..DiscConfig::default()
        },
        ..GddConfig::default()
    };
    let mut tr = GddTrainer::new(teacher, backbone, cfg, &dev).unwrap();
    let before = tr.g.valid().state_dict();
    let steps = tr.state.config.total_steps();
    assert_eq!(steps, 24);
    let mut r1_seen = false;
    for _ in 0..steps {
        let m = tr.step(&data).unwrap();
        assert!(m.g_loss.is_finite() && m.d_loss_fake.is_finite() && m.d_loss_real.is_finite());
        r1_seen |= m.r1_penalty.is_some_and(f64::is_finite);
    }
    assert!(r1_seen, "R1 never ran");
    let after = tr.g.valid().state_dict();
    let changed = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.2 != b.2)
        .count();
    assert!(changed > 0, "generator did not change");

    let inception = eval::load_inception::<Flex>(&dev).unwrap();
    let stats = eval::reference_stats(&inception, &data, 48, 24, &dev).unwrap();
    let evaluator = fid::FidEvaluator::new(inception, stats).unwrap();
    let one = tr.state.config.one_step().unwrap();
    let f = eval::fid_of_net(&evaluator, &tr.ema, Sampler::OneStep(one), 48, 24, &dev).unwrap();
    eprintln!("FID (48 vs 48 images, untrained tiny teacher): {f:.1}");
    assert!(f.is_finite() && f > 0.0);
}
