//! One writer per run folder: an advisory lock held for the whole run.
//!
//! Two trainings started on the same `--out` used to race: one died on `checkpoint.tmp: Directory not
//! empty`, or worse, the second silently resumed the first one's checkpoint and both reported success.
//! [`RunLock::acquire`] takes an exclusive advisory lock (`flock(2)` through std's `File::try_lock`,
//! stable since Rust 1.89, so no extra crate) on `DIR/run.lock` and writes the holder's pid, host and
//! start time into it; a second writer is refused at once with a [`LockError::Held`] naming the holder.
//!
//! Stale locks: the kernel drops an advisory lock when its process dies, so a crashed run never blocks
//! the next one. A clean exit empties the file ([`Drop`]); a file that still names a holder when the
//! lock is free therefore means that holder died mid-run, and is reported in
//! [`RunLock::taken_over`]. On a filesystem without advisory locks (some network mounts) the pid in
//! the file decides: a live process on this host keeps the folder, a dead one is taken over, and a
//! holder on another host is refused (we cannot see its processes).
//!
//! The lock file is never deleted: deleting it would let a third process lock a fresh inode while a
//! second still holds the old one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = "run.lock";

/// Who holds (or last held) a run folder, as written in its lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// Unix seconds when the lock was taken.
    pub since: u64,
    pub command: String,
}

impl Holder {
    fn me() -> Self {
        Holder {
            pid: std::process::id(),
            host: hostname(),
            since: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }

    fn to_text(&self) -> String {
        format!(
            "pid={}\nhost={}\nsince={}\ncommand={}\n",
            self.pid,
            self.host,
            self.since,
            self.command.replace('\n', " ")
        )
    }

    /// Parses a lock file's text; `None` for an empty file (released cleanly) or one we cannot read.
    fn parse(text: &str) -> Option<Self> {
        let mut h = Holder {
            pid: 0,
            host: String::new(),
            since: 0,
            command: String::new(),
        };
        for line in text.lines() {
            match line.split_once('=') {
                Some(("pid", v)) => h.pid = v.trim().parse().ok()?,
                Some(("host", v)) => h.host = v.trim().to_string(),
                Some(("since", v)) => h.since = v.trim().parse().unwrap_or(0),
                Some(("command", v)) => h.command = v.to_string(),
                _ => {}
            }
        }
        (h.pid != 0).then_some(h)
    }

    /// Whether this holder's process still runs: only answerable on this host (`/proc/PID`).
    fn alive_here(&self) -> Option<bool> {
        (self.host == hostname()).then(|| Path::new(&format!("/proc/{}", self.pid)).exists())
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {} (since unix time {}: `{}`)",
            self.pid, self.host, self.since, self.command
        )
    }
}

/// The machine's name, for the lock file (Linux: the kernel's hostname; else `$HOSTNAME`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown-host".into())
}

/// Why a run folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{dir} is in use by another run: {holder}; wait for it to finish, or choose another output \
         folder (lock file: {lock})"
    )]
    Held {
        dir: PathBuf,
        lock: PathBuf,
        holder: Holder,
    },
    #[error(
        "{dir} is in use by another run (its lock file {lock} does not say by whom); wait for it \
         to finish, or choose another output folder"
    )]
    HeldUnknown { dir: PathBuf, lock: PathBuf },
    #[error(
        "{dir}: this filesystem has no advisory locks and the lock file {lock} names {holder}, \
         whose processes cannot be seen from here; if that run is over, delete {lock}"
    )]
    ForeignHolder {
        dir: PathBuf,
        lock: PathBuf,
        holder: Holder,
    },
}

/// An exclusive hold on a run folder, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    dir: PathBuf,
    path: PathBuf,
    taken_over: Option<Holder>,
}

impl RunLock {
    /// Locks `dir` (created if absent) for this process, or fails at once if another run holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        let locked = file.try_lock();
        // Read only after trying: a holder that released cleanly in between has emptied the file.
        let previous = read_holder(&mut file, &path)?;
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // The holder writes its name right after locking; a reader can be a moment early.
                let holder = previous.or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    read_holder(&mut file, &path).ok().flatten()
                });
                return Err(match holder {
                    Some(holder) => LockError::Held {
                        dir: dir.to_path_buf(),
                        lock: path,
                        holder,
                    },
                    None => LockError::HeldUnknown {
                        dir: dir.to_path_buf(),
                        lock: path,
                    },
                }
                .into());
            }
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                if let Some(holder) = &previous {
                    match holder.alive_here() {
                        Some(true) if holder.pid != std::process::id() => {
                            return Err(LockError::Held {
                                dir: dir.to_path_buf(),
                                lock: path,
                                holder: holder.clone(),
                            }
                            .into())
                        }
                        None => {
                            return Err(LockError::ForeignHolder {
                                dir: dir.to_path_buf(),
                                lock: path,
                                holder: holder.clone(),
                            }
                            .into())
                        }
                        _ => {}
                    }
                }
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        let me = Holder::me();
        file.set_len(0).map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
        file.write_all(me.to_text().as_bytes())
            .and_then(|()| file.flush())
            .map_err(io_err(&path))?;
        Ok(RunLock {
            file,
            dir: dir.to_path_buf(),
            path,
            taken_over: previous,
        })
    }

    /// The holder whose lock was found abandoned (its process died without releasing it), if any.
    pub fn taken_over(&self) -> Option<&Holder> {
        self.taken_over.as_ref()
    }

    /// The locked run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes what interrupted writes left in the folder ([`crate::atomic::clean_leftovers`]);
    /// safe because this process is the folder's only writer.
    pub fn clean_leftovers(&self, marker: &str) -> Result<Vec<PathBuf>> {
        crate::atomic::clean_leftovers(&self.dir, marker)
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // An empty file marks a clean release; closing the file drops the advisory lock.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn read_holder(file: &mut File, path: &Path) -> Result<Option<Holder>> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    // A lock file is a few lines; anything longer was not written by us.
    file.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(io_err(path))?;
    Ok(Holder::parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FormatError;

    #[test]
    fn a_second_writer_is_refused_at_once_with_the_holder_named() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = RunLock::acquire(&run).unwrap();
        assert!(first.taken_over().is_none());
        let started = std::time::Instant::now();
        let err = RunLock::acquire(&run).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        match &err {
            FormatError::Lock(LockError::Held { holder, .. }) => {
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.host, hostname());
            }
            other => panic!("wrong error {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("in use by another run"), "{msg}");
        // Released on drop: the next run gets it, and sees a clean release (no stale holder).
        drop(first);
        let again = RunLock::acquire(&run).unwrap();
        assert!(again.taken_over().is_none());
    }

    #[test]
    fn a_lock_file_naming_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // A process that has exited: its pid is free, its lock (if any) dropped by the kernel.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = Holder {
            pid: dead,
            host: hostname(),
            since: 1,
            command: "edm train --out run".into(),
        };
        std::fs::write(dir.path().join(LOCK_FILE), stale.to_text()).unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(lock.taken_over(), Some(&stale));
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(
            text.contains(&format!("pid={}", std::process::id())),
            "{text}"
        );
    }

    /// Child side of the next test: holds the lock until killed.
    #[test]
    #[ignore = "run by a_killed_holder_releases_the_folder as a child process"]
    fn lock_holder_child() {
        let Some(dir) = std::env::var_os("FORMATS_LOCK_CHILD_DIR") else {
            return;
        };
        let _lock = RunLock::acquire(Path::new(&dir)).unwrap();
        println!("locked");
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    #[test]
    fn a_killed_holder_releases_the_folder() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock::tests::lock_holder_child",
                "--ignored",
                "--nocapture",
            ])
            .env("FORMATS_LOCK_CHILD_DIR", dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.any(|l| l.unwrap().contains("locked")));
        let err = RunLock::acquire(dir.path()).unwrap_err();
        assert!(
            matches!(&err, FormatError::Lock(LockError::Held { holder, .. }) if holder.pid == child.id()),
            "{err}"
        );
        child.kill().unwrap(); // SIGKILL: no destructor runs, the file keeps naming the child
        child.wait().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(lock.taken_over().map(|h| h.pid), Some(child.id()));
    }

    #[test]
    fn clean_leftovers_removes_temporaries_but_keeps_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("checkpoint.tmp/sub")).unwrap();
        std::fs::write(d.join("checkpoint.tmp/sub/net.mpk"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir_all(d.join("checkpoint")).unwrap();
        std::fs::write(d.join("checkpoint/state.json"), "{}").unwrap();
        std::fs::create_dir_all(d.join("checkpoint.old")).unwrap();
        std::fs::write(d.join("metrics.jsonl.tmp"), "x").unwrap();
        std::fs::write(d.join("metrics.jsonl"), "{}\n").unwrap();
        let mut removed = lock.clean_leftovers("state.json").unwrap();
        removed.sort();
        assert_eq!(
            removed,
            [
                d.join("checkpoint.old"),
                d.join("checkpoint.tmp"),
                d.join("metrics.jsonl.tmp")
            ]
        );
        assert!(d.join("checkpoint/state.json").is_file() && d.join("metrics.jsonl").is_file());
        assert!(d.join(LOCK_FILE).is_file());
        // An incomplete `checkpoint` keeps `checkpoint.old`: it is the one to resume from.
        std::fs::remove_file(d.join("checkpoint/state.json")).unwrap();
        std::fs::create_dir_all(d.join("checkpoint.old")).unwrap();
        assert!(lock.clean_leftovers("state.json").unwrap().is_empty());
        assert!(d.join("checkpoint.old").is_dir());
    }
}
