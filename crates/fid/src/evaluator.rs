//! The FID pipeline end to end: images (tensors or a [`Dataset`]) → pool3 features → statistics →
//! Fréchet distance against reference statistics.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::data::{Dataset, ImageBatch};
use crate::error::{FidError, Result};
use crate::frechet::PreparedStats;
use crate::inception::{InceptionV3, FEATURE_DIM};
use crate::stats::{FeatureStats, RefStats};

/// Inception network plus reference statistics: what a training loop needs to report FID.
pub struct FidEvaluator<B: Backend> {
    pub inception: InceptionV3<B>,
    /// The reference statistics with `√sigma` precomputed.
    pub reference: PreparedStats,
}

impl<B: Backend> FidEvaluator<B> {
    /// Precomputes `√sigma` of the reference (one 2048² eigen-decomposition); fails on malformed
    /// statistics.
    pub fn new(inception: InceptionV3<B>, reference: RefStats) -> Result<Self> {
        Ok(Self {
            inception,
            reference: PreparedStats::new(&reference)?,
        })
    }

    /// pool3 features of uint8-range images `[N, 1|3, H, W]` (values 0..=255, float dtype).
    pub fn features(&self, images: &Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        self.inception.features(images.clone())
    }

    /// Adds the features of `images` to running statistics.
    pub fn accumulate(&self, images: &Tensor<B, 4>, stats: &mut FeatureStats) -> Result<()> {
        stats.update(&tensor_to_vec(self.features(images)?)?)
    }

    /// FID of finished statistics against the reference.
    pub fn fid_of_stats(&self, stats: &RefStats) -> Result<f64> {
        self.reference.distance(stats)
    }

    /// FID of `num_images` images drawn from a generator, `batch_size` at a time. `generate(count)`
    /// must return `count` uint8-range images `[count, C, H, W]` (see [`to_uint8_range`]).
    pub fn fid_of_generator(
        &self,
        num_images: usize,
        batch_size: usize,
        mut generate: impl FnMut(usize) -> Tensor<B, 4>,
    ) -> Result<f64> {
        let mut stats = FeatureStats::new(FEATURE_DIM);
        let mut done = 0;
        while done < num_images {
            let count = batch_size.max(1).min(num_images - done);
            let images = generate(count);
            let got = images.dims()[0];
            if got != count {
                return Err(FidError::Stats(format!(
                    "generator returned {got} images, {count} were asked for"
                )));
            }
            self.accumulate(&images, &mut stats)?;
            done += count;
        }
        self.fid_of_stats(&stats.finalize()?)
    }
}

/// EDM's conversion of generator output in [-1, 1] to uint8 values: `(x·127.5 + 128).clip(0, 255)`
/// truncated to an integer (still a float tensor, ready for [`FidEvaluator::features`]).
pub fn to_uint8_range<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    (x * 127.5 + 128.0).clamp(0.0, 255.0).floor()
}

/// A uint8 batch as a float tensor on `device`.
pub fn batch_to_tensor<B: Backend>(batch: &ImageBatch, device: &B::Device) -> Tensor<B, 4> {
    let data: Vec<f32> = batch.data.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(data, batch.shape), device)
}

/// Reads a float tensor back as `Vec<f32>`.
pub fn tensor_to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| FidError::Stats(format!("reading features back: {e:?}")))
}

/// Runs the network over the first `num` images of a dataset, `batch_size` at a time, calling
/// `on_features(rows)` with each batch's `[n, 2048]` features (row-major) in dataset order.
pub fn dataset_features<B: Backend>(
    inception: &InceptionV3<B>,
    dataset: &mut Dataset,
    num: usize,
    batch_size: usize,
    device: &B::Device,
    mut on_features: impl FnMut(&[f32]) -> Result<()>,
) -> Result<()> {
    let num = num.min(dataset.len());
    let mut start = 0;
    while start < num {
        let count = batch_size.max(1).min(num - start);
        let batch = dataset.read(start, count)?;
        let feats = inception.features(batch_to_tensor(&batch, device))?;
        on_features(&tensor_to_vec(feats)?)?;
        start += count;
    }
    Ok(())
}

/// Statistics of the first `num` images of a dataset.
pub fn dataset_stats<B: Backend>(
    inception: &InceptionV3<B>,
    dataset: &mut Dataset,
    num: usize,
    batch_size: usize,
    device: &B::Device,
    mut progress: impl FnMut(usize),
) -> Result<FeatureStats> {
    let mut stats = FeatureStats::new(FEATURE_DIM);
    dataset_features(inception, dataset, num, batch_size, device, |rows| {
        stats.update(rows)?;
        progress(rows.len() / FEATURE_DIM);
        Ok(())
    })?;
    Ok(stats)
}
