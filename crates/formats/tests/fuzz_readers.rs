//! Issue #20's fuzz suite for the shared readers: idx (raw and gzip), safetensors, `.npy`/`.npz`,
//! zip members, and the size limits. Random and mutated bytes must be typed errors, never panics,
//! aborts or hangs; the named tests below are the adversarial pass's cases, kept as regressions.
//!
//! Case counts: 300 per property by default (`PROPTEST_CASES` raises it); the whole file runs in
//! about a second in release.

use std::io::Write;
use std::path::Path;

use formats::{FormatError, Limit};
use proptest::prelude::*;

fn fuzz_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn mutate(mut b: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, byte, kind) in edits {
        if b.is_empty() {
            break;
        }
        let i = pos % b.len();
        match kind {
            0 => b[i] = byte,
            1 => b.insert(i, byte),
            2 => {
                b.remove(i);
            }
            _ => b.truncate(i),
        }
    }
    b
}

fn seed_npz() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.npz");
    formats::npz::write_npz_f64(
        &p,
        &[
            ("mu", &[2], &[1.0, 2.0]),
            ("sigma", &[2, 2], &[1.0, 0.0, 0.0, 1.0]),
        ],
    )
    .unwrap();
    std::fs::read(p).unwrap()
}

fn seed_safetensors() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.safetensors");
    formats::write_safetensors(
        &p,
        &[
            ("a".into(), vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
            ("b".into(), vec![1], vec![5.0]),
        ],
    )
    .unwrap();
    std::fs::read(p).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Mutated idx files, raw and gzip, read from disk: a typed result, never a panic.
    #[test]
    fn fuzz_idx(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..8),
                dims in proptest::collection::vec(0u32..6, 1..4), gz in any::<bool>()) {
        let n: u32 = dims.iter().product();
        let raw = mutate(idx_bytes(&dims, &vec![7u8; n as usize]), &edits);
        let bytes = if gz { mutate(gzip(&raw), &edits[..edits.len().min(2)]) } else { raw.clone() };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-idx");
        std::fs::write(&p, &bytes).unwrap();
        let got = formats::read_idx(&p);
        if let Ok(idx) = &got {
            prop_assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>());
        }
        let _ = formats::idx::parse_idx(&raw);
    }

    /// Random and mutated safetensors never panic the reader.
    #[test]
    fn fuzz_safetensors(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..8),
                        random in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = formats::parse_safetensors(&random, Path::new("r"));
        let _ = formats::parse_safetensors(&mutate(seed_safetensors(), &edits), Path::new("m"));
    }

    /// Random `.npy` headers (any shape text, dtype, version) and mutated `.npz` archives.
    #[test]
    fn fuzz_npz(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..8),
                shape in proptest::collection::vec(any::<u64>(), 0..4),
                descr in prop::sample::select(vec!["<f8", "<f4", "<i8", "|u1", "'", ""]),
                body in 0usize..64) {
        let text: String = shape.iter().map(|d| format!("{d}, ")).collect();
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({text}), }}\n");
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.as_bytes());
        b.extend(vec![0u8; body]);
        if let Ok(a) = formats::npz::parse_npy(&b) {
            prop_assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
        }
        let m = mutate(seed_npz(), &edits);
        let _ = formats::npz::read_npz_f64_from(std::io::Cursor::new(m), Path::new("m"), &["mu", "sigma"]);
    }

    /// Any reader with any limit: `read_bounded` returns at most `limit` bytes, or an error.
    #[test]
    fn fuzz_bounded(len in 0usize..4096, limit in 1u64..2048, declared in proptest::option::of(0u64..4096)) {
        let data = vec![1u8; len];
        let lim = Limit { bytes: limit, env: "L" };
        if let Ok(v) = formats::read_bounded(&data[..], lim, declared, Path::new("s"), "stream") {
            prop_assert!(v.len() as u64 <= limit);
            if let Some(d) = declared { prop_assert!(v.len() as u64 <= d); }
        }
        let _ = formats::input::parse_size(&format!("{len}{}", ["", "K", "M", "G", "T", "x"][len % 6]));
    }
}

/// #20: a gzip idx whose stream inflates far past what its header declares (a 200 MB bomb behind
/// a 10-image header) is refused after one byte past the declared size.
#[test]
fn regression_gzip_idx_bomb_stops_at_the_declared_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train-images-idx3-ubyte.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&idx_bytes(&[10, 28, 28], &[])).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        enc.write_all(&zeros).unwrap();
    }
    std::fs::write(&p, enc.finish().unwrap()).unwrap();
    let t = std::time::Instant::now();
    let err = formats::read_idx(&p).unwrap_err();
    assert!(matches!(err, FormatError::Idx { .. }), "{err}");
    assert!(err.to_string().contains("declared size"), "{err}");
    assert!(t.elapsed().as_secs() < 5, "read the whole bomb");
}

/// #20: dimensions whose body exceeds the limit are refused before anything is inflated, naming
/// the variable that raises the limit.
#[test]
fn regression_idx_declaring_gigabytes_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gz");
    std::fs::write(&p, gzip(&idx_bytes(&[4_000_000_000, 28, 28], &[]))).unwrap();
    let err = formats::read_idx(&p).unwrap_err();
    assert!(matches!(err, FormatError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("ICLGDD_MAX_IDX_BYTES"), "{err}");
}

/// #20: npz statistics declaring a huge shape (`fid frechet`, `fid calc --ref` aborted allocating it).
#[test]
fn regression_npz_huge_declared_shape_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.npz");
    let npy = |shape: &str| {
        let header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}\n");
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.as_bytes());
        b
    };
    let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
    let o = zip::write::SimpleFileOptions::default();
    z.start_file("mu.npy", o).unwrap();
    z.write_all(&npy("(1000000000,)")).unwrap();
    z.start_file("sigma.npy", o).unwrap();
    z.write_all(&npy("(1000000000, 1000000000)")).unwrap();
    z.finish().unwrap();
    let err = formats::npz::read_npz_f64(&p, &["mu", "sigma"]).unwrap_err();
    assert!(matches!(err, FormatError::Npz { .. }), "{err}");
    assert!(err.to_string().contains("needs"), "{err}");
}

/// #20: a model or data path that is a FIFO or a device is a typed error at once (it blocked
/// forever before).
#[cfg(unix)]
#[test]
fn regression_fifo_and_device_inputs_do_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stats.npz");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (tx, rx) = std::sync::mpsc::channel();
    let f = fifo.clone();
    std::thread::spawn(move || {
        let r = (
            formats::read_idx(&f).map(|_| ()),
            formats::read_safetensors(&f).map(|_| ()),
            formats::npz::read_npz_f64(&f, &["mu"]).map(|_| ()),
            formats::read_safetensors(Path::new("/dev/zero")).map(|_| ()),
        );
        tx.send(format!("{r:?}")).unwrap();
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("a FIFO input hung");
    assert_eq!(got.matches("NotRegularFile").count(), 4, "{got}");
}
