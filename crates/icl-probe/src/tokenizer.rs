//! Tokenizers that give exactly transformers' ids: `tokenizer.json` through the `tokenizers`
//! crate, GPT-2's original `vocab.json` + `merges.txt` ([`Tokenizer::from_gpt2_files`]), or one
//! rebuilt from a GGUF file's metadata.
//!
//! A GGUF carries no `tokenizer.json`, only llama.cpp's `tokenizer.ggml.*` keys. We rebuild from
//! them the tokenizer transformers builds (`AutoTokenizer.from_pretrained(dir, gguf_file=…)`,
//! transformers/integrations/gguf/gguf_tokenizer_mapping.py), because transformers on the same
//! file is the reference every real-model test compares against:
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE (vocab + merges), split by the regex that
//!   `tokenizer.ggml.pre` names (see [`pre_tokenizer_for`]);
//! - `tokenizer.ggml.model = llama` on a Gemma architecture: a SentencePiece vocabulary run as BPE
//!   with byte fallback, spaces written `▁`, merges recovered from the vocabulary order (see
//!   [`Tokenizer::from_gguf`] and [`sentencepiece_merges`]).
//!
//! Tokens the file marks CONTROL (type 3) become special tokens and USER_DEFINED ones (type 4)
//! plain added tokens; both are matched whole in the raw text, as in transformers and llama.cpp.
//! BOS/EOS are added as `tokenizer.ggml.add_bos_token` / `add_eos_token` say.

use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::{ProbeError, Result};
use crate::gguf::{GgufFile, GgufValue};

/// Llama-3 style split (`llama-bpe`, `llama3`, `smaug-bpe`, `dbrx`, `falcon3`): numbers in groups of ≤ 3.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2 split (`qwen2`, `deepseek-r1-qwen`): as Llama 3 but every digit on its own. The same
/// expression in transformers' `Qwen2Tokenizer` and llama.cpp's `LLAMA_VOCAB_PRE_TYPE_QWEN2`.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-2's only special token: end of text, also its BOS and EOS (id 50256).
const GPT2_END_OF_TEXT: &str = "<|endoftext|>";

/// SentencePiece's word-boundary mark, standing for a space.
const SPM_SPACE: char = '\u{2581}';

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_CONTROL: u64 = 3;
const TOKEN_USER_DEFINED: u64 = 4;

/// Architectures whose `llama`-type (SentencePiece) vocabulary we rebuild: the ones transformers
/// builds with `GemmaTokenizer` semantics.
const GEMMA_ARCHS: [&str; 3] = ["gemma", "gemma2", "gemma3"];

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

    /// GPT-2's tokenizer from its two original files: `vocab.json` (token → id; OpenAI released it
    /// as `encoder.json`) and `merges.txt` (`vocab.bpe`, a `#version` line then one merge per
    /// line, highest priority first). This is what transformers' `GPT2Tokenizer` builds from them:
    /// byte-level BPE through the `tokenizers` crate's [`BPE`], GPT-2's split regex with no
    /// prefix space (tokenizers' [`ByteLevel`] pre-tokenizer), and `<|endoftext|>` as BOS, EOS
    /// and a special token. GPT-2 adds no special token when encoding.
    ///
    /// GPT-2 architecture folders (`config.json` + `model.safetensors`) often come without a
    /// `tokenizer.json`; these two files are the tokenizer the model was trained with (the
    /// `gpt2-bpe` asset).
    pub fn from_gpt2_files(vocab: &Path, merges: &Path) -> Result<Self> {
        for p in [vocab, merges] {
            crate::loader::check_regular_file(p)?;
        }
        let utf8 = |p: &Path| {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| tok_err(format!("{}: path is not UTF-8", p.display())))
        };
        let bpe = BPE::from_file(&utf8(vocab)?, &utf8(merges)?)
            .build()
            .map_err(|e| {
                tok_err(format!(
                    "GPT-2 BPE from {} and {}: {e}",
                    vocab.display(),
                    merges.display()
                ))
            })?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let eot = inner.token_to_id(GPT2_END_OF_TEXT);
        if eot.is_some() {
            inner.add_special_tokens(&[AddedToken::from(GPT2_END_OF_TEXT, true)]);
        }
        Ok(Self::new(inner, eot, eot))
    }

    /// [`Self::from_gpt2_files`] on a folder holding `vocab.json` + `merges.txt` (Hugging Face's
    /// names) or `encoder.json` + `vocab.bpe` (OpenAI's, as in the `gpt2-bpe` asset).
    pub fn from_gpt2_dir(dir: &Path) -> Result<Self> {
        for (vocab, merges) in [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")] {
            let (v, m) = (dir.join(vocab), dir.join(merges));
            if v.exists() && m.exists() {
                return Self::from_gpt2_files(&v, &m);
            }
        }
        Err(ProbeError::NotFound(format!(
            "{}: neither vocab.json + merges.txt nor encoder.json + vocab.bpe",
            dir.display()
        )))
    }

    /// Set the special ids (from `config.json`).
    pub fn with_special_ids(mut self, bos: Option<u32>, eos: Option<u32>) -> Self {
        self.bos_id = bos.or(self.bos_id);
        self.eos_id = eos.or(self.eos_id);
        self.pad_id = self.eos_id.or(self.bos_id).unwrap_or(0);
        self
    }

    /// Build the tokenizer a GGUF file's metadata describes.
    ///
    /// Supported: `tokenizer.ggml.model = gpt2` (byte-level BPE) with the pre-tokenizers
    /// [`pre_tokenizer_for`] knows, and `llama` (SentencePiece) for Gemma, Gemma 2 and Gemma 3.
    /// Anything else is an error that names it.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let meta = TokenizerMeta::read(gguf)?;
        let (mut inner, add_bos_default) = match meta.model.as_str() {
            "gpt2" => (byte_level_bpe(&meta, gguf)?, false),
            "llama" => {
                let arch = gguf
                    .get("general.architecture")
                    .and_then(GgufValue::as_str)
                    .unwrap_or("?");
                if !GEMMA_ARCHS.contains(&arch) {
                    return Err(tok_err(format!(
                        "GGUF SentencePiece (`llama`) vocabulary of architecture `{arch}` not supported \
                         (only {})",
                        GEMMA_ARCHS.join(", ")
                    )));
                }
                // llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise.
                (gemma_sentencepiece(&meta, gguf)?, true)
            }
            other => {
                return Err(tok_err(format!(
                    "GGUF tokenizer model `{other}` not supported (only byte-level BPE `gpt2`, \
                     and SentencePiece `llama` for Gemma)"
                )))
            }
        };
        add_marked_tokens(&mut inner, &meta);

        let flag = |key: &str| gguf.get(key).and_then(GgufValue::as_bool);
        let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(add_bos_default);
        let add_eos = flag("tokenizer.ggml.add_eos_token").unwrap_or(false);
        let id = |key: &str| gguf.get(key).and_then(GgufValue::as_u64).map(|v| v as u32);
        let bos = id("tokenizer.ggml.bos_token_id");
        let eos = id("tokenizer.ggml.eos_token_id");
        let bos_added = if add_bos { bos } else { None };
        let eos_added = if add_eos { eos } else { None };
        if let Some(tp) = added_specials_template(&meta.tokens, bos_added, eos_added)? {
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

/// The `tokenizer.ggml.*` arrays every vocabulary has.
struct TokenizerMeta {
    model: String,
    /// Token strings, as the file spells them, index = id.
    tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` (1 = normal when the key is absent).
    types: Vec<u64>,
}

impl TokenizerMeta {
    fn read(gguf: &GgufFile) -> Result<Self> {
        let model = gguf
            .get("tokenizer.ggml.model")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| tok_err("GGUF has no tokenizer.ggml.model"))?
            .to_string();
        let tokens = gguf_strings(gguf, "tokenizer.ggml.tokens")?;
        let types: Vec<u64> = match gguf
            .get("tokenizer.ggml.token_type")
            .and_then(GgufValue::as_array)
        {
            Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(tok_err(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        Ok(Self {
            model,
            tokens,
            types,
        })
    }

    /// The tokens of one type, in id order.
    fn of_type(&self, ty: u64) -> impl Iterator<Item = &str> {
        self.tokens
            .iter()
            .zip(&self.types)
            .filter(move |(_, &t)| t == ty)
            .map(|(s, _)| s.as_str())
    }
}

fn gguf_strings(gguf: &GgufFile, key: &str) -> Result<Vec<String>> {
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
}

/// GPT-2's byte → printable-character table (`bytes_to_unicode`): printable Latin-1 bytes stand
/// for themselves, the other 68 are shifted to U+0100 and up, in byte order.
fn byte_level_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        *slot = if printable {
            char::from(b as u8)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).expect("below U+0200")
        };
    }
    table
}

/// The byte-level BPE of a `gpt2`-type vocabulary.
///
/// A token written with characters outside the byte alphabet (a llama.cpp conversion can store a
/// few in plain UTF-8) is respelled in it, as transformers does, so that it stays reachable.
fn byte_level_bpe(meta: &TokenizerMeta, gguf: &GgufFile) -> Result<tokenizers::Tokenizer> {
    let table = byte_level_alphabet();
    // Membership through the tokenizers crate's own set (hashed), the table only for byte → char.
    let alphabet = ByteLevel::alphabet();
    let in_alphabet = |s: &str| s.chars().all(|c| alphabet.contains(&c));
    let vocab: Vocab = meta
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let spelled = if in_alphabet(t) {
                t.clone()
            } else {
                t.bytes().map(|b| table[b as usize]).collect()
            };
            (spelled, i as u32)
        })
        .collect();
    let merges: Vec<(String, String)> = gguf_strings(gguf, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            let mut it = m.splitn(2, ' ');
            match (it.next(), it.next()) {
                (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                _ => Err(tok_err(format!("bad merge `{m}`"))),
            }
        })
        .collect::<Result<_>>()?;
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
    Ok(inner)
}

/// Gemma's SentencePiece vocabulary, as transformers rebuilds it from a GGUF (`gemma_tokenizer`
/// there, over `GemmaTokenizer`): a BPE over the pieces with byte fallback (`<0xNN>`) and
/// `<unk>`, a normalizer that writes every space as `▁` and no dummy prefix (Gemma never puts a
/// `▁` before the first word; a file asking for one is refused rather than silently ignored).
///
/// Two quirks of the files are undone first: pieces of two or more spaces are stored with real
/// spaces, while the text they must match has `▁`s, so they are respelled; and a GGUF lists no
/// merges, so they are recovered from the vocabulary ([`sentencepiece_merges`]).
fn gemma_sentencepiece(meta: &TokenizerMeta, gguf: &GgufFile) -> Result<tokenizers::Tokenizer> {
    if gguf
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(GgufValue::as_bool)
        == Some(true)
    {
        return Err(tok_err(
            "GGUF Gemma vocabulary with tokenizer.ggml.add_space_prefix = true not supported \
             (Gemma tokenizers add no dummy prefix)",
        ));
    }
    let pieces: Vec<String> = meta
        .tokens
        .iter()
        .map(|t| {
            if t.contains(' ') && t.chars().all(py_isspace) {
                std::iter::repeat_n(SPM_SPACE, t.chars().count()).collect()
            } else {
                t.clone()
            }
        })
        .collect();
    // Later duplicates win, as in a Python dict built in id order.
    let vocab: Vocab = pieces
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = sentencepiece_merges(&pieces, &vocab);
    let unk = gguf
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(GgufValue::as_u64)
        .and_then(|i| pieces.get(i as usize).cloned())
        .unwrap_or_else(|| "<unk>".to_string());
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk)
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(tok_err)?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_normalizer(Some(
        Replace::new(" ", SPM_SPACE.to_string()).map_err(tok_err)?,
    ));
    // transformers' `GemmaTokenizer` keeps this split on " "; after the normalizer there is no
    // space left, so every run of text between added tokens is one BPE word.
    inner.with_pre_tokenizer(Some(
        Split::new(
            SplitPattern::String(" ".into()),
            SplitDelimiterBehavior::MergedWithPrevious,
            false,
        )
        .map_err(tok_err)?,
    ));
    let decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPM_SPACE.to_string(), " ")
            .map_err(tok_err)?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

/// Python's `str.isspace` for one character: Unicode White_Space plus the four information
/// separators U+001C..U+001F, which Python counts and Rust does not.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// BPE merges that rebuild a SentencePiece vocabulary whose file lists none.
///
/// Every way to cut a piece into two pieces that are both in the vocabulary is a merge; merges
/// are ranked by the piece they make, earlier id first (Gemma's scores do not follow its merge
/// order, its id order does), and among the cuts of one piece the longer left part first. This
/// is transformers' `generate_merges` with the id-order keys its Gemma builder passes, so the BPE
/// below gives its ids.
pub fn sentencepiece_merges(pieces: &[String], vocab: &Vocab) -> Vec<(String, String)> {
    let mut merges = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        // A duplicated piece is ranked once, at its last id (the one the vocabulary keeps).
        if vocab.get(piece) != Some(&(i as u32)) {
            continue;
        }
        let cuts: Vec<usize> = piece.char_indices().map(|(k, _)| k).skip(1).collect();
        for &k in cuts.iter().rev() {
            let (l, r) = piece.split_at(k);
            if vocab.contains_key(l) && vocab.contains_key(r) {
                merges.push((l.to_string(), r.to_string()));
            }
        }
    }
    merges
}

/// Add the tokens the file marks CONTROL as special tokens and USER_DEFINED ones as plain added
/// tokens, both matched whole in the raw (unnormalised) text.
///
/// In a byte-level vocabulary a CONTROL token spelled outside the byte alphabet is a mislabel
/// of llama.cpp's converter and is left out, and a USER_DEFINED token is only added when the
/// vocabulary has it under that spelling, as transformers does.
fn add_marked_tokens(inner: &mut tokenizers::Tokenizer, meta: &TokenizerMeta) {
    let alphabet = ByteLevel::alphabet();
    let spelled_ok = |s: &str| meta.model != "gpt2" || s.chars().all(|c| alphabet.contains(&c));
    let control: Vec<AddedToken> = meta
        .of_type(TOKEN_CONTROL)
        .filter(|s| spelled_ok(s))
        .map(|s| AddedToken::from(s.to_string(), true).normalized(false))
        .collect();
    inner.add_special_tokens(&control);
    let user: Vec<AddedToken> = meta
        .of_type(TOKEN_USER_DEFINED)
        .filter(|s| inner.token_to_id(s).is_some())
        .map(|s| AddedToken::from(s.to_string(), false).normalized(false))
        .collect();
    inner.add_tokens(&user);
}

/// The post-processor that puts BOS before and EOS after a sequence (transformers'
/// `bos:0 $A:0 eos:0`, pairs `… bos:1 $B:1 eos:1`); `None` when neither is added.
fn added_specials_template(
    tokens: &[String],
    bos: Option<u32>,
    eos: Option<u32>,
) -> Result<Option<TemplateProcessing>> {
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let name = |id: u32| {
        tokens
            .get(id as usize)
            .cloned()
            .ok_or_else(|| tok_err(format!("special token id {id} out of range")))
    };
    let bos = bos.map(|id| name(id).map(|t| (t, id))).transpose()?;
    let eos = eos.map(|id| name(id).map(|t| (t, id))).transpose()?;
    let seq = |part: &str, type_id: u32| {
        let mut s = Vec::new();
        if let Some((t, _)) = &bos {
            s.push(format!("{t}:{type_id}"));
        }
        s.push(format!("${part}:{type_id}"));
        if let Some((t, _)) = &eos {
            s.push(format!("{t}:{type_id}"));
        }
        s.join(" ")
    };
    let single = seq("A", 0);
    let pair = format!("{single} {}", seq("B", 1));
    let specials: Vec<(String, u32)> = bos.into_iter().chain(eos).collect();
    let tp = TemplateProcessing::builder()
        .try_single(single)
        .map_err(tok_err)?
        .try_pair(pair)
        .map_err(tok_err)?
        .special_tokens(specials)
        .build()
        .map_err(tok_err)?;
    Ok(Some(tp))
}

/// The pre-tokenizer llama.cpp's `tokenizer.ggml.pre` names.
///
/// `smollm` (SmolLM/SmolLM2, StarCoder-style): single digits split off, then GPT-2's byte-level
/// regex, exactly the `Sequence[Digits(individual), ByteLevel]` of the model's own
/// `tokenizer.json` (and llama.cpp's regex list). transformers' GGUF loader omits the digit split,
/// so on text with runs of digits its ids differ from the model's own tokenizer; we follow the
/// model. `gpt2`/`default`: GPT-2's byte-level regex. `llama-bpe` and `qwen2` families: their
/// split regex, then bytes to the byte alphabet (no NFC: transformers' GGUF loader and llama.cpp
/// normalise nothing, although Qwen2's own `tokenizer.json` applies NFC).
fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerWrapper> {
    let split_then_bytes = |regex: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tok_err)?;
        Ok(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into())
    };
    let byte_level = ByteLevel::new(false, true, true);
    Ok(match pre {
        "smollm" | "starcoder" | "refact" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        "gpt2" | "default" | "gpt-2" | "olmo" | "phi-2" => byte_level.into(),
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" | "dbrx" | "falcon3" => {
            split_then_bytes(LLAMA3_SPLIT)?
        }
        "qwen2" | "deepseek-r1-qwen" => split_then_bytes(QWEN2_SPLIT)?,
        other => {
            return Err(tok_err(format!(
                "GGUF pre-tokenizer `{other}` not supported (smollm, gpt2, llama-bpe, qwen2)"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let t = byte_level_alphabet();
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], '\u{120}'); // Ġ
        assert_eq!(t[b'\n' as usize], '\u{10A}'); // Ċ
        assert_eq!(t[0], '\u{100}');
        assert_eq!(t[0xAD], '\u{143}');
        let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        // The same 256 characters as the tokenizers crate's ByteLevel alphabet.
        assert!(ByteLevel::alphabet().iter().all(|c| distinct.contains(c)));
        assert_eq!(ByteLevel::alphabet().len(), 256);
    }

    #[test]
    fn merges_rank_by_id_then_longer_left() {
        let pieces: Vec<String> = ["a", "b", "c", "ab", "bc", "abc", "ca"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let vocab: Vocab = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        let m = sentencepiece_merges(&pieces, &vocab);
        let want = [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc"), ("c", "a")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(l, r)| (l.to_string(), r.to_string()))
            .collect();
        assert_eq!(m, want);
    }

    #[test]
    fn python_whitespace() {
        assert!(py_isspace(' ') && py_isspace('\u{1f}') && py_isspace('\u{3000}'));
        assert!(!py_isspace('\u{2581}') && !py_isspace('a'));
    }

    #[test]
    fn template_names_bos_and_eos() {
        let tokens: Vec<String> = ["<pad>", "<eos>", "<bos>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(added_specials_template(&tokens, None, None)
            .unwrap()
            .is_none());
        assert!(added_specials_template(&tokens, Some(2), Some(1))
            .unwrap()
            .is_some());
        assert!(added_specials_template(&tokens, Some(7), None).is_err());
    }

    /// A metadata-only GGUF (version 3, no tensors) with these key/value pairs.
    enum Kv<'a> {
        Str(&'a str),
        Strs(&'a [&'a str]),
        I32s(&'a [i32]),
        U32(u32),
        Bool(bool),
    }

    fn gguf(kvs: &[(&str, Kv)]) -> GgufFile {
        let mut b = Vec::new();
        let string = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        for (key, v) in kvs {
            string(&mut b, key);
            match v {
                Kv::Str(s) => {
                    b.extend(8u32.to_le_bytes());
                    string(&mut b, s);
                }
                Kv::Strs(a) => {
                    b.extend(9u32.to_le_bytes());
                    b.extend(8u32.to_le_bytes());
                    b.extend((a.len() as u64).to_le_bytes());
                    a.iter().for_each(|s| string(&mut b, s));
                }
                Kv::I32s(a) => {
                    b.extend(9u32.to_le_bytes());
                    b.extend(5u32.to_le_bytes());
                    b.extend((a.len() as u64).to_le_bytes());
                    a.iter().for_each(|x| b.extend(x.to_le_bytes()));
                }
                Kv::U32(x) => {
                    b.extend(4u32.to_le_bytes());
                    b.extend(x.to_le_bytes());
                }
                Kv::Bool(x) => {
                    b.extend(7u32.to_le_bytes());
                    b.push(*x as u8);
                }
            }
        }
        GgufFile::from_bytes(b).unwrap()
    }

    /// A toy Gemma vocabulary: specials, byte pieces for `A`, two letters, `▁`, their merges'
    /// products, and a user-defined run of two spaces (stored with real spaces, as in the files).
    const SPM_TOKENS: [&str; 11] = [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<0x41>",
        "a",
        "b",
        "ab",
        "\u{2581}",
        "\u{2581}ab",
        "  ",
    ];
    const SPM_TYPES: [i32; 11] = [3, 3, 3, 2, 6, 1, 1, 1, 1, 1, 4];

    fn toy_gemma(arch: &str, space_prefix: bool) -> GgufFile {
        gguf(&[
            ("general.architecture", Kv::Str(arch)),
            ("tokenizer.ggml.model", Kv::Str("llama")),
            ("tokenizer.ggml.tokens", Kv::Strs(&SPM_TOKENS)),
            ("tokenizer.ggml.token_type", Kv::I32s(&SPM_TYPES)),
            ("tokenizer.ggml.bos_token_id", Kv::U32(2)),
            ("tokenizer.ggml.eos_token_id", Kv::U32(1)),
            ("tokenizer.ggml.unknown_token_id", Kv::U32(3)),
            ("tokenizer.ggml.padding_token_id", Kv::U32(0)),
            ("tokenizer.ggml.add_space_prefix", Kv::Bool(space_prefix)),
        ])
    }

    #[test]
    fn gemma_vocabulary_runs_as_bpe_with_byte_fallback() {
        let tok = Tokenizer::from_gguf(&toy_gemma("gemma3", false)).unwrap();
        // BOS (no add_bos key: on by default for SentencePiece), no dummy prefix, ` ` as `▁`, the
        // two-space piece respelled `▁▁`, `A` through its byte piece.
        assert_eq!(tok.encode("ab ab").unwrap(), [2, 7, 9]);
        assert_eq!(tok.encode_plain("  ").unwrap(), [10]);
        // Merges rank by the id of the piece they make: `▁`+`ab` (id 9) before `▁`+`▁` (id 10).
        assert_eq!(tok.encode_plain("ab  ab").unwrap(), [7, 8, 9]);
        assert_eq!(tok.encode_plain("A<eos>").unwrap(), [4, 1]);
        assert_eq!(tok.decode(&[7, 10, 9, 4]).unwrap(), "ab   abA");
        assert_eq!(tok.pad_id(), 0);
    }

    #[test]
    fn unsupported_vocabularies_are_named() {
        let err = |g: GgufFile| Tokenizer::from_gguf(&g).err().unwrap().to_string();
        let e = err(toy_gemma("llama", false));
        assert!(e.contains("`llama`") && e.contains("not supported"), "{e}");
        let e = err(toy_gemma("gemma3", true));
        assert!(e.contains("add_space_prefix"), "{e}");
        let e = err(gguf(&[
            ("tokenizer.ggml.model", Kv::Str("bert")),
            ("tokenizer.ggml.tokens", Kv::Strs(&["a"])),
        ]));
        assert!(e.contains("`bert`"), "{e}");
        let e = err(gguf(&[
            ("tokenizer.ggml.model", Kv::Str("gpt2")),
            ("tokenizer.ggml.pre", Kv::Str("chatglm-bpe")),
            ("tokenizer.ggml.tokens", Kv::Strs(&["a", "b", "ab"])),
            ("tokenizer.ggml.merges", Kv::Strs(&["a b"])),
        ]));
        assert!(e.contains("`chatglm-bpe`"), "{e}");
    }

    #[test]
    fn unknown_pre_tokenizer_is_named() {
        let err = pre_tokenizer_for("chatglm-bpe").err().unwrap().to_string();
        assert!(err.contains("chatglm-bpe"), "{err}");
    }
}
