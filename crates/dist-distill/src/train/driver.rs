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

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend, Device as _, DeviceId, DeviceOps};
use edm_core::{EdmPrecond, ImageDataset};
use fid::FidEvaluator;
use formats::MetricsLog;
use serde::Serialize;

use super::{GddConfig, GddTrainer, StepMetrics};
use crate::effnet::EfficientNetLite0;
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
    /// Data-parallel over this many devices of the trainer's kind (indices 0..N), one process.
    pub devices: usize,
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
/// event to `on_event`. A non-finite loss returns [`DistillError::NonFinite`] with the last good
/// checkpoint left in place.
pub fn run<B: AutodiffBackend>(
    teacher: EdmPrecond<B>,
    backbone: EfficientNetLite0<B>,
    config: GddConfig,
    data: &ImageDataset,
    options: &RunOptions<B::InnerBackend>,
    device: &B::Device,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<GddTrainer<B>> {
    let out = options.out_dir.as_path();
    // One writer per output folder for the whole run; what an interrupted write left is removed
    // only under that lock.
    let lock = formats::RunLock::acquire(out)?;
    lock.clean_leftovers("state.json")?;
    let resumed = has_checkpoint(out);
    let mut tr = if resumed {
        let total_kimg = config.total_kimg;
        let mut t = GddTrainer::resume(out, teacher, backbone, device)?;
        t.state.config.total_kimg = total_kimg;
        t
    } else {
        GddTrainer::new(teacher, backbone, config, device)?
    };
    if options.devices > 1 {
        tr.set_devices(data_parallel_devices::<B>(device, options.devices)?)?;
    }
    write_json(&out.join("freeze_report.json"), &tr.freeze_report)?;
    write_json(&out.join("config.json"), &tr.state.config)?;
    let total = tr.state.config.total_steps();
    on_event(RunEvent::Start {
        step: tr.state.step,
        total_steps: total,
        resumed,
        cur_nimg: tr.state.cur_nimg,
        freeze: &tr.freeze_report,
        devices: tr.devices().len(),
    });

    // A resumed run's log keeps the lines up to the checkpoint's step (the steps after it are run
    // again); a fresh run's log starts empty.
    let log_path = out.join("metrics.jsonl");
    let mut log = if resumed {
        MetricsLog::resume(&log_path, tr.state.step)?.0
    } else {
        MetricsLog::create(&log_path)?
    };
    let mut log_line = |record: serde_json::Value| -> Result<()> { Ok(log.append(&record)?) };
    let grid_seeds: Vec<u64> = (0..GRID_SEEDS).collect();
    let grid = |tr: &GddTrainer<B>| {
        let s = tr.state.step;
        eval::write_grid(
            tr.sample_ema(&grid_seeds, None),
            8,
            &out.join(format!("grid-{s:06}.png")),
        )
    };
    let evaluate = |tr: &GddTrainer<B>,
                    log_line: &mut dyn FnMut(serde_json::Value) -> Result<()>,
                    on_event: &mut dyn FnMut(RunEvent<'_>)| {
        if let Some(rec) = fid_of_ema(tr, options.fid.as_ref(), device)? {
            log_line(to_json(&rec))?;
            on_event(RunEvent::Fid(&rec));
        }
        Ok::<(), DistillError>(())
    };

    if tr.state.step == 0 {
        grid(&tr)?;
        evaluate(&tr, &mut log_line, on_event)?;
    }
    while tr.state.step < total {
        let m = tr.step(data)?;
        log_line(to_json(&m))?;
        on_event(RunEvent::Step(&m));
        let s = tr.state.step;
        if s.is_multiple_of(options.grid_every.max(1)) || s == total {
            grid(&tr)?;
        }
        if s.is_multiple_of(options.checkpoint_every.max(1)) || s == total {
            tr.checkpoint(out)?;
        }
        let fid_due = options
            .fid
            .as_ref()
            .is_some_and(|f| f.every > 0 && s.is_multiple_of(f.every));
        if fid_due || s == total {
            evaluate(&tr, &mut log_line, on_event)?;
        }
    }
    drop(lock);
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

/// Devices 0..n of `device`'s kind, refusing more than the backend has.
pub fn data_parallel_devices<B: Backend>(device: &B::Device, n: usize) -> Result<Vec<B::Device>> {
    let id = device.id();
    let available = B::device_count(id.type_id);
    if n > available {
        return Err(DistillError::Config(format!(
            "data-parallel over {n} devices: only {available} device(s) of this kind"
        )));
    }
    Ok((0..n)
        .map(|i| {
            B::Device::from_id(DeviceId {
                type_id: id.type_id,
                index_id: i as u16,
            })
        })
        .collect())
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("metrics serialise")
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v).expect("report serialises");
    Ok(formats::write_atomic(path, &bytes)?)
}
