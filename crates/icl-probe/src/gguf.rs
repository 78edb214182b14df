//! GGUF reader: header, metadata, tensor infos, and dequantisation to f32.
//!
//! Written from the GGUF spec (llama.cpp `docs/gguf.md`) and ggml's block layouts. Everything is
//! bounds-checked: a corrupt or truncated file gives a [`GgufError`], never a panic or a short read.
//! Weights are dequantised once, at load, so the forward pass runs plain f32 matmuls.

use std::collections::BTreeMap;
use std::path::Path;

use half::f16;
use rayon::prelude::*;

/// What went wrong while reading a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
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
    #[error("tensor `{tensor}` has unsupported quantisation type {type_name} (id {type_id}); supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K")]
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
    #[error("tensor `{0}` not in file")]
    MissingTensor(String),
    #[error("metadata key `{key}`: {msg}")]
    Metadata { key: String, msg: String },
}

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

/// ggml tensor types this reader dequantises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl GgmlType {
    /// Map a ggml type id; unsupported ones return their ggml name for the error message.
    pub fn from_id(id: u32) -> std::result::Result<Self, &'static str> {
        match id {
            0 => Ok(Self::F32),
            1 => Ok(Self::F16),
            2 => Ok(Self::Q4_0),
            3 => Ok(Self::Q4_1),
            8 => Ok(Self::Q8_0),
            12 => Ok(Self::Q4K),
            14 => Ok(Self::Q6K),
            30 => Ok(Self::BF16),
            6 => Err("Q5_0"),
            7 => Err("Q5_1"),
            9 => Err("Q8_1"),
            10 => Err("Q2_K"),
            11 => Err("Q3_K"),
            13 => Err("Q5_K"),
            15 => Err("Q8_K"),
            16..=23 => Err("IQ*"),
            24 => Err("I8"),
            25 => Err("I16"),
            26 => Err("I32"),
            27 => Err("I64"),
            28 => Err("F64"),
            29 => Err("IQ1_M"),
            _ => Err("unknown"),
        }
    }
    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
            Self::Q4K => (256, 144),
            Self::Q6K => (256, 210),
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
        let at = self.pos;
        let n = self.u64(what)?;
        // A count larger than the bytes left is corruption, not a reason to allocate terabytes.
        if n > (self.buf.len() - self.pos) as u64 {
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
                let elem_type = self.u32(key)?;
                let n = self.len(key)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(key, elem_type)?);
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

impl GgufFile {
    /// Memory-map and parse a file.
    pub fn open(path: &Path) -> std::io::Result<std::result::Result<Self, GgufError>> {
        let file = std::fs::File::open(path)?;
        // SAFETY: the map is read-only and lives as long as the GgufFile; model files are not
        // expected to be modified while loaded (the same contract as safetensors/candle).
        let mmap = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Self::parse(Bytes::Mmap(mmap)))
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
        let n_tensors = r.len("tensor count")?;
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

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantise `n` elements of type `ty` from `bytes` (exactly `n / block * block_bytes` long).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> GResult<Vec<f32>> {
    let (block, block_bytes) = ty.block();
    debug_assert_eq!(bytes.len(), n / block * block_bytes);
    let mut out = vec![0f32; n];
    // Chunks of many blocks per task: enough work to amortise rayon, small enough to balance.
    let blocks_per_task = (16384 / block).max(1);
    out.par_chunks_mut(block * blocks_per_task)
        .zip(bytes.par_chunks(block_bytes * blocks_per_task))
        .for_each(|(y, x)| {
            for (yb, xb) in y.chunks_exact_mut(block).zip(x.chunks_exact(block_bytes)) {
                dequantize_block(ty, xb, yb);
            }
        });
    Ok(out)
}

/// Decode one block (`x` holds exactly one block's bytes, `y` its elements).
// Index loops mirror ggml's block layouts, which is what makes them checkable against the spec.
#[allow(clippy::needless_range_loop)]
pub fn dequantize_block(ty: GgmlType, x: &[u8], y: &mut [f32]) {
    match ty {
        GgmlType::F32 => y[0] = f32::from_le_bytes([x[0], x[1], x[2], x[3]]),
        GgmlType::F16 => y[0] = f16_at(x, 0),
        GgmlType::BF16 => y[0] = half::bf16::from_le_bytes([x[0], x[1]]).to_f32(),
        GgmlType::Q8_0 => {
            // d (f16) | 32 × int8; w = d·q
            let d = f16_at(x, 0);
            for j in 0..32 {
                y[j] = d * (x[2 + j] as i8) as f32;
            }
        }
        GgmlType::Q4_0 => {
            // d (f16) | 16 bytes of nibbles; low nibbles are elements 0..16, high ones 16..32; w = d·(q−8)
            let d = f16_at(x, 0);
            for j in 0..16 {
                let q = x[2 + j];
                y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
                y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }
        GgmlType::Q4_1 => {
            // d (f16) | m (f16) | 16 bytes of nibbles; w = d·q + m
            let d = f16_at(x, 0);
            let m = f16_at(x, 2);
            for j in 0..16 {
                let q = x[4 + j];
                y[j] = (q & 0x0F) as f32 * d + m;
                y[j + 16] = (q >> 4) as f32 * d + m;
            }
        }
        GgmlType::Q4K => dequantize_q4k(x, y),
        GgmlType::Q6K => dequantize_q6k(x, y),
    }
}

/// 6-bit scale and min of sub-block `j` (0..8) packed in the 12 `scales` bytes of a Q4_K block.
fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K super-block of 256: d (f16) | dmin (f16) | scales[12] | qs[128].
/// Eight sub-blocks of 32 with 6-bit scale/min; w = d·sc·q − dmin·m.
fn dequantize_q4k(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let dmin = f16_at(x, 2);
    let scales = &x[4..16];
    let qs = &x[16..144];
    for j in 0..4 {
        let (sc1, m1) = q4k_scale_min(2 * j, scales);
        let (sc2, m2) = q4k_scale_min(2 * j + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let q = &qs[32 * j..32 * j + 32];
        let out = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            out[l] = d1 * (q[l] & 0x0F) as f32 - min1;
            out[l + 32] = d2 * (q[l] >> 4) as f32 - min2;
        }
    }
}

/// Q6_K super-block of 256: ql[128] | qh[64] | scales[16] (int8) | d (f16).
/// 6-bit q = low 4 bits from ql, high 2 from qh, minus 32; w = d·scale·q (16 scales of 16 elements).
fn dequantize_q6k(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 208);
    for half in 0..2 {
        let ql = &x[64 * half..64 * half + 64];
        let qh = &x[128 + 32 * half..128 + 32 * half + 32];
        let sc = &x[192 + 8 * half..192 + 8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Undo llama.cpp's rotary permutation of a Q or K projection ([out, in], row-major).
///
/// `convert_hf_to_gguf.py` interleaves each head's two rotate-half halves into adjacent pairs so
/// GGML's "normal" rope applies; HF's rotate_half rope needs them back:
/// HF row `h·dh + half·dh/2 + i` ← GGUF row `h·dh + 2i + half`.
pub fn unpermute_qk(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let dh = rows / n_head;
    let halfd = dh / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for half in 0..2 {
            for i in 0..halfd {
                let dst = h * dh + half * halfd + i;
                let src = h * dh + 2 * i + half;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q8_0_block() {
        let mut b = vec![];
        b.extend(h(0.5));
        for j in 0..32i8 {
            b.push((j - 16) as u8);
        }
        let y = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        for j in 0..32 {
            assert_eq!(y[j], 0.5 * (j as f32 - 16.0));
        }
    }

    #[test]
    fn q4_0_block() {
        let mut b = vec![];
        b.extend(h(2.0));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], 2.0 * (j as f32 - 8.0));
            assert_eq!(y[j + 16], 2.0 * ((15 - j) as f32 - 8.0));
        }
    }

    #[test]
    fn q4_1_block() {
        let mut b = vec![];
        b.extend(h(0.25));
        b.extend(h(-1.0));
        for j in 0..16u8 {
            b.push(j | (3 << 4));
        }
        let y = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], 0.25 * j as f32 - 1.0);
            assert_eq!(y[j + 16], 0.25 * 3.0 - 1.0);
        }
    }

    #[test]
    fn f16_bf16_f32() {
        let b: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| h(*v)).collect();
        assert_eq!(dequantize(GgmlType::F16, &b, 2).unwrap(), vec![1.5, -2.0]);
        let b: Vec<u8> = [3.0f32, -0.5]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        assert_eq!(dequantize(GgmlType::BF16, &b, 2).unwrap(), vec![3.0, -0.5]);
        let b: Vec<u8> = [7.25f32].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::F32, &b, 1).unwrap(), vec![7.25]);
    }

    /// Q4_K: sub-block j gets scale j+1 and min j (6-bit packing exercised for j ≥ 4: scales 5..8
    /// need their high bits stored in the top bits of bytes 0..8).
    #[test]
    fn q4_k_block() {
        let sc: [u8; 8] = [1, 2, 3, 4, 37, 46, 55, 63];
        let mn: [u8; 8] = [0, 1, 2, 3, 20, 33, 40, 62];
        let mut scales = [0u8; 12];
        for j in 0..4 {
            scales[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
            scales[j + 4] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6);
            scales[j + 8] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4);
        }
        for j in 0..8 {
            assert_eq!(q4k_scale_min(j, &scales), (sc[j], mn[j]));
        }
        let mut b = vec![];
        b.extend(h(0.5));
        b.extend(h(0.25));
        b.extend(scales);
        for l in 0..128u8 {
            b.push((l % 16) | (((l + 3) % 16) << 4));
        }
        assert_eq!(b.len(), 144);
        let y = dequantize(GgmlType::Q4K, &b, 256).unwrap();
        for j in 0..4 {
            for l in 0..32 {
                let byte = (32 * j + l) as u8;
                let (lo, hi) = ((byte % 16) as f32, ((byte + 3) % 16) as f32);
                let e1 = 0.5 * sc[2 * j] as f32 * lo - 0.25 * mn[2 * j] as f32;
                let e2 = 0.5 * sc[2 * j + 1] as f32 * hi - 0.25 * mn[2 * j + 1] as f32;
                assert_eq!(y[64 * j + l], e1, "j={j} l={l}");
                assert_eq!(y[64 * j + 32 + l], e2, "j={j} l={l}");
            }
        }
    }

    /// Q6_K: build a block from known 6-bit values q(i) = i % 64 and scales s(k) = k − 8.
    #[test]
    fn q6_k_block() {
        let q = |i: usize| (i % 64) as u8;
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            for l in 0..32 {
                let base = 128 * half;
                let (q1, q2, q3, q4) = (
                    q(base + l),
                    q(base + l + 32),
                    q(base + l + 64),
                    q(base + l + 96),
                );
                ql[64 * half + l] = (q1 & 15) | ((q3 & 15) << 4);
                ql[64 * half + l + 32] = (q2 & 15) | ((q4 & 15) << 4);
                qh[32 * half + l] =
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        let mut b = vec![];
        b.extend(ql);
        b.extend(qh);
        for k in 0..16 {
            b.push((k as i8 - 8) as u8);
        }
        b.extend(h(0.125));
        assert_eq!(b.len(), 210);
        let y = dequantize(GgmlType::Q6K, &b, 256).unwrap();
        for i in 0..256 {
            let scale = (i / 16) as f32 - 8.0;
            assert_eq!(y[i], 0.125 * scale * (q(i) as f32 - 32.0), "i={i}");
        }
    }

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

        // unknown quant type
        let f = GgufFile::from_bytes(minimal_file(13, &data, &[256])).unwrap();
        let t = f.tensor_info("t").unwrap().clone();
        assert!(matches!(
            f.dequantize(&t),
            Err(GgufError::UnknownQuantType { type_id: 13, .. })
        ));

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
