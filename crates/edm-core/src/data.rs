//! Image data for training: an IDX reader (MNIST / Fashion-MNIST, optionally gzip-compressed) and an
//! in-memory dataset in EDM's convention (float32 in [−1, 1], NCHW, integer class labels).

use std::io::Read;
use std::path::Path;

use crate::error::{EdmError, Result};

/// An IDX file's content: dimensions and raw unsigned bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an unsigned-byte IDX file (`.gz` decompressed by extension).
pub fn read_idx(path: &Path) -> Result<Idx> {
    let bad = |message: String| EdmError::Data {
        path: path.to_path_buf(),
        message,
    };
    let raw = std::fs::read(path).map_err(|e| EdmError::io(path, e))?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("gzip: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "unsupported IDX element type 0x{:02x}",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad("truncated header".into()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() != header + n {
        return Err(bad(format!(
            "expected {} data bytes for dims {dims:?}, found {}",
            n,
            bytes.len() - header
        )));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Images in EDM's convention: `images` [N, C, H, W] row-major, values x/127.5 − 1.
#[derive(Clone, Debug)]
pub struct ImageDataset {
    pub images: Vec<f32>,
    pub labels: Option<Vec<usize>>,
    pub num_classes: usize,
    pub len: usize,
    pub channels: usize,
    pub resolution: usize,
}

impl ImageDataset {
    /// One image's values.
    pub fn image(&self, i: usize) -> &[f32] {
        let per = self.channels * self.resolution * self.resolution;
        &self.images[i * per..(i + 1) * per]
    }

    /// Fashion-MNIST (or MNIST) from a folder with the original `.gz` files, zero-padded (black) from
    /// 28×28 to `resolution` (32 for EDM's CIFAR-sized networks). `train` picks the 60k training split;
    /// `limit` keeps the first images only.
    pub fn fashion_mnist(
        dir: &Path,
        train: bool,
        resolution: usize,
        limit: Option<usize>,
    ) -> Result<Self> {
        let prefix = if train { "train" } else { "t10k" };
        let images = read_idx(&dir.join(format!("{prefix}-images-idx3-ubyte.gz")))?;
        let labels = read_idx(&dir.join(format!("{prefix}-labels-idx1-ubyte.gz")))?;
        let path = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
        if images.dims.len() != 3 || labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
            return Err(EdmError::Data {
                path,
                message: format!(
                    "images {:?} and labels {:?} do not match",
                    images.dims, labels.dims
                ),
            });
        }
        let (h, w) = (images.dims[1], images.dims[2]);
        if resolution < h.max(w) {
            return Err(EdmError::Data {
                path,
                message: format!("cannot pad {h}x{w} to {resolution}"),
            });
        }
        let n = limit.unwrap_or(images.dims[0]).min(images.dims[0]);
        let (top, left) = ((resolution - h) / 2, (resolution - w) / 2);
        let mut out = vec![-1.0f32; n * resolution * resolution];
        for i in 0..n {
            for y in 0..h {
                for x in 0..w {
                    let v = images.data[i * h * w + y * w + x] as f32;
                    out[i * resolution * resolution + (y + top) * resolution + x + left] =
                        v / 127.5 - 1.0;
                }
            }
        }
        Ok(ImageDataset {
            images: out,
            labels: Some(labels.data[..n].iter().map(|&l| l as usize).collect()),
            num_classes: 10,
            len: n,
            channels: 1,
            resolution,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(data);
        b
    }

    #[test]
    fn reads_plain_and_gzip_idx_and_rejects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx_bytes(&[2, 2, 3], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255]);
        let plain = dir.path().join("a-idx3-ubyte");
        std::fs::write(&plain, &bytes).unwrap();
        let idx = read_idx(&plain).unwrap();
        assert_eq!(idx.dims, vec![2, 2, 3]);
        assert_eq!(idx.data[11], 255);

        let gz = dir.path().join("a-idx3-ubyte.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_idx(&gz).unwrap(), idx);

        std::fs::write(&plain, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(read_idx(&plain), Err(EdmError::Data { .. })));
    }

    #[test]
    fn pads_fashion_mnist_to_32_in_edm_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = vec![0u8; 2 * 28 * 28];
        img[0] = 255; // first image, top-left pixel
        let write = |name: &str, bytes: Vec<u8>| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&bytes).unwrap();
            std::fs::write(dir.path().join(name), enc.finish().unwrap()).unwrap();
        };
        write("train-images-idx3-ubyte.gz", idx_bytes(&[2, 28, 28], &img));
        write("train-labels-idx1-ubyte.gz", idx_bytes(&[2], &[3, 7]));
        let ds = ImageDataset::fashion_mnist(dir.path(), true, 32, None).unwrap();
        assert_eq!((ds.len, ds.channels, ds.resolution), (2, 1, 32));
        assert_eq!(ds.labels, Some(vec![3, 7]));
        assert_eq!(ds.image(0)[0], -1.0); // padding is black
        assert_eq!(ds.image(0)[2 * 32 + 2], 1.0); // (0,0) moved to (2,2)
    }
}
