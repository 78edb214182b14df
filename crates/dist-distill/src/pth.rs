//! Reader for PyTorch `torch.save` state dicts, both formats: the legacy (pre-1.6, non-zip) one and
//! the zip one (torch ≥ 1.6, what `torch.save(model.state_dict(), path)` writes today).
//!
//! Why not burn-store's `PytorchReader`: in burn-store 0.21 it ignores the stride argument of
//! `_rebuild_tensor_v2`, and the EfficientNet-Lite0 asset stores every conv and the classifier
//! weight non-contiguously (TensorFlow HWIO order, strides such as (1, 32, 288, 96)), so it returns
//! scrambled weights; it also accepts a truncated file. This reader honours strides and checks
//! every byte count.
//!
//! Legacy layout: five consecutive pickles/blocks — magic number, protocol version, sys info,
//! the state dict (tensors reference storages through persistent ids), the list of storage keys —
//! followed, for each key in that order, by an 8-byte little-endian element count and the raw
//! little-endian data.
//!
//! Zip layout: `<archive>/data.pkl` (the state dict, same persistent ids), one member
//! `<archive>/data/<key>` per storage holding its raw bytes, and `<archive>/byteorder` (`little`;
//! absent in files from before torch 1.10, which were always little-endian). Members are inflated at
//! most to their declared size ([`formats::zipped`]).
//!
//! The pickles are read by the workspace's one pickle interpreter
//! ([`formats::pickle`], with its depth and size limits): no global is ever imported or called, and
//! the only globals allowed are `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the
//! `torch.*Storage` types; anything else is an error.

use std::collections::HashMap;
use std::path::Path;

use formats::pickle::{self, Value};

use crate::error::{DistillError, Result};

/// The 10-byte magic number (`0x1950a86a20f9469cfc6c`), little-endian, as torch pickles it first.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// The globals a legacy state dict may name.
fn legacy_allows(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("collections", "OrderedDict") | ("torch._utils", "_rebuild_tensor_v2")
    ) || (module == "torch" && name.ends_with("Storage"))
}

/// A tensor as the state dict describes it: which storage, where, what shape/stride.
#[derive(Clone, Debug, PartialEq)]
struct TensorRef {
    storage_key: String,
    dtype: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// Reads `_rebuild_tensor_v2(('storage', torch.<Type>Storage, key, location, numel), offset, size,
/// stride, ...)`.
fn tensor_ref(v: &Value) -> std::result::Result<TensorRef, String> {
    let Value::Call {
        module, name, args, ..
    } = v
    else {
        return Err("state dict value is not a tensor".into());
    };
    if module != "torch._utils" || name != "_rebuild_tensor_v2" {
        return Err(format!("call of `{module}.{name}` is not a tensor"));
    }
    if args.len() < 4 {
        return Err("_rebuild_tensor_v2 needs 4+ arguments".into());
    }
    let Value::PersId(pid) = &args[0] else {
        return Err("tensor storage is not a persistent id".into());
    };
    let Some(p) = pid.as_seq() else {
        return Err("persistent id is not a tuple".into());
    };
    let (Some(Value::Global { name: dtype, .. }), Some(key)) =
        (p.get(1), p.get(2).and_then(Value::as_str))
    else {
        return Err("persistent id is not ('storage', type, key, ...)".into());
    };
    let index = |v: &Value| v.as_int().and_then(|i| usize::try_from(i).ok());
    let ints = |v: &Value| -> Option<Vec<usize>> { v.as_seq()?.iter().map(index).collect() };
    let offset = index(&args[1]).ok_or("bad storage offset")?;
    let (Some(shape), Some(stride)) = (ints(&args[2]), ints(&args[3])) else {
        return Err("bad shape/stride".into());
    };
    if shape.len() != stride.len() {
        return Err("shape and stride lengths differ".into());
    }
    Ok(TensorRef {
        storage_key: key.to_string(),
        dtype: dtype.clone(),
        offset,
        shape,
        stride,
    })
}

/// A float tensor read from a legacy `.pth` state dict, values in logical row-major order.
#[derive(Clone, Debug)]
pub struct PthTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

fn elem_size(dtype: &str) -> Option<usize> {
    match dtype {
        "FloatStorage" | "IntStorage" => Some(4),
        "DoubleStorage" | "LongStorage" => Some(8),
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => Some(2),
        "ByteStorage" | "CharStorage" | "BoolStorage" => Some(1),
        _ => None,
    }
}

/// Reads every float32/float64 tensor of a `torch.save` state dict in either format (zip or
/// legacy; integer buffers such as `num_batches_tracked` are skipped). A missing file is
/// [`DistillError::Io`] naming it; anything malformed is [`DistillError::Pytorch`] naming it.
pub fn read_state_dict(path: &Path) -> Result<HashMap<String, PthTensor>> {
    let mut head = [0u8; 2];
    let mut f = std::fs::File::open(path).map_err(|e| DistillError::io(path, e))?;
    let n = std::io::Read::read(&mut f, &mut head).map_err(|e| DistillError::io(path, e))?;
    drop(f);
    if n == 2 && &head == b"PK" {
        read_zip_state_dict(path)
    } else {
        read_legacy_state_dict(path)
    }
}

fn pytorch_err(path: &Path) -> impl Fn(String) -> DistillError + '_ {
    move |m| DistillError::Pytorch {
        path: path.to_path_buf(),
        message: m,
    }
}

/// The `name → tensor reference` entries of an unpickled state dict.
fn state_dict_refs(root: Value, path: &Path) -> Result<Vec<(String, TensorRef)>> {
    let perr = pytorch_err(path);
    let Value::Dict(entries) = root else {
        return Err(perr("the checkpoint is not a state dict".into()));
    };
    let mut tensors = Vec::with_capacity(entries.len());
    for (k, v) in &entries {
        let name = k
            .as_str()
            .ok_or_else(|| perr("state dict entry is not name → tensor".into()))?;
        let t = tensor_ref(v).map_err(|m| perr(format!("`{name}`: {m}")))?;
        tensors.push((name.to_string(), t));
    }
    Ok(tensors)
}

/// Reads a zip-format (torch ≥ 1.6) state dict.
pub fn read_zip_state_dict(path: &Path) -> Result<HashMap<String, PthTensor>> {
    let perr = pytorch_err(path);
    let mut zip = formats::zipped::open_archive(path)?;
    // `<archive>/data.pkl`; the archive folder is named after the file at save time.
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| perr("zip has no `<archive>/data.pkl`: not a torch.save file".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let limit = formats::zipped::member_limit();
    if let Some(order) =
        formats::zipped::read_member(&mut zip, &format!("{prefix}byteorder"), limit, path)?
    {
        if order.trim_ascii() != b"little" {
            return Err(perr(format!(
                "byte order `{}` (only little-endian files are read)",
                String::from_utf8_lossy(&order)
            )));
        }
    }
    let pkl = formats::zipped::read_member(&mut zip, &pkl_name, limit, path)?
        .ok_or_else(|| perr(format!("member `{pkl_name}` unreadable")))?;
    let root = pickle::load(&pkl, &legacy_allows)
        .map_err(|e| perr(format!("state dict pickle `{pkl_name}`: {e}")))?;
    let tensors = state_dict_refs(root, path)?;
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    for (name, t) in &tensors {
        if blobs.contains_key(&t.storage_key) {
            continue;
        }
        let member = format!("{prefix}data/{}", t.storage_key);
        let bytes =
            formats::zipped::read_member(&mut zip, &member, limit, path)?.ok_or_else(|| {
                perr(format!(
                    "tensor `{name}`: storage member `{member}` is missing"
                ))
            })?;
        blobs.insert(t.storage_key.clone(), bytes);
    }
    let mut storages: HashMap<String, (&[u8], usize)> = HashMap::new();
    for (name, t) in &tensors {
        let Some(es) = elem_size(&t.dtype) else {
            return Err(perr(format!(
                "tensor `{name}`: unknown storage type `{}`",
                t.dtype
            )));
        };
        let b = &blobs[&t.storage_key];
        if !b.len().is_multiple_of(es) {
            return Err(perr(format!(
                "storage `{}` has {} bytes, not a whole number of {es}-byte elements",
                t.storage_key,
                b.len()
            )));
        }
        storages.insert(t.storage_key.clone(), (b.as_slice(), b.len() / es));
    }
    materialise(tensors, &storages, path)
}

/// Reads every float32/float64 tensor of a legacy-format state dict (integer buffers such as
/// `num_batches_tracked` are skipped).
pub fn read_legacy_state_dict(path: &Path) -> Result<HashMap<String, PthTensor>> {
    let data = std::fs::read(path).map_err(|e| DistillError::io(path, e))?;
    let perr = pytorch_err(path);
    if data.starts_with(b"PK") {
        return Err(perr(
            "zip-format (torch >= 1.6) checkpoint: read it with `read_state_dict`".into(),
        ));
    }
    // The magic number is a 10-byte LONG1 (it overflows i64): check the raw bytes of its pickle.
    let magic_len = 4 + MAGIC.len() + 1;
    if data.len() < magic_len
        || data[..4] != [0x80, 0x02, 0x8a, 0x0a]
        || data[4..14] != MAGIC
        || data[14] != b'.'
    {
        return Err(perr("not a torch legacy file (bad magic number)".into()));
    }
    let mut pos = magic_len;
    let mut next = |what: &str| -> Result<Value> {
        let (v, used) = pickle::load_prefix(&data[pos..], &legacy_allows)
            .map_err(|e| perr(format!("{what} pickle at byte {pos}: {e}")))?;
        pos += used;
        Ok(v)
    };
    let _protocol = next("protocol")?;
    let _sys_info = next("sys info")?;
    let root = next("state dict")?;
    let keys = next("storage keys")?;
    let tensors = state_dict_refs(root, path)?;
    let Value::List(keys) = keys else {
        return Err(perr("storage key list missing".into()));
    };
    // Storage blocks in key order: u64 element count, then the bytes.
    let mut storages: HashMap<String, (&[u8], usize)> = HashMap::new(); // key -> (bytes, count)
    for k in keys {
        let Some(k) = k.as_str().map(str::to_string) else {
            return Err(perr("storage key is not a string".into()));
        };
        if pos + 8 > data.len() {
            return Err(perr(format!("truncated before storage `{k}`")));
        }
        let n = u64::from_le_bytes(data[pos..pos + 8].try_into().expect("8 bytes")) as usize;
        pos += 8;
        // The dtype of a storage is the dtype of any tensor viewing it.
        let es = tensors
            .iter()
            .find_map(|(_, t)| (t.storage_key == k).then(|| elem_size(&t.dtype)).flatten())
            .ok_or_else(|| {
                perr(format!(
                    "storage `{k}` has no tensor of a known element type"
                ))
            })?;
        let end = n
            .checked_mul(es)
            .and_then(|bytes| pos.checked_add(bytes))
            .filter(|&p| p <= data.len())
            .ok_or_else(|| {
                perr(format!(
                    "truncated in storage data (needs {} bytes)",
                    n.saturating_mul(es)
                ))
            })?;
        storages.insert(k, (&data[pos..end], n));
        pos = end;
    }
    if pos != data.len() {
        return Err(perr(format!(
            "{} trailing bytes after the last storage",
            data.len() - pos
        )));
    }
    materialise(tensors, &storages, path)
}

/// Reads each float tensor out of its storage (`key → (bytes, element count)`), following its
/// offset and strides, after checking that every index stays inside the storage.
fn materialise(
    tensors: Vec<(String, TensorRef)>,
    storages: &HashMap<String, (&[u8], usize)>,
    path: &Path,
) -> Result<HashMap<String, PthTensor>> {
    let perr = pytorch_err(path);
    let mut out = HashMap::new();
    for (name, t) in tensors {
        let (bytes, count) = *storages.get(&t.storage_key).ok_or_else(|| {
            perr(format!(
                "tensor `{name}`: storage `{}` is not listed",
                t.storage_key
            ))
        })?;
        let es = match t.dtype.as_str() {
            "FloatStorage" => 4,
            "DoubleStorage" => 8,
            _ => continue, // integer buffers (num_batches_tracked)
        };
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| perr(format!("tensor `{name}`: shape {:?} overflows", t.shape)))?;
        // Every parameter or buffer of a state dict is backed by at least as many stored elements
        // as it has; a larger view (stride 0, a broadcast) is refused rather than expanded, so a
        // few bytes of file cannot ask for terabytes of memory.
        if numel > count {
            return Err(perr(format!(
                "tensor `{name}` views {numel} elements of a {count}-element storage \
                 (broadcast views are not read)"
            )));
        }
        let max_index: usize = t.offset.saturating_add(
            t.shape
                .iter()
                .zip(&t.stride)
                .map(|(s, st)| s.saturating_sub(1).saturating_mul(*st))
                .fold(0usize, usize::saturating_add),
        );
        if numel > 0 && max_index >= count {
            return Err(perr(format!("tensor `{name}` reads past its storage")));
        }
        let read = |i: usize| -> f32 {
            let p = i * es;
            if es == 4 {
                f32::from_le_bytes(bytes[p..p + 4].try_into().expect("4 bytes"))
            } else {
                f64::from_le_bytes(bytes[p..p + 8].try_into().expect("8 bytes")) as f32
            }
        };
        let mut values = Vec::with_capacity(numel);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let off: usize =
                t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            values.push(read(off));
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out.insert(
            name,
            PthTensor {
                shape: t.shape,
                values,
            },
        );
    }
    Ok(out)
}

/// Source of raw float tensors by name: a `.pth` state dict ([`PthSource`]) or random weights of
/// the right shapes (tests, benchmarks). The backbones ([`crate::effnet`], [`crate::vgg`]) build
/// themselves from one, so a golden test and a random-weight test run the same construction code.
pub trait TensorSource {
    /// Returns the tensor's shape and row-major values.
    fn tensor(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>)>;
}

/// Tensors of a `torch.save` state dict ([`read_state_dict`]); a name it lacks is
/// [`DistillError::MissingTensor`] naming the file.
pub struct PthSource {
    tensors: HashMap<String, PthTensor>,
    label: String,
}

impl PthSource {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            tensors: read_state_dict(path)?,
            label: path.display().to_string(),
        })
    }
}

impl TensorSource for PthSource {
    fn tensor(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| DistillError::MissingTensor {
                name: name.to_string(),
                source_name: self.label.clone(),
            })?;
        Ok((t.shape.clone(), t.values.clone()))
    }
}

/// The values of tensor `name`, which must have shape `expected` ([`DistillError::Shape`] naming
/// it and both shapes otherwise): the one check every backbone loader makes on every tensor.
pub fn tensor_checked(
    src: &mut dyn TensorSource,
    name: &str,
    expected: &[usize],
) -> Result<Vec<f32>> {
    let (shape, values) = src.tensor(name)?;
    if shape != expected {
        return Err(DistillError::Shape {
            name: name.to_string(),
            found: shape,
            expected: expected.to_vec(),
        });
    }
    Ok(values)
}

/// Folds the batch norm `{bn}.weight|bias|running_mean|running_var` (each `[cout]`, checked) into
/// the conv weight `w` (`[cout, ...]` row-major, scaled in place) and returns the folded bias:
/// `w·γ/√(var+ε)` and `(b − mean)·γ/√(var+ε) + β`, with `b` the conv's own bias (none: 0). The
/// backbones run frozen in inference mode, so one conv with these weights is exactly conv + BN.
pub fn fold_batch_norm(
    src: &mut dyn TensorSource,
    bn: &str,
    w: &mut [f32],
    conv_bias: Option<&[f32]>,
    cout: usize,
    eps: f32,
) -> Result<Vec<f32>> {
    let mut t = Vec::with_capacity(4);
    for leaf in ["weight", "bias", "running_mean", "running_var"] {
        t.push(tensor_checked(src, &format!("{bn}.{leaf}"), &[cout])?);
    }
    let per_out = w.len() / cout.max(1);
    Ok((0..cout)
        .map(|o| {
            let scale = t[0][o] / (t[3][o] + eps).sqrt();
            for v in &mut w[o * per_out..(o + 1) * per_out] {
                *v *= scale;
            }
            (conv_bias.map_or(0.0, |b| b[o]) - t[2][o]) * scale + t[1][o]
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn broadcast_views_are_refused_in_both_formats() {
        for f in ["pth_broadcast_view.pth", "pth_broadcast_view_legacy.pth"] {
            let path = fixture(f);
            match read_state_dict(&path) {
                Err(DistillError::Pytorch { path: p, message }) => {
                    assert_eq!(p, path);
                    assert!(message.contains("1099511627776 elements"), "{message}");
                }
                other => panic!("{f}: {other:?}"),
            }
        }
    }

    #[test]
    fn zip_and_legacy_files_hold_the_same_tensors() {
        let zip = read_state_dict(&fixture("vgg16_bn_w16.pth")).unwrap();
        let legacy = read_state_dict(&fixture("vgg16_bn_w16_legacy.pth")).unwrap();
        // 13 convs x (weight, bias) + 13 batch norms x 4 float tensors; the 13
        // `num_batches_tracked` int64 buffers are skipped.
        assert_eq!(zip.len(), 13 * 6);
        assert_eq!(zip.len(), legacy.len());
        for (name, t) in &zip {
            assert_eq!(t.shape, legacy[name].shape, "{name}");
            assert_eq!(t.values, legacy[name].values, "{name}");
        }
        assert_eq!(zip["features.0.weight"].shape, vec![4, 3, 3, 3]);
        // The legacy-only entry point refuses a zip file with a pointer to the right one.
        assert!(matches!(
            read_legacy_state_dict(&fixture("vgg16_bn_w16.pth")),
            Err(DistillError::Pytorch { .. })
        ));
    }
}
