//! A reader for the countryinfo package's data folder: one JSON object per country with (among
//! many fields) `name` and `capital` (a string, or null for e.g. Antarctica).

use std::path::Path;

use crate::error::{Result, TaskError};

/// Reads `(country name, capital)` from every `*.json` file of `dir`, sorted by file name so the
/// order is deterministic. Files without a capital (null) are skipped; a list of capitals gives its first; files that are not JSON
/// objects with a string `name` are errors.
pub fn read_capitals(dir: &Path) -> Result<Vec<(String, String)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| TaskError::io(dir, e))?;
    let mut files = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| TaskError::io(dir, e))?;
        let p = ent.path();
        if p.extension().is_some_and(|x| x == "json") {
            files.push(p);
        }
    }
    files.sort();
    let mut out = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(&p).map_err(|e| TaskError::io(&p, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| TaskError::Json {
            path: p.clone(),
            source: e,
        })?;
        let Some(name) = v.get("name").and_then(|n| n.as_str()) else {
            return Err(TaskError::parse(
                &p,
                1,
                "countryinfo",
                "no string field `name`",
            ));
        };
        // A few files give a list of capitals: the first is the seat of government.
        let cap = match v.get("capital") {
            Some(serde_json::Value::String(s)) => Some(s.as_str()),
            Some(serde_json::Value::Array(a)) => a.first().and_then(|c| c.as_str()),
            _ => None,
        };
        if let Some(cap) = cap {
            out.push((name.trim().to_string(), cap.trim().to_string()));
        }
    }
    Ok(out)
}
