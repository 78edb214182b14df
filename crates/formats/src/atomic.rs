//! Files and checkpoint directories that are either complete or absent: a crash (or a full disk)
//! in the middle of a write never leaves half a file where a reader, or a resumed run, finds it.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{io_err, is_no_space, FormatError, Result};

/// The temporary sibling a file is written to before the rename: `name.ext.tmp`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The file under an atomic write, remembering whether the disk filled up.
///
/// Why: encoders (MessagePack, PNG, npz) wrap the I/O error they hit in their own error, and a caller
/// that turns that into `io::Error::other` loses the kind; "invalid value write" then hides "the disk
/// is full". The first write error that means a full disk is noted here, so the writer reports
/// [`FormatError::NoSpace`] whatever the encoder made of it.
#[derive(Debug)]
pub struct SpaceWatch {
    file: File,
    full: bool,
}

impl SpaceWatch {
    fn note<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r {
            self.full |= is_no_space(e);
        }
        r
    }
}

impl Write for SpaceWatch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.file.write(buf);
        self.note(r)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.file.flush();
        self.note(r)
    }
}

impl Seek for SpaceWatch {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

/// What [`write_atomic_with`] hands to its `fill`: a buffered writer on the temporary file.
pub type AtomicWriter = BufWriter<SpaceWatch>;

/// Writes a file through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], with the content streamed by `fill` (npz archives, PNG encoders). The
/// file appears under `path` only if `fill`, the flush and the sync succeed; otherwise the temporary
/// is removed (at once, so a full disk gets its space back) and the old file, if any, is untouched.
/// A full disk is [`FormatError::NoSpace`] naming `path`, whatever error `fill` made of it.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut AtomicWriter) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(|e| {
        if is_no_space(&e) {
            FormatError::NoSpace {
                path: path.to_path_buf(),
            }
        } else {
            io_err(&tmp)(e)
        }
    })?;
    let mut w = BufWriter::new(SpaceWatch { file, full: false });
    let written = fill(&mut w).and_then(|()| w.flush()).and_then(|()| {
        let r = w.get_ref().file.sync_all();
        w.get_mut().note(r)
    });
    let full = w.get_ref().full;
    drop(w);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        if full || is_no_space(&e) {
            return Err(FormatError::NoSpace {
                path: path.to_path_buf(),
            });
        }
        return Err(io_err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// A checkpoint directory built beside the current one and swapped in when complete.
///
/// [`begin`](Self::begin) empties `DIR/checkpoint.tmp`; the caller fills [`staging`](Self::staging);
/// [`commit`](Self::commit) renames `DIR/checkpoint` to `DIR/checkpoint.old`, the staging directory
/// to `DIR/checkpoint`, and then removes the old one. At every instant one of `checkpoint` and
/// `checkpoint.old` is complete, which [`resume_dir`] relies on. A swap dropped without a commit (an
/// error while filling it, a full disk) removes its staging folder at once, so the space comes back
/// and no `checkpoint.tmp` is left for the next run to trip over.
#[derive(Debug)]
pub struct CheckpointSwap {
    staging: PathBuf,
    current: PathBuf,
    old: PathBuf,
    committed: bool,
}

impl Drop for CheckpointSwap {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

impl CheckpointSwap {
    /// Starts a checkpoint under `dir`, discarding what an interrupted one left in the staging folder.
    pub fn begin(dir: &Path) -> Result<Self> {
        let swap = CheckpointSwap {
            staging: dir.join("checkpoint.tmp"),
            current: dir.join("checkpoint"),
            old: dir.join("checkpoint.old"),
            committed: false,
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
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.current.exists() {
            if self.old.exists() {
                std::fs::remove_dir_all(&self.old).map_err(io_err(&self.old))?;
            }
            std::fs::rename(&self.current, &self.old).map_err(io_err(&self.current))?;
        }
        std::fs::rename(&self.staging, &self.current).map_err(io_err(&self.staging))?;
        self.committed = true;
        if self.old.exists() {
            std::fs::remove_dir_all(&self.old).map_err(io_err(&self.old))?;
        }
        Ok(self.current.clone())
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

/// Removes what interrupted writes left in a run folder: the staging folder `checkpoint.tmp`, the
/// `*.tmp` siblings of [`write_atomic`], and `checkpoint.old` once `checkpoint` is complete (it holds
/// `marker`). Returns what was removed.
///
/// Why before writing: a `checkpoint.tmp` left by a full disk keeps the disk full, so the next run
/// failed before it reached the point where [`CheckpointSwap::begin`] would have emptied it. Only
/// call this while holding the folder's [`RunLock`](crate::lock::RunLock)
/// ([`RunLock::clean_leftovers`](crate::lock::RunLock::clean_leftovers) does): another writer's
/// temporaries are live.
pub fn clean_leftovers(dir: &Path, marker: &str) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let staging = dir.join("checkpoint.tmp");
    if staging.symlink_metadata().is_ok() {
        remove_any(&staging)?;
        removed.push(staging);
    }
    let old = dir.join("checkpoint.old");
    if old.symlink_metadata().is_ok() && dir.join("checkpoint").join(marker).is_file() {
        remove_any(&old)?;
        removed.push(old);
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let is_file = entry.file_type().map_err(io_err(&path))?.is_file();
        if is_file && path.extension().is_some_and(|e| e == "tmp") {
            remove_any(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

fn remove_any(path: &Path) -> Result<()> {
    let meta = path.symlink_metadata().map_err(io_err(path))?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path).map_err(io_err(path))
    } else {
        std::fs::remove_file(path).map_err(io_err(path))
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

    /// `/dev/full` fails every write with ENOSPC, as a full disk does.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_reported_as_such_through_an_encoder() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut w = BufWriter::new(SpaceWatch { file, full: false });
        // The encoder wraps the I/O error in its own (serde_json here; MessagePack alike), and the
        // caller flattens it into `io::Error::other`, as the writers in this workspace do.
        let big = vec![1.5f64; 100_000];
        let err = serde_json::to_writer(&mut w, &big)
            .map_err(std::io::Error::other)
            .and_then(|()| w.flush())
            .unwrap_err();
        // serde_json's error hides the I/O error from `source()`: only the writer saw it.
        assert!(!is_no_space(&err), "{err}");
        assert!(w.get_ref().full, "{err}");
        // Wrappers that keep the chain are seen through.
        let wrapped = std::io::Error::other(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(is_no_space(&wrapped));
        let plain = std::io::Error::other("encoder failed");
        assert!(!is_no_space(&plain));
        let msg = FormatError::NoSpace {
            path: "/run/checkpoint/net.mpk".into(),
        }
        .to_string();
        assert!(
            msg.starts_with("no space left on device: /run/checkpoint/net.mpk"),
            "{msg}"
        );
    }

    #[test]
    fn an_abandoned_checkpoint_removes_its_staging_folder() {
        let dir = tempfile::tempdir().unwrap();
        let swap = CheckpointSwap::begin(dir.path()).unwrap();
        std::fs::write(swap.staging().join("net.mpk"), vec![0u8; 4096]).unwrap();
        drop(swap); // an error (a full disk) while filling it
        assert!(!dir.path().join("checkpoint.tmp").exists());
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
