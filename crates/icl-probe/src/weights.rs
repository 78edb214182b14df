//! Host-side weights: every checkpoint format is first turned into f32 tensors under Hugging Face
//! names, so one loader per architecture serves safetensors and GGUF alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{ProbeError, Result};

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

/// Named weights, consumed by the architecture loaders.
pub struct WeightMap {
    tensors: HashMap<String, HostTensor>,
    /// Where they came from, for error messages.
    pub origin: String,
}

impl WeightMap {
    pub fn new(origin: impl Into<String>) -> Self {
        Self {
            tensors: HashMap::new(),
            origin: origin.into(),
        }
    }
    pub fn insert(&mut self, name: impl Into<String>, t: HostTensor) {
        self.tensors.insert(name.into(), t);
    }
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }
    /// Remove and return a tensor, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| ProbeError::MissingTensor {
                name: name.to_string(),
                origin: self.origin.clone(),
            })?;
        if t.shape != shape {
            return Err(ProbeError::ShapeMismatch {
                name: name.to_string(),
                got: t.shape,
                expected: shape.to_vec(),
            });
        }
        Ok(t)
    }
    /// Like [`take`](Self::take) but `None` when absent.
    pub fn take_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<HostTensor>> {
        if self.contains(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProbeError + '_ {
    move |err| ProbeError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// Load one `.safetensors` file into `map`, converting F32/F16/BF16 to f32.
pub fn load_safetensors_into(path: &Path, map: &mut WeightMap) -> Result<()> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    // SAFETY: read-only map of a checkpoint that is not modified while we read it.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
    let st = SafeTensors::deserialize(&mmap).map_err(|e| ProbeError::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    for (name, view) in st.tensors() {
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(ProbeError::UnsupportedDtype {
                    name,
                    origin: path.display().to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        map.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok(())
}

/// The safetensors files of a Hugging Face folder: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(io_err(&index))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|err| ProbeError::Json {
            path: index.clone(),
            err,
        })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ProbeError::Config {
                origin: index.display().to_string(),
                msg: "no `weight_map` object".into(),
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    Err(ProbeError::NotFound(format!(
        "{}: neither model.safetensors nor model.safetensors.index.json",
        dir.display()
    )))
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
    fn missing_and_misshapen_tensors_are_typed_errors() {
        let mut m = WeightMap::new("test");
        m.insert("a", HostTensor::new(vec![2], vec![0., 1.]));
        assert!(matches!(
            m.take("b", &[2]),
            Err(ProbeError::MissingTensor { .. })
        ));
        assert!(matches!(
            m.take("a", &[3]),
            Err(ProbeError::ShapeMismatch { .. })
        ));
    }
}
