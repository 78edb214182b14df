//! One evaluation of a folder of generated images with the metrics StyleGAN3 and EDM report: FID,
//! Inception Score and improved precision/recall, from one pass of TF-Inception over each image set.
//!
//! Which metrics run depends on what the caller has, because two of them need inputs the project's
//! Inception asset cannot give:
//! - FID against reference statistics (`.npz`), or against the real images' own statistics.
//! - Inception Score needs TF-Inception's 1008-way output layer, which the asset (stopping at pool3)
//!   lacks; the caller passes its weights ([`OutputLayer`]), else IS is not computed.
//! - Precision/recall (k = 3) uses VGG16 fc7 features in StyleGAN3. Those come from the caller as
//!   two feature matrices ([`PrFeatures::Supplied`]); without them the pool3 features of the real and
//!   generated images stand in, labelled [`PrFeatures::InceptionPool3`] in the report, since the two
//!   variants give different numbers.

use std::path::Path;

use burn::tensor::backend::Backend;
use serde::Serialize;

use crate::data::subset::edm_subset;
use crate::error::{FidError, Result};
use crate::evaluator::dataset_features;
use crate::inception::FEATURE_DIM;
use crate::inception_score::{inception_score, logits_from_pool3};
use crate::precision_recall::precision_recall;
use crate::{frechet_distance, Dataset, FeatureStats, InceptionV3, RefStats};

/// TF-Inception's output layer without bias, `[classes, 2048]` row-major (StyleGAN3's
/// `no_output_bias=True`).
#[derive(Clone, Debug)]
pub struct OutputLayer {
    pub classes: usize,
    pub weight: Vec<f32>,
}

impl OutputLayer {
    /// Reads the weight from a safetensors file: the tensor `output.weight`, or the file's only
    /// tensor; it must be 2-D with 2048 columns.
    pub fn load(path: &Path) -> Result<Self> {
        let tensors = formats::read_safetensors(path)?;
        let t = match tensors.get("output.weight") {
            Some(t) => t,
            None if tensors.len() == 1 => tensors.values().next().expect("one tensor"),
            None => {
                return Err(FidError::MissingTensor {
                    what: path.display().to_string(),
                    name: "output.weight (or a file with a single tensor)".into(),
                })
            }
        };
        if t.shape.len() != 2 || t.shape[1] != FEATURE_DIM || t.shape[0] == 0 {
            return Err(FidError::TensorShape {
                what: path.display().to_string(),
                name: "output.weight".into(),
                expected: vec![1008, FEATURE_DIM],
                found: t.shape.clone(),
            });
        }
        Ok(Self {
            classes: t.shape[0],
            weight: t.data.clone(),
        })
    }
}

/// Features for precision/recall.
#[derive(Clone, Debug)]
pub enum PrFeatures {
    /// The pool3 features of the real and generated images (needs the real images).
    InceptionPool3,
    /// Features the caller computed (StyleGAN3: VGG16 fc7), `[n, dim]` row-major each.
    Supplied {
        label: String,
        dim: usize,
        real: Vec<f32>,
        gen: Vec<f32>,
    },
}

impl PrFeatures {
    /// Reads two safetensors files with one 2-D tensor each (real, generated) of the same width.
    pub fn load(real: &Path, gen: &Path) -> Result<Self> {
        let one = |p: &Path| -> Result<(Vec<usize>, Vec<f32>)> {
            let t = formats::read_safetensors(p)?;
            if t.len() != 1 {
                return Err(FidError::TensorCount {
                    what: p.display().to_string(),
                    expected: 1,
                    found: t.len(),
                });
            }
            let (_, t) = t.into_iter().next().expect("one tensor");
            if t.shape.len() != 2 || t.shape[1] == 0 {
                return Err(FidError::Structure {
                    what: p.display().to_string(),
                    reason: format!("features must be [n, dim], got {:?}", t.shape),
                });
            }
            Ok((t.shape, t.data))
        };
        let (rs, real_v) = one(real)?;
        let (gs, gen_v) = one(gen)?;
        if rs[1] != gs[1] {
            return Err(FidError::Structure {
                what: gen.display().to_string(),
                reason: format!(
                    "{} features per image, the real file {} has {}",
                    gs[1],
                    real.display(),
                    rs[1]
                ),
            });
        }
        Ok(Self::Supplied {
            label: format!("supplied ({}-dimensional)", rs[1]),
            dim: rs[1],
            real: real_v,
            gen: gen_v,
        })
    }
}

/// What to compute and how.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Generated images to use; more in the folder: EDM's seeded subset, fewer: an error.
    pub num: usize,
    /// Seed of that subset (EDM's `--seed`).
    pub seed: u64,
    /// Real images to use (the first ones), at most.
    pub real_num: usize,
    /// Images per network batch.
    pub batch: usize,
    /// Neighbourhood size of precision/recall (StyleGAN3: 3).
    pub pr_k: usize,
    /// Splits of the Inception Score (StyleGAN3: 10).
    pub is_splits: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            num: 50_000,
            seed: 0,
            real_num: 50_000,
            batch: 64,
            pr_k: 3,
            is_splits: 10,
        }
    }
}

/// Inception Score: the mean over splits and their standard deviation.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IsReport {
    pub mean: f64,
    pub std: f64,
    pub splits: usize,
}

/// Precision and recall, with the features and counts they came from.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PrReport {
    pub precision: f64,
    pub recall: f64,
    pub k: usize,
    pub features: String,
    pub num_real: usize,
    pub num_gen: usize,
}

/// The metrics that could be computed; `None` where an input was missing (`notes` says which).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvalReport {
    pub num_gen: usize,
    pub num_real: Option<usize>,
    pub fid: Option<f64>,
    /// "reference statistics" or "real images".
    pub fid_against: Option<String>,
    pub inception_score: Option<IsReport>,
    pub precision_recall: Option<PrReport>,
    pub notes: Vec<String>,
}

/// pool3 features of `num` images of `ds` (all rows kept) and their statistics.
fn features<B: Backend>(
    net: &InceptionV3<B>,
    ds: &mut Dataset,
    num: usize,
    batch: usize,
    device: &B::Device,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<f32>, FeatureStats)> {
    let mut rows = Vec::new();
    rows.try_reserve_exact(num * FEATURE_DIM).map_err(|_| {
        FidError::Stats(format!(
            "{num} x {FEATURE_DIM} features do not fit in memory"
        ))
    })?;
    let mut stats = FeatureStats::new(FEATURE_DIM);
    dataset_features(net, ds, num, batch, device, |f| {
        stats.update(f)?;
        rows.extend_from_slice(f);
        progress(f.len() / FEATURE_DIM);
        Ok(())
    })?;
    Ok((rows, stats))
}

/// Evaluates `gen` (and `real`, when given) in one pass each. `progress(images)` is called after
/// each network batch of either set.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: Backend>(
    net: &InceptionV3<B>,
    gen: &mut Dataset,
    real: Option<&mut Dataset>,
    reference: Option<&RefStats>,
    output_layer: Option<&OutputLayer>,
    pr: Option<&PrFeatures>,
    opts: &EvalOptions,
    device: &B::Device,
    progress: &mut dyn FnMut(usize),
) -> Result<EvalReport> {
    if opts.batch == 0 {
        return Err(FidError::Stats(
            "--batch is 0: the batch size must be at least 1".into(),
        ));
    }
    if gen.len() < opts.num {
        return Err(FidError::TooFewImages {
            required: opts.num,
            found: gen.len(),
        });
    }
    if real.is_none() && reference.is_none() && output_layer.is_none() && pr.is_none() {
        return Err(FidError::Stats(
            "nothing to compute: give reference statistics or real images (FID, precision/recall), \
             an output layer (Inception Score) or supplied features (precision/recall)"
                .into(),
        ));
    }
    let mut notes = Vec::new();
    gen.restrict(&edm_subset(gen.len(), opts.num, opts.seed))?;
    let (gen_rows, gen_stats) = features(net, gen, opts.num, opts.batch, device, progress)?;
    let real_feats = match real {
        Some(ds) => {
            let n = opts.real_num.min(ds.len());
            if n == 0 {
                return Err(FidError::TooFewImages {
                    required: 1,
                    found: 0,
                });
            }
            Some(features(net, ds, n, opts.batch, device, progress)?)
        }
        None => None,
    };

    let (fid, fid_against) = match (reference, &real_feats) {
        (Some(r), _) => (
            Some(frechet_distance(&gen_stats.finalize()?, r)?),
            Some("reference statistics".to_string()),
        ),
        (None, Some((_, s))) => (
            Some(frechet_distance(&gen_stats.finalize()?, &s.finalize()?)?),
            Some("real images".to_string()),
        ),
        (None, None) => {
            notes.push("FID: no reference statistics and no real images".into());
            (None, None)
        }
    };

    let inception_score = match output_layer {
        Some(l) => {
            let logits = logits_from_pool3(&gen_rows, &l.weight, FEATURE_DIM)?;
            let (mean, std) = inception_score(&logits, l.classes, opts.is_splits)?;
            Some(IsReport {
                mean,
                std,
                splits: opts.is_splits,
            })
        }
        None => {
            notes.push(
                "Inception Score: needs TF-Inception's output layer (--output-layer), which the \
                 pool3 network does not have"
                    .into(),
            );
            None
        }
    };

    let precision_recall = match (pr, &real_feats) {
        (
            Some(PrFeatures::Supplied {
                label,
                dim,
                real,
                gen,
            }),
            _,
        ) => {
            let (p, r) = precision_recall(real, gen, *dim, opts.pr_k)?;
            Some(PrReport {
                precision: p,
                recall: r,
                k: opts.pr_k,
                features: label.clone(),
                num_real: real.len() / dim,
                num_gen: gen.len() / dim,
            })
        }
        (Some(PrFeatures::InceptionPool3) | None, Some((real_rows, _))) => {
            let (p, r) = precision_recall(real_rows, &gen_rows, FEATURE_DIM, opts.pr_k)?;
            if pr.is_none() {
                notes.push(
                    "precision/recall: on Inception pool3 features (StyleGAN3 uses VGG16 fc7; \
                     supply those to compare with published numbers)"
                        .into(),
                );
            }
            Some(PrReport {
                precision: p,
                recall: r,
                k: opts.pr_k,
                features: "inception-pool3".into(),
                num_real: real_rows.len() / FEATURE_DIM,
                num_gen: opts.num,
            })
        }
        (Some(PrFeatures::InceptionPool3) | None, None) => {
            notes.push("precision/recall: needs the real images or supplied features".into());
            None
        }
    };

    Ok(EvalReport {
        num_gen: opts.num,
        num_real: real_feats.as_ref().map(|(r, _)| r.len() / FEATURE_DIM),
        fid,
        fid_against,
        inception_score,
        precision_recall,
        notes,
    })
}
