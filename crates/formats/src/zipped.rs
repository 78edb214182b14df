//! Zip members (TorchScript storages, `.npz` arrays, images in a dataset zip) read with their
//! inflated size bounded: by the size the central directory declares, which must itself fit a
//! [`Limit`]. A member that inflates past its declared size (a zip bomb, or a corrupt archive) is
//! refused after one byte more, never read to exhaustion.

use std::io::{Read, Seek};
use std::path::Path;

use crate::error::{FormatError, Result};
use crate::input::{read_bounded, Limit};

/// The largest zip member read by default: 1 GiB (Inception's largest storage is 8 MiB, an FID
/// reference `sigma` 32 MiB). `ICLGDD_MAX_ZIP_MEMBER_BYTES` raises it.
pub const MAX_MEMBER_BYTES: u64 = 1 << 30;

/// The default member limit, with its environment override.
pub fn member_limit() -> Limit {
    Limit::from_env("ICLGDD_MAX_ZIP_MEMBER_BYTES", MAX_MEMBER_BYTES)
}

/// Opens a zip archive from a user-named path (a regular file only, see [`crate::open_input`]).
pub fn open_archive(path: &Path) -> Result<zip::ZipArchive<std::fs::File>> {
    let file = crate::input::open_input(path)?;
    zip::ZipArchive::new(file).map_err(|e| FormatError::Corrupt {
        path: path.to_path_buf(),
        what: "the zip archive".into(),
        reason: e.to_string(),
    })
}

/// Reads member `name` of `zip` (the archive at `path`, for errors), at most its declared size and
/// at most `limit`. `Ok(None)` when there is no such member.
pub fn read_member<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    limit: Limit,
    path: &Path,
) -> Result<Option<Vec<u8>>> {
    let member = match zip.by_name(name) {
        Ok(m) => m,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => {
            return Err(FormatError::Corrupt {
                path: path.to_path_buf(),
                what: format!("member `{name}`"),
                reason: e.to_string(),
            })
        }
    };
    read_entry(member, limit, path).map(Some)
}

/// Reads an opened member, bounded as [`read_member`] is.
pub fn read_entry<R: Read>(
    member: zip::read::ZipFile<'_, R>,
    limit: Limit,
    path: &Path,
) -> Result<Vec<u8>> {
    let declared = member.size();
    let what = format!("member `{}`", member.name());
    read_bounded(member, limit, Some(declared), path, &what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in members {
            w.start_file(*name, opts).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn members_are_read_within_their_declared_size_and_the_limit() {
        let bytes = archive(&[("a", b"hello"), ("big", &vec![0u8; 100_000])]);
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let p = Path::new("x.zip");
        let lim = Limit {
            bytes: 1000,
            env: "Z",
        };
        assert_eq!(read_member(&mut z, "a", lim, p).unwrap().unwrap(), b"hello");
        assert!(read_member(&mut z, "absent", lim, p).unwrap().is_none());
        // 100 kB of zeros deflate to a few hundred bytes but declare 100 kB: over the limit.
        let err = read_member(&mut z, "big", lim, p).unwrap_err();
        assert!(matches!(err, FormatError::TooLarge { .. }), "{err}");
    }

    /// A member whose central directory understates its inflated size (a zip bomb's trick) is cut
    /// off one byte past the declared size.
    #[test]
    fn a_member_inflating_past_its_declared_size_is_refused() {
        let mut bytes = archive(&[("m", &vec![7u8; 50_000])]);
        // Patch the uncompressed size (offset 22 in the local header, 24 in the central one) to 10.
        let set = |b: &mut Vec<u8>, at: usize| b[at..at + 4].copy_from_slice(&10u32.to_le_bytes());
        set(&mut bytes, 22);
        let cd = bytes
            .windows(4)
            .rposition(|w| w == [0x50, 0x4b, 0x01, 0x02])
            .unwrap();
        set(&mut bytes, cd + 24);
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let lim = Limit {
            bytes: 1 << 20,
            env: "Z",
        };
        let err = read_member(&mut z, "m", lim, Path::new("bomb.zip")).unwrap_err();
        assert!(matches!(err, FormatError::Corrupt { .. }), "{err}");
    }
}
