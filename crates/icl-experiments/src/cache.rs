//! JSON result cache: `root/<model>/<task>/<key>/<name>.json`. A result is recomputed only when
//! its file is missing, so an interrupted or repeated run costs only what is new.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ExperimentError, Result};

/// Where cached results live (`None` disables caching).
#[derive(Debug, Clone, Default)]
pub struct ResultCache {
    pub root: Option<PathBuf>,
}

impl ResultCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: Some(root.into()),
        }
    }

    pub fn disabled() -> Self {
        Self { root: None }
    }

    fn path(&self, model: &str, task: &str, key: &str, name: &str) -> Option<PathBuf> {
        self.root.as_ref().map(|r| {
            r.join(sanitize(model))
                .join(sanitize(task))
                .join(key)
                .join(format!("{name}.json"))
        })
    }

    /// The cached value, or `f()` stored for next time.
    pub fn get_or<T: Serialize + DeserializeOwned>(
        &self,
        model: &str,
        task: &str,
        key: &str,
        name: &str,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let Some(path) = self.path(model, task, key, name) else {
            return f();
        };
        if path.exists() {
            return read_json(&path);
        }
        let v = f()?;
        write_json(&path, &v)?;
        Ok(v)
    }
}

/// Keeps names usable as folder names.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::Io {
        path: path.into(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| ExperimentError::Json {
        path: path.into(),
        source: e,
    })
}

/// Writes pretty JSON atomically (temporary file, then rename), creating parent folders.
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ExperimentError::Io {
            path: dir.into(),
            source: e,
        })?;
    }
    let text = serde_json::to_string_pretty(v).map_err(|e| ExperimentError::Json {
        path: path.into(),
        source: e,
    })?;
    Ok(formats::write_atomic(path, text.as_bytes())?)
}
