//! Reader for PyTorch's legacy (pre-1.6, non-zip) `torch.save` format, enough for state dicts.
//!
//! Why not burn-store's `PytorchReader`: in burn-store 0.21 it ignores the stride argument of
//! `_rebuild_tensor_v2`, and the EfficientNet-Lite0 asset stores every conv and the classifier
//! weight non-contiguously (TensorFlow HWIO order, strides such as (1, 32, 288, 96)), so it returns
//! scrambled weights; it also accepts a truncated file. This reader honours strides and checks
//! every byte count.
//!
//! Layout of the file: five consecutive pickles/blocks — magic number, protocol version, sys info,
//! the state dict (tensors reference storages through persistent ids), the list of storage keys —
//! followed, for each key in that order, by an 8-byte little-endian element count and the raw
//! little-endian data. The pickles are interpreted by a small opcode machine over plain values: no
//! global is ever imported or called; the only callables understood are
//! `collections.OrderedDict` and `torch._utils._rebuild_tensor_v2`, anything else is an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{DistillError, Result};

const MAGIC: u128 = 0x1950a86a20f9469cfc6c;

#[derive(Clone, Debug, PartialEq)]
enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<V>),
    List(Vec<V>),
    Dict(Vec<(V, V)>),
    Global(String, String),
    PersId(Box<V>),
    Tensor(TensorRef),
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

enum Slot {
    Mark,
    Val(V),
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, V>,
    path: PathBuf,
}

impl<'a> Machine<'a> {
    fn err(&self, msg: impl Into<String>) -> DistillError {
        DistillError::Pytorch {
            path: self.path.clone(),
            message: format!("pickle at byte {}: {}", self.pos, msg.into()),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.pos + n > self.data.len() {
            return Err(self.err("truncated"));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line(&mut self) -> Result<String> {
        let start = self.pos;
        while self.pos < self.data.len() && self.data[self.pos] != b'\n' {
            self.pos += 1;
        }
        if self.pos >= self.data.len() {
            return Err(self.err("truncated line"));
        }
        let s = String::from_utf8_lossy(&self.data[start..self.pos]).into_owned();
        self.pos += 1;
        Ok(s)
    }
    fn pop(&mut self) -> Result<V> {
        match self.stack.pop() {
            Some(Slot::Val(v)) => Ok(v),
            _ => Err(self.err("stack underflow")),
        }
    }
    fn pop_mark(&mut self) -> Result<Vec<V>> {
        let mut items = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Slot::Val(v)) => items.push(v),
                Some(Slot::Mark) => break,
                None => return Err(self.err("missing MARK")),
            }
        }
        items.reverse();
        Ok(items)
    }
    fn top(&mut self) -> Result<&mut V> {
        match self.stack.last_mut() {
            Some(Slot::Val(v)) => Ok(v),
            _ => Err(DistillError::Pytorch {
                path: self.path.clone(),
                message: format!("pickle at byte {}: empty stack", self.pos),
            }),
        }
    }
    fn push(&mut self, v: V) {
        self.stack.push(Slot::Val(v));
    }
    fn str_of(&mut self, n: usize) -> Result<V> {
        let b = self.take(n)?;
        Ok(V::Str(String::from_utf8_lossy(b).into_owned()))
    }

    fn reduce(&mut self, f: V, args: V) -> Result<V> {
        let V::Tuple(args) = args else {
            return Err(self.err("REDUCE without an argument tuple"));
        };
        match f {
            V::Global(m, n) if m == "collections" && n == "OrderedDict" => Ok(V::Dict(Vec::new())),
            V::Global(m, n) if m == "torch._utils" && n == "_rebuild_tensor_v2" => {
                if args.len() < 4 {
                    return Err(self.err("_rebuild_tensor_v2 needs 4+ arguments"));
                }
                let V::PersId(pid) = &args[0] else {
                    return Err(self.err("tensor storage is not a persistent id"));
                };
                let V::Tuple(p) = pid.as_ref() else {
                    return Err(self.err("persistent id is not a tuple"));
                };
                let (Some(V::Global(_, dtype)), Some(V::Str(key))) = (p.get(1), p.get(2)) else {
                    return Err(self.err("persistent id is not ('storage', type, key, ...)"));
                };
                let ints = |v: &V| -> Option<Vec<usize>> {
                    match v {
                        V::Tuple(xs) => xs
                            .iter()
                            .map(|x| match x {
                                V::Int(i) if *i >= 0 => Some(*i as usize),
                                _ => None,
                            })
                            .collect(),
                        _ => None,
                    }
                };
                let offset = match &args[1] {
                    V::Int(i) if *i >= 0 => *i as usize,
                    _ => return Err(self.err("bad storage offset")),
                };
                let (Some(shape), Some(stride)) = (ints(&args[2]), ints(&args[3])) else {
                    return Err(self.err("bad shape/stride"));
                };
                if shape.len() != stride.len() {
                    return Err(self.err("shape and stride lengths differ"));
                }
                Ok(V::Tensor(TensorRef {
                    storage_key: key.clone(),
                    dtype: dtype.clone(),
                    offset,
                    shape,
                    stride,
                }))
            }
            V::Global(m, n) => Err(self.err(format!(
                "call of `{m}.{n}` refused (only OrderedDict and _rebuild_tensor_v2 are understood)"
            ))),
            _ => Err(self.err("REDUCE of a non-global")),
        }
    }

    fn run(&mut self) -> Result<V> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 2 {
                        return Err(self.err(format!("protocol {p} not supported")));
                    }
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Slot::Mark),
                b'N' => self.push(V::None),
                0x88 => self.push(V::Bool(true)),
                0x89 => self.push(V::Bool(false)),
                b'}' => self.push(V::Dict(Vec::new())),
                b']' => self.push(V::List(Vec::new())),
                b')' => self.push(V::Tuple(Vec::new())),
                b'K' => {
                    let v = self.u8()? as i64;
                    self.push(V::Int(v))
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.push(V::Int(u16::from_le_bytes([b[0], b[1]]) as i64))
                }
                b'J' => {
                    let v = self.u32()? as i32 as i64;
                    self.push(V::Int(v))
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 16 {
                        return Err(self.err("LONG1 too long"));
                    }
                    let mut v: i128 = 0;
                    for (i, byte) in b.iter().enumerate() {
                        v |= (*byte as i128) << (8 * i);
                    }
                    if n > 0 && n < 16 && b[n - 1] & 0x80 != 0 {
                        v -= 1i128 << (8 * n);
                    }
                    self.push(V::Int(v as i64))
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.push(V::Float(v))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.str_of(n)?;
                    self.push(v)
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let v = self.str_of(n)?;
                    self.push(v)
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.str_of(n)?;
                    self.push(v)
                }
                b'c' => {
                    let m = self.line()?;
                    let n = self.line()?;
                    self.push(V::Global(m, n))
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(k, v);
                }
                b'r' => {
                    let k = self.u32()?;
                    let v = self.top()?.clone();
                    self.memo.insert(k, v);
                }
                b'h' | b'j' => {
                    let k = if op == b'h' {
                        self.u8()? as u32
                    } else {
                        self.u32()?
                    };
                    let v = self
                        .memo
                        .get(&k)
                        .cloned()
                        .ok_or_else(|| self.err(format!("memo {k} missing")))?;
                    self.push(v)
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(V::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(V::Tuple(items))
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(V::PersId(Box::new(pid)))
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(f, args)?;
                    self.push(v)
                }
                b'b' => {
                    // BUILD: state on an OrderedDict (its __dict__) or tensor metadata: ignored.
                    self.pop()?;
                }
                b's' | b'u' => {
                    let items = if op == b's' {
                        let v = self.pop()?;
                        let k = self.pop()?;
                        vec![k, v]
                    } else {
                        self.pop_mark()?
                    };
                    if !items.len().is_multiple_of(2) {
                        return Err(self.err("odd SETITEMS"));
                    }
                    let V::Dict(d) = self.top()? else {
                        return Err(self.err("SETITEMS on a non-dict"));
                    };
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.push((k, v));
                    }
                }
                b'a' | b'e' => {
                    let items = if op == b'a' {
                        vec![self.pop()?]
                    } else {
                        self.pop_mark()?
                    };
                    let V::List(l) = self.top()? else {
                        return Err(self.err("APPENDS on a non-list"));
                    };
                    l.extend(items);
                }
                _ => return Err(self.err(format!("unsupported opcode 0x{op:02x}"))),
            }
        }
    }
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

/// Reads every float32/float64 tensor of a legacy-format state dict (integer buffers such as
/// `num_batches_tracked` are skipped).
pub fn read_legacy_state_dict(path: &Path) -> Result<HashMap<String, PthTensor>> {
    let data = std::fs::read(path).map_err(|e| DistillError::io(path, e))?;
    let perr = |m: String| DistillError::Pytorch {
        path: path.to_path_buf(),
        message: m,
    };
    if data.starts_with(b"PK") {
        return Err(perr(
            "zip-format (torch >= 1.6) checkpoint: only the legacy format is supported here".into(),
        ));
    }
    let mut m = Machine {
        data: &data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        path: path.to_path_buf(),
    };
    // The magic number is a 10-byte LONG1 (it overflows i64): check the raw bytes.
    let _magic = m.run()?;
    if data.len() < 14 || !data[2..].starts_with(&[0x8a, 0x0a]) {
        return Err(perr("not a torch legacy file (bad magic number)".into()));
    }
    let mut raw = [0u8; 16];
    raw[..10].copy_from_slice(&data[4..14]);
    if u128::from_le_bytes(raw) != MAGIC {
        return Err(perr("not a torch legacy file (bad magic number)".into()));
    }
    let _protocol = m.run()?;
    let _sys_info = m.run()?;
    let root = m.run()?;
    let keys = m.run()?;
    let V::Dict(entries) = root else {
        return Err(perr("the checkpoint is not a state dict".into()));
    };
    let V::List(keys) = keys else {
        return Err(perr("storage key list missing".into()));
    };
    // Storage blocks in key order: u64 element count, then the bytes.
    let mut storages: HashMap<String, (usize, usize)> = HashMap::new(); // key -> (byte pos, count)
    let mut pos = m.pos;
    for k in keys {
        let V::Str(k) = k else {
            return Err(perr("storage key is not a string".into()));
        };
        if pos + 8 > data.len() {
            return Err(perr(format!("truncated before storage `{k}`")));
        }
        let n = u64::from_le_bytes(data[pos..pos + 8].try_into().expect("8 bytes")) as usize;
        pos += 8;
        // The dtype of a storage is the dtype of any tensor viewing it.
        let es = entries
            .iter()
            .find_map(|(_, v)| match v {
                V::Tensor(t) if t.storage_key == k => elem_size(&t.dtype),
                _ => None,
            })
            .ok_or_else(|| {
                perr(format!(
                    "storage `{k}` has no tensor of a known element type"
                ))
            })?;
        storages.insert(k, (pos, n));
        pos = pos
            .checked_add(n * es)
            .filter(|&p| p <= data.len())
            .ok_or_else(|| {
                perr(format!(
                    "truncated in storage data (needs {} bytes)",
                    n * es
                ))
            })?;
    }
    if pos != data.len() {
        return Err(perr(format!(
            "{} trailing bytes after the last storage",
            data.len() - pos
        )));
    }
    let mut out = HashMap::new();
    for (k, v) in entries {
        let (V::Str(name), V::Tensor(t)) = (k, v) else {
            return Err(perr("state dict entry is not name → tensor".into()));
        };
        let (start, count) = storages[&t.storage_key];
        let es = match t.dtype.as_str() {
            "FloatStorage" => 4,
            "DoubleStorage" => 8,
            _ => continue, // integer buffers (num_batches_tracked)
        };
        let numel: usize = t.shape.iter().product();
        let max_index: usize = t.offset.saturating_add(
            t.shape
                .iter()
                .zip(&t.stride)
                .map(|(s, st)| s.saturating_sub(1) * st)
                .sum(),
        );
        if numel > 0 && max_index >= count {
            return Err(perr(format!("tensor `{name}` reads past its storage")));
        }
        let read = |i: usize| -> f32 {
            let p = start + i * es;
            if es == 4 {
                f32::from_le_bytes(data[p..p + 4].try_into().expect("4 bytes"))
            } else {
                f64::from_le_bytes(data[p..p + 8].try_into().expect("8 bytes")) as f32
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
