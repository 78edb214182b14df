//! Trains a small EDM teacher on Fashion-MNIST through edm-core's API (used when no `edm train`
//! teacher exists): `cargo run --release -p dist-distill --example train_teacher -- OUT KIMG BATCH [LIMIT]`.
//! Writes `OUT/checkpoint/{config.json,model.safetensors}` (EMA) and is resumable.

use burn::backend::{Autodiff, Flex};
use edm_core::{EdmConfig, ImageDataset, ModelType, TrainOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(&args[1]);
    let kimg: f64 = args[2].parse().expect("kimg");
    let batch: usize = args[3].parse().expect("batch");
    let limit: Option<usize> = args.get(4).map(|s| s.parse().expect("limit"));
    let data = assets::cached("fashion-mnist").expect("fashion-mnist asset in cache");
    let config = EdmConfig::tiny(ModelType::SongUNet, 32, 1, 0);
    let dataset = ImageDataset::fashion_mnist(&data, true, 32, limit).expect("dataset");
    let options = TrainOptions {
        batch_size: batch,
        total_kimg: kimg,
        lr: 1e-3,
        lr_rampup_kimg: 5.0,
        ema_halflife_kimg: 10.0,
        ema_rampup_ratio: Some(0.05),
        seed: 0,
        checkpoint_every: 50,
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let mut last = 0.0;
    edm_core::train::<Autodiff<Flex>>(
        &config,
        &dataset,
        options,
        &out,
        &Default::default(),
        &mut |r| {
            last = if last == 0.0 {
                r.loss
            } else {
                0.98 * last + 0.02 * r.loss
            };
            if r.step.is_multiple_of(10) {
                eprintln!(
                    "step {} kimg {:.2} loss {:.4} (avg {:.4}) {:.1}s",
                    r.step,
                    r.cur_nimg as f64 / 1000.0,
                    r.loss,
                    last,
                    t0.elapsed().as_secs_f64()
                );
            }
        },
    )
    .expect("training");
    eprintln!("done in {:.1}s", t0.elapsed().as_secs_f64());
}
