//! Float64 arrays written as an `np.savez` archive (readable by numpy and EDM's `fid.py`), atomically,
//! and read back from any `.npz` of `<f8`/`<f4` arrays without trusting its headers: each member is
//! inflated at most to its declared size ([`crate::zipped`]), and each array's declared shape must
//! match the bytes that follow its header before a single value is converted. A header declaring a
//! `(10**9, 10**9)` array is an error, not a 8 EB allocation.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{ArrayViewD, IxDyn};
use ndarray_npy::NpzWriter;

use crate::atomic::write_atomic_with;
use crate::error::{FormatError, Result};

/// Writes `(name, shape, values)` arrays (row-major) as an uncompressed `.npz`.
pub fn write_npz_f64(path: &Path, arrays: &[(&str, &[usize], &[f64])]) -> Result<()> {
    let npz_err = |reason: String| FormatError::Npz {
        path: path.to_path_buf(),
        reason,
    };
    let views = arrays
        .iter()
        .map(|(name, shape, values)| {
            ArrayViewD::from_shape(IxDyn(shape), values)
                .map(|v| (*name, v))
                .map_err(|e| npz_err(format!("array `{name}` is not {shape:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    write_atomic_with(path, |w| {
        let mut npz = NpzWriter::new(w);
        for (name, view) in &views {
            npz.add_array(*name, view).map_err(std::io::Error::other)?;
        }
        npz.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
}

/// One array of an `.npz`: its shape and its values widened to f64, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Reads the arrays `names` of the `.npz` at `path` (float64 or float32, C order). A missing name,
/// another dtype, Fortran order, or a shape that does not match the bytes is [`FormatError::Npz`].
/// Each member may inflate to at most its declared size and [`crate::zipped::member_limit`].
pub fn read_npz_f64(path: &Path, names: &[&str]) -> Result<BTreeMap<String, NpyArray>> {
    let zip = crate::zipped::open_archive(path)?;
    read_arrays(zip, path, names)
}

/// [`read_npz_f64`] from any seekable stream; `path` names it in errors.
pub fn read_npz_f64_from<R: std::io::Read + std::io::Seek>(
    reader: R,
    path: &Path,
    names: &[&str],
) -> Result<BTreeMap<String, NpyArray>> {
    let zip = zip::ZipArchive::new(reader).map_err(|e| FormatError::Corrupt {
        path: path.to_path_buf(),
        what: "the zip archive".into(),
        reason: e.to_string(),
    })?;
    read_arrays(zip, path, names)
}

fn read_arrays<R: std::io::Read + std::io::Seek>(
    mut zip: zip::ZipArchive<R>,
    path: &Path,
    names: &[&str],
) -> Result<BTreeMap<String, NpyArray>> {
    let limit = crate::zipped::member_limit();
    let mut out = BTreeMap::new();
    for name in names {
        let member = format!("{name}.npy");
        let bytes =
            crate::zipped::read_member(&mut zip, &member, limit, path)?.ok_or_else(|| {
                FormatError::Npz {
                    path: path.to_path_buf(),
                    reason: format!("no array `{name}`"),
                }
            })?;
        let array = parse_npy(&bytes).map_err(|reason| FormatError::Npz {
            path: path.to_path_buf(),
            reason: format!("array `{name}`: {reason}"),
        })?;
        out.insert(name.to_string(), array);
    }
    Ok(out)
}

/// Parses one `.npy` (format 1.0, 2.0 or 3.0) of `<f8` or `<f4` values in C order.
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy array (no \\x93NUMPY magic)".into());
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            format!(
                "header of {header_len} bytes runs past the array's {} bytes",
                bytes.len()
            )
        })?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr
        .strip_prefix(['\'', '"'])
        .and_then(|d| d.split(['\'', '"']).next())
        .ok_or_else(|| format!("'descr' is not a string: {descr}"))?;
    let width = match descr {
        "<f8" | "|f8" => 8usize,
        "<f4" | "|f4" => 4,
        other => {
            return Err(format!(
                "dtype {other} is not little-endian float64 or float32"
            ))
        }
    };
    if dict_value(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape_text = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("shape `{shape_text}` is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| format!("shape `({inner})` is not a tuple of sizes"))?;
    let body = &bytes[end..];
    let need = shape
        .iter()
        .try_fold(width, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if need != body.len() {
        return Err(format!(
            "shape {shape:?} needs {need} bytes of data, the array has {}",
            body.len()
        ));
    }
    let data = if width == 8 {
        body.chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()
    } else {
        body.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect()
    };
    Ok(NpyArray { shape, data })
}

/// The text after `'key':` in a Python dict literal, up to the end of the header.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray_npy::NpzReader;

    #[test]
    fn writes_arrays_numpy_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.npz");
        write_npz_f64(
            &p,
            &[
                ("mu", &[2], &[1.0, 2.0]),
                ("sigma", &[2, 2], &[1.0, 0.5, 0.5, 2.0]),
            ],
        )
        .unwrap();
        let mut r = NpzReader::new(std::fs::File::open(&p).unwrap()).unwrap();
        let s: ndarray::Array2<f64> = r.by_name("sigma").unwrap();
        assert_eq!(s.shape(), &[2, 2]);
        assert_eq!(s[[0, 1]], 0.5);
        assert!(matches!(
            write_npz_f64(&p, &[("mu", &[3], &[1.0])]),
            Err(FormatError::Npz { .. })
        ));
        let back = read_npz_f64(&p, &["mu", "sigma"]).unwrap();
        assert_eq!(back["sigma"].shape, vec![2, 2]);
        assert_eq!(back["sigma"].data, vec![1.0, 0.5, 0.5, 2.0]);
        assert!(matches!(
            read_npz_f64(&p, &["nu"]),
            Err(FormatError::Npz { .. })
        ));
    }

    fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n");
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.as_bytes());
        b.extend(body);
        b
    }

    /// A header declaring a huge shape used to make the reader allocate it (an abort); now the
    /// shape is checked against the bytes first.
    #[test]
    fn declared_shapes_must_match_the_bytes() {
        let one = 1.5f64.to_le_bytes();
        assert_eq!(
            parse_npy(&npy("<f8", "(1,)", &one)).unwrap().data,
            vec![1.5]
        );
        assert_eq!(
            parse_npy(&npy("<f4", "(1, 1)", &2.0f32.to_le_bytes()))
                .unwrap()
                .shape,
            vec![1, 1]
        );
        for (descr, shape) in [
            ("<f8", "(1000000000, 1000000000)"),
            ("<f8", "(18446744073709551615, 2)"),
            ("<f8", "(2,)"),
            ("<i8", "(1,)"),
            ("<f8", "(a,)"),
            ("<f8", "[1]"),
        ] {
            assert!(
                parse_npy(&npy(descr, shape, &one)).is_err(),
                "{descr} {shape}"
            );
        }
        assert!(parse_npy(b"\x93NUMPY\x01\x00\xff\xff{").is_err());
        assert!(parse_npy(b"PK").is_err());
    }
}
