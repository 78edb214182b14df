//! ggml block types: sizes, and dequantisation of one block or a run of blocks to f32.
//!
//! Written from ggml's block layouts (`ggml-common.h`) and reference dequantisers
//! (`ggml-quants.c`). Every arithmetic step is the f32 operation ggml (and gguf-py's numpy port)
//! performs, in the same order, so the result is bit-identical to theirs; the golden test
//! `tests/quant_golden.rs` checks that on real tensor slices and synthetic blocks.
//!
//! Layout vocabulary: a *block* is the unit a type stores (32 elements for the legacy types, a
//! 256-element *super-block* for the k-quants); `d` is a scale, `dmin`/`m` a min, `qs` the low
//! bits of the quants and `qh`/`hmask` their high bits.

use half::f16;
use rayon::prelude::*;

use crate::gguf::GgufError;

/// ggml tensor types this reader dequantises (every type llama.cpp writes for ordinary model
/// files). The i-quants, ternary and fp4 types are refused by [`GgmlType::from_id`] with their name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

/// The types [`GgmlType::from_id`] accepts, for error messages.
pub const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";

impl GgmlType {
    /// Map a ggml type id (`enum ggml_type` in `ggml.h`); unsupported ones return their ggml name
    /// for the error message.
    pub fn from_id(id: u32) -> std::result::Result<Self, &'static str> {
        match id {
            0 => Ok(Self::F32),
            1 => Ok(Self::F16),
            2 => Ok(Self::Q4_0),
            3 => Ok(Self::Q4_1),
            6 => Ok(Self::Q5_0),
            7 => Ok(Self::Q5_1),
            8 => Ok(Self::Q8_0),
            10 => Ok(Self::Q2K),
            11 => Ok(Self::Q3K),
            12 => Ok(Self::Q4K),
            13 => Ok(Self::Q5K),
            14 => Ok(Self::Q6K),
            15 => Ok(Self::Q8K),
            30 => Ok(Self::BF16),
            4 => Err("Q4_2 (removed from ggml)"),
            5 => Err("Q4_3 (removed from ggml)"),
            9 => Err("Q8_1"),
            16 => Err("IQ2_XXS"),
            17 => Err("IQ2_XS"),
            18 => Err("IQ3_XXS"),
            19 => Err("IQ1_S"),
            20 => Err("IQ4_NL"),
            21 => Err("IQ3_S"),
            22 => Err("IQ2_S"),
            23 => Err("IQ4_XS"),
            24 => Err("I8"),
            25 => Err("I16"),
            26 => Err("I32"),
            27 => Err("I64"),
            28 => Err("F64"),
            29 => Err("IQ1_M"),
            31 => Err("Q4_0_4_4 (removed from GGUF)"),
            32 => Err("Q4_0_4_8 (removed from GGUF)"),
            33 => Err("Q4_0_8_8 (removed from GGUF)"),
            34 => Err("TQ1_0"),
            35 => Err("TQ2_0"),
            36 => Err("IQ4_NL_4_4 (removed from GGUF)"),
            37 => Err("IQ4_NL_4_8 (removed from GGUF)"),
            38 => Err("IQ4_NL_8_8 (removed from GGUF)"),
            39 => Err("MXFP4"),
            40 => Err("NVFP4"),
            41 => Err("Q1_0"),
            42 => Err("Q2_0"),
            _ => Err("unknown"),
        }
    }

    /// The ggml id (inverse of [`GgmlType::from_id`]).
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
            Self::BF16 => 30,
        }
    }

    /// The ggml name (`Q4_K`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::Q8K => "Q8_K",
        }
    }

    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q2K => (256, 84),
            Self::Q3K => (256, 110),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
            Self::Q8K => (256, 292),
        }
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantise `n` elements of type `ty` from `bytes`, which must be exactly
/// `n / block · block_bytes` long (a typed error otherwise).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, GgufError> {
    let (block, block_bytes) = ty.block();
    if !n.is_multiple_of(block) {
        return Err(GgufError::BadBlockCount {
            tensor: format!("({} data)", ty.name()),
            n_elements: n,
            block,
        });
    }
    let expected = n / block * block_bytes;
    if bytes.len() != expected {
        return Err(GgufError::DataLength {
            type_name: ty.name(),
            n_elements: n,
            expected,
            got: bytes.len(),
        });
    }
    let mut out = vec![0f32; n];
    // Chunks of many blocks per task: enough work to amortise rayon, small enough to balance.
    let blocks_per_task = (16384 / block).max(1);
    out.par_chunks_mut(block * blocks_per_task)
        .zip(bytes.par_chunks(block_bytes * blocks_per_task))
        .for_each(|(y, x)| {
            dequantize_blocks(ty, x, y);
        });
    Ok(out)
}

/// Decode whole blocks of one type: `x` holds `k` blocks' bytes and `y` their `k · block`
/// elements (a trailing partial block is left alone). Compiled for AVX-512 or AVX2 when the CPU
/// has them, with the type dispatched once per call instead of once per block, so that LLVM
/// vectorises each type's loop: what a packed matmul spends its decoding time in (10-15 % of a
/// SmolLM2 prefill in a profile before this). Same arithmetic as [`dequantize_block`] (it is
/// that function, inlined), so the values are identical.
pub fn dequantize_blocks(ty: GgmlType, x: &[u8], y: &mut [f32]) {
    #[inline(always)]
    fn body(ty: GgmlType, x: &[u8], y: &mut [f32]) {
        macro_rules! each {
            ($($t:ident),*) => {
                match ty {
                    $(GgmlType::$t => {
                        let (block, bytes) = GgmlType::$t.block();
                        for (yb, xb) in y.chunks_exact_mut(block).zip(x.chunks_exact(bytes)) {
                            dequantize_block(GgmlType::$t, xb, yb);
                        }
                    })*
                }
            };
        }
        each!(F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K, Q8K)
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c")]
        unsafe fn avx512(ty: GgmlType, x: &[u8], y: &mut [f32]) {
            body(ty, x, y)
        }
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn avx2(ty: GgmlType, x: &[u8], y: &mut [f32]) {
            body(ty, x, y)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the features were detected at run time (every AVX-512 CPU has F16C).
            return unsafe { avx512(ty, x, y) };
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: as above.
            return unsafe { avx2(ty, x, y) };
        }
    }
    body(ty, x, y)
}

/// Decode one block: `x` holds exactly one block's bytes and `y` its elements
/// ([`GgmlType::block`]). Shorter slices are a caller bug and panic; whole tensors go through
/// [`dequantize`], which checks lengths and returns a typed error instead.
// Index loops mirror ggml's block layouts, which is what makes them checkable against the spec.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
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
        GgmlType::Q5_0 => {
            // d (f16) | qh (u32: bit j is the 5th bit of element j) | 16 bytes of nibbles as Q4_0;
            // w = d·(q−16)
            let d = f16_at(x, 0);
            let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
            for j in 0..16 {
                let (lo, hi) = q5_pair(x[6 + j], qh, j);
                y[j] = (lo as i32 - 16) as f32 * d;
                y[j + 16] = (hi as i32 - 16) as f32 * d;
            }
        }
        GgmlType::Q5_1 => {
            // d (f16) | m (f16) | qh (u32) | 16 bytes of nibbles; w = d·q + m
            let d = f16_at(x, 0);
            let m = f16_at(x, 2);
            let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
            for j in 0..16 {
                let (lo, hi) = q5_pair(x[8 + j], qh, j);
                y[j] = lo as f32 * d + m;
                y[j + 16] = hi as f32 * d + m;
            }
        }
        GgmlType::Q2K => dequantize_q2k(x, y),
        GgmlType::Q3K => dequantize_q3k(x, y),
        GgmlType::Q4K => dequantize_q4k(x, y),
        GgmlType::Q5K => dequantize_q5k(x, y),
        GgmlType::Q6K => dequantize_q6k(x, y),
        GgmlType::Q8K => {
            // d (f32) | 256 × int8 | 16 × i16 block sums (only used by dot products); w = d·q
            let d = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            for j in 0..256 {
                y[j] = d * (x[4 + j] as i8) as f32;
            }
        }
    }
}

/// The two 5-bit quants of byte `j` of a Q5_0/Q5_1 block: the nibbles of `q`, topped with bits
/// `j` and `j + 16` of `qh`.
#[inline(always)]
fn q5_pair(q: u8, qh: u32, j: usize) -> (u8, u8) {
    let h0 = ((qh >> j) & 1) as u8;
    let h1 = ((qh >> (j + 16)) & 1) as u8;
    ((q & 0x0F) | (h0 << 4), (q >> 4) | (h1 << 4))
}

/// Q2_K super-block of 256: scales[16] | qs[64] | d (f16) | dmin (f16).
/// Sixteen sub-blocks of 16, each with a 4-bit scale (low nibble) and 4-bit min (high nibble);
/// 2-bit quants, four per byte: byte l of each 32-byte half holds elements l, l+32, l+64, l+96 of
/// that half's 128 in bit pairs 0-1, 2-3, 4-5, 6-7. w = d·sc·q − dmin·m.
#[inline(always)]
fn dequantize_q2k(x: &[u8], y: &mut [f32]) {
    let scales = &x[0..16];
    let qs = &x[16..80];
    let d = f16_at(x, 80);
    let dmin = f16_at(x, 82);
    for half in 0..2 {
        let q = &qs[32 * half..32 * half + 32];
        for j in 0..4 {
            let shift = 2 * j;
            for sub in 0..2 {
                let sc = scales[8 * half + 2 * j + sub];
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let out = &mut y[128 * half + 32 * j + 16 * sub..][..16];
                for (l, o) in out.iter_mut().enumerate() {
                    *o = dl * ((q[16 * sub + l] >> shift) & 3) as f32 - ml;
                }
            }
        }
    }
}

/// The 6-bit scale of sub-block `j` (0..16) of a Q3_K block, packed in 12 bytes: low 4 bits in
/// the nibbles of bytes 0..8 (sub-blocks 8..16 in the high nibbles), high 2 bits in bytes 8..12
/// (bit pair `j / 4` of byte `8 + j % 4`); stored with an offset of 32.
#[inline(always)]
fn q3k_scale(j: usize, s: &[u8]) -> i32 {
    let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// Q3_K super-block of 256: hmask[32] | qs[64] | scales[12] | d (f16).
/// 2 low bits per quant laid out as in Q2_K; the third bit of element `128·h + 32·j + l` is bit
/// `4h + j` of `hmask[l]` (l in 0..32), and a *clear* bit subtracts 4: q ∈ −4..3. Sixteen signed
/// 6-bit scales; w = d·sc·q.
fn dequantize_q3k(x: &[u8], y: &mut [f32]) {
    let hmask = &x[0..32];
    let qs = &x[32..96];
    let scales = &x[96..108];
    let d = f16_at(x, 108);
    for half in 0..2 {
        let q = &qs[32 * half..32 * half + 32];
        for j in 0..4 {
            let shift = 2 * j;
            let m = 1u8 << (4 * half + j);
            for sub in 0..2 {
                let dl = d * q3k_scale(8 * half + 2 * j + sub, scales) as f32;
                let out = &mut y[128 * half + 32 * j + 16 * sub..][..16];
                for (l, o) in out.iter_mut().enumerate() {
                    let i = 16 * sub + l;
                    let low = ((q[i] >> shift) & 3) as i32;
                    let q3 = low - if hmask[i] & m != 0 { 0 } else { 4 };
                    *o = dl * q3 as f32;
                }
            }
        }
    }
}

/// 6-bit scale and min of sub-block `j` (0..8) packed in the 12 `scales` bytes of a Q4_K/Q5_K
/// block: for j < 4 the low 6 bits of bytes j and j+4; for j ≥ 4 a nibble of byte j+4 topped with
/// the two high bits of bytes j−4 and j.
#[inline(always)]
pub(crate) fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
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
#[inline(always)]
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

/// Q5_K super-block of 256: d (f16) | dmin (f16) | scales[12] | qh[32] | qs[128].
/// As Q4_K, with a fifth bit per quant: element `64·j + l` takes bit `2j` of `qh[l]`, element
/// `64·j + 32 + l` bit `2j + 1`. w = d·sc·q − dmin·m.
#[inline(always)]
fn dequantize_q5k(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let dmin = f16_at(x, 2);
    let scales = &x[4..16];
    let qh = &x[16..48];
    let qs = &x[48..176];
    for j in 0..4 {
        let (sc1, m1) = q4k_scale_min(2 * j, scales);
        let (sc2, m2) = q4k_scale_min(2 * j + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let q = &qs[32 * j..32 * j + 32];
        let out = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            let lo = (q[l] & 0x0F) + if qh[l] & u1 != 0 { 16 } else { 0 };
            let hi = (q[l] >> 4) + if qh[l] & u2 != 0 { 16 } else { 0 };
            out[l] = d1 * lo as f32 - min1;
            out[l + 32] = d2 * hi as f32 - min2;
        }
    }
}

/// Q6_K super-block of 256: ql[128] | qh[64] | scales[16] (int8) | d (f16).
/// 6-bit q = low 4 bits from ql, high 2 from qh, minus 32; w = d·scale·q (16 scales of 16 elements).
#[inline(always)]
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

    /// Q5_0/Q5_1: the fifth bit of element j comes from bit j of qh, of element j+16 from bit j+16.
    #[test]
    fn q5_0_and_q5_1_blocks() {
        let q = |i: usize| ((i * 7 + 3) % 32) as u8;
        let mut qh = 0u32;
        let mut qs = [0u8; 16];
        for j in 0..16 {
            qs[j] = (q(j) & 15) | ((q(j + 16) & 15) << 4);
            qh |= ((q(j) >> 4) as u32) << j;
            qh |= ((q(j + 16) >> 4) as u32) << (j + 16);
        }
        let mut b = vec![];
        b.extend(h(0.5));
        b.extend(qh.to_le_bytes());
        b.extend(qs);
        let y = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
        for i in 0..32 {
            assert_eq!(y[i], 0.5 * (q(i) as f32 - 16.0), "i={i}");
        }
        let mut b = vec![];
        b.extend(h(0.25));
        b.extend(h(-3.0));
        b.extend(qh.to_le_bytes());
        b.extend(qs);
        let y = dequantize(GgmlType::Q5_1, &b, 32).unwrap();
        for i in 0..32 {
            assert_eq!(y[i], 0.25 * q(i) as f32 - 3.0, "i={i}");
        }
    }

    /// Packs 2-bit values the way Q2_K/Q3_K do: byte l of half h holds elements
    /// 128h + l + 32k (k = 0..4) in bit pair k.
    fn pack2(q: impl Fn(usize) -> u8) -> [u8; 64] {
        let mut qs = [0u8; 64];
        for h in 0..2 {
            for l in 0..32 {
                for k in 0..4 {
                    qs[32 * h + l] |= (q(128 * h + 32 * k + l) & 3) << (2 * k);
                }
            }
        }
        qs
    }

    /// Q2_K: sub-block s (16 elements) gets scale s % 16 and min 15 − s.
    #[test]
    fn q2_k_block() {
        let q = |i: usize| ((i * 5 + i / 7) % 4) as u8;
        let mut b = vec![];
        for s in 0..16u8 {
            b.push((s % 16) | ((15 - s) << 4));
        }
        b.extend(pack2(q));
        b.extend(h(0.5));
        b.extend(h(0.125));
        assert_eq!(b.len(), 84);
        let y = dequantize(GgmlType::Q2K, &b, 256).unwrap();
        for i in 0..256 {
            let s = i / 16;
            let e = 0.5 * s as f32 * q(i) as f32 - 0.125 * (15 - s) as f32;
            assert_eq!(y[i], e, "i={i}");
        }
    }

    /// Q3_K: signed 6-bit scales s − 20 (s = sub-block), q ∈ −4..3 with the high bit inverted.
    #[test]
    fn q3_k_block() {
        let q = |i: usize| ((i * 3 + i / 11) % 8) as i32 - 4; // −4..3
        let stored = |i: usize| (q(i) + 4) as u8; // 0..7
        let mut hmask = [0u8; 32];
        for i in 0..256 {
            if stored(i) & 4 != 0 {
                let (h, rest) = (i / 128, i % 128);
                hmask[rest % 32] |= 1 << (4 * h + rest / 32);
            }
        }
        let scale = |s: usize| s as i32 - 20; // −20..−5, stored as s + 12 (6 bits)
        let mut sc = [0u8; 12];
        for s in 0..16 {
            let v = (scale(s) + 32) as u8;
            if s < 8 {
                sc[s] |= v & 15;
            } else {
                sc[s - 8] |= (v & 15) << 4;
            }
            sc[8 + s % 4] |= (v >> 4) << (2 * (s / 4));
        }
        for s in 0..16 {
            assert_eq!(q3k_scale(s, &sc), scale(s));
        }
        let mut b = vec![];
        b.extend(hmask);
        b.extend(pack2(|i| stored(i) & 3));
        b.extend(sc);
        b.extend(h(0.25));
        assert_eq!(b.len(), 110);
        let y = dequantize(GgmlType::Q3K, &b, 256).unwrap();
        for i in 0..256 {
            assert_eq!(y[i], 0.25 * scale(i / 16) as f32 * q(i) as f32, "i={i}");
        }
    }

    /// Q5_K: Q4_K's scales with a fifth bit per quant from qh.
    #[test]
    fn q5_k_block() {
        let sc: [u8; 8] = [1, 9, 17, 25, 33, 41, 49, 63];
        let mn: [u8; 8] = [63, 2, 5, 8, 40, 31, 0, 7];
        let mut scales = [0u8; 12];
        for j in 0..4 {
            scales[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
            scales[j + 4] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6);
            scales[j + 8] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4);
        }
        let q = |i: usize| ((i * 13 + 5) % 32) as u8;
        let mut qh = [0u8; 32];
        let mut qs = [0u8; 128];
        for j in 0..4 {
            for l in 0..32 {
                let (lo, hi) = (q(64 * j + l), q(64 * j + 32 + l));
                qs[32 * j + l] = (lo & 15) | ((hi & 15) << 4);
                qh[l] |= ((lo >> 4) << (2 * j)) | ((hi >> 4) << (2 * j + 1));
            }
        }
        let mut b = vec![];
        b.extend(h(0.5));
        b.extend(h(0.25));
        b.extend(scales);
        b.extend(qh);
        b.extend(qs);
        assert_eq!(b.len(), 176);
        let y = dequantize(GgmlType::Q5K, &b, 256).unwrap();
        for i in 0..256 {
            let s = i / 32;
            let e = 0.5 * sc[s] as f32 * q(i) as f32 - 0.25 * mn[s] as f32;
            assert_eq!(y[i], e, "i={i}");
        }
    }

    #[test]
    fn q8_k_block() {
        let mut b = vec![];
        b.extend(0.75f32.to_le_bytes());
        for i in 0..256i32 {
            b.push(((i - 128) as i8) as u8);
        }
        b.extend([0u8; 32]);
        let y = dequantize(GgmlType::Q8K, &b, 256).unwrap();
        for i in 0..256 {
            assert_eq!(y[i], 0.75 * (i as f32 - 128.0));
        }
    }

    #[test]
    fn ids_names_and_sizes_agree() {
        for id in 0..64 {
            if let Ok(t) = GgmlType::from_id(id) {
                assert_eq!(t.id(), id);
                assert!(SUPPORTED_TYPES.contains(t.name()), "{}", t.name());
            }
        }
        // Bytes per block: ggml-common.h's static_asserts.
        assert_eq!(GgmlType::Q2K.block(), (256, 2 * 2 + 16 + 64));
        assert_eq!(GgmlType::Q3K.block(), (256, 2 + 64 + 32 + 12));
        assert_eq!(GgmlType::Q5K.block(), (256, 2 * 2 + 12 + 128 + 32));
        assert_eq!(GgmlType::Q8K.block(), (256, 4 + 256 + 16 * 2));
        assert_eq!(GgmlType::from_id(20), Err("IQ4_NL"));
    }

    #[test]
    fn wrong_lengths_are_typed_errors() {
        assert!(matches!(
            dequantize(GgmlType::Q4K, &[0u8; 143], 256),
            Err(GgufError::DataLength {
                expected: 144,
                got: 143,
                ..
            })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0u8; 34], 31),
            Err(GgufError::BadBlockCount { block: 32, .. })
        ));
    }
}
