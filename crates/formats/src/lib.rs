//! File formats and safe I/O, written once for every crate of the workspace.
//!
//! - [`input`]: user-named inputs opened safely: regular files only (a FIFO or device is a typed
//!   error, never a hang), whole-file reads that cannot abort, decompression bounded by a [`Limit`].
//! - [`idx`]: MNIST / Fashion-MNIST idx files (gzip detected by its magic bytes, sizes bounded).
//! - [`pickle`]: a pickle interpreter that rebuilds plain values and never imports or calls anything,
//!   with limits on nesting depth and copied size (TorchScript archives, legacy `torch.save` files,
//!   CIFAR-10 python batches).
//! - [`host_tensor`]: [`HostTensor`], the one row-major f32 host tensor, and safetensors files read
//!   into it (f32, f64, f16, bf16) or written from it.
//! - [`atomic`]: files written through a temporary sibling and a rename, and checkpoint directories
//!   swapped in only once complete.
//! - [`font`]: the TrueType font every plot draws its text with.
//! - [`lock`]: [`RunLock`], one writer per run folder (an advisory lock naming its holder).
//! - [`guard`]: [`OutputGuard`], outputs that are (or resolve to, or lie inside) an input refused.
//! - [`metrics`]: [`MetricsLog`], a JSONL log truncated to the resumed step on resume.
//! - [`run`]: [`compare_options`], a resumed run's options checked against the saved run's.
//! - [`tfevents`]: [`EventWriter`], TensorBoard event files (scalars, PNG images) for a live view.
//! - `npz` (feature `npz`): float64 arrays written as an `np.savez` archive, atomically, and read
//!   back with every declared shape checked against the bytes before anything is allocated.
//! - `zipped` (feature `zip`): zip members read with their inflated size bounded.
//!
//! Every failure is a [`FormatError`] that names the file (and the tensor, opcode or byte) it is
//! about; the other crates convert it into their own error with `#[from]`.

pub mod atomic;
pub mod error;
pub mod font;
pub mod guard;
pub mod host_tensor;
pub mod idx;
pub mod input;
pub mod lock;
pub mod metrics;
#[cfg(feature = "npz")]
pub mod npz;
pub mod pickle;
pub mod run;
pub mod tfevents;
#[cfg(feature = "zip")]
pub mod zipped;

pub use atomic::{
    clean_leftovers, resume_dir, write_atomic, write_atomic_with, AtomicWriter, CheckpointSwap,
};
pub use error::{io_error, is_no_space, FormatError, Result};
pub use guard::{check_output, OutputError, OutputGuard};
pub use host_tensor::{parse_safetensors, read_safetensors, write_safetensors, HostTensor};
pub use idx::{read_idx, read_idx_images, read_idx_labels, Idx};
pub use input::{
    check_regular_file, open_input, read_bounded, read_input, read_input_to_string, Limit,
};
pub use lock::{Holder, LockError, RunLock};
pub use metrics::{MetricsError, MetricsLog};
pub use run::{compare_options, OptionsChanged};
pub use tfevents::{read_events, EventWriter};
