//! A JSONL metrics log (one JSON object per line, each with a `"step"`) that a resumed run continues
//! without repeating lines.
//!
//! An append-only log repeats every step between the last checkpoint and the crash when a run
//! resumes (16 lines for 12 steps). [`MetricsLog::resume`] first keeps only the lines up to the
//! resumed step (and drops a torn last line a crash left without its newline), rewriting the file
//! atomically, then appends; [`MetricsLog::create`] starts a fresh run's log empty.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::error::{io_err, Result};

/// A line of a metrics log that cannot be kept or written.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "{path}:{line}: not a metrics record (a JSON object with an integer \"step\"): {reason}; \
         move the file away to start a fresh log"
    )]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "{path}: a metrics record must be a JSON object with an integer \"step\", got {record}"
    )]
    BadRecord { path: PathBuf, record: String },
}

/// An open metrics log, appending one line per record.
#[derive(Debug)]
pub struct MetricsLog {
    file: File,
    path: PathBuf,
}

impl MetricsLog {
    /// A fresh run's log: an existing file is emptied (its steps belong to a run that is not being
    /// continued).
    pub fn create(path: &Path) -> Result<Self> {
        write_atomic(path, b"")?;
        Self::open_append(path)
    }

    /// The log of a run resumed at `step` (the last completed step): lines with a larger step are
    /// dropped, as is a torn last line; a missing file starts empty. Returns the log and how many
    /// lines were dropped.
    pub fn resume(path: &Path, step: u64) -> Result<(Self, usize)> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(path)(e)),
        };
        let mut kept = String::with_capacity(text.len());
        let mut dropped = 0;
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let torn = i + 1 == lines.len() && !complete;
            match record_step(line) {
                Ok(s) if s <= step && !torn => {
                    kept.push_str(line);
                    kept.push('\n');
                }
                Ok(_) => dropped += 1,
                // A crash mid-write leaves a partial last line: not data, drop it.
                Err(_) if torn => dropped += 1,
                Err(reason) => {
                    return Err(MetricsError::BadLine {
                        path: path.to_path_buf(),
                        line: i + 1,
                        reason,
                    }
                    .into())
                }
            }
        }
        if dropped > 0 || kept.len() != text.len() {
            write_atomic(path, kept.as_bytes())?;
        }
        Ok((Self::open_append(path)?, dropped))
    }

    fn open_append(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(MetricsLog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends one record (a JSON object with an integer `"step"`) as one line, written with a
    /// single `write` so a crash leaves at most one torn line, which [`MetricsLog::resume`] drops.
    pub fn append(&mut self, record: &serde_json::Value) -> Result<()> {
        if record
            .get("step")
            .and_then(serde_json::Value::as_u64)
            .is_none()
        {
            return Err(MetricsError::BadRecord {
                path: self.path.clone(),
                record: record.to_string(),
            }
            .into());
        }
        let mut line = record.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(io_err(&self.path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn record_step(line: &str) -> std::result::Result<u64, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    v.get("step")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "no integer \"step\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn steps(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| record_step(l).unwrap())
            .collect()
    }

    #[test]
    fn a_resume_never_repeats_steps() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        // A run logs steps 1..=8, its last checkpoint is at step 4, then it crashes mid-line.
        let mut log = MetricsLog::create(&p).unwrap();
        for step in 1..=8 {
            log.append(&json!({"step": step, "loss": 1.0 / step as f64}))
                .unwrap();
        }
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"step\": 9, \"lo").unwrap();
        drop(f);
        // Resumed at step 4, it runs steps 5..=12 again.
        let (mut log, dropped) = MetricsLog::resume(&p, 4).unwrap();
        assert_eq!(dropped, 5);
        for step in 5..=12 {
            log.append(&json!({"step": step})).unwrap();
        }
        assert_eq!(steps(&p), (1..=12).collect::<Vec<_>>());
        assert!(!dir.path().join("metrics.jsonl.tmp").exists());
    }

    #[test]
    fn create_starts_empty_and_resume_of_nothing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let (mut log, dropped) = MetricsLog::resume(&p, 10).unwrap();
        assert_eq!(dropped, 0);
        log.append(&json!({"step": 1})).unwrap();
        let mut log = MetricsLog::create(&p).unwrap();
        log.append(&json!({"step": 1})).unwrap();
        assert_eq!(steps(&p), [1]);
    }

    #[test]
    fn a_corrupt_line_in_the_middle_is_a_typed_error_and_records_need_a_step() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(&p, "{\"step\": 1}\nnot json\n{\"step\": 2}\n").unwrap();
        let err = MetricsLog::resume(&p, 5).unwrap_err();
        assert!(err.to_string().contains("metrics.jsonl:2"), "{err}");
        // The file is left as it was.
        assert!(std::fs::read_to_string(&p).unwrap().contains("not json"));
        let mut log = MetricsLog::create(&p).unwrap();
        assert!(log.append(&json!({"loss": 1.0})).is_err());
    }
}
