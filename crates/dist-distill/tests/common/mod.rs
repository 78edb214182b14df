//! The tiny random teacher and the synthetic dataset that the training tests share (no assets).

use burn::backend::{Autodiff, Flex};
use edm_core::{EdmConfig, EdmPrecond, ImageDataset, ModelType};

pub type AB = Autodiff<Flex>;

/// A SongUNet teacher at 16x16, one channel, 16 base channels, one block per level (seed 7).
pub fn teacher() -> EdmPrecond<AB> {
    let mut c = EdmConfig::tiny(ModelType::SongUNet, 16, 1, 0);
    c.model_channels = Some(16);
    c.num_blocks = Some(1);
    EdmPrecond::init(&c, 7, &Default::default()).unwrap()
}

/// `n` deterministic one-channel 16x16 "images" in [-1, 1].
pub fn dataset(n: usize) -> ImageDataset {
    let res = 16;
    let images: Vec<f32> = (0..n * res * res)
        .map(|i| (((i * 7919) % 255) as f32 / 127.5) - 1.0)
        .collect();
    ImageDataset {
        images,
        labels: None,
        num_classes: 0,
        len: n,
        channels: 1,
        resolution: res,
    }
}
