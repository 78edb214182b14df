//! The EDM rows: one-step D(z·80), Heun sampling and a training step, at EDM's real network sizes with
//! random weights (the kernels and shapes are what matters for throughput, not the values).

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use clap::ValueEnum;
use edm_core::sampler::{sample, SamplerConfig, Solver};
use edm_core::train::{TrainOptions, Trainer};
use edm_core::{EdmConfig, EdmPrecond, ModelType};

use crate::timing::{rate, row, Timer};
use crate::Precision;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Net {
    /// EDM's DDPM++ CIFAR-10 (`--arch=ddpmpp`, 32×32, 55.7M parameters).
    Ddpmpp,
    /// EDM's ADM ImageNet-64 (DhariwalUNet, class-conditional, 295.9M parameters).
    Adm,
    /// The tiny DDPM++ of the golden fixtures (16×16): the CPU row.
    Tiny,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    Onestep,
    Heun,
    Train,
}

pub fn config(net: Net) -> EdmConfig {
    match net {
        Net::Ddpmpp => EdmConfig::ddpmpp_cifar10(),
        Net::Adm => {
            // EDM's `--arch=adm` at 64×64: DhariwalUNet defaults (192 channels, [1,2,3,4], 3 blocks,
            // attention at 32/16/8), 1000 classes.
            let mut c = EdmConfig::tiny(ModelType::DhariwalUNet, 64, 3, 1000);
            c.model_channels = None;
            c.channel_mult = None;
            c.num_blocks = None;
            c.attn_resolutions = None;
            c.dropout = Some(0.1);
            c
        }
        Net::Tiny => {
            let mut c = EdmConfig::tiny(ModelType::SongUNet, 16, 3, 0);
            c.model_channels = Some(16);
            c
        }
    }
}

fn precision(p: Precision) -> edm_core::Precision {
    match p {
        Precision::F32 => edm_core::Precision::F32,
        Precision::F16 => edm_core::Precision::F16,
        Precision::Bf16 => edm_core::Precision::BF16,
    }
}

fn labels<B: Backend>(cfg: &EdmConfig, n: usize, device: &B::Device) -> Option<Tensor<B, 2>> {
    (cfg.label_dim > 0).then(|| {
        // One-hot of class i mod label_dim.
        let mut v = vec![0f32; n * cfg.label_dim];
        for i in 0..n {
            v[i * cfg.label_dim + i % cfg.label_dim] = 1.0;
        }
        Tensor::from_data(burn::tensor::TensorData::new(v, [n, cfg.label_dim]), device)
    })
}

#[allow(clippy::too_many_arguments)]
pub fn run_sampling<B: Backend>(
    device: &B::Device,
    t: &Timer,
    net: Net,
    mode: Mode,
    batch: usize,
    steps: usize,
    p: Precision,
) {
    let cfg = config(net);
    let model = EdmPrecond::<B>::init(&cfg, 0, device)
        .expect("built-in config is valid")
        .with_precision(precision(p));
    let params: usize = model.named_parameters().iter().map(|t| t.numel()).sum();
    let (solver, nfe) = match mode {
        Mode::Onestep => (Solver::OneStep, 1),
        Mode::Heun => (Solver::Heun, 2 * steps - 1),
        Mode::Train => unreachable!("training is timed by run_train"),
    };
    let r = cfg.img_resolution;
    let z = Tensor::<B, 4>::random(
        [batch, cfg.img_channels, r, r],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let class_labels = labels::<B>(&cfg, batch, device);
    let sampler = SamplerConfig {
        num_steps: steps,
        ..Default::default()
    };
    let time = t.median::<B, _>(device, || {
        sample(
            &model,
            z.clone(),
            class_labels.clone(),
            solver,
            &sampler,
            None,
            &mut |_, _| {},
        )
        .expect("sampling a valid config")
    });
    row(
        &format!(
            "EDM {net:?} {} ({:.1}M params)",
            if nfe == 1 {
                "one-step".to_string()
            } else {
                format!("Heun {steps} steps, NFE {nfe}")
            },
            params as f64 / 1e6
        ),
        &format!("batch {batch}, {r}x{r}"),
        &format!("{p:?}").to_lowercase(),
        time,
        &rate(batch as f64 / time.as_secs_f64(), "img/s"),
    );
}

pub fn run_train<B: AutodiffBackend>(
    device: &B::Device,
    t: &Timer,
    net: Net,
    batch: usize,
    p: Precision,
) {
    let cfg = config(net);
    let r = cfg.img_resolution;
    let options = TrainOptions {
        batch_size: batch,
        total_kimg: 1e9,
        checkpoint_every: usize::MAX,
        ..Default::default()
    };
    let net_ = EdmPrecond::<B>::init(&cfg, 0, device)
        .expect("valid config")
        .with_precision(precision(p));
    let mut trainer = Trainer::from_network(net_, options, device);
    // A synthetic dataset of 2 batches: the step's host-side batch assembly is part of what is timed.
    let len = 2 * batch;
    let per = cfg.img_channels * r * r;
    let data = edm_core::data::ImageDataset {
        images: (0..len * per)
            .map(|i| ((i * 2654435761) % 2001) as f32 / 1000.0 - 1.0)
            .collect(),
        labels: (cfg.label_dim > 0).then(|| (0..len).map(|i| i % cfg.label_dim).collect()),
        num_classes: cfg.label_dim,
        len,
        channels: cfg.img_channels,
        resolution: r,
    };
    let time = t.median::<B, _>(device, || trainer.step(&data).expect("training step"));
    row(
        &format!("EDM {net:?} training step (fwd+bwd+Adam)"),
        &format!("batch {batch}, {r}x{r}"),
        &format!("{p:?}").to_lowercase(),
        time,
        &rate(batch as f64 / time.as_secs_f64(), "img/s"),
    );
}
