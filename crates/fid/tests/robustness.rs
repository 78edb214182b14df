//! Bad inputs are typed errors, never panics: broken TorchScript archives, hostile pickles, fuzzed
//! pickle and npz bytes. Also the dataset readers on small synthetic files.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use fid::pickle::{self, PickleError, Value};
use fid::torchscript::{read_script_module, torchscript_allows};
use fid::{Dataset, FidError, InceptionV3, RefStats};
use proptest::prelude::*;

type B = Flex;

fn extra(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fid_extra")
        .join(name)
}

#[test]
fn reads_a_real_torchscript_archive() {
    let m = read_script_module(&extra("tiny_script.pt")).unwrap();
    assert_eq!(m.order, vec!["w".to_string(), "b".to_string()]);
    let w = &m.tensors["w"];
    assert_eq!(w.shape, vec![2, 3]);
    assert_eq!(w.data, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.25]);
    let b = &m.tensors["b"];
    assert_eq!(b.shape, vec![2, 3]);
    assert_eq!(b.data, vec![-1.0, 1.0, 3.0, 0.0, 2.0, 4.0]);
}

#[test]
fn safetensors_round_trip_keeps_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let m = read_script_module(&extra("tiny_script.pt")).unwrap();
    let p = dir.path().join("tiny.safetensors");
    m.save_safetensors(&p).unwrap();
    let back = fid::torchscript::ScriptModule::load_safetensors(&p).unwrap();
    assert_eq!(back.tensors, m.tensors);
    let mut names = m.order.clone();
    names.sort();
    assert_eq!(back.order, names);
    let err = InceptionV3::<B>::load(&p, &Default::default()).unwrap_err();
    assert!(matches!(err, FidError::TensorCount { .. }), "{err}");
    std::fs::write(&p, b"\x02\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    assert!(fid::torchscript::ScriptModule::load_safetensors(&p).is_ok());
    std::fs::write(&p, b"garbage").unwrap();
    assert!(matches!(
        InceptionV3::<B>::load(&p, &Default::default()).unwrap_err(),
        FidError::Safetensors { .. }
    ));
    // The real network survives the round trip.
    if let Some(real) = assets::cached(fid::INCEPTION_ASSET) {
        let m = read_script_module(&real).unwrap();
        let p = dir.path().join("inception.safetensors");
        m.save_safetensors(&p).unwrap();
        let back = fid::torchscript::ScriptModule::load_safetensors(&p).unwrap();
        assert_eq!(back.order.len(), 376);
        assert_eq!(back.tensors, m.tensors);
        InceptionV3::<B>::load(&p, &Default::default()).unwrap();
    }
}

#[test]
fn wrong_tensor_count_is_a_typed_error() {
    let err = InceptionV3::<B>::from_torchscript(extra("tiny_script.pt"), &Default::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            FidError::TensorCount {
                expected: 376,
                found: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn pickle_that_calls_os_system_is_refused() {
    let err = read_script_module(&extra("evil.pt")).unwrap_err();
    match &err {
        FidError::Pickle {
            source: PickleError::ForbiddenGlobal { module, name, .. },
            ..
        } => assert_eq!((module.as_str(), name.as_str()), ("posix", "system")),
        other => panic!("expected ForbiddenGlobal, got {other}"),
    }
    println!("evil.pt: {err}");
}

#[test]
fn truncated_archives_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(extra("tiny_script.pt")).unwrap();
    for keep in [0, 10, full.len() / 2, full.len() - 30] {
        let p = dir.path().join(format!("cut{keep}.pt"));
        std::fs::write(&p, &full[..keep]).unwrap();
        let err = InceptionV3::<B>::from_torchscript(&p, &Default::default()).unwrap_err();
        assert!(matches!(err, FidError::Zip { .. }), "{keep}: {err}");
    }
    // The real asset, truncated: the central directory is gone.
    if let Some(real) = assets::cached(fid::INCEPTION_ASSET) {
        let mut head = vec![0u8; 1 << 20];
        use std::io::Read;
        std::fs::File::open(real)
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        let p = dir.path().join("default_1_truncated.pt");
        std::fs::write(&p, &head).unwrap();
        let err = InceptionV3::<B>::from_torchscript(&p, &Default::default()).unwrap_err();
        assert!(matches!(err, FidError::Zip { .. }), "{err}");
    } else {
        println!(
            "skipped the real-asset part: asset {} not in cache",
            fid::INCEPTION_ASSET
        );
    }
}

/// Rewrites one member of a zip, keeping the others.
fn rezip(src: &Path, dst: &Path, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) {
    use std::io::Read;
    let mut a = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    for i in 0..a.len() {
        let mut f = a.by_index(i).unwrap();
        let name = f.name().to_string();
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        if let Some(b) = edit(&name, b) {
            w.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(&b).unwrap();
        }
    }
    w.finish().unwrap();
}

#[test]
fn missing_or_short_storage_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nostorage.pt");
    rezip(&extra("tiny_script.pt"), &p, |n, b| {
        (!n.ends_with("data/1")).then_some(b)
    });
    assert!(matches!(
        read_script_module(&p).unwrap_err(),
        FidError::MissingMember { .. }
    ));
    let p = dir.path().join("short.pt");
    rezip(&extra("tiny_script.pt"), &p, |n, b| {
        Some(if n.ends_with("data/0") {
            b[..8].to_vec()
        } else {
            b
        })
    });
    assert!(matches!(
        read_script_module(&p).unwrap_err(),
        FidError::StorageTooSmall { .. }
    ));
    let p = dir.path().join("badpkl.pt");
    rezip(&extra("tiny_script.pt"), &p, |n, b| {
        Some(if n.ends_with("data.pkl") {
            b[..b.len() / 2].to_vec()
        } else {
            b
        })
    });
    assert!(matches!(
        read_script_module(&p).unwrap_err(),
        FidError::Pickle { .. }
    ));
}

#[test]
fn cifar10_python_batches_read_like_python() {
    use ndarray::{Array1, Array4};
    let mut npz =
        ndarray_npy::NpzReader::new(std::fs::File::open(extra("cifar_mini_expected.npz")).unwrap())
            .unwrap();
    let images: Array4<u8> = npz.by_name("images").unwrap();
    let labels: Array1<u8> = npz.by_name("labels").unwrap();
    let (data, shape, l) = fid::data::read_cifar10(&extra("cifar_mini.tar.gz")).unwrap();
    assert_eq!(shape, [5, 3, 32, 32]);
    assert_eq!(data, images.iter().copied().collect::<Vec<_>>());
    assert_eq!(l, labels.to_vec());
    let mut ds = Dataset::open(extra("cifar_mini.tar.gz")).unwrap();
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.read(3, 10).unwrap().shape, [2, 3, 32, 32]);
}

#[test]
fn image_folder_and_dataset_zip_are_sorted_and_recursive() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    std::fs::create_dir_all(root.join("b")).unwrap();
    let mk = |v: u8| image::RgbImage::from_pixel(4, 3, image::Rgb([v, v / 2, 255 - v]));
    mk(30).save(root.join("b/x.png")).unwrap();
    mk(10).save(root.join("a.png")).unwrap();
    mk(20).save(root.join("b/a.PNG")).unwrap();
    std::fs::write(root.join("notes.txt"), "ignored").unwrap();
    let mut ds = Dataset::open(&root).unwrap();
    assert_eq!(ds.names(), ["a.png", "b/a.PNG", "b/x.png"]);
    let batch = ds.read(0, 3).unwrap();
    assert_eq!(batch.shape, [3, 3, 3, 4]);
    // CHW: first image's red plane is all 10, its blue plane all 245
    assert!(batch.data[..12].iter().all(|&v| v == 10));
    assert!(batch.data[24..36].iter().all(|&v| v == 245));
    assert_eq!(batch.data[36], 20);

    // The same images in an EDM dataset zip.
    let zpath = dir.path().join("ds.zip");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&zpath).unwrap());
    for (name, v) in [
        ("00000/img00000001.png", 20u8),
        ("00000/img00000000.png", 10),
    ] {
        let mut png = Vec::new();
        mk(v)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(&png).unwrap();
    }
    w.start_file("dataset.json", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(br#"{"labels": null}"#).unwrap();
    w.finish().unwrap();
    let mut ds = Dataset::open(&zpath).unwrap();
    assert_eq!(ds.len(), 2);
    let b = ds.read(0, 2).unwrap();
    assert_eq!(b.shape, [2, 3, 3, 4]);
    assert_eq!(b.data[0], 10);

    // Mixed resolutions are an error naming the file.
    image::RgbImage::new(5, 5).save(root.join("c.png")).unwrap();
    let mut ds = Dataset::open(&root).unwrap();
    let err = ds.read(0, 4).unwrap_err();
    assert!(err.to_string().contains("c.png"), "{err}");
}

/// A valid protocol-2 pickle used as the seed for mutations: the tiny archive's data.pkl.
fn seed_pickle() -> Vec<u8> {
    use std::io::Read;
    let mut a =
        zip::ZipArchive::new(std::fs::File::open(extra("tiny_script.pt")).unwrap()).unwrap();
    let mut f = a.by_name("tiny_script/data.pkl").unwrap();
    let mut b = Vec::new();
    f.read_to_end(&mut b).unwrap();
    b
}

fn seed_npz() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.npz");
    RefStats {
        mu: vec![1.0, 2.0, 3.0],
        sigma: (0..9).map(|i| i as f64).collect(),
    }
    .save_npz(&p)
    .unwrap();
    std::fs::read(p).unwrap()
}

#[test]
fn seeds_are_valid() {
    assert!(matches!(
        pickle::load(&seed_pickle(), &torchscript_allows).unwrap(),
        Value::Object { .. }
    ));
    assert!(RefStats::read_npz(std::io::Cursor::new(seed_npz())).is_ok());
}

fn fuzz_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

proptest! {
    // PROPTEST_CASES=N raises the count for a longer fuzzing session.
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Mutations of a real TorchScript data.pkl (flip, insert, delete, truncate) never panic.
    #[test]
    fn fuzz_pickle_mutated(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..8)) {
        let mut b = seed_pickle();
        for (pos, byte, kind) in edits {
            if b.is_empty() { break; }
            let i = pos % b.len();
            match kind {
                0 => b[i] = byte,
                1 => b.insert(i, byte),
                2 => { b.remove(i); }
                _ => b.truncate(i),
            }
        }
        let _ = pickle::load(&b, &torchscript_allows);
        let _ = fid::data::cifar::parse_batch(&b, "fuzz");
    }

    /// Random and mutated npz bytes never panic the statistics reader.
    #[test]
    fn fuzz_npz(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..8),
                random in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = RefStats::read_npz(std::io::Cursor::new(random));
        let mut b = seed_npz();
        for (pos, byte, kind) in edits {
            if b.is_empty() { break; }
            let i = pos % b.len();
            match kind {
                0 => b[i] = byte,
                1 => b.insert(i, byte),
                2 => { b.remove(i); }
                _ => b.truncate(i),
            }
        }
        let _ = RefStats::read_npz(std::io::Cursor::new(b));
    }
}
