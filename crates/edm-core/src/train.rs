//! EDM training (`training/training_loop.py`, with [`crate::loss`]'s EDMLoss): Adam with a linear
//! learning-rate ramp, EMA with half-life and ramp-up, and atomic, resumable checkpoints.
//!
//! Randomness (batch indices, σ, noise) is drawn on the host from a generator seeded by (seed, step), so
//! a resumed run continues exactly as the uninterrupted one would.
//!
//! Not implemented: EDM's `AugmentPipe` (geometric/colour augmentation producing the 9 augment labels).
//! Networks with `augment_dim > 0` train with `augment_labels = None`, which EDM's networks treat as "no
//! augmentation" (the `map_augment` term is skipped), as EDM itself does when `--augment=0`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::config::EdmConfig;
use crate::data::ImageDataset;
use crate::error::{EdmError, Result};
use crate::loss::{edm_loss, DenoisingLoss, EdmLossConfig};
use crate::precond::EdmPrecond;
use formats::{resume_dir, write_atomic, CheckpointSwap};

/// Training hyper-parameters (EDM's `train.py` options, with its defaults where they make sense).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub batch_size: usize,
    /// Training length in thousands of images (EDM's `--duration` is in Mimg).
    pub total_kimg: f64,
    /// Adam learning rate (EDM: 10e-4).
    pub lr: f64,
    /// Linear learning-rate ramp length (EDM: 10000 kimg).
    pub lr_rampup_kimg: f64,
    /// EMA half-life (EDM: 500 kimg).
    pub ema_halflife_kimg: f64,
    /// EMA ramp-up ratio (EDM: 0.05; None disables).
    pub ema_rampup_ratio: Option<f64>,
    pub loss: EdmLossConfig,
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Progress tick in kimg (EDM's `--tick`): one `stats.jsonl` record and one `log.txt` line per
    /// tick.
    #[serde(default = "default_tick_kimg")]
    pub tick_kimg: f64,
    /// Save the EMA network as `network-snapshot-KKKKKK/` every this many ticks and at the end
    /// (EDM's `--snap`; 0: never).
    #[serde(default)]
    pub snap_ticks: usize,
}

fn default_tick_kimg() -> f64 {
    50.0
}

/// The options a resumed run may change ([`train_run`]): its length and how often it reports,
/// snapshots and checkpoints. Every other option, and the network, must match the saved run.
pub const RESUMABLE_OPTIONS: &[&str] =
    &["total_kimg", "checkpoint_every", "tick_kimg", "snap_ticks"];

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            batch_size: 512,
            total_kimg: 200_000.0,
            lr: 10e-4,
            lr_rampup_kimg: 10_000.0,
            ema_halflife_kimg: 500.0,
            ema_rampup_ratio: Some(0.05),
            loss: EdmLossConfig::default(),
            seed: 0,
            checkpoint_every: 500,
            tick_kimg: default_tick_kimg(),
            snap_ticks: 50,
        }
    }
}

impl TrainOptions {
    /// EDM's learning rate at `cur_nimg` images seen: lr·min(cur_nimg / (lr_rampup_kimg·1000), 1).
    pub fn lr_at(&self, cur_nimg: u64) -> f64 {
        self.lr * (cur_nimg as f64 / (self.lr_rampup_kimg * 1000.0).max(1e-8)).min(1.0)
    }

    /// EDM's EMA decay β at `cur_nimg` (see [`ema_beta`]).
    pub fn ema_beta(&self, cur_nimg: u64) -> f64 {
        ema_beta(
            self.batch_size,
            self.ema_halflife_kimg,
            self.ema_rampup_ratio,
            cur_nimg,
        )
    }

    pub fn total_steps(&self) -> usize {
        ((self.total_kimg * 1000.0) / self.batch_size as f64).ceil() as usize
    }
}

/// EDM's EMA decay β after `cur_nimg` images: 0.5^(batch / max(halflife, 1e-8)), the half-life
/// (`halflife_kimg`·1000 images) capped at `cur_nimg`·`rampup_ratio` early in training when a ramp-up
/// is set. GDD's distillation uses the same schedule.
pub fn ema_beta(
    batch_size: usize,
    halflife_kimg: f64,
    rampup_ratio: Option<f64>,
    cur_nimg: u64,
) -> f64 {
    let mut halflife = halflife_kimg * 1000.0;
    if let Some(r) = rampup_ratio {
        halflife = halflife.min(cur_nimg as f64 * r);
    }
    0.5f64.powf(batch_size as f64 / halflife.max(1e-8))
}

/// What a checkpoint's `training_state.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    pub step: usize,
    pub cur_nimg: u64,
    pub options: TrainOptions,
    pub last_loss: f64,
}

/// Per-step report passed to the progress callback.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    pub step: usize,
    pub total_steps: usize,
    pub cur_nimg: u64,
    /// Mean over the batch of the per-image summed weighted loss, divided by pixels (EDM's `Loss/loss`).
    pub loss: f64,
    pub lr: f64,
}

/// The host-side random draws of one training step (deterministic in (seed, step)).
struct StepDraws {
    indices: Vec<usize>,
    sigma: Vec<f32>,
    noise: Vec<f32>,
}

fn step_draws(
    seed: u64,
    step: usize,
    batch: usize,
    len: usize,
    per: usize,
    loss: &EdmLossConfig,
) -> StepDraws {
    let mut rng =
        ChaCha12Rng::seed_from_u64(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let indices = (0..batch).map(|_| rng.random_range(0..len)).collect();
    let sigma = (0..batch)
        .map(|_| loss.draw_sigma(&mut rng) as f32)
        .collect();
    let noise = (0..batch * per)
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect();
    StepDraws {
        indices,
        sigma,
        noise,
    }
}

/// Collects every float parameter of a module (flattened) by id.
struct Collect<B: Backend> {
    params: HashMap<ParamId, Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.params.insert(param.id, t.reshape([n]));
    }
}

/// ema ← net + (ema − net)·β for every parameter with the same id (EDM's `lerp`).
struct EmaUpdate<B: Backend> {
    net: HashMap<ParamId, Tensor<B, 1>>,
    beta: f64,
}

impl<B: Backend> ModuleMapper<B> for EmaUpdate<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let id = param.id;
        match self.net.remove(&id) {
            Some(net) => {
                let beta = self.beta;
                param.map(|ema| {
                    let shape = ema.shape();
                    let net = net.reshape(shape);
                    net.clone() + (ema - net).mul_scalar(beta)
                })
            }
            None => param,
        }
    }
}

/// Updates `ema` towards `net` (same parameter ids) with decay `beta`.
pub fn ema_update<B: Backend>(ema: EdmPrecond<B>, net: &EdmPrecond<B>, beta: f64) -> EdmPrecond<B> {
    let mut c = Collect {
        params: HashMap::new(),
    };
    net.visit(&mut c);
    ema.map(&mut EmaUpdate {
        net: c.params,
        beta,
    })
}

type Rec = NamedMpkFileRecorder<FullPrecisionSettings>;

/// Writes a burn record as `Rec` would (named MessagePack, the same bytes), but through
/// [`formats::write_atomic`]: burn's file recorder flattens the OS error into a string, so a full
/// disk surfaced as "invalid value write: ... MessagePack"; here it is `FormatError::NoSpace` naming
/// the file (issue 21).
fn save_record<B: Backend, R: burn::record::Record<B>>(record: R, path: &Path) -> Result<()> {
    let bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(record, ())
        .map_err(|e| EdmError::Input(format!("encoding {}: {e}", path.display())))?;
    write_atomic(path, &bytes)?;
    Ok(())
}

/// A training run: network, EMA, optimizer, position. Create with [`Trainer::new`] or
/// [`Trainer::resume`], advance with [`Trainer::step`], persist with [`Trainer::checkpoint`].
pub struct Trainer<B: AutodiffBackend> {
    pub net: EdmPrecond<B>,
    pub ema: EdmPrecond<B::InnerBackend>,
    /// This trainer's place in a data-parallel run (`None`: it is the whole run); see
    /// [`Trainer::set_peer`].
    peer: Option<parallel::Peer<B::InnerBackend>>,
    optim: burn::optim::adaptor::OptimizerAdaptor<burn::optim::Adam, EdmPrecond<B>, B>,
    pub state: TrainingState,
    device: B::Device,
    /// What a forced resume kept despite differing options (logged once by [`train_run`]).
    resume_note: Option<String>,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A fresh run: EDM-initialised network (from `options.seed`), EMA = network.
    pub fn new(config: &EdmConfig, options: TrainOptions, device: &B::Device) -> Result<Self> {
        let net = EdmPrecond::<B>::init(config, options.seed, device)?;
        Ok(Self::from_network(net, options, device))
    }

    /// Starts from given weights (e.g. fine-tuning a loaded network).
    pub fn from_network(net: EdmPrecond<B>, options: TrainOptions, device: &B::Device) -> Self {
        let ema = net.valid();
        Trainer {
            net,
            ema,
            peer: None,
            optim: Self::adam().init(),
            state: TrainingState {
                step: 0,
                cur_nimg: 0,
                options,
                last_loss: f64::NAN,
            },
            device: device.clone(),
            resume_note: None,
        }
    }

    /// EDM's optimizer: Adam, betas (0.9, 0.999), eps 1e-8.
    fn adam() -> AdamConfig {
        AdamConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.999)
            .with_epsilon(1e-8)
    }

    /// Makes this trainer one data-parallel peer of a run (crate `parallel`): every step draws the
    /// global batch as one device would, runs the forward and backward passes on this peer's
    /// contiguous shard of it with the loss scaled to the global batch (`sum / batch`), and sums
    /// the gradients and the loss over all peers in one all-reduce before Adam; every peer thus
    /// takes the same step, and its EMA (updated from the identical network) stays identical too.
    /// The batch must have at least one image per peer.
    ///
    /// The network is forked (same values and parameter ids, new autodiff leaves): peers built
    /// from clones of one network would otherwise share leaves, hence one burn-autodiff graph,
    /// and could deadlock (see `parallel::run_node`).
    pub fn set_peer(&mut self, peer: Option<parallel::Peer<B::InnerBackend>>) -> Result<()> {
        if let Some(p) = &peer {
            p.shard(self.state.options.batch_size)?;
            self.net = self.net.clone().fork(&self.device);
        }
        self.peer = peer;
        Ok(())
    }

    /// Whether this trainer writes the run's outputs (rank 0, or the only trainer).
    pub fn is_rank0(&self) -> bool {
        self.peer.as_ref().is_none_or(|p| p.rank == 0)
    }

    /// One optimisation step on a batch drawn from `data` (this peer's shard of it, when
    /// data-parallel); returns the step's report.
    pub fn step(&mut self, data: &ImageDataset) -> Result<StepReport> {
        let opts = &self.state.options;
        let cfg = &self.net.config;
        if data.channels != cfg.img_channels || data.resolution != cfg.img_resolution {
            return Err(EdmError::Input(format!(
                "dataset is {}x{}x{}, network expects {}x{}x{}",
                data.channels,
                data.resolution,
                data.resolution,
                cfg.img_channels,
                cfg.img_resolution,
                cfg.img_resolution
            )));
        }
        if data.len == 0 {
            return Err(EdmError::Input("empty dataset".into()));
        }
        let (bs, c, r) = (opts.batch_size, data.channels, data.resolution);
        let per = c * r * r;
        let d = step_draws(opts.seed, self.state.step, bs, data.len, per, &opts.loss);
        // This peer's rows of the global batch (all of them without a peer).
        let rows = match &self.peer {
            Some(p) => p.shard(bs)?,
            None => 0..bs,
        };
        let m = rows.len();
        let mut images = Vec::with_capacity(m * per);
        for &i in &d.indices[rows.clone()] {
            images.extend_from_slice(data.image(i));
        }
        let dev = &self.device;
        let images = Tensor::<B, 4>::from_data(TensorData::new(images, [m, c, r, r]), dev);
        let sigma = d.sigma[rows.clone()].to_vec();
        let sigma = Tensor::<B, 1>::from_data(TensorData::new(sigma, [m]), dev);
        let noise = d.noise[rows.start * per..rows.end * per].to_vec();
        let noise = Tensor::<B, 4>::from_data(TensorData::new(noise, [m, c, r, r]), dev);
        let labels = match (&data.labels, cfg.label_dim) {
            (_, 0) => None,
            (Some(l), dim) => {
                let mut onehot = vec![0f32; m * dim];
                for (k, &i) in d.indices[rows.clone()].iter().enumerate() {
                    if l[i] >= dim {
                        return Err(EdmError::Input(format!("label {} ≥ label_dim {dim}", l[i])));
                    }
                    onehot[k * dim + l[i]] = 1.0;
                }
                Some(Tensor::<B, 2>::from_data(
                    TensorData::new(onehot, [m, dim]),
                    dev,
                ))
            }
            (None, _) => {
                return Err(EdmError::Input(
                    "conditional network needs a labelled dataset".into(),
                ))
            }
        };

        let loss = edm_loss(
            &self.net,
            images,
            sigma,
            noise,
            labels,
            opts.loss.sigma_data,
        );
        // EDM: loss.sum() / batch, so each image contributes its summed weighted error (over the
        // global batch: the peers' gradients and losses then sum to one device's).
        let loss = loss.sum().div_scalar(bs as f64);
        let value: f64 = burn::tensor::ElementConversion::elem(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &self.net);
        let (grads, value) = match &self.peer {
            None => (grads, value),
            Some(p) => {
                let (g, s) = p.all_reduce_gradients::<B, _>(
                    "gradients",
                    grads,
                    &self.net,
                    &[value],
                    parallel::Reduction::Sum,
                    dev,
                )?;
                (g, s[0])
            }
        };
        // Checked on the global loss, so every peer stops together.
        if !value.is_finite() {
            return Err(EdmError::NonFinite(format!(
                "loss {value} at step {}",
                self.state.step
            )));
        }
        let lr = opts.lr_at(self.state.cur_nimg);
        self.net = self.optim.step(lr, self.net.clone(), grads);

        let beta = opts.ema_beta(self.state.cur_nimg);
        let ema = std::mem::replace(&mut self.ema, self.net.valid());
        self.ema = ema_update(ema, &self.net.valid(), beta);

        self.state.cur_nimg += bs as u64;
        self.state.step += 1;
        self.state.last_loss = value / per as f64;
        Ok(StepReport {
            step: self.state.step,
            total_steps: opts.total_steps(),
            cur_nimg: self.state.cur_nimg,
            loss: value / per as f64,
            lr,
        })
    }

    /// Writes `dir/checkpoint/` atomically: `net.mpk`, `ema.mpk`, `optim.mpk` (burn records, exact
    /// resume), `training_state.json`, and the EMA as a loadable EDM model (`config.json` +
    /// `model.safetensors`, EDM names). The previous checkpoint is replaced only once the new one is
    /// complete.
    pub fn checkpoint(&self, dir: &Path) -> Result<PathBuf> {
        let swap = CheckpointSwap::begin(dir)?;
        let tmp = swap.staging();
        save_record::<B, _>(self.net.clone().into_record(), &tmp.join("net.mpk"))?;
        save_record::<B::InnerBackend, _>(self.ema.clone().into_record(), &tmp.join("ema.mpk"))?;
        save_record::<B, _>(self.optim.to_record(), &tmp.join("optim.mpk"))?;
        self.ema.save(tmp)?;
        let state = serde_json::to_string_pretty(&self.state).expect("state serialises");
        write_atomic(&tmp.join("training_state.json"), state.as_bytes())?;
        Ok(swap.commit()?)
    }

    /// Resumes from `dir/checkpoint/` (or `checkpoint.old` if a crash interrupted the swap).
    pub fn resume(dir: &Path, device: &B::Device) -> Result<Self> {
        let ck = resume_dir(dir, "training_state.json");
        let state_path = ck.join("training_state.json");
        let text =
            std::fs::read_to_string(&state_path).map_err(|e| EdmError::io(&state_path, e))?;
        let state: TrainingState = serde_json::from_str(&text).map_err(|e| EdmError::Config {
            path: state_path.clone(),
            message: e.to_string(),
        })?;
        let config = EdmConfig::from_file(ck.join("config.json"))?;
        let load_err = |what: &str, e: burn::record::RecorderError| {
            EdmError::Input(format!("loading {what} from {}: {e}", ck.display()))
        };
        let net = EdmPrecond::<B>::init(&config, state.options.seed, device)?;
        let net = net.load_record(
            Rec::new()
                .load(ck.join("net"), device)
                .map_err(|e| load_err("net", e))?,
        );
        let ema = EdmPrecond::<B::InnerBackend>::init(&config, state.options.seed, device)?;
        let ema = ema.load_record(
            Rec::new()
                .load(ck.join("ema"), device)
                .map_err(|e| load_err("ema", e))?,
        );
        let optim = Self::adam().init().load_record(
            Rec::new()
                .load(ck.join("optim"), device)
                .map_err(|e| load_err("optimizer", e))?,
        );
        Ok(Trainer {
            net,
            ema,
            peer: None,
            optim,
            state,
            device: device.clone(),
            resume_note: None,
        })
    }
}

/// [`train_run`] without `--force`, reporting only the steps.
pub fn train<B: AutodiffBackend>(
    config: &EdmConfig,
    data: &ImageDataset,
    options: TrainOptions,
    out_dir: &Path,
    device: &B::Device,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<Trainer<B>> {
    train_run(config, data, options, out_dir, false, device, &mut |e| {
        if let TrainEvent::Step(r) = e {
            on_step(r)
        }
    })
}

/// What [`train_run`] reports to its caller.
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// After every step.
    Step(&'a StepReport),
    /// A line the run also appended to `out_dir/log.txt` (the options, resume notes, each tick).
    Log(&'a str),
    /// After every tick (also a line of `out_dir/stats.jsonl`).
    Tick(&'a TickReport),
}

/// One progress tick (EDM's `--tick`): a line of `stats.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TickReport {
    /// The step the tick ended at.
    pub step: usize,
    /// Tick number: ⌈images seen / images per tick⌉, so a resumed run numbers ticks as the
    /// uninterrupted one would.
    pub tick: u64,
    pub kimg: f64,
    /// Mean of the steps' losses in this tick (since the resume, for a resumed run's first tick).
    pub loss: f64,
    /// Steps the mean is over.
    pub steps: usize,
    pub lr: f64,
    pub sec_per_tick: f64,
    pub sec_per_kimg: f64,
    /// Seconds since this process started training.
    pub total_sec: f64,
    /// Unix time in seconds.
    pub timestamp: f64,
}

impl TickReport {
    /// The tick as one line of `log.txt` (EDM's progress line).
    pub fn line(&self) -> String {
        format!(
            "tick {:<5} step {:<7} kimg {:<9.3} loss {:<8.4} lr {:<9.2e} sec/tick {:<7.1} sec/kimg {:<8.2} total {:.0}s",
            self.tick,
            self.step,
            self.kimg,
            self.loss,
            self.lr,
            self.sec_per_tick,
            self.sec_per_kimg,
            self.total_sec
        )
    }
}

/// `out_dir/log.txt`: what the run prints, appended to by a resumed run, emptied by a fresh one.
struct LogTxt {
    file: std::fs::File,
    path: PathBuf,
}

impl LogTxt {
    fn open(path: PathBuf, append: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .map_err(|e| EdmError::io(&path, e))?;
        Ok(LogTxt { file, path })
    }

    fn line(&mut self, line: &str) -> Result<()> {
        use std::io::Write;
        writeln!(self.file, "{line}").map_err(|e| EdmError::io(&self.path, e))
    }
}

/// The saved or given options and network of a run, as [`formats::compare_options`] compares them
/// (the network's config under `network`).
fn run_options(config: &EdmConfig, options: &TrainOptions) -> serde_json::Value {
    let mut v = serde_json::to_value(options).expect("options serialise");
    v["network"] = serde_json::to_value(config).expect("config serialises");
    v
}

/// Trains to `options.total_kimg`, holding `out_dir/run.lock` throughout (a second run on the same
/// folder is refused). Resumes from `out_dir/checkpoint` when present: the saved options and
/// network must equal `options` and `config` except [`RESUMABLE_OPTIONS`], or the run is refused
/// with [`EdmError::OptionsChanged`] naming every difference; with `force` it continues with the
/// saved values and logs the differences. Writes checkpoints every `checkpoint_every` steps and at
/// the end, `stats.jsonl` (one [`TickReport`] per tick; a resume drops the records after its
/// checkpoint), `log.txt` (every [`TrainEvent::Log`] line), `events.out.tfevents.*` (the same
/// numbers for TensorBoard: `tensorboard --logdir OUT` while the run goes) and, every `snap_ticks`
/// ticks and at the end, `network-snapshot-KKKKKK/` (the EMA network, KKKKKK its kimg, EDM's name).
pub fn train_run<B: AutodiffBackend>(
    config: &EdmConfig,
    data: &ImageDataset,
    options: TrainOptions,
    out_dir: &Path,
    force: bool,
    device: &B::Device,
    on_event: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<Trainer<B>> {
    train_run_parallel(
        config,
        data,
        options,
        out_dir,
        force,
        &parallel::ParallelConfig::local(1),
        device,
        on_event,
    )
}

/// [`train_run`], data-parallel (crate `parallel`): one peer per device of `device`'s kind
/// (`pcfg.devices`) on this node, and `pcfg.nodes` nodes through the orchestrator. Every peer has
/// its own [`Trainer`] ([`Trainer::set_peer`]: its shard of each global batch, gradients summed
/// over the peers); only global rank 0 (on node 0, which also holds `run.lock`) writes the
/// checkpoints, `log.txt`, `stats.jsonl`, the TensorBoard events and the snapshots. Every peer
/// resumes from the same `out_dir/checkpoint` (several machines need the folder shared or copied)
/// and the peers check that they start at the same step; the checkpoint holds no peer count, so a
/// run resumes on any number of peers. Returns the trainer of this node's first peer, which
/// reports to `on_event`.
#[allow(clippy::too_many_arguments)]
pub fn train_run_parallel<B: AutodiffBackend>(
    config: &EdmConfig,
    data: &ImageDataset,
    options: TrainOptions,
    out_dir: &Path,
    force: bool,
    pcfg: &parallel::ParallelConfig,
    device: &B::Device,
    on_event: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<Trainer<B>> {
    // One writer per output folder for the whole run (node 0, before any peer reads a
    // checkpoint); what an interrupted write left is removed only under that lock.
    let lock = if pcfg.is_first_node() {
        let lock = formats::RunLock::acquire(out_dir)?;
        lock.clean_leftovers("training_state.json")?;
        Some(lock)
    } else {
        None
    };
    let resumed = out_dir.join("checkpoint").exists() || out_dir.join("checkpoint.old").exists();
    let devices = parallel::devices::<B::InnerBackend>(device, pcfg.devices)?;
    let start = |peer: Option<parallel::Peer<B::InnerBackend>>, dev: &B::Device| {
        let mut t = start_trainer::<B>(config, &options, out_dir, force, resumed, dev)?;
        if let Some(p) = &peer {
            // Every peer must start at the same step (a node that found no checkpoint while
            // node 0 resumed would otherwise train other weights with the same gradients).
            let step = t.state.step as f64;
            let s = p.all_reduce_scalars("start", &[step, 1.0], parallel::Reduction::Sum, dev)?;
            if s[0] != step * s[1] {
                return Err(EdmError::Input(format!(
                    "peer {} starts at step {step} but the peers' mean start step is {}: every \
                     node needs the same checkpoint (share the output folder or copy it)",
                    p.rank,
                    s[0] / s[1]
                )));
            }
        }
        t.set_peer(peer)?;
        Ok::<_, EdmError>(t)
    };
    let (trainer, _) = parallel::run_node::<B::InnerBackend, _, _, EdmError, _, _>(
        pcfg,
        &devices,
        |peer, dev| train_loop(start(peer, dev)?, data, out_dir, resumed, Some(on_event)),
        |peer, dev| train_loop(start(Some(peer), dev)?, data, out_dir, resumed, None).map(drop),
    )?;
    drop(lock);
    Ok(trainer)
}

/// A peer's trainer on `device`: resumed from `out_dir/checkpoint` (refused with
/// [`EdmError::OptionsChanged`] when the options differ, unless `force`) or fresh.
fn start_trainer<B: AutodiffBackend>(
    config: &EdmConfig,
    options: &TrainOptions,
    out_dir: &Path,
    force: bool,
    resumed: bool,
    device: &B::Device,
) -> Result<Trainer<B>> {
    let options = options.clone();
    Ok(if resumed {
        let mut t = Trainer::<B>::resume(out_dir, device)?;
        let saved = run_options(&t.net.config, &t.state.options);
        if let Err(changed) =
            formats::compare_options(&saved, &run_options(config, &options), RESUMABLE_OPTIONS)
        {
            if !force {
                return Err(EdmError::OptionsChanged {
                    dir: out_dir.to_path_buf(),
                    changed,
                });
            }
            t.resume_note = Some(format!(
                "--force: continuing with the saved values; {changed}"
            ));
        }
        let o = &mut t.state.options;
        o.total_kimg = options.total_kimg;
        o.checkpoint_every = options.checkpoint_every;
        o.tick_kimg = options.tick_kimg;
        o.snap_ticks = options.snap_ticks;
        t
    } else {
        Trainer::<B>::new(config, options, device)?
    })
}

/// One peer's training loop ([`train_run_parallel`]); rank 0 also writes the outputs, and a peer
/// given `on_event` reports to it.
fn train_loop<B: AutodiffBackend>(
    mut trainer: Trainer<B>,
    data: &ImageDataset,
    out_dir: &Path,
    resumed: bool,
    mut on_event: Option<&mut dyn FnMut(TrainEvent<'_>)>,
) -> Result<Trainer<B>> {
    let writer = trainer.is_rank0();
    let mut on_event = |e: TrainEvent<'_>| {
        if let Some(f) = on_event.as_mut() {
            f(e)
        }
    };
    let total = trainer.state.options.total_steps();
    if trainer.state.options.batch_size == 0 {
        return Err(EdmError::Input(
            "batch size 0: every step needs at least one image".into(),
        ));
    }
    if total == 0 {
        // Zero steps would write no checkpoint, yet a caller would report a model (issue 21).
        return Err(EdmError::Input(format!(
            "{} kimg at batch {} is 0 training steps: nothing would be trained or written",
            trainer.state.options.total_kimg, trainer.state.options.batch_size
        )));
    }
    // Rank 0 alone writes log.txt, stats.jsonl and the TensorBoard events.
    let mut log = match writer {
        true => Some(LogTxt::open(out_dir.join("log.txt"), resumed)?),
        false => None,
    };
    let mut say = |line: &str, on_event: &mut dyn FnMut(TrainEvent<'_>)| -> Result<()> {
        if let Some(log) = log.as_mut() {
            log.line(line)?;
        }
        on_event(TrainEvent::Log(line));
        Ok(())
    };
    let opts = trainer.state.options.clone();
    if resumed {
        say(
            &format!(
                "resumed from {} at step {} ({:.3} kimg)",
                out_dir.join("checkpoint").display(),
                trainer.state.step,
                trainer.state.cur_nimg as f64 / 1000.0
            ),
            &mut on_event,
        )?;
        if let Some(note) = trainer.resume_note.take() {
            say(&note, &mut on_event)?;
        }
    }
    say(
        &format!(
            "training options: {}",
            serde_json::to_string(&opts).expect("options serialise")
        ),
        &mut on_event,
    )?;
    if let Some(p) = &trainer.peer {
        say(
            &format!("data-parallel over {} devices", p.world),
            &mut on_event,
        )?;
    }
    let stats_path = out_dir.join("stats.jsonl");
    let mut stats = match (writer, resumed) {
        (false, _) => None,
        (true, true) => {
            Some(formats::MetricsLog::resume(&stats_path, trainer.state.step as u64)?.0)
        }
        (true, false) => Some(formats::MetricsLog::create(&stats_path)?),
    };
    // TensorBoard's live view of the same numbers: each step's loss, each tick's record.
    let mut board = match writer {
        true => Some(formats::EventWriter::create(out_dir)?),
        false => None,
    };
    let every = opts.checkpoint_every.max(1);
    let tick_nimg = ((opts.tick_kimg * 1000.0).round() as u64).max(1);
    let started = std::time::Instant::now();
    let (mut tick_started, mut tick_nimg0) = (started, trainer.state.cur_nimg);
    let (mut tick_loss, mut tick_steps) = (0.0, 0usize);
    while trainer.state.step < total {
        let before = trainer.state.cur_nimg;
        let report = trainer.step(data)?;
        on_event(TrainEvent::Step(&report));
        let (step, nimg) = (trainer.state.step, trainer.state.cur_nimg);
        if let Some(b) = board.as_mut() {
            b.scalar("Loss/step", step as i64, report.loss as f32)?;
        }
        if writer && (step % every == 0 || step == total) {
            trainer.checkpoint(out_dir)?;
        }
        tick_loss += report.loss;
        tick_steps += 1;
        if nimg / tick_nimg == before / tick_nimg && step != total {
            continue;
        }
        let now = std::time::Instant::now();
        let secs = now.duration_since(tick_started).as_secs_f64();
        let tick = TickReport {
            step,
            tick: nimg.div_ceil(tick_nimg),
            kimg: nimg as f64 / 1000.0,
            loss: tick_loss / tick_steps as f64,
            steps: tick_steps,
            lr: report.lr,
            sec_per_tick: secs,
            sec_per_kimg: secs / ((nimg - tick_nimg0) as f64 / 1000.0).max(1e-9),
            total_sec: now.duration_since(started).as_secs_f64(),
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        };
        if let Some(s) = stats.as_mut() {
            s.append(&serde_json::to_value(&tick).expect("tick serialises"))?;
        }
        for (tag, v) in [
            ("Loss/tick_mean", tick.loss),
            ("Progress/kimg", tick.kimg),
            ("Progress/lr", tick.lr),
            ("Timing/sec_per_kimg", tick.sec_per_kimg),
        ] {
            if let Some(b) = board.as_mut() {
                b.scalar(tag, step as i64, v as f32)?;
            }
        }
        on_event(TrainEvent::Tick(&tick));
        say(&tick.line(), &mut on_event)?;
        if writer
            && opts.snap_ticks > 0
            && (tick.tick.is_multiple_of(opts.snap_ticks as u64) || step == total)
        {
            let snap = out_dir.join(format!("network-snapshot-{:06}", nimg / 1000));
            trainer.ema.save(&snap)?;
            say(&format!("saved {}", snap.display()), &mut on_event)?;
        }
        (tick_started, tick_nimg0, tick_loss, tick_steps) = (now, nimg, 0.0, 0);
    }
    Ok(trainer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_ramp_and_ema_beta_follow_edm() {
        let o = TrainOptions {
            batch_size: 512,
            ..Default::default()
        };
        assert_eq!(o.lr_at(0), 0.0);
        assert!((o.lr_at(5_000_000) - 5e-4).abs() < 1e-15);
        assert!((o.lr_at(20_000_000) - 1e-3).abs() < 1e-15);
        // cur_nimg = 0: half-life ramps to 0, β = 0 (EMA copies the network)
        assert_eq!(o.ema_beta(0), 0.0);
        // cur_nimg = 1M: half-life min(500k, 50k) = 50k; β = 0.5^(512/50000)
        assert!((o.ema_beta(1_000_000) - 0.5f64.powf(512.0 / 50_000.0)).abs() < 1e-15);
        // late: half-life 500k
        assert!((o.ema_beta(100_000_000) - 0.5f64.powf(512.0 / 500_000.0)).abs() < 1e-15);
    }
}
