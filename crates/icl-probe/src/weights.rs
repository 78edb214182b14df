//! Host-side weights: every checkpoint format is first turned into tensors under Hugging Face
//! names, so one loader per architecture serves safetensors and GGUF alike. Vectors and float32
//! tensors are f32 [`HostTensor`]s; quantised and half-precision matrices stay packed
//! ([`PackedMatrix`], borrowing the mapped file) until the model decides how to store them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};

use crate::error::{ProbeError, Result};
use crate::gguf::GgmlType;
use crate::linear::{HostMatrix, PackedMatrix, SharedBytes};

/// A dense row-major f32 tensor on the host (the workspace's one host tensor type).
pub use formats::HostTensor;

/// One checkpoint tensor.
enum Entry {
    Dense(HostTensor),
    /// A matrix, rows `[out, in]` as stored.
    Packed(PackedMatrix),
}

impl Entry {
    fn shape(&self) -> Vec<usize> {
        match self {
            Entry::Dense(t) => t.shape.clone(),
            Entry::Packed(p) => p.shape().to_vec(),
        }
    }
}

/// Named weights, consumed by the architecture loaders.
pub struct WeightMap {
    tensors: HashMap<String, Entry>,
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
        self.tensors.insert(name.into(), Entry::Dense(t));
    }
    /// A matrix kept packed (rows `[out, in]`).
    pub fn insert_packed(&mut self, name: impl Into<String>, m: PackedMatrix) {
        self.tensors.insert(name.into(), Entry::Packed(m));
    }
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }
    fn take_entry(&mut self, name: &str, shape: &[usize]) -> Result<Entry> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| ProbeError::MissingTensor {
                name: name.to_string(),
                origin: self.origin.clone(),
            })?;
        if t.shape() != shape {
            return Err(ProbeError::ShapeMismatch {
                name: name.to_string(),
                got: t.shape(),
                expected: shape.to_vec(),
            });
        }
        Ok(t)
    }
    /// Remove and return a tensor as f32 (decoding a packed one), checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        Ok(match self.take_entry(name, shape)? {
            Entry::Dense(t) => t,
            Entry::Packed(p) => p.dequantize(),
        })
    }
    /// Remove and return a matrix as stored (packed ones stay packed), checking its shape.
    pub fn take_matrix(&mut self, name: &str, shape: [usize; 2]) -> Result<HostMatrix> {
        Ok(match self.take_entry(name, &shape)? {
            Entry::Dense(t) => HostMatrix::Dense(t),
            Entry::Packed(p) => HostMatrix::Packed(p),
        })
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

/// Load one `.safetensors` file into `map`: F32 tensors and half-precision vectors as f32,
/// F16/BF16 matrices packed (borrowing the mapped file, which they then keep open).
pub fn load_safetensors_into(path: &Path, map: &mut WeightMap) -> Result<()> {
    crate::loader::check_regular_file(path)?;
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    // SAFETY: read-only map of a checkpoint that is not modified while we read it (nor while
    // packed weights borrow from it).
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
    let mmap: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(mmap);
    let st = SafeTensors::deserialize((*mmap).as_ref()).map_err(|e| ProbeError::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    for (name, view) in st.tensors() {
        let bytes = view.data();
        let half = match view.dtype() {
            Dtype::F16 => Some(GgmlType::F16),
            Dtype::BF16 => Some(GgmlType::BF16),
            _ => None,
        };
        if let (Some(ty), &[rows, cols]) = (half, view.shape()) {
            let shared = SharedBytes::within(mmap.clone(), bytes).ok_or_else(|| {
                ProbeError::Safetensors {
                    path: path.to_path_buf(),
                    msg: format!("tensor `{name}` lies outside the file"),
                }
            })?;
            map.insert_packed(name, PackedMatrix::new(ty, rows, cols, shared)?);
            continue;
        }
        let Some(data) = formats::host_tensor::view_to_f32(&view) else {
            return Err(ProbeError::UnsupportedDtype {
                name,
                origin: path.display().to_string(),
                dtype: format!("{:?}", view.dtype()),
            });
        };
        map.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok(())
}

/// The safetensors files of a Hugging Face folder: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    // `exists`, not `is_file`: a FIFO or folder in its place is refused by name when loaded.
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        crate::loader::check_regular_file(&index)?;
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
