//! Forward time of the discriminator's frozen feature path (normalise, resize to 224, backbone, CCM,
//! CSM) for EfficientNet-Lite0 and vgg16_bn, random weights of the real shapes, same batch and
//! threads, side by side: `cargo run --release -p dist-distill --example backbone_speed -- [BATCH] [REPS]`.

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::Tensor;
use dist_distill::disc::{BackboneKind, DiscConfig, FeatureNet, ProjectedFeatures};
use dist_distill::effnet::EfficientNetLite0;
use dist_distill::vgg::{Vgg16Bn, VggConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let reps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let dev = Default::default();
    let x = Tensor::<Flex, 4>::random(
        [batch, 3, 32, 32],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &dev,
    );
    for kind in [BackboneKind::EfficientNetLite0, BackboneKind::Vgg16Bn] {
        let net: FeatureNet<Flex> = match kind {
            BackboneKind::EfficientNetLite0 => EfficientNetLite0::random(0, &dev).into(),
            BackboneKind::Vgg16Bn => Vgg16Bn::random(&VggConfig::vgg16_bn(), 0, &dev).into(),
        };
        let cfg = DiscConfig {
            backbone: kind,
            ..DiscConfig::default()
        };
        let pf = ProjectedFeatures::try_new(net, &cfg, &dev).expect("matching backbone");
        // Warm-up, then timed repetitions (values read back so the work is done).
        let _ = pf.forward(x.clone())[0].clone().into_data();
        let t = Instant::now();
        for _ in 0..reps {
            let f = pf.forward(x.clone());
            let _ = f[3].clone().into_data();
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{:<22} batch {batch}: {:.3} s per forward, {:.2} img/s",
            kind.name(),
            s,
            batch as f64 / s
        );
    }
}
