//! Append-only JSONL journals of finished units of work, shared by the resumable experiments
//! (`local-global`, `forms`, `dpca`, `saliency`): one unit (usually a task at one seed) is one
//! line, flushed to disk when it finishes, so a killed run loses at most the unit in progress.
//!
//! A last line without its newline is a unit cut off by a kill: it is dropped (the file truncated
//! to the last complete line) and recomputed. Every line carries the run's settings; a journal
//! written with other settings is refused rather than mixed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ExperimentError, Result};

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

/// What a (possibly resumed) run did: every unit in `keys` order, and how many were computed now.
#[derive(Debug)]
pub struct Units<T> {
    pub records: Vec<T>,
    pub computed: usize,
    pub skipped: usize,
    pub path: PathBuf,
}

/// [`run_units`] over every `(task, seed)` pair, tasks outer, seeds inner: `compute(task, seed)`.
/// The shape every per-task experiment (forms, local-global, saliency) runs in.
pub fn run_task_seeds<T: UnitLine>(
    path: &Path,
    config: &T::Config,
    tasks: &[icl_tasks::TaskSet],
    seeds: &[u64],
    mut compute: impl FnMut(&icl_tasks::TaskSet, u64) -> Result<T>,
) -> Result<Units<T>> {
    let keys: Vec<(String, u64)> = tasks
        .iter()
        .flat_map(|t| seeds.iter().map(move |&s| (t.name.clone(), s)))
        .collect();
    run_units(path, config, &keys, |i, seed| {
        compute(&tasks[i / seeds.len()], seed)
    })
}

/// Runs `compute(task_index, seed)` for every `(task, seed)` of `keys` not yet in the journal at
/// `path`, appending each as it finishes. A journal line with settings other than `config` is an
/// error (a different run wrote there).
pub fn run_units<T: UnitLine>(
    path: &Path,
    config: &T::Config,
    keys: &[(String, u64)],
    mut compute: impl FnMut(usize, u64) -> Result<T>,
) -> Result<Units<T>> {
    let done: Vec<T> = load(path)?;
    if let Some(r) = done.iter().find(|r| r.config() != config) {
        return Err(ExperimentError::Invalid(format!(
            "{} was written with other settings ({:?}); use another --out or delete it",
            path.display(),
            r.config()
        )));
    }
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
                let t = std::time::Instant::now();
                let r = compute(ti, *seed)?;
                append(path, &r)?;
                eprintln!(
                    "{}: {task} seed {seed} done in {:.1}s",
                    path.display(),
                    t.elapsed().as_secs_f64()
                );
                computed += 1;
                records.push(r);
            }
        }
    }
    Ok(Units {
        records,
        computed,
        skipped,
        path: path.to_path_buf(),
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
        let p = dir.path().join("j.jsonl");
        let keys: Vec<(String, u64)> = vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 0)];
        let mk = |ti: usize, seed: u64| -> Result<Line> {
            Ok(Line {
                cfg: 7,
                task: keys[ti].0.clone(),
                seed,
                value: ti as f64 + seed as f64 / 10.0,
            })
        };
        let first = run_units(&p, &7, &keys[..2], mk).unwrap();
        assert_eq!((first.computed, first.skipped), (2, 0));
        // A kill in the middle of the third line.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"cfg\":7,\"task\":\"b\"").unwrap();
        drop(f);
        let mut calls = Vec::new();
        let second = run_units(&p, &7, &keys, |ti, s| {
            calls.push((ti, s));
            mk(ti, s)
        })
        .unwrap();
        assert_eq!(calls, vec![(2, 0)]);
        assert_eq!((second.computed, second.skipped), (1, 2));
        assert_eq!(second.records[2].value, 2.0);
        assert_eq!(load::<Line>(&p).unwrap().len(), 3);
        let e = run_units(&p, &8, &keys, mk).unwrap_err();
        assert!(e.to_string().contains("other settings"), "{e}");
    }
}
