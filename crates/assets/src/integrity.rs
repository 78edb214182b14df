//! The cache proves itself: every use checks each cached file's size and a fast hash recorded when it
//! was fetched, and `verify` / `fetch` re-hash everything with SHA-256 against the pinned digests.
//!
//! Why a manifest, and why xxh3: the pinned SHA-256 digests already say what each file must be, but
//! SHA-256 of the 1.1 GB GGUF costs seconds on every test and every `assets path`, so a use would
//! skip it, and a bit flip went unnoticed (`icl-probe predict` ran on a flipped GGUF). XXH3-128
//! (`xxhash-rust`, no dependencies) reads at memory speed, several times SHA-256's rate, and finds
//! any accidental change (bit rot, a truncated copy, an edited file) with certainty for all purposes.
//! It is not a defence against a forger: the full SHA-256 check on `verify` and `fetch` is. Size and
//! mtime alone (the other option) miss a flip that keeps the mtime (`touch -r`, a restored backup,
//! silent corruption), so every use hashes the bytes.
//!
//! The manifest `CACHE/NAME.manifest.json` lists every file of the asset with its size, XXH3-128 and
//! SHA-256. It is written (atomically, through a unique temporary and a rename) after the asset's
//! files matched their pinned SHA-256, and before a use trusts it its SHA-256 entries must equal the
//! catalog's pins: a manifest from another version, or edited by hand, is ignored and the asset is
//! re-hashed in full. Because every entry follows from the pinned content, the manifest of a good
//! asset is always the same, so it can be rewritten at any time (an older cache without one gets it
//! on its first use, after a full check).
//!
//! Within one process a folder that passed is not hashed again while no file's size, mtime, ctime or
//! inode changed (tests call [`crate::cached`] many times).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{file_name, tree_sha256, Asset, AssetError, Files};

/// How hard a check looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Sizes and XXH3-128 against the manifest (every use of a cached asset).
    Fast,
    /// Sizes and SHA-256 against the pinned digests (`verify`, `fetch`).
    Full,
}

/// One thing wrong with a cached asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A file the asset needs is not there.
    Missing { file: String },
    /// A file that is not part of the asset sits in its folder.
    Extra { file: String },
    /// The name is there but is not a regular file (a folder, a broken link, a device).
    NotAFile { file: String },
    /// The file has the wrong size.
    Size {
        file: String,
        expected: u64,
        actual: u64,
    },
    /// The file's bytes changed (`hash` is `sha256` or `xxh3-128`).
    Changed {
        file: String,
        hash: &'static str,
        expected: String,
        actual: String,
    },
    /// A folder matched by pattern holds the wrong number of files.
    Count { expected: usize, found: usize },
    /// The digest over all files of a pattern-matched folder is wrong (which file changed is not
    /// known without a manifest).
    Tree { expected: String, actual: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing { file } => write!(f, "missing file `{file}`"),
            Problem::Extra { file } => write!(f, "extra file `{file}` (not part of the asset)"),
            Problem::NotAFile { file } => write!(f, "`{file}` is not a regular file"),
            Problem::Size {
                file,
                expected,
                actual,
            } => write!(f, "`{file}` is {actual} bytes, expected {expected}"),
            Problem::Changed {
                file,
                hash,
                expected,
                actual,
            } => write!(f, "`{file}` changed ({hash} {actual}, expected {expected})"),
            Problem::Count { expected, found } => {
                write!(f, "{found} matching files, expected {expected}")
            }
            Problem::Tree { expected, actual } => write!(
                f,
                "the files' tree digest is {actual}, expected {expected} (a file changed)"
            ),
        }
    }
}

/// The problems of one asset, for [`AssetError::Damaged`]'s message.
pub fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One file's record in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub size: u64,
    pub xxh3_128: String,
    pub sha256: String,
}

/// `CACHE/NAME.manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub asset: String,
    pub files: BTreeMap<String, Entry>,
}

/// Where an asset's manifest lives.
pub fn manifest_path(root: &Path, asset: &Asset) -> PathBuf {
    root.join(format!("{}.manifest.json", asset.name))
}

/// What the catalog pins for an asset's folder.
enum Pins {
    /// Named files with their SHA-256 (and size, where pinned).
    Named(BTreeMap<String, (&'static str, Option<u64>)>),
    /// Files matched by pattern, covered by one tree digest.
    Matching {
        prefixes: &'static [&'static str],
        suffix: &'static str,
        count: usize,
        tree: &'static str,
    },
}

fn pins(asset: &Asset) -> Pins {
    let mut named = BTreeMap::new();
    match asset.files {
        Files::Single { path, sha256 } => {
            named.insert(file_name(path).to_string(), (sha256, None));
        }
        Files::Listed { files, .. } => {
            for (name, sha256) in files {
                named.insert(name.to_string(), (*sha256, None));
            }
        }
        Files::Assembled(parts) => {
            named.insert(parts.file.to_string(), (parts.sha256, Some(parts.size)));
            if let Some(companion) = parts.companion {
                if let Pins::Named(c) = pins(companion) {
                    named.extend(c);
                }
            }
        }
        Files::Matching {
            prefixes,
            suffix,
            count,
            tree_sha256,
            ..
        } => {
            return Pins::Matching {
                prefixes,
                suffix,
                count,
                tree: tree_sha256,
            }
        }
    }
    Pins::Named(named)
}

/// Whether a file name belongs to a pattern-matched asset. A digit must follow the prefix so that
/// `cifar10_` does not also take `cifar100_` files.
pub(crate) fn matches_pattern(name: &str, prefixes: &[&str], suffix: &str) -> bool {
    prefixes.iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|rest| p.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit()))
    }) && name.ends_with(suffix)
}

/// Whether a manifest agrees with the catalog (else it is ignored and the asset re-hashed in full).
fn manifest_matches(asset: &Asset, m: &Manifest) -> bool {
    if m.asset != asset.name {
        return false;
    }
    match pins(asset) {
        Pins::Named(named) => {
            named.len() == m.files.len()
                && named.iter().all(|(name, (sha, size))| {
                    m.files
                        .get(name)
                        .is_some_and(|e| e.sha256 == *sha && size.is_none_or(|s| s == e.size))
                })
        }
        Pins::Matching {
            prefixes,
            suffix,
            count,
            tree,
        } => {
            let entries: Vec<(String, String)> = m
                .files
                .iter()
                .map(|(n, e)| (n.clone(), e.sha256.clone()))
                .collect();
            m.files.len() == count
                && m.files.keys().all(|n| matches_pattern(n, prefixes, suffix))
                && tree_sha256(&entries) == tree
        }
    }
}

fn read_manifest(root: &Path, asset: &Asset) -> Option<Manifest> {
    let text = std::fs::read_to_string(manifest_path(root, asset)).ok()?;
    let m: Manifest = serde_json::from_str(&text).ok()?;
    manifest_matches(asset, &m).then_some(m)
}

/// Writes the manifest through a unique temporary and a rename (several test processes may write
/// the same one at once; their contents are identical).
fn write_manifest(root: &Path, asset: &Asset, m: &Manifest) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(m).map_err(std::io::Error::other)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.manifest-", asset.name))
        .tempfile_in(root)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(manifest_path(root, asset))
        .map_err(|e| e.error)?;
    Ok(())
}

/// Size, XXH3-128 and (for a full check) SHA-256 of a file, in one read.
fn hash_file(path: &Path, full: bool) -> std::io::Result<(u64, String, Option<String>)> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path)?;
    let mut xxh = xxhash_rust::xxh3::Xxh3Default::new();
    let mut sha = full.then(Sha256::new);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        xxh.update(&buf[..n]);
        if let Some(s) = &mut sha {
            s.update(&buf[..n]);
        }
        size += n as u64;
    }
    Ok((
        size,
        format!("{:032x}", xxh.digest128()),
        sha.map(|s| hex::encode(s.finalize())),
    ))
}

/// A folder's entries by name: (is a regular file after links, size, mtime, ctime, inode).
type Snapshot = BTreeMap<String, (bool, u64, i128, i128, u64)>;

fn snapshot(dir: &Path) -> std::io::Result<Snapshot> {
    let mut out = Snapshot::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Follow links: a link to a good file is a good file; a broken one is not a file.
        let meta = std::fs::metadata(entry.path()).ok();
        let row = match meta {
            Some(m) => stat_row(&m),
            None => (false, 0, 0, 0, 0),
        };
        out.insert(name, row);
    }
    Ok(out)
}

#[cfg(unix)]
fn stat_row(m: &std::fs::Metadata) -> (bool, u64, i128, i128, u64) {
    use std::os::unix::fs::MetadataExt;
    (
        m.is_file(),
        m.len(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        m.ino(),
    )
}

#[cfg(not(unix))]
fn stat_row(m: &std::fs::Metadata) -> (bool, u64, i128, i128, u64) {
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    (m.is_file(), m.len(), mtime, 0, 0)
}

/// Folders that passed a check in this process, with what they looked like then.
static PASSED: Mutex<Option<HashMap<PathBuf, Snapshot>>> = Mutex::new(None);

fn passed_before(dir: &Path, snap: &Snapshot) -> bool {
    PASSED
        .lock()
        .map(|g| g.as_ref().and_then(|m| m.get(dir)) == Some(snap))
        .unwrap_or(false)
}

fn remember(dir: &Path, snap: Snapshot) {
    if let Ok(mut g) = PASSED.lock() {
        g.get_or_insert_with(HashMap::new)
            .insert(dir.to_path_buf(), snap);
    }
}

fn forget(dir: &Path) {
    if let Ok(mut g) = PASSED.lock() {
        if let Some(m) = g.as_mut() {
            m.remove(dir);
        }
    }
}

/// Checks the cached folder `root/NAME`; returns what is wrong (empty: all good). A fast check
/// without a valid manifest becomes a full one, and a full check that finds nothing wrong writes
/// the manifest. `Err` only for I/O failures other than the asset's own files (listing the folder).
pub(crate) fn check(root: &Path, asset: &Asset, mode: Check) -> Result<Vec<Problem>, AssetError> {
    let dir = root.join(asset.name);
    let io = |context: String| {
        move |source| AssetError::Io {
            asset: asset.name.into(),
            context,
            source,
        }
    };
    if !dir.is_dir() {
        // The asset's folder itself was replaced (by a file, a broken link).
        return Ok(vec![Problem::NotAFile {
            file: format!("{} (the asset's folder)", asset.name),
        }]);
    }
    let snap = snapshot(&dir).map_err(io(format!("listing {}", dir.display())))?;
    let manifest = read_manifest(root, asset);
    let mode = if manifest.is_none() {
        Check::Full
    } else {
        mode
    };
    if mode == Check::Fast && passed_before(&dir, &snap) {
        return Ok(Vec::new());
    }
    forget(&dir);
    let mut problems = Vec::new();
    // Which names the asset must have.
    let expected: BTreeSet<String> = match (&pins(asset), &manifest) {
        (Pins::Named(named), _) => named.keys().cloned().collect(),
        (Pins::Matching { .. }, Some(m)) => m.files.keys().cloned().collect(),
        (
            Pins::Matching {
                prefixes, suffix, ..
            },
            None,
        ) => snap
            .keys()
            .filter(|n| matches_pattern(n, prefixes, suffix))
            .cloned()
            .collect(),
    };
    for name in snap.keys().filter(|n| !expected.contains(*n)) {
        problems.push(Problem::Extra { file: name.clone() });
    }
    let mut computed: BTreeMap<String, Entry> = BTreeMap::new();
    for name in &expected {
        let Some(&(is_file, len, ..)) = snap.get(name) else {
            problems.push(Problem::Missing { file: name.clone() });
            continue;
        };
        if !is_file {
            problems.push(Problem::NotAFile { file: name.clone() });
            continue;
        }
        let want_size = match (&pins(asset), &manifest) {
            (_, Some(m)) => m.files.get(name).map(|e| e.size),
            (Pins::Named(named), None) => named.get(name).and_then(|p| p.1),
            _ => None,
        };
        if let Some(expected) = want_size.filter(|&s| s != len) {
            problems.push(Problem::Size {
                file: name.clone(),
                expected,
                actual: len,
            });
            continue;
        }
        let path = dir.join(name);
        let (size, xxh3, sha) = hash_file(&path, mode == Check::Full)
            .map_err(io(format!("hashing {}", path.display())))?;
        let entry = Entry {
            size,
            xxh3_128: xxh3,
            sha256: sha.unwrap_or_default(),
        };
        let changed = match mode {
            Check::Fast => manifest
                .as_ref()
                .and_then(|m| m.files.get(name))
                .filter(|e| e.xxh3_128 != entry.xxh3_128)
                .map(|e| ("xxh3-128", e.xxh3_128.clone(), entry.xxh3_128.clone())),
            Check::Full => {
                let pinned = match pins(asset) {
                    Pins::Named(named) => named.get(name).map(|p| p.0.to_string()),
                    // No per-file pin: the manifest's digest names the changed file, if we have one.
                    Pins::Matching { .. } => manifest
                        .as_ref()
                        .and_then(|m| m.files.get(name))
                        .map(|e| e.sha256.clone()),
                };
                pinned
                    .filter(|p| *p != entry.sha256)
                    .map(|p| ("sha256", p, entry.sha256.clone()))
            }
        };
        if let Some((hash, expected, actual)) = changed {
            problems.push(Problem::Changed {
                file: name.clone(),
                hash,
                expected,
                actual,
            });
            continue;
        }
        computed.insert(name.clone(), entry);
    }
    if let Pins::Matching { count, tree, .. } = pins(asset) {
        if mode == Check::Full && problems.is_empty() {
            if computed.len() != count {
                problems.push(Problem::Count {
                    expected: count,
                    found: computed.len(),
                });
            } else {
                let entries: Vec<(String, String)> = computed
                    .iter()
                    .map(|(n, e)| (n.clone(), e.sha256.clone()))
                    .collect();
                let actual = tree_sha256(&entries);
                if actual != tree {
                    problems.push(Problem::Tree {
                        expected: tree.into(),
                        actual,
                    });
                }
            }
        }
    }
    if problems.is_empty() {
        if mode == Check::Full {
            let m = Manifest {
                asset: asset.name.into(),
                files: computed,
            };
            if manifest.as_ref() != Some(&m) {
                // A read-only cache keeps working without a manifest (every use re-hashes fully).
                let _ = write_manifest(root, asset, &m);
            }
        }
        remember(&dir, snap);
    }
    Ok(problems)
}

/// [`check`], turned into [`AssetError::Damaged`] when something is wrong.
pub(crate) fn ensure(root: &Path, asset: &Asset, mode: Check) -> Result<(), AssetError> {
    let problems = check(root, asset, mode)?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AssetError::Damaged {
            asset: asset.name.into(),
            dir: root.join(asset.name).display().to_string(),
            problems,
        })
    }
}
