//! Left-padded batches. Prompts of different lengths are right-aligned so the last token of every
//! row sits at index `T − 1` (where next-token logits are read); positions restart at 0 on each
//! row's first real token and padded keys are masked, so a row's numbers do not depend on what it
//! was batched with.

use crate::error::{ProbeError, Result};
use crate::tokenizer::Tokenizer;

/// Additive attention bias for masked entries. Finite (not −∞) so that a padded query, which may
/// attend to nothing, still gets a well-defined softmax instead of NaN.
pub const MASK_VALUE: f32 = -1.0e30;

/// A batch of token sequences, stored unpadded; padding is applied on the left when run.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    rows: Vec<Vec<u32>>,
    seq_len: usize,
    pad_id: u32,
}

impl Batch {
    /// Build from token id rows (each non-empty). `pad_id` fills the left padding.
    pub fn from_ids(rows: Vec<Vec<u32>>, pad_id: u32) -> Result<Self> {
        if rows.is_empty() {
            return Err(ProbeError::BadInput("empty batch".into()));
        }
        if let Some(i) = rows.iter().position(Vec::is_empty) {
            return Err(ProbeError::BadInput(format!("row {i} has no tokens")));
        }
        let seq_len = rows.iter().map(Vec::len).max().unwrap_or(0);
        Ok(Self {
            rows,
            seq_len,
            pad_id,
        })
    }

    /// Tokenize prompts (with the tokenizer's own special-token rules, as transformers does).
    pub fn from_prompts(tokenizer: &Tokenizer, prompts: &[&str]) -> Result<Self> {
        let rows = prompts
            .iter()
            .map(|p| tokenizer.encode(p))
            .collect::<Result<Vec<_>>>()?;
        Self::from_ids(rows, tokenizer.pad_id())
    }

    /// From a padded `[B, T]` id matrix and an optional `[B, T]` attention mask (1 = token,
    /// 0 = padding). The mask must describe left padding.
    pub fn from_padded(ids: &[i64], b: usize, t: usize, mask: Option<&[i64]>) -> Result<Self> {
        if ids.len() != b * t {
            return Err(ProbeError::BadInput(format!(
                "{} ids for shape [{b}, {t}]",
                ids.len()
            )));
        }
        let mut rows = Vec::with_capacity(b);
        let mut pad_id = 0;
        for r in 0..b {
            let row = &ids[r * t..(r + 1) * t];
            let start = match mask {
                None => 0,
                Some(m) => {
                    let m = &m[r * t..(r + 1) * t];
                    let start = m.iter().position(|&x| x != 0).unwrap_or(t);
                    if m[start..].contains(&0) {
                        return Err(ProbeError::BadInput(format!(
                            "row {r}: attention mask is not left padding"
                        )));
                    }
                    if start > 0 {
                        pad_id = u32::try_from(row[0]).unwrap_or(0);
                    }
                    start
                }
            };
            let toks = row[start..]
                .iter()
                .map(|&x| {
                    u32::try_from(x).map_err(|_| ProbeError::BadInput(format!("token id {x}")))
                })
                .collect::<Result<Vec<_>>>()?;
            rows.push(toks);
        }
        Self::from_ids(rows, pad_id)
    }

    /// Number of rows (batch size).
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    /// Padded length T.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
    /// The unpadded rows.
    pub fn rows(&self) -> &[Vec<u32>] {
        &self.rows
    }
    /// Real tokens in row `b`.
    pub fn row_len(&self, b: usize) -> usize {
        self.rows[b].len()
    }
    /// Left padding of row `b`.
    pub fn pad(&self, b: usize) -> usize {
        self.seq_len - self.rows[b].len()
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Padded index of token position `pos` of row `b`: `pos ≥ 0` counts from the row's first real
    /// token, `pos < 0` from its end (−1 = last token). `None` when out of range.
    pub fn resolve(&self, b: usize, pos: isize) -> Option<usize> {
        let len = self.rows.get(b)?.len() as isize;
        let p = if pos < 0 { len + pos } else { pos };
        (0..len).contains(&p).then(|| self.pad(b) + p as usize)
    }

    /// Row-major `[B·T]` ids, left-padded.
    pub fn padded_ids(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len() * self.seq_len);
        for row in &self.rows {
            out.extend(std::iter::repeat_n(self.pad_id, self.seq_len - row.len()));
            out.extend_from_slice(row);
        }
        out
    }

    /// Row-major `[B·T]` position ids: 0 for padding and the first real token.
    pub fn positions(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.len() * self.seq_len);
        for b in 0..self.len() {
            let pad = self.pad(b);
            out.extend((0..self.seq_len).map(|t| t.saturating_sub(pad)));
        }
        out
    }

    /// `[B·T]` mask, true for real tokens.
    pub fn is_real(&self) -> Vec<bool> {
        let mut out = Vec::with_capacity(self.len() * self.seq_len);
        for b in 0..self.len() {
            let pad = self.pad(b);
            out.extend((0..self.seq_len).map(|t| t >= pad));
        }
        out
    }

    /// Additive causal + padding bias `[B, 1, T, T]` (0 allowed, [`MASK_VALUE`] masked).
    pub fn attention_bias(&self) -> Vec<f32> {
        let t = self.seq_len;
        let mut out = vec![0f32; self.len() * t * t];
        for b in 0..self.len() {
            let pad = self.pad(b);
            let m = &mut out[b * t * t..(b + 1) * t * t];
            for q in 0..t {
                for k in 0..t {
                    if k > q || k < pad {
                        m[q * t + k] = MASK_VALUE;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_positions_and_resolve() {
        let b = Batch::from_ids(vec![vec![5, 6, 7], vec![8]], 0).unwrap();
        assert_eq!(b.seq_len(), 3);
        assert_eq!(b.padded_ids(), vec![5, 6, 7, 0, 0, 8]);
        assert_eq!(b.positions(), vec![0, 1, 2, 0, 0, 0]);
        assert_eq!(b.resolve(1, -1), Some(2));
        assert_eq!(b.resolve(1, 0), Some(2));
        assert_eq!(b.resolve(1, 1), None);
        assert_eq!(b.resolve(0, -3), Some(0));
        let bias = b.attention_bias();
        // row 1, query 2 may see only key 2
        assert_eq!(&bias[9 + 6..9 + 9], &[MASK_VALUE, MASK_VALUE, 0.0]);
    }

    #[test]
    fn from_padded_checks_mask() {
        let ids = [0, 0, 3, 4, 5, 6];
        let b = Batch::from_padded(&ids, 2, 3, Some(&[0, 0, 1, 1, 1, 1])).unwrap();
        assert_eq!(b.rows(), &[vec![3], vec![4, 5, 6]]);
        assert!(Batch::from_padded(&ids, 2, 3, Some(&[1, 0, 1, 1, 1, 1])).is_err());
        assert!(Batch::from_ids(vec![vec![]], 0).is_err());
    }
}
