//! [`HostTensor`], the row-major f32 tensor every loader hands over before a backend sees it, and
//! safetensors files read into it or written from it.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::atomic::write_atomic;
use crate::error::{FormatError, Result};

/// A dense row-major f32 tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Transpose a 2-D tensor ([out, in] → [in, out]).
    pub fn transposed(&self) -> HostTensor {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0f32; r * c];
        // Blocked to stay cache-friendly on the 49k × 576 embedding.
        const B: usize = 32;
        for i0 in (0..r).step_by(B) {
            for j0 in (0..c).step_by(B) {
                for i in i0..(i0 + B).min(r) {
                    for j in j0..(j0 + B).min(c) {
                        out[j * r + i] = self.data[i * c + j];
                    }
                }
            }
        }
        HostTensor::new(vec![c, r], out)
    }
}

/// The values of a safetensors view widened to f32, or `None` for a dtype that is not a float
/// (f32, f64, f16, bf16).
pub fn view_to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let raw = view.data();
    Some(match view.dtype() {
        Dtype::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => raw
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Reads every tensor of a safetensors file (f32, f16, bf16 or f64) as f32, by name.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    // A FIFO or device is refused, and a file larger than the memory is a typed error.
    let bytes = crate::input::read_input(path, None)?;
    parse_safetensors(&bytes, path)
}

/// [`read_safetensors`] on bytes already in memory; `path` names them in errors.
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| FormatError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let Some(data) = view_to_f32(&view) else {
            return Err(FormatError::DType {
                path: path.to_path_buf(),
                name,
                dtype: format!("{:?}", view.dtype()),
            });
        };
        out.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok(out)
}

/// Writes named f32 tensors (name, shape, values) to a safetensors file, atomically.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let st_err = |reason: String| FormatError::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), f32_bytes(data))
                .map(|v| (name.as_str(), v))
                .map_err(|e| st_err(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| st_err(e.to_string()))?;
    write_atomic(path, &bytes)
}

fn f32_bytes(data: &[f32]) -> &[u8] {
    // Little-endian targets only (as safetensors requires); f32 has no padding or invalid bit patterns.
    #[cfg(not(target_endian = "little"))]
    compile_error!("safetensors writing assumes a little-endian target");
    // SAFETY: the slice covers exactly the f32s' bytes, which live as long as `data`.
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_roundtrip() {
        let t = HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let tt = t.transposed();
        assert_eq!(tt.shape, vec![3, 2]);
        assert_eq!(tt.data, vec![1., 4., 2., 5., 3., 6.]);
        assert_eq!(tt.transposed(), t);
    }

    #[test]
    fn safetensors_round_trip_and_half_precision() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let tensors = vec![
            ("b".to_string(), vec![3], vec![0.5, -1.0, 3.25]),
            ("a".to_string(), vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
        ];
        write_safetensors(&p, &tensors).unwrap();
        let back = read_safetensors(&p).unwrap();
        assert_eq!(
            back["a"],
            HostTensor::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])
        );
        assert_eq!(back["b"].data, vec![0.5, -1.0, 3.25]);
        assert!(!dir.path().join("t.safetensors.tmp").exists());

        let h: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let i: Vec<u8> = [7i32].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = safetensors::serialize(
            [
                ("h", TensorView::new(Dtype::BF16, vec![2], &h).unwrap()),
                ("i", TensorView::new(Dtype::I32, vec![1], &i).unwrap()),
            ],
            None,
        )
        .unwrap();
        let err = parse_safetensors(&bytes, Path::new("x")).unwrap_err();
        assert!(
            matches!(err, FormatError::DType { ref name, .. } if name == "i"),
            "{err}"
        );
        let only_h = safetensors::serialize(
            [("h", TensorView::new(Dtype::BF16, vec![2], &h).unwrap())],
            None,
        )
        .unwrap();
        assert_eq!(
            parse_safetensors(&only_h, Path::new("x")).unwrap()["h"].data,
            vec![1.5, -2.0]
        );
        assert!(matches!(
            parse_safetensors(&only_h[..only_h.len() - 1], Path::new("x")),
            Err(FormatError::Safetensors { .. })
        ));
    }
}
