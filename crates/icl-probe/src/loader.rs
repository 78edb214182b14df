//! Finding and loading models: a Hugging Face folder, a `.gguf` file, or a repo id already in the
//! local hf-hub cache (offline: nothing is downloaded).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::Backend;

use crate::arch;
use crate::config::{Architecture, ModelConfig};
use crate::error::{ProbeError, Result};
use crate::gguf::{GgufError, GgufFile};
use crate::linear::LoadOptions;
use crate::model::{HostModel, Model};
use crate::tokenizer::Tokenizer;
use crate::weights::{load_safetensors_into, safetensors_files, WeightMap};

/// Where a model lives on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A folder with `config.json` and `model.safetensors` (or sharded with an index).
    HfDir(PathBuf),
    /// A single GGUF file.
    Gguf(PathBuf),
}

/// Resolve a path or a hub repo id (`HuggingFaceTB/SmolLM2-135M`, looked up in the local hf-hub
/// cache, `$HF_HOME` / `~/.cache/huggingface/hub`).
pub fn resolve(spec: &str) -> Result<ModelSource> {
    let p = Path::new(spec);
    // Something that exists but is neither a file nor a folder (a FIFO, a device, a socket) is
    // refused here, not mistaken for a hub repo id or opened and waited on.
    if let Ok(meta) = std::fs::metadata(p) {
        if !meta.is_file() && !meta.is_dir() {
            return Err(ProbeError::NotRegularFile {
                path: p.to_path_buf(),
                kind: formats::input::file_kind(&meta),
            });
        }
    }
    if p.is_file() {
        if p.extension().and_then(|e| e.to_str()) == Some("gguf") {
            return Ok(ModelSource::Gguf(p.to_path_buf()));
        }
        return Err(ProbeError::NotFound(format!(
            "{spec}: a file that is not .gguf (give the model folder instead)"
        )));
    }
    if p.is_dir() {
        return Ok(ModelSource::HfDir(p.to_path_buf()));
    }
    if spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/') {
        let cache = hf_hub::Cache::from_env();
        let repo = cache.model(spec.to_string());
        if let Some(cfg) = repo.get("config.json") {
            if let Some(dir) = cfg.parent() {
                return Ok(ModelSource::HfDir(dir.to_path_buf()));
            }
        }
        return Err(ProbeError::NotFound(format!(
            "{spec}: not a path, and not in the local hf-hub cache at {} (download it first, e.g. \
             `huggingface-cli download {spec}`)",
            cache.path().display()
        )));
    }
    Err(ProbeError::NotFound(format!(
        "{spec}: no such file or folder"
    )))
}

/// Refuse anything but a regular file (links followed) before it is opened for reading: opening
/// a FIFO blocks until a writer appears, reading a device may never end, and a folder gives an
/// `EISDIR` far from the cause. The check is the workspace's one ([`formats::check_regular_file`]);
/// only the error is icl-probe's.
pub fn check_regular_file(path: &Path) -> Result<()> {
    match formats::check_regular_file(path) {
        Ok(_) => Ok(()),
        Err(formats::FormatError::NotRegularFile { path, kind }) => {
            Err(ProbeError::NotRegularFile { path, kind })
        }
        Err(formats::FormatError::Io { path, source }) => Err(ProbeError::Io { path, err: source }),
        Err(other) => Err(ProbeError::Io {
            path: path.to_path_buf(),
            err: std::io::Error::other(other.to_string()),
        }),
    }
}

/// A config error from a file's contents, with the file's path in place of the generic origin
/// (`config.json`, `GGUF metadata`) the parsers know, so the message says which file to fix.
fn in_file(path: &Path) -> impl FnOnce(ProbeError) -> ProbeError + '_ {
    move |e| match e {
        ProbeError::Config { origin, msg } => ProbeError::Config {
            origin: if origin == "config.json" {
                path.display().to_string()
            } else {
                format!("{}, {origin}", path.display())
            },
            msg,
        },
        other => other,
    }
}

/// Parse a folder's `config.json` into a validated config.
fn hf_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    ModelConfig::from_hf_json(&read_json(&path)?).map_err(in_file(&path))
}

/// A GGUF's validated config.
fn gguf_config(g: &GgufFile, path: &Path) -> Result<ModelConfig> {
    arch::llama::config_from_gguf(g).map_err(in_file(path))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    check_regular_file(path)?;
    let text = std::fs::read_to_string(path).map_err(|err| ProbeError::Io {
        path: path.to_path_buf(),
        err,
    })?;
    serde_json::from_str(&text).map_err(|err| ProbeError::Json {
        path: path.to_path_buf(),
        err,
    })
}

fn open_gguf(path: &Path) -> Result<GgufFile> {
    check_regular_file(path)?;
    GgufFile::open(path).map_err(|err| match err {
        GgufError::Io(err) => ProbeError::Io {
            path: path.to_path_buf(),
            err,
        },
        err => ProbeError::Gguf {
            path: path.to_path_buf(),
            err,
        },
    })
}

fn build<B: Backend>(
    cfg: ModelConfig,
    mut w: WeightMap,
    opts: &LoadOptions,
    device: &B::Device,
) -> Result<Model<B>> {
    let storage = opts.weights.resolve::<B>(device)?;
    let host: HostModel = match cfg.architecture {
        Architecture::Llama | Architecture::Qwen2 => arch::llama::load(&cfg, &mut w)?,
        Architecture::Gpt2 => arch::gpt2::load(&cfg, &mut w)?,
        Architecture::GptNeoX => arch::gpt_neox::load(&cfg, &mut w)?,
        Architecture::Gemma3 => arch::gemma3::load(&cfg, &mut w)?,
    };
    Ok(Model::from_host(cfg, host, storage, device))
}

/// Read the config of a model without loading weights.
pub fn load_config(spec: &str) -> Result<ModelConfig> {
    match resolve(spec)? {
        ModelSource::HfDir(dir) => hf_config(&dir),
        ModelSource::Gguf(path) => gguf_config(&open_gguf(&path)?, &path),
    }
}

impl<B: Backend> Model<B> {
    /// Load weights (no tokenizer) from a folder, a `.gguf`, or a cached hub repo id, stored as
    /// [`WeightStorage::Auto`](crate::WeightStorage::Auto) chooses.
    pub fn load(spec: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        Self::load_with(spec, device, &LoadOptions::default())
    }

    /// [`load`](Self::load) with options (where the weights live).
    pub fn load_with(
        spec: impl AsRef<Path>,
        device: &B::Device,
        opts: &LoadOptions,
    ) -> Result<Self> {
        load_any(spec.as_ref(), device, opts, false).map(|(m, _)| m)
    }
}

/// Load a model and its tokenizer (`tokenizer.json` in the folder, or the GGUF's own).
pub fn load_model<B: Backend>(
    spec: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(Model<B>, Tokenizer)> {
    load_model_with(spec, device, &LoadOptions::default())
}

/// [`load_model`] with options (where the weights live).
pub fn load_model_with<B: Backend>(
    spec: impl AsRef<Path>,
    device: &B::Device,
    opts: &LoadOptions,
) -> Result<(Model<B>, Tokenizer)> {
    let (m, t) = load_any(spec.as_ref(), device, opts, true)?;
    Ok((m, t.expect("tokenizer requested")))
}

/// Load only the tokenizer.
pub fn load_tokenizer(spec: impl AsRef<Path>) -> Result<Tokenizer> {
    let spec = spec.as_ref().to_string_lossy().to_string();
    match resolve(&spec)? {
        ModelSource::HfDir(dir) => hf_tokenizer(&dir),
        ModelSource::Gguf(path) => Tokenizer::from_gguf(&open_gguf(&path)?),
    }
}

fn hf_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let cfg = hf_config(dir)?;
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        return Err(ProbeError::NotFound(format!("{}", path.display())));
    }
    check_regular_file(&path)?;
    Ok(Tokenizer::from_file(&path)?.with_special_ids(cfg.bos_token_id, cfg.eos_token_id))
}

fn load_any<B: Backend>(
    spec: &Path,
    device: &B::Device,
    opts: &LoadOptions,
    with_tokenizer: bool,
) -> Result<(Model<B>, Option<Tokenizer>)> {
    match resolve(&spec.to_string_lossy())? {
        ModelSource::HfDir(dir) => {
            let cfg = hf_config(&dir)?;
            let mut w = WeightMap::new(dir.display().to_string());
            for f in safetensors_files(&dir)? {
                load_safetensors_into(&f, &mut w)?;
            }
            let tok = if with_tokenizer {
                Some(hf_tokenizer(&dir)?)
            } else {
                None
            };
            Ok((build(cfg, w, opts, device)?, tok))
        }
        ModelSource::Gguf(path) => {
            // Shared: packed weights borrow the mapped file for the model's lifetime.
            let g = Arc::new(open_gguf(&path)?);
            let cfg = gguf_config(&g, &path)?;
            let w = arch::llama::gguf_weights(&g, &cfg, &path.display().to_string())?;
            let tok = if with_tokenizer {
                Some(Tokenizer::from_gguf(&g)?)
            } else {
                None
            };
            Ok((build(cfg, w, opts, device)?, tok))
        }
    }
}
