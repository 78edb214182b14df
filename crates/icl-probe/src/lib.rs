//! icl-probe: a hookable decoder transformer on real weights.
//!
//! Every intermediate activation has a TransformerLens name and can be cached or overwritten
//! during a forward pass ([`HookSpec`]); models load from Hugging Face folders (Llama/Mistral,
//! Qwen2, Gemma 3, GPT-2, GPT-NeoX) or GGUF files (llama, qwen2, gemma3), with a tokenizer that
//! reproduces transformers' ids. Generic over the burn backend.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use icl_probe::{load_model, Batch, HookSpec, Intervention, Op, LogitsMode};
//! # fn main() -> icl_probe::Result<()> {
//! let device = Default::default();
//! let (model, tok) = load_model::<Flex>("SmolLM2-135M-Instruct.Q4_1.gguf", &device)?;
//! let batch = Batch::from_prompts(&tok, &["hot -> cold\nbig ->", "France -> Paris\nItaly ->"])?;
//! let out = model.forward(&batch, &HookSpec::new().cache(["blocks.*.hook_resid_post"]))?;
//! let resid = out.cache.get3("blocks.10.hook_resid_post").unwrap(); // [B, T, d_model]
//! # Ok(()) }
//! ```

pub mod arch;
pub mod batch;
pub mod config;
pub mod error;
pub mod gguf;
pub mod hooks;
pub mod linear;
pub mod loader;
pub mod model;
mod packed_gemm;
pub mod quant;
pub mod rope;
pub mod tokenizer;
pub mod weights;

pub use batch::Batch;
pub use config::{Architecture, ModelConfig};
pub use error::{ProbeError, Result};
pub use hooks::{
    hook_shape, ActivationCache, AttentionKnockout, Cached, HookSpec, Intervention, LogitsMode, Op,
    Positions,
};
pub use linear::{LoadOptions, WeightBytes, WeightStorage};
pub use loader::{load_config, load_model, load_model_with, load_tokenizer, resolve, ModelSource};
pub use model::{top_k_rows, Model, Output};
pub use tokenizer::Tokenizer;
