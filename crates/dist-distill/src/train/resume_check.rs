//! `gdd train` resuming a run folder with the options it was started with.
//!
//! The driver resumes from `OUT/checkpoint` and keeps the checkpoint's [`GddConfig`] (only
//! `total_kimg` may extend the run). A command line with another learning rate, loss or freezing
//! level used to be ignored silently; [`check_resume`] compares the saved configuration with the
//! given one through [`formats::compare_options`] (the same comparison `edm train` makes) before
//! any work.

use std::path::Path;

use super::{GddConfig, GddState};
use crate::error::{DistillError, Result};

/// The configuration fields a resumed run may change: its length.
pub const RESUMABLE_OPTIONS: &[&str] = &["total_kimg"];

/// Compares the configuration saved in `out`'s checkpoint (`checkpoint/state.json`, or
/// `checkpoint.old/` after an interrupted swap) with `given`. No checkpoint: `Ok(None)`. A
/// difference outside [`RESUMABLE_OPTIONS`] is [`DistillError::OptionsChanged`] naming every
/// differing field, unless `force`, which returns it (`Ok(Some(..))`) for the caller to report;
/// the run then continues with the saved values.
pub fn check_resume(
    out: &Path,
    given: &GddConfig,
    force: bool,
) -> Result<Option<formats::OptionsChanged>> {
    if !super::has_checkpoint(out) {
        return Ok(None);
    }
    let path = formats::resume_dir(out, "state.json").join("state.json");
    let bytes = std::fs::read(&path).map_err(|e| DistillError::io(&path, e))?;
    let saved: GddState = serde_json::from_slice(&bytes).map_err(|e| DistillError::Checkpoint {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let json = |c: &GddConfig| serde_json::to_value(c).expect("config serialises");
    match formats::compare_options(&json(&saved.config), &json(given), RESUMABLE_OPTIONS) {
        Ok(()) => Ok(None),
        Err(changed) if force => Ok(Some(changed)),
        Err(changed) => Err(DistillError::OptionsChanged {
            dir: out.to_path_buf(),
            changed,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(out: &Path, config: &GddConfig) {
        let ck = out.join("checkpoint");
        std::fs::create_dir_all(&ck).unwrap();
        let state = GddState {
            step: 3,
            cur_nimg: 12,
            config: config.clone(),
        };
        std::fs::write(ck.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
    }

    #[test]
    fn a_changed_option_is_refused_by_name_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let saved = GddConfig::default();
        // No checkpoint: nothing to compare.
        assert!(check_resume(tmp.path(), &saved, false).unwrap().is_none());
        save(tmp.path(), &saved);
        // A longer run is allowed.
        let longer = GddConfig {
            total_kimg: saved.total_kimg * 2.0,
            ..saved.clone()
        };
        assert!(check_resume(tmp.path(), &longer, false).unwrap().is_none());
        let mut other = longer.clone();
        other.lr = 2e-4;
        other.disc.seed = 9;
        let err = check_resume(tmp.path(), &other, false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("lr (saved 0.0001, given 0.0002)"), "{msg}");
        assert!(msg.contains("disc.seed"), "{msg}");
        assert!(msg.contains("--force"), "{msg}");
        let forced = check_resume(tmp.path(), &other, true).unwrap().unwrap();
        assert_eq!(forced.names(), ["disc.seed", "lr"]);
    }
}
