//! GDD's training loop (`training/training_loop.py` + `training/loss.py::GDDLoss` of Zyriix/GDD).
//!
//! Per step (batch of N real images, fresh noise for each phase):
//! 1. spectral-norm power iteration of the discriminator heads;
//! 2. **G step**: `Σ_i mean_j softplus(−D(G(z))_ij)` (or hinge), Adam(lr, β=(0, 0.99)) on the
//!    generator's unfrozen parameters (GDD-I: frozen ones get no gradient and stay bit-identical);
//! 3. **D step**: fake (no grad through G) and real logits, Adam(dlr·c, β=(0, 0.99^c)), c = k/(k+1);
//! 4. every `r1_interval` steps (not at step 0): R1 on real images with gain `r1_interval`, its own
//!    Adam step of the discriminator's optimizer;
//! 5. generator EMA with EDM's half-life ramp.
//!
//! Each phase is a method of [`GddTrainer`] ([`GddTrainer::generator_step`],
//! [`GddTrainer::discriminator_step`], [`GddTrainer::r1_step`], [`GddTrainer::ema_step`]), and each
//! gradient phase is itself split into computing the gradients (summed over the data-parallel shards)
//! and applying them (`*_grads` / `apply_*_grads`), so a multi-process engine can all-reduce between
//! the two. [`run`] is the whole training driver (resume, checkpoints, metrics, grids, FID).
//!
//! Randomness is counter-based: everything a step draws comes from `ChaCha12Rng(seed, step, stream)`, so
//! resuming from a checkpoint (parameters, EMA, both Adam states, step) reproduces the uninterrupted
//! run exactly. A non-finite loss stops training with [`DistillError::NonFinite`], leaving the last
//! good checkpoint in place.

use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use edm_core::{EdmPrecond, ImageDataset};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::disc::{DiscConfig, MultiScaleD, ProjectedFeatures};
use crate::effnet::EfficientNetLite0;
use crate::error::{DistillError, Result};
use crate::freeze::{is_frozen, FreezeReport};
use crate::generator::{generate, OneStep};
use crate::loss::{disc_fake_loss, disc_real_loss, generator_loss, lazy_adam_adjust, LossType};
use crate::r1::r1_terms;

mod driver;
pub use driver::{
    data_parallel_devices, has_checkpoint, run, FidRecord, FidSchedule, RunEvent, RunOptions,
};

/// Hyper-parameters of a GDD run (defaults: the reference's CIFAR-10 recipe, `train.sh`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GddConfig {
    pub batch_size: usize,
    pub total_kimg: f64,
    /// Generator learning rate (`--lr`, 1e-4).
    pub lr: f64,
    /// Discriminator learning rate before the lazy adjustment (`--dlr`, 1e-4).
    pub dlr: f64,
    /// Adam β₂ (0.99; β₁ is 0).
    pub beta2: f64,
    pub loss: LossType,
    /// R1 weight γ (`--r1-gamma`, 1e-4).
    pub r1_gamma: f64,
    /// Lazy R1 interval (16); 0 disables R1.
    pub r1_interval: usize,
    /// RMS size of the finite-difference step of the R1 parameter gradient (see [`crate::r1`]).
    pub r1_fd_step: f64,
    /// EMA half-life in kimg (`--ema`, 0.5 Mimg) and ramp-up ratio (0.05).
    pub ema_halflife_kimg: f64,
    pub ema_rampup_ratio: f64,
    /// GDD-I freezing level 0..=3.
    pub freeze: u8,
    pub disc: DiscConfig,
    pub seed: u64,
    /// Use the dataset's labels (class-conditional generator and discriminator).
    pub cond: bool,
    /// Generator σ (80) and ε (2e-3).
    pub sigma: f64,
    pub eps: f64,
    /// "f32" | "f16" | "bf16": precision of the generator's U-Net body (half types need CUDA).
    pub precision: String,
    /// Discriminator batch-norm statistics over groups of this many samples (0: each device's whole
    /// shard). The reference trains with DDP, where every GPU normalises over its own batch only; on
    /// fewer devices, `batch / reference GPUs` reproduces its statistics.
    #[serde(default)]
    pub d_batch_group: usize,
    /// Run the R1 passes in exact float32 ([`exact_f32`]): the R1 parameter gradient is a central
    /// difference of two discriminator outputs whose inputs differ by ~1e-3, below what TF32
    /// rounding (~5e-4 per operand) resolves on CUDA. Costs 4× on those passes, every 16th step.
    #[serde(default = "default_true")]
    pub r1_exact_f32: bool,
}

fn default_true() -> bool {
    true
}

impl Default for GddConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            total_kimg: 5000.0,
            lr: 1e-4,
            dlr: 1e-4,
            beta2: 0.99,
            loss: LossType::Ns,
            r1_gamma: 1e-4,
            r1_interval: 16,
            r1_fd_step: 1e-3,
            ema_halflife_kimg: 500.0,
            ema_rampup_ratio: 0.05,
            freeze: 0,
            disc: DiscConfig::default(),
            seed: 0,
            cond: false,
            sigma: 80.0,
            eps: 2e-3,
            precision: "f32".into(),
            d_batch_group: 0,
            r1_exact_f32: true,
        }
    }
}

impl GddConfig {
    pub fn one_step(&self) -> Result<OneStep> {
        let precision = match self.precision.as_str() {
            "f32" => edm_core::Precision::F32,
            "f16" => edm_core::Precision::F16,
            "bf16" => edm_core::Precision::BF16,
            p => {
                return Err(DistillError::Config(format!(
                    "precision `{p}` (f32|f16|bf16)"
                )))
            }
        };
        Ok(OneStep {
            sigma: self.sigma,
            eps: self.eps,
            precision,
        })
    }

    /// EDM/GDD EMA decay at `cur_nimg` ([`edm_core::ema_beta`]; a ramp-up ratio of 0 means none).
    pub fn ema_beta(&self, cur_nimg: u64) -> f64 {
        let rampup = (self.ema_rampup_ratio > 0.0).then_some(self.ema_rampup_ratio);
        edm_core::ema_beta(self.batch_size, self.ema_halflife_kimg, rampup, cur_nimg)
    }

    pub fn total_steps(&self) -> u64 {
        ((self.total_kimg * 1000.0) / self.batch_size as f64).ceil() as u64
    }
}

/// What one step measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub kimg: f64,
    pub g_loss: f64,
    pub d_loss_fake: f64,
    pub d_loss_real: f64,
    /// Mean discriminator logits on generated / real images (D step).
    pub d_fake_score: f64,
    pub d_real_score: f64,
    /// R1 penalty mean ‖∇ₓD‖² when this step ran R1.
    pub r1_penalty: Option<f64>,
    pub images_per_sec: f64,
}

/// What the D phase measured (sums over the batch of the losses; mean logits).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiscStep {
    pub loss_fake: f64,
    pub loss_real: f64,
    pub fake_score: f64,
    pub real_score: f64,
}

/// Everything one step draws at random, on the host, for the whole batch (before it is split into
/// data-parallel shards, so k devices see exactly the samples of one): images are `[N, C, H, W]`
/// flattened, labels are class indices (used only by class-conditional runs).
#[derive(Clone, Debug, PartialEq)]
pub struct StepDraws {
    /// `[C, H, W]` of one image.
    pub chw: [usize; 3],
    /// The G phase's latents and labels.
    pub g_noise: Vec<f32>,
    pub g_labels: Vec<usize>,
    /// The D phase's latents and labels for its fake images.
    pub d_noise: Vec<f32>,
    pub d_fake_labels: Vec<usize>,
    /// Real images and their labels (D phase and lazy R1).
    pub real: Vec<f32>,
    pub real_labels: Vec<usize>,
}

impl StepDraws {
    /// Values per image.
    fn per(&self) -> usize {
        self.chw.iter().product()
    }
}

/// Persistent counters of a run (`state.json` in a checkpoint).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GddState {
    pub step: u64,
    pub cur_nimg: u64,
    pub config: GddConfig,
}

/// The labels of a batch as one-hot rows.
fn one_hot<B: Backend>(labels: &[usize], classes: usize, device: &B::Device) -> Tensor<B, 2> {
    let mut v = vec![0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [labels.len(), classes]), device)
}

/// Repeats a 1-channel image to the RGB the feature network expects.
pub fn to_rgb<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    if x.dims()[1] == 1 {
        x.repeat_dim(1, 3)
    } else {
        x
    }
}

/// A step's random draws (counter-based: seed, step and stream select the generator).
fn step_rng(seed: u64, step: u64, stream: u64) -> ChaCha12Rng {
    let mut s = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(stream.wrapping_mul(0x94D0_49BB_1331_11EB));
    s ^= s >> 31;
    ChaCha12Rng::seed_from_u64(s)
}

/// `len` standard-normal draws, in the order every run (single- or multi-device) makes them.
fn normal_host(rng: &mut ChaCha12Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

fn normal<B: Backend>(
    rng: &mut ChaCha12Rng,
    shape: [usize; 4],
    device: &B::Device,
) -> Tensor<B, 4> {
    let n: usize = shape.iter().product();
    Tensor::from_data(TensorData::new(normal_host(rng, n), shape), device)
}

/// Rows `r` of a host batch `[N, C, H, W]` (`per` = C·H·W values per row) as a tensor on `device`.
fn rows<B: Backend>(
    host: &[f32],
    per: usize,
    r: Range<usize>,
    chw: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let m = r.len();
    Tensor::from_data(
        TensorData::new(
            host[r.start * per..r.end * per].to_vec(),
            [m, chw[0], chw[1], chw[2]],
        ),
        device,
    )
}

/// Contiguous near-equal shards of `0..n` for `k` devices (never an empty shard).
pub fn shard_ranges(n: usize, k: usize) -> Vec<Range<usize>> {
    let k = k.clamp(1, n.max(1));
    (0..k).map(|i| (i * n / k)..((i + 1) * n / k)).collect()
}

/// The module for shard `i`: the master itself for shard 0, a replica forked to `device` otherwise.
fn replica<BB: Backend, M: Module<BB>>(m: &M, device: &BB::Device, i: usize) -> M {
    if i == 0 {
        m.clone()
    } else {
        m.clone().fork(device)
    }
}

/// Sum of scalar tensors that may live on different devices, read after all shards were launched.
fn scalar_sum<BB: Backend>(xs: Vec<Tensor<BB, 1>>) -> f64 {
    xs.into_iter().map(|x| x.into_scalar().elem::<f64>()).sum()
}

/// A batch of real images (host, `[N, C, H, W]` flattened) and labels, drawn uniformly with
/// replacement.
fn real_batch_host(data: &ImageDataset, rng: &mut ChaCha12Rng, n: usize) -> (Vec<f32>, Vec<usize>) {
    let per = data.channels * data.resolution * data.resolution;
    let mut v = Vec::with_capacity(n * per);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let i = rng.random_range(0..data.len);
        v.extend_from_slice(data.image(i));
        labels.push(data.labels.as_ref().map(|l| l[i]).unwrap_or(0));
    }
    (v, labels)
}

/// Writes a burn record as `BinFileRecorder` would (the same bincode bytes, which `resume` reads
/// back with it), but through [`formats::write_atomic`]: burn's file recorder flattens the OS error
/// into a string, so a full disk came out as an encoder message; here it is
/// `FormatError::NoSpace` naming the file (issue 21).
fn save_record<B: Backend, R: burn::record::Record<B>>(record: R, path: &Path) -> Result<()> {
    let bytes = BinBytesRecorder::<FullPrecisionSettings>::new()
        .record(record, ())
        .map_err(|e| DistillError::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    formats::write_atomic(path, &bytes)?;
    Ok(())
}

/// Everything a GDD run holds.
pub struct GddTrainer<B: AutodiffBackend> {
    pub g: EdmPrecond<B>,
    pub ema: EdmPrecond<B::InnerBackend>,
    pub d: MultiScaleD<B>,
    pub feats: ProjectedFeatures<B>,
    g_opt: OptimizerAdaptor<Adam, EdmPrecond<B>, B>,
    d_opt: OptimizerAdaptor<Adam, MultiScaleD<B>, B>,
    pub state: GddState,
    pub freeze_report: FreezeReport,
    one: OneStep,
    device: B::Device,
    /// Data-parallel devices; `devices[0] == device`.
    devices: Vec<B::Device>,
}

fn adam(beta2: f64) -> AdamConfig {
    AdamConfig::new()
        .with_beta_1(0.0)
        .with_beta_2(beta2 as f32)
        .with_epsilon(1e-8)
}

impl<B: AutodiffBackend> GddTrainer<B> {
    /// A fresh run: the generator and its EMA start as copies of `teacher`.
    pub fn new(
        teacher: EdmPrecond<B>,
        backbone: EfficientNetLite0<B>,
        config: GddConfig,
        device: &B::Device,
    ) -> Result<Self> {
        let one = config.one_step()?;
        let mut dcfg = config.disc.clone();
        dcfg.label_dim = if config.cond {
            teacher.config.label_dim
        } else {
            0
        };
        let feats = ProjectedFeatures::new(backbone, &dcfg, device);
        let d = MultiScaleD::new(&dcfg, device);
        let params = teacher.named_parameters();
        let freeze_report = FreezeReport::new(
            params.iter().map(|t| (t.name.as_str(), t.numel())),
            config.freeze,
        );
        let level = config.freeze;
        let g = teacher.freeze_where(|n| is_frozen(n, level));
        let ema = g.valid();
        let (_, d_beta2) = lazy_adam_adjust(config.dlr, config.beta2, config.r1_interval);
        Ok(Self {
            g,
            ema,
            d,
            feats,
            g_opt: adam(config.beta2).init(),
            d_opt: adam(d_beta2).init(),
            state: GddState {
                step: 0,
                cur_nimg: 0,
                config,
            },
            freeze_report,
            one,
            device: device.clone(),
            devices: vec![device.clone()],
        })
    }

    /// Data-parallel training over `devices` (one process; `devices[0]` must be the trainer's own
    /// device, which holds the master weights and both optimizers). Each step splits its batch into
    /// contiguous near-equal shards, runs every shard's forward and backward on its device with a
    /// replica forked from the master weights, moves the gradients to `devices[0]` and sums them
    /// there (the losses are sums over samples, so the sum is the full batch's gradient), then takes
    /// one optimizer step. The random draws are made for the whole batch before sharding, so a run on
    /// k devices sees exactly the samples of the single-device run and differs from it only by
    /// floating-point summation order.
    pub fn set_devices(&mut self, devices: Vec<B::Device>) -> Result<()> {
        match devices.first() {
            Some(d) if *d == self.device => {
                self.devices = devices;
                Ok(())
            }
            _ => Err(DistillError::Config(format!(
                "data-parallel devices must start with the trainer's device {:?}, got {devices:?}",
                self.device
            ))),
        }
    }

    /// The devices a step runs on (one unless [`Self::set_devices`] added more).
    pub fn devices(&self) -> &[B::Device] {
        &self.devices
    }

    fn labels_on(&self, ids: &[usize], device: &B::Device) -> Option<Tensor<B, 2>> {
        let classes = self.g.config.label_dim;
        (self.state.config.cond && classes > 0).then(|| one_hot(ids, classes, device))
    }

    /// The host-side random draws of the current step (counter-based, see the module doc): the G
    /// phase's noise and labels from stream 0, the D phase's noise, fake labels and real batch from
    /// stream 1. The lazy R1 phase reuses the D phase's real images.
    pub fn draw(&self, data: &ImageDataset) -> StepDraws {
        let cfg = &self.state.config;
        let (step, n) = (self.state.step, cfg.batch_size);
        let per = data.channels * data.resolution * data.resolution;
        let classes = self.g.config.label_dim.max(1);
        let mut rng = step_rng(cfg.seed, step, 0);
        let g_noise = normal_host(&mut rng, n * per);
        let g_labels = (0..n).map(|_| rng.random_range(0..classes)).collect();
        let mut rng = step_rng(cfg.seed, step, 1);
        let d_noise = normal_host(&mut rng, n * per);
        let d_fake_labels = (0..n).map(|_| rng.random_range(0..classes)).collect();
        let (real, real_labels) = real_batch_host(data, &mut rng, n);
        StepDraws {
            chw: [data.channels, data.resolution, data.resolution],
            g_noise,
            g_labels,
            d_noise,
            d_fake_labels,
            real,
            real_labels,
        }
    }

    /// One training step, data-parallel over [`Self::devices`]: the phases of GDD's
    /// `training_loop.py` in order ([`Self::draw`], spectral-norm [`Self::power_iteration`],
    /// [`Self::generator_step`], [`Self::discriminator_step`], [`Self::r1_step`] when due,
    /// [`Self::ema_step`]), then the step and image counters advance.
    pub fn step(&mut self, data: &ImageDataset) -> Result<StepMetrics> {
        let started = std::time::Instant::now();
        let draws = self.draw(data);
        self.power_iteration();
        let g_loss = self.generator_step(&draws)?;
        let d = self.discriminator_step(&draws)?;
        let r1_penalty = if self.r1_due() {
            Some(self.r1_step(&draws)?)
        } else {
            None
        };
        self.ema_step();
        let n = self.state.config.batch_size;
        self.state.step += 1;
        self.state.cur_nimg += n as u64;
        Ok(StepMetrics {
            step: self.state.step,
            kimg: self.state.cur_nimg as f64 / 1000.0,
            g_loss,
            d_loss_fake: d.loss_fake,
            d_loss_real: d.loss_real,
            d_fake_score: d.fake_score,
            d_real_score: d.real_score,
            r1_penalty,
            images_per_sec: n as f64 / started.elapsed().as_secs_f64(),
        })
    }

    /// One power iteration of every spectral-norm head (before the G step, as the reference's
    /// forward pass in training mode does once per step).
    pub fn power_iteration(&mut self) {
        self.d = self.d.clone().power_iteration();
    }

    /// The generator's gradient of this step, summed over the data-parallel shards on the
    /// trainer's device, and the summed loss: `Σ_i mean_j softplus(−D(G(z))_ij)` (or hinge) with the
    /// discriminator frozen. Frozen (GDD-I) parameters get no gradient.
    pub fn generator_grads(&self, draws: &StepDraws) -> (GradientsParams, f64) {
        let cfg = &self.state.config;
        let (chw, per) = (draws.chw, draws.per());
        let d_frozen = self.d.clone().no_grad();
        let mut accum = GradientsAccumulator::<EdmPrecond<B>>::new();
        let mut losses = Vec::with_capacity(self.devices.len());
        for (i, r) in self.shards().iter().enumerate() {
            let dev = &self.devices[i];
            let (g, d, feats) = (
                replica(&self.g, dev, i),
                replica(&d_frozen, dev, i),
                replica(&self.feats, dev, i),
            );
            let z = rows::<B>(&draws.g_noise, per, r.clone(), chw, dev);
            let labels = self.labels_on(&draws.g_labels[r.clone()], dev);
            let fake = generate(&g, z, labels.clone(), &self.one);
            let logits = d.forward_grouped(&feats.forward(to_rgb(fake)), labels, cfg.d_batch_group);
            let loss = generator_loss(cfg.loss, logits);
            losses.push(loss.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &g);
            accum.accumulate(&self.g, grads.to_device(&self.device, &g));
        }
        let loss = scalar_sum(losses);
        (accum.grads(), loss)
    }

    /// Adam(lr, β = (0, β₂)) on the generator with `grads` (from [`Self::generator_grads`]).
    pub fn apply_generator_grads(&mut self, grads: GradientsParams) {
        let lr = self.state.config.lr;
        self.g = self.g_opt.step(lr, self.g.clone(), grads);
    }

    /// The G phase: [`Self::generator_grads`], a finiteness check, [`Self::apply_generator_grads`].
    /// Returns the generator loss.
    pub fn generator_step(&mut self, draws: &StepDraws) -> Result<f64> {
        let (grads, loss) = self.generator_grads(draws);
        self.check("generator loss", loss)?;
        self.apply_generator_grads(grads);
        Ok(loss)
    }

    /// The discriminator's gradient of this step, summed over the shards: fake images from the
    /// updated generator (no gradient through it) and real images, `softplus(D(fake)) +
    /// softplus(−D(real))` (or hinge).
    pub fn discriminator_grads(&self, draws: &StepDraws) -> (GradientsParams, DiscStep) {
        let cfg = &self.state.config;
        let (chw, per, n) = (draws.chw, draws.per(), cfg.batch_size);
        let g_inner = self.g.valid();
        let feats_inner = self.feats.valid();
        let mut accum = GradientsAccumulator::<MultiScaleD<B>>::new();
        let (mut l_fakes, mut l_reals, mut s_fakes, mut s_reals) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, r) in self.shards().iter().enumerate() {
            let dev = &self.devices[i];
            let m = r.len();
            let (g_i, feats_i, d) = (
                replica(&g_inner, dev, i),
                replica(&feats_inner, dev, i),
                replica(&self.d, dev, i),
            );
            let z = rows::<B::InnerBackend>(&draws.d_noise, per, r.clone(), chw, dev);
            let real = rows::<B::InnerBackend>(&draws.real, per, r.clone(), chw, dev);
            let f_labels = self.labels_on(&draws.d_fake_labels[r.clone()], dev);
            let fake = generate(&g_i, z, f_labels.clone().map(|t| t.inner()), &self.one);
            let both = feats_i.forward(to_rgb(Tensor::cat(vec![fake, real], 0)));
            let split = |k: usize| -> [Tensor<B, 4>; 4] {
                both.clone().map(|f| {
                    let [_, c, h, w] = f.dims();
                    Tensor::from_inner(f.slice([k * m..(k + 1) * m, 0..c, 0..h, 0..w]))
                })
            };
            let fake_logits = d.forward_grouped(&split(0), f_labels, cfg.d_batch_group);
            let real_labels = self.labels_on(&draws.real_labels[r.clone()], dev);
            let real_logits = d.forward_grouped(&split(1), real_labels, cfg.d_batch_group);
            // Sums of logits (means are taken over the whole batch below).
            s_fakes.push(fake_logits.clone().mean().mul_scalar(m as f64));
            s_reals.push(real_logits.clone().mean().mul_scalar(m as f64));
            let l_fake = disc_fake_loss(cfg.loss, fake_logits);
            let l_real = disc_real_loss(cfg.loss, real_logits);
            l_fakes.push(l_fake.clone());
            l_reals.push(l_real.clone());
            let grads = GradientsParams::from_grads((l_fake + l_real).backward(), &d);
            accum.accumulate(&self.d, grads.to_device(&self.device, &d));
        }
        let stats = DiscStep {
            fake_score: scalar_sum(s_fakes) / n as f64,
            real_score: scalar_sum(s_reals) / n as f64,
            loss_fake: scalar_sum(l_fakes),
            loss_real: scalar_sum(l_reals),
        };
        (accum.grads(), stats)
    }

    /// Adam on the discriminator with the lazily adjusted rate dlr·c, β₂^c (c = k/(k+1), k the R1
    /// interval); the D phase and the R1 phase share this optimizer.
    pub fn apply_discriminator_grads(&mut self, grads: GradientsParams) {
        let cfg = &self.state.config;
        let (dlr, _) = lazy_adam_adjust(cfg.dlr, cfg.beta2, cfg.r1_interval);
        self.d = self.d_opt.step(dlr, self.d.clone(), grads);
    }

    /// The D phase: [`Self::discriminator_grads`], a finiteness check,
    /// [`Self::apply_discriminator_grads`].
    pub fn discriminator_step(&mut self, draws: &StepDraws) -> Result<DiscStep> {
        let (grads, stats) = self.discriminator_grads(draws);
        self.check("discriminator loss", stats.loss_fake + stats.loss_real)?;
        self.apply_discriminator_grads(grads);
        Ok(stats)
    }

    /// Whether this step runs lazy R1: every `r1_interval` steps, never at step 0.
    pub fn r1_due(&self) -> bool {
        let cfg = &self.state.config;
        cfg.r1_interval > 0
            && self.state.step != 0
            && self.state.step.is_multiple_of(cfg.r1_interval as u64)
    }

    /// The R1 gradient on this step's real images (gain `r1_interval`, see [`crate::r1`]), summed
    /// over the shards, and the penalty mean ‖∇ₓD‖². Runs in exact float32 when
    /// [`GddConfig::r1_exact_f32`] is set.
    pub fn r1_grads(&self, draws: &StepDraws) -> (GradientsParams, f64) {
        let cfg = &self.state.config;
        let (chw, per, n) = (draws.chw, draws.per(), cfg.batch_size);
        let _exact = cfg.r1_exact_f32.then(exact_f32::ExactGuard::new);
        let shards = self.shards();
        let mut accum = GradientsAccumulator::<MultiScaleD<B>>::new();
        let mut penalty = 0.0;
        for (i, r) in shards.iter().enumerate() {
            let dev = &self.devices[i];
            let (d, feats) = (replica(&self.d, dev, i), replica(&self.feats, dev, i));
            let labels = self.labels_on(&draws.real_labels[r.clone()], dev);
            let real = rows::<B::InnerBackend>(&draws.real, per, r.clone(), chw, dev);
            let dfn = |x: Tensor<B, 4>| {
                d.forward_grouped(&feats.forward(to_rgb(x)), labels.clone(), cfg.d_batch_group)
            };
            let t = r1_terms(
                &dfn,
                real,
                cfg.r1_gamma,
                cfg.r1_interval as f64,
                cfg.r1_fd_step,
            );
            // Each shard's terms are means over its m samples: weight them by m / n.
            let w = r.len() as f64 / n as f64;
            penalty += t.penalty * w;
            let surrogate = if shards.len() == 1 {
                t.surrogate
            } else {
                t.surrogate.mul_scalar(w)
            };
            let grads = GradientsParams::from_grads(surrogate.backward(), &d);
            accum.accumulate(&self.d, grads.to_device(&self.device, &d));
        }
        (accum.grads(), penalty)
    }

    /// The lazy R1 phase: [`Self::r1_grads`], a finiteness check, and its own step of the
    /// discriminator's optimizer. Returns the penalty.
    pub fn r1_step(&mut self, draws: &StepDraws) -> Result<f64> {
        let (grads, penalty) = self.r1_grads(draws);
        self.check("R1 penalty", penalty)?;
        self.apply_discriminator_grads(grads);
        Ok(penalty)
    }

    /// The generator EMA with EDM's half-life ramp at the images seen before this step.
    pub fn ema_step(&mut self) {
        let beta = self.state.config.ema_beta(self.state.cur_nimg);
        self.ema = edm_core::ema_update(self.ema.clone(), &self.g.valid(), beta);
    }

    /// The data-parallel shards of a batch (one per device).
    fn shards(&self) -> Vec<Range<usize>> {
        shard_ranges(self.state.config.batch_size, self.devices.len())
    }
    fn check(&self, what: &str, v: f64) -> Result<()> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(DistillError::NonFinite {
                what: what.to_string(),
                step: self.state.step,
                last_good: "the last checkpoint in the output folder (left untouched)".into(),
            })
        }
    }

    /// One-step samples of the EMA generator for seeds `seeds` (noise from `ChaCha12Rng(seed)`).
    pub fn sample_ema(
        &self,
        seeds: &[u64],
        labels: Option<&[usize]>,
    ) -> Tensor<B::InnerBackend, 4> {
        sample_one_step(&self.ema, seeds, labels, &self.one, &self.device)
    }

    /// Writes the checkpoint atomically: `DIR/checkpoint.tmp` is filled, then renamed over
    /// `DIR/checkpoint` (the previous one kept as `checkpoint.old` until the rename succeeded).
    pub fn checkpoint(&self, dir: &Path) -> Result<PathBuf> {
        let swap = formats::CheckpointSwap::begin(dir)?;
        let tmp = swap.staging();
        save_record::<B, _>(self.g.clone().into_record(), &tmp.join("g.bin"))?;
        save_record::<B, _>(self.d.clone().into_record(), &tmp.join("d.bin"))?;
        // The EMA twice: as a burn record (keeps the parameter ids the EMA update matches on) and in
        // EDM's format below.
        save_record::<B::InnerBackend, _>(
            self.ema.clone().into_record(),
            &tmp.join("ema_rec.bin"),
        )?;
        save_record::<B, _>(self.g_opt.to_record(), &tmp.join("g_opt.bin"))?;
        save_record::<B, _>(self.d_opt.to_record(), &tmp.join("d_opt.bin"))?;
        // The EMA in EDM's format, loadable by `edm_core::load_precond` and `gdd sample`.
        self.ema.save(tmp.join("ema"))?;
        let state = serde_json::to_vec_pretty(&self.state).expect("state serialises");
        formats::write_atomic(&tmp.join("state.json"), &state)?;
        Ok(swap.commit()?)
    }

    /// Resumes from `DIR/checkpoint` (or `checkpoint.old` if a crash interrupted the rename).
    /// `teacher` supplies the architecture (its weights are replaced by the checkpoint's).
    pub fn resume(
        dir: &Path,
        teacher: EdmPrecond<B>,
        backbone: EfficientNetLite0<B>,
        device: &B::Device,
    ) -> Result<Self> {
        let ck = formats::resume_dir(dir, "state.json");
        let sp = ck.join("state.json");
        let bytes = std::fs::read(&sp).map_err(|e| DistillError::io(&sp, e))?;
        let state: GddState =
            serde_json::from_slice(&bytes).map_err(|e| DistillError::Checkpoint {
                path: sp.clone(),
                message: e.to_string(),
            })?;
        let mut t = Self::new(teacher, backbone, state.config.clone(), device)?;
        let rec = BinFileRecorder::<FullPrecisionSettings>::new();
        let cerr = |e: burn::record::RecorderError| DistillError::Checkpoint {
            path: ck.clone(),
            message: e.to_string(),
        };
        let level = state.config.freeze;
        t.g =
            t.g.load_file(ck.join("g"), &rec, device)
                .map_err(cerr)?
                .freeze_where(|n| is_frozen(n, level));
        t.d = t.d.load_file(ck.join("d"), &rec, device).map_err(cerr)?;
        // (The spectral-norm vectors u, v are always used detached, so they never get gradients.)
        t.g_opt = t
            .g_opt
            .load_record(rec.load(ck.join("g_opt"), device).map_err(cerr)?);
        t.d_opt = t
            .d_opt
            .load_record(rec.load(ck.join("d_opt"), device).map_err(cerr)?);
        t.ema =
            t.g.valid()
                .load_file(ck.join("ema_rec"), &rec, device)
                .map_err(cerr)?;
        t.state = state;
        Ok(t)
    }
}

/// One-step samples from a generator for explicit seeds (one noise tensor per seed, `ChaCha12Rng(seed)`).
pub fn sample_one_step<B: Backend>(
    g: &EdmPrecond<B>,
    seeds: &[u64],
    labels: Option<&[usize]>,
    one: &OneStep,
    device: &B::Device,
) -> Tensor<B, 4> {
    let c = &g.config;
    let shape = [1, c.img_channels, c.img_resolution, c.img_resolution];
    let z: Vec<Tensor<B, 4>> = seeds
        .iter()
        .map(|&s| normal::<B>(&mut ChaCha12Rng::seed_from_u64(s), shape, device))
        .collect();
    let z = Tensor::cat(z, 0);
    let l = match (labels, c.label_dim) {
        (Some(l), k) if k > 0 => Some(one_hot(l, k, device)),
        _ => None,
    };
    generate(g, z, l, one)
}
