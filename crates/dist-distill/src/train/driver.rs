//! The GDD training driver: everything `gdd train` does around [`GddTrainer::step`], as a library
//! call (mirroring `edm_core::train`), so a binary is argument parsing plus [`run`].
//!
//! Output folder:
//! - `checkpoint/` (atomic swap, see [`GddTrainer::checkpoint`]), resumed from when present;
//! - `config.json` (the run's [`GddConfig`]) and `freeze_report.json`;
//! - `metrics.jsonl`: one [`StepMetrics`] per step, and one FID record per evaluation; a resumed
//!   run first drops the lines after its checkpoint's step ([`formats::MetricsLog`]), so no step
//!   appears twice;
//! - `run.lock`: held for the whole run ([`formats::RunLock`]): a second run on the same folder is
//!   refused.
//! - `grid-NNNNNN.png`: 8×8 one-step samples of the EMA generator (seeds 0..64).
//! - `events.out.tfevents.*` (one per process): the step metrics, the FID and the grids for
//!   TensorBoard ([`formats::EventWriter`]), so `tensorboard --logdir OUT` shows the run live.
//!
//! Data-parallel ([`RunOptions::parallel`], crate `parallel`): one peer per device (and node), each
//! with its own trainer ([`GddTrainer::set_peer`]); only global rank 0 takes the lock and writes
//! the outputs above. Every peer resumes from the same checkpoint (on several machines the output
//! folder must be shared, or the checkpoint copied to each), and the peers check at the start that
//! they all begin at the same step. The checkpoint holds no peer count: a run may resume on any
//! number of peers (the batch draws are for the global batch).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use edm_core::{EdmPrecond, ImageDataset};
use fid::FidEvaluator;
use formats::MetricsLog;
use serde::Serialize;

use parallel::{ParallelConfig, Peer, Reduction};

use super::{GddConfig, GddTrainer, StepMetrics};
use crate::disc::Backbones;
use crate::error::{DistillError, Result};
use crate::eval::{self, Sampler};
use crate::freeze::FreezeReport;

/// Where a run writes and how often it checkpoints, draws grids and evaluates; `B` is the backend
/// of the FID network (the trainer's inner backend).
pub struct RunOptions<B: Backend> {
    /// Output folder (created if missing).
    pub out_dir: PathBuf,
    /// Checkpoint every this many steps (and at the last step).
    pub checkpoint_every: u64,
    /// Sample grid every this many steps (and at step 0 and the last step).
    pub grid_every: u64,
    /// Data-parallel peers: devices 0..N of the trainer's kind on this node, and the other nodes.
    pub parallel: ParallelConfig,
    /// FID of the EMA generator; `None` skips it.
    pub fid: Option<FidSchedule<B>>,
}

/// When and how the driver measures FID: at step 0 of a fresh run, every `every` steps (0: only
/// at the end) and at the last step, on `num` one-step samples (seeds 0..num, batches of 50).
pub struct FidSchedule<B: Backend> {
    pub evaluator: FidEvaluator<B>,
    pub every: u64,
    pub num: usize,
}

/// What the driver reports to its caller (progress display, logs).
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// Before the first step: where the run starts and how long it is.
    Start {
        /// 0 for a fresh run, the checkpoint's step when resumed.
        step: u64,
        total_steps: u64,
        resumed: bool,
        cur_nimg: u64,
        freeze: &'a FreezeReport,
        /// Data-parallel peers in the whole run.
        devices: usize,
    },
    /// After every step.
    Step(&'a StepMetrics),
    /// After every FID evaluation.
    Fid(&'a FidRecord),
}

/// One FID evaluation of the EMA generator (also a line of `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FidRecord {
    pub step: u64,
    pub kimg: f64,
    pub fid_ema: f64,
    pub fid_num: usize,
    pub fid_seconds: f64,
}

/// The seeds of the sample grids (one 8×8 grid, the same images across a run).
const GRID_SEEDS: u64 = 64;

/// Trains a GDD generator to `config.total_kimg`: resumes from `options.out_dir/checkpoint` when a
/// checkpoint exists (its configuration wins, except `total_kimg`, which may extend the run),
/// otherwise starts from `teacher`; writes the outputs listed in the module doc and reports every
/// event to `on_event` (on every node, from its first peer). A non-finite loss returns
/// [`DistillError::NonFinite`] with the last good checkpoint left in place. Returns the trainer of
/// this node's first peer.
pub fn run<B: AutodiffBackend>(
    teacher: EdmPrecond<B>,
    backbones: impl Into<Backbones<B>>,
    config: GddConfig,
    data: &ImageDataset,
    options: &RunOptions<B::InnerBackend>,
    device: &B::Device,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<GddTrainer<B>> {
    let out = options.out_dir.as_path();
    let pcfg = &options.parallel;
    // One writer per output folder for the whole run (node 0, before any peer reads a
    // checkpoint); what an interrupted write left is removed only under that lock.
    let lock = if pcfg.is_first_node() {
        let lock = formats::RunLock::acquire(out)?;
        lock.clean_leftovers("state.json")?;
        Some(lock)
    } else {
        None
    };
    let resumed = has_checkpoint(out);
    let backbones: Backbones<B> = backbones.into();
    let devices = data_parallel_devices::<B>(device, pcfg.devices)?;
    let start = Start {
        teacher: &teacher,
        backbones: &backbones,
        config: &config,
        out,
        resumed,
    };
    let (tr, _) = parallel::run_node::<B::InnerBackend, _, _, DistillError, _, _>(
        pcfg,
        &devices,
        |peer, dev| {
            let tr = start.trainer(peer, dev)?;
            train_peer(tr, data, options, Some(on_event))
        },
        |peer, dev| {
            let tr = start.trainer(Some(peer), dev)?;
            train_peer(tr, data, options, None).map(drop)
        },
    )?;
    drop(lock);
    Ok(tr)
}

/// What every peer starts from.
struct Start<'a, B: AutodiffBackend> {
    teacher: &'a EdmPrecond<B>,
    backbones: &'a Backbones<B>,
    config: &'a GddConfig,
    out: &'a Path,
    resumed: bool,
}

impl<B: AutodiffBackend> Start<'_, B> {
    /// A peer's trainer on `device`: resumed from the checkpoint or fresh from the teacher.
    fn trainer(
        &self,
        peer: Option<Peer<B::InnerBackend>>,
        device: &B::Device,
    ) -> Result<GddTrainer<B>> {
        let teacher = self.teacher.clone().fork(device);
        let backbones = Backbones(
            self.backbones
                .0
                .iter()
                .map(|b| b.clone().fork(device))
                .collect(),
        );
        let mut tr = if self.resumed {
            let mut t = GddTrainer::resume(self.out, teacher, backbones, device)?;
            t.state.config.total_kimg = self.config.total_kimg;
            t
        } else {
            GddTrainer::new(teacher, backbones, self.config.clone(), device)?
        };
        if let Some(p) = &peer {
            // Every peer must start at the same step (a node that found no checkpoint while
            // node 0 resumed would otherwise train different weights with the same gradients).
            let step = tr.state.step as f64;
            let s = p.all_reduce_scalars("start", &[step, 1.0], Reduction::Sum, device)?;
            if s[0] != step * s[1] {
                return Err(DistillError::Config(format!(
                    "peer {} starts at step {step} but the peers' mean start step is {}: every \
                     node needs the same checkpoint (share the output folder or copy it)",
                    p.rank,
                    s[0] / s[1]
                )));
            }
        }
        tr.set_peer(peer)?;
        Ok(tr)
    }
}

/// One peer's training loop; rank 0 also writes the outputs, and a peer given `on_event` reports
/// to it.
fn train_peer<B: AutodiffBackend>(
    mut tr: GddTrainer<B>,
    data: &ImageDataset,
    options: &RunOptions<B::InnerBackend>,
    mut on_event: Option<&mut dyn FnMut(RunEvent<'_>)>,
) -> Result<GddTrainer<B>> {
    let out = options.out_dir.as_path();
    let writer = tr.is_rank0();
    let mut emit = |e: RunEvent<'_>| {
        if let Some(f) = on_event.as_mut() {
            f(e)
        }
    };
    if writer {
        write_json(&out.join("freeze_report.json"), &tr.freeze_report)?;
        write_json(&out.join("config.json"), &tr.state.config)?;
    }
    let total = tr.state.config.total_steps();
    let resumed = tr.state.step > 0;
    emit(RunEvent::Start {
        step: tr.state.step,
        total_steps: total,
        resumed,
        cur_nimg: tr.state.cur_nimg,
        freeze: &tr.freeze_report,
        devices: tr.world_size(),
    });

    // A resumed run's log keeps the lines up to the checkpoint's step (the steps after it are run
    // again); a fresh run's log starts empty. Rank 0 only.
    let log_path = out.join("metrics.jsonl");
    let mut log = match (writer, resumed) {
        (false, _) => None,
        (true, true) => Some(MetricsLog::resume(&log_path, tr.state.step)?.0),
        (true, false) => Some(MetricsLog::create(&log_path)?),
    };
    let mut log_line = |record: serde_json::Value| -> Result<()> {
        match log.as_mut() {
            Some(l) => Ok(l.append(&record)?),
            None => Ok(()),
        }
    };
    // TensorBoard's view of the same records (rank 0 only).
    let board = std::cell::RefCell::new(match writer {
        true => Some(formats::EventWriter::create(out)?),
        false => None,
    });
    let to_board = |f: &mut dyn FnMut(&mut formats::EventWriter) -> formats::Result<()>| match board
        .borrow_mut()
        .as_mut()
    {
        Some(w) => Ok::<(), DistillError>(f(w)?),
        None => Ok(()),
    };
    let grid_seeds: Vec<u64> = (0..GRID_SEEDS).collect();
    let grid = |tr: &GddTrainer<B>| {
        if !writer {
            return Ok(());
        }
        let s = tr.state.step;
        let path = out.join(format!("grid-{s:06}.png"));
        let g = eval::write_grid(tr.sample_ema(&grid_seeds, None), 8, &path)?;
        to_board(&mut |w| {
            w.png(
                "samples/ema_grid",
                s as i64,
                &g.png,
                g.height,
                g.width,
                g.channels,
            )
        })
    };
    let fid = options.fid.as_ref().filter(|_| writer);
    let evaluate = |tr: &GddTrainer<B>,
                    log_line: &mut dyn FnMut(serde_json::Value) -> Result<()>,
                    emit: &mut dyn FnMut(RunEvent<'_>)| {
        if let Some(rec) = fid_of_ema(tr, fid, &tr.device)? {
            log_line(to_json(&rec))?;
            to_board(&mut |w| w.scalar("fid/ema", rec.step as i64, rec.fid_ema as f32))?;
            emit(RunEvent::Fid(&rec));
        }
        Ok::<(), DistillError>(())
    };

    if tr.state.step == 0 {
        grid(&tr)?;
        evaluate(&tr, &mut log_line, &mut emit)?;
    }
    while tr.state.step < total {
        let m = tr.step(data)?;
        log_line(to_json(&m))?;
        to_board(&mut |w| board_step(w, &m))?;
        emit(RunEvent::Step(&m));
        let s = tr.state.step;
        if s.is_multiple_of(options.grid_every.max(1)) || s == total {
            grid(&tr)?;
        }
        if writer && (s.is_multiple_of(options.checkpoint_every.max(1)) || s == total) {
            tr.checkpoint(out)?;
        }
        let fid_due = fid.is_some_and(|f| f.every > 0 && s.is_multiple_of(f.every));
        if fid_due || s == total {
            evaluate(&tr, &mut log_line, &mut emit)?;
        }
    }
    Ok(tr)
}

/// FID of the EMA generator's one-step samples under `fid`'s schedule (`None` without one).
fn fid_of_ema<B: AutodiffBackend>(
    tr: &GddTrainer<B>,
    fid: Option<&FidSchedule<B::InnerBackend>>,
    device: &B::Device,
) -> Result<Option<FidRecord>> {
    let Some(f) = fid else {
        return Ok(None);
    };
    let t0 = Instant::now();
    let one = tr.state.config.one_step()?;
    let fid = eval::fid_of_net(
        &f.evaluator,
        &tr.ema,
        Sampler::OneStep(one),
        f.num,
        50,
        device,
    )?;
    Ok(Some(FidRecord {
        step: tr.state.step,
        kimg: tr.state.cur_nimg as f64 / 1000.0,
        fid_ema: fid,
        fid_num: f.num,
        fid_seconds: t0.elapsed().as_secs_f64(),
    }))
}

/// Whether `out` holds a checkpoint to resume from (`checkpoint/`, or `checkpoint.old/` left by a
/// crash during the swap).
pub fn has_checkpoint(out: &Path) -> bool {
    out.join("checkpoint/state.json").exists() || out.join("checkpoint.old/state.json").exists()
}

/// Devices 0..n of `device`'s kind ([`parallel::devices`]: a single-device backend such as the
/// CPU is shared by the peers).
pub fn data_parallel_devices<B: Backend>(device: &B::Device, n: usize) -> Result<Vec<B::Device>> {
    Ok(parallel::devices::<B>(device, n)?)
}

/// A step's metrics as TensorBoard scalars (the same numbers as its `metrics.jsonl` line).
fn board_step(w: &mut formats::EventWriter, m: &StepMetrics) -> formats::Result<()> {
    let s = m.step as i64;
    for (tag, v) in [
        ("loss/G", m.g_loss),
        ("loss/D_fake", m.d_loss_fake),
        ("loss/D_real", m.d_loss_real),
        ("score/D_fake", m.d_fake_score),
        ("score/D_real", m.d_real_score),
        ("speed/images_per_sec", m.images_per_sec),
        ("progress/kimg", m.kimg),
    ] {
        w.scalar(tag, s, v as f32)?;
    }
    if let Some(r1) = m.r1_penalty {
        w.scalar("loss/R1_penalty", s, r1 as f32)?;
    }
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("metrics serialise")
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v).expect("report serialises");
    Ok(formats::write_atomic(path, &bytes)?)
}
