//! GDD-I's freezing policies (`--freeze`), by parameter name exactly as the reference decides.
//!
//! Zyriix/GDD `train.py` maps `--freeze` to keyword lists, and `training_loop.py` leaves a generator
//! parameter out of the optimizer when
//! `("block" in k or "up" in k or "down" in k or "in" in k) and any(fl in k for fl in freeze_layer)`,
//! `k` being its name in `GDDPrecond.named_parameters()` (so `model.enc.32x32_block0.conv0.weight`).
//! These are plain substring tests: "in" also matches e.g. `in0`/`in1` decoder blocks. Buffers
//! (`resample_filter`, Fourier `freqs`) are not parameters and are never counted.

use serde::{Deserialize, Serialize};

/// Keywords of each `--freeze` level.
pub fn freeze_keywords(level: u8) -> &'static [&'static str] {
    match level {
        0 => &[],
        1 => &["conv", "proj"],
        2 => &["conv", "proj", "qkv"],
        _ => &["conv", "proj", "qkv", "skip"],
    }
}

/// Whether the parameter named `name` (EDM/GDDPrecond name, `model.` prefix) is frozen at `level`.
pub fn is_frozen(name: &str, level: u8) -> bool {
    let kws = freeze_keywords(level);
    if kws.is_empty() {
        return false;
    }
    let located = ["block", "up", "down", "in"]
        .iter()
        .any(|s| name.contains(s));
    located && kws.iter().any(|k| name.contains(k))
}

/// Trainable vs frozen parameter counts of a generator under a freezing level.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FreezeReport {
    pub level: u8,
    pub keywords: Vec<String>,
    pub total_params: usize,
    pub frozen_params: usize,
    pub trainable_params: usize,
    pub frozen_tensors: usize,
    pub trainable_tensors: usize,
    /// 100 · frozen / total.
    pub frozen_percent: f64,
    /// Names of the frozen tensors (in the order given).
    pub frozen_names: Vec<String>,
}

impl FreezeReport {
    /// Builds the report from `(name, numel)` of every parameter (buffers excluded).
    pub fn new<'a>(params: impl IntoIterator<Item = (&'a str, usize)>, level: u8) -> Self {
        let mut r = FreezeReport {
            level,
            keywords: freeze_keywords(level)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            total_params: 0,
            frozen_params: 0,
            trainable_params: 0,
            frozen_tensors: 0,
            trainable_tensors: 0,
            frozen_percent: 0.0,
            frozen_names: Vec::new(),
        };
        for (name, numel) in params {
            r.total_params += numel;
            if is_frozen(name, level) {
                r.frozen_params += numel;
                r.frozen_tensors += 1;
                r.frozen_names.push(name.to_string());
            } else {
                r.trainable_params += numel;
                r.trainable_tensors += 1;
            }
        }
        r.frozen_percent = if r.total_params == 0 {
            0.0
        } else {
            100.0 * r.frozen_params as f64 / r.total_params as f64
        };
        r
    }

    /// One report per GDD-I level (0 = GDD, nothing frozen, to 3), from `(name, numel)` of every
    /// parameter.
    pub fn all_levels(params: &[(&str, usize)]) -> Vec<Self> {
        (0..=3u8)
            .map(|level| Self::new(params.iter().copied(), level))
            .collect()
    }

    /// The reports as one Markdown table (header and one row per report).
    pub fn markdown_table(reports: &[Self]) -> String {
        let mut t = String::from(
            "| freeze | keywords | total | trainable | frozen | frozen % |\n|---|---|---|---|---|---|\n",
        );
        for r in reports {
            t.push_str(&r.markdown_row());
            t.push('\n');
        }
        t
    }

    /// A Markdown summary (one table row per level is built by callers from several reports).
    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {:.1} % |",
            self.level,
            if self.keywords.is_empty() {
                "—".to_string()
            } else {
                self.keywords.join(", ")
            },
            self.total_params,
            self.trainable_params,
            self.frozen_params,
            self.frozen_percent
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rule_matches_reference_substrings() {
        // Block convs and projections are frozen at 1.
        assert!(is_frozen("model.enc.32x32_block0.conv0.weight", 1));
        assert!(is_frozen("model.enc.32x32_block1.proj.weight", 1));
        assert!(is_frozen("model.dec.16x16_up.conv1.bias", 1));
        assert!(is_frozen("model.enc.16x16_down.skip.weight", 3));
        // "in" in `in0` decoder blocks.
        assert!(is_frozen("model.dec.8x8_in0.conv0.weight", 1));
        // qkv only from level 2; skip only from level 3; norms and affine never.
        assert!(!is_frozen("model.enc.16x16_block1.qkv.weight", 1));
        assert!(is_frozen("model.enc.16x16_block1.qkv.weight", 2));
        assert!(!is_frozen("model.enc.16x16_block0.skip.weight", 2));
        assert!(!is_frozen("model.enc.32x32_block0.norm0.weight", 3));
        assert!(!is_frozen("model.enc.32x32_block0.affine.weight", 3));
        // Top-level convs outside blocks are not located by block/up/down/in.
        assert!(!is_frozen("model.enc.32x32_conv.weight", 3));
        assert!(!is_frozen("model.dec.32x32_aux_conv.weight", 3));
        // ...but `aux_residual` sits in no block either; `map_layer0` has no keyword.
        assert!(!is_frozen("model.map_layer0.weight", 3));
        assert!(!is_frozen("model.enc.32x32_block0.conv0.weight", 0));
    }
}
