//! Image sources for FID: folders, EDM/StyleGAN dataset zips, Fashion-MNIST idx files and CIFAR-10's
//! python tarball. All yield uint8 `[N, C, H, W]` batches in a fixed order (sorted relative paths for
//! folders and zips, file order for idx and CIFAR), so features line up with names.

pub mod cifar;
pub mod subset;

use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use cifar::read_cifar10;
pub use formats::idx::{read_idx, read_idx_images, read_idx_labels};

use crate::error::{io_err, FidError, Result};

/// One decoded image (`[c, h, w]`, CHW pixels) or why it failed.
type Decoded = Result<([usize; 3], Vec<u8>)>;

/// A batch of uint8 images, row-major `[n, c, h, w]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch {
    pub data: Vec<u8>,
    pub shape: [usize; 4],
}

/// Image extensions read from folders and zips (EDM uses PIL's list; these are the ones this crate
/// decodes).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

enum Source {
    Folder {
        root: PathBuf,
    },
    Zip {
        archive: Box<zip::ZipArchive<std::fs::File>>,
    },
    Memory {
        data: Vec<u8>,
        chw: [usize; 3],
    },
}

/// An opened dataset. `open` picks the kind from the path.
pub struct Dataset {
    path: PathBuf,
    names: Vec<String>,
    source: Source,
    /// `[c, h, w]` of the first image; every image must match.
    chw: Option<[usize; 3]>,
    skipped: Skipped,
}

/// Paths an image folder's walk skipped because they lead to something already read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Links (or bind mounts) to a folder already walked, such as `loop -> .`.
    pub loops: usize,
    /// Image files already read through another path (a link or a hard link to the same file).
    pub duplicates: usize,
}

/// A file's identity after links: (device, inode).
#[cfg(unix)]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Without inodes, the canonical path stands in for the identity.
#[cfg(not(unix))]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::hash::{Hash, Hasher};
    let real = std::fs::canonicalize(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    real.hash(&mut h);
    Some((0, h.finish()))
}

/// Depth-first walk in name order for [`Dataset::folder`].
fn walk(
    root: &Path,
    dir: &Path,
    seen_dirs: &mut std::collections::HashSet<(u64, u64)>,
    seen_files: &mut std::collections::HashSet<(u64, u64)>,
    names: &mut Vec<String>,
    skipped: &mut Skipped,
) -> Result<()> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        entries.push(entry.map_err(io_err(dir))?.path());
    }
    entries.sort();
    for p in entries {
        if p.is_dir() {
            match file_id(&p) {
                Some(id) if !seen_dirs.insert(id) => skipped.loops += 1,
                _ => walk(root, &p, seen_dirs, seen_files, names, skipped)?,
            }
        } else if is_image(&p.to_string_lossy()) {
            if let Some(id) = file_id(&p) {
                if !seen_files.insert(id) {
                    skipped.duplicates += 1;
                    continue;
                }
            }
            let rel = p.strip_prefix(root).unwrap_or(&p);
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect();
            names.push(rel.join("/"));
        }
    }
    Ok(())
}

impl Dataset {
    /// Opens a folder of images (recursive), an EDM/StyleGAN dataset zip, an idx image file
    /// (`*-images-idx3-ubyte[.gz]`), or CIFAR-10's python tarball / `cifar-10-batches-py` folder.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if path.is_dir() {
            if path.join("data_batch_1").is_file() {
                return Self::cifar10(path);
            }
            return Self::folder(path);
        }
        if !path.exists() {
            return Err(FidError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            });
        }
        if name.ends_with(".zip") {
            Self::zip(path)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") || name.ends_with(".tar") {
            Self::cifar10(path)
        } else if name.contains("idx3-ubyte") {
            Self::idx(path)
        } else {
            Err(FidError::Dataset {
                path: path.to_path_buf(),
                reason: "unknown dataset kind: expected an image folder, a .zip, an idx3-ubyte \
                         file or CIFAR-10's python .tar.gz"
                    .into(),
            })
        }
    }

    /// All PNG/JPEG files under `root`, recursively, sorted by relative path (`/`-separated).
    ///
    /// Links are followed, but every folder is walked once and every file read once (identified by
    /// device and inode): a `loop -> .` link made one image read as 41, and a folder linked twice
    /// counted its images twice, both silently changing the statistics. Such repeats are skipped,
    /// not errors (a linked folder is a common way to assemble a dataset), and counted in
    /// [`Dataset::skipped`], which `fid` prints. Entries are visited in name order, so which of two
    /// paths to the same file is kept does not depend on the filesystem.
    pub fn folder(root: &Path) -> Result<Self> {
        let mut names = Vec::new();
        let mut skipped = Skipped::default();
        let mut seen_dirs = std::collections::HashSet::new();
        let mut seen_files = std::collections::HashSet::new();
        if let Some(id) = file_id(root) {
            seen_dirs.insert(id);
        }
        walk(
            root,
            root,
            &mut seen_dirs,
            &mut seen_files,
            &mut names,
            &mut skipped,
        )?;
        names.sort();
        Ok(Self {
            path: root.to_path_buf(),
            names,
            source: Source::Folder {
                root: root.to_path_buf(),
            },
            chw: None,
            skipped,
        })
    }

    /// What [`Dataset::folder`] left out because it was reached a second time.
    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// An EDM/StyleGAN dataset zip: every PNG/JPEG member, sorted by name (`dataset.json` labels are
    /// not needed for FID).
    pub fn zip(path: &Path) -> Result<Self> {
        let file = formats::open_input(path)?;
        let archive = zip::ZipArchive::new(file).map_err(|e| FidError::Zip {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut names: Vec<String> = archive
            .file_names()
            .filter(|n| is_image(n))
            .map(str::to_string)
            .collect();
        names.sort();
        Ok(Self {
            path: path.to_path_buf(),
            names,
            source: Source::Zip {
                archive: Box::new(archive),
            },
            chw: None,
            skipped: Skipped::default(),
        })
    }

    /// An idx image file (grayscale, `[N, 1, H, W]`).
    pub fn idx(path: &Path) -> Result<Self> {
        let (data, [n, h, w]) = read_idx_images(path)?;
        Ok(Self::memory(path, data, [n, 1, h, w]))
    }

    /// CIFAR-10's training batches (`[50000, 3, 32, 32]` for the full set).
    pub fn cifar10(path: &Path) -> Result<Self> {
        let (data, shape, _labels) = read_cifar10(path)?;
        Ok(Self::memory(path, data, shape))
    }

    /// Images already in memory, `[n, c, h, w]` uint8.
    pub fn memory(path: &Path, data: Vec<u8>, shape: [usize; 4]) -> Self {
        let [n, c, h, w] = shape;
        Self {
            path: path.to_path_buf(),
            names: (0..n).map(|i| format!("{i:08}")).collect(),
            source: Source::Memory {
                data,
                chw: [c, h, w],
            },
            chw: Some([c, h, w]),
            skipped: Skipped::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Keeps only the images at `indices` (in that order), e.g. from [`subset::edm_subset`].
    pub fn restrict(&mut self, indices: &[usize]) -> Result<()> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(FidError::Dataset {
                path: self.path.clone(),
                reason: format!("image index {bad} out of range ({} images)", self.len()),
            });
        }
        if let Source::Memory { data, chw } = &mut self.source {
            let per = chw.iter().product::<usize>();
            *data = indices
                .iter()
                .flat_map(|&i| data[i * per..(i + 1) * per].iter().copied())
                .collect();
        }
        self.names = indices.iter().map(|&i| self.names[i].clone()).collect();
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Image names in reading order (relative paths, or zero-padded indices for idx/CIFAR).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads images `start..start + count` (clipped to the dataset).
    pub fn read(&mut self, start: usize, count: usize) -> Result<ImageBatch> {
        let end = (start + count).min(self.len());
        let start = start.min(end);
        let n = end - start;
        let decoded: Vec<(String, Decoded)> = match &mut self.source {
            Source::Memory { data, chw } => {
                let per = chw.iter().product::<usize>();
                return Ok(ImageBatch {
                    data: data[start * per..end * per].to_vec(),
                    shape: [n, chw[0], chw[1], chw[2]],
                });
            }
            Source::Folder { root } => self.names[start..end]
                .par_iter()
                .map(|name| {
                    let p = root.join(name);
                    let r = formats::read_input(&p, None)
                        .map_err(FidError::from)
                        .and_then(|b| decode_image(&b, &p));
                    (name.clone(), r)
                })
                .collect(),
            Source::Zip { archive } => {
                let mut raw = Vec::with_capacity(n);
                for name in &self.names[start..end] {
                    let f = archive.by_name(name).map_err(|e| FidError::Zip {
                        path: self.path.clone(),
                        reason: format!("{name}: {e}"),
                    })?;
                    // Inflated at most to its declared size: an image member cannot be a zip bomb.
                    let b = formats::zipped::read_entry(
                        f,
                        formats::zipped::member_limit(),
                        &self.path,
                    )?;
                    raw.push((name.clone(), b));
                }
                let base = self.path.clone();
                raw.into_par_iter()
                    .map(|(name, b)| {
                        let r = decode_image(&b, &base.join(&name));
                        (name, r)
                    })
                    .collect()
            }
        };
        let mut data = Vec::new();
        for (name, r) in decoded {
            let (chw, pixels) = r?;
            match self.chw {
                None => self.chw = Some(chw),
                Some(first) if first != chw => {
                    return Err(FidError::Dataset {
                        path: self.path.join(&name),
                        reason: format!(
                        "image is {chw:?} (c, h, w) but the dataset's first image is {first:?}; \
                             FID needs one resolution and channel count"
                    ),
                    })
                }
                Some(_) => {}
            }
            data.extend_from_slice(&pixels);
        }
        let [c, h, w] = self.chw.unwrap_or([3, 0, 0]);
        Ok(ImageBatch {
            data,
            shape: [n, c, h, w],
        })
    }
}

/// Decodes a PNG/JPEG into CHW uint8: grayscale (with or without alpha) → 1 channel, everything else
/// → RGB (alpha dropped; palettes expanded).
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<([usize; 3], Vec<u8>)> {
    let img = image::load_from_memory(bytes).map_err(|e| FidError::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if img.color().channel_count() <= 2 {
        let g = img.to_luma8();
        Ok(([1, h, w], g.into_raw()))
    } else {
        let rgb = img.to_rgb8().into_raw();
        let mut chw = vec![0u8; 3 * h * w];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                chw[c * h * w + i] = px[c];
            }
        }
        Ok(([3, h, w], chw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, value: u8) {
        let img = image::GrayImage::from_pixel(4, 4, image::Luma([value]));
        img.save(path).unwrap();
    }

    /// `loop -> .` made one image read as 41 (the walk followed the link until the kernel's ELOOP).
    #[cfg(unix)]
    #[test]
    fn a_symlink_loop_does_not_multiply_images() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("a.png"), 1);
        std::os::unix::fs::symlink(".", dir.path().join("loop")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        png(&dir.path().join("sub/b.png"), 2);
        std::os::unix::fs::symlink("..", dir.path().join("sub/up")).unwrap();
        let ds = Dataset::open(dir.path()).unwrap();
        assert_eq!(ds.names(), ["a.png", "sub/b.png"]);
        assert_eq!(ds.skipped().loops, 2);
    }

    /// The same file reached twice (a link to a file, a hard link, a linked folder) is read once.
    #[cfg(unix)]
    #[test]
    fn duplicate_files_are_read_once_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("all")).unwrap();
        png(&d.join("all/a.png"), 1);
        png(&d.join("all/b.png"), 2);
        std::os::unix::fs::symlink("all/a.png", d.join("a-link.png")).unwrap();
        std::fs::hard_link(d.join("all/b.png"), d.join("b-hard.png")).unwrap();
        std::os::unix::fs::symlink("all", d.join("train")).unwrap();
        let mut ds = Dataset::open(d).unwrap();
        assert_eq!(ds.len(), 2, "{:?}", ds.names());
        let s = ds.skipped();
        assert_eq!(s.duplicates + s.loops, 2 + 1, "{s:?}");
        let batch = ds.read(0, 10).unwrap();
        assert_eq!(batch.shape, [2, 1, 4, 4]);
        // A plain folder has nothing skipped.
        let plain = Dataset::open(d.join("all")).unwrap();
        assert_eq!(plain.len(), 2);
        assert_eq!(plain.skipped(), Skipped::default());
    }
}
