//! Reads the parameters of a TorchScript archive (`torch.jit.save` zip) without running any of it.
//!
//! The archive holds `<prefix>/data.pkl` (the module tree: `__torch__.*` objects whose `BUILD` state is
//! their attribute dict), `<prefix>/data/<key>` (raw little-endian storages) and `<prefix>/code/` (the
//! scripted Python, which we read as documentation only). Tensors appear in the pickle as
//! `torch._utils._rebuild_tensor_v2(persistent_id, offset, size, stride, ...)`; we follow the same
//! recipe with our own strided copy.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use formats::HostTensor;

use crate::error::{FidError, Result};
use crate::pickle::{self, Value};

/// Everything we keep from a TorchScript module: tensors and plain attributes, by dotted path
/// (`net.layers.mixed.tower.conv.weight`, `net.layers.conv.stride`), in file order.
#[derive(Debug, Default)]
pub struct ScriptModule {
    pub tensors: BTreeMap<String, HostTensor>,
    pub attrs: BTreeMap<String, Value>,
    /// Tensor names in the order the pickle lists them.
    pub order: Vec<String>,
}

/// The globals a TorchScript `data.pkl` may name: its own module classes, the tensor rebuild function,
/// storage types, `OrderedDict` and the `torch.jit._pickle` list builders. Nothing else.
pub fn torchscript_allows(module: &str, name: &str) -> bool {
    module == "__torch__"
        || module.starts_with("__torch__.")
        || matches!(
            (module, name),
            ("torch._utils", "_rebuild_tensor_v2")
                | ("collections", "OrderedDict")
                | ("torch", "FloatStorage")
                | ("torch", "DoubleStorage")
                | ("torch", "HalfStorage")
                | ("torch", "LongStorage")
                | ("torch", "IntStorage")
                | ("torch.jit._pickle", "build_intlist")
                | ("torch.jit._pickle", "build_doublelist")
                | ("torch.jit._pickle", "build_boollist")
        )
}

/// Opens a TorchScript archive and rebuilds every tensor in its module tree.
pub fn read_script_module(path: &Path) -> Result<ScriptModule> {
    let file = formats::open_input(path)?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| FidError::Zip {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let pkl_name = zip
        .file_names()
        .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .min_by_key(|n| n.len())
        .map(str::to_string)
        .ok_or_else(|| FidError::MissingMember {
            path: path.to_path_buf(),
            member: "<prefix>/data.pkl".into(),
        })?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let pkl = read_member(&mut zip, path, &pkl_name)?;
    let root = pickle::load(&pkl, &torchscript_allows).map_err(|source| FidError::Pickle {
        what: format!("{}:{pkl_name}", path.display()),
        source,
    })?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut module = ScriptModule::default();
    let mut loader = |key: &str| -> Result<Vec<u8>> {
        if let Some(b) = storages.get(key) {
            return Ok(b.clone());
        }
        let b = read_member(&mut zip, path, &format!("{prefix}data/{key}"))?;
        storages.insert(key.to_string(), b.clone());
        Ok(b)
    };
    walk(&root, "", &mut module, &mut loader, path)?;
    Ok(module)
}

/// One member, inflated at most to its declared size and [`formats::zipped::member_limit`]: a storage
/// that decompresses to gigabytes is refused after one byte past what the archive declares.
fn read_member<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    path: &Path,
    name: &str,
) -> Result<Vec<u8>> {
    formats::zipped::read_member(zip, name, formats::zipped::member_limit(), path)?.ok_or_else(
        || FidError::MissingMember {
            path: path.to_path_buf(),
            member: name.to_string(),
        },
    )
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn structure(path: &Path, reason: String) -> FidError {
    FidError::Structure {
        what: path.display().to_string(),
        reason,
    }
}

fn walk(
    value: &Value,
    prefix: &str,
    out: &mut ScriptModule,
    storage: &mut impl FnMut(&str) -> Result<Vec<u8>>,
    path: &Path,
) -> Result<()> {
    match value {
        Value::Object { state, .. } => {
            let Some(state) = state else {
                return Ok(());
            };
            let Value::Dict(items) = state.as_ref() else {
                return Err(structure(
                    path,
                    format!("module `{prefix}` has a non-dict state"),
                ));
            };
            for (k, v) in items {
                let key = k.as_str().ok_or_else(|| {
                    structure(
                        path,
                        format!("module `{prefix}` has a non-string attribute"),
                    )
                })?;
                walk(v, &join(prefix, key), out, storage, path)?;
            }
            Ok(())
        }
        Value::Call {
            module, name, args, ..
        } if module == "torch._utils" && name == "_rebuild_tensor_v2" => {
            let t = rebuild_tensor(args, prefix, storage, path)?;
            out.order.push(prefix.to_string());
            out.tensors.insert(prefix.to_string(), t);
            Ok(())
        }
        Value::Call { module, args, .. } if module == "torch.jit._pickle" => {
            let list = args.first().cloned().unwrap_or(Value::None);
            out.attrs.insert(prefix.to_string(), list);
            Ok(())
        }
        other => {
            out.attrs.insert(prefix.to_string(), other.clone());
            Ok(())
        }
    }
}

fn usizes(v: &Value, what: &str, name: &str, path: &Path) -> Result<Vec<usize>> {
    v.as_seq()
        .and_then(|s| {
            s.iter()
                .map(|x| x.as_int().and_then(|i| usize::try_from(i).ok()))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| {
            structure(
                path,
                format!("tensor `{name}`: {what} is not a tuple of sizes"),
            )
        })
}

fn rebuild_tensor(
    args: &[Value],
    name: &str,
    storage: &mut impl FnMut(&str) -> Result<Vec<u8>>,
    path: &Path,
) -> Result<HostTensor> {
    if args.len() < 4 {
        return Err(structure(
            path,
            format!(
                "tensor `{name}`: _rebuild_tensor_v2 has {} arguments",
                args.len()
            ),
        ));
    }
    let Value::PersId(pid) = &args[0] else {
        return Err(structure(
            path,
            format!("tensor `{name}`: storage is not a persistent id"),
        ));
    };
    let pid = pid.as_seq().unwrap_or(&[]);
    let (kind, key) = match pid {
        [tag, Value::Global { name: kind, .. }, key, _location, _numel, ..]
            if tag.as_str() == Some("storage") =>
        {
            (kind.as_str(), key.as_str())
        }
        _ => {
            return Err(structure(
                path,
                format!(
                    "tensor `{name}`: persistent id is not ('storage', type, key, location, numel)"
                ),
            ))
        }
    };
    let key = key.ok_or_else(|| {
        structure(
            path,
            format!("tensor `{name}`: storage key is not a string"),
        )
    })?;
    if kind != "FloatStorage" {
        return Err(structure(
            path,
            format!("tensor `{name}`: storage type {kind} is not FloatStorage (float32)"),
        ));
    }
    let offset = args[1]
        .as_int()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| structure(path, format!("tensor `{name}`: bad storage offset")))?;
    let shape = usizes(&args[2], "size", name, path)?;
    let stride = usizes(&args[3], "stride", name, path)?;
    if shape.len() != stride.len() {
        return Err(structure(
            path,
            format!("tensor `{name}`: size and stride ranks differ"),
        ));
    }
    let bytes = storage(key)?;
    let available = bytes.len() / 4;
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| structure(path, format!("tensor `{name}`: size overflows")))?;
    // Highest element index the view touches (0 elements touch nothing).
    let last = if numel == 0 {
        0
    } else {
        shape
            .iter()
            .zip(&stride)
            .try_fold(offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?))
            .and_then(|x| x.checked_add(1))
            .ok_or_else(|| structure(path, format!("tensor `{name}`: strides overflow")))?
    };
    if last > available {
        return Err(FidError::StorageTooSmall {
            what: path.display().to_string(),
            key: key.to_string(),
            available: bytes.len(),
            needed: last * 4,
        });
    }
    let read = |i: usize| f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    let mut data = Vec::with_capacity(numel);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        let at = offset + index.iter().zip(&stride).map(|(i, s)| i * s).sum::<usize>();
        data.push(read(at));
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(HostTensor { shape, data })
}

impl ScriptModule {
    /// Writes the tensors (float32, original dotted names) as safetensors, e.g. to keep the Inception
    /// weights without the TorchScript archive.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .order
            .iter()
            .map(|name| {
                let t = &self.tensors[name];
                let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.clone(), b, t.shape.clone())
            })
            .collect();
        let st_err = |reason: String| FidError::Safetensors {
            path: path.to_path_buf(),
            reason,
        };
        let views = bytes
            .iter()
            .map(|(n, b, shape)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .map(|v| (n.as_str(), v))
                    .map_err(|e| st_err(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize_to_file(views, None, path).map_err(|e| st_err(e.to_string()))
    }

    /// Reads float32 tensors from a safetensors file (no attributes: those live only in TorchScript).
    pub fn load_safetensors(path: &Path) -> Result<Self> {
        let bytes = formats::read_input(path, None)?;
        let st_err = |reason: String| FidError::Safetensors {
            path: path.to_path_buf(),
            reason,
        };
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| st_err(e.to_string()))?;
        let mut m = ScriptModule::default();
        for (name, view) in st.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(st_err(format!(
                    "tensor `{name}` is {:?}, not F32",
                    view.dtype()
                )));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            m.order.push(name.clone());
            m.tensors.insert(
                name,
                HostTensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        // safetensors does not keep insertion order; names are enough to map the network.
        m.order.sort();
        Ok(m)
    }
}
