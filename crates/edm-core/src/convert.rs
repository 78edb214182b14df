//! `edm convert`: NVlabs/edm training snapshots (`network-snapshot-*.pkl`) to `config.json` +
//! `model.safetensors`, without Python and without running anything the file names.
//!
//! An EDM snapshot is `pickle.dump(dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...))`.
//! Every network class of EDM is a `torch_utils.persistence` class, which pickles as
//! `_reconstruct_persistent_obj(meta)`: `meta` holds the class's whole module source as a string
//! (`module_src`), the `class_name` and the object's attribute dict (`state`), in which
//! `_init_args`/`_init_kwargs` record the constructor's arguments and `_parameters`, `_buffers` and
//! `_modules` the torch module tree. Python would compile and run `module_src`; here it is a string that is
//! never looked at. The reader ([`formats::pickle`]) only accepts the handful of globals such a snapshot
//! names (listed in [`snapshot_allows`]); a pickle naming anything else (`os.system`, `builtins.eval`, ...)
//! is [`EdmError::Snapshot`] with the pickle reader's `ForbiddenGlobal` as its source.
//!
//! The network is rebuilt from the recorded constructor arguments (EDM's names are the names of
//! [`EdmConfig`]), the state dict is collected by walking the module tree as `state_dict()` would, and
//! both are checked by building [`EdmPrecond`] from them before anything is written. What EDM's source
//! string says is not consulted: the network computed is this crate's port of EDM's published
//! `training/networks.py`, so a snapshot whose embedded classes were edited would convert to the published
//! network's function.
//!
//! Tensors inside a plain `pickle.dump` are `_rebuild_tensor_v2(storage, offset, size, stride, ...)`, where
//! the storage is `torch.storage._load_from_bytes(b)` and `b` is a complete legacy (non-zip) `torch.save`
//! of that one storage: magic number, protocol, system info, a persistent id
//! `('storage', torch.FloatStorage, key, location, numel, None)`, the key list, then `numel` as a u64
//! and the raw little-endian elements.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use formats::pickle::{self, PickleError, Value};
use formats::HostTensor;

use crate::config::{EdmConfig, ModelType, PrecondKind};
use crate::error::{EdmError, Result};
use crate::precond::EdmPrecond;

/// A snapshot file larger than this is refused before it is read (EDM's largest, ImageNet-64 ADM, is
/// about 1.2 GB with its EMA, loss and augmentation objects).
pub const MAX_SNAPSHOT_BYTES: u64 = 16 << 30;

/// The globals an EDM snapshot may name; everything else is refused by the pickle reader.
///
/// `_reconstruct_persistent_obj` is EDM's persistence hook (its argument is data here), the torch
/// names rebuild parameters, tensors and storages, `ModuleDict`/`ModuleList`/`Sequential` are torch's
/// containers, and numpy's `scalar`/`dtype` appear where EDM stores numpy numbers as attributes
/// (`skip_scale = np.sqrt(0.5)`). `dnnlib.util.EasyDict` holds keyword arguments in some snapshots.
pub fn snapshot_allows(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("torch_utils.persistence", "_reconstruct_persistent_obj")
            | ("collections", "OrderedDict")
            | ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state")
            | ("torch._utils", "_rebuild_tensor_v2")
            | ("torch.storage", "_load_from_bytes")
            | ("torch.nn.modules.container", "ModuleDict")
            | ("torch.nn.modules.container", "ModuleList")
            | ("torch.nn.modules.container", "Sequential")
            | ("numpy", "dtype")
            | ("numpy.core.multiarray", "scalar")
            | ("numpy._core.multiarray", "scalar")
            | ("dnnlib.util", "EasyDict")
    )
}

/// The pickle reader's memo copy budget for a snapshot of `len` bytes. Every persistent object reads
/// its module's source back from the memo (a ~100 KB string, once per object: ~300 objects in
/// EDM's largest networks), which the reader's default (4 x the file + 1 MiB) does not allow for in
/// small snapshots; 256 MiB more covers 2,500 objects and still bounds a hostile file's copies.
fn snapshot_clone_limit(len: usize) -> usize {
    len.saturating_mul(4).saturating_add(256 << 20)
}

/// What [`read_snapshot`] found: the network description, its state dict and where it came from.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The preconditioner and U-Net arguments, EDM's names (what `config.json` holds).
    pub config: EdmConfig,
    /// The state dict, EDM's names, float32.
    pub tensors: BTreeMap<String, HostTensor>,
    /// The `class_name` of the network object (`EDMPrecond`, ...).
    pub class_name: String,
    /// Length of the embedded module source, in bytes (kept as data, never run).
    pub module_src_len: usize,
}

/// What [`convert`] wrote.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    pub class_name: String,
    pub model_type: ModelType,
    pub tensors: usize,
    pub parameters: usize,
    pub config_path: PathBuf,
    pub weights_path: PathBuf,
}

fn err(path: &Path, message: impl Into<String>) -> EdmError {
    EdmError::Snapshot {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads the network stored under `key` (EDM's snapshots: `ema`) of an EDM snapshot pickle.
pub fn read_snapshot(path: &Path, key: &str) -> Result<Snapshot> {
    let meta = std::fs::metadata(path).map_err(|e| EdmError::io(path, e))?;
    if !meta.is_file() {
        return Err(err(path, "not a regular file"));
    }
    if meta.len() > MAX_SNAPSHOT_BYTES {
        return Err(err(
            path,
            format!(
                "{} bytes, more than the {MAX_SNAPSHOT_BYTES} an EDM snapshot can be",
                meta.len()
            ),
        ));
    }
    let data = std::fs::read(path).map_err(|e| EdmError::io(path, e))?;
    parse_snapshot(&data, key, path)
}

/// [`read_snapshot`] on bytes in memory; `path` names them in errors.
pub fn parse_snapshot(data: &[u8], key: &str, path: &Path) -> Result<Snapshot> {
    let root = pickle::load_with_limit(data, &snapshot_allows, snapshot_clone_limit(data.len()))
        .map_err(|source| EdmError::Pickle {
            path: path.to_path_buf(),
            source,
        })?;
    if !matches!(root, Value::Dict(_)) {
        return Err(err(
            path,
            "the pickle is not a dict (an EDM snapshot is dict(ema=..., ...))",
        ));
    }
    let net = root.get(key).ok_or_else(|| {
        let keys: Vec<&str> = match &root {
            Value::Dict(items) => items.iter().filter_map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        };
        err(path, format!("no entry `{key}` (entries: {keys:?})"))
    })?;
    let obj = persistent(net).map_err(|m| err(path, format!("`{key}`: {m}")))?;
    let precond = match obj.class_name {
        "EDMPrecond" => PrecondKind::EDMPrecond,
        "VPPrecond" => PrecondKind::VPPrecond,
        "VEPrecond" => PrecondKind::VEPrecond,
        other => {
            return Err(err(
                path,
                format!("`{key}` is a `{other}`; EDMPrecond, VPPrecond or VEPrecond expected"),
            ))
        }
    };
    // The U-Net class, from the object itself (EDMPrecond's default model_type differs from VP/VE's).
    let model = module_child(obj.state, "model")
        .ok_or_else(|| err(path, format!("`{key}` has no `model` submodule")))?;
    let model_obj = persistent(model).map_err(|m| err(path, format!("`{key}.model`: {m}")))?;
    let model_type = match model_obj.class_name {
        "SongUNet" => ModelType::SongUNet,
        "DhariwalUNet" => ModelType::DhariwalUNet,
        other => {
            return Err(err(
                path,
                format!("`{key}.model` is a `{other}`; SongUNet or DhariwalUNet expected"),
            ))
        }
    };
    let config = config_from_kwargs(precond, model_type, obj.state)
        .map_err(|m| err(path, format!("`{key}` constructor arguments: {m}")))?;
    let mut tensors = BTreeMap::new();
    collect_state_dict(obj.state, "", &mut tensors, 0).map_err(|m| err(path, m))?;
    Ok(Snapshot {
        config,
        tensors,
        class_name: obj.class_name.to_string(),
        module_src_len: obj.module_src_len,
    })
}

/// Converts `pkl` (network under `key`) into `outdir/config.json` + `outdir/model.safetensors`, after
/// checking that the network builds from them (every tensor used, every shape right).
pub fn convert(pkl: &Path, outdir: &Path, key: &str) -> Result<ConvertReport> {
    let snap = read_snapshot(pkl, key)?;
    let device = Default::default();
    EdmPrecond::<burn::backend::Flex>::from_tensors(&snap.config, snap.tensors.clone(), &device)
        .map_err(|e| {
            err(
                pkl,
                format!("the rebuilt network does not accept the snapshot's tensors: {e}"),
            )
        })?;
    std::fs::create_dir_all(outdir).map_err(|e| EdmError::io(outdir, e))?;
    let weights_path = outdir.join("model.safetensors");
    let config_path = outdir.join("config.json");
    let parameters = snap.tensors.values().map(|t| t.data.len()).sum();
    let list: Vec<(String, Vec<usize>, Vec<f32>)> = snap
        .tensors
        .into_iter()
        .map(|(k, t)| (k, t.shape, t.data))
        .collect();
    formats::write_safetensors(&weights_path, &list)?;
    snap.config.save(&config_path)?;
    Ok(ConvertReport {
        class_name: snap.class_name,
        model_type: snap.config.model_type,
        tensors: list.len(),
        parameters,
        config_path,
        weights_path,
    })
}

/// A persistent object's parts.
struct Persistent<'a> {
    class_name: &'a str,
    state: &'a Value,
    module_src_len: usize,
}

/// Unwraps `_reconstruct_persistent_obj(meta)`.
fn persistent(v: &Value) -> std::result::Result<Persistent<'_>, String> {
    let Value::Call {
        module, name, args, ..
    } = v
    else {
        return Err("not a torch_utils.persistence object".into());
    };
    if module != "torch_utils.persistence" || name != "_reconstruct_persistent_obj" {
        return Err(format!("`{module}.{name}(...)` is not a persistent object"));
    }
    let meta = args.first().ok_or("persistent object without meta")?;
    match meta.get("type").and_then(Value::as_str) {
        Some("class") => {}
        other => {
            return Err(format!(
                "persistent object of type {other:?}, `class` expected"
            ))
        }
    }
    let class_name = meta
        .get("class_name")
        .and_then(Value::as_str)
        .ok_or("persistent object without class_name")?;
    let module_src_len = meta
        .get("module_src")
        .and_then(Value::as_str)
        .map(str::len)
        .ok_or("persistent object without module_src")?;
    let state = meta.get("state").ok_or("persistent object without state")?;
    if !matches!(state, Value::Dict(_)) {
        return Err("persistent object's state is not a dict".into());
    }
    Ok(Persistent {
        class_name,
        state,
        module_src_len,
    })
}

/// The attribute dict of a module value: a persistent object's state, or a torch container's
/// `NEWOBJ` + `BUILD` state.
fn module_state(v: &Value) -> std::result::Result<&Value, String> {
    match v {
        Value::Call { .. } => persistent(v).map(|p| p.state),
        Value::Object {
            module,
            state: Some(state),
            ..
        } if module == "torch.nn.modules.container" => Ok(state),
        Value::Object { module, name, .. } => Err(format!(
            "`{module}.{name}` is not a module this converter knows"
        )),
        _ => Err("submodule is not a module object".into()),
    }
}

fn module_child<'a>(state: &'a Value, name: &str) -> Option<&'a Value> {
    state.get("_modules")?.get(name)
}

/// Walks `_parameters`, `_buffers` (minus `_non_persistent_buffers_set`) and `_modules` the way
/// `Module.state_dict()` does, in the same order.
fn collect_state_dict(
    state: &Value,
    prefix: &str,
    out: &mut BTreeMap<String, HostTensor>,
    depth: usize,
) -> std::result::Result<(), String> {
    if depth > 64 {
        return Err(format!("module tree deeper than 64 at `{prefix}`"));
    }
    let non_persistent: Vec<&str> = state
        .get("_non_persistent_buffers_set")
        .and_then(Value::as_seq)
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for field in ["_parameters", "_buffers"] {
        let Some(Value::Dict(items)) = state.get(field) else {
            return Err(format!("module `{prefix}` has no `{field}` dict"));
        };
        for (k, v) in items {
            let name = k
                .as_str()
                .ok_or_else(|| format!("`{prefix}{field}` has a non-string key"))?;
            if matches!(v, Value::None) || (field == "_buffers" && non_persistent.contains(&name)) {
                continue;
            }
            let full = format!("{prefix}{name}");
            let t = tensor(v).map_err(|m| format!("tensor `{full}`: {m}"))?;
            out.insert(full, t);
        }
    }
    let Some(Value::Dict(children)) = state.get("_modules") else {
        return Err(format!("module `{prefix}` has no `_modules` dict"));
    };
    for (k, v) in children {
        let name = k
            .as_str()
            .ok_or_else(|| format!("`{prefix}_modules` has a non-string key"))?;
        if matches!(v, Value::None) {
            continue;
        }
        let child = module_state(v).map_err(|m| format!("`{prefix}{name}`: {m}"))?;
        collect_state_dict(child, &format!("{prefix}{name}."), out, depth + 1)?;
    }
    Ok(())
}

/// A parameter or tensor value as float32, in logical row-major order.
fn tensor(v: &Value) -> std::result::Result<HostTensor, String> {
    let Value::Call {
        module, name, args, ..
    } = v
    else {
        return Err("not a tensor".into());
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            tensor(args.first().ok_or("parameter without data")?)
        }
        ("torch._utils", "_rebuild_tensor_v2") => {
            if args.len() < 4 {
                return Err("_rebuild_tensor_v2 with fewer than 4 arguments".into());
            }
            let Value::Call {
                module: sm,
                name: sn,
                args: sargs,
                ..
            } = &args[0]
            else {
                return Err("tensor storage is not `torch.storage._load_from_bytes(...)`".into());
            };
            if sm != "torch.storage" || sn != "_load_from_bytes" {
                return Err(format!("tensor storage from `{sm}.{sn}`"));
            }
            let Some(Value::Bytes(blob)) = sargs.first() else {
                return Err("storage without bytes".into());
            };
            let storage = legacy_storage(blob)?;
            let index = |v: &Value| v.as_int().and_then(|i| usize::try_from(i).ok());
            let ints =
                |v: &Value| -> Option<Vec<usize>> { v.as_seq()?.iter().map(index).collect() };
            let offset = index(&args[1]).ok_or("bad storage offset")?;
            let (Some(shape), Some(stride)) = (ints(&args[2]), ints(&args[3])) else {
                return Err("bad size/stride".into());
            };
            strided(&storage, offset, &shape, &stride)
        }
        _ => Err(format!("`{module}.{name}(...)` is not a tensor")),
    }
}

/// Gathers `shape`/`stride` from `storage` starting at `offset`, checking every index.
fn strided(
    storage: &[f32],
    offset: usize,
    shape: &[usize],
    stride: &[usize],
) -> std::result::Result<HostTensor, String> {
    if shape.len() != stride.len() {
        return Err("size and stride lengths differ".into());
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or("element count overflows")?;
    if numel > 0 {
        let last = shape
            .iter()
            .zip(stride)
            .try_fold(offset, |acc, (&s, &st)| {
                acc.checked_add((s - 1).checked_mul(st)?)
            })
            .ok_or("index overflows")?;
        if last >= storage.len() {
            return Err(format!(
                "reads element {last} of a storage of {}",
                storage.len()
            ));
        }
    }
    let mut data = Vec::with_capacity(numel);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..numel {
        let at = offset + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        data.push(storage[at]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(HostTensor::new(shape.to_vec(), data))
}

/// The 10-byte magic number of legacy `torch.save` (`0x1950a86a20f9469cfc6c`), as its first pickle
/// (`PROTO 2`, `LONG1 10`, the bytes, `STOP`) writes it.
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
];

fn storage_allows(module: &str, name: &str) -> bool {
    module == "torch" && name.ends_with("Storage")
}

/// Decodes a legacy `torch.save` of one storage into float32 values.
fn legacy_storage(blob: &[u8]) -> std::result::Result<Vec<f32>, String> {
    if !blob.starts_with(&LEGACY_MAGIC) {
        return Err("storage bytes are not a legacy torch.save (bad magic number)".into());
    }
    let mut pos = LEGACY_MAGIC.len();
    let mut next = |what: &str| -> std::result::Result<Value, String> {
        let (v, used) = pickle::load_prefix(&blob[pos..], &storage_allows)
            .map_err(|e: PickleError| format!("storage {what} pickle: {e}"))?;
        pos += used;
        Ok(v)
    };
    let _protocol = next("protocol")?;
    let _sys_info = next("system info")?;
    let pid = next("object")?;
    let keys = next("key list")?;
    let Value::PersId(pid) = pid else {
        return Err("storage object is not a persistent id".into());
    };
    let p = pid.as_seq().ok_or("storage persistent id is not a tuple")?;
    let (Some("storage"), Some(Value::Global { name: dtype, .. }), Some(key), Some(numel)) = (
        p.first().and_then(Value::as_str),
        p.get(1),
        p.get(2).and_then(Value::as_str),
        p.get(4).and_then(Value::as_int),
    ) else {
        return Err(
            "storage persistent id is not ('storage', type, key, location, numel, ...)".into(),
        );
    };
    if keys.as_seq().map(|k| k.len()) != Some(1)
        || keys.as_seq().and_then(|k| k[0].as_str()) != Some(key)
    {
        return Err("storage key list does not name exactly the one storage".into());
    }
    let elem = match dtype.as_str() {
        "FloatStorage" => 4,
        "DoubleStorage" => 8,
        "HalfStorage" | "BFloat16Storage" => 2,
        other => return Err(format!("{other} is not a floating-point storage")),
    };
    let head = blob
        .get(pos..pos + 8)
        .ok_or("storage truncated before its element count")?;
    let count = u64::from_le_bytes(head.try_into().expect("8 bytes"));
    if i64::try_from(count).ok() != Some(numel) {
        return Err(format!(
            "storage holds {count} elements, its id says {numel}"
        ));
    }
    let count = usize::try_from(count).map_err(|_| "element count overflows")?;
    let start = pos + 8;
    let bytes = count.checked_mul(elem).ok_or("storage size overflows")?;
    let raw = blob
        .get(start..start.checked_add(bytes).ok_or("storage size overflows")?)
        .ok_or_else(|| format!("storage truncated: {bytes} bytes of data expected"))?;
    if start + bytes != blob.len() {
        return Err(format!(
            "{} bytes after the storage data",
            blob.len() - start - bytes
        ));
    }
    Ok(match dtype.as_str() {
        "FloatStorage" => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect(),
        "DoubleStorage" => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        "HalfStorage" => raw
            .chunks_exact(2)
            .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        _ => raw
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
    })
}

/// IEEE half to single precision (exact).
fn half_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// EDM's positional parameters of each preconditioner, in order (`networks.py` signatures).
fn positional_names(precond: PrecondKind) -> &'static [&'static str] {
    match precond {
        PrecondKind::EDMPrecond => &[
            "img_resolution",
            "img_channels",
            "label_dim",
            "use_fp16",
            "sigma_min",
            "sigma_max",
            "sigma_data",
            "model_type",
        ],
        PrecondKind::VPPrecond => &[
            "img_resolution",
            "img_channels",
            "label_dim",
            "use_fp16",
            "beta_d",
            "beta_min",
            "M",
            "epsilon_t",
            "model_type",
        ],
        PrecondKind::VEPrecond => &[
            "img_resolution",
            "img_channels",
            "label_dim",
            "use_fp16",
            "sigma_min",
            "sigma_max",
            "model_type",
        ],
    }
}

/// A pickled number, string, list or numpy scalar as JSON; `None` for values that have no JSON
/// form (an infinite float: EDM's default `sigma_max`, which the config spells by leaving it out).
fn to_json(v: &Value) -> std::result::Result<Option<serde_json::Value>, String> {
    use serde_json::Value as J;
    Ok(Some(match v {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) if f.is_finite() => J::from(*f),
        Value::Float(f) if *f == f64::INFINITY => return Ok(None),
        Value::Float(f) => return Err(format!("non-finite number {f}")),
        Value::Str(s) => J::String(s.clone()),
        Value::Tuple(items) | Value::List(items) => J::Array(
            items
                .iter()
                .map(|i| to_json(i)?.ok_or_else(|| "infinite number in a list".to_string()))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Call {
            module, name, args, ..
        } if name == "scalar" && module.starts_with("numpy") => {
            return numpy_scalar(args).map(|f| Some(J::from(f)))
        }
        other => {
            return Err(format!(
                "value {other:?} is not a plain number, string or list"
            ))
        }
    }))
}

/// `numpy.core.multiarray.scalar(dtype('f8'), bytes)` as f64.
fn numpy_scalar(args: &[Value]) -> std::result::Result<f64, String> {
    let (Some(Value::Call { args: dargs, .. }), Some(Value::Bytes(b))) =
        (args.first(), args.get(1))
    else {
        return Err("numpy scalar without dtype and bytes".into());
    };
    let code = dargs.first().and_then(Value::as_str).unwrap_or("");
    Ok(match (code, b.len()) {
        ("f8", 8) => f64::from_le_bytes(b[..8].try_into().expect("8")),
        ("f4", 4) => f32::from_le_bytes(b[..4].try_into().expect("4")) as f64,
        ("i8", 8) => i64::from_le_bytes(b[..8].try_into().expect("8")) as f64,
        ("i4", 4) => i32::from_le_bytes(b[..4].try_into().expect("4")) as f64,
        _ => {
            return Err(format!(
                "numpy scalar of dtype `{code}` with {} bytes",
                b.len()
            ))
        }
    })
}

/// The flat `config.json` object from `_init_args`/`_init_kwargs` (EDM passes the U-Net's arguments
/// through `**model_kwargs`, so they sit beside the preconditioner's).
fn config_from_kwargs(
    precond: PrecondKind,
    model_type: ModelType,
    state: &Value,
) -> std::result::Result<EdmConfig, String> {
    let mut obj = serde_json::Map::new();
    let names = positional_names(precond);
    if let Some(args) = state.get("_init_args").and_then(Value::as_seq) {
        if args.len() > names.len() {
            return Err(format!(
                "{} positional arguments, at most {} expected",
                args.len(),
                names.len()
            ));
        }
        for (name, v) in names.iter().zip(args) {
            if let Some(j) = to_json(v).map_err(|m| format!("`{name}`: {m}"))? {
                obj.insert(name.to_string(), j);
            }
        }
    }
    match state.get("_init_kwargs") {
        Some(Value::Dict(items)) => {
            for (k, v) in items {
                let name = k
                    .as_str()
                    .ok_or("a keyword argument with a non-string name")?;
                if let Some(j) = to_json(v).map_err(|m| format!("`{name}`: {m}"))? {
                    if obj.insert(name.to_string(), j).is_some() {
                        return Err(format!("`{name}` given both by position and by keyword"));
                    }
                }
            }
        }
        None => return Err("no `_init_kwargs` (not a torch_utils.persistence network)".into()),
        Some(_) => return Err("`_init_kwargs` is not a dict".into()),
    }
    let precond_name = match precond {
        PrecondKind::EDMPrecond => "EDMPrecond",
        PrecondKind::VPPrecond => "VPPrecond",
        PrecondKind::VEPrecond => "VEPrecond",
    };
    let model_name = match model_type {
        ModelType::SongUNet => "SongUNet",
        ModelType::DhariwalUNet => "DhariwalUNet",
    };
    if let Some(given) = obj.get("model_type").and_then(serde_json::Value::as_str) {
        if given != model_name {
            return Err(format!(
                "model_type `{given}` but the model object is a `{model_name}`"
            ));
        }
    }
    obj.insert("precond".into(), precond_name.into());
    obj.insert("model_type".into(), model_name.into());
    let config: EdmConfig =
        serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| e.to_string())?;
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_decode_exactly() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(half_to_f32(0x7bff), 65504.0);
        assert_eq!(half_to_f32(0x7c00), f32::INFINITY);
        assert!(half_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn strided_reads_are_checked() {
        let s: Vec<f32> = (0..6).map(|i| i as f32).collect();
        // A transposed 2x3 view of a 3x2 storage.
        let t = strided(&s, 0, &[2, 3], &[1, 2]).unwrap();
        assert_eq!(t.data, vec![0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
        assert!(strided(&s, 1, &[2, 3], &[1, 2]).is_err());
        assert!(strided(&s, 0, &[2], &[1, 2]).is_err());
        assert!(strided(&s, 0, &[usize::MAX, 2], &[usize::MAX, 1]).is_err());
    }
}
