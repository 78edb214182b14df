//! Tokenizers that give exactly transformers' ids: `tokenizer.json` through the `tokenizers`
//! crate, or one rebuilt from a GGUF file's metadata (byte-level BPE vocab + merges), with the
//! pre-tokenizer its `tokenizer.ggml.pre` names.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::{ProbeError, Result};
use crate::gguf::{GgufFile, GgufValue};

/// Llama-3 style split (`llama-bpe`, `llama3`, `smaug-bpe`, `dbrx`, `falcon3`): numbers in groups of ≤ 3.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer plus the special ids the model needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: u32,
}

fn tok_err(e: impl std::fmt::Display) -> ProbeError {
    ProbeError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Wrap a `tokenizers` tokenizer.
    pub fn new(inner: tokenizers::Tokenizer, bos_id: Option<u32>, eos_id: Option<u32>) -> Self {
        let pad_id = eos_id.or(bos_id).unwrap_or(0);
        Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
        }
    }

    /// Load a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ProbeError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::new(inner, None, None))
    }

    /// Set the special ids (from `config.json`).
    pub fn with_special_ids(mut self, bos: Option<u32>, eos: Option<u32>) -> Self {
        self.bos_id = bos.or(self.bos_id);
        self.eos_id = eos.or(self.eos_id);
        self.pad_id = self.eos_id.or(self.bos_id).unwrap_or(0);
        self
    }

    /// Build the byte-level BPE tokenizer a GGUF file describes (`tokenizer.ggml.model = "gpt2"`).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf
            .get("tokenizer.ggml.model")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| tok_err("GGUF has no tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(tok_err(format!(
                "GGUF tokenizer model `{model}` not supported (only byte-level BPE, `gpt2`)"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            gguf.get(key)
                .and_then(GgufValue::as_array)
                .ok_or_else(|| tok_err(format!("GGUF has no {key}")))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| tok_err(format!("{key}: non-string entry")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                let mut it = m.splitn(2, ' ');
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                    _ => Err(tok_err(format!("bad merge `{m}`"))),
                }
            })
            .collect::<Result<_>>()?;
        let types: Vec<u64> = gguf
            .get("tokenizer.ggml.token_type")
            .and_then(GgufValue::as_array)
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
            .unwrap_or_default();
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let pre = gguf
            .get("tokenizer.ggml.pre")
            .and_then(GgufValue::as_str)
            .unwrap_or("default");
        inner.with_pre_tokenizer(Some(pre_tokenizer_for(pre)?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        // Control tokens (type 3) must stay whole, as transformers and llama.cpp keep them;
        // user-defined ones (type 4) are matched whole but are not special.
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter())
            .filter(|(_, &t)| t == 3)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(&control);
        let user: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter())
            .filter(|(_, &t)| t == 4)
            .map(|(s, _)| AddedToken::from(s.clone(), false))
            .collect();
        inner.add_tokens(&user);

        let id = |key: &str| gguf.get(key).and_then(GgufValue::as_u64).map(|v| v as u32);
        let bos = id("tokenizer.ggml.bos_token_id");
        let eos = id("tokenizer.ggml.eos_token_id");
        let add_bos = gguf
            .get("tokenizer.ggml.add_bos_token")
            .and_then(GgufValue::as_bool)
            .unwrap_or(false);
        if let (true, Some(bos)) = (add_bos, bos) {
            let bos_tok = tokens
                .get(bos as usize)
                .cloned()
                .ok_or_else(|| tok_err("bos id out of range"))?;
            let tp = TemplateProcessing::builder()
                .try_single(format!("{bos_tok} $A"))
                .map_err(tok_err)?
                .special_tokens(vec![(bos_tok, bos)])
                .build()
                .map_err(tok_err)?;
            inner.with_post_processor(Some(tp));
        }
        let mut t = Self::new(inner, bos, eos);
        if let Some(p) = id("tokenizer.ggml.padding_token_id") {
            t.pad_id = p;
        }
        Ok(t)
    }

    /// Token ids of `text`, with the special tokens the tokenizer's post-processor adds (as
    /// `tokenizer(text)` in transformers).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, true)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Token ids without any added special tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }
    /// Id used for left padding (never attended to).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The pre-tokenizer llama.cpp's `tokenizer.ggml.pre` names.
///
/// `smollm` (SmolLM/SmolLM2, StarCoder-style): single digits split off, then GPT-2's byte-level
/// regex, exactly the `Sequence[Digits(individual), ByteLevel]` of the model's own
/// `tokenizer.json` (and llama.cpp's regex list). transformers' GGUF loader omits the digit split,
/// so on text with runs of digits its ids differ from the model's own tokenizer; we follow the
/// model. `gpt2`/`default`: GPT-2's byte-level regex.
fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerWrapper> {
    let byte_level = ByteLevel::new(false, true, true);
    Ok(match pre {
        "smollm" | "starcoder" | "refact" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        "gpt2" | "default" | "gpt-2" | "olmo" | "phi-2" => byte_level.into(),
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" | "dbrx" | "falcon3" => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_SPLIT.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tok_err)?;
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
        other => {
            return Err(tok_err(format!(
                "GGUF pre-tokenizer `{other}` not supported (smollm, gpt2, llama-bpe)"
            )))
        }
    })
}
