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

/// What a cache of reference statistics was computed from: how many images, their shape and a
/// fingerprint of their pixels. Stored beside the cache (`NAME.key.json` for `NAME.npz`), so a
/// cache made from 100 images, another resolution or another dataset is never taken for the
/// statistics of this one.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RefStatsKey {
    pub num_images: usize,
    pub channels: usize,
    pub resolution: usize,
    /// FNV-1a 64 of the images' float32 values (little-endian), as 16 hex digits.
    pub pixels_fnv1a64: String,
}

impl RefStatsKey {
    /// The key of the first `num` images of `data` (the images [`reference_stats`] uses).
    pub fn of(data: &ImageDataset, num: usize) -> Self {
        let num = num.min(data.len);
        let per = data.channels * data.resolution * data.resolution;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for v in &data.images[..num * per] {
            for b in v.to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        RefStatsKey {
            num_images: num,
            channels: data.channels,
            resolution: data.resolution,
            pixels_fnv1a64: format!("{h:016x}"),
        }
    }

    /// Where the key of `cache` lives: `NAME.key.json` beside `NAME.npz`.
    pub fn path(cache: &Path) -> std::path::PathBuf {
        cache.with_extension("key.json")
    }

    /// Whether `cache` exists and its key file says it was made from exactly `self` (a cache with
    /// no key, or an unreadable one, does not match).
    pub fn matches(&self, cache: &Path) -> bool {
        cache.is_file()
            && std::fs::read(Self::path(cache))
                .ok()
                .and_then(|b| serde_json::from_slice::<RefStatsKey>(&b).ok())
                .is_some_and(|k| k == *self)
    }
}

/// The FID evaluator of a training run: the Inception network from the asset cache and the
/// statistics of the first `num` images of `reference`, read from `cache` (`.npz`) when its key
/// ([`RefStatsKey`]) says it was made from these images, computed (and written to `cache` with its
/// key) otherwise.
pub fn fid_evaluator<B: Backend>(
    reference: &ImageDataset,
    num: usize,
    cache: Option<&Path>,
    device: &B::Device,
) -> Result<FidEvaluator<B>> {
    let inception = load_inception::<B>(device)?;
    let stats = cached_reference_stats(&inception, reference, num, cache, device)?;
    Ok(FidEvaluator::new(inception, stats)?)
}

/// [`reference_stats`] through a keyed cache (see [`fid_evaluator`]).
pub fn cached_reference_stats<B: Backend>(
    inception: &InceptionV3<B>,
    reference: &ImageDataset,
    num: usize,
    cache: Option<&Path>,
    device: &B::Device,
) -> Result<RefStats> {
    let key = RefStatsKey::of(reference, num);
    if let Some(c) = cache.filter(|c| key.matches(c)) {
        return Ok(RefStats::load_npz(c)?);
    }
    let s = reference_stats(inception, reference, num, 50, device)?;
    if let Some(c) = cache {
        s.save_npz(c)?;
        let bytes = serde_json::to_vec_pretty(&key).expect("key serialises");
        formats::write_atomic(&RefStatsKey::path(c), &bytes)?;
    }
    Ok(s)
}

/// Standard-normal latents for `n` consecutive seeds starting at `seed0` (one RNG per image, so a
/// sample depends only on its seed).
pub fn latents<B: Backend>(
    seed0: u64,
    n: usize,
    chw: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let seeds: Vec<u64> = (seed0..seed0 + n as u64).collect();
    latents_of_seeds(&seeds, chw, device)
}

/// Standard-normal latents, image i from `ChaCha12Rng(seeds[i])` alone.
pub fn latents_of_seeds<B: Backend>(
    seeds: &[u64],
    chw: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let per = chw.iter().product::<usize>();
    let mut v = Vec::with_capacity(seeds.len() * per);
    for &s in seeds {
        let mut rng = ChaCha12Rng::seed_from_u64(s);
        v.extend((0..per).map(|_| rng.sample::<f32, _>(StandardNormal)));
    }
    Tensor::from_data(
        TensorData::new(v, [seeds.len(), chw[0], chw[1], chw[2]]),
        device,
    )
}

/// One-hot labels of a conditional network: `class` for every image, or image i's class drawn
/// from `ChaCha12Rng(seeds[i] ^ 0x1abe1)`; `None` for an unconditional network.
fn labels_of_seeds<B: Backend>(
    net: &EdmPrecond<B>,
    seeds: &[u64],
    class: Option<usize>,
    device: &B::Device,
) -> Result<Option<Tensor<B, 2>>> {
    let k = net.config.label_dim;
    if let Some(c) = class.filter(|&c| c >= k) {
        return Err(DistillError::Config(format!(
            "class {c} but the network has label_dim {k}"
        )));
    }
    Ok((k > 0).then(|| {
        let mut v = vec![0f32; seeds.len() * k];
        for (i, &s) in seeds.iter().enumerate() {
            let c =
                class.unwrap_or_else(|| ChaCha12Rng::seed_from_u64(s ^ 0x1abe1).random_range(0..k));
            v[i * k + c] = 1.0;
        }
        Tensor::from_data(TensorData::new(v, [seeds.len(), k]), device)
    }))
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
    let seeds: Vec<u64> = (seed0..seed0 + n as u64).collect();
    draw_seeds(net, sampler, &seeds, None, device)
}

/// Images [-1, 1] for `seeds` (`gdd sample`): image i depends only on `seeds[i]` (and `class`),
/// so the same seed gives the same image in any batch.
pub fn draw_seeds<B: Backend>(
    net: &EdmPrecond<B>,
    sampler: Sampler,
    seeds: &[u64],
    class: Option<usize>,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let c = &net.config;
    let z = latents_of_seeds::<B>(
        seeds,
        [c.img_channels, c.img_resolution, c.img_resolution],
        device,
    );
    let labels = labels_of_seeds(net, seeds, class, device)?;
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

/// What [`sample_to_dir`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleReport {
    pub sampled: usize,
    /// Seeds whose PNG existed (kept, not sampled again).
    pub skipped: usize,
}

/// `gdd sample --outdir`: one PNG per seed, named as EDM's generate.py names them
/// ([`edm_core::image_path`]; `subdirs`: a folder per thousand seeds), `batch` images at a time, each
/// batch written before the next is drawn. Seeds whose PNG exists are skipped, so a stopped run
/// continues; an image depends only on its seed, so the batch size changes no pixel.
/// `progress(images_done, images_to_do)` after every batch.
#[allow(clippy::too_many_arguments)]
pub fn sample_to_dir<B: Backend>(
    net: &EdmPrecond<B>,
    sampler: Sampler,
    seeds: &[u64],
    class: Option<usize>,
    batch: usize,
    outdir: &Path,
    subdirs: bool,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SampleReport> {
    let todo: Vec<u64> = seeds
        .iter()
        .copied()
        .filter(|&s| !edm_core::image_path(outdir, s, subdirs).is_file())
        .collect();
    let (ch, res) = (net.config.img_channels, net.config.img_resolution);
    let per = ch * res * res;
    if batch == 0 {
        return Err(DistillError::Config(
            "--batch is 0: the batch size must be at least 1".into(),
        ));
    }
    let mut done = 0;
    for chunk in todo.chunks(batch) {
        let x = draw_seeds(net, sampler, chunk, class, device)?;
        let v: Vec<f32> = x.into_data().convert::<f32>().into_vec().expect("f32");
        for (i, &s) in chunk.iter().enumerate() {
            let path = edm_core::image_path(outdir, s, subdirs);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| DistillError::io(parent, e))?;
            }
            edm_core::write_png(&path, &v[i * per..(i + 1) * per], ch, res)?;
        }
        done += chunk.len();
        progress(done, todo.len());
    }
    Ok(SampleReport {
        sampled: todo.len(),
        skipped: seeds.len() - todo.len(),
    })
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

/// A PNG grid as [`write_grid`] wrote it: the encoded file and its geometry, so a caller that also
/// logs the image (TensorBoard) needs neither to read the file back nor to decode it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GridPng {
    /// The PNG file's bytes.
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Always 3 (RGB; grayscale images are repeated to three channels).
    pub channels: u32,
}

/// Writes images [N, C, H, W] in [-1, 1] as a PNG grid (`cols` wide), atomically (temp + rename),
/// and returns what it wrote.
pub fn write_grid<B: Backend>(images: Tensor<B, 4>, cols: usize, path: &Path) -> Result<GridPng> {
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
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| DistillError::io(path, std::io::Error::other(e)))?;
    let png = png.into_inner();
    formats::write_atomic(path, &png)?;
    Ok(GridPng {
        png,
        width: img.width(),
        height: img.height(),
        channels: 3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// `write_grid` returns the bytes it wrote (the TensorBoard copy needs no re-read) and their
    /// true geometry: 5 grayscale 3x2 images, 2 columns -> 3 rows of a 4x9 RGB image.
    #[test]
    fn write_grid_returns_the_png_it_wrote() {
        let dev = Default::default();
        let v: Vec<f32> = (0..5 * 2 * 3).map(|i| i as f32 / 15.0 - 1.0).collect();
        let x = Tensor::<Flex, 4>::from_data(TensorData::new(v, [5, 1, 2, 3]), &dev);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.png");
        let g = write_grid(x, 2, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), g.png);
        assert_eq!((g.width, g.height, g.channels), (6, 6, 3));
        let img = image::load_from_memory(&g.png).unwrap();
        assert_eq!((img.width(), img.height()), (6, 6));
        assert_eq!(img.color().channel_count() as u32, g.channels);
        // First pixel: -1 -> 0 (the value mapping is unchanged).
        assert_eq!(img.to_rgb8().get_pixel(0, 0).0, [0, 0, 0]);
    }

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

    /// `gdd sample --outdir`: EDM's names in per-thousand folders, pixels equal to one batch of
    /// all seeds (the image of a seed does not depend on its batch), the old consecutive-seed
    /// `draw` unchanged, existing PNGs skipped.
    #[test]
    fn sample_to_dir_writes_per_seed_pngs_and_resumes() {
        let dev = Default::default();
        let c = edm_core::EdmConfig::tiny(edm_core::ModelType::SongUNet, 8, 1, 3);
        let net = EdmPrecond::<Flex>::init(&c, 2, &dev).unwrap();
        let one = Sampler::OneStep(OneStep::default());
        let seeds = [5u64, 6, 1003];
        let all = draw_seeds(&net, one, &seeds, None, &dev).unwrap();
        let consecutive = draw(&net, one, 5, 2, &dev).unwrap();
        let all_v: Vec<f32> = all.into_data().into_vec().unwrap();
        let cons_v: Vec<f32> = consecutive.into_data().into_vec().unwrap();
        // Batches of 3 and 2 order the GEMM sums differently: equal to float rounding.
        let worst = all_v[..2 * 64]
            .iter()
            .zip(&cons_v)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(cons_v.len(), 2 * 64);
        assert!(
            worst <= 1e-6,
            "one image differs by {worst} between batch sizes"
        );
        let tmp = tempfile::tempdir().unwrap();
        let sample = || {
            sample_to_dir(
                &net,
                one,
                &seeds,
                None,
                2,
                tmp.path(),
                true,
                &dev,
                &mut |_, _| {},
            )
            .unwrap()
        };
        let r = sample();
        assert_eq!((r.sampled, r.skipped), (3, 0));
        for (i, s) in seeds.iter().enumerate() {
            let img = image::open(edm_core::image_path(tmp.path(), *s, true))
                .unwrap()
                .to_luma8();
            let want: Vec<u8> = all_v[i * 64..(i + 1) * 64]
                .iter()
                .map(|&v| (v * 127.5 + 128.0).clamp(0.0, 255.0) as u8)
                .collect();
            // One LSB: the batch of 2 may round a value across a pixel edge (above).
            let got = img.into_raw();
            assert_eq!(got.len(), want.len());
            assert!(
                got.iter().zip(&want).all(|(a, b)| a.abs_diff(*b) <= 1),
                "seed {s}: {got:?} vs {want:?}"
            );
        }
        assert!(tmp.path().join("001000/001003.png").is_file());
        std::fs::remove_file(tmp.path().join("000000/000006.png")).unwrap();
        let r = sample();
        assert_eq!((r.sampled, r.skipped), (1, 2));
        // A fixed class for a conditional network: a class beyond label_dim is refused.
        assert!(draw_seeds(&net, one, &seeds, Some(3), &dev).is_err());
    }

    /// A reference cache is reused only for the images it was made from: another image count (or
    /// other pixels) recomputes and rewrites it with its key; the same key reads the file back.
    #[test]
    fn reference_cache_is_keyed_by_what_made_it() {
        let dev = Default::default();
        let inception = InceptionV3::<Flex>::random(0, &dev);
        let (n, res) = (3, 8);
        let data = ImageDataset {
            images: (0..n * res * res)
                .map(|i| ((i * 53) % 256) as f32 / 127.5 - 1.0)
                .collect(),
            labels: None,
            num_classes: 0,
            len: n,
            channels: 1,
            resolution: res,
        };
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("ref_stats.npz");
        let three = cached_reference_stats(&inception, &data, 3, Some(&cache), &dev).unwrap();
        let key3 = RefStatsKey::of(&data, 3);
        assert!(key3.matches(&cache));
        // Asking for 2 images must not reuse the 3-image cache.
        let two = cached_reference_stats(&inception, &data, 2, Some(&cache), &dev).unwrap();
        assert_ne!(two, three);
        assert_eq!(
            two,
            reference_stats(&inception, &data, 2, 50, &dev).unwrap()
        );
        assert!(RefStatsKey::of(&data, 2).matches(&cache) && !key3.matches(&cache));
        // Other pixels, same count and shape: another key.
        let mut other = data.clone();
        other.images[0] += 0.5;
        assert!(!RefStatsKey::of(&other, 2).matches(&cache));
        // The same key reads the file (here overwritten with the 3-image statistics).
        three.save_npz(&cache).unwrap();
        let read = cached_reference_stats(&inception, &data, 2, Some(&cache), &dev).unwrap();
        assert_eq!(read, three);
        // A cache without a key file is not trusted.
        std::fs::remove_file(RefStatsKey::path(&cache)).unwrap();
        assert!(!RefStatsKey::of(&data, 2).matches(&cache));
    }
}
