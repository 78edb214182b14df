//! Weight matrices and the linear maps, embedding and unembedding built on them, kept compact.
//!
//! A checkpoint's matrices can be held two ways:
//!
//! - **dense**: a burn tensor on the device, `[in, out]`, so a projection is one plain matmul.
//!   This is what CUDA wants (device memory is the fast path there) and what float32 checkpoints
//!   and [`Model::random`](crate::Model::random) give.
//! - **packed** ([`PackedMatrix`]): the checkpoint's own rows, `[out, in]`, as bytes on the host —
//!   ggml quantised blocks from a GGUF, or bf16/f16 elements from safetensors — borrowed from the
//!   memory-mapped file through an [`Arc`], so loading copies nothing. A forward pass dequantises
//!   the rows into float32 just before its matmul, at most [`CHUNK_ELEMENTS`] at a time, and drops
//!   them after.
//!
//! Why dequantise per matmul instead of once at load: a Q4_K weight is 4.5 bits, its f32
//! expansion 32, so expanding everything made Qwen2.5-1.5B need 9 GB where the file is 1.1 GB.
//! Decoding a block is a few shifts and one multiply-add per weight, far less than the `2·N`
//! flops the matmul then spends on it for a prompt of `N` tokens, so on the CPU the cost is small
//! for prompts (measured in the note of issue 12) while memory becomes the file size plus one
//! chunk. The matmul itself is the same [`exact_f32::matmul`] on the same f32 values, so packed
//! and dense weights give the same logits up to summation order.
//!
//! Packed rows are also what the loaders manipulate instead of floats: fusing q | k | v or
//! gate | up stacks whole rows (a [`PackedMatrix`] is a list of parts, each with its own ggml type,
//! since a Q4_K_M file mixes Q4_K and Q6_K inside one fused projection), llama's GGUF q/k
//! un-permutation reorders whole rows (each row is a whole number of blocks), the token embedding
//! gathers and decodes only the rows of the tokens in the batch, and the output head (151,936 ×
//! 1,536 for Qwen2.5, 262,144 × 640 for Gemma 3) is decoded in chunks of vocabulary rows.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use crate::error::{ProbeError, Result};
use crate::gguf::GgmlType;
use crate::quant::dequantize_blocks;
use crate::weights::HostTensor;

/// Largest number of f32 weights a packed matmul decodes at once (64 MiB): the transient memory
/// of a forward pass on packed weights, whatever the model size. Large enough that each chunk's
/// matmul is still a big, efficient GEMM (≥ 10,000 output columns for d = 1,536).
pub const CHUNK_ELEMENTS: usize = 1 << 24;

/// Where a loaded model keeps its weight matrices (norm weights and biases are always small dense
/// f32 tensors).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightStorage {
    /// [`Compact`](Self::Compact) on host backends (Flex, ndarray, cubecl's CPU runtime) and
    /// [`F32`](Self::F32) on accelerators, unless the environment variable `ICLGDD_WEIGHTS` says
    /// `compact` or `f32`.
    #[default]
    Auto,
    /// Quantised and half-precision matrices stay packed on the host (see the module docs);
    /// float32 ones are dense.
    Compact,
    /// Every matrix expanded to a dense float32 device tensor (the layout before compact weights,
    /// and the fast one on a GPU).
    F32,
}

impl WeightStorage {
    /// [`Auto`](Self::Auto) made concrete for backend `B`.
    pub fn resolve<B: Backend>(self, device: &B::Device) -> Result<WeightStorage> {
        if self != Self::Auto {
            return Ok(self);
        }
        if let Ok(v) = std::env::var("ICLGDD_WEIGHTS") {
            return match v.to_ascii_lowercase().as_str() {
                "compact" => Ok(Self::Compact),
                "f32" => Ok(Self::F32),
                "" | "auto" => Ok(Self::auto_for::<B>(device)),
                other => Err(ProbeError::Config {
                    origin: "environment variable ICLGDD_WEIGHTS".into(),
                    msg: format!("`{other}` is not one of compact, f32, auto"),
                }),
            };
        }
        Ok(Self::auto_for::<B>(device))
    }

    /// Packed weights are decoded on the host and uploaded per matmul: free on a host backend,
    /// a PCIe transfer of every weight per forward pass on a GPU.
    fn auto_for<B: Backend>(device: &B::Device) -> WeightStorage {
        let name = B::name(device).to_ascii_lowercase();
        if ["flex", "ndarray", "cpu"].iter().any(|h| name.contains(h)) {
            Self::Compact
        } else {
            Self::F32
        }
    }
}

/// Options for [`crate::load_model_with`] and [`crate::Model::load_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub weights: WeightStorage,
}

/// Identity of a byte buffer: owner address and range.
type BufferKey = (usize, usize, usize);

/// What a layer stores: dense bytes, and each packed buffer's identity and length.
type Storage = (usize, Vec<(BufferKey, usize)>);

/// Bytes kept alive by their owner: a memory-mapped file, or an owned buffer.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl SharedBytes {
    pub fn owned(bytes: Vec<u8>) -> Self {
        let range = 0..bytes.len();
        Self {
            owner: Arc::new(bytes),
            range,
        }
    }

    /// The part of `owner`'s bytes that `inner` is (a slice borrowed from `owner`), or `None` if
    /// `inner` does not lie inside them.
    pub fn within(owner: Arc<dyn AsRef<[u8]> + Send + Sync>, inner: &[u8]) -> Option<Self> {
        let outer = (*owner).as_ref();
        let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
        let end = start.checked_add(inner.len())?;
        (end <= outer.len()).then(|| Self {
            owner: owner.clone(),
            range: start..end,
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// Identity of the bytes (owner and range), to count shared storage once.
    fn key(&self) -> BufferKey {
        (
            Arc::as_ptr(&self.owner) as *const u8 as usize,
            self.range.start,
            self.range.end,
        )
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedBytes({} bytes)", self.len())
    }
}

/// Consecutive rows of one ggml type.
#[derive(Clone, Debug)]
struct PackedPart {
    ty: GgmlType,
    rows: usize,
    bytes: SharedBytes,
}

/// A `[rows, cols]` matrix stored as the checkpoint's rows (`[out, in]` for a linear map), each row
/// `cols / block` ggml blocks. Parts stacked along the rows may have different types.
#[derive(Clone, Debug)]
pub struct PackedMatrix {
    parts: Vec<PackedPart>,
    rows: usize,
    cols: usize,
}

/// Bytes of one row of `cols` elements of type `ty`.
fn row_bytes(ty: GgmlType, cols: usize) -> usize {
    let (block, block_bytes) = ty.block();
    cols / block * block_bytes
}

/// Decode one row (`x`: its bytes, `y`: its `cols` elements).
fn decode_row(ty: GgmlType, x: &[u8], y: &mut [f32]) {
    match ty {
        // Element types get plain loops (the per-block call would dominate for 1-element blocks).
        GgmlType::F32 => {
            for (v, c) in y.iter_mut().zip(x.chunks_exact(4)) {
                *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (v, c) in y.iter_mut().zip(x.chunks_exact(2)) {
                *v = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (v, c) in y.iter_mut().zip(x.chunks_exact(2)) {
                *v = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        _ => dequantize_blocks(ty, x, y),
    }
}

impl PackedMatrix {
    /// `rows` rows of `cols` elements of type `ty`; `bytes` must hold exactly that many blocks.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: SharedBytes) -> Result<Self> {
        let (block, _) = ty.block();
        if !cols.is_multiple_of(block) {
            return Err(ProbeError::BadInput(format!(
                "a packed {} matrix needs rows of whole blocks: {cols} columns, block {block}",
                ty.name()
            )));
        }
        let want = rows * row_bytes(ty, cols);
        if bytes.len() != want {
            return Err(ProbeError::BadInput(format!(
                "a packed {} matrix [{rows}, {cols}] needs {want} bytes, got {}",
                ty.name(),
                bytes.len()
            )));
        }
        Ok(Self {
            parts: vec![PackedPart { ty, rows, bytes }],
            rows,
            cols,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }
    /// The ggml types of the parts, top to bottom.
    pub fn types(&self) -> Vec<GgmlType> {
        self.parts.iter().map(|p| p.ty).collect()
    }

    /// (part, row within it) of row `r`.
    fn locate(&self, mut r: usize) -> (&PackedPart, usize) {
        for p in &self.parts {
            if r < p.rows {
                return (p, r);
            }
            r -= p.rows;
        }
        unreachable!("row index checked by the caller")
    }

    /// The bytes and type of row `r`.
    fn row(&self, r: usize) -> (GgmlType, &[u8]) {
        let (p, i) = self.locate(r);
        let rb = row_bytes(p.ty, self.cols);
        (p.ty, &p.bytes.as_slice()[i * rb..(i + 1) * rb])
    }

    /// Decode the rows `order[i]` into row `i` of `out` (`order.len() · cols` floats), in parallel.
    fn decode_rows_into(&self, order: impl Fn(usize) -> usize + Sync, out: &mut [f32]) {
        let cols = self.cols;
        // Tasks of at least ~32k weights: enough to amortise rayon, small enough to balance.
        let rows_per_task = (32_768 / cols.max(1)).max(1);
        out.par_chunks_mut(cols * rows_per_task)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (j, y) in chunk.chunks_exact_mut(cols).enumerate() {
                    let (ty, x) = self.row(order(task * rows_per_task + j));
                    decode_row(ty, x, y);
                }
            });
    }

    /// Decode rows `range` into `out` (`range.len() · cols` floats) on the calling thread: what
    /// [`crate::packed_gemm`] runs per tile, into a buffer it reuses.
    pub(crate) fn decode_rows_to(&self, range: Range<usize>, out: &mut [f32]) {
        debug_assert_eq!(out.len(), range.len() * self.cols);
        for (r, y) in range.zip(out.chunks_exact_mut(self.cols)) {
            let (ty, x) = self.row(r);
            decode_row(ty, x, y);
        }
    }

    /// Rows `range` as f32, row-major `[range.len(), cols]`.
    pub fn dequantize_rows(&self, range: Range<usize>) -> Vec<f32> {
        assert!(
            range.end <= self.rows,
            "row range {range:?} of {}",
            self.rows
        );
        let mut out = vec![0f32; range.len() * self.cols];
        self.decode_rows_into(|i| range.start + i, &mut out);
        out
    }

    /// Rows `ids` (in that order, repeats allowed) as f32 `[ids.len(), cols]`: an embedding
    /// lookup that decodes only what it returns.
    pub fn gather_rows(&self, ids: &[usize]) -> Result<Vec<f32>> {
        if let Some(&bad) = ids.iter().find(|&&i| i >= self.rows) {
            return Err(ProbeError::BadInput(format!(
                "row {bad} of a matrix with {} rows",
                self.rows
            )));
        }
        let mut out = vec![0f32; ids.len() * self.cols];
        self.decode_rows_into(|i| ids[i], &mut out);
        Ok(out)
    }

    /// The whole matrix as f32.
    pub fn dequantize(&self) -> HostTensor {
        HostTensor::new(
            vec![self.rows, self.cols],
            self.dequantize_rows(0..self.rows),
        )
    }

    /// Row `i` of the result is row `order[i]` of `self`: the rows' bytes are copied, never
    /// decoded (llama.cpp's q/k permutation is a permutation of whole rows).
    pub fn permute_rows(&self, order: &[usize]) -> Result<Self> {
        if order.len() != self.rows || order.iter().any(|&r| r >= self.rows) {
            return Err(ProbeError::BadInput(format!(
                "a row order of length {} for a matrix with {} rows",
                order.len(),
                self.rows
            )));
        }
        // Consecutive output rows of one type share a part.
        let mut parts: Vec<(GgmlType, usize, Vec<u8>)> = Vec::new();
        for &src in order {
            let (ty, bytes) = self.row(src);
            match parts.last_mut() {
                Some((t, n, buf)) if *t == ty => {
                    *n += 1;
                    buf.extend_from_slice(bytes);
                }
                _ => parts.push((ty, 1, bytes.to_vec())),
            }
        }
        Ok(Self {
            parts: parts
                .into_iter()
                .map(|(ty, rows, buf)| PackedPart {
                    ty,
                    rows,
                    bytes: SharedBytes::owned(buf),
                })
                .collect(),
            rows: self.rows,
            cols: self.cols,
        })
    }

    /// Stack matrices with the same number of columns (no bytes copied).
    pub fn cat_rows(mats: Vec<PackedMatrix>) -> Result<Self> {
        let cols = mats.first().map_or(0, |m| m.cols);
        if let Some(m) = mats.iter().find(|m| m.cols != cols) {
            return Err(ProbeError::BadInput(format!(
                "stacking matrices of {} and {cols} columns",
                m.cols
            )));
        }
        Ok(Self {
            rows: mats.iter().map(|m| m.rows).sum(),
            cols,
            parts: mats.into_iter().flat_map(|m| m.parts).collect(),
        })
    }

    /// Bytes held, and the identities of the buffers (to count shared ones once).
    fn storage(&self) -> impl Iterator<Item = (BufferKey, usize)> + '_ {
        self.parts.iter().map(|p| (p.bytes.key(), p.bytes.len()))
    }
}

/// A matrix as a loader produces it: rows `[out, in]` for a linear map, `[vocab, d]` for an
/// embedding.
#[derive(Clone, Debug)]
pub enum HostMatrix {
    Dense(HostTensor),
    Packed(PackedMatrix),
}

impl HostMatrix {
    /// From a matrix stored `[in, out]` (GPT-2's Conv1D, or a freshly drawn random one).
    pub fn from_in_out(t: HostTensor) -> Self {
        Self::Dense(t.transposed())
    }
    pub fn shape(&self) -> [usize; 2] {
        match self {
            Self::Dense(t) => [t.shape[0], t.shape[1]],
            Self::Packed(p) => p.shape(),
        }
    }
    /// f32 rows (decoding a packed matrix).
    pub fn into_dense(self) -> HostTensor {
        match self {
            Self::Dense(t) => t,
            Self::Packed(p) => p.dequantize(),
        }
    }
    /// Stack along the rows: packed parts stay packed (a fused projection of quantised parts);
    /// a mix with dense parts is expanded.
    pub fn cat_rows(parts: Vec<HostMatrix>) -> Result<Self> {
        if parts.iter().all(|p| matches!(p, Self::Packed(_))) {
            let packed = parts
                .into_iter()
                .filter_map(|p| match p {
                    Self::Packed(p) => Some(p),
                    Self::Dense(_) => None,
                })
                .collect();
            return PackedMatrix::cat_rows(packed).map(Self::Packed);
        }
        let dense: Vec<HostTensor> = parts.into_iter().map(Self::into_dense).collect();
        Ok(Self::Dense(crate::arch::cat_rows(dense)))
    }
}

/// Host weights of a linear map: `weight` rows `[out, in]`, `bias` `[out]`.
pub(crate) struct HostLinear {
    pub weight: HostMatrix,
    pub bias: Option<HostTensor>,
}

fn to_tensor<B: Backend, const D: usize>(t: HostTensor, device: &B::Device) -> Tensor<B, D> {
    let shape: [usize; D] = t.shape.clone().try_into().expect("rank checked by loader");
    Tensor::from_data(TensorData::new(t.data, shape), device)
}

/// A matrix on the device side of a model.
#[derive(Clone, Debug)]
enum Weight<B: Backend> {
    /// `[in, out]`.
    Dense(Tensor<B, 2>),
    /// `[out, in]`, decoded per matmul.
    Packed(PackedMatrix),
}

/// `y = x·W + b` over the rows of `x` (`[N, in]`).
#[derive(Clone, Debug)]
pub(crate) struct Linear<B: Backend> {
    weight: Weight<B>,
    /// `[1, out]`.
    bias: Option<Tensor<B, 2>>,
}

impl<B: Backend> Linear<B> {
    pub fn new(h: HostLinear, storage: WeightStorage, device: &B::Device) -> Self {
        let weight = match (h.weight, storage) {
            (HostMatrix::Packed(p), WeightStorage::Compact) => Weight::Packed(p),
            (m, _) => Weight::Dense(to_tensor(m.into_dense().transposed(), device)),
        };
        Self {
            weight,
            bias: h
                .bias
                .map(|b| to_tensor::<B, 1>(b, device).unsqueeze_dim(0)),
        }
    }

    /// Dense weights are cast now; packed ones are decoded to f32 and cast to the input's dtype
    /// per matmul.
    pub fn cast(self, dtype: DType) -> Self {
        Self {
            weight: match self.weight {
                Weight::Dense(w) => Weight::Dense(w.cast(dtype)),
                p => p,
            },
            bias: self.bias.map(|b| b.cast(dtype)),
        }
    }

    /// The same map with a dense float32 `[in, out]` weight (cast to `dtype`).
    pub fn densify(self, dtype: DType, device: &B::Device) -> Self {
        match self.weight {
            Weight::Packed(p) => Self {
                weight: Weight::Dense(
                    to_tensor::<B, 2>(p.dequantize().transposed(), device).cast(dtype),
                ),
                bias: self.bias,
            },
            _ => self,
        }
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = match &self.weight {
            Weight::Dense(w) => exact_f32::matmul(x, w.clone()),
            // Plain Flex float32: decode tile by tile inside the GEMM, bias included.
            Weight::Packed(p) => {
                match crate::packed_gemm::try_packed_matmul(x, p, self.bias.as_ref()) {
                    Ok(y) => return y,
                    Err(x) => packed_matmul(x, p),
                }
            }
        };
        match &self.bias {
            Some(b) => y + b.clone(),
            None => y,
        }
    }

    /// The product split by input block: `z` is `[N, H, k]` with `H·k` = the input width, and
    /// row `(n, h)` of the result `[N, H, out]` is `z[n, h]·W[h·k..(h+1)·k]`, without the bias.
    /// Summed over `h` it is [`Linear::forward`] minus the bias (TransformerLens's per-head
    /// `hook_result`). A packed weight is decoded whole for this (H·k·out float32 values).
    pub fn forward_split(&self, z: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, h, k] = z.dims();
        let dtype = z.dtype();
        let w = match &self.weight {
            Weight::Dense(w) => w.clone(),
            Weight::Packed(p) => {
                let w = to_tensor::<B, 2>(p.dequantize().transposed(), &z.device());
                if dtype == DType::F32 {
                    w
                } else {
                    w.cast(dtype)
                }
            }
        };
        let out = w.dims()[1];
        // [H, N, k] · [H, k, out] → [H, N, out], one batched product.
        let y = exact_f32::matmul(z.swap_dims(0, 1), w.reshape([h, k, out]));
        debug_assert_eq!(y.dims(), [h, n, out]);
        y.swap_dims(0, 1)
    }

    /// The bias `[1, out]`, if any.
    pub fn bias(&self) -> Option<&Tensor<B, 2>> {
        self.bias.as_ref()
    }

    fn storage(&self) -> Storage {
        let bias = self.bias.as_ref().map_or(0, tensor_bytes);
        match &self.weight {
            Weight::Dense(w) => (tensor_bytes(w) + bias, vec![]),
            Weight::Packed(p) => (bias, p.storage().collect()),
        }
    }
}

fn tensor_bytes<B: Backend, const D: usize>(t: &Tensor<B, D>) -> usize {
    t.shape().num_elements() * t.dtype().size()
}

/// `x·Wᵀ` for packed rows `W` (`[out, in]`): decode at most [`CHUNK_ELEMENTS`] weights, multiply
/// by the transposed view (no copy: the matmul reads strided operands), next chunk; the outputs
/// are joined along the columns.
fn packed_matmul<B: Backend>(x: Tensor<B, 2>, w: &PackedMatrix) -> Tensor<B, 2> {
    let device = x.device();
    let dtype = x.dtype();
    let (rows, cols) = (w.rows, w.cols);
    let rows_per_chunk = (CHUNK_ELEMENTS / cols.max(1)).clamp(1, rows.max(1));
    let mut outs = Vec::with_capacity(rows.div_ceil(rows_per_chunk));
    for r0 in (0..rows).step_by(rows_per_chunk) {
        let r1 = (r0 + rows_per_chunk).min(rows);
        let data = w.dequantize_rows(r0..r1);
        let wt = Tensor::<B, 2>::from_data(TensorData::new(data, [r1 - r0, cols]), &device);
        let wt = if dtype == DType::F32 {
            wt
        } else {
            wt.cast(dtype)
        };
        outs.push(exact_f32::matmul(x.clone(), wt.transpose()));
    }
    if outs.len() == 1 {
        outs.pop().expect("one chunk")
    } else {
        Tensor::cat(outs, 1)
    }
}

/// The token embedding `[vocab, d]`.
#[derive(Clone, Debug)]
pub(crate) enum Embedding<B: Backend> {
    Dense(Tensor<B, 2>),
    /// Rows decoded per lookup, returned in `dtype`.
    Packed {
        table: PackedMatrix,
        dtype: DType,
    },
}

impl<B: Backend> Embedding<B> {
    pub fn new(m: HostMatrix, storage: WeightStorage, device: &B::Device) -> Self {
        match (m, storage) {
            (HostMatrix::Packed(table), WeightStorage::Compact) => Self::Packed {
                table,
                dtype: DType::F32,
            },
            (m, _) => Self::Dense(to_tensor(m.into_dense(), device)),
        }
    }

    pub fn cast(self, dtype: DType) -> Self {
        match self {
            Self::Dense(t) => Self::Dense(t.cast(dtype)),
            Self::Packed { table, .. } => Self::Packed { table, dtype },
        }
    }

    pub fn densify(self, device: &B::Device) -> Self {
        match self {
            Self::Packed { table, dtype } => {
                Self::Dense(to_tensor::<B, 2>(table.dequantize(), device).cast(dtype))
            }
            d => d,
        }
    }

    /// Rows `ids` (each `< vocab`, checked by the caller) as `[ids.len(), d]`.
    pub fn lookup(&self, ids: &[u32], device: &B::Device) -> Result<Tensor<B, 2>> {
        match self {
            Self::Dense(t) => {
                let idx: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
                let idx = Tensor::<B, 1, burn::tensor::Int>::from_data(
                    TensorData::new(idx, [ids.len()]),
                    device,
                );
                Ok(t.clone().select(0, idx))
            }
            Self::Packed { table, dtype } => {
                let idx: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
                let rows = table.gather_rows(&idx)?;
                let x = Tensor::<B, 2>::from_data(
                    TensorData::new(rows, [ids.len(), table.cols]),
                    device,
                );
                Ok(if *dtype == DType::F32 {
                    x
                } else {
                    x.cast(*dtype)
                })
            }
        }
    }

    fn storage(&self) -> Storage {
        match self {
            Self::Dense(t) => (tensor_bytes(t), vec![]),
            Self::Packed { table, .. } => (0, table.storage().collect()),
        }
    }
}

/// How much memory a model's matrices take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightBytes {
    /// Dense device tensors of the linear maps and embeddings (norm weights not counted).
    pub dense: usize,
    /// Packed host bytes, each buffer counted once (a tied head shares the embedding's).
    pub packed: usize,
}

/// Sum the storage of a model's embeddings and linear maps.
pub(crate) fn weight_bytes<'a, B: Backend + 'a>(
    embed: &Embedding<B>,
    linears: impl Iterator<Item = &'a Linear<B>>,
) -> WeightBytes {
    let mut seen = HashSet::new();
    let mut total = WeightBytes::default();
    let mut add = |(dense, packed): Storage| {
        total.dense += dense;
        for (key, n) in packed {
            if seen.insert(key) {
                total.packed += n;
            }
        }
    };
    add(embed.storage());
    linears.for_each(|l| add(l.storage()));
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    /// A Q8_0 matrix with d = 1/64 and quants `(r·7 + c) mod 255 − 127`: exact in f32.
    fn q8_matrix(rows: usize, cols: usize) -> (PackedMatrix, Vec<f32>) {
        let d = half::f16::from_f32(1.0 / 64.0);
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for r in 0..rows {
            for b in 0..cols / 32 {
                bytes.extend(d.to_le_bytes());
                for j in 0..32 {
                    let q = ((r * 7 + b * 32 + j) % 255) as i32 - 127;
                    bytes.push(q as i8 as u8);
                    want.push(q as f32 / 64.0);
                }
            }
        }
        let m = PackedMatrix::new(GgmlType::Q8_0, rows, cols, SharedBytes::owned(bytes)).unwrap();
        (m, want)
    }

    #[test]
    fn rows_gather_permute_and_stack_decode_the_right_rows() {
        let (m, want) = q8_matrix(5, 64);
        assert_eq!(m.dequantize().data, want);
        assert_eq!(m.dequantize_rows(2..4), want[2 * 64..4 * 64].to_vec());
        let g = m.gather_rows(&[4, 0, 4]).unwrap();
        assert_eq!(&g[..64], &want[4 * 64..5 * 64]);
        assert_eq!(&g[64..128], &want[..64]);
        assert_eq!(&g[128..], &want[4 * 64..5 * 64]);
        assert!(m.gather_rows(&[5]).is_err());

        let p = m.permute_rows(&[3, 1, 4, 0, 2]).unwrap();
        let pd = p.dequantize().data;
        for (i, &src) in [3, 1, 4, 0, 2].iter().enumerate() {
            assert_eq!(&pd[i * 64..(i + 1) * 64], &want[src * 64..(src + 1) * 64]);
        }
        assert!(m.permute_rows(&[0, 1]).is_err());

        // Stacking a Q8_0 and an f32 part: one matrix, each part decoded by its own type.
        let f: Vec<f32> = (0..128).map(|i| i as f32 * 0.5).collect();
        let fb: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        let fm = PackedMatrix::new(GgmlType::F32, 2, 64, SharedBytes::owned(fb)).unwrap();
        let s = PackedMatrix::cat_rows(vec![m.clone(), fm]).unwrap();
        assert_eq!(s.shape(), [7, 64]);
        let sd = s.dequantize().data;
        assert_eq!(&sd[..5 * 64], &want[..]);
        assert_eq!(&sd[5 * 64..], &f[..]);
        // Rows across the part boundary, and a permutation mixing the types.
        assert_eq!(s.dequantize_rows(4..6)[64..], f[..64]);
        let sp = s.permute_rows(&[5, 0, 6, 1, 2, 3, 4]).unwrap();
        assert_eq!(sp.types().len(), 4);
        assert_eq!(sp.dequantize().data[..64], f[..64]);

        assert!(PackedMatrix::new(GgmlType::Q8_0, 2, 48, SharedBytes::owned(vec![])).is_err());
        assert!(PackedMatrix::new(GgmlType::Q8_0, 2, 64, SharedBytes::owned(vec![0; 10])).is_err());
    }

    #[test]
    fn shared_bytes_borrow_inside_their_owner() {
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new((0u8..100).collect::<Vec<u8>>());
        let inner = &(*owner).as_ref()[10..30];
        let s = SharedBytes::within(owner.clone(), inner).unwrap();
        assert_eq!(s.as_slice(), &(10u8..30).collect::<Vec<u8>>()[..]);
        let elsewhere = [1u8, 2, 3];
        assert!(SharedBytes::within(owner, &elsewhere).is_none());
    }

    /// A packed matmul in several chunks equals the dense f32 matmul of the decoded matrix
    /// (same products; only the summation order inside the GEMM may differ).
    #[test]
    fn chunked_packed_matmul_equals_dense() {
        let device = Default::default();
        // 600 rows of 32 768 columns: CHUNK_ELEMENTS / 32 768 = 512 rows per chunk, so 2 chunks.
        let (rows, cols) = (600, 32_768);
        let (m, w) = q8_matrix(rows, cols);
        let n = 3;
        let xs: Vec<f32> = (0..n * cols)
            .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
            .collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(xs.clone(), [n, cols]), &device);
        let got = packed_matmul(x.clone(), &m)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let dense = Tensor::<B, 2>::from_data(TensorData::new(w, [rows, cols]), &device);
        let want = x
            .matmul(dense.transpose())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(got.len(), n * rows);
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        assert!(err <= 1e-5 * scale, "max |Δ| {err} (max |y| {scale})");
    }

    /// The fused tile-by-tile kernel (plain Flex float32) equals the generic decode-then-matmul
    /// path up to summation order, with and without a bias, for one token and for many, a matrix
    /// smaller than a tile and one of many tiles with a ragged last one.
    #[test]
    fn fused_packed_matmul_equals_generic() {
        let device = Default::default();
        for (rows, cols, n) in [(5, 64, 1), (37, 96, 3), (1000, 256, 130)] {
            let (m, _) = q8_matrix(rows, cols);
            let xs: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 31 % 101) as f32 - 50.0) / 101.0)
                .collect();
            let x = Tensor::<B, 2>::from_data(TensorData::new(xs, [n, cols]), &device);
            let bias: Vec<f32> = (0..rows).map(|i| i as f32 * 0.25 - 3.0).collect();
            let bias = Tensor::<B, 1>::from_data(TensorData::new(bias, [rows]), &device)
                .unsqueeze_dim::<2>(0);
            for b in [None, Some(&bias)] {
                let fused = crate::packed_gemm::try_packed_matmul(x.clone(), &m, b)
                    .expect("plain Flex float32 takes the fused kernel");
                let mut want = packed_matmul(x.clone(), &m);
                if let Some(b) = b {
                    want = want + b.clone();
                }
                assert_eq!(fused.dims(), [n, rows]);
                let got = fused.into_data().to_vec::<f32>().unwrap();
                let want = want.into_data().to_vec::<f32>().unwrap();
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
                assert!(err <= 1e-5 * scale, "[{rows}, {cols}] n {n}: max |Δ| {err}");
            }
        }
        // Another dtype goes back to the caller unchanged.
        let (m, _) = q8_matrix(5, 64);
        let x = Tensor::<B, 2>::zeros([2, 64], &device).cast(DType::F16);
        assert!(crate::packed_gemm::try_packed_matmul(x, &m, None).is_err());
    }

    #[test]
    fn embedding_gather_equals_dense_select() {
        let device = Default::default();
        let (m, want) = q8_matrix(40, 64);
        let packed = Embedding::<B>::new(
            HostMatrix::Packed(m.clone()),
            WeightStorage::Compact,
            &device,
        );
        let dense = Embedding::<B>::new(HostMatrix::Packed(m), WeightStorage::F32, &device);
        assert!(matches!(packed, Embedding::Packed { .. }));
        assert!(matches!(dense, Embedding::Dense(_)));
        let ids = [39u32, 0, 7, 7, 12];
        let a = packed
            .lookup(&ids, &device)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let b = dense
            .lookup(&ids, &device)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[64..128], &want[..64]);
        // bf16 stream: rows come back in the stream dtype.
        let t = packed.cast(DType::BF16).lookup(&ids, &device).unwrap();
        assert_eq!(t.dtype(), DType::BF16);
    }
}
