//! Training data for `gdd train` (and FID references), from every format the reference's runs use,
//! as an [`ImageDataset`] in EDM's convention (float32 in [−1, 1], NCHW, integer class labels).
//!
//! The image readers are the FID crate's ([`fid::data::Dataset`]: EDM/StyleGAN dataset zips and
//! image folders sorted by relative path, CIFAR-10's python tarball or folder, idx files), so a training
//! run and its FID reference read the same images in the same order. This module adds what training
//! needs on top:
//! - labels as EDM's `ImageFolderDataset` reads them: `dataset.json`'s `{"labels": [[name, class], ...]}`
//!   (in the zip or at the folder's root), looked up by each image's relative path; CIFAR-10's batch
//!   labels; the idx labels file beside an idx image file. `cond` without labels is an error.
//! - x-flips as in EDM (`--xflip`): the dataset is doubled, the second half mirrored left-right.
//! - a Fashion-MNIST folder (the four `.gz` files) keeps its zero padding to the network's resolution
//!   ([`ImageDataset::fashion_mnist`]); every other source must already be at that resolution, as EDM
//!   requires.

use std::path::Path;

use edm_core::ImageDataset;
use fid::data::Dataset;

use crate::error::{DistillError, Result};

/// How to load a training set.
#[derive(Clone, Debug, PartialEq)]
pub struct DataOptions {
    /// The network's image side; the data must match it (Fashion-MNIST is padded to it).
    pub resolution: usize,
    /// Labels are required (class-conditional training).
    pub cond: bool,
    /// Double the dataset with left-right mirrored copies (EDM's `--xflip`).
    pub xflip: bool,
    /// Keep only the first N images (before x-flips).
    pub limit: Option<usize>,
}

/// `dataset.json` is small (a name and an integer per image: ~40 MB for ImageNet's 1.28M images);
/// `ICLGDD_MAX_DATASET_JSON_BYTES` raises the limit.
fn json_limit() -> formats::input::Limit {
    formats::input::Limit::from_env("ICLGDD_MAX_DATASET_JSON_BYTES", 256 << 20)
}

fn bad(path: &Path, message: impl Into<String>) -> DistillError {
    DistillError::Dataset {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Loads a training set from a dataset zip, an image folder, CIFAR-10's python tarball or folder, an
/// idx image file or a Fashion-MNIST folder.
pub fn load_training(path: &Path, opts: &DataOptions) -> Result<ImageDataset> {
    if path.join("train-images-idx3-ubyte.gz").is_file() {
        let mut ds = ImageDataset::fashion_mnist(path, true, opts.resolution, opts.limit)?;
        if !opts.cond {
            ds.labels = None;
        }
        return Ok(finish(ds, opts.xflip));
    }
    let mut data = Dataset::open(path)?;
    let n = opts.limit.unwrap_or(data.len()).min(data.len());
    if n == 0 {
        return Err(bad(path, "no images"));
    }
    let batch = data.read(0, n)?;
    let [_, c, h, w] = batch.shape;
    if h != opts.resolution || w != opts.resolution {
        return Err(bad(
            path,
            format!(
                "images are {h}x{w}, the network wants {r}x{r} (resize the dataset with EDM's dataset_tool.py)",
                r = opts.resolution
            ),
        ));
    }
    let labels = if opts.cond {
        let all = labels_for(path, &data)?.ok_or_else(|| {
            bad(
                path,
                "--cond needs labels, and this dataset has none (no dataset.json labels)",
            )
        })?;
        Some(all[..n].to_vec())
    } else {
        None
    };
    let num_classes = labels
        .as_ref()
        .map_or(0, |l| l.iter().max().map_or(0, |m| m + 1));
    let ds = ImageDataset {
        images: batch.data.iter().map(|&v| v as f32 / 127.5 - 1.0).collect(),
        labels,
        num_classes,
        len: n,
        channels: c,
        resolution: h,
    };
    Ok(finish(ds, opts.xflip))
}

/// Appends the mirrored copies when `xflip` (EDM: raw indices twice, the second half flipped).
fn finish(mut ds: ImageDataset, xflip: bool) -> ImageDataset {
    if !xflip {
        return ds;
    }
    let r = ds.resolution;
    let per = ds.channels * r * r;
    let mut flipped: Vec<f32> = Vec::with_capacity(ds.images.len());
    for img in ds.images.chunks_exact(per) {
        for row in img.chunks_exact(r) {
            flipped.extend(row.iter().rev());
        }
    }
    ds.images.extend(flipped);
    if let Some(l) = &mut ds.labels {
        l.extend_from_within(..);
    }
    ds.len *= 2;
    ds
}

/// The class label of every image of `data`, in its reading order; `None` when the source has none.
fn labels_for(path: &Path, data: &Dataset) -> Result<Option<Vec<usize>>> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let json = if path.is_dir() {
        if path.join("data_batch_1").is_file() {
            return cifar_labels(path).map(Some);
        }
        let p = path.join("dataset.json");
        if !p.is_file() {
            return Ok(None);
        }
        formats::input::read_input(&p, Some(json_limit()))?
    } else if name.ends_with(".zip") {
        let mut zip = formats::zipped::open_archive(path)?;
        match formats::zipped::read_member(&mut zip, "dataset.json", json_limit(), path)? {
            Some(b) => b,
            None => return Ok(None),
        }
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") || name.ends_with(".tar") {
        return cifar_labels(path).map(Some);
    } else if name.contains("images-idx3-ubyte") {
        let lp = path.with_file_name(
            path.file_name()
                .expect("an idx file has a name")
                .to_string_lossy()
                .replace("images-idx3-ubyte", "labels-idx1-ubyte"),
        );
        if !lp.is_file() {
            return Ok(None);
        }
        let labels = fid::data::read_idx_labels(&lp)?;
        return Ok(Some(labels.into_iter().map(|l| l as usize).collect()));
    } else {
        return Ok(None);
    };
    parse_dataset_json(&json, data.names(), path)
}

fn cifar_labels(path: &Path) -> Result<Vec<usize>> {
    let (_, _, labels) = fid::data::read_cifar10(path)?;
    Ok(labels.into_iter().map(usize::from).collect())
}

/// EDM's `dataset.json`: `{"labels": [["00000/img00000000.png", 6], ...]}` or `{"labels": null}`.
/// Every image needs a non-negative integer label (EDM's one-hot conditioning); a missing one is an
/// error naming it.
pub fn parse_dataset_json(
    bytes: &[u8],
    names: &[String],
    path: &Path,
) -> Result<Option<Vec<usize>>> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| bad(path, format!("dataset.json is not JSON: {e}")))?;
    let labels = match v.get("labels") {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Array(a)) => a,
        Some(_) => return Err(bad(path, "dataset.json: `labels` is not a list")),
    };
    let mut map = std::collections::HashMap::with_capacity(labels.len());
    for (i, pair) in labels.iter().enumerate() {
        let (Some(name), Some(label)) = (
            pair.get(0).and_then(serde_json::Value::as_str),
            pair.get(1).and_then(serde_json::Value::as_u64),
        ) else {
            return Err(bad(
                path,
                format!("dataset.json: entry {i} is not [name, non-negative integer class]"),
            ));
        };
        map.insert(name.replace('\\', "/"), label as usize);
    }
    names
        .iter()
        .map(|n| {
            map.get(n.as_str())
                .copied()
                .ok_or_else(|| bad(path, format!("dataset.json has no label for `{n}`")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn png(r: usize, seed: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(r as u32, r as u32, |x, y| {
            image::Rgb([seed, (x * 16) as u8, (y * 16) as u8])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn opts(cond: bool, xflip: bool) -> DataOptions {
        DataOptions {
            resolution: 4,
            cond,
            xflip,
            limit: None,
        }
    }

    /// A dataset_tool.py-style zip: `00000/img0000000{i}.png` plus dataset.json.
    fn write_zip(path: &Path, labels: Option<&str>) {
        let f = std::fs::File::create(path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let o = zip::write::SimpleFileOptions::default();
        for i in 0..3u8 {
            z.start_file(format!("00000/img0000000{i}.png"), o).unwrap();
            z.write_all(&png(4, 50 * i)).unwrap();
        }
        if let Some(l) = labels {
            z.start_file("dataset.json", o).unwrap();
            z.write_all(l.as_bytes()).unwrap();
        }
        z.finish().unwrap();
    }

    const LABELS: &str = r#"{"labels": [["00000/img00000002.png", 7], ["00000/img00000000.png", 1], ["00000/img00000001.png", 0]]}"#;

    #[test]
    fn dataset_zip_with_labels_and_xflip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny-4x4.zip");
        write_zip(&p, Some(LABELS));
        let ds = load_training(&p, &opts(true, false)).unwrap();
        assert_eq!((ds.len, ds.channels, ds.resolution), (3, 3, 4));
        assert_eq!(ds.labels, Some(vec![1, 0, 7]));
        assert_eq!(ds.num_classes, 8);
        // Red channel of image 1 is 50 -> 50/127.5 - 1; green is the x ramp.
        assert!((ds.image(1)[0] - (50.0 / 127.5 - 1.0)).abs() < 1e-6);
        let f = load_training(&p, &opts(true, true)).unwrap();
        assert_eq!(f.len, 6);
        assert_eq!(f.labels, Some(vec![1, 0, 7, 1, 0, 7]));
        // Green channel (x ramp), row 0: flipped copy reads right to left.
        let g = 16;
        assert_eq!(&f.image(0)[g..g + 4], &ds.image(0)[g..g + 4]);
        let rev: Vec<f32> = ds.image(0)[g..g + 4].iter().rev().copied().collect();
        assert_eq!(&f.image(3)[g..g + 4], &rev[..]);
        // Unconditional: no labels kept.
        assert_eq!(load_training(&p, &opts(false, false)).unwrap().labels, None);
    }

    #[test]
    fn folder_with_dataset_json() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("00000")).unwrap();
        for i in 0..3u8 {
            std::fs::write(
                dir.path().join(format!("00000/img0000000{i}.png")),
                png(4, i),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("dataset.json"), LABELS).unwrap();
        let ds = load_training(dir.path(), &opts(true, false)).unwrap();
        assert_eq!(ds.labels, Some(vec![1, 0, 7]));
    }

    #[test]
    fn bad_archives_and_labels_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        // --cond without labels.
        let p = dir.path().join("nolabels.zip");
        write_zip(&p, None);
        assert!(
            matches!(load_training(&p, &opts(true, false)), Err(DistillError::Dataset { message, .. }) if message.contains("labels"))
        );
        assert_eq!(load_training(&p, &opts(false, false)).unwrap().len, 3);
        // A label missing for one image.
        let p = dir.path().join("missing.zip");
        write_zip(&p, Some(r#"{"labels": [["00000/img00000000.png", 1]]}"#));
        assert!(
            matches!(load_training(&p, &opts(true, false)), Err(DistillError::Dataset { message, .. }) if message.contains("img00000001"))
        );
        // Labels that are not integers, and not JSON at all.
        let p = dir.path().join("float.zip");
        write_zip(&p, Some(r#"{"labels": [["00000/img00000000.png", 0.5]]}"#));
        assert!(load_training(&p, &opts(true, false)).is_err());
        let p = dir.path().join("garbage.zip");
        write_zip(&p, Some("{labels"));
        assert!(
            matches!(load_training(&p, &opts(true, false)), Err(DistillError::Dataset { message, .. }) if message.contains("JSON"))
        );
        // Wrong resolution.
        let p = dir.path().join("ok.zip");
        write_zip(&p, Some(LABELS));
        let o = DataOptions {
            resolution: 8,
            ..opts(false, false)
        };
        assert!(
            matches!(load_training(&p, &o), Err(DistillError::Dataset { message, .. }) if message.contains("4x4"))
        );
        // Not a zip; a truncated zip.
        let p = dir.path().join("not.zip");
        std::fs::write(&p, b"PK\x03\x04 not really").unwrap();
        assert!(load_training(&p, &opts(false, false)).is_err());
        let good = std::fs::read(dir.path().join("ok.zip")).unwrap();
        let p = dir.path().join("cut.zip");
        std::fs::write(&p, &good[..good.len() / 2]).unwrap();
        assert!(load_training(&p, &opts(false, false)).is_err());
    }

    #[test]
    fn idx_files_with_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = vec![0u8; 2 * 4 * 4];
        img[1] = 255;
        let idx = |dims: &[u32], data: &[u8]| {
            let mut b = vec![0, 0, 8, dims.len() as u8];
            for d in dims {
                b.extend(d.to_be_bytes());
            }
            b.extend(data);
            b
        };
        std::fs::write(
            dir.path().join("t-images-idx3-ubyte"),
            idx(&[2, 4, 4], &img),
        )
        .unwrap();
        std::fs::write(dir.path().join("t-labels-idx1-ubyte"), idx(&[2], &[3, 9])).unwrap();
        let ds = load_training(&dir.path().join("t-images-idx3-ubyte"), &opts(true, true)).unwrap();
        assert_eq!((ds.len, ds.channels), (4, 1));
        assert_eq!(ds.labels, Some(vec![3, 9, 3, 9]));
        assert_eq!(ds.image(0)[1], 1.0);
        assert_eq!(ds.image(2)[2], 1.0, "mirrored: x=1 -> x=2 on a 4-wide row");
    }
}
