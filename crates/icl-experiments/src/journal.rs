//! Append-only JSONL journals of finished units of work, shared by the resumable experiments
//! (`transplant`, `local-global`, `forms`, `dpca`, `saliency`, `subsets`), and where each run's
//! files go ([`RunFiles`]): one unit (usually a task at one seed) is one
//! line, flushed to disk when it finishes, so a killed run loses at most the unit in progress.
//!
//! A last line without its newline is a unit cut off by a kill: it is dropped (the file truncated
//! to the last complete line) and recomputed. Every line carries the run's settings; a journal
//! written with other settings is refused rather than mixed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::cache::{sanitize, write_json};
use super::{ExperimentError, Progress, Result};

/// A finished unit as stored in a journal.
pub trait UnitLine: Serialize + DeserializeOwned {
    /// The run settings the unit was computed with.
    type Config: PartialEq + std::fmt::Debug;
    fn config(&self) -> &Self::Config;
    /// `(task, seed)` identifying the unit.
    fn key(&self) -> (String, u64);
}

/// The complete lines of `path` (none if it does not exist), after dropping a cut-off last line.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let io = |e| ExperimentError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        eprintln!(
            "{}: dropping a cut-off last line ({} bytes)",
            path.display(),
            text.len() - complete
        );
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
        f.set_len(complete as u64).map_err(io)?;
    }
    text[..complete]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| ExperimentError::Json {
                path: path.to_path_buf(),
                source: e,
            })
        })
        .collect()
}

/// Appends `v` as one line, synced to disk before returning.
pub fn append<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let io = |e| ExperimentError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut line = serde_json::to_string(v).map_err(|e| ExperimentError::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
}

/// Where one experiment's run on one model writes, in an output folder that several models and k
/// share: the journal `<stem>.jsonl`, the summary `<stem>.json`, the report `<stem>.md`, and plots
/// `plots/<stem>_<part>.png`, with `<stem> = <model>_<experiment>_k<k>`. One naming for every
/// experiment, so `report` and users find a run's files the same way.
#[derive(Clone, Debug)]
pub struct RunFiles {
    pub out: PathBuf,
    pub stem: String,
    /// `[<model>] <experiment> k=<k>`: the progress bar's and log lines' prefix.
    pub label: String,
}

impl RunFiles {
    pub fn new(out: &Path, experiment: &str, model_id: &str, k: usize) -> Self {
        Self {
            out: out.to_path_buf(),
            stem: format!("{}_{experiment}_k{k}", sanitize(model_id)),
            label: format!("[{model_id}] {experiment} k={k}"),
        }
    }

    /// `OUT/<stem>.jsonl`.
    pub fn journal(&self) -> PathBuf {
        self.out.join(format!("{}.jsonl", self.stem))
    }

    /// Writes `summary` as `OUT/<stem>.json` and makes `OUT/plots`; returns the plots folder.
    pub fn write_summary<S: Serialize>(&self, summary: &S) -> Result<PathBuf> {
        write_json(&self.out.join(format!("{}.json", self.stem)), summary)?;
        self.plots_dir()
    }

    /// `OUT/plots`, made if missing.
    pub fn plots_dir(&self) -> Result<PathBuf> {
        let plots = self.out.join("plots");
        std::fs::create_dir_all(&plots).map_err(|e| ExperimentError::Io {
            path: plots.clone(),
            source: e,
        })?;
        Ok(plots)
    }

    /// The file name (under `plots/`) of this run's plot `part` (a task name, or `task_cosines`).
    pub fn plot_file(&self, part: &str) -> String {
        format!("{}_{}.png", self.stem, sanitize(part))
    }

    /// Writes the report as `OUT/<stem>.md` (atomically: a killed run never leaves half of it).
    pub fn write_markdown(&self, md: &str) -> Result<()> {
        Ok(formats::write_atomic(
            &self.out.join(format!("{}.md", self.stem)),
            md.as_bytes(),
        )?)
    }
}

/// What a (possibly resumed) run did: every unit in `keys` order, and how many were computed now.
#[derive(Debug)]
pub struct Units<T> {
    pub records: Vec<T>,
    pub computed: usize,
    pub skipped: usize,
    pub path: PathBuf,
}

/// [`run_units`] over every `(task, seed)` pair, tasks outer, seeds inner: `compute(task, seed,
/// bar)`. The shape every per-task experiment (forms, local-global, saliency, subsets) runs in.
pub fn run_task_seeds<T: UnitLine>(
    files: &RunFiles,
    config: &T::Config,
    tasks: &[icl_tasks::TaskSet],
    seeds: &[u64],
    mut compute: impl FnMut(&icl_tasks::TaskSet, u64, &Progress) -> Result<T>,
) -> Result<Units<T>> {
    run_units(
        files,
        config,
        &task_seed_keys(tasks, seeds),
        |i, seed, bar| compute(&tasks[i / seeds.len()], seed, bar),
    )
}

/// Every `(task, seed)` pair, tasks outer, seeds inner (unit `i` is task `i / seeds.len()`).
pub fn task_seed_keys(tasks: &[icl_tasks::TaskSet], seeds: &[u64]) -> Vec<(String, u64)> {
    tasks
        .iter()
        .flat_map(|t| seeds.iter().map(move |&s| (t.name.clone(), s)))
        .collect()
}

/// Runs `compute(unit_index, seed, bar)` for every `(task, seed)` of `keys` not yet in the journal
/// `files.journal()`, appending each as it finishes, with a progress bar over the units still to
/// run (pass `bar` to [`crate::Probe::counting`] to see the model's forwards in it). A journal
/// line with settings other than `config` is an error (a different run wrote there).
pub fn run_units<T: UnitLine>(
    files: &RunFiles,
    config: &T::Config,
    keys: &[(String, u64)],
    mut compute: impl FnMut(usize, u64, &Progress) -> Result<T>,
) -> Result<Units<T>> {
    let path = files.journal();
    let done: Vec<T> = load(&path)?;
    if let Some(r) = done.iter().find(|r| r.config() != config) {
        return Err(ExperimentError::Invalid(format!(
            "{} was written with other settings ({:?}); use another --out or delete it",
            path.display(),
            r.config()
        )));
    }
    let is_done = |task: &String, seed: u64| done.iter().any(|r| r.key() == (task.clone(), seed));
    let todo = keys.iter().filter(|(t, s)| !is_done(t, *s)).count();
    let bar = Progress::new(files.label.clone(), todo as u64);
    let (mut computed, mut skipped) = (0, 0);
    let mut records = Vec::with_capacity(keys.len());
    let mut done: Vec<Option<T>> = done.into_iter().map(Some).collect();
    for (ti, (task, seed)) in keys.iter().enumerate() {
        let found = done
            .iter_mut()
            .find(|r| r.as_ref().is_some_and(|r| r.key() == (task.clone(), *seed)))
            .and_then(Option::take);
        match found {
            Some(r) => {
                skipped += 1;
                records.push(r);
            }
            None => {
                bar.set_message(format!("{task} seed {seed}"));
                let t = std::time::Instant::now();
                let r = compute(ti, *seed, &bar)?;
                append(&path, &r)?;
                bar.log(format!(
                    "{} {task} seed {seed}: {:.1}s",
                    files.label,
                    t.elapsed().as_secs_f64()
                ));
                bar.inc(1);
                computed += 1;
                records.push(r);
            }
        }
    }
    bar.finish();
    bar.log(format!(
        "{}: {computed} units computed, {skipped} already done",
        files.label
    ));
    Ok(Units {
        records,
        computed,
        skipped,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Line {
        cfg: u32,
        task: String,
        seed: u64,
        value: f64,
    }

    impl UnitLine for Line {
        type Config = u32;
        fn config(&self) -> &u32 {
            &self.cfg
        }
        fn key(&self) -> (String, u64) {
            (self.task.clone(), self.seed)
        }
    }

    #[test]
    fn resumes_drops_a_cut_line_and_refuses_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let files = RunFiles::new(dir.path(), "test", "org/model", 5);
        assert_eq!(files.stem, "org_model_test_k5");
        let p = dir.path().join("org_model_test_k5.jsonl");
        assert_eq!(files.journal(), p);
        let keys: Vec<(String, u64)> = vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 0)];
        let mk = |ti: usize, seed: u64, _: &Progress| -> Result<Line> {
            Ok(Line {
                cfg: 7,
                task: keys[ti].0.clone(),
                seed,
                value: ti as f64 + seed as f64 / 10.0,
            })
        };
        let first = run_units(&files, &7, &keys[..2], mk).unwrap();
        assert_eq!((first.computed, first.skipped), (2, 0));
        // A kill in the middle of the third line.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"cfg\":7,\"task\":\"b\"").unwrap();
        drop(f);
        let mut calls = Vec::new();
        let second = run_units(&files, &7, &keys, |ti, s, bar| {
            calls.push((ti, s));
            mk(ti, s, bar)
        })
        .unwrap();
        assert_eq!(calls, vec![(2, 0)]);
        assert_eq!((second.computed, second.skipped), (1, 2));
        assert_eq!(second.records[2].value, 2.0);
        assert_eq!(load::<Line>(&p).unwrap().len(), 3);
        let e = run_units(&files, &8, &keys, mk).unwrap_err();
        assert!(e.to_string().contains("other settings"), "{e}");
    }
}
