//! CIFAR-10's "python version" (`cifar-10-python.tar.gz`, or its extracted `cifar-10-batches-py/`).
//!
//! Each `data_batch_N` is a Python-2 pickle of `{'data': uint8 ndarray [10000, 3072] (CHW), 'labels':
//! [...], ...}`; numpy arrays pickle as `numpy.core.multiarray._reconstruct` plus a `BUILD` state
//! `(version, shape, dtype, fortran_order, raw_bytes)`. We read that with the code-free pickle reader,
//! allowing only those numpy names. Like EDM's `dataset_tool.py`, the training batches 1..5 are used,
//! in order; `test_batch` is skipped.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::error::{io_err, FidError, Result};
use crate::pickle::{self, Value};

/// The globals a numpy-array pickle needs, and nothing else.
pub fn numpy_allows(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("numpy.core.multiarray", "_reconstruct")
            | ("numpy._core.multiarray", "_reconstruct")
            | ("numpy", "ndarray")
            | ("numpy", "dtype")
    )
}

/// Images (`[N, 3, 32, 32]` uint8, row-major) and labels of CIFAR-10's training batches.
pub fn read_cifar10(path: &Path) -> Result<(Vec<u8>, [usize; 4], Vec<u8>)> {
    let batches = if path.is_dir() {
        read_batches_from_dir(path)?
    } else {
        read_batches_from_tar(path)?
    };
    if batches.is_empty() {
        return Err(FidError::Dataset {
            path: path.to_path_buf(),
            reason: "no data_batch_N files (CIFAR-10 python version expected)".into(),
        });
    }
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for (name, bytes) in batches.values() {
        let what = format!("{}:{name}", path.display());
        let (data, n, l) = parse_batch(bytes, &what)?;
        images.extend_from_slice(&data);
        if l.len() != n {
            return Err(FidError::Structure {
                what,
                reason: format!("{} labels for {n} images", l.len()),
            });
        }
        labels.extend(l);
    }
    let n = images.len() / 3072;
    Ok((images, [n, 3, 32, 32], labels))
}

fn batch_index(file_name: &str) -> Option<u32> {
    file_name.strip_prefix("data_batch_")?.parse().ok()
}

fn read_batches_from_dir(dir: &Path) -> Result<BTreeMap<u32, (String, Vec<u8>)>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(i) = batch_index(&name) {
            let limit = batch_limit();
            let path = entry.path();
            let bytes = formats::read_input(&path, Some(limit))?;
            out.insert(i, (name, bytes));
        }
    }
    Ok(out)
}

fn read_batches_from_tar(path: &Path) -> Result<BTreeMap<u32, (String, Vec<u8>)>> {
    let file = formats::open_input(path)?;
    let mut head = [0u8; 2];
    let gz = {
        let mut f = formats::open_input(path)?;
        f.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b]
    };
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let tar_err = |e: std::io::Error| FidError::Dataset {
        path: path.to_path_buf(),
        reason: format!("tar: {e}"),
    };
    let mut archive = tar::Archive::new(reader);
    let mut out = BTreeMap::new();
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let name = entry.path().map_err(tar_err)?.to_string_lossy().to_string();
        let base = name.rsplit('/').next().unwrap_or(&name).to_string();
        if let Some(i) = batch_index(&base) {
            // At most the size the tar header declares, and at most the batch limit: a gzip bomb
            // behind a header claiming gigabytes is refused before it is inflated.
            let declared = entry.size();
            let bytes = formats::read_bounded(
                &mut entry,
                batch_limit(),
                Some(declared),
                path,
                &format!("tar member `{name}`"),
            )?;
            out.insert(i, (name, bytes));
        }
    }
    Ok(out)
}

/// A CIFAR-10 batch is 30 MiB; 256 MiB (`ICLGDD_MAX_CIFAR_BATCH_BYTES` raises it) leaves room for
/// any honest variant and refuses a member that would fill the memory.
fn batch_limit() -> formats::Limit {
    formats::Limit::from_env("ICLGDD_MAX_CIFAR_BATCH_BYTES", 256 << 20)
}

fn bad(what: &str, reason: impl Into<String>) -> FidError {
    FidError::Structure {
        what: what.to_string(),
        reason: reason.into(),
    }
}

/// One `data_batch` pickle → (CHW pixels, image count, labels).
pub fn parse_batch(bytes: &[u8], what: &str) -> Result<(Vec<u8>, usize, Vec<u8>)> {
    let root = pickle::load(bytes, &numpy_allows).map_err(|source| FidError::Pickle {
        what: what.to_string(),
        source,
    })?;
    let data = root
        .get("data")
        .ok_or_else(|| bad(what, "no `data` entry"))?;
    let (pixels, shape) = numpy_u8(data).map_err(|r| bad(what, format!("`data`: {r}")))?;
    let [n, 3072] = shape[..] else {
        return Err(bad(
            what,
            format!("`data` has shape {shape:?}, expected [N, 3072]"),
        ));
    };
    let labels = root
        .get("labels")
        .and_then(Value::as_seq)
        .ok_or_else(|| bad(what, "no `labels` list"))?
        .iter()
        .map(|v| v.as_int().and_then(|i| u8::try_from(i).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| bad(what, "`labels` are not small integers"))?;
    Ok((pixels, n, labels))
}

/// Rebuilds a C-ordered uint8 numpy array from its pickled form.
fn numpy_u8(v: &Value) -> std::result::Result<(Vec<u8>, Vec<usize>), String> {
    let Value::Call {
        name,
        state: Some(state),
        ..
    } = v
    else {
        return Err("not a pickled numpy array".into());
    };
    if name != "_reconstruct" {
        return Err(format!("built by `{name}`, not numpy's _reconstruct"));
    }
    let [_version, shape, dtype, fortran, raw] = state.as_seq().unwrap_or(&[]) else {
        return Err("array state is not (version, shape, dtype, fortran, data)".into());
    };
    let shape: Vec<usize> = shape
        .as_seq()
        .and_then(|s| {
            s.iter()
                .map(|x| x.as_int().and_then(|i| usize::try_from(i).ok()))
                .collect()
        })
        .ok_or("shape is not a tuple of sizes")?;
    let dtype_name = match dtype {
        Value::Call { name, args, .. } if name == "dtype" => args.first().and_then(Value::as_str),
        _ => None,
    };
    if dtype_name != Some("u1") {
        return Err(format!("dtype {dtype_name:?} is not uint8 (u1)"));
    }
    if fortran.as_int() != Some(0) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let Value::Bytes(raw) = raw else {
        return Err("array data is not a byte string".into());
    };
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    if raw.len() != numel {
        return Err(format!("{} bytes for shape {shape:?}", raw.len()));
    }
    Ok((raw.clone(), shape))
}
