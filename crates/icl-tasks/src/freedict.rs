//! A reader for FreeDict dictionaries in dictd format: a `.index` file of
//! `headword<TAB>offset<TAB>length` lines, where offset and length are written in dictd's base-64
//! (`A`–`Z`, `a`–`z`, `0`–`9`, `+`, `/`, most significant digit first), pointing into the
//! uncompressed `.dict` text. The `.dict.dz` is dictzip, i.e. an ordinary gzip member with an extra
//! header field, so it is decompressed whole with flate2.

use std::io::Read;
use std::path::Path;

use crate::error::{Result, TaskError};

/// One dictionary entry: the headword and the raw entry text (headword line, senses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub headword: String,
    pub text: String,
}

/// Decodes a dictd base-64 number.
pub fn decode_b64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut v: u64 = 0;
    for c in s.bytes() {
        let d = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        v = v * 64 + d as u64;
    }
    Some(v)
}

/// Reads a dictionary: `stem.index` and `stem.dict.dz` (or an uncompressed `stem.dict`).
/// Entries whose headword starts with `00database` (metadata) are skipped.
pub fn read_dictionary(index: &Path, dict: &Path) -> Result<Vec<Entry>> {
    let raw = std::fs::read(dict).map_err(|e| TaskError::io(dict, e))?;
    let data = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| TaskError::io(dict, e))?;
        out
    } else {
        raw
    };
    let idx = std::fs::read_to_string(index).map_err(|e| TaskError::io(index, e))?;
    let mut entries = Vec::new();
    for (i, l) in idx.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = l.split('\t').collect();
        if parts.len() < 3 {
            return Err(TaskError::parse(
                index,
                i + 1,
                "dictd index",
                "expected 3 tab-separated fields",
            ));
        }
        let (Some(off), Some(len)) = (decode_b64(parts[1]), decode_b64(parts[2])) else {
            return Err(TaskError::parse(
                index,
                i + 1,
                "dictd index",
                "bad base-64 offset/length",
            ));
        };
        let (off, len) = (off as usize, len as usize);
        if off.checked_add(len).is_none_or(|end| end > data.len()) {
            return Err(TaskError::parse(
                index,
                i + 1,
                "dictd index",
                format!(
                    "entry {off}+{len} past end of dictionary data ({} bytes)",
                    data.len()
                ),
            ));
        }
        if parts[0].starts_with("00database") {
            continue;
        }
        let text = String::from_utf8_lossy(&data[off..off + len]).into_owned();
        entries.push(Entry {
            headword: parts[0].to_string(),
            text,
        });
    }
    Ok(entries)
}

/// The translations of an entry's first sense, in order: the first line after the headword line,
/// stripped of a leading `1. `, split on `,` and `;`.
pub fn first_sense_translations(entry: &Entry) -> Vec<String> {
    let mut lines = entry
        .text
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty());
    let Some(first) = lines.next() else {
        return Vec::new();
    };
    let body = match first.split_once(". ") {
        Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => first,
    };
    body.split([',', ';'])
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_dictd_base64() {
        assert_eq!(decode_b64("A"), Some(0));
        assert_eq!(decode_b64("B"), Some(1));
        assert_eq!(decode_b64("BA"), Some(64));
        assert_eq!(decode_b64("LOB"), Some(11 * 4096 + 14 * 64 + 1));
        assert_eq!(decode_b64("/"), Some(63));
        assert_eq!(decode_b64("a-b"), None);
        assert_eq!(decode_b64(""), None);
    }

    #[test]
    fn first_sense_of_numbered_and_plain_entries() {
        let e = Entry {
            headword: "abacus".into(),
            text: "abacus /æbəkəs/\n1. abaque\n2. boulier\n".into(),
        };
        assert_eq!(first_sense_translations(&e), vec!["abaque"]);
        let e = Entry {
            headword: "abase".into(),
            text: "abase /əbeis/\nabaisser, abattre; humilier\n".into(),
        };
        assert_eq!(
            first_sense_translations(&e),
            vec!["abaisser", "abattre", "humilier"]
        );
        let e = Entry {
            headword: "x".into(),
            text: "x\n".into(),
        };
        assert!(first_sense_translations(&e).is_empty());
    }
}
