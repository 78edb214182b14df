//! Golden tests against what the Python references computed (see tests/fixtures/README.md).

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use fid::evaluator::{batch_to_tensor, tensor_to_vec};
use fid::{
    frechet_distance, preprocess, Dataset, FeatureStats, FidEvaluator, ImageBatch, InceptionV3,
    RefStats,
};
use ndarray::{Array1, Array2};
use ndarray_npy::NpzReader;

type B = Flex;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_st(name: &str) -> (Vec<u8>, Vec<usize>, safetensors::Dtype) {
    let bytes = std::fs::read(fixtures().join("inception/expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    (t.data().to_vec(), t.shape().to_vec(), t.dtype())
}

fn read_f32(name: &str) -> (Vec<f32>, Vec<usize>) {
    let (b, shape, dtype) = read_st(name);
    assert_eq!(dtype, safetensors::Dtype::F32);
    let v = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (v, shape)
}

fn images_u8() -> ImageBatch {
    let (data, shape, dtype) = read_st("images_u8");
    assert_eq!(dtype, safetensors::Dtype::U8);
    ImageBatch {
        data,
        shape: [shape[0], shape[1], shape[2], shape[3]],
    }
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn resize_299_matches_stylegan3() {
    let device = Default::default();
    let imgs = images_u8();
    let [_, c, h, w] = imgs.shape;
    let first2 = ImageBatch {
        data: imgs.data[..2 * c * h * w].to_vec(),
        shape: [2, c, h, w],
    };
    let x = preprocess::preprocess::<B>(batch_to_tensor(&first2, &device)).unwrap();
    assert_eq!(x.dims(), [2, 3, 299, 299]);
    let got = tensor_to_vec(x).unwrap();
    let (want, shape) = read_f32("resized_299");
    assert_eq!(shape, vec![2, 3, 299, 299]);
    let err = rel_err(&got, &want);
    let max_abs = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("resized_299: relative error {err:.3e}, max abs {max_abs:.3e} (tolerance 1e-5)");
    assert!(err <= 1e-5, "resized_299 relative error {err}");
}

fn inception_asset() -> Option<PathBuf> {
    let p = assets::cached(fid::INCEPTION_ASSET);
    if p.is_none() {
        println!(
            "skipped: asset {} not in cache, run `cargo run --release -p assets-cli -- fetch {}`",
            fid::INCEPTION_ASSET,
            fid::INCEPTION_ASSET
        );
    }
    p
}

#[test]
fn pool3_matches_reference_for_40_images() {
    let Some(path) = inception_asset() else {
        return;
    };
    let device = Default::default();
    let t0 = std::time::Instant::now();
    let net = InceptionV3::<B>::from_torchscript(&path, &device).unwrap();
    let load = t0.elapsed();
    let imgs = images_u8();
    let [n, c, h, w] = imgs.shape;
    let (want, shape) = read_f32("pool3");
    assert_eq!(shape, vec![n, 2048]);
    let per = c * h * w;
    let t1 = std::time::Instant::now();
    let mut got = Vec::new();
    for start in (0..n).step_by(10) {
        let batch = ImageBatch {
            data: imgs.data[start * per..(start + 10) * per].to_vec(),
            shape: [10, c, h, w],
        };
        got.extend(tensor_to_vec(net.features(batch_to_tensor(&batch, &device)).unwrap()).unwrap());
    }
    let secs = t1.elapsed().as_secs_f64();
    let mut worst = 0.0f64;
    for i in 0..n {
        let e = rel_err(
            &got[i * 2048..(i + 1) * 2048],
            &want[i * 2048..(i + 1) * 2048],
        );
        worst = worst.max(e);
        assert!(e <= 1e-4, "image {i}: pool3 relative error {e}");
    }
    println!(
        "pool3: worst per-image relative error {worst:.3e} over {n} images (tolerance 1e-4); \
         load {:.1}s, {:.2} images/s on CPU",
        load.as_secs_f64(),
        n as f64 / secs
    );

    // The in-training API: FID of a "generator" that yields the first 8 images (batches of 3) against
    // statistics of PyTorch's features of the same 8 images is zero up to rounding.
    let mut reference = FeatureStats::new(2048);
    reference.update(&want[..8 * 2048]).unwrap();
    let eval = FidEvaluator::new(net, reference.finalize().unwrap()).unwrap();
    let mut next = 0;
    let fid = eval
        .fid_of_generator(8, 3, |count| {
            let batch = ImageBatch {
                data: imgs.data[next * per..(next + count) * per].to_vec(),
                shape: [count, c, h, w],
            };
            next += count;
            batch_to_tensor::<B>(&batch, &device)
        })
        .unwrap();
    assert_eq!(next, 8);
    println!("FidEvaluator::fid_of_generator on the reference's own 8 images: {fid:.3e}");
    assert!(fid.abs() < 1e-2, "{fid}");
}

#[test]
fn png_folder_reads_the_fixture_images_in_order() {
    let Some(dir) = assets::cached("foolbox-cifar") else {
        println!("skipped: asset foolbox-cifar not in cache, run `cargo run --release -p assets-cli -- fetch foolbox-cifar`");
        return;
    };
    let mut ds = Dataset::open(&dir).unwrap();
    assert_eq!(ds.len(), 40);
    let got = ds.read(0, 40).unwrap();
    let want = images_u8();
    assert_eq!(got.shape, want.shape);
    assert!(got.data == want.data, "decoded PNG pixels differ");
}

fn npz_f64_1(npz: &mut NpzReader<std::fs::File>, name: &str) -> Vec<f64> {
    let a: Array1<f64> = npz.by_name(name).unwrap();
    a.to_vec()
}

fn npz_f64_2(npz: &mut NpzReader<std::fs::File>, name: &str) -> (Vec<f64>, usize, usize) {
    let a: Array2<f64> = npz.by_name(name).unwrap();
    let (r, c) = a.dim();
    (a.iter().copied().collect(), r, c)
}

#[test]
fn frechet_matches_scipy() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("frechet_expected.json")).unwrap(),
    )
    .unwrap();
    for name in ["frechet_8.npz", "frechet_256.npz"] {
        let want = expected[name].as_f64().unwrap();
        let mut npz = NpzReader::new(std::fs::File::open(fixtures().join(name)).unwrap()).unwrap();
        let a = RefStats {
            mu: npz_f64_1(&mut npz, "mu1"),
            sigma: npz_f64_2(&mut npz, "sigma1").0,
        };
        let b = RefStats {
            mu: npz_f64_1(&mut npz, "mu2"),
            sigma: npz_f64_2(&mut npz, "sigma2").0,
        };
        let got = frechet_distance(&a, &b).unwrap();
        let rel = ((got - want) / want).abs();
        println!("{name}: FID {got:.12} vs scipy {want:.12}: relative {rel:.3e} (tolerance 1e-6)");
        assert!(rel <= 1e-6, "{name}: {got} vs {want}");

        // Our streaming statistics reproduce numpy's mean and np.cov of the stored features.
        for (feats, stats) in [("feats1", &a), ("feats2", &b)] {
            let (x, n, d) = npz_f64_2(&mut npz, feats);
            let mut s = FeatureStats::new(d);
            for chunk in x.chunks(7 * d) {
                s.update_f64(chunk).unwrap();
            }
            assert_eq!(s.count(), n as u64);
            let r = s.finalize().unwrap();
            let scale = stats.sigma.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (u, v) in r.sigma.iter().zip(&stats.sigma) {
                assert!(
                    (u - v).abs() <= 1e-10 * scale,
                    "{name}/{feats}: sigma {u} vs {v}"
                );
            }
            for (u, v) in r.mu.iter().zip(&stats.mu) {
                assert!(
                    (u - v).abs() <= 1e-12 * (1.0 + v.abs()),
                    "{name}/{feats}: mu {u} vs {v}"
                );
            }
        }
    }
}

#[test]
fn npz_written_by_us_reads_back_and_ours_match_numpy_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut npz =
        NpzReader::new(std::fs::File::open(fixtures().join("frechet_8.npz")).unwrap()).unwrap();
    let r = RefStats {
        mu: npz_f64_1(&mut npz, "mu1"),
        sigma: npz_f64_2(&mut npz, "sigma1").0,
    };
    let p = dir.path().join("ref.npz");
    r.save_npz(&p).unwrap();
    let back = RefStats::load_npz(&p).unwrap();
    assert_eq!(back, r);
    // the uint8 tensor path: grayscale input is repeated to three channels
    let device = Default::default();
    let gray = Tensor::<B, 4>::from_data(TensorData::new(vec![10.0f32; 16], [1, 1, 4, 4]), &device);
    let x = preprocess::preprocess(gray).unwrap();
    assert_eq!(x.dims(), [1, 3, 299, 299]);
    let v = tensor_to_vec(x).unwrap();
    let want = (10.0 - 128.0) / 128.0;
    assert!(v.iter().all(|&a| (a - want).abs() < 1e-6));
}
