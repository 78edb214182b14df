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
//! The discriminator is a list of (frozen [`ProjectedFeatures`], trained [`MultiScaleD`]) pairs, one
//! per backbone of [`DiscConfig::backbones`] (the reference's `ProjectedDiscriminatorOnly`). As in
//! the reference, which extends one list of per-sample logit rows with every discriminator's, the
//! G and D losses are the sums of the per-discriminator losses, and R1 penalises the input
//! gradient of the sum of *all* logits (one ‖∇ₓ(S₁ + S₂)‖², not a sum of per-discriminator
//! penalties). All discriminators share one Adam optimizer.
//!
//! Each phase is a method of [`GddTrainer`] ([`GddTrainer::generator_step`],
//! [`GddTrainer::discriminator_step`], [`GddTrainer::r1_step`], [`GddTrainer::ema_step`]), and each
//! gradient phase is itself split into computing this peer's gradients (`*_grads`) and applying
//! them (`apply_*_grads`); the `*_step` methods all-reduce between the two when the trainer is a
//! data-parallel peer ([`GddTrainer::set_peer`], crate `parallel`). [`run`] is the whole training
//! driver (resume, checkpoints, metrics, grids, FID), one peer per device.
//!
//! Randomness is counter-based: everything a step draws comes from `ChaCha12Rng(seed, step, stream)`, so
//! resuming from a checkpoint (parameters, EMA, both Adam states, step) reproduces the uninterrupted
//! run exactly. A non-finite loss stops training with [`DistillError::NonFinite`], leaving the last
//! good checkpoint in place.

use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use edm_core::{EdmPrecond, ImageDataset};
use parallel::{Peer, Reduction};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::disc::{Backbones, DiscConfig, MultiScaleD, ProjectedFeatures};
use crate::error::{DistillError, Result};
use crate::freeze::{is_frozen, FreezeReport};
use crate::generator::{generate, OneStep};
use crate::loss::{disc_fake_loss, disc_real_loss, generator_loss, lazy_adam_adjust, LossType};
use crate::r1::r1_terms;

mod driver;
mod resume_check;
pub use driver::{
    data_parallel_devices, has_checkpoint, run, FidRecord, FidSchedule, RunEvent, RunOptions,
};
pub use resume_check::{check_resume, RESUMABLE_OPTIONS};

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

fn scalar<BB: Backend>(x: Tensor<BB, 1>) -> f64 {
    x.into_scalar().elem::<f64>()
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
    /// One trained discriminator per backbone, in the order of [`DiscConfig::backbones`].
    pub d: Vec<MultiScaleD<B>>,
    /// The frozen features each discriminator of [`Self::d`] reads (same order).
    pub feats: Vec<ProjectedFeatures<B>>,
    g_opt: OptimizerAdaptor<Adam, EdmPrecond<B>, B>,
    d_opt: OptimizerAdaptor<Adam, Vec<MultiScaleD<B>>, B>,
    pub state: GddState,
    pub freeze_report: FreezeReport,
    one: OneStep,
    device: B::Device,
    /// This trainer's place in a data-parallel run (`None`: it is the whole run).
    peer: Option<Peer<B::InnerBackend>>,
}

fn adam(beta2: f64) -> AdamConfig {
    AdamConfig::new()
        .with_beta_1(0.0)
        .with_beta_2(beta2 as f32)
        .with_epsilon(1e-8)
}

impl<B: AutodiffBackend> GddTrainer<B> {
    /// A fresh run: the generator and its EMA start as copies of `teacher`. `backbones` are the
    /// loaded feature networks of [`DiscConfig::backbones`], in that order (one network converts
    /// into a one-element list).
    pub fn new(
        teacher: EdmPrecond<B>,
        backbones: impl Into<Backbones<B>>,
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
        let Backbones(nets) = backbones.into();
        let kinds = dcfg.backbones();
        if nets.len() != kinds.len() {
            return Err(DistillError::Config(format!(
                "the discriminator is configured for {} backbone(s) ({}) but {} were loaded",
                kinds.len(),
                kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                nets.len()
            )));
        }
        // A discriminator input the backbone's strides cannot take (`--d-res 112` with
        // EfficientNet-Lite0) is a typed error here, not a shape panic in the first step; so is a
        // backbone other than the configuration's (the configuration is what a checkpoint records
        // and a resume compares: it must name the networks the discriminators really project).
        let mut feats = Vec::with_capacity(nets.len());
        let mut d = Vec::with_capacity(nets.len());
        for (i, net) in nets.into_iter().enumerate() {
            let member = dcfg.member(i);
            feats.push(ProjectedFeatures::try_new(net, &member, device)?);
            d.push(MultiScaleD::new(&member, device));
        }
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
            peer: None,
        })
    }

    /// Makes this trainer one data-parallel peer of a run (see crate `parallel`): each step it
    /// computes its forward and backward passes on its own contiguous shard of the global batch
    /// (the random draws are made for the whole batch first, so any number of peers sees exactly
    /// the samples of one device), the gradients and logged losses are summed over all peers
    /// (the losses are sums over samples, so the sum is the global batch's gradient) in one
    /// all-reduce per optimizer step, and every peer takes the same optimizer step. Parameters,
    /// both Adam states and the EMA (updated from the identical generator) thus stay identical on
    /// every peer without a broadcast. The discriminator's batch-norm statistics are per peer, as
    /// under the reference's DDP. The batch must have at least one sample per peer.
    ///
    /// The trained networks are forked (same values and parameter ids, new autodiff leaves):
    /// peers built from clones of one network would otherwise share leaves, hence one
    /// burn-autodiff graph, and could deadlock (see `parallel::run_node`).
    pub fn set_peer(&mut self, peer: Option<Peer<B::InnerBackend>>) -> Result<()> {
        if let Some(p) = &peer {
            p.shard(self.state.config.batch_size)?;
            self.g = self.g.clone().fork(&self.device);
            self.d = std::mem::take(&mut self.d)
                .into_iter()
                .map(|d| d.fork(&self.device))
                .collect();
        }
        self.peer = peer;
        Ok(())
    }

    /// This trainer's data-parallel peer (`None` when it is the whole run).
    pub fn peer(&self) -> Option<&Peer<B::InnerBackend>> {
        self.peer.as_ref()
    }

    /// Peers in the run (1 without a peer).
    pub fn world_size(&self) -> usize {
        self.peer.as_ref().map_or(1, |p| p.world)
    }

    /// Whether this trainer writes the run's outputs (rank 0, or the only trainer).
    pub fn is_rank0(&self) -> bool {
        self.peer.as_ref().is_none_or(|p| p.rank == 0)
    }

    /// This peer's rows of the global batch.
    fn shard(&self) -> Range<usize> {
        let n = self.state.config.batch_size;
        match &self.peer {
            // `set_peer` checked that the batch has a sample per peer.
            Some(p) => p.shard(n).unwrap_or(0..n),
            None => 0..n,
        }
    }

    /// Sums `grads` (of `module`) and `scalars` over all peers (unchanged without a peer).
    fn all_reduce<M: AutodiffModule<B>>(
        &self,
        op: &'static str,
        grads: GradientsParams,
        module: &M,
        scalars: &[f64],
    ) -> Result<(GradientsParams, Vec<f64>)> {
        match &self.peer {
            None => Ok((grads, scalars.to_vec())),
            Some(p) => Ok(p.all_reduce_gradients::<B, M>(
                op,
                grads,
                module,
                scalars,
                Reduction::Sum,
                &self.device,
            )?),
        }
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

    /// One training step (of this peer, when data-parallel): the phases of GDD's
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
        self.d = self.d.drain(..).map(|d| d.power_iteration()).collect();
    }

    /// This peer's generator gradient of this step and its loss summed over its shard:
    /// `Σ_i mean_j softplus(−D(G(z))_ij)` (or hinge) with the discriminator frozen. Frozen (GDD-I)
    /// parameters get no gradient.
    pub fn generator_grads(&self, draws: &StepDraws) -> (GradientsParams, f64) {
        let cfg = &self.state.config;
        let (chw, per, r) = (draws.chw, draws.per(), self.shard());
        let dev = &self.device;
        let z = rows::<B>(&draws.g_noise, per, r.clone(), chw, dev);
        let labels = self.labels_on(&draws.g_labels[r], dev);
        let fake = to_rgb(generate(&self.g, z, labels.clone(), &self.one));
        // The sum of every discriminator's loss (the reference's `sum(...)` over its logit list).
        let loss = self
            .d
            .iter()
            .zip(&self.feats)
            .map(|(d, f)| {
                let logits = d.clone().no_grad().forward_grouped(
                    &f.forward(fake.clone()),
                    labels.clone(),
                    cfg.d_batch_group,
                );
                generator_loss(cfg.loss, logits)
            })
            .reduce(|a, b| a + b)
            .expect("at least one discriminator");
        let value = scalar(loss.clone());
        (GradientsParams::from_grads(loss.backward(), &self.g), value)
    }

    /// Adam(lr, β = (0, β₂)) on the generator with `grads` (from [`Self::generator_grads`]).
    pub fn apply_generator_grads(&mut self, grads: GradientsParams) {
        let lr = self.state.config.lr;
        self.g = self.g_opt.step(lr, self.g.clone(), grads);
    }

    /// The G phase: [`Self::generator_grads`], summed over the peers, a finiteness check (on the
    /// global loss, so every peer stops together), [`Self::apply_generator_grads`]. Returns the
    /// generator loss.
    pub fn generator_step(&mut self, draws: &StepDraws) -> Result<f64> {
        let (grads, loss) = self.generator_grads(draws);
        let (grads, s) = self.all_reduce("generator gradients", grads, &self.g, &[loss])?;
        self.check("generator loss", s[0])?;
        self.apply_generator_grads(grads);
        Ok(s[0])
    }

    /// This peer's discriminator gradient of this step: fake images from the updated generator (no
    /// gradient through it) and real images, `softplus(D(fake)) + softplus(−D(real))` (or hinge),
    /// on its shard. The returned losses are sums over the shard and the scores sums of logits
    /// (the D phase turns them into batch means after the all-reduce).
    pub fn discriminator_grads(&self, draws: &StepDraws) -> (GradientsParams, DiscStep) {
        let cfg = &self.state.config;
        let (chw, per, r) = (draws.chw, draws.per(), self.shard());
        let (dev, m) = (&self.device, r.len());
        let z = rows::<B::InnerBackend>(&draws.d_noise, per, r.clone(), chw, dev);
        let real = rows::<B::InnerBackend>(&draws.real, per, r.clone(), chw, dev);
        let f_labels = self.labels_on(&draws.d_fake_labels[r.clone()], dev);
        let fake = generate(
            &self.g.valid(),
            z,
            f_labels.clone().map(|t| t.inner()),
            &self.one,
        );
        let images = to_rgb(Tensor::cat(vec![fake, real], 0));
        let real_labels = self.labels_on(&draws.real_labels[r], dev);
        let mut l_fake: Option<Tensor<B, 1>> = None;
        let mut l_real: Option<Tensor<B, 1>> = None;
        // Logit sums and logit counts per sample over all discriminators: the scores are the mean
        // of every logit, as the reference's `torch.cat` of its logit list reports them.
        let (mut fake_sum, mut real_sum, mut per_sample) = (0.0, 0.0, 0usize);
        for (d, feats) in self.d.iter().zip(&self.feats) {
            let both = feats.valid().forward(images.clone());
            let split = |k: usize| -> [Tensor<B, 4>; 4] {
                both.clone().map(|f| {
                    let [_, c, h, w] = f.dims();
                    Tensor::from_inner(f.slice([k * m..(k + 1) * m, 0..c, 0..h, 0..w]))
                })
            };
            let fake_logits = d.forward_grouped(&split(0), f_labels.clone(), cfg.d_batch_group);
            let real_logits = d.forward_grouped(&split(1), real_labels.clone(), cfg.d_batch_group);
            per_sample += fake_logits.dims()[1];
            fake_sum += scalar(fake_logits.clone().sum());
            real_sum += scalar(real_logits.clone().sum());
            let add = |acc: Option<Tensor<B, 1>>, t: Tensor<B, 1>| {
                Some(match acc {
                    Some(a) => a + t,
                    None => t,
                })
            };
            l_fake = add(l_fake, disc_fake_loss(cfg.loss, fake_logits));
            l_real = add(l_real, disc_real_loss(cfg.loss, real_logits));
        }
        let (l_fake, l_real) = (
            l_fake.expect("at least one discriminator"),
            l_real.expect("at least one discriminator"),
        );
        // Sums over samples of each sample's mean logit (means are taken over the whole batch
        // after the all-reduce).
        let stats = DiscStep {
            loss_fake: scalar(l_fake.clone()),
            loss_real: scalar(l_real.clone()),
            fake_score: fake_sum / per_sample as f64,
            real_score: real_sum / per_sample as f64,
        };
        let grads = GradientsParams::from_grads((l_fake + l_real).backward(), &self.d);
        (grads, stats)
    }

    /// Adam on the discriminator with the lazily adjusted rate dlr·c, β₂^c (c = k/(k+1), k the R1
    /// interval); the D phase and the R1 phase share this optimizer.
    pub fn apply_discriminator_grads(&mut self, grads: GradientsParams) {
        let cfg = &self.state.config;
        let (dlr, _) = lazy_adam_adjust(cfg.dlr, cfg.beta2, cfg.r1_interval);
        self.d = self.d_opt.step(dlr, self.d.clone(), grads);
    }

    /// The D phase: [`Self::discriminator_grads`], summed over the peers, a finiteness check,
    /// [`Self::apply_discriminator_grads`]. Returns the losses (sums over the batch) and the mean
    /// logits over the batch.
    pub fn discriminator_step(&mut self, draws: &StepDraws) -> Result<DiscStep> {
        let (grads, st) = self.discriminator_grads(draws);
        let local = [st.loss_fake, st.loss_real, st.fake_score, st.real_score];
        let (grads, s) = self.all_reduce("discriminator gradients", grads, &self.d, &local)?;
        let n = self.state.config.batch_size as f64;
        let stats = DiscStep {
            loss_fake: s[0],
            loss_real: s[1],
            fake_score: s[2] / n,
            real_score: s[3] / n,
        };
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

    /// This peer's share of the R1 gradient on this step's real images (gain `r1_interval`, see
    /// [`crate::r1`]) and of the penalty mean ‖∇ₓD‖²: the shard's terms are means over its `m`
    /// samples, weighted by `m / N`, so their sum over the peers is the global batch's. Runs in
    /// exact float32 when [`GddConfig::r1_exact_f32`] is set.
    pub fn r1_grads(&self, draws: &StepDraws) -> (GradientsParams, f64) {
        let cfg = &self.state.config;
        let (chw, per, n, r) = (draws.chw, draws.per(), cfg.batch_size, self.shard());
        let _exact = cfg.r1_exact_f32.then(exact_f32::ExactGuard::new);
        let dev = &self.device;
        let labels = self.labels_on(&draws.real_labels[r.clone()], dev);
        let w = r.len() as f64 / n as f64;
        let real = rows::<B::InnerBackend>(&draws.real, per, r, chw, dev);
        // Every discriminator's logits side by side: R1 differentiates the sum of all of them.
        let dfn = |x: Tensor<B, 4>| {
            let x = to_rgb(x);
            let logits = self
                .d
                .iter()
                .zip(&self.feats)
                .map(|(d, f)| {
                    d.forward_grouped(&f.forward(x.clone()), labels.clone(), cfg.d_batch_group)
                })
                .collect();
            Tensor::cat(logits, 1)
        };
        let t = r1_terms(
            &dfn,
            real,
            cfg.r1_gamma,
            cfg.r1_interval as f64,
            cfg.r1_fd_step,
        );
        // The whole batch (one peer) keeps the surrogate as is: w = 1 exactly.
        let surrogate = if self.peer.is_none() {
            t.surrogate
        } else {
            t.surrogate.mul_scalar(w)
        };
        let grads = GradientsParams::from_grads(surrogate.backward(), &self.d);
        (grads, t.penalty * w)
    }

    /// The lazy R1 phase: [`Self::r1_grads`], summed over the peers, a finiteness check, and its
    /// own step of the discriminator's optimizer. Returns the penalty.
    pub fn r1_step(&mut self, draws: &StepDraws) -> Result<f64> {
        let (grads, penalty) = self.r1_grads(draws);
        let (grads, s) = self.all_reduce("R1 gradients", grads, &self.d, &[penalty])?;
        self.check("R1 penalty", s[0])?;
        self.apply_discriminator_grads(grads);
        Ok(s[0])
    }

    /// The generator EMA with EDM's half-life ramp at the images seen before this step. Every
    /// peer updates its own EMA from its own generator; the generators are identical (same
    /// reduced gradients, same Adam state), so the EMAs are too (checked by the data-parallel
    /// tests, which compare every peer's EMA bit for bit).
    pub fn ema_step(&mut self) {
        let beta = self.state.config.ema_beta(self.state.cur_nimg);
        self.ema = edm_core::ema_update(self.ema.clone(), &self.g.valid(), beta);
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
        // One file per discriminator: `d.bin` (the first: a single-backbone checkpoint keeps the
        // layout it always had), `d1.bin`, `d2.bin`, ... for the others.
        for (i, d) in self.d.iter().enumerate() {
            save_record::<B, _>(d.clone().into_record(), &tmp.join(disc_file(i, "bin")))?;
        }
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
    /// `teacher` supplies the architecture (its weights are replaced by the checkpoint's);
    /// `backbones` must be the checkpoint's configured feature networks, in order.
    pub fn resume(
        dir: &Path,
        teacher: EdmPrecond<B>,
        backbones: impl Into<Backbones<B>>,
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
        let mut t = Self::new(teacher, backbones, state.config.clone(), device)?;
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
        t.d =
            t.d.drain(..)
                .enumerate()
                .map(|(i, d)| d.load_file(ck.join(disc_file(i, "")), &rec, device))
                .collect::<std::result::Result<_, _>>()
                .map_err(cerr)?;
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

/// Checkpoint file of discriminator `i` with extension `ext` (`""`: none, as burn's file recorder
/// takes it): `d` for the first, `d1`, `d2`, ... for the others.
fn disc_file(i: usize, ext: &str) -> String {
    let stem = if i == 0 {
        "d".to_string()
    } else {
        format!("d{i}")
    };
    if ext.is_empty() {
        stem
    } else {
        format!("{stem}.{ext}")
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
