//! Greedy decoding and the top-k next tokens.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::Model;
use crate::batch::Batch;
use crate::error::Result;
use crate::hooks::{HookSpec, LogitsMode};

impl<B: Backend> Model<B> {
    /// Greedy next token after each row's last token.
    pub fn greedy_next(&self, batch: &Batch) -> Result<Vec<u32>> {
        Ok(self
            .top_k_last(batch, 1)?
            .into_iter()
            .map(|v| v[0].0)
            .collect())
    }

    /// The `k` most likely next tokens (id, logit) after each row's last token, best first.
    pub fn top_k_last(&self, batch: &Batch, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        let out = self.forward(batch, &HookSpec::new().logits(LogitsMode::Last))?;
        let logits = out.logits.expect("LogitsMode::Last gives logits");
        Ok(top_k_rows(logits, k))
    }

    /// Greedy generation of up to `max_new_tokens` per row (stops a row at `stop`, which is not
    /// included). Recomputes the full prefix each step (no KV cache): meant for short answers.
    pub fn generate(
        &self,
        batch: &Batch,
        max_new_tokens: usize,
        stop: Option<u32>,
    ) -> Result<Vec<Vec<u32>>> {
        let mut rows: Vec<Vec<u32>> = batch.rows().to_vec();
        let mut new: Vec<Vec<u32>> = vec![Vec::new(); rows.len()];
        let mut done = vec![false; rows.len()];
        for _ in 0..max_new_tokens {
            if done.iter().all(|&d| d) {
                break;
            }
            let cur = Batch::from_ids(rows.clone(), batch.pad_id())?;
            let next = self.greedy_next(&cur)?;
            for (i, &tok) in next.iter().enumerate() {
                if done[i] {
                    continue;
                }
                if Some(tok) == stop {
                    done[i] = true;
                } else {
                    new[i].push(tok);
                    rows[i].push(tok);
                }
            }
        }
        Ok(new)
    }
}

/// Top-`k` (id, logit) of the last position of `[B, T, V]` logits, per row.
pub fn top_k_rows<B: Backend>(logits: Tensor<B, 3>, k: usize) -> Vec<Vec<(u32, f32)>> {
    let [b, t, v] = logits.dims();
    let last = logits.narrow(1, t - 1, 1).reshape([b, v]);
    let data = last.into_data().convert::<f32>();
    let vals = data.as_slice::<f32>().expect("f32 data");
    (0..b)
        .map(|r| {
            let row = &vals[r * v..(r + 1) * v];
            let mut idx: Vec<usize> = (0..v).collect();
            let k = k.min(v);
            // Ties keep the lower id first, as torch.topk does on CPU in practice.
            idx.select_nth_unstable_by(k.saturating_sub(1).min(v - 1), |&a, &b| {
                row[b].total_cmp(&row[a]).then(a.cmp(&b))
            });
            let mut top: Vec<usize> = idx[..k].to_vec();
            top.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            top.into_iter().map(|i| (i as u32, row[i])).collect()
        })
        .collect()
}
