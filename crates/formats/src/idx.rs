//! The idx format of MNIST / Fashion-MNIST (big-endian header, raw uint8 body), gzip or raw.
//!
//! Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
//! big-endian u32 per dimension, then the data. Only unsigned-byte files are accepted: those are the
//! only ones an image set uses, and any other type here means the wrong file was passed.
//!
//! Gzip is detected from its magic bytes, not the file name, and decompression stops at the size the
//! header's dimensions declare (at most [`MAX_IDX_BYTES`]): a corrupt or hostile `.gz` cannot fill the
//! memory.

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
///
/// The header is read first and the body is then read (or inflated) up to exactly the size the
/// dimensions declare: a gzip stream that inflates past it, or dimensions over [`MAX_IDX_BYTES`]
/// (`ICLGDD_MAX_IDX_BYTES` raises it), are refused after reading at most one byte more.
pub fn read_idx(path: impl AsRef<Path>) -> Result<Idx> {
    let path = path.as_ref();
    let mut file = crate::input::open_input(path)?;
    let mut magic = [0u8; 2];
    let got = read_full(&mut file, &mut magic).map_err(io_err(path))?;
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let gzip = got == 2 && magic == [0x1f, 0x8b];
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(head.chain(file)))
    } else {
        Box::new(head.chain(file))
    };
    let what = if gzip { "gzip stream" } else { "file" };
    let read_err = |e: std::io::Error| idx_err(path, format!("{what}: {e}"));
    let mut header = [0u8; 4];
    let got = read_full(&mut reader, &mut header).map_err(read_err)?;
    check_magic(&header[..got]).map_err(|reason| idx_err(path, reason))?;
    let ndim = header[3] as usize;
    let mut dim_bytes = vec![0u8; 4 * ndim];
    let got = read_full(&mut reader, &mut dim_bytes).map_err(read_err)?;
    if got < dim_bytes.len() {
        return Err(idx_err(
            path,
            format!("header needs {} bytes, file has {}", 4 + 4 * ndim, 4 + got),
        ));
    }
    let dims = parse_dims(&dim_bytes);
    let count = element_count(&dims).map_err(|reason| idx_err(path, reason))?;
    let limit = crate::input::Limit::from_env("ICLGDD_MAX_IDX_BYTES", MAX_IDX_BYTES);
    limit.check(
        path,
        format!("the data of dimensions {dims:?}"),
        count as u64,
    )?;
    let data = crate::input::read_bounded(reader, limit, Some(count as u64), path, "the idx data")
        .map_err(|e| match e {
            // A gzip stream longer than its dimensions is the same "too much data" as a raw one.
            FormatError::Corrupt { reason, .. } => idx_err(path, format!("{what}: {reason}")),
            other => other,
        })?;
    if data.len() != count {
        return Err(idx_err(
            path,
            format!(
                "dimensions {dims:?} need {count} bytes of data, file has {}",
                data.len()
            ),
        ));
    }
    Ok(Idx { dims, data })
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn check_magic(bytes: &[u8]) -> std::result::Result<(), String> {
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
    if bytes[3] == 0 {
        return Err("zero dimensions".into());
    }
    Ok(())
}

fn parse_dims(bytes: &[u8]) -> Vec<usize> {
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect()
}

fn element_count(dims: &[usize]) -> std::result::Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))
}

/// Parses idx bytes (already decompressed).
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<Idx, String> {
    check_magic(bytes)?;
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(format!(
            "header needs {header} bytes, file has {}",
            bytes.len()
        ));
    }
    let dims = parse_dims(&bytes[4..header]);
    let count = element_count(&dims)?;
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
