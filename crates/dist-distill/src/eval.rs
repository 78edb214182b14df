//! Evaluation helpers: FID (the fid crate's TF-Inception on in-memory samples) of the one-step
//! generator and of the teacher's Heun sampler, and PNG sample grids.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use edm_core::{EdmPrecond, ImageDataset, SamplerConfig, Solver};
use fid::evaluator::to_uint8_range;
use fid::{FidEvaluator, InceptionV3, RefStats};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::StandardNormal;

use crate::error::{DistillError, Result};
use crate::generator::{generate, OneStep};

/// Loads the TF-Inception network from the asset cache (`inception-2015-12-05`).
pub fn load_inception<B: Backend>(device: &B::Device) -> Result<InceptionV3<B>> {
    let path = assets::cached(fid::INCEPTION_ASSET)
        .ok_or_else(|| DistillError::MissingAsset(fid::INCEPTION_ASSET.to_string()))?;
    Ok(InceptionV3::from_torchscript(path, device)?)
}

/// A batch of dataset images [n, C, H, W] in [-1, 1] starting at `start`.
pub fn dataset_batch<B: Backend>(
    data: &ImageDataset,
    start: usize,
    n: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let mut v = Vec::with_capacity(n * data.channels * data.resolution * data.resolution);
    for i in start..start + n {
        v.extend_from_slice(data.image(i));
    }
    Tensor::from_data(
        TensorData::new(v, [n, data.channels, data.resolution, data.resolution]),
        device,
    )
}

/// Inception statistics of the first `num` images of `data` (the FID reference), by
/// [`fid::evaluator::dataset_stats`]: the images go back to the uint8 values they were read from
/// (x·127.5 + 128, clipped and truncated as [`to_uint8_range`] does for generated images; exact for
/// values that were v/127.5 − 1), so the reference and the samples take the same path through the
/// network.
pub fn reference_stats<B: Backend>(
    inception: &InceptionV3<B>,
    data: &ImageDataset,
    num: usize,
    batch: usize,
    device: &B::Device,
) -> Result<RefStats> {
    let num = num.min(data.len);
    let per = data.channels * data.resolution * data.resolution;
    let pixels: Vec<u8> = data.images[..num * per]
        .iter()
        .map(|&x| (x * 127.5 + 128.0).clamp(0.0, 255.0).floor() as u8)
        .collect();
    let mut dataset = fid::Dataset::memory(
        Path::new("<training images>"),
        pixels,
        [num, data.channels, data.resolution, data.resolution],
    );
    let stats = fid::evaluator::dataset_stats(inception, &mut dataset, num, batch, device, |_| {})?;
    Ok(stats.finalize()?)
}

/// The FID evaluator of a training run: the Inception network from the asset cache and the
/// statistics of the first `num` images of `reference`, read from `cache` (`.npz`) when that file
/// exists and written there after computing them otherwise.
pub fn fid_evaluator<B: Backend>(
    reference: &ImageDataset,
    num: usize,
    cache: Option<&Path>,
    device: &B::Device,
) -> Result<FidEvaluator<B>> {
    let inception = load_inception::<B>(device)?;
    let stats = match cache {
        Some(c) if c.exists() => RefStats::load_npz(c)?,
        _ => {
            let s = reference_stats(&inception, reference, num, 50, device)?;
            if let Some(c) = cache {
                s.save_npz(c)?;
            }
            s
        }
    };
    Ok(FidEvaluator::new(inception, stats)?)
}

/// Standard-normal latents for `n` consecutive seeds starting at `seed0` (one RNG per image, so a
/// sample depends only on its seed).
pub fn latents<B: Backend>(
    seed0: u64,
    n: usize,
    chw: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let per = chw.iter().product::<usize>();
    let mut v = Vec::with_capacity(n * per);
    for s in seed0..seed0 + n as u64 {
        let mut rng = ChaCha12Rng::seed_from_u64(s);
        v.extend((0..per).map(|_| rng.sample::<f32, _>(StandardNormal)));
    }
    Tensor::from_data(TensorData::new(v, [n, chw[0], chw[1], chw[2]]), device)
}

fn random_labels<B: Backend>(
    net: &EdmPrecond<B>,
    seed0: u64,
    n: usize,
    device: &B::Device,
) -> Option<Tensor<B, 2>> {
    let k = net.config.label_dim;
    (k > 0).then(|| {
        let mut v = vec![0f32; n * k];
        for (i, s) in (seed0..seed0 + n as u64).enumerate() {
            let mut rng = ChaCha12Rng::seed_from_u64(s ^ 0x1abe1);
            v[i * k + rng.random_range(0..k)] = 1.0;
        }
        Tensor::from_data(TensorData::new(v, [n, k]), device)
    })
}

/// How to draw images from a network.
#[derive(Clone, Copy, Debug)]
pub enum Sampler {
    /// GDD's one-step generator map (also the teacher "before distillation").
    OneStep(OneStep),
    /// EDM's deterministic Heun sampler with `n` steps (2n−1 evaluations; 18 → Heun-35).
    Heun(usize),
}

/// `n` images [-1, 1] for seeds `seed0..seed0+n`.
pub fn draw<B: Backend>(
    net: &EdmPrecond<B>,
    sampler: Sampler,
    seed0: u64,
    n: usize,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let c = &net.config;
    let z = latents::<B>(
        seed0,
        n,
        [c.img_channels, c.img_resolution, c.img_resolution],
        device,
    );
    let labels = random_labels(net, seed0, n, device);
    match sampler {
        Sampler::OneStep(one) => Ok(generate(net, z, labels, &one)),
        Sampler::Heun(steps) => {
            let cfg = SamplerConfig {
                num_steps: steps,
                ..SamplerConfig::default()
            };
            Ok(edm_core::sample(
                net,
                z,
                labels,
                Solver::Heun,
                &cfg,
                None,
                &mut |_, _| {},
            )?)
        }
    }
}

/// FID of `num` samples (seeds 0..num) against `reference`.
pub fn fid_of_net<B: Backend>(
    evaluator: &FidEvaluator<B>,
    net: &EdmPrecond<B>,
    sampler: Sampler,
    num: usize,
    batch: usize,
    device: &B::Device,
) -> Result<f64> {
    let mut err = None;
    let mut seed = 0u64;
    let fid = evaluator
        .fid_of_generator(num, batch, |count| {
            let x = match draw(net, sampler, seed, count, device) {
                Ok(x) => x,
                Err(e) => {
                    err = Some(e);
                    Tensor::zeros([count, 1, 1, 1], device)
                }
            };
            seed += count as u64;
            to_uint8_range(x.clamp(-1.0, 1.0))
        })
        .map_err(DistillError::from);
    if let Some(e) = err {
        return Err(e);
    }
    fid
}

/// Writes images [N, C, H, W] in [-1, 1] as a PNG grid (`cols` wide), atomically (temp + rename).
pub fn write_grid<B: Backend>(images: Tensor<B, 4>, cols: usize, path: &Path) -> Result<()> {
    let [n, c, h, w] = images.dims();
    let v: Vec<f32> = images.into_data().convert::<f32>().into_vec().expect("f32");
    let cols = cols.max(1).min(n.max(1));
    let rows = n.div_ceil(cols);
    let mut img = image::RgbImage::new((cols * w) as u32, (rows * h) as u32);
    for i in 0..n {
        let (gx, gy) = ((i % cols) * w, (i / cols) * h);
        for y in 0..h {
            for x in 0..w {
                let px = |ch: usize| {
                    let val = v[((i * c + ch.min(c - 1)) * h + y) * w + x];
                    ((val * 127.5 + 128.0).clamp(0.0, 255.0)) as u8
                };
                img.put_pixel(
                    (gx + x) as u32,
                    (gy + y) as u32,
                    image::Rgb([px(0), px(1), px(2)]),
                );
            }
        }
    }
    formats::write_atomic_with(path, |w| {
        img.write_to(w, image::ImageFormat::Png)
            .map_err(std::io::Error::other)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// The reference statistics through fid's `dataset_stats` equal the former in-crate loop
    /// (float images → `to_uint8_range` on the device → features → `FeatureStats`), bit for bit.
    #[test]
    fn reference_stats_equal_the_float_path() {
        let dev = Default::default();
        let inception = InceptionV3::<Flex>::random(0, &dev);
        let (n, res) = (3, 8);
        let images = (0..n * res * res)
            .map(|i| ((i * 37) % 256) as f32 / 127.5 - 1.0)
            .collect();
        let data = ImageDataset {
            images,
            labels: None,
            num_classes: 0,
            len: n,
            channels: 1,
            resolution: res,
        };
        let mut expected = fid::FeatureStats::new(2048);
        for (start, count) in [(0, 2), (2, 1)] {
            let x = to_uint8_range(dataset_batch::<Flex>(&data, start, count, &dev));
            let f = inception.features(x).unwrap();
            expected
                .update(&f.into_data().convert::<f32>().into_vec::<f32>().unwrap())
                .unwrap();
        }
        let got = reference_stats(&inception, &data, 10, 2, &dev).unwrap();
        assert_eq!(got, expected.finalize().unwrap());
    }
}
