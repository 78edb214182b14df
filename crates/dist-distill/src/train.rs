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
//! Randomness is counter-based: everything a step draws comes from `StdRng(seed, step, stream)`, so
//! resuming from a checkpoint (parameters, EMA, both Adam states, step) reproduces the uninterrupted
//! run exactly. A non-finite loss stops training with [`DistillError::NonFinite`], leaving the last
//! good checkpoint in place.

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use edm_core::{EdmPrecond, ImageDataset};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::disc::{DiscConfig, MultiScaleD, ProjectedFeatures};
use crate::effnet::EfficientNetLite0;
use crate::error::{DistillError, Result};
use crate::freeze::{is_frozen, FreezeReport};
use crate::generator::{generate, OneStep};
use crate::loss::{disc_fake_loss, disc_real_loss, generator_loss, lazy_adam_adjust, LossType};
use crate::r1::r1_terms;

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

    /// EDM/GDD EMA decay at `cur_nimg`.
    pub fn ema_beta(&self, cur_nimg: u64) -> f64 {
        let mut h = self.ema_halflife_kimg * 1000.0;
        if self.ema_rampup_ratio > 0.0 {
            h = h.min(cur_nimg as f64 * self.ema_rampup_ratio);
        }
        0.5f64.powf(self.batch_size as f64 / h.max(1e-8))
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
fn step_rng(seed: u64, step: u64, stream: u64) -> StdRng {
    let mut s = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(stream.wrapping_mul(0x94D0_49BB_1331_11EB));
    s ^= s >> 31;
    StdRng::seed_from_u64(s)
}

fn normal<B: Backend>(rng: &mut StdRng, shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// A batch of real images (and labels) drawn uniformly with replacement.
fn real_batch<B: Backend>(
    data: &ImageDataset,
    rng: &mut StdRng,
    n: usize,
    device: &B::Device,
) -> (Tensor<B, 4>, Vec<usize>) {
    let per = data.channels * data.resolution * data.resolution;
    let mut v = Vec::with_capacity(n * per);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let i = rng.random_range(0..data.len);
        v.extend_from_slice(data.image(i));
        labels.push(data.labels.as_ref().map(|l| l[i]).unwrap_or(0));
    }
    let t = Tensor::from_data(
        TensorData::new(v, [n, data.channels, data.resolution, data.resolution]),
        device,
    );
    (t, labels)
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
        })
    }

    fn labels(&self, ids: &[usize]) -> Option<Tensor<B, 2>> {
        let classes = self.g.config.label_dim;
        (self.state.config.cond && classes > 0).then(|| one_hot(ids, classes, &self.device))
    }

    /// One training step (G, D, lazy R1, EMA).
    pub fn step(&mut self, data: &ImageDataset) -> Result<StepMetrics> {
        let started = std::time::Instant::now();
        let cfg = self.state.config.clone();
        let step = self.state.step;
        let n = cfg.batch_size;
        let shape = [n, data.channels, data.resolution, data.resolution];
        let classes = self.g.config.label_dim.max(1);
        let (dlr, _) = lazy_adam_adjust(cfg.dlr, cfg.beta2, cfg.r1_interval);

        self.d = self.d.clone().power_iteration();

        // --- G step ---
        let mut rng = step_rng(cfg.seed, step, 0);
        let z = normal::<B>(&mut rng, shape, &self.device);
        let g_ids: Vec<usize> = (0..n).map(|_| rng.random_range(0..classes)).collect();
        let g_labels = self.labels(&g_ids);
        let fake = generate(&self.g, z, g_labels.clone(), &self.one);
        let d_frozen = self.d.clone().no_grad();
        let logits = d_frozen.forward(&self.feats.forward(to_rgb(fake)), g_labels);
        let g_loss = generator_loss(cfg.loss, logits);
        let g_loss_v: f64 = g_loss.clone().into_scalar().elem::<f64>();
        self.check("generator loss", g_loss_v)?;
        let grads = GradientsParams::from_grads(g_loss.backward(), &self.g);
        self.g = self.g_opt.step(cfg.lr, self.g.clone(), grads);

        // --- D step ---
        let mut rng = step_rng(cfg.seed, step, 1);
        let z = normal::<B::InnerBackend>(&mut rng, shape, &self.device);
        let f_ids: Vec<usize> = (0..n).map(|_| rng.random_range(0..classes)).collect();
        let (real, r_ids) = real_batch::<B::InnerBackend>(data, &mut rng, n, &self.device);
        let g_inner = self.g.valid();
        let f_labels_inner = self.labels(&f_ids).map(|t| t.inner());
        let fake = generate(&g_inner, z, f_labels_inner, &self.one);
        let feats_inner = self.feats.valid();
        let both = feats_inner.forward(to_rgb(Tensor::cat(vec![fake, real.clone()], 0)));
        let split = |i: usize| -> [Tensor<B, 4>; 4] {
            both.clone().map(|f| {
                let [_, c, h, w] = f.dims();
                Tensor::from_inner(f.slice([i * n..(i + 1) * n, 0..c, 0..h, 0..w]))
            })
        };
        let fake_logits = self.d.forward(&split(0), self.labels(&f_ids));
        let real_logits = self.d.forward(&split(1), self.labels(&r_ids));
        let d_fake_score: f64 = fake_logits.clone().mean().into_scalar().elem::<f64>();
        let d_real_score: f64 = real_logits.clone().mean().into_scalar().elem::<f64>();
        let l_fake = disc_fake_loss(cfg.loss, fake_logits);
        let l_real = disc_real_loss(cfg.loss, real_logits);
        let d_loss_fake: f64 = l_fake.clone().into_scalar().elem::<f64>();
        let d_loss_real: f64 = l_real.clone().into_scalar().elem::<f64>();
        self.check("discriminator loss", d_loss_fake + d_loss_real)?;
        let grads = GradientsParams::from_grads((l_fake + l_real).backward(), &self.d);
        self.d = self.d_opt.step(dlr, self.d.clone(), grads);

        // --- lazy R1 ---
        let mut r1_penalty = None;
        if cfg.r1_interval > 0 && step != 0 && step.is_multiple_of(cfg.r1_interval as u64) {
            let labels = self.labels(&r_ids);
            let d = &self.d;
            let feats = &self.feats;
            let dfn = |x: Tensor<B, 4>| d.forward(&feats.forward(to_rgb(x)), labels.clone());
            let t = r1_terms(
                &dfn,
                real,
                cfg.r1_gamma,
                cfg.r1_interval as f64,
                cfg.r1_fd_step,
            );
            self.check("R1 penalty", t.penalty)?;
            r1_penalty = Some(t.penalty);
            let grads = GradientsParams::from_grads(t.surrogate.backward(), &self.d);
            self.d = self.d_opt.step(dlr, self.d.clone(), grads);
        }

        // --- EMA ---
        let beta = cfg.ema_beta(self.state.cur_nimg);
        self.ema = edm_core::ema_update(self.ema.clone(), &self.g.valid(), beta);

        self.state.step += 1;
        self.state.cur_nimg += n as u64;
        Ok(StepMetrics {
            step: self.state.step,
            kimg: self.state.cur_nimg as f64 / 1000.0,
            g_loss: g_loss_v,
            d_loss_fake,
            d_loss_real,
            d_fake_score,
            d_real_score,
            r1_penalty,
            images_per_sec: n as f64 / started.elapsed().as_secs_f64(),
        })
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

    /// One-step samples of the EMA generator for seeds `seeds` (noise from `StdRng(seed)`).
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
        let tmp = dir.join("checkpoint.tmp");
        let fin = dir.join("checkpoint");
        let old = dir.join("checkpoint.old");
        let io = |p: &Path, e| DistillError::io(p, e);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let rec = BinFileRecorder::<FullPrecisionSettings>::new();
        let ck = |p: &Path, e: burn::record::RecorderError| DistillError::Checkpoint {
            path: p.to_path_buf(),
            message: e.to_string(),
        };
        self.g
            .clone()
            .save_file(tmp.join("g"), &rec)
            .map_err(|e| ck(&tmp, e))?;
        self.d
            .clone()
            .save_file(tmp.join("d"), &rec)
            .map_err(|e| ck(&tmp, e))?;
        // The EMA twice: as a burn record (keeps the parameter ids the EMA update matches on) and in
        // EDM's format below.
        self.ema
            .clone()
            .save_file(tmp.join("ema_rec"), &rec)
            .map_err(|e| ck(&tmp, e))?;
        rec.record(self.g_opt.to_record(), tmp.join("g_opt"))
            .map_err(|e| ck(&tmp, e))?;
        rec.record(self.d_opt.to_record(), tmp.join("d_opt"))
            .map_err(|e| ck(&tmp, e))?;
        // The EMA in EDM's format, loadable by `edm_core::load_precond` and `gdd sample`.
        self.ema
            .save(tmp.join("ema"))
            .map_err(|e| DistillError::Edm(e.to_string()))?;
        let state = serde_json::to_vec_pretty(&self.state).expect("state serialises");
        std::fs::write(tmp.join("state.json"), state).map_err(|e| io(&tmp, e))?;
        if fin.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
            }
            std::fs::rename(&fin, &old).map_err(|e| io(&fin, e))?;
        }
        std::fs::rename(&tmp, &fin).map_err(|e| io(&tmp, e))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
        }
        Ok(fin)
    }

    /// Resumes from `DIR/checkpoint` (or `checkpoint.old` if a crash interrupted the rename).
    /// `teacher` supplies the architecture (its weights are replaced by the checkpoint's).
    pub fn resume(
        dir: &Path,
        teacher: EdmPrecond<B>,
        backbone: EfficientNetLite0<B>,
        device: &B::Device,
    ) -> Result<Self> {
        let mut ck = dir.join("checkpoint");
        if !ck.join("state.json").exists() {
            ck = dir.join("checkpoint.old");
        }
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

/// One-step samples from a generator for explicit seeds (one noise tensor per seed, `StdRng(seed)`).
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
        .map(|&s| normal::<B>(&mut StdRng::seed_from_u64(s), shape, device))
        .collect();
    let z = Tensor::cat(z, 0);
    let l = match (labels, c.label_dim) {
        (Some(l), k) if k > 0 => Some(one_hot(l, k, device)),
        _ => None,
    };
    generate(g, z, l, one)
}
