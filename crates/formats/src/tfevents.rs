//! TensorBoard event files (`events.out.tfevents.*`): scalars and PNG images a run writes while it
//! goes, so `tensorboard --logdir OUTDIR` shows the losses, the FID and the sample grids live.
//!
//! Why our own writer: the one Rust crate for it, `tensorboard-rs` 0.5.9, is unmaintained since 2021
//! and pulls `image` 0.23 and `protobuf` 2 beside the workspace's `image` 0.25. The format is small
//! and frozen: a file is a sequence of TFRecords (`u64` length, masked CRC-32C of the length, the
//! bytes, masked CRC-32C of the bytes; little-endian), each holding one `tensorflow.Event` protocol
//! buffer. We encode the four messages we need by hand (Event, Summary, Summary.Value,
//! Summary.Image); the golden test compares the bytes with what TensorBoard's own Python writer
//! produces for the same events (`tools/make_tfevents_fixture.py`).
//!
//! Every event is flushed when written: TensorBoard polls the file, and a killed run keeps every
//! event written before the kill (a torn last record is skipped by TensorBoard's reader).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{io_error, Result};

const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TFRecord's masked CRC-32C (a rotation and an offset, so that a CRC of CRCs is not trivial).
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let c = CASTAGNOLI.checksum(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, ((field << 3) | 2) as u64);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A varint field (wire type 0); protobuf writes negative int64/int32 as their 64-bit two's complement.
fn varint_field(out: &mut Vec<u8>, field: u32, v: i64) {
    varint(out, (field << 3) as u64);
    varint(out, v as u64);
}

/// What an event carries.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind<'a> {
    /// The first event of every file: `brain.Event:2`.
    FileVersion(&'a str),
    /// `Summary{ value { tag, simple_value } }`.
    Scalar { tag: &'a str, value: f32 },
    /// `Summary{ value { tag, image { height, width, colorspace, encoded_image_string } } }`;
    /// colorspace 1 grayscale, 3 RGB, 4 RGBA.
    Image {
        tag: &'a str,
        height: u32,
        width: u32,
        colorspace: u32,
        png: &'a [u8],
    },
}

/// The `tensorflow.Event` protocol buffer of one event (fields in number order, as protobuf
/// serialisers write them; zero-valued scalars omitted, as proto3 does).
pub fn encode_event(wall_time: f64, step: i64, kind: &EventKind<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    if wall_time != 0.0 {
        varint(&mut out, (1 << 3) | 1);
        out.extend_from_slice(&wall_time.to_le_bytes());
    }
    if step != 0 {
        varint_field(&mut out, 2, step);
    }
    match kind {
        EventKind::FileVersion(v) => bytes_field(&mut out, 3, v.as_bytes()),
        EventKind::Scalar { tag, value } => {
            let mut val = Vec::new();
            bytes_field(&mut val, 1, tag.as_bytes());
            varint(&mut val, (2 << 3) | 5);
            val.extend_from_slice(&value.to_le_bytes());
            let mut summary = Vec::new();
            bytes_field(&mut summary, 1, &val);
            bytes_field(&mut out, 5, &summary);
        }
        EventKind::Image {
            tag,
            height,
            width,
            colorspace,
            png,
        } => {
            let mut img = Vec::new();
            for (field, v) in [(1, *height), (2, *width), (3, *colorspace)] {
                if v != 0 {
                    varint_field(&mut img, field, v as i64);
                }
            }
            bytes_field(&mut img, 4, png);
            let mut val = Vec::new();
            bytes_field(&mut val, 1, tag.as_bytes());
            bytes_field(&mut val, 4, &img);
            let mut summary = Vec::new();
            bytes_field(&mut summary, 1, &val);
            bytes_field(&mut out, 5, &summary);
        }
    }
    out
}

/// Seconds since the Unix epoch, as TensorBoard's `wall_time`.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An open event file in a run folder.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<seconds>.<host>.<pid>` (a new file per process, as
    /// TensorBoard's writers do; TensorBoard reads every file of the folder) and writes the
    /// file-version event.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            now() as u64,
            std::process::id()
        ));
        let file = File::create(&path).map_err(|e| io_error(&path, e))?;
        let mut w = Self {
            path,
            file: BufWriter::new(file),
        };
        w.write(0, &EventKind::FileVersion("brain.Event:2"))?;
        Ok(w)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event stamped now, and flushes it.
    pub fn write(&mut self, step: i64, kind: &EventKind<'_>) -> Result<()> {
        let bytes = record(&encode_event(now(), step, kind));
        self.file
            .write_all(&bytes)
            .and_then(|_| self.file.flush())
            .map_err(|e| io_error(&self.path, e))
    }

    /// A scalar (a loss, the FID) at `step`.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<()> {
        self.write(step, &EventKind::Scalar { tag, value })
    }

    /// A PNG image (a sample grid) at `step`; `channels` 1, 3 or 4.
    pub fn png(
        &mut self,
        tag: &str,
        step: i64,
        png: &[u8],
        height: u32,
        width: u32,
        channels: u32,
    ) -> Result<()> {
        self.write(
            step,
            &EventKind::Image {
                tag,
                height,
                width,
                colorspace: channels,
                png,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32C's check value, and TFRecord's masking of it.
    #[test]
    fn crc32c_and_mask_match_the_reference_values() {
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xe306_9283);
        // Masking as tensorflow/core/lib/hash/crc32c.h: ((c >> 15) | (c << 17)) + 0xa282ead8,
        // computed by hand for c = 0xe3069283.
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
    }

    /// The events TensorBoard's Python writer produced for the same inputs
    /// (`tools/make_tfevents_fixture.py`), byte for byte: file version, two scalars (one with a
    /// negative value, one at a large step) and a 2x3 RGB PNG image.
    #[test]
    fn events_equal_tensorboards_own_writer() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tfevents.bin");
        let want = std::fs::read(&fixture).unwrap();
        let png: Vec<u8> = (0u8..=200).step_by(7).collect();
        let mut got = Vec::new();
        for (t, step, kind) in [
            (1_700_000_000.25, 0, EventKind::FileVersion("brain.Event:2")),
            (
                1_700_000_001.5,
                3,
                EventKind::Scalar {
                    tag: "loss/G",
                    value: 0.6875,
                },
            ),
            (
                1_700_000_002.75,
                123_456_789_012,
                EventKind::Scalar {
                    tag: "fid",
                    value: -2.5e-4,
                },
            ),
            (
                1_700_000_003.0,
                7,
                EventKind::Image {
                    tag: "samples/grid",
                    height: 2,
                    width: 3,
                    colorspace: 3,
                    png: &png,
                },
            ),
        ] {
            got.extend(record(&encode_event(t, step, &kind)));
        }
        assert_eq!(got, want);
    }

    /// The writer's file starts with the version record and holds one record per call, each
    /// framed with valid masked CRCs.
    #[test]
    fn writer_appends_framed_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalar("loss", 1, 0.5).unwrap();
        w.png("grid", 1, &[1, 2, 3], 1, 1, 3).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let mut at = 0;
        let mut n = 0;
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let lcrc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(lcrc, masked_crc32c(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            let dcrc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(dcrc, masked_crc32c(data));
            if n == 0 {
                assert!(data.ends_with(b"brain.Event:2"));
            }
            at += 16 + len;
            n += 1;
        }
        assert_eq!(n, 3);
    }
}
