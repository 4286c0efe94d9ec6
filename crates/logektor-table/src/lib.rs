//! The `events` Delta Lake table: the only crate that knows how the table is laid out.
//!
//! Flow position: `ingest → WAL → buffer → **Parquet → Delta** → query`.
//!
//! - [`EventTable`] is the writer's handle: it creates the table partitioned by `event_date`,
//!   sorts each flush for the common filters, encodes Parquet (zstd, dictionaries, page-level
//!   statistics and page index) and commits it with a Delta *application transaction*
//!   `(app_id, wal_seq)` in the same atomic commit. The table itself therefore records which WAL
//!   records it holds, which is what makes replay after a crash exactly-once.
//! - [`TableSnapshot`] is an immutable view for readers: one table version plus the WAL position
//!   that version covers for this writer, and a DataFusion provider over it.
//!
//! - [`maintenance`]: compaction, vacuum, checkpoints, retention and erasure, each an ordinary
//!   Delta commit beside the flusher's appends.
//!
//! Invariant: a commit that contains the rows of WAL record `n` records a transaction version
//! `>= n` in that same commit; there is no window in which rows are in the table but their WAL
//! position is not.

mod counts;
pub mod faults;
mod layout;
pub mod maintenance;
mod scan;
mod table;
#[cfg(test)]
mod testing;

pub use counts::{CountFromFileIndex, is_partial_row_count};
pub use layout::{
    Merged, SortedMerge, SortedRows, WRITE_CHUNK_ROWS, flush_writer_properties, writer_properties,
};
pub use table::{EventTable, TableLocation, TableSnapshot};

/// Errors of the table layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("delta table error: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("invalid table location {location:?}: {reason}")]
    Location { location: String, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("object store error: {0}")]
    ObjectStore(#[from] deltalake::ObjectStoreError),
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

impl Error {
    /// A commit lost to a concurrent one that it conflicts with (e.g. two compactions, or a
    /// compaction and a delete of the same files); nothing was changed, and retrying is safe.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::Delta(deltalake::DeltaTableError::Transaction {
                source: deltalake::kernel::transaction::TransactionError::CommitConflict(_),
            })
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
