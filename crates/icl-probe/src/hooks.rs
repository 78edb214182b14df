//! Named hook points (TransformerLens names), activation caching and interventions.
//!
//! A forward pass takes a [`HookSpec`]: which activations to keep ([`HookSpec::cache`], exact names
//! or `*` globs), which to overwrite ([`Intervention`]), and which attention edges to cut
//! ([`AttentionKnockout`]). When the spec is empty every hook point is a single branch, so an
//! unhooked forward pays nothing; only requested activations are kept, so memory does not grow with
//! hooks nobody asked for.
//!
//! Shapes at hook points (B rows, T padded positions):
//! - residual-like (`hook_embed`, `hook_pos_embed`, `blocks.{l}.hook_resid_pre|mid|post`,
//!   `hook_attn_out`, `hook_mlp_out`, `ln1/ln2.hook_normalized`, `mlp.hook_post`,
//!   `ln_final.hook_normalized`): `[B, T, W]`
//! - per head (`attn.hook_q`, `attn.hook_k`, `attn.hook_v`, `attn.hook_z`): `[B, T, H, d_head]`
//!   (`hook_k`/`hook_v` have the key/value heads of grouped-query attention; q and k are taken
//!   before rotary, as in TransformerLens). Models with q/k norms (Gemma 3) add
//!   `attn.q_norm.hook_normalized` / `attn.k_norm.hook_normalized` of the same shapes: the normed
//!   heads (weight applied), still before rotary; `hook_q`/`hook_k` are the raw projections.
//! - Gemma's post-sublayer norms are inside `hook_attn_out` / `hook_mlp_out` (what joins the
//!   residual stream, as TransformerLens places them); sliding-window layers show the window in
//!   `attn.hook_attn_scores` (masked entries) and `attn.hook_pattern` (zeros).
//! - attention (`attn.hook_attn_scores`, `attn.hook_pattern`): `[B, H, T_query, T_key]`, keys in
//!   padded coordinates.
//! - rotated heads (`attn.hook_rot_q`, `attn.hook_rot_k`; rotary models only): `[B, T, H, d_head]`,
//!   q and k after rotary (key/value heads for `hook_rot_k`), what the scores are made of.
//! - per-head outputs (`attn.hook_result`): `[B, T, H, W]`, head h's `z_h·W_O[h]` without the
//!   output bias; `hook_attn_out` (before any post-norm) is their sum over heads plus the bias.
//!   Computed only when cached or patched: it holds H residual-sized vectors per token.
//! - norm scales (`ln1.hook_scale`, `ln2.hook_scale`, `ln_final.hook_scale`, Gemma's
//!   `ln1_post.hook_scale` / `ln2_post.hook_scale`): `[B, T, 1]`, TransformerLens's divisor
//!   `sqrt(mean(x²) + eps)` (RMSNorm) or `sqrt(var(x) + eps)` (LayerNorm, of the centred x),
//!   computed in float32; patching it changes what the norm divides by.
//! - MLP pre-activations (`mlp.hook_pre`: the input of the activation function, the gate's
//!   projection in a gated MLP; `mlp.hook_pre_linear`: a gated MLP's up projection):
//!   `[B, T, d_mlp]`.

use std::collections::{HashMap, HashSet};

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use crate::batch::{Batch, MASK_VALUE};
use crate::config::ModelConfig;
use crate::error::{ProbeError, Result};

/// Which token positions of each row an intervention touches. Positions count from the row's
/// first real token (`0`), or from its end when negative (`-1` = last token), so the same
/// intervention means the same thing whatever padding the batch needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Positions {
    /// Every real (non-padding) position.
    All,
    /// The same positions in every selected row.
    Same(Vec<isize>),
    /// One list per batch row (length B; an empty list leaves that row untouched).
    PerRow(Vec<Vec<isize>>),
}

/// What to do with the selected activation vectors.
#[derive(Clone, Debug)]
pub enum Op<B: Backend> {
    /// Overwrite with `[1, W]` (the same vector everywhere) or `[n, W]` (one per selected vector,
    /// in order: rows ascending, then positions as listed, then heads as listed).
    Replace(Tensor<B, 2>),
    /// Add `[1, W]` or `[n, W]` (same ordering as `Replace`).
    Add(Tensor<B, 2>),
    /// Multiply by a scalar.
    Scale(f32),
    /// Set to zero.
    ZeroAblate,
    /// Replace by the mean of this activation over every real token of the batch (per head for
    /// per-head hooks). Not available on attention scores/patterns.
    MeanAblate,
}

/// Overwrite an activation at chosen rows × positions × heads.
#[derive(Clone, Debug)]
pub struct Intervention<B: Backend> {
    /// Hook name, e.g. `blocks.3.hook_resid_post`.
    pub hook: String,
    /// Batch rows (`None` = all).
    pub rows: Option<Vec<usize>>,
    pub positions: Positions,
    /// Heads for per-head and attention hooks (`None` = all); ignored by residual-like hooks.
    pub heads: Option<Vec<usize>>,
    pub op: Op<B>,
}

impl<B: Backend> Intervention<B> {
    /// All rows, all real positions, all heads.
    pub fn new(hook: impl Into<String>, op: Op<B>) -> Self {
        Self {
            hook: hook.into(),
            rows: None,
            positions: Positions::All,
            heads: None,
            op,
        }
    }
    /// Restrict to these rows.
    pub fn rows(mut self, rows: Vec<usize>) -> Self {
        self.rows = Some(rows);
        self
    }
    /// The same positions in every row.
    pub fn at(mut self, positions: Vec<isize>) -> Self {
        self.positions = Positions::Same(positions);
        self
    }
    /// Per-row positions (one list per batch row).
    pub fn per_row(mut self, positions: Vec<Vec<isize>>) -> Self {
        self.positions = Positions::PerRow(positions);
        self
    }
    /// Restrict to these heads.
    pub fn heads(mut self, heads: Vec<usize>) -> Self {
        self.heads = Some(heads);
        self
    }
}

/// Block attention edges query → key at one layer (Wang et al.'s information-flow knockout): the
/// attention score of each listed edge is set to −∞ before the softmax.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionKnockout {
    pub layer: usize,
    /// Heads affected (`None` = all).
    pub heads: Option<Vec<usize>>,
    /// Per batch row (length B): `(query_pos, key_pos)` edges to block, positions as in
    /// [`Positions`].
    pub edges: Vec<Vec<(isize, isize)>>,
}

impl AttentionKnockout {
    /// Block every query in `queries` from every key in `keys`, per row.
    pub fn from_sets(layer: usize, per_row: Vec<(Vec<isize>, Vec<isize>)>) -> Self {
        let edges = per_row
            .into_iter()
            .map(|(qs, ks)| {
                qs.iter()
                    .flat_map(|&q| ks.iter().map(move |&k| (q, k)))
                    .collect()
            })
            .collect();
        Self {
            layer,
            heads: None,
            edges,
        }
    }
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogitsMode {
    /// `[B, T, V]`
    #[default]
    All,
    /// `[B, 1, V]`: the last position of each row (what next-token prediction needs; skips most of
    /// the unembedding cost).
    Last,
    /// No logits (e.g. when only activations are wanted).
    None,
}

/// Everything a hooked forward pass should do besides computing logits.
#[derive(Clone, Debug)]
pub struct HookSpec<B: Backend> {
    /// Hook names to cache; `*` matches any run of characters (`blocks.*.hook_resid_post`).
    pub cache: Vec<String>,
    pub interventions: Vec<Intervention<B>>,
    pub knockouts: Vec<AttentionKnockout>,
    pub logits: LogitsMode,
    /// Run only the first `n` blocks (no final norm, no logits): enough for reading the residual
    /// stream up to a layer, at a fraction of the cost.
    pub stop_at_layer: Option<usize>,
}

impl<B: Backend> Default for HookSpec<B> {
    fn default() -> Self {
        Self {
            cache: Vec::new(),
            interventions: Vec::new(),
            knockouts: Vec::new(),
            logits: LogitsMode::All,
            stop_at_layer: None,
        }
    }
}

impl<B: Backend> HookSpec<B> {
    /// No hooks: a plain forward.
    pub fn new() -> Self {
        Self::default()
    }
    /// Cache these hooks (exact names or globs).
    pub fn cache<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.cache.extend(names.into_iter().map(Into::into));
        self
    }
    pub fn intervene(mut self, iv: Intervention<B>) -> Self {
        self.interventions.push(iv);
        self
    }
    pub fn knockout(mut self, k: AttentionKnockout) -> Self {
        self.knockouts.push(k);
        self
    }
    pub fn logits(mut self, mode: LogitsMode) -> Self {
        self.logits = mode;
        self
    }
    pub fn stop_at_layer(mut self, n: usize) -> Self {
        self.stop_at_layer = Some(n);
        self
    }
    fn is_empty(&self) -> bool {
        self.cache.is_empty() && self.interventions.is_empty() && self.knockouts.is_empty()
    }
}

/// A cached activation.
#[derive(Clone, Debug)]
pub enum Cached<B: Backend> {
    /// `[B, T, W]`
    R3(Tensor<B, 3>),
    /// `[B, T, H, d_head]` or `[B, H, T, T]`
    R4(Tensor<B, 4>),
}

impl<B: Backend> Cached<B> {
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Cached::R3(t) => t.dims().to_vec(),
            Cached::R4(t) => t.dims().to_vec(),
        }
    }
    /// Host copy (row-major f32) and its shape.
    pub fn to_vec(&self) -> (Vec<usize>, Vec<f32>) {
        let data = match self {
            Cached::R3(t) => t.to_data(),
            Cached::R4(t) => t.to_data(),
        };
        (
            data.shape.to_vec(),
            data.convert::<f32>().into_vec::<f32>().unwrap_or_default(),
        )
    }
}

/// Activations kept by a forward pass, by hook name.
#[derive(Clone, Debug)]
pub struct ActivationCache<B: Backend> {
    map: HashMap<String, Cached<B>>,
}

impl<B: Backend> Default for ActivationCache<B> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
        }
    }
}

impl<B: Backend> ActivationCache<B> {
    pub fn get(&self, name: &str) -> Option<&Cached<B>> {
        self.map.get(name)
    }
    /// A residual-like activation `[B, T, W]`.
    pub fn get3(&self, name: &str) -> Option<Tensor<B, 3>> {
        match self.map.get(name) {
            Some(Cached::R3(t)) => Some(t.clone()),
            _ => None,
        }
    }
    /// A per-head or attention activation (rank 4).
    pub fn get4(&self, name: &str) -> Option<Tensor<B, 4>> {
        match self.map.get(name) {
            Some(Cached::R4(t)) => Some(t.clone()),
            _ => None,
        }
    }
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Cached names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.keys().cloned().collect();
        v.sort();
        v
    }
    pub fn into_map(self) -> HashMap<String, Cached<B>> {
        self.map
    }
}

/// `*`-glob match (no other metacharacters).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// How a hook's tensor maps (row, position, head) to rows of its flattened `[R, W]` view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `[B, T, W]`
    Resid,
    /// `[B, T, H, W]`
    Heads,
    /// `[B, H, Tq, Tk]`
    Pattern,
}

/// The layout of a valid hook name (as listed by `Model::hook_names`).
pub(crate) fn layout_of(name: &str) -> Layout {
    if name.ends_with("attn.hook_pattern") || name.ends_with("attn.hook_attn_scores") {
        Layout::Pattern
    } else if name.ends_with("attn.hook_q")
        || name.ends_with("attn.hook_k")
        || name.ends_with("attn.hook_v")
        || name.ends_with("attn.hook_z")
        || name.ends_with("attn.hook_rot_q")
        || name.ends_with("attn.hook_rot_k")
        || name.ends_with("attn.hook_result")
        || name.ends_with("attn.q_norm.hook_normalized")
        || name.ends_with("attn.k_norm.hook_normalized")
    {
        Layout::Heads
    } else {
        Layout::Resid
    }
}

/// The shape of hook `name` for `batch` rows of `seq` padded positions (TransformerLens's
/// `hook_dict` shapes), or `None` if `cfg` has no such hook. Only the hook's suffix and the
/// config matter, so this answers without weights (`icl-probe hooks`, memory estimates).
pub fn hook_shape(cfg: &ModelConfig, name: &str, batch: usize, seq: usize) -> Option<Vec<usize>> {
    let (b, t) = (batch, seq);
    let (d, h, kv, dh, f) = (
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.d_head,
        cfg.d_mlp,
    );
    let Some(rest) = name.strip_prefix("blocks.") else {
        return match name {
            "hook_embed" | "ln_final.hook_normalized" => Some(vec![b, t, d]),
            "hook_pos_embed" if cfg.rope.is_none() => Some(vec![b, t, d]),
            "ln_final.hook_scale" => Some(vec![b, t, 1]),
            _ => None,
        };
    };
    let (layer, suffix) = rest.split_once('.')?;
    let l: usize = layer.parse().ok()?;
    if l >= cfg.n_layers || l.to_string() != layer {
        return None;
    }
    let shape = match suffix {
        "hook_resid_pre"
        | "hook_attn_out"
        | "hook_mlp_out"
        | "hook_resid_post"
        | "ln1.hook_normalized"
        | "ln2.hook_normalized" => vec![b, t, d],
        "hook_resid_mid" if !cfg.parallel_residual => vec![b, t, d],
        "ln1.hook_scale" | "ln2.hook_scale" => vec![b, t, 1],
        "ln1_post.hook_scale" | "ln2_post.hook_scale" if cfg.extras.post_norms => vec![b, t, 1],
        "attn.hook_q" | "attn.hook_z" => vec![b, t, h, dh],
        "attn.hook_k" | "attn.hook_v" => vec![b, t, kv, dh],
        "attn.q_norm.hook_normalized" if cfg.extras.qk_norm => vec![b, t, h, dh],
        "attn.k_norm.hook_normalized" if cfg.extras.qk_norm => vec![b, t, kv, dh],
        "attn.hook_rot_q" if cfg.rope.is_some() => vec![b, t, h, dh],
        "attn.hook_rot_k" if cfg.rope.is_some() => vec![b, t, kv, dh],
        "attn.hook_attn_scores" | "attn.hook_pattern" => vec![b, h, t, t],
        "attn.hook_result" => vec![b, t, h, d],
        "mlp.hook_pre" | "mlp.hook_post" => vec![b, t, f],
        "mlp.hook_pre_linear" if cfg.gated_mlp => vec![b, t, f],
        _ => return None,
    };
    Some(shape)
}

/// Per-forward state: resolved interventions and the cache being filled.
pub(crate) struct HookRunner<'a, B: Backend> {
    active: bool,
    spec: &'a HookSpec<B>,
    batch: &'a Batch,
    device: B::Device,
    by_hook: HashMap<&'a str, Vec<&'a Intervention<B>>>,
    cache_exact: HashSet<&'a str>,
    cache_globs: Vec<&'a str>,
    pub(crate) cache: ActivationCache<B>,
}

impl<'a, B: Backend> HookRunner<'a, B> {
    /// Check every name against `valid` and index the interventions by hook.
    pub(crate) fn new(
        spec: &'a HookSpec<B>,
        batch: &'a Batch,
        valid: &HashSet<String>,
        n_layers: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let mut by_hook: HashMap<&str, Vec<&Intervention<B>>> = HashMap::new();
        let mut cache_exact = HashSet::new();
        let mut cache_globs = Vec::new();
        if !spec.is_empty() {
            for iv in &spec.interventions {
                if !valid.contains(&iv.hook) {
                    return Err(ProbeError::UnknownHook {
                        name: iv.hook.clone(),
                    });
                }
                by_hook.entry(iv.hook.as_str()).or_default().push(iv);
            }
            for name in &spec.cache {
                if name.contains('*') {
                    cache_globs.push(name.as_str());
                } else if valid.contains(name) {
                    cache_exact.insert(name.as_str());
                } else {
                    return Err(ProbeError::UnknownHook { name: name.clone() });
                }
            }
            for k in &spec.knockouts {
                if k.layer >= n_layers {
                    return Err(ProbeError::InvalidIntervention {
                        hook: format!("knockout at layer {}", k.layer),
                        msg: format!("model has {n_layers} layers"),
                    });
                }
                if k.edges.len() != batch.len() {
                    return Err(ProbeError::InvalidIntervention {
                        hook: format!("knockout at layer {}", k.layer),
                        msg: format!("{} edge lists for {} rows", k.edges.len(), batch.len()),
                    });
                }
            }
        }
        Ok(Self {
            active: !spec.is_empty(),
            spec,
            batch,
            device: device.clone(),
            by_hook,
            cache_exact,
            cache_globs,
            cache: ActivationCache::default(),
        })
    }

    fn wants_cache(&self, name: &str) -> bool {
        self.cache_exact.contains(name) || self.cache_globs.iter().any(|g| glob_match(g, name))
    }

    /// Whether hook `name` is cached or patched in this forward: for hook points whose value costs
    /// extra work to form (`attn.hook_result`, the rotated heads, norm scales), which is then
    /// done only when asked. `name` is built only when some hook is active.
    pub(crate) fn touches(&self, name: impl FnOnce() -> String) -> bool {
        if !self.active {
            return false;
        }
        let name = name();
        self.by_hook.contains_key(name.as_str()) || self.wants_cache(&name)
    }

    /// Whether some intervention overwrites hook `name`.
    pub(crate) fn intervenes(&self, name: &str) -> bool {
        self.active && self.by_hook.contains_key(name)
    }

    /// A residual-like hook point on the flattened `[B·T, W]` stream.
    pub(crate) fn point_rows(
        &mut self,
        name: impl FnOnce() -> String,
        x: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>> {
        if !self.active {
            return Ok(x);
        }
        let name = name();
        let ivs = self.by_hook.get(name.as_str());
        let cache = self.wants_cache(&name);
        if ivs.is_none() && !cache {
            return Ok(x);
        }
        let [n, w] = x.dims();
        let (b, t) = (self.batch.len(), self.batch.seq_len());
        debug_assert_eq!(n, b * t);
        let mut x = x;
        if let Some(ivs) = ivs {
            for iv in ivs.clone() {
                x = self.apply(iv, x, Layout::Resid, 1)?;
            }
        }
        if cache {
            self.cache
                .map
                .insert(name, Cached::R3(x.clone().reshape([b, t, w])));
        }
        Ok(x)
    }

    /// A rank-4 hook point (per-head `[B, T, H, W]` or attention `[B, H, T, T]`).
    pub(crate) fn point4(
        &mut self,
        name: impl FnOnce() -> String,
        x: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        if !self.active {
            return Ok(x);
        }
        let name = name();
        let ivs = self.by_hook.get(name.as_str());
        let cache = self.wants_cache(&name);
        if ivs.is_none() && !cache {
            return Ok(x);
        }
        let dims = x.dims();
        let layout = layout_of(&name);
        let mut x = x;
        if let Some(ivs) = ivs {
            let heads = if layout == Layout::Pattern {
                dims[1]
            } else {
                dims[2]
            };
            let r = dims[0] * dims[1] * dims[2];
            let mut flat = x.reshape([r, dims[3]]);
            for iv in ivs.clone() {
                flat = self.apply(iv, flat, layout, heads)?;
            }
            x = flat.reshape(dims);
        }
        if cache {
            self.cache.map.insert(name, Cached::R4(x.clone()));
        }
        Ok(x)
    }

    /// Flattened row indices of the selected (row, position, head) triples, in the documented
    /// order, plus the head of each.
    fn target_rows(
        &self,
        iv: &Intervention<B>,
        layout: Layout,
        n_heads: usize,
    ) -> Result<(Vec<i32>, Vec<i32>)> {
        let err = |msg: String| ProbeError::InvalidIntervention {
            hook: iv.hook.clone(),
            msg,
        };
        let (nb, t) = (self.batch.len(), self.batch.seq_len());
        let rows: Vec<usize> = match &iv.rows {
            Some(r) => r.clone(),
            None => (0..nb).collect(),
        };
        if let Positions::PerRow(p) = &iv.positions {
            if p.len() != nb {
                return Err(err(format!("{} position lists for {nb} rows", p.len())));
            }
        }
        let heads: Vec<usize> = match (&iv.heads, layout) {
            (_, Layout::Resid) => vec![0],
            (Some(h), _) => h.clone(),
            (None, _) => (0..n_heads).collect(),
        };
        if let Some(&h) = heads.iter().find(|&&h| h >= n_heads) {
            return Err(err(format!("head {h} ≥ {n_heads}")));
        }
        let mut idx = Vec::new();
        let mut head_of = Vec::new();
        for &b in &rows {
            if b >= nb {
                return Err(err(format!("row {b} ≥ batch size {nb}")));
            }
            let positions: Vec<usize> = match &iv.positions {
                Positions::All => (self.batch.pad(b)..t).collect(),
                Positions::Same(p) => p
                    .iter()
                    .map(|&p| {
                        self.batch
                            .resolve(b, p)
                            .ok_or_else(|| err(format!("position {p} out of range in row {b}")))
                    })
                    .collect::<Result<_>>()?,
                Positions::PerRow(pr) => pr[b]
                    .iter()
                    .map(|&p| {
                        self.batch
                            .resolve(b, p)
                            .ok_or_else(|| err(format!("position {p} out of range in row {b}")))
                    })
                    .collect::<Result<_>>()?,
            };
            for &p in &positions {
                for &h in &heads {
                    let r = match layout {
                        Layout::Resid => b * t + p,
                        Layout::Heads => (b * t + p) * n_heads + h,
                        Layout::Pattern => (b * n_heads + h) * t + p,
                    };
                    idx.push(r as i32);
                    head_of.push(h as i32);
                }
            }
        }
        let mut seen = HashSet::with_capacity(idx.len());
        if !idx.iter().all(|r| seen.insert(*r)) {
            return Err(err("the same activation is selected twice".into()));
        }
        Ok((idx, head_of))
    }

    /// Apply one intervention to the flattened `[R, W]` view: one gather and one scatter-add.
    fn apply(
        &self,
        iv: &Intervention<B>,
        x: Tensor<B, 2>,
        layout: Layout,
        n_heads: usize,
    ) -> Result<Tensor<B, 2>> {
        let (idx, head_of) = self.target_rows(iv, layout, n_heads)?;
        let n = idx.len();
        if n == 0 {
            return Ok(x);
        }
        let w = x.dims()[1];
        let x_dtype = x.dtype();
        let err = |msg: String| ProbeError::InvalidIntervention {
            hook: iv.hook.clone(),
            msg,
        };
        let idx_t = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [n]), &self.device);
        let selected = x.clone().select(0, idx_t.clone());
        let values = |v: &Tensor<B, 2>| -> Result<Tensor<B, 2>> {
            let [vn, vw] = v.dims();
            if vw != w || (vn != 1 && vn != n) {
                return Err(err(format!(
                    "value has shape [{vn}, {vw}], expected [1, {w}] or [{n}, {w}]"
                )));
            }
            let v = if vn == 1 && n > 1 {
                v.clone().repeat_dim(0, n)
            } else {
                v.clone()
            };
            // Values are usually made in float32; a half-precision stream takes them in its dtype.
            Ok(if v.dtype() == x_dtype {
                v
            } else {
                v.cast(x_dtype)
            })
        };
        let new = match &iv.op {
            // A plain scatter-add is exact for Add.
            Op::Add(v) => return Ok(x.select_assign(0, idx_t, values(v)?, IndexingUpdateOp::Add)),
            Op::Replace(v) => values(v)?,
            Op::Scale(s) => selected * *s,
            Op::ZeroAblate => selected.zeros_like(),
            Op::MeanAblate => {
                let mean = self.batch_mean(&iv.hook, x.clone(), layout, n_heads, w)?;
                let heads_t =
                    Tensor::<B, 1, Int>::from_data(TensorData::new(head_of, [n]), &self.device);
                mean.select(0, heads_t)
            }
        };
        // Overwrite exactly (not x + (new − x), which rounds): keep = 1 − one-hot rows, then add
        // the new rows scattered into zeros. Only scatter-add is used, which every backend has.
        let r = x.dims()[0];
        let dtype = x.dtype();
        let hit = Tensor::<B, 2>::zeros([r, 1], &self.device).select_assign(
            0,
            idx_t.clone(),
            Tensor::ones([n, 1], &self.device),
            IndexingUpdateOp::Add,
        );
        let scattered = Tensor::<B, 2>::zeros([r, w], &self.device).select_assign(
            0,
            idx_t,
            new.cast(burn::tensor::DType::F32),
            IndexingUpdateOp::Add,
        );
        if dtype == burn::tensor::DType::F32 {
            Ok(x * (hit.neg() + 1.0) + scattered)
        } else {
            Ok(x * (hit.neg() + 1.0).cast(dtype) + scattered.cast(dtype))
        }
    }

    /// Mean over the real tokens of the batch: `[1, W]`, or `[H, W]` for per-head hooks.
    fn batch_mean(
        &self,
        hook: &str,
        x: Tensor<B, 2>,
        layout: Layout,
        n_heads: usize,
        w: usize,
    ) -> Result<Tensor<B, 2>> {
        let real: Vec<i32> = self
            .batch
            .is_real()
            .iter()
            .enumerate()
            .filter(|(_, &r)| r)
            .map(|(i, _)| i as i32)
            .collect();
        let nr = real.len();
        let real_t = Tensor::<B, 1, Int>::from_data(TensorData::new(real, [nr]), &self.device);
        let (b, t) = (self.batch.len(), self.batch.seq_len());
        match layout {
            Layout::Resid => Ok(x.select(0, real_t).mean_dim(0)),
            Layout::Heads => Ok(x
                .reshape([b * t, n_heads * w])
                .select(0, real_t)
                .mean_dim(0)
                .reshape([n_heads, w])),
            Layout::Pattern => Err(ProbeError::InvalidIntervention {
                hook: hook.to_string(),
                msg: "mean ablation of attention scores/patterns is not defined".into(),
            }),
        }
    }

    /// Additive knockout bias `[B, H, T, T]` for `layer`, if any knockout targets it.
    pub(crate) fn knockout_bias(
        &self,
        layer: usize,
        n_heads: usize,
    ) -> Result<Option<Tensor<B, 4>>> {
        if !self.active {
            return Ok(None);
        }
        let ks: Vec<&AttentionKnockout> = self
            .spec
            .knockouts
            .iter()
            .filter(|k| k.layer == layer)
            .collect();
        if ks.is_empty() {
            return Ok(None);
        }
        let (nb, t) = (self.batch.len(), self.batch.seq_len());
        let mut bias = vec![0f32; nb * n_heads * t * t];
        for k in ks {
            let err = |msg: String| ProbeError::InvalidIntervention {
                hook: format!("knockout at layer {layer}"),
                msg,
            };
            let heads: Vec<usize> = k.heads.clone().unwrap_or_else(|| (0..n_heads).collect());
            if let Some(&h) = heads.iter().find(|&&h| h >= n_heads) {
                return Err(err(format!("head {h} ≥ {n_heads}")));
            }
            for (b, edges) in k.edges.iter().enumerate() {
                for &(q, kk) in edges {
                    let (Some(qi), Some(ki)) =
                        (self.batch.resolve(b, q), self.batch.resolve(b, kk))
                    else {
                        return Err(err(format!("edge ({q}, {kk}) out of range in row {b}")));
                    };
                    for &h in &heads {
                        bias[((b * n_heads + h) * t + qi) * t + ki] = MASK_VALUE;
                    }
                }
            }
        }
        Ok(Some(Tensor::from_data(
            TensorData::new(bias, [nb, n_heads, t, t]),
            &self.device,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "blocks.*.hook_resid_post",
            "blocks.12.hook_resid_post"
        ));
        assert!(!glob_match(
            "blocks.*.hook_resid_post",
            "blocks.12.hook_resid_pre"
        ));
        assert!(glob_match("*", "hook_embed"));
        assert!(glob_match("blocks.*.attn.*", "blocks.0.attn.hook_z"));
        assert!(!glob_match("hook_embed", "hook_embedx"));
    }

    #[test]
    fn layouts() {
        assert_eq!(layout_of("blocks.0.attn.hook_z"), Layout::Heads);
        assert_eq!(layout_of("blocks.0.attn.hook_pattern"), Layout::Pattern);
        assert_eq!(layout_of("blocks.0.hook_attn_out"), Layout::Resid);
        assert_eq!(
            layout_of("blocks.0.attn.q_norm.hook_normalized"),
            Layout::Heads
        );
        assert_eq!(layout_of("blocks.0.ln2.hook_normalized"), Layout::Resid);
        assert_eq!(layout_of("blocks.0.attn.hook_rot_q"), Layout::Heads);
        assert_eq!(layout_of("blocks.0.attn.hook_rot_k"), Layout::Heads);
        assert_eq!(layout_of("blocks.0.attn.hook_result"), Layout::Heads);
        assert_eq!(layout_of("blocks.0.ln1.hook_scale"), Layout::Resid);
        assert_eq!(layout_of("blocks.0.mlp.hook_pre"), Layout::Resid);
    }
}
