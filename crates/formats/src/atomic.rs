//! Files and checkpoint directories that are either complete or absent: a crash (or a full disk)
//! in the middle of a write never leaves half a file where a reader, or a resumed run, finds it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};

/// The temporary sibling a file is written to before the rename: `name.ext.tmp`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes a file through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], with the content streamed by `fill` (npz archives, PNG encoders). The
/// file appears under `path` only if `fill` and the flush succeed; otherwise the temporary is removed.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = tmp_path(path);
    let written = File::create(&tmp).and_then(|f| {
        let mut w = BufWriter::new(f);
        fill(&mut w)?;
        w.flush()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// A checkpoint directory built beside the current one and swapped in when complete.
///
/// [`begin`](Self::begin) empties `DIR/checkpoint.tmp`; the caller fills [`staging`](Self::staging);
/// [`commit`](Self::commit) renames `DIR/checkpoint` to `DIR/checkpoint.old`, the staging directory
/// to `DIR/checkpoint`, and then removes the old one. At every instant one of `checkpoint` and
/// `checkpoint.old` is complete, which [`resume_dir`] relies on.
#[derive(Debug)]
pub struct CheckpointSwap {
    staging: PathBuf,
    current: PathBuf,
    old: PathBuf,
}

impl CheckpointSwap {
    /// Starts a checkpoint under `dir`, discarding what an interrupted one left in the staging folder.
    pub fn begin(dir: &Path) -> Result<Self> {
        let swap = CheckpointSwap {
            staging: dir.join("checkpoint.tmp"),
            current: dir.join("checkpoint"),
            old: dir.join("checkpoint.old"),
        };
        if swap.staging.exists() {
            std::fs::remove_dir_all(&swap.staging).map_err(io_err(&swap.staging))?;
        }
        std::fs::create_dir_all(&swap.staging).map_err(io_err(&swap.staging))?;
        Ok(swap)
    }

    /// The folder to write the new checkpoint into.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Swaps the filled staging folder in; returns the checkpoint's final path.
    pub fn commit(self) -> Result<PathBuf> {
        if self.current.exists() {
            if self.old.exists() {
                std::fs::remove_dir_all(&self.old).map_err(io_err(&self.old))?;
            }
            std::fs::rename(&self.current, &self.old).map_err(io_err(&self.current))?;
        }
        std::fs::rename(&self.staging, &self.current).map_err(io_err(&self.staging))?;
        if self.old.exists() {
            std::fs::remove_dir_all(&self.old).map_err(io_err(&self.old))?;
        }
        Ok(self.current)
    }
}

/// The checkpoint to resume from: `dir/checkpoint`, or `dir/checkpoint.old` when a crash came
/// between the two renames of [`CheckpointSwap::commit`] (`marker` is a file every complete
/// checkpoint holds, such as its state JSON).
pub fn resume_dir(dir: &Path, marker: &str) -> PathBuf {
    let current = dir.join("checkpoint");
    if current.join(marker).exists() {
        current
    } else {
        dir.join("checkpoint.old")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_no_temporary_and_failure_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        assert!(!dir.path().join("a.json.tmp").exists());

        let q = dir.path().join("b.bin");
        let err = write_atomic_with(&q, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("encoder failed"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("b.bin.tmp"), "{err}");
        assert!(!q.exists() && !dir.path().join("b.bin.tmp").exists());
    }

    #[test]
    fn checkpoint_swap_replaces_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let write = |swap: &CheckpointSwap, v: &str| {
            std::fs::write(swap.staging().join("state.json"), v).unwrap();
        };
        let first = CheckpointSwap::begin(dir.path()).unwrap();
        write(&first, "1");
        let ck = first.commit().unwrap();
        assert_eq!(ck, dir.path().join("checkpoint"));
        assert_eq!(resume_dir(dir.path(), "state.json"), ck);

        // An interrupted second checkpoint leaves the first one in place.
        let second = CheckpointSwap::begin(dir.path()).unwrap();
        std::fs::write(second.staging().join("partial"), "x").unwrap();
        drop(second);
        let third = CheckpointSwap::begin(dir.path()).unwrap();
        assert!(!third.staging().join("partial").exists());
        write(&third, "3");
        third.commit().unwrap();
        assert_eq!(std::fs::read_to_string(ck.join("state.json")).unwrap(), "3");
        assert!(!dir.path().join("checkpoint.old").exists());
        assert!(!dir.path().join("checkpoint.tmp").exists());

        // A crash between the renames: only checkpoint.old is complete.
        std::fs::rename(&ck, dir.path().join("checkpoint.old")).unwrap();
        assert_eq!(
            resume_dir(dir.path(), "state.json"),
            dir.path().join("checkpoint.old")
        );
    }
}
