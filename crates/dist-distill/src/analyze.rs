//! The "innate one-step" analysis (paper §3): how much a teacher's internal activations at σ = 80
//! (the one-step generator's only noise level) resemble those at smaller σ. For each U-Net block,
//! the output is recorded for `x_σ = x₀ + σ·z` (same `x₀`, `z`) at several σ, and the mean
//! per-sample cosine similarity with the σ = 80 activation is reported as a table (Markdown and
//! JSON) and a plot (PNG). High similarity across σ in most blocks is what makes freezing them
//! (GDD-I) possible.
//!
//! `x₀` is either real images ([`AnalysisInput::Dataset`], the paper's setting: what the teacher
//! sees when it denoises data) or zeros ([`AnalysisInput::PureNoise`]: `x_σ = σ·z`, which at small σ
//! is nothing the teacher was trained on, so the low-σ columns then describe an off-distribution
//! input). [`innate_one_step_analysis`] runs either from an [`AnalysisConfig`].

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use edm_core::{EdmConfig, EdmPrecond, SongUNet, UNet};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DistillError, Result};

/// EDM's `ncsnpp` CIFAR-10 network exactly as GDD's `train.py --arch=ncsnpp` builds it
/// (SongUNet, Fourier embedding, residual encoder, [1,3,3,1] filter, 128 channels, ×[2,2,2],
/// 4 blocks, attention at 16, 32×32×3, unconditional, dropout 0).
pub fn ncsnpp_cifar10_config() -> EdmConfig {
    EdmConfig::gdd_ncsnpp_cifar10()
}

/// SongUNet's forward pass (edm-core's [`SongUNet::forward_observed`], unconditional) with every
/// U-Net block's output collected, named `enc.{res}x{res}_blockN` / `dec...`, beside the output.
pub fn song_unet_block_outputs<B: Backend>(
    net: &SongUNet<B>,
    x: Tensor<B, 4>,
    noise_labels: Tensor<B, 1>,
) -> (Vec<(String, Tensor<B, 4>)>, Tensor<B, 4>) {
    let mut acts = Vec::new();
    let out = net.forward_observed(x, noise_labels, None, None, &mut |side, name, t| {
        acts.push((format!("{side}.{name}"), t.clone()))
    });
    (acts, out)
}

/// Result of the analysis: `similarity[block][k]` = mean cosine similarity between the block's
/// output at `sigmas[0]` (= 80) and at `sigmas[k]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InnateReport {
    pub sigmas: Vec<f64>,
    pub blocks: Vec<String>,
    pub similarity: Vec<Vec<f64>>,
    pub num_samples: usize,
    /// What `x₀` was ([`AnalysisInput::describe`]); empty in reports written before it existed.
    #[serde(default)]
    pub input: String,
}

/// Noise levels analysed (σ_max first).
pub const ANALYSIS_SIGMAS: [f64; 9] = [80.0, 40.0, 20.0, 10.0, 5.0, 2.0, 1.0, 0.5, 0.1];

/// Where the clean images `x₀` of `x_σ = x₀ + σ·n` come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisInput {
    /// `x₀ = 0`: the teacher sees pure noise `σ·n` at every σ. At σ = 80 this is what the one-step
    /// generator sees, but at small σ it is far from any input the teacher was trained on.
    PureNoise,
    /// The first images of a dataset (anything [`crate::data::load_training`] reads: EDM dataset
    /// zip, image folder, CIFAR-10 tarball/folder, idx file, Fashion-MNIST folder), in [−1, 1] at the
    /// teacher's resolution. This is the paper's setting: the teacher's activations on real images
    /// noised to each σ.
    Dataset { path: PathBuf },
}

impl AnalysisInput {
    /// One line for reports.
    pub fn describe(&self) -> String {
        match self {
            Self::PureNoise => "pure noise (x0 = 0)".into(),
            Self::Dataset { path } => format!("real images from {}", path.display()),
        }
    }
}

/// How to run [`innate_one_step_analysis`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalysisConfig {
    pub input: AnalysisInput,
    /// Images analysed (a dataset with fewer images uses all of them).
    pub num: usize,
    /// Noise `n` of image `i` is drawn from seed `seed + i` (as `gdd sample` numbers its latents),
    /// the same `n` at every σ.
    pub seed: u64,
    /// Noise levels; activations are compared with those at `sigmas[0]` (80: the generator's).
    pub sigmas: Vec<f64>,
    /// Images per forward pass (bounds memory: two σ's activations of one batch are held at once).
    pub batch: usize,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            input: AnalysisInput::PureNoise,
            num: 16,
            seed: 0,
            sigmas: ANALYSIS_SIGMAS.to_vec(),
            batch: 16,
        }
    }
}

/// The innate one-step analysis on `net` (a SongUNet teacher) as `cfg` says: for each batch of
/// images `x₀` (real, or zeros) and noise `n`, the teacher's block outputs on
/// `c_in(σ)·(x₀ + σ·n)` at every σ of `cfg.sigmas`, compared (cosine, per sample) with those at
/// `cfg.sigmas[0]`; the report holds the mean over samples. Class labels are not fed (no label
/// embedding is added), so conditional teachers are analysed as their unconditional branch would be.
pub fn innate_one_step_analysis<B: Backend>(
    net: &EdmPrecond<B>,
    cfg: &AnalysisConfig,
    device: &B::Device,
) -> Result<InnateReport> {
    if cfg.num == 0 || cfg.batch == 0 {
        return Err(DistillError::Config(
            "the analysis needs num > 0 images and batch > 0".into(),
        ));
    }
    if cfg.sigmas.is_empty() || cfg.sigmas.iter().any(|s| !s.is_finite() || *s < 0.0) {
        return Err(DistillError::Config(format!(
            "analysis sigmas must be finite and >= 0, the first being the reference; got {:?}",
            cfg.sigmas
        )));
    }
    let c = &net.config;
    let images = match &cfg.input {
        AnalysisInput::PureNoise => None,
        AnalysisInput::Dataset { path } => {
            let ds = crate::data::load_training(
                path,
                &crate::data::DataOptions {
                    resolution: c.img_resolution,
                    cond: false,
                    xflip: false,
                    limit: Some(cfg.num),
                },
            )?;
            if ds.channels != c.img_channels {
                return Err(DistillError::Dataset {
                    path: path.clone(),
                    message: format!(
                        "images have {} channels, the teacher wants {}",
                        ds.channels, c.img_channels
                    ),
                });
            }
            Some(ds)
        }
    };
    let num = images.as_ref().map_or(cfg.num, |d| d.len.min(cfg.num));
    let x0 = images.as_ref().map(|d| {
        let per = d.channels * d.resolution * d.resolution;
        &d.images[..num * per]
    });
    let mut report = block_similarity(net, x0, num, cfg.seed, &cfg.sigmas, cfg.batch, device)?;
    report.input = cfg.input.describe();
    Ok(report)
}

/// The core of the analysis: `x0` holds `num` images (row-major NCHW at the teacher's shape) or is
/// `None` for zeros; similarity sums are accumulated batch by batch.
fn block_similarity<B: Backend>(
    net: &EdmPrecond<B>,
    x0: Option<&[f32]>,
    num: usize,
    seed: u64,
    sigmas: &[f64],
    batch: usize,
    device: &B::Device,
) -> Result<InnateReport> {
    let UNet::Song(unet) = &net.model else {
        return Err(DistillError::Config(
            "the innate one-step analysis is implemented for SongUNet teachers".into(),
        ));
    };
    let c = &net.config;
    let chw = [c.img_channels, c.img_resolution, c.img_resolution];
    let per: usize = chw.iter().product();
    let mut blocks: Vec<String> = Vec::new();
    let mut sums: Vec<Vec<f64>> = Vec::new();
    for start in (0..num).step_by(batch) {
        let m = batch.min(num - start);
        let z = crate::eval::latents::<B>(seed + start as u64, m, chw, device);
        let x0 = match x0 {
            Some(v) => Tensor::<B, 4>::from_data(
                TensorData::new(
                    v[start * per..(start + m) * per].to_vec(),
                    [m, chw[0], chw[1], chw[2]],
                ),
                device,
            ),
            None => z.zeros_like(),
        };
        let acts_at = |s: f64| -> Vec<(String, Tensor<B, 2>)> {
            let sig = Tensor::<B, 1>::full([m], s, device);
            let k = net.coefficients(sig);
            let x = x0.clone() + z.clone().mul_scalar(s);
            let (acts, _) = song_unet_block_outputs(unet, k.c_in * x, k.c_noise);
            acts.into_iter()
                .map(|(n, a)| (n, a.reshape([m as i32, -1])))
                .collect()
        };
        let reference = acts_at(sigmas[0]);
        if blocks.is_empty() {
            blocks = reference.iter().map(|(n, _)| n.clone()).collect();
            sums = vec![vec![0.0; sigmas.len()]; blocks.len()];
        }
        let norms: Vec<Tensor<B, 2>> = reference
            .iter()
            .map(|(_, a)| a.clone().square().sum_dim(1).sqrt())
            .collect();
        for (k, &s) in sigmas.iter().enumerate() {
            // σ_0 itself is compared with its own activations (1 up to rounding).
            let acts = if k == 0 {
                reference.clone()
            } else {
                acts_at(s)
            };
            for (b, (_, a)) in acts.into_iter().enumerate() {
                let a0 = &reference[b].1;
                let dot = (a0.clone() * a.clone()).sum_dim(1);
                let na = a.square().sum_dim(1).sqrt();
                let cos = dot / (norms[b].clone() * na).clamp_min(1e-12);
                let v: Vec<f32> = cos.into_data().convert::<f32>().into_vec().expect("f32");
                sums[b][k] += v.iter().map(|&x| x as f64).sum::<f64>();
            }
        }
    }
    Ok(InnateReport {
        sigmas: sigmas.to_vec(),
        blocks,
        similarity: sums
            .into_iter()
            .map(|row| row.into_iter().map(|v| v / num as f64).collect())
            .collect(),
        num_samples: num,
        input: String::new(),
    })
}

/// Runs the analysis on `num` images `x₀` = `x0` (e.g. real images, already a tensor) or, if
/// `None`, zeros, with noise from `seed` and the σ's of [`ANALYSIS_SIGMAS`].
pub fn innate_one_step_with<B: Backend>(
    net: &EdmPrecond<B>,
    x0: Option<Tensor<B, 4>>,
    num: usize,
    seed: u64,
    device: &B::Device,
) -> Result<InnateReport> {
    let values: Option<Vec<f32>> = x0.map(|t| {
        t.into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 image tensor")
    });
    let per = net.config.img_channels * net.config.img_resolution * net.config.img_resolution;
    if let Some(v) = &values {
        if v.len() != num * per {
            return Err(DistillError::Config(format!(
                "x0 holds {} values, {num} images of the teacher's shape need {}",
                v.len(),
                num * per
            )));
        }
    }
    let mut r = block_similarity(
        net,
        values.as_deref(),
        num,
        seed,
        &ANALYSIS_SIGMAS,
        num.max(1),
        device,
    )?;
    r.input = if values.is_some() {
        "given images".into()
    } else {
        AnalysisInput::PureNoise.describe()
    };
    Ok(r)
}

/// [`innate_one_step_with`] with `x₀ = 0` (pure noise).
pub fn innate_one_step<B: Backend>(
    net: &EdmPrecond<B>,
    num: usize,
    seed: u64,
    device: &B::Device,
) -> Result<InnateReport> {
    innate_one_step_with(net, None, num, seed, device)
}

/// Registers the embedded plot font ([`formats::font`]) for plot text (plotters' ab_glyph backend
/// has none built in), so plots look the same on every machine. Returns false if registration
/// failed; plots are then drawn without text.
fn ensure_font() -> bool {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FONT.get_or_init(|| {
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            formats::font::DEJAVU_SANS_MONO,
        )
        .is_ok()
    })
}

impl InnateReport {
    /// Markdown table: one row per block, one column per σ.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        if !self.input.is_empty() {
            s += &format!(
                "Input: {}, {} samples; cosine similarity to σ = {}.\n\n",
                self.input,
                self.num_samples,
                self.sigmas.first().copied().unwrap_or(f64::NAN)
            );
        }
        s += "| block |";
        for sg in &self.sigmas {
            s += &format!(" σ={sg} |");
        }
        s += "\n|---|";
        s += &"---|".repeat(self.sigmas.len());
        s += "\n";
        for (b, row) in self.blocks.iter().zip(&self.similarity) {
            s += &format!("| {b} |");
            for v in row {
                s += &format!(" {v:.3} |");
            }
            s += "\n";
        }
        s
    }

    /// Writes `innate.md`, `innate.json` and `innate.png` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let md = dir.join("innate.md");
        std::fs::write(&md, self.markdown()).map_err(|e| DistillError::io(&md, e))?;
        let js = dir.join("innate.json");
        std::fs::write(&js, serde_json::to_vec_pretty(self).expect("serialises"))
            .map_err(|e| DistillError::io(&js, e))?;
        self.plot(&dir.join("innate.png"))
    }

    /// Line plot: cosine similarity to σ=80 versus log10 σ, one line per block (encoder blue,
    /// decoder red, darker = deeper).
    pub fn plot(&self, path: &Path) -> Result<()> {
        let perr = |e: String| DistillError::Output {
            path: path.to_path_buf(),
            message: e,
        };
        let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| perr(e.to_string()))?;
        let xs: Vec<f64> = self.sigmas.iter().map(|s| s.log10()).collect();
        let (xmin, xmax) = (
            xs.iter().cloned().fold(f64::INFINITY, f64::min),
            xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        );
        let ymin = self
            .similarity
            .iter()
            .flatten()
            .cloned()
            .fold(1.0f64, f64::min)
            .min(0.0);
        let text = ensure_font();
        let mut builder = ChartBuilder::on(&root);
        builder.margin(15);
        if text {
            builder
                .caption(
                    "Teacher block activations: cosine similarity to σ = 80",
                    ("sans-serif", 22),
                )
                .x_label_area_size(45)
                .y_label_area_size(55);
        }
        let mut chart = builder
            .build_cartesian_2d(xmax..xmin, ymin..1.02)
            .map_err(|e| perr(e.to_string()))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("log10 σ").y_desc("mean cosine similarity");
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| perr(e.to_string()))?;
        let nb = self.blocks.len().max(1);
        for (i, (name, row)) in self.blocks.iter().zip(&self.similarity).enumerate() {
            let t = i as f64 / nb as f64;
            let color = if name.starts_with("enc") {
                RGBColor(30, 60, (120.0 + 135.0 * t) as u8)
            } else {
                RGBColor((120.0 + 135.0 * t) as u8, 40, 40)
            };
            chart
                .draw_series(LineSeries::new(
                    xs.iter().cloned().zip(row.iter().cloned()),
                    color.stroke_width(1),
                ))
                .map_err(|e| perr(e.to_string()))?;
        }
        root.present().map_err(|e| perr(e.to_string()))?;
        Ok(())
    }
}
