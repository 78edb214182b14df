//! Outputs that would destroy inputs are refused before anything is computed.
//!
//! `edm denoise --output MODEL_DIR/model.safetensors` replaced a 4 MB model with 12 KB of output and
//! `fid ref --dest ds.zip --data ds.zip` replaced the dataset with its statistics. An [`OutputGuard`]
//! built from a command's inputs refuses an output path that is an input, resolves to one (through
//! symbolic links, `..`, or a hard link to the same file), or lies inside an input folder (a model or
//! dataset directory). Paths are compared after canonicalisation; an output that does not exist yet is
//! resolved through its nearest existing ancestor, so `MODEL_DIR/new/../model.safetensors` and a
//! link to `MODEL_DIR` are caught as well.

use std::path::{Component, Path, PathBuf};

/// Why an output path was refused.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "refusing to write {output}: it is the input {input}{via}; choose another output path"
    )]
    IsInput {
        output: PathBuf,
        input: PathBuf,
        /// `" (through links: REAL)"` when the two paths differ as written.
        via: String,
    },
    #[error(
        "refusing to write {output}: it lies inside the input folder {input}{via}; write it \
         outside the model/dataset folder"
    )]
    InsideInput {
        output: PathBuf,
        input: PathBuf,
        via: String,
    },
    #[error("cannot resolve the output path {path}: {source}")]
    Resolve {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Input {
    given: PathBuf,
    real: PathBuf,
    is_dir: bool,
    id: Option<(u64, u64)>,
}

/// The inputs of one command, against which every output path is checked.
#[derive(Debug, Default)]
pub struct OutputGuard {
    inputs: Vec<Input>,
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

impl OutputGuard {
    /// A guard over `inputs` (files or folders). Inputs that do not exist are skipped: they cannot be
    /// overwritten, and the command reports them itself when it opens them (some are not paths at
    /// all, such as a Hugging Face repo id).
    pub fn new<P: AsRef<Path>>(inputs: impl IntoIterator<Item = P>) -> Self {
        let inputs = inputs
            .into_iter()
            .filter_map(|p| {
                let given = p.as_ref().to_path_buf();
                let real = std::fs::canonicalize(&given).ok()?;
                let meta = std::fs::metadata(&real).ok()?;
                Some(Input {
                    given,
                    real,
                    is_dir: meta.is_dir(),
                    id: file_id(&meta),
                })
            })
            .collect();
        OutputGuard { inputs }
    }

    /// Refuses `output` if writing it could overwrite an input.
    pub fn check(&self, output: &Path) -> Result<(), OutputError> {
        let real = resolve(output)?;
        let id = std::fs::metadata(&real).ok().as_ref().and_then(file_id);
        for input in &self.inputs {
            let same_path = real == input.real;
            let same_file = !input.is_dir && id.is_some() && id == input.id;
            if same_path || same_file {
                let via = if output == input.given {
                    String::new()
                } else if same_path {
                    format!(" (both resolve to {})", input.real.display())
                } else {
                    " (a hard link to the same file)".to_string()
                };
                return Err(OutputError::IsInput {
                    output: output.to_path_buf(),
                    input: input.given.clone(),
                    via,
                });
            }
            if input.is_dir && real.starts_with(&input.real) {
                return Err(OutputError::InsideInput {
                    output: output.to_path_buf(),
                    input: input.given.clone(),
                    via: format!(" (the output resolves to {})", real.display()),
                });
            }
        }
        Ok(())
    }
}

/// Checks one output against a list of inputs: `OutputGuard::new(inputs).check(output)`.
pub fn check_output<P: AsRef<Path>>(
    output: &Path,
    inputs: impl IntoIterator<Item = P>,
) -> Result<(), OutputError> {
    OutputGuard::new(inputs).check(output)
}

/// Where a write to `path` would land: the canonical path if it exists (following links, also a
/// dangling one's target), else the canonical nearest existing ancestor joined with the rest,
/// with `.` and `..` of the rest applied lexically.
fn resolve(path: &Path) -> Result<PathBuf, OutputError> {
    let fail = |source| OutputError::Resolve {
        path: path.to_path_buf(),
        source,
    };
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(fail)?.join(path)
    };
    let mut current = absolute;
    // Follows dangling links by hand (canonicalize fails on them); 40 like the kernel's limit.
    for _ in 0..40 {
        if let Ok(real) = std::fs::canonicalize(&current) {
            return Ok(real);
        }
        match std::fs::read_link(&current) {
            Ok(target) => {
                let parent = current.parent().unwrap_or(Path::new("/")).to_path_buf();
                current = parent.join(target);
            }
            Err(_) => break,
        }
    }
    // Not there yet: canonicalise the nearest existing ancestor, append the rest.
    let mut rest = Vec::new();
    let mut base = current.as_path();
    let real_base = loop {
        match std::fs::canonicalize(base) {
            Ok(real) => break real,
            Err(e) => match (base.parent(), base.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    base = parent;
                }
                // `..` or the root that does not resolve.
                _ => return Err(fail(e)),
            },
        }
    };
    let mut out = real_base;
    for part in rest.iter().rev() {
        match Path::new(part).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::CurDir) | None => {}
            _ => out.push(part),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir(root: &Path) -> PathBuf {
        let m = root.join("model");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("model.safetensors"), b"weights").unwrap();
        std::fs::write(m.join("config.json"), b"{}").unwrap();
        m
    }

    #[test]
    fn an_output_equal_to_an_input_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path().join("ds.zip");
        std::fs::write(&ds, b"zip").unwrap();
        // `fid ref --dest ds.zip --data ds.zip`
        let err = check_output(&ds, [&ds]).unwrap_err();
        assert!(matches!(err, OutputError::IsInput { .. }), "{err}");
        assert!(err.to_string().contains("ds.zip"), "{err}");
        // The same file through `..` and through a relative path.
        let odd = dir.path().join("sub/../ds.zip");
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        assert!(matches!(
            check_output(&odd, [&ds]),
            Err(OutputError::IsInput { .. })
        ));
        // A different file beside it is fine.
        check_output(&dir.path().join("ref.npz"), [&ds]).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn links_to_an_input_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let m = model_dir(dir.path());
        let weights = m.join("model.safetensors");
        // A symbolic link to the file, one to the folder, a dangling-looking chain, a hard link.
        std::os::unix::fs::symlink(&weights, dir.path().join("w.link")).unwrap();
        std::os::unix::fs::symlink(&m, dir.path().join("m.link")).unwrap();
        std::fs::hard_link(&weights, dir.path().join("w.hard")).unwrap();
        let guard = OutputGuard::new([&m]);
        for out in ["w.link", "m.link/model.safetensors", "m.link/new.png"] {
            let err = guard.check(&dir.path().join(out)).unwrap_err();
            assert!(
                matches!(err, OutputError::InsideInput { .. }),
                "{out}: {err}"
            );
        }
        let file_guard = OutputGuard::new([&weights]);
        for out in ["w.link", "w.hard", "m.link/model.safetensors"] {
            let err = file_guard.check(&dir.path().join(out)).unwrap_err();
            assert!(matches!(err, OutputError::IsInput { .. }), "{out}: {err}");
        }
        file_guard
            .check(&dir.path().join("m.link/other.png"))
            .unwrap();
    }

    #[test]
    fn outputs_inside_an_input_folder_are_refused_even_before_they_exist() {
        let dir = tempfile::tempdir().unwrap();
        let m = model_dir(dir.path());
        let guard = OutputGuard::new([&m]);
        // `edm denoise --output MODEL_DIR/model.safetensors`
        let err = guard.check(&m.join("model.safetensors")).unwrap_err();
        assert!(matches!(err, OutputError::InsideInput { .. }), "{err}");
        assert!(err.to_string().contains("inside the input folder"), "{err}");
        for out in [
            "model",
            "model/new/deeper/x.png",
            "elsewhere/../model/y.png",
        ] {
            assert!(guard.check(&dir.path().join(out)).is_err(), "{out}");
        }
        guard.check(&dir.path().join("samples/x.png")).unwrap();
        guard.check(&dir.path().join("model-out.png")).unwrap();
    }

    #[test]
    fn missing_inputs_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let guard = OutputGuard::new([dir.path().join("HuggingFaceTB/SmolLM2-135M")]);
        guard.check(&dir.path().join("out.safetensors")).unwrap();
    }
}
