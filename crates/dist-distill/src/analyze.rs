//! The "innate one-step" analysis (paper §3): how much a teacher's internal activations at σ = 80
//! (the one-step generator's only noise level) resemble those at smaller σ. For each U-Net block,
//! the output is recorded for `x_σ = x₀ + σ·z` (same `x₀`, `z`) at several σ, and the mean
//! per-sample cosine similarity with the σ = 80 activation is reported as a table (Markdown and
//! JSON) and a plot (PNG). High similarity across σ in most blocks is what makes freezing them
//! (GDD-I) possible.

use std::path::Path;

use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use edm_core::song_unet::{DecLayer, EncLayer};
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

/// SongUNet's forward pass (same order as edm-core's `SongUNet::forward`, whose output it must
/// reproduce; a test checks it) that also returns every U-Net block's output, named
/// `enc.{res}x{res}_blockN` / `dec...`.
pub fn song_unet_block_outputs<B: Backend>(
    net: &SongUNet<B>,
    x: Tensor<B, 4>,
    noise_labels: Tensor<B, 1>,
) -> (Vec<(String, Tensor<B, 4>)>, Tensor<B, 4>) {
    let emb = match (&net.map_noise_positional, &net.map_noise_fourier) {
        (Some(pos), _) => pos.forward(noise_labels),
        (None, Some(f)) => f.forward(noise_labels),
        (None, None) => unreachable!("SongUNet always has a noise embedding"),
    };
    let [n, ch] = emb.dims();
    let emb = emb.reshape([n, 2, ch / 2]).flip([1]).reshape([n, ch]);
    let emb = silu(net.map_layer0.forward(emb));
    let emb = silu(net.map_layer1.forward(emb));
    let mut acts = Vec::new();
    let mut skips: Vec<Tensor<B, 4>> = Vec::new();
    let mut x = x;
    let mut aux = x.clone();
    let sqrt2 = std::f64::consts::SQRT_2;
    for (layer, name) in net.enc.iter().zip(&net.enc_names) {
        match layer {
            EncLayer::AuxDown(conv) => aux = conv.forward(aux),
            EncLayer::AuxSkip(conv) => {
                x = x + conv.forward(aux.clone());
                *skips.last_mut().expect("skip after a block") = x.clone();
            }
            EncLayer::AuxResidual(conv) => {
                x = (x + conv.forward(aux)).div_scalar(sqrt2);
                *skips.last_mut().expect("skip after a block") = x.clone();
                aux = x.clone();
            }
            EncLayer::Conv(conv) => {
                x = conv.forward(x);
                skips.push(x.clone());
            }
            EncLayer::Block(block) => {
                x = block.forward(x, emb.clone());
                acts.push((format!("enc.{name}"), x.clone()));
                skips.push(x.clone());
            }
        }
    }
    let mut aux: Option<Tensor<B, 4>> = None;
    let mut tmp: Option<Tensor<B, 4>> = None;
    for (layer, name) in net.dec.iter().zip(&net.dec_names) {
        match layer {
            DecLayer::AuxUp(conv) => aux = aux.map(|a| conv.forward(a)),
            DecLayer::AuxNorm(norm) => tmp = Some(norm.forward(x.clone())),
            DecLayer::AuxConv(conv) => {
                let t = conv.forward(silu(tmp.take().expect("aux_norm before aux_conv")));
                aux = Some(match aux {
                    None => t,
                    Some(a) => t + a,
                });
            }
            DecLayer::Block(block) => {
                if x.dims()[1] != block.in_channels {
                    let s = skips.pop().expect("one skip per decoder block");
                    x = Tensor::cat(vec![x, s], 1);
                }
                x = block.forward(x, emb.clone());
                acts.push((format!("dec.{name}"), x.clone()));
            }
        }
    }
    (acts, aux.expect("decoder ends with aux_conv"))
}

/// Result of the analysis: `similarity[block][k]` = mean cosine similarity between the block's
/// output at `sigmas[0]` (= 80) and at `sigmas[k]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InnateReport {
    pub sigmas: Vec<f64>,
    pub blocks: Vec<String>,
    pub similarity: Vec<Vec<f64>>,
    pub num_samples: usize,
}

/// Noise levels analysed (σ_max first).
pub const ANALYSIS_SIGMAS: [f64; 9] = [80.0, 40.0, 20.0, 10.0, 5.0, 2.0, 1.0, 0.5, 0.1];

/// Runs the analysis with `x₀` = `x0` (e.g. real images) or, if `None`, zeros, and `z` from `seed`.
pub fn innate_one_step_with<B: Backend>(
    net: &EdmPrecond<B>,
    x0: Option<Tensor<B, 4>>,
    num: usize,
    seed: u64,
    device: &B::Device,
) -> Result<InnateReport> {
    let UNet::Song(unet) = &net.model else {
        return Err(DistillError::Config(
            "the innate one-step analysis is implemented for SongUNet teachers".into(),
        ));
    };
    let c = &net.config;
    let chw = [c.img_channels, c.img_resolution, c.img_resolution];
    let z = crate::eval::latents::<B>(seed, num, chw, device);
    let x0 = x0.unwrap_or_else(|| z.zeros_like());
    let per_sigma: Vec<Vec<(String, Tensor<B, 2>)>> = ANALYSIS_SIGMAS
        .iter()
        .map(|&s| {
            let sig = Tensor::<B, 1>::full([num], s, device);
            let k = net.coefficients(sig);
            let x = x0.clone() + z.clone().mul_scalar(s);
            let (acts, _) = song_unet_block_outputs(unet, k.c_in * x, k.c_noise);
            acts.into_iter()
                .map(|(n, a)| (n, a.reshape([num as i32, -1])))
                .collect()
        })
        .collect();
    let blocks: Vec<String> = per_sigma[0].iter().map(|(n, _)| n.clone()).collect();
    let mut similarity = Vec::with_capacity(blocks.len());
    for b in 0..blocks.len() {
        let a0 = per_sigma[0][b].1.clone();
        let n0 = a0.clone().square().sum_dim(1).sqrt();
        let row = per_sigma
            .iter()
            .map(|acts| {
                let a = acts[b].1.clone();
                let dot = (a0.clone() * a.clone()).sum_dim(1);
                let na = a.square().sum_dim(1).sqrt();
                let cos = dot / (n0.clone() * na).clamp_min(1e-12);
                let v: Vec<f32> = cos.into_data().convert::<f32>().into_vec().expect("f32");
                v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
            })
            .collect();
        similarity.push(row);
    }
    Ok(InnateReport {
        sigmas: ANALYSIS_SIGMAS.to_vec(),
        blocks,
        similarity,
        num_samples: num,
    })
}

/// [`innate_one_step_with`] with `x₀ = 0`.
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
        let mut s = String::from("| block |");
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
