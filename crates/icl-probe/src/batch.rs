//! Left-padded batches. Prompts of different lengths are right-aligned so the last token of every
//! row sits at index `T − 1` (where next-token logits are read); positions restart at 0 on each
//! row's first real token and padded keys are masked, so a row's numbers do not depend on what it
//! was batched with.

use crate::config::ModelConfig;
use crate::error::{ProbeError, Result};
use crate::hooks::glob_match;
use crate::tokenizer::Tokenizer;

/// Environment variable that raises (or lowers) the longest row a forward pass accepts, in
/// tokens; the default is the model's context length (`max_position_embeddings`).
pub const ENV_MAX_SEQ_LEN: &str = "ICL_PROBE_MAX_SEQ_LEN";
/// Environment variable that sets the memory a forward pass may plan for, in GiB; the default is
/// three quarters of the machine's physical memory.
pub const ENV_MAX_MEMORY_GIB: &str = "ICL_PROBE_MAX_MEMORY_GIB";

/// What a forward pass is checked against before it allocates anything: a million-token prompt
/// would otherwise ask for a `T × T` mask of terabytes and abort the process, and a merely
/// too-long one would run for many minutes past the model's context and give meaningless numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunLimits {
    /// Longest row, in tokens (`None`: the model's context length).
    pub max_seq_len: Option<usize>,
    /// Bytes the pass may plan for (mask, attention scores, activations, logits, cache).
    pub max_bytes: u64,
}

impl RunLimits {
    /// Limits from [`ENV_MAX_SEQ_LEN`] and [`ENV_MAX_MEMORY_GIB`], defaulting to the model's
    /// context and ¾ of physical memory. A malformed value is an error, not silently ignored.
    pub fn from_env() -> Result<Self> {
        let max_seq_len = match std::env::var(ENV_MAX_SEQ_LEN) {
            Ok(v) => Some(v.trim().parse::<usize>().map_err(|_| {
                ProbeError::BadInput(format!("{ENV_MAX_SEQ_LEN}={v:?} is not a token count"))
            })?),
            Err(_) => None,
        };
        let max_bytes = match std::env::var(ENV_MAX_MEMORY_GIB) {
            Ok(v) => {
                let gib = v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|g| g.is_finite() && *g > 0.0)
                    .ok_or_else(|| {
                        ProbeError::BadInput(format!(
                            "{ENV_MAX_MEMORY_GIB}={v:?} is not a positive number of GiB"
                        ))
                    })?;
                (gib * GIB as f64) as u64
            }
            Err(_) => physical_memory().unwrap_or(16 * GIB) / 4 * 3,
        };
        Ok(Self {
            max_seq_len,
            max_bytes,
        })
    }
}

const GIB: u64 = 1 << 30;

/// `MemTotal` from `/proc/meminfo` (Linux); `None` elsewhere. Read once per process: it does not
/// change, and every forward pass asks for it (experiments run thousands).
fn physical_memory() -> Option<u64> {
    static TOTAL: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    })
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB as f64)
}

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
        if b.checked_mul(t) != Some(ids.len()) {
            return Err(ProbeError::BadInput(format!(
                "{} ids for shape [{b}, {t}]",
                ids.len()
            )));
        }
        if let Some(m) = mask {
            if m.len() != ids.len() {
                return Err(ProbeError::BadInput(format!(
                    "attention mask has {} entries for {} ids",
                    m.len(),
                    ids.len()
                )));
            }
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

    /// The bytes a forward pass of this batch plans for, in f32 (an upper bound for half
    /// precision): the `[B, 1, T, T]` mask (twice with sliding-window layers), one layer's
    /// attention scores and probabilities `[B, H, T, T]`, the residual stream, q/k/v and MLP
    /// activations, the logits, and every cached hook (`[B, H, T, T]` for attention patterns and
    /// scores, `[B, T, width]` otherwise). Saturates instead of overflowing.
    pub fn memory_estimate<'a>(
        &self,
        cfg: &ModelConfig,
        cached: impl IntoIterator<Item = &'a str>,
        all_logits: bool,
    ) -> u64 {
        let (b, t) = (self.len() as u64, self.seq_len as u64);
        let m = |xs: &[u64]| xs.iter().fold(1u64, |a, &x| a.saturating_mul(x));
        let heads = cfg.n_heads as u64;
        let width = cfg.d_model.max(cfg.d_mlp).max(cfg.n_heads * cfg.d_head) as u64;
        let square = m(&[b, t, t]);
        let masks = if cfg.extras.sliding_window.is_some() {
            2
        } else {
            1
        };
        let qkv = ((cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.d_head) as u64;
        let acts = m(&[b, t, 3 * cfg.d_model as u64 + qkv + 2 * cfg.d_mlp as u64]);
        let logits = m(&[b, if all_logits { t } else { 1 }, cfg.vocab_size as u64]);
        let cache = cached.into_iter().fold(0u64, |acc, name| {
            let per = match crate::hooks::hook_shape(cfg, name, self.len(), self.seq_len) {
                Some(shape) => shape.iter().fold(1u64, |a, &x| a.saturating_mul(x as u64)),
                None if name.contains("pattern") || name.contains("attn_scores") => {
                    m(&[square, heads])
                }
                None => m(&[b, t, width]),
            };
            acc.saturating_add(per)
        });
        m(&[square, masks])
            .saturating_add(m(&[square, heads, 2]))
            .saturating_add(acts)
            .saturating_add(logits)
            .saturating_add(cache)
            .saturating_mul(4)
    }

    /// Refuse, before anything is computed, a batch whose rows are longer than the model's
    /// context (or [`ENV_MAX_SEQ_LEN`]) or whose [`memory_estimate`](Self::memory_estimate)
    /// exceeds `limits.max_bytes` ([`ENV_MAX_MEMORY_GIB`]). `cache` are the hook names or globs
    /// to be cached, matched against `hook_names`.
    pub fn check_fits(
        &self,
        cfg: &ModelConfig,
        limits: &RunLimits,
        cache: &[String],
        hook_names: &[String],
        all_logits: bool,
    ) -> Result<()> {
        let max_seq = limits.max_seq_len.unwrap_or(cfg.max_positions);
        if self.seq_len > max_seq {
            return Err(ProbeError::TooLarge {
                what: "sequence length".into(),
                need: format!("{} tokens", self.seq_len),
                limit: format!(
                    "{max_seq} tokens ({})",
                    if limits.max_seq_len.is_some() {
                        ENV_MAX_SEQ_LEN
                    } else {
                        "the model's context length"
                    }
                ),
                how: format!(
                    "shorten the prompt, or set {ENV_MAX_SEQ_LEN}={} to run past the context \
                     anyway (positions beyond it were never trained)",
                    self.seq_len
                ),
            });
        }
        let cached = hook_names
            .iter()
            .filter(|n| cache.iter().any(|p| glob_match(p, n)))
            .map(String::as_str);
        let need = self.memory_estimate(cfg, cached, all_logits);
        if need > limits.max_bytes {
            return Err(ProbeError::TooLarge {
                what: format!(
                    "memory for a batch of {} × {} tokens",
                    self.len(),
                    self.seq_len
                ),
                need: format!("(estimated {})", gib(need)),
                limit: gib(limits.max_bytes),
                how: format!(
                    "run fewer or shorter prompts per batch, cache fewer hooks, or set \
                     {ENV_MAX_MEMORY_GIB}={} if the machine has that memory",
                    (need as f64 / GIB as f64).ceil()
                ),
            });
        }
        Ok(())
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
        // A shape whose product overflows, and a mask of the wrong length: errors, not panics.
        assert!(Batch::from_padded(&ids, usize::MAX, 2, None).is_err());
        assert!(Batch::from_padded(&ids, 2, 3, Some(&[1, 1])).is_err());
    }

    fn tiny_llama(max_positions: usize) -> ModelConfig {
        ModelConfig::from_hf_json(&serde_json::json!({
            "model_type": "llama", "vocab_size": 100, "hidden_size": 64,
            "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 128,
            "max_position_embeddings": max_positions
        }))
        .unwrap()
    }

    /// A million-token prompt used to allocate a `T × T` mask (4 TB) and abort; it is now
    /// refused against the context length, and past it (when raised) against the memory limit.
    #[test]
    fn long_prompts_are_refused_before_computing() {
        let cfg = tiny_llama(256);
        let huge = Batch::from_ids(vec![vec![1; 1_000_000]], 0).unwrap();
        let limits = RunLimits {
            max_seq_len: None,
            max_bytes: 8 << 30,
        };
        let err = huge.check_fits(&cfg, &limits, &[], &[], false).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("sequence length 1000000 tokens exceeds the limit of 256 tokens")
                && msg.contains("ICL_PROBE_MAX_SEQ_LEN=1000000"),
            "{msg}"
        );
        // Context raised: the memory estimate (mask + scores ≈ 4·10¹² · 4 B ≈ 18 TiB) refuses it.
        let raised = RunLimits {
            max_seq_len: Some(2_000_000),
            ..limits
        };
        let msg = huge
            .check_fits(&cfg, &raised, &[], &[], false)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("memory for a batch of 1 × 1000000 tokens")
                && msg.contains("exceeds the limit of 8.00 GiB")
                && msg.contains("ICL_PROBE_MAX_MEMORY_GIB="),
            "{msg}"
        );
        // A prompt within the context passes; caching every attention pattern of a long batch
        // does not (each is [B, H, T, T]).
        let ok = Batch::from_ids(vec![vec![1; 200]; 4], 0).unwrap();
        ok.check_fits(&cfg, &limits, &[], &[], true).unwrap();
        let names: Vec<String> = (0..2)
            .map(|l| format!("blocks.{l}.attn.hook_pattern"))
            .collect();
        let small = RunLimits {
            max_seq_len: None,
            max_bytes: 10 << 20,
        };
        assert!(ok.check_fits(&cfg, &small, &[], &names, false).is_ok());
        assert!(matches!(
            ok.check_fits(
                &cfg,
                &small,
                &["blocks.*.attn.hook_pattern".into()],
                &names,
                false
            ),
            Err(ProbeError::TooLarge { .. })
        ));
    }
}
