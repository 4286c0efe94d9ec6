//! The write-ahead log: where an ingest request becomes durable before it is acknowledged.
//!
//! Flow position: `ingest → **WAL** → buffer → Parquet → Delta → query`.
//!
//! - A [`Wal`] owns one writer thread. [`Wal::append`] hands it an opaque payload plus an item
//!   (the decoded rows); the thread takes every append that queued up while the previous
//!   `fdatasync` ran, writes them in one go, syncs once (group commit), then hands the items to
//!   the `apply` callback in sequence order and only then completes the appends. So by the time
//!   a caller hears "durable", its rows are already in the buffer, in WAL order, and no later
//!   sequence number can reach the buffer before an earlier one.
//! - The log is a folder of segment files named by their first sequence number. A record is
//!   `len u32 | crc32c u32 | seq u64 | payload`, little endian; the checksum covers the sequence
//!   number and the payload. On open, a torn or corrupt tail of the last segment (a crash in
//!   mid-write) is detected by length and checksum and cut off; damage anywhere else is an error.
//! - [`Wal::remove_through`] deletes whole segments whose records are all committed to the table.
//!
//! Invariant: an append completes with `Ok(seq)` only after the bytes of its record are
//! fsync'd; if a sync fails the log refuses every later append (the kernel may have dropped
//! dirty pages, so nothing after that point could be trusted).

mod segment;
mod writer;

use std::path::{Path, PathBuf};

pub use segment::{Record, read_dir_records};
pub use writer::{Pending, Wal, WalConfig, WalStats};

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("WAL I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("WAL segment {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the WAL is closed")]
    Closed,
    #[error("the WAL failed earlier and refuses writes until restart: {0}")]
    Failed(String),
    /// A write failed (e.g. the disk is full) and was undone; later appends may succeed.
    #[error("the WAL could not write this group (retry later): {0}")]
    WriteFailed(String),
}

impl Error {
    /// A copy for each waiter of a failed group (`std::io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::WriteFailed(reason) => Self::WriteFailed(reason.clone()),
            Self::Failed(reason) => Self::Failed(reason.clone()),
            other => Self::Failed(other.to_string()),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
