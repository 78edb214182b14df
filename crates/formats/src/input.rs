//! Opening what a user names as an input, so that no reader can hang, abort or read without end.
//!
//! Every reader that opens a user-supplied path goes through [`open_input`] (or [`read_input`]):
//!
//! - Only regular files are read. A FIFO blocks `open` until a writer appears (forever, for a
//!   careless `mkfifo model.gguf`), `/dev/zero` never ends, and a folder fails far from the cause.
//!   The file is opened non-blocking and its type checked on the open descriptor, so a path swapped
//!   for a FIFO between the check and the open cannot hang either.
//! - Whole-file reads reserve their buffer with `try_reserve`, so a file larger than the memory is a
//!   typed [`FormatError::TooLarge`] rather than an allocation abort.
//! - Decompression ([`read_bounded`]) stops one byte past a limit derived from the header's declared
//!   size: a gzip or zip bomb is refused after reading at most `limit + 1` bytes.
//!
//! Limits that a real user might exceed on purpose come with an environment variable to raise them
//! ([`Limit`]); the error says which.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{io_err, FormatError, Result};

/// A size limit with the environment variable that raises it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The limit in bytes (after the environment override).
    pub bytes: u64,
    /// The variable that overrides it (`NAME=BYTES`), named in the error.
    pub env: &'static str,
}

impl Limit {
    /// `default` bytes unless `env` holds a positive integer (bytes; a `K`, `M`, `G` or `T` suffix,
    /// powers of 1024, is accepted). An unparsable value keeps the default rather than silently
    /// lifting the limit.
    pub fn from_env(env: &'static str, default: u64) -> Limit {
        let bytes = std::env::var(env)
            .ok()
            .and_then(|v| parse_size(&v))
            .unwrap_or(default);
        Limit { bytes, env }
    }

    /// The error for `size` bytes (or more, when `at_least`) of `what` in `path`.
    pub fn error(
        &self,
        path: &Path,
        what: impl Into<String>,
        size: u64,
        at_least: bool,
    ) -> FormatError {
        FormatError::TooLarge {
            path: path.to_path_buf(),
            what: what.into(),
            size: if at_least {
                format!("more than {}", human(size.saturating_sub(1)))
            } else {
                human(size)
            },
            limit: human(self.bytes),
            env: self.env,
        }
    }

    /// `Ok` when `size` fits under the limit.
    pub fn check(&self, path: &Path, what: impl Into<String>, size: u64) -> Result<()> {
        if size > self.bytes {
            Err(self.error(path, what, size, false))
        } else {
            Ok(())
        }
    }
}

/// Parses `123`, `64K`, `3M`, `2G`, `1T` (powers of 1024); `None` for anything else or zero.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 10),
        'M' => (&s[..s.len() - 1], 20),
        'G' => (&s[..s.len() - 1], 30),
        'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let n: u64 = digits.trim().parse().ok()?;
    let v = n.checked_mul(1u64 << shift)?;
    (v > 0).then_some(v)
}

/// `1536` → `"1536 bytes (1.5 KiB)"`: exact for scripts, readable for people.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{bytes} bytes ({v:.1} {})", UNITS[unit])
}

/// What a non-regular file is, in words.
pub fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

fn not_regular(path: &Path, meta: &std::fs::Metadata) -> FormatError {
    FormatError::NotRegularFile {
        path: path.to_path_buf(),
        kind: file_kind(meta),
    }
}

/// Refuses anything but a regular file (links followed) without opening it; returns its metadata.
pub fn check_regular_file(path: &Path) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.is_file() {
        Ok(meta)
    } else {
        Err(not_regular(path, &meta))
    }
}

/// Opens a user-named input for reading: a regular file, or a typed error. Never blocks on a FIFO.
pub fn open_input(path: &Path) -> Result<File> {
    check_regular_file(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // O_NONBLOCK: if the path became a FIFO after the check, `open` returns at once instead of
    // waiting for a writer; on a regular file the flag changes nothing.
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(0o4000);
    }
    let file = options.open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok(file)
}

/// Reads a whole user-named input. The buffer is reserved with `try_reserve`, so a file larger than
/// the memory is [`FormatError::TooLarge`], not an abort; `limit`, when given, refuses larger files
/// before reading (configs and other small text files).
pub fn read_input(path: &Path, limit: Option<Limit>) -> Result<Vec<u8>> {
    let mut file = open_input(path)?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if let Some(limit) = limit {
        limit.check(path, "the file", len)?;
    }
    let mut buf = Vec::new();
    reserve(&mut buf, len, path, "the file")?;
    // A file that grows while it is read is still bounded: one byte past its size at open is an error.
    (&mut file)
        .take(len + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    if buf.len() as u64 > len {
        return Err(FormatError::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(buf)
}

/// [`read_input`] as UTF-8 text.
pub fn read_input_to_string(path: &Path, limit: Option<Limit>) -> Result<String> {
    let bytes = read_input(path, limit)?;
    String::from_utf8(bytes).map_err(|e| FormatError::NotText {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Reserves `n` bytes (or a typed error naming the size when the memory cannot hold them).
pub fn reserve<T>(buf: &mut Vec<T>, n: u64, path: &Path, what: &str) -> Result<()> {
    let fail = || FormatError::OutOfMemory {
        path: path.to_path_buf(),
        what: what.to_string(),
        need: human(n.saturating_mul(std::mem::size_of::<T>() as u64)),
    };
    let n = usize::try_from(n).map_err(|_| fail())?;
    buf.try_reserve_exact(n).map_err(|_| fail())
}

/// Reads at most `limit.bytes` from a (decompressing) reader: one byte more is
/// [`FormatError::TooLarge`] naming `what`, so a stream that inflates without end is cut off after
/// `limit + 1` bytes. `expected`, when the header declares the size, is reserved up front (within the
/// limit) and a stream that runs past it is refused as well.
pub fn read_bounded(
    reader: impl Read,
    limit: Limit,
    expected: Option<u64>,
    path: &Path,
    what: &str,
) -> Result<Vec<u8>> {
    let cap = match expected {
        Some(n) => {
            limit.check(path, what, n)?;
            n
        }
        None => limit.bytes,
    };
    let mut buf = Vec::new();
    if let Some(n) = expected {
        reserve(&mut buf, n, path, what)?;
    }
    reader
        .take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| FormatError::Corrupt {
            path: path.to_path_buf(),
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    let got = buf.len() as u64;
    match expected {
        Some(n) if got > n => Err(FormatError::Corrupt {
            path: path.to_path_buf(),
            what: what.to_string(),
            reason: format!("runs past its declared size, {}", human(n)),
        }),
        None if got > cap => Err(limit.error(path, what, got, true)),
        _ => Ok(buf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size(" 2G "), Some(2 << 30));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(human(1536), "1536 bytes (1.5 KiB)");
    }

    #[test]
    fn folders_and_missing_paths_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_input(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::NotRegularFile {
                    kind: "a folder",
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            read_input(&dir.path().join("absent"), None),
            Err(FormatError::Io { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("model.gguf");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.map(|s| s.success()).unwrap_or(false) {
            let err = read_input(&fifo, None).unwrap_err();
            assert!(err.to_string().contains("FIFO"), "{err}");
        }
        let err = read_input(Path::new("/dev/zero"), None).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
    }

    #[test]
    fn limits_name_their_variable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, vec![b' '; 100]).unwrap();
        let limit = Limit {
            bytes: 10,
            env: "SOME_LIMIT",
        };
        let err = read_input(&p, Some(limit)).unwrap_err();
        assert!(err.to_string().contains("SOME_LIMIT"), "{err}");
        assert_eq!(read_input(&p, None).unwrap().len(), 100);
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_input_to_string(&p, None),
            Err(FormatError::NotText { offset: 0, .. })
        ));
    }

    #[test]
    fn bounded_reads_stop_one_byte_past_the_limit() {
        let p = Path::new("x.gz");
        let limit = Limit {
            bytes: 1000,
            env: "X_LIMIT",
        };
        // An endless stream is cut off.
        let err = read_bounded(std::io::repeat(0), limit, None, p, "content").unwrap_err();
        assert!(matches!(err, FormatError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("X_LIMIT"), "{err}");
        // A declared size over the limit is refused before reading.
        assert!(read_bounded(&[][..], limit, Some(5000), p, "member").is_err());
        // A stream longer than its declared size is corrupt.
        let err = read_bounded(&[0u8; 20][..], limit, Some(10), p, "member").unwrap_err();
        assert!(matches!(err, FormatError::Corrupt { .. }), "{err}");
        assert_eq!(
            read_bounded(&[7u8; 10][..], limit, Some(10), p, "member").unwrap(),
            vec![7; 10]
        );
    }
}
