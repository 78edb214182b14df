//! One config for every supported decoder: the architectures differ only in a handful of switches
//! (norm kind, gated MLP, rotary vs learned positions, parallel residual, biases, tying), so a single
//! block implementation driven by this struct covers Llama, Mistral, Qwen2, GPT-2, GPT-NeoX and
//! Gemma 3 (whose extra switches live in [`BlockExtras`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ProbeError, Result};

/// Architecture family, as named by `model_type` in a Hugging Face `config.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// Llama 1/2/3, TinyLlama, SmolLM, Mistral (GQA, RMSNorm, SwiGLU, rotary).
    Llama,
    /// Llama with biases on q, k and v.
    Qwen2,
    /// Learned positions, LayerNorm, GELU MLP, Conv1D weights stored [in, out].
    Gpt2,
    /// Pythia: partial rotary, fused per-head qkv, parallel residual.
    GptNeoX,
    /// Gemma 3 text: RMSNorm with weight `1 + w`, norms before and after each sublayer, embeddings
    /// × √d_model, GeGLU (tanh GELU), q/k RMSNorm per head, sliding-window local layers with their
    /// own RoPE base between global ones.
    Gemma3,
}

impl Architecture {
    /// Parse a `model_type` string.
    pub fn from_model_type(model_type: &str) -> Result<Self> {
        match model_type {
            "llama" | "mistral" | "smollm" | "smollm2" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "gpt2" => Ok(Self::Gpt2),
            "gpt_neox" | "gptneox" => Ok(Self::GptNeoX),
            // `gemma3` is the multimodal wrapper; its `text_config` is a `gemma3_text` config.
            "gemma3_text" | "gemma3" => Ok(Self::Gemma3),
            other => Err(ProbeError::UnknownArchitecture(other.to_string())),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormKind {
    /// `x / sqrt(mean(x²) + eps) * w`
    RmsNorm,
    /// `(x - mean) / sqrt(var + eps) * w + b`
    LayerNorm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    Silu,
    /// Exact GELU (erf), HF `gelu`.
    Gelu,
    /// Tanh approximation, HF `gelu_new` / `gelu_pytorch_tanh`.
    GeluTanh,
    Relu,
}

impl Activation {
    fn from_hf(name: &str) -> Result<Self> {
        match name {
            "silu" | "swish" => Ok(Self::Silu),
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            "relu" => Ok(Self::Relu),
            other => Err(ProbeError::Config {
                origin: "config.json".into(),
                msg: format!("unsupported activation `{other}`"),
            }),
        }
    }
}

/// How rotary frequencies are rescaled for long contexts (only the simple, position-independent kinds).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// Llama 3.x frequency-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

/// Rotary position embedding parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeConfig {
    /// Base of the geometric frequency ladder (`rope_theta`).
    pub theta: f32,
    /// How many leading dims of each head rotate (`head_dim` for Llama, `head_dim * rotary_pct` for NeoX).
    pub rotary_dim: usize,
    pub scaling: RopeScaling,
}

/// Which keys a layer's attention may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerAttention {
    /// Every earlier position (HF `full_attention`).
    Global,
    /// Only the last [`BlockExtras::sliding_window`] positions, the query's own included (HF
    /// `sliding_attention`: key `k` is visible from query `q` iff `0 ≤ q − k < window`), with
    /// [`BlockExtras::rope_local`] instead of the global rotary table.
    Local,
}

/// Switches beyond the Llama/GPT block. All off by default; Gemma 3 turns most of them on, and any
/// family with the same pieces (Gemma 2, OLMo 2, Qwen 3, Mistral's sliding window) could use them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlockExtras {
    /// Norm each sublayer's output before it joins the residual stream (Gemma's
    /// `post_attention_layernorm` / `post_feedforward_layernorm`; TransformerLens `ln1_post`,
    /// `ln2_post`).
    pub post_norms: bool,
    /// RMSNorm over `d_head` on every query and key head, before rotary (`q_norm`, `k_norm`).
    pub qk_norm: bool,
    /// Multiply the token embeddings by this (Gemma: √d_model, in the stream's dtype as HF casts
    /// it). The unembedding uses the unscaled matrix.
    pub embed_scale: Option<f32>,
    /// Attention scores are scaled by `query_pre_attn_scalar^-1/2` instead of `d_head^-1/2`.
    pub query_pre_attn_scalar: Option<f32>,
    /// `logits ← c·tanh(logits/c)` (Gemma 2's `final_logit_softcapping`; Gemma 3's checkpoints
    /// leave it unset, but transformers and llama.cpp apply it when a Gemma 3 config sets it).
    /// Gemma 2's attention-score capping has no switch: Gemma 3 replaced it by the q/k norms.
    pub final_softcap: Option<f32>,
    /// Window of the [`LayerAttention::Local`] layers, in tokens.
    pub sliding_window: Option<usize>,
    /// Per layer; empty means every layer is [`LayerAttention::Global`].
    pub layer_attention: Vec<LayerAttention>,
    /// Rotary parameters of the local layers (Gemma 3: base 10,000, no scaling); `None` = the
    /// global ones.
    pub rope_local: Option<RopeConfig>,
}

impl BlockExtras {
    /// Whether layer `l` attends through the sliding window.
    pub fn is_local(&self, l: usize) -> bool {
        self.sliding_window.is_some() && self.layer_attention.get(l) == Some(&LayerAttention::Local)
    }
}

/// Everything the forward pass needs to know about a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    /// Key/value heads (< n_heads for grouped-query attention).
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub norm: NormKind,
    pub norm_eps: f32,
    pub activation: Activation,
    /// SwiGLU-style `down(act(gate(x)) * up(x))` instead of `out(act(in(x)))`.
    pub gated_mlp: bool,
    /// `None` for learned absolute positions (GPT-2).
    pub rope: Option<RopeConfig>,
    /// `x + attn(ln1(x)) + mlp(ln2(x))` (GPT-NeoX) instead of sequential sublayers.
    pub parallel_residual: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub tied_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Gemma-style switches (all off for the other families).
    #[serde(default)]
    pub extras: BlockExtras,
}

fn get_usize(v: &Value, key: &str) -> Option<usize> {
    v.get(key).and_then(Value::as_u64).map(|x| x as usize)
}
fn get_f64(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}
fn get_bool(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}
fn get_token_id(v: &Value, key: &str) -> Option<u32> {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_u64().map(|x| x as u32),
        Some(Value::Array(a)) => a.first().and_then(Value::as_u64).map(|x| x as u32),
        _ => None,
    }
}

/// `d_model / n_heads`, the head size implied when a config gives none, refused (never a division
/// by zero, never a silently truncated head) when the head count is 0 or does not divide the
/// width. `heads_key` and `width_key` are the names the source file uses, so the error points at
/// the line to fix.
pub(crate) fn implied_head_dim(
    d_model: usize,
    n_heads: usize,
    width_key: &str,
    heads_key: &str,
    origin: &str,
) -> Result<usize> {
    let bad = |msg: String| ProbeError::Config {
        origin: origin.to_string(),
        msg,
    };
    if n_heads == 0 {
        return Err(bad(format!(
            "`{heads_key}` is 0 (a model needs at least one attention head)"
        )));
    }
    if !d_model.is_multiple_of(n_heads) {
        return Err(bad(format!(
            "`{width_key}` {d_model} is not a multiple of `{heads_key}` {n_heads} (no head size \
             given, so it would be {d_model}/{n_heads})"
        )));
    }
    Ok(d_model / n_heads)
}

/// More layers than any model has (the largest published decoders have a few hundred): a count
/// above it is a corrupt or hostile file, refused before a per-layer table is allocated.
pub const MAX_LAYERS: usize = 1 << 16;

/// A layer count checked against [`MAX_LAYERS`] (and 0), named by the source file's key.
pub(crate) fn layer_count(n: usize, key: &str, origin: &str) -> Result<usize> {
    if n == 0 || n > MAX_LAYERS {
        return Err(ProbeError::Config {
            origin: origin.to_string(),
            msg: format!("`{key}` is {n} (must be 1..={MAX_LAYERS})"),
        });
    }
    Ok(n)
}

/// The fields this parser reads as numbers. One of them present with another JSON type (say
/// `"rope_theta": "NaN"`) is an error: the readers above treat a wrong type like an absent field,
/// which would silently run the model with the default instead of what the file says. `null` stays
/// "not set", as transformers writes it.
const NUMERIC_FIELDS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "num_hidden_layers",
    "intermediate_size",
    "head_dim",
    "max_position_embeddings",
    "rope_theta",
    "rotary_emb_base",
    "rope_local_base_freq",
    "partial_rotary_factor",
    "rotary_pct",
    "rms_norm_eps",
    "layer_norm_eps",
    "layer_norm_epsilon",
    "query_pre_attn_scalar",
    "final_logit_softcapping",
    "sliding_window",
    "sliding_window_pattern",
    "n_embd",
    "n_head",
    "n_layer",
    "n_inner",
    "n_positions",
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
];

fn check_numeric_fields(v: &Value) -> Result<()> {
    let blocks = [
        Some(v),
        v.get("rope_parameters").filter(|p| p.is_object()),
        v.get("rope_scaling").filter(|p| p.is_object()),
    ];
    for (block, key) in blocks
        .into_iter()
        .flatten()
        .flat_map(|b| NUMERIC_FIELDS.iter().map(move |k| (b, *k)))
    {
        match block.get(key) {
            None | Some(Value::Null) | Some(Value::Number(_)) => {}
            Some(other) => {
                return Err(ProbeError::Config {
                    origin: "config.json".into(),
                    msg: format!("`{key}` must be a number, found {other}"),
                })
            }
        }
    }
    Ok(())
}

fn need_usize(v: &Value, key: &str) -> Result<usize> {
    get_usize(v, key).ok_or_else(|| ProbeError::Config {
        origin: "config.json".into(),
        msg: format!("missing integer field `{key}`"),
    })
}

/// Rope theta and scaling from either the transformers ≥ 5 `rope_parameters` block or the older
/// top-level `rope_theta` / `rope_scaling` fields.
fn parse_rope(v: &Value, default_theta: f64, rotary_dim: usize) -> Result<RopeConfig> {
    let params = v.get("rope_parameters").filter(|p| p.is_object());
    let theta = params
        .and_then(|p| get_f64(p, "rope_theta"))
        .or_else(|| get_f64(v, "rope_theta"))
        .or_else(|| get_f64(v, "rotary_emb_base"))
        .unwrap_or(default_theta);
    let scaling_obj = params.or_else(|| v.get("rope_scaling").filter(|p| p.is_object()));
    let scaling = match scaling_obj {
        None => RopeScaling::None,
        Some(s) => {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            let factor = get_f64(s, "factor").unwrap_or(1.0) as f32;
            match kind {
                "default" => RopeScaling::None,
                "linear" => RopeScaling::Linear { factor },
                "llama3" => RopeScaling::Llama3 {
                    factor,
                    low_freq_factor: get_f64(s, "low_freq_factor").unwrap_or(1.0) as f32,
                    high_freq_factor: get_f64(s, "high_freq_factor").unwrap_or(4.0) as f32,
                    original_max_position_embeddings: get_f64(s, "original_max_position_embeddings")
                        .unwrap_or(8192.0)
                        as f32,
                },
                other => {
                    return Err(ProbeError::Config {
                        origin: "config.json".into(),
                        msg: format!("unsupported rope scaling `{other}`"),
                    })
                }
            }
        }
    };
    Ok(RopeConfig {
        theta: theta as f32,
        rotary_dim,
        scaling,
    })
}

/// The text part of a multimodal `gemma3` config: its `text_config`, with the wrapper's token ids
/// where the text config has none.
fn gemma3_text_config(wrapper: &Value, text: &Value) -> Value {
    let mut t = text.clone();
    if let Some(obj) = t.as_object_mut() {
        obj.entry("model_type")
            .or_insert_with(|| Value::from("gemma3_text"));
        for key in ["bos_token_id", "eos_token_id", "pad_token_id", "vocab_size"] {
            if let (false, Some(x)) = (obj.contains_key(key), wrapper.get(key)) {
                obj.insert(key.to_string(), x.clone());
            }
        }
    }
    t
}

/// Gemma 3's default local/global pattern: five sliding-window layers, then one global layer
/// (`Gemma3TextConfig.sliding_window_pattern = 6`; llama.cpp `set_swa_pattern(6)`; Gemma 3
/// technical report, "5:1 interleaving of local and global layers").
pub const GEMMA3_SLIDING_WINDOW_PATTERN: usize = 6;

/// Layer `l` is global iff `(l + 1) % pattern == 0` (HF `layer_types` from
/// `sliding_window_pattern`; llama.cpp `set_swa_pattern`).
pub fn layer_pattern(n_layers: usize, pattern: usize) -> Vec<LayerAttention> {
    (0..n_layers)
        .map(|l| {
            if pattern > 0 && (l + 1) % pattern == 0 {
                LayerAttention::Global
            } else {
                LayerAttention::Local
            }
        })
        .collect()
}

/// A `gemma3_text` config.json, in either the transformers 4.5x form (`rope_theta`,
/// `rope_local_base_freq`, `rope_scaling`, `sliding_window_pattern`) or the ≥ 5 form
/// (`rope_parameters` keyed by layer type, `layer_types`). Defaults are `Gemma3TextConfig`'s.
fn gemma3_from_hf(
    v: &Value,
    vocab_size: usize,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
) -> Result<ModelConfig> {
    let bad = |msg: String| ProbeError::Config {
        origin: "config.json".into(),
        msg,
    };
    if get_bool(v, "use_bidirectional_attention") == Some(true) {
        return Err(bad(
            "bidirectional attention (EmbeddingGemma) is not supported: this is a decoder".into(),
        ));
    }
    let d_model = need_usize(v, "hidden_size")?;
    let n_heads = need_usize(v, "num_attention_heads")?;
    let n_layers = layer_count(
        need_usize(v, "num_hidden_layers")?,
        "num_hidden_layers",
        "config.json",
    )?;
    let d_head = get_usize(v, "head_dim").unwrap_or(256);
    let act = v
        .get("hidden_activation")
        .or_else(|| v.get("hidden_act"))
        .and_then(Value::as_str)
        .unwrap_or("gelu_pytorch_tanh");
    // transformers ≥ 5 keys the rope parameters by layer type; older configs have one global set
    // plus `rope_local_base_freq` (local layers never scale).
    let per_type = v
        .get("rope_parameters")
        .filter(|p| p.get("full_attention").is_some() || p.get("sliding_attention").is_some());
    let (rope, rope_local) = match per_type {
        Some(p) => {
            let sub = |key: &str| {
                let mut w = serde_json::Map::new();
                if let Some(x) = p.get(key) {
                    w.insert("rope_parameters".into(), x.clone());
                }
                Value::Object(w)
            };
            (
                parse_rope(&sub("full_attention"), 1_000_000.0, d_head)?,
                parse_rope(&sub("sliding_attention"), 10_000.0, d_head)?,
            )
        }
        None => (
            parse_rope(v, 1_000_000.0, d_head)?,
            RopeConfig {
                theta: get_f64(v, "rope_local_base_freq").unwrap_or(10_000.0) as f32,
                rotary_dim: d_head,
                scaling: RopeScaling::None,
            },
        ),
    };
    let sliding_window = match v.get("sliding_window") {
        Some(Value::Null) => None,
        Some(x) => Some(
            x.as_u64()
                .ok_or_else(|| bad("`sliding_window` is not an integer".into()))?
                as usize,
        ),
        None => Some(4096),
    };
    let layer_attention = match v.get("layer_types").and_then(Value::as_array) {
        Some(types) => types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(LayerAttention::Local),
                Some("full_attention") => Ok(LayerAttention::Global),
                other => Err(bad(format!("unsupported layer type {other:?}"))),
            })
            .collect::<Result<Vec<_>>>()?,
        None => {
            let pattern = get_usize(v, "sliding_window_pattern")
                .or_else(|| get_usize(v, "_sliding_window_pattern"))
                .unwrap_or(GEMMA3_SLIDING_WINDOW_PATTERN);
            layer_pattern(n_layers, pattern)
        }
    };
    let layer_attention = if sliding_window.is_none() {
        vec![LayerAttention::Global; n_layers]
    } else {
        layer_attention
    };
    let attention_bias = get_bool(v, "attention_bias").unwrap_or(false);
    Ok(ModelConfig {
        architecture: Architecture::Gemma3,
        n_layers,
        d_model,
        n_heads,
        n_kv_heads: get_usize(v, "num_key_value_heads").unwrap_or(n_heads),
        d_head,
        d_mlp: need_usize(v, "intermediate_size")?,
        vocab_size,
        max_positions: get_usize(v, "max_position_embeddings").unwrap_or(131_072),
        norm: NormKind::RmsNorm,
        norm_eps: get_f64(v, "rms_norm_eps").unwrap_or(1e-6) as f32,
        activation: Activation::from_hf(act)?,
        gated_mlp: true,
        rope: Some(rope),
        parallel_residual: false,
        qkv_bias: attention_bias,
        o_bias: attention_bias,
        mlp_bias: false,
        tied_embeddings: get_bool(v, "tie_word_embeddings").unwrap_or(true),
        bos_token_id,
        eos_token_id,
        extras: BlockExtras {
            post_norms: true,
            qk_norm: true,
            // HF: `hidden_size ** 0.5` (a Python float) as a float32 tensor.
            embed_scale: Some((d_model as f64).sqrt() as f32),
            query_pre_attn_scalar: Some(get_f64(v, "query_pre_attn_scalar").unwrap_or(256.0) as f32),
            // `attn_logit_softcapping` is read by no one: transformers' `Gemma3Attention` keeps it
            // but never applies it, nor does llama.cpp's gemma3 graph.
            final_softcap: get_f64(v, "final_logit_softcapping").map(|c| c as f32),
            sliding_window,
            layer_attention,
            rope_local: Some(rope_local),
        },
    })
}

impl ModelConfig {
    /// GPT-2 small (124M): 12 layers, d_model 768, 12 heads, 1024 positions, vocabulary 50,257,
    /// tied embeddings, `gelu_new`: the configuration of the hub's `gpt2`.
    pub fn gpt2_small() -> Self {
        Self::from_hf_json(&serde_json::json!({
            "model_type": "gpt2",
            "n_embd": 768,
            "n_head": 12,
            "n_layer": 12,
            "n_positions": 1024,
            "vocab_size": 50257,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "tie_word_embeddings": true,
            "bos_token_id": 50256,
            "eos_token_id": 50256
        }))
        .expect("GPT-2's configuration is valid")
    }

    /// Build from the parsed contents of a Hugging Face `config.json`.
    pub fn from_hf_json(v: &Value) -> Result<Self> {
        let model_type =
            v.get("model_type")
                .and_then(Value::as_str)
                .ok_or_else(|| ProbeError::Config {
                    origin: "config.json".into(),
                    msg: "missing `model_type`".into(),
                })?;
        if model_type == "gemma3" {
            if let Some(text) = v.get("text_config").filter(|t| t.is_object()) {
                return Self::from_hf_json(&gemma3_text_config(v, text));
            }
        }
        let architecture = Architecture::from_model_type(model_type)?;
        check_numeric_fields(v)?;
        let vocab_size = need_usize(v, "vocab_size")?;
        let bos_token_id = get_token_id(v, "bos_token_id");
        let eos_token_id = get_token_id(v, "eos_token_id");
        let cfg = match architecture {
            Architecture::Llama | Architecture::Qwen2 => {
                let d_model = need_usize(v, "hidden_size")?;
                let n_heads = need_usize(v, "num_attention_heads")?;
                let d_head = match get_usize(v, "head_dim") {
                    Some(d) => d,
                    None => implied_head_dim(
                        d_model,
                        n_heads,
                        "hidden_size",
                        "num_attention_heads",
                        "config.json",
                    )?,
                };
                let is_qwen = architecture == Architecture::Qwen2;
                let attention_bias = get_bool(v, "attention_bias").unwrap_or(false);
                ModelConfig {
                    architecture,
                    n_layers: need_usize(v, "num_hidden_layers")?,
                    d_model,
                    n_heads,
                    n_kv_heads: get_usize(v, "num_key_value_heads").unwrap_or(n_heads),
                    d_head,
                    d_mlp: need_usize(v, "intermediate_size")?,
                    vocab_size,
                    max_positions: get_usize(v, "max_position_embeddings").unwrap_or(4096),
                    norm: NormKind::RmsNorm,
                    norm_eps: get_f64(v, "rms_norm_eps").unwrap_or(1e-6) as f32,
                    activation: Activation::from_hf(
                        v.get("hidden_act")
                            .and_then(Value::as_str)
                            .unwrap_or("silu"),
                    )?,
                    gated_mlp: true,
                    rope: Some(parse_rope(v, 10000.0, d_head)?),
                    parallel_residual: false,
                    qkv_bias: is_qwen || attention_bias,
                    o_bias: attention_bias,
                    mlp_bias: get_bool(v, "mlp_bias").unwrap_or(false),
                    tied_embeddings: get_bool(v, "tie_word_embeddings").unwrap_or(false),
                    bos_token_id,
                    eos_token_id,
                    extras: BlockExtras::default(),
                }
            }
            Architecture::Gpt2 => {
                let d_model = need_usize(v, "n_embd")?;
                let n_heads = need_usize(v, "n_head")?;
                ModelConfig {
                    architecture,
                    n_layers: need_usize(v, "n_layer")?,
                    d_model,
                    n_heads,
                    n_kv_heads: n_heads,
                    d_head: implied_head_dim(d_model, n_heads, "n_embd", "n_head", "config.json")?,
                    d_mlp: get_usize(v, "n_inner").unwrap_or(4 * d_model),
                    vocab_size,
                    max_positions: get_usize(v, "n_positions").unwrap_or(1024),
                    norm: NormKind::LayerNorm,
                    norm_eps: get_f64(v, "layer_norm_epsilon").unwrap_or(1e-5) as f32,
                    activation: Activation::from_hf(
                        v.get("activation_function")
                            .and_then(Value::as_str)
                            .unwrap_or("gelu_new"),
                    )?,
                    gated_mlp: false,
                    rope: None,
                    parallel_residual: false,
                    qkv_bias: true,
                    o_bias: true,
                    mlp_bias: true,
                    // GPT2LMHeadModel always ties lm_head to wte.
                    tied_embeddings: true,
                    bos_token_id,
                    eos_token_id,
                    extras: BlockExtras::default(),
                }
            }
            Architecture::GptNeoX => {
                let d_model = need_usize(v, "hidden_size")?;
                let n_heads = need_usize(v, "num_attention_heads")?;
                let d_head = implied_head_dim(
                    d_model,
                    n_heads,
                    "hidden_size",
                    "num_attention_heads",
                    "config.json",
                )?;
                let pct = v
                    .get("rope_parameters")
                    .and_then(|p| get_f64(p, "partial_rotary_factor"))
                    .or_else(|| get_f64(v, "rotary_pct"))
                    .or_else(|| get_f64(v, "partial_rotary_factor"))
                    .unwrap_or(1.0);
                let rotary_dim = (d_head as f64 * pct) as usize;
                let bias = get_bool(v, "attention_bias").unwrap_or(true);
                ModelConfig {
                    architecture,
                    n_layers: need_usize(v, "num_hidden_layers")?,
                    d_model,
                    n_heads,
                    n_kv_heads: n_heads,
                    d_head,
                    d_mlp: need_usize(v, "intermediate_size")?,
                    vocab_size,
                    max_positions: get_usize(v, "max_position_embeddings").unwrap_or(2048),
                    norm: NormKind::LayerNorm,
                    norm_eps: get_f64(v, "layer_norm_eps").unwrap_or(1e-5) as f32,
                    activation: Activation::from_hf(
                        v.get("hidden_act")
                            .and_then(Value::as_str)
                            .unwrap_or("gelu"),
                    )?,
                    gated_mlp: false,
                    rope: Some(parse_rope(v, 10000.0, rotary_dim)?),
                    parallel_residual: get_bool(v, "use_parallel_residual").unwrap_or(true),
                    qkv_bias: bias,
                    o_bias: bias,
                    mlp_bias: true,
                    tied_embeddings: get_bool(v, "tie_word_embeddings").unwrap_or(false),
                    bos_token_id,
                    eos_token_id,
                    extras: BlockExtras::default(),
                }
            }
            Architecture::Gemma3 => gemma3_from_hf(v, vocab_size, bos_token_id, eos_token_id)?,
        };
        cfg.validate("config.json")?;
        Ok(cfg)
    }

    /// Reject configs that would make the forward pass index out of range.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |msg: String| {
            Err(ProbeError::Config {
                origin: origin.to_string(),
                msg,
            })
        };
        // Every size the forward pass divides by, allocates with or loops over; each named on its
        // own so the message says which line of the file is wrong.
        for (field, what, n) in [
            ("n_layers", "layers", self.n_layers),
            ("d_model", "model width", self.d_model),
            ("n_heads", "attention heads", self.n_heads),
            ("n_kv_heads", "key/value heads", self.n_kv_heads),
            ("d_head", "head size", self.d_head),
            ("d_mlp", "MLP width", self.d_mlp),
            ("vocab_size", "vocabulary size", self.vocab_size),
            ("max_positions", "context length", self.max_positions),
        ] {
            if n == 0 {
                return bad(format!("{field} ({what}) is 0"));
            }
        }
        if self.n_layers > MAX_LAYERS {
            return bad(format!("n_layers {} > {MAX_LAYERS}", self.n_layers));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "n_heads {} is not a multiple of n_kv_heads {} (each key/value head must serve \
                 a whole group of query heads)",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return bad(format!(
                "norm epsilon {} must be finite and ≥ 0",
                self.norm_eps
            ));
        }
        for r in self.rope.iter().chain(self.extras.rope_local.iter()) {
            if r.rotary_dim == 0 || r.rotary_dim % 2 != 0 || r.rotary_dim > self.d_head {
                return bad(format!(
                    "rotary dim {} must be even, > 0 and ≤ head dim {} (rotary pairs dimension \
                     i with i + dim/2)",
                    r.rotary_dim, self.d_head
                ));
            }
            if !(r.theta.is_finite() && r.theta > 0.0) {
                return bad(format!(
                    "rope base (theta) {} must be positive and finite",
                    r.theta
                ));
            }
        }
        let x = &self.extras;
        if x.sliding_window == Some(0) {
            return bad("sliding window of 0 tokens".into());
        }
        if !x.layer_attention.is_empty() && x.layer_attention.len() != self.n_layers {
            return bad(format!(
                "{} layer attention types for {} layers",
                x.layer_attention.len(),
                self.n_layers
            ));
        }
        if x.layer_attention.contains(&LayerAttention::Local) && x.sliding_window.is_none() {
            return bad("local (sliding-window) layers without a window size".into());
        }
        for (what, c) in [
            ("final logit softcap", x.final_softcap),
            ("query_pre_attn_scalar", x.query_pre_attn_scalar),
            ("embedding scale", x.embed_scale),
        ] {
            if let Some(c) = c {
                if !(c.is_finite() && c > 0.0) {
                    return bad(format!("{what} {c} must be positive and finite"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_type_is_a_typed_error() {
        let v: Value = serde_json::json!({"model_type": "mamba", "vocab_size": 10});
        assert!(matches!(
            ModelConfig::from_hf_json(&v),
            Err(ProbeError::UnknownArchitecture(a)) if a == "mamba"
        ));
    }

    #[test]
    fn a_number_field_of_another_type_is_an_error_not_the_default() {
        let mut v: Value = serde_json::json!({
            "model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_attention_heads": 2,
            "num_hidden_layers": 1, "intermediate_size": 16, "rope_theta": "NaN",
            "rope_scaling": null
        });
        let err = ModelConfig::from_hf_json(&v).unwrap_err().to_string();
        assert!(err.contains("rope_theta") && err.contains("NaN"), "{err}");
        v["rope_theta"] = serde_json::json!(10000.0);
        v["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": "8"});
        let err = ModelConfig::from_hf_json(&v).unwrap_err().to_string();
        assert!(err.contains("factor"), "{err}");
        v["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 8.0});
        assert_eq!(
            ModelConfig::from_hf_json(&v).unwrap().rope.unwrap().theta,
            10000.0
        );
    }

    #[test]
    fn old_style_rope_fields_are_read() {
        let v: Value = serde_json::json!({
            "model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_attention_heads": 2,
            "num_hidden_layers": 1, "intermediate_size": 16, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        });
        let c = ModelConfig::from_hf_json(&v).unwrap();
        let r = c.rope.unwrap();
        assert_eq!(r.theta, 500000.0);
        assert!(matches!(r.scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(c.n_kv_heads, 2);
    }

    /// A transformers 4.5x multimodal `gemma3` config (the hub's 4B+ form): the text part, its
    /// old-style rope fields (global linear scaling, `rope_local_base_freq`) and the
    /// `sliding_window_pattern` integer.
    #[test]
    fn gemma3_wrapper_with_old_style_fields() {
        let v: Value = serde_json::json!({
            "model_type": "gemma3", "eos_token_id": [1, 106],
            "text_config": {
                "model_type": "gemma3_text", "vocab_size": 262208, "hidden_size": 2560,
                "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                "num_hidden_layers": 34, "intermediate_size": 10240,
                "query_pre_attn_scalar": 256, "sliding_window": 1024, "sliding_window_pattern": 6,
                "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                "rope_scaling": {"rope_type": "linear", "factor": 8.0},
                "attn_logit_softcapping": null, "final_logit_softcapping": null
            },
            "vision_config": {"model_type": "siglip_vision_model"}
        });
        let c = ModelConfig::from_hf_json(&v).unwrap();
        assert_eq!(c.architecture, Architecture::Gemma3);
        assert_eq!((c.n_layers, c.d_model, c.d_head), (34, 2560, 256));
        assert_eq!(c.eos_token_id, Some(1));
        let r = c.rope.unwrap();
        assert_eq!(r.theta, 1.0e6);
        assert!(matches!(r.scaling, RopeScaling::Linear { factor } if factor == 8.0));
        let local = c.extras.rope_local.unwrap();
        assert_eq!((local.theta, local.scaling), (10000.0, RopeScaling::None));
        let globals: Vec<usize> = (0..34).filter(|&l| !c.extras.is_local(l)).collect();
        assert_eq!(globals, vec![5, 11, 17, 23, 29]);
        assert_eq!(c.extras.sliding_window, Some(1024));
        assert_eq!(c.extras.embed_scale, Some(2560f32.sqrt()));
        assert_eq!(c.extras.query_pre_attn_scalar, Some(256.0));
        assert!(c.tied_embeddings && c.extras.post_norms && c.extras.qk_norm);
        assert_eq!(c.activation, Activation::GeluTanh);
        assert_eq!(c.extras.final_softcap, None);
    }

    #[test]
    fn gemma3_final_softcap_and_bad_layer_types() {
        let base = serde_json::json!({
            "model_type": "gemma3_text", "vocab_size": 10, "hidden_size": 8,
            "num_attention_heads": 2, "num_hidden_layers": 2, "intermediate_size": 16,
            "head_dim": 4, "final_logit_softcapping": 30.0,
            "layer_types": ["sliding_attention", "full_attention"], "sliding_window": 3
        });
        let c = ModelConfig::from_hf_json(&base).unwrap();
        assert_eq!(c.extras.final_softcap, Some(30.0));
        assert!(c.extras.is_local(0) && !c.extras.is_local(1));
        let mut bad = base.clone();
        bad["layer_types"] = serde_json::json!(["sliding_attention", "chunked_attention"]);
        assert!(matches!(
            ModelConfig::from_hf_json(&bad),
            Err(ProbeError::Config { msg, .. }) if msg.contains("chunked_attention")
        ));
        let mut short = base.clone();
        short["layer_types"] = serde_json::json!(["full_attention"]);
        assert!(ModelConfig::from_hf_json(&short).is_err());
        let mut bidir = base;
        bidir["use_bidirectional_attention"] = serde_json::json!(true);
        assert!(ModelConfig::from_hf_json(&bidir).is_err());
    }
}
