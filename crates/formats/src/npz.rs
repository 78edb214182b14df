//! Float64 arrays written as an `np.savez` archive (readable by numpy and EDM's `fid.py`), atomically.

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
    }
}
