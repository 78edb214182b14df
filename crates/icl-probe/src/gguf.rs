//! GGUF reader: header, metadata, tensor infos, raw tensor bytes, and dequantisation to f32.
//!
//! Written from the GGUF spec (llama.cpp `docs/gguf.md`). Everything is bounds-checked: a corrupt
//! or truncated file gives a [`GgufError`], never a panic or a short read. The block types and
//! their dequantisation live in [`crate::quant`] and are re-exported here.

use std::collections::BTreeMap;
use std::path::Path;

pub use crate::quant::{dequantize, dequantize_block, GgmlType, SUPPORTED_TYPES};

/// What went wrong while reading a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file (magic {0:#010x})")]
    BadMagic(u32),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("file truncated while reading {what} at byte {offset}")]
    Truncated { what: String, offset: usize },
    #[error("invalid metadata value type {type_id} for key `{key}`")]
    BadValueType { key: String, type_id: u32 },
    #[error("string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: usize },
    #[error(
        "tensor `{tensor}` has unsupported quantisation type {type_name} (ggml id {type_id}); \
         supported: {SUPPORTED_TYPES} (the i-quants IQ*, ternary TQ* and fp4 types are not)"
    )]
    UnknownQuantType {
        tensor: String,
        type_id: u32,
        type_name: String,
    },
    #[error(
        "tensor `{tensor}` has {n_elements} elements, not a multiple of the block size {block}"
    )]
    BadBlockCount {
        tensor: String,
        n_elements: usize,
        block: usize,
    },
    #[error("tensor `{tensor}` data truncated: needs bytes {start}..{end}, file has {available}")]
    TruncatedTensorData {
        tensor: String,
        start: usize,
        end: usize,
        available: usize,
    },
    #[error("{type_name} data for {n_elements} elements must be {expected} bytes, got {got}")]
    DataLength {
        type_name: &'static str,
        n_elements: usize,
        expected: usize,
        got: usize,
    },
    #[error("tensor `{0}` not in file")]
    MissingTensor(String),
    #[error("metadata key `{key}`: {msg}")]
    Metadata { key: String, msg: String },
    #[error(
        "metadata key `{key}`: arrays nested deeper than {limit} levels (real files nest at most \
         2; a deeper nesting is corrupt or hostile)"
    )]
    TooDeep { key: String, limit: usize },
}

/// How deep metadata arrays may nest. The GGUF spec allows arrays of arrays, and llama.cpp's
/// files use at most one level (token lists); every level costs a stack frame here, so a file of
/// nothing but array headers would otherwise overflow the stack.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// The fewest bytes one metadata value of `type_id` can take in the file (an array: its element
/// type and count), so a declared count can be checked against the bytes left before anything is
/// allocated for it.
fn min_value_bytes(type_id: u32) -> usize {
    match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => 1,
    }
}

/// The fewest bytes one tensor-info entry takes: name length, dimension count, type, offset.
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 4 + 8;

type GResult<T> = std::result::Result<T, GgufError>;

/// A metadata value (GGUF value types 0..=12).
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// Any integer type as u64 (negative values give `None`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor-info table.
#[derive(Clone, Debug)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` (ne0) is the innermost, contiguous dimension.
    pub dims: Vec<u64>,
    pub type_id: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Row-major shape (ggml dims reversed): a GGUF `[in, out]` matrix is a torch `[out, in]` one.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
    pub fn n_elements(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
}

/// A parsed GGUF file, memory-mapped.
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    data_offset: usize,
    data: Bytes,
}

enum Bytes {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mmap(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> GResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos,
            }),
        }
    }
    fn u8(&mut self, what: &str) -> GResult<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> GResult<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> GResult<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> GResult<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn len(&mut self, what: &str) -> GResult<usize> {
        self.count(what, 1)
    }
    /// A count of items that take at least `min_bytes` each, checked against the bytes left.
    fn count(&mut self, what: &str, min_bytes: usize) -> GResult<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        // A count larger than the bytes left can hold is corruption, not a reason to allocate
        // terabytes.
        let left = (self.buf.len() - self.pos) / min_bytes.max(1);
        if n > left as u64 {
            return Err(GgufError::Truncated {
                what: format!("{what} (count {n})"),
                offset: at,
            });
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> GResult<String> {
        let n = self.len(what)?;
        let at = self.pos;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 { offset: at })
    }
    fn value(&mut self, key: &str, type_id: u32) -> GResult<GgufValue> {
        self.value_at(key, type_id, 0)
    }
    fn value_at(&mut self, key: &str, type_id: u32, depth: usize) -> GResult<GgufValue> {
        Ok(match type_id {
            0 => GgufValue::U8(self.u8(key)?),
            1 => GgufValue::I8(self.u8(key)? as i8),
            2 => GgufValue::U16(self.u16(key)?),
            3 => GgufValue::I16(self.u16(key)? as i16),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(self.u32(key)? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32(key)?)),
            7 => GgufValue::Bool(self.u8(key)? != 0),
            8 => GgufValue::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::TooDeep {
                        key: key.to_string(),
                        limit: MAX_ARRAY_DEPTH,
                    });
                }
                let elem_type = self.u32(key)?;
                let n = self.count(key, min_value_bytes(elem_type))?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value_at(key, elem_type, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(self.u64(key)? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64(key)?)),
            t => {
                return Err(GgufError::BadValueType {
                    key: key.to_string(),
                    type_id: t,
                })
            }
        })
    }
}

/// The whole file: what [`GgufFile::tensor_bytes`] slices, and what packed weights
/// ([`crate::linear::SharedBytes`]) keep alive, so a model borrows the mapped file instead of
/// copying its tensors.
impl AsRef<[u8]> for GgufFile {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl GgufFile {
    /// Memory-map and parse a file.
    pub fn open(path: &Path) -> std::result::Result<Self, GgufError> {
        // A FIFO or device is refused without blocking (the workspace's one check).
        let file = formats::open_input(path).map_err(|e| match e {
            formats::FormatError::Io { source, .. } => GgufError::Io(source),
            other => GgufError::Io(std::io::Error::other(other.to_string())),
        })?;
        // SAFETY: the map is read-only and lives as long as the GgufFile; model files are not
        // expected to be modified while loaded (the same contract as safetensors/candle).
        let mmap = unsafe { memmap2::Mmap::map(&file)? };
        Self::parse(Bytes::Mmap(mmap))
    }

    /// Parse an in-memory file (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> std::result::Result<Self, GgufError> {
        Self::parse(Bytes::Owned(bytes))
    }

    fn parse(data: Bytes) -> GResult<Self> {
        let mut r = Reader { buf: &data, pos: 0 };
        let magic = r.u32("magic")?;
        if magic != 0x4655_4747 {
            return Err(GgufError::BadMagic(magic));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = r.count("tensor count", MIN_TENSOR_INFO_BYTES)?;
        let n_kv = r.len("metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let t = r.u32(&key)?;
            let v = r.value(&key, t)?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)? as usize;
            if n_dims > 8 {
                return Err(GgufError::Metadata {
                    key: name,
                    msg: format!("{n_dims} dimensions"),
                });
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(r.u64(&name)?);
            }
            // The element count is a product of file-given numbers: one that overflows would
            // wrap to a small size in release builds and slip past every later bounds check.
            if dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
                .is_none()
            {
                return Err(GgufError::Metadata {
                    key: name,
                    msg: format!("dimensions {dims:?} overflow the element count"),
                });
            }
            let type_id = r.u32(&name)?;
            let offset = r.u64(&name)?;
            tensors.push(GgufTensorInfo {
                name,
                dims,
                type_id,
                offset,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .unwrap_or(32)
            .max(1) as usize;
        let data_offset = r.pos.div_ceil(alignment) * alignment;
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            data_offset,
            data,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The ggml type of one tensor, or a typed error naming the unsupported type.
    pub fn tensor_type(&self, info: &GgufTensorInfo) -> GResult<GgmlType> {
        GgmlType::from_id(info.type_id).map_err(|n| GgufError::UnknownQuantType {
            tensor: info.name.clone(),
            type_id: info.type_id,
            type_name: n.to_string(),
        })
    }

    /// The raw (still quantised) bytes of one tensor, exactly `n_elements / block · block_bytes`
    /// long, borrowed from the mapped file.
    ///
    /// This is what a compact weight store keeps instead of an f32 copy; bounds are checked here so
    /// a corrupt offset or a truncated file is a [`GgufError`], never a panic.
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> GResult<&[u8]> {
        let ty = self.tensor_type(info)?;
        let n = info.n_elements();
        let (block, block_bytes) = ty.block();
        if !n.is_multiple_of(block) {
            return Err(GgufError::BadBlockCount {
                tensor: info.name.clone(),
                n_elements: n,
                block,
            });
        }
        let nbytes = n / block * block_bytes;
        let start = usize::try_from(info.offset)
            .ok()
            .and_then(|o| self.data_offset.checked_add(o));
        let end = start.and_then(|s| s.checked_add(nbytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.data.len() => Ok(&self.data[s..e]),
            _ => Err(GgufError::TruncatedTensorData {
                tensor: info.name.clone(),
                start: start.unwrap_or(usize::MAX),
                end: end.unwrap_or(usize::MAX),
                available: self.data.len(),
            }),
        }
    }

    /// Dequantise one tensor to f32, row-major with shape [`GgufTensorInfo::shape`].
    pub fn dequantize(&self, info: &GgufTensorInfo) -> GResult<Vec<f32>> {
        let ty = self.tensor_type(info)?;
        dequantize(ty, self.tensor_bytes(info)?, info.n_elements())
    }
}

/// The row order that undoes llama.cpp's rotary permutation of a Q or K projection with `rows`
/// output rows: HF row `i` is GGUF row `order[i]`.
///
/// `convert_hf_to_gguf.py` interleaves each head's two rotate-half halves into adjacent pairs so
/// GGML's "normal" rope applies; HF's rotate_half rope needs them back:
/// HF row `h·dh + half·dh/2 + i` ← GGUF row `h·dh + 2i + half`. Whole rows move, so quantised
/// rows are reordered without decoding them ([`crate::linear::PackedMatrix::permute_rows`]).
pub fn qk_row_order(rows: usize, n_head: usize) -> Vec<usize> {
    let dh = rows / n_head;
    let halfd = dh / 2;
    let mut order = vec![0; rows];
    for h in 0..n_head {
        for half in 0..2 {
            for i in 0..halfd {
                order[h * dh + half * halfd + i] = h * dh + 2 * i + half;
            }
        }
    }
    order
}

/// [`qk_row_order`] applied to an f32 matrix `[rows, cols]`.
pub fn unpermute_qk(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    qk_row_order(rows, n_head)
        .into_iter()
        .flat_map(|src| &w[src * cols..(src + 1) * cols])
        .copied()
        .collect()
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_matches_notes() {
        // 1 head, dh = 4, cols = 1: GGUF rows [a0 b0 a1 b1] → HF rows [a0 a1 b0 b1]
        let w = [0.0, 10.0, 1.0, 11.0];
        assert_eq!(unpermute_qk(&w, 4, 1, 1), vec![0.0, 1.0, 10.0, 11.0]);
    }

    fn minimal_file(type_id: u32, data: &[u8], dims: &[u64]) -> Vec<u8> {
        let mut b = vec![];
        b.extend(0x4655_4747u32.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(1u64.to_le_bytes()); // kv
        let key = b"general.architecture";
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key);
        b.extend(8u32.to_le_bytes());
        b.extend(5u64.to_le_bytes());
        b.extend(b"llama");
        let name = b"t";
        b.extend((name.len() as u64).to_le_bytes());
        b.extend(name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(type_id.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend(data);
        b
    }

    #[test]
    fn parses_minimal_file_and_reports_typed_errors() {
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let f = GgufFile::from_bytes(minimal_file(0, &data, &[2])).unwrap();
        assert_eq!(
            f.get("general.architecture").unwrap().as_str(),
            Some("llama")
        );
        let t = f.tensor_info("t").unwrap().clone();
        assert_eq!(f.dequantize(&t).unwrap(), vec![1.0, 2.0]);
        assert_eq!(f.tensor_bytes(&t).unwrap(), &data[..]);

        // truncated tensor data
        let f = GgufFile::from_bytes(minimal_file(0, &data[..4], &[2])).unwrap();
        let t = f.tensor_info("t").unwrap().clone();
        assert!(matches!(
            f.dequantize(&t),
            Err(GgufError::TruncatedTensorData { .. })
        ));
        assert!(matches!(
            f.tensor_bytes(&t),
            Err(GgufError::TruncatedTensorData { .. })
        ));

        // unsupported quant types are named
        for (id, name) in [
            (16, "IQ2_XXS"),
            (23, "IQ4_XS"),
            (29, "IQ1_M"),
            (35, "TQ2_0"),
        ] {
            let f = GgufFile::from_bytes(minimal_file(id, &data, &[256])).unwrap();
            let t = f.tensor_info("t").unwrap().clone();
            let err = f.dequantize(&t).unwrap_err();
            assert!(
                matches!(&err, GgufError::UnknownQuantType { type_id, type_name, .. }
                    if *type_id == id && type_name == name),
                "{err}"
            );
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains("Q5_K"), "{msg}");
            assert!(f.tensor_bytes(&t).is_err());
        }

        // truncated header, bad magic
        let full = minimal_file(0, &data, &[2]);
        assert!(matches!(
            GgufFile::from_bytes(full[..30].to_vec()),
            Err(GgufError::Truncated { .. })
        ));
        assert!(matches!(
            GgufFile::from_bytes(b"GGML0000".to_vec()),
            Err(GgufError::BadMagic(_))
        ));
    }
}
