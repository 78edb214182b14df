//! The idx format of MNIST / Fashion-MNIST (big-endian header, raw uint8 body), gzip or raw.
//!
//! Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
//! big-endian u32 per dimension, then the data. Only unsigned-byte files are accepted: those are the
//! only ones an image set uses, and any other type here means the wrong file was passed.
//!
//! Gzip is detected from its magic bytes, not the file name, and decompression stops at
//! [`MAX_IDX_BYTES`]: a corrupt or hostile `.gz` cannot fill the memory.

use std::io::Read;
use std::path::Path;

use crate::error::{io_err, FormatError, Result};

/// The largest idx content accepted (after decompression): 1 GiB, twenty times Fashion-MNIST's
/// training images.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// An idx file's content: dimensions and raw unsigned bytes, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an idx image file (`*-images-idx3-ubyte`, optionally `.gz`): the pixels, row-major, and
/// `[count, rows, cols]`.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<(Vec<u8>, [usize; 3])> {
    let path = path.as_ref();
    let idx = read_idx(path)?;
    match idx.dims.as_slice() {
        &[n, h, w] => Ok((idx.data, [n, h, w])),
        other => Err(idx_err(
            path,
            format!("expected 3 dimensions (images), found {}", other.len()),
        )),
    }
}

/// Reads an idx label file (`*-labels-idx1-ubyte`, optionally `.gz`).
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let idx = read_idx(path)?;
    if idx.dims.len() != 1 {
        return Err(idx_err(
            path,
            format!("expected 1 dimension (labels), found {}", idx.dims.len()),
        ));
    }
    Ok(idx.data)
}

/// Reads any unsigned-byte idx file, raw or gzip-compressed.
pub fn read_idx(path: impl AsRef<Path>) -> Result<Idx> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut raw = Vec::new();
    file.take(MAX_IDX_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io_err(path))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_IDX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| idx_err(path, format!("gzip: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() as u64 > MAX_IDX_BYTES {
        return Err(idx_err(
            path,
            format!("content exceeds the {MAX_IDX_BYTES}-byte limit"),
        ));
    }
    parse_idx(&bytes).map_err(|reason| idx_err(path, reason))
}

/// Parses idx bytes (already decompressed).
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<Idx, String> {
    if bytes.len() < 4 {
        return Err(format!("{} bytes is shorter than the header", bytes.len()));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err("magic number does not start with two zero bytes".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        ));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        return Err("zero dimensions".into());
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(format!(
            "header needs {header} bytes, file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("dimensions overflow")?;
    let body = &bytes[header..];
    if body.len() != count {
        return Err(format!(
            "dimensions {dims:?} need {count} bytes of data, file has {}",
            body.len()
        ));
    }
    Ok(Idx {
        dims,
        data: body.to_vec(),
    })
}

fn idx_err(path: &Path, reason: impl Into<String>) -> FormatError {
    FormatError::Idx {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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

    #[test]
    fn reads_raw_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let bytes = idx_bytes(&[2, 3, 4], &data);
        let raw = dir.path().join("x-idx3-ubyte");
        std::fs::write(&raw, &bytes).unwrap();
        let gz = dir.path().join("x-idx3-ubyte.gz");
        std::fs::write(&gz, gzip(&bytes)).unwrap();
        // Gzip is recognised by its magic, whatever the name says.
        let gz_unnamed = dir.path().join("x-idx3-ubyte.bin");
        std::fs::write(&gz_unnamed, gzip(&bytes)).unwrap();
        for p in [raw, gz, gz_unnamed] {
            let (d, dims) = read_idx_images(&p).unwrap();
            assert_eq!(dims, [2, 3, 4]);
            assert_eq!(d, data);
        }
    }

    #[test]
    fn rejects_bad_files() {
        assert!(parse_idx(&[0, 0, 8]).is_err());
        assert!(parse_idx(&[1, 0, 8, 1, 0, 0, 0, 1, 5]).is_err());
        assert!(parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 5]).is_err());
        // truncated body
        assert!(parse_idx(&idx_bytes(&[2, 2], &[1, 2, 3])).is_err());
        // dimensions whose product overflows
        assert!(parse_idx(&idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[])).is_err());
        // labels passed as images
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels");
        std::fs::write(&p, idx_bytes(&[3], &[1, 2, 3])).unwrap();
        assert!(matches!(read_idx_images(&p), Err(FormatError::Idx { .. })));
        assert_eq!(read_idx_labels(&p).unwrap(), vec![1, 2, 3]);
        // a truncated gzip stream is an idx error that names the file
        let gz = dir.path().join("cut.gz");
        let z = gzip(&idx_bytes(&[2, 2], &[1, 2, 3, 4]));
        std::fs::write(&gz, &z[..z.len() / 2]).unwrap();
        let err = read_idx(&gz).unwrap_err();
        assert!(
            matches!(err, FormatError::Idx { ref path, .. } if path == &gz),
            "{err}"
        );
        assert!(matches!(
            read_idx(dir.path().join("absent")),
            Err(FormatError::Io { .. })
        ));
    }
}
