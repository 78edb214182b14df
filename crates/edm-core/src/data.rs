//! Image data for training: an in-memory dataset in EDM's convention (float32 in [−1, 1], NCHW, integer class labels).

use std::path::Path;

use formats::read_idx;

use crate::error::{EdmError, Result};

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
        let images = read_idx(dir.join(format!("{prefix}-images-idx3-ubyte.gz")))?;
        let labels = read_idx(dir.join(format!("{prefix}-labels-idx1-ubyte.gz")))?;
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
