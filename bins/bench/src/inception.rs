//! The Inception row: EDM's FID feature extractor, uint8-range 32×32 images → resize to 299 → pool3.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use fid::InceptionV3;

use crate::timing::{rate, row, Timer};

pub fn run<B: Backend>(
    device: &B::Device,
    t: &Timer,
    batch: usize,
    resolution: usize,
    weights: Option<&Path>,
) -> anyhow::Result<()> {
    // Random weights run the same kernels on the same shapes as the real `default_1.pt`.
    let (net, what) = match weights {
        Some(p) => (InceptionV3::<B>::load(p, device)?, "real weights"),
        None => (InceptionV3::<B>::random(0, device), "random weights"),
    };
    let images = Tensor::<B, 4>::random(
        [batch, 3, resolution, resolution],
        Distribution::Uniform(0.0, 255.0),
        device,
    )
    .floor();
    let time = t.median::<B, _>(device, || {
        net.features(images.clone()).expect("valid image batch")
    });
    row(
        &format!("Inception-v3 pool3, {resolution}→299 resize ({what})"),
        &format!("batch {batch}"),
        "f32",
        time,
        &rate(batch as f64 / time.as_secs_f64(), "img/s"),
    );
    Ok(())
}
