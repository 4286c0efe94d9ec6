//! The write path, without HTTP: a request body becomes durable, queryable, then a table commit.
//!
//! Flow position: `ingest → WAL → buffer → Parquet → Delta` (this crate drives all of it).
//!
//! - [`Ingester::ingest`] decodes a body into a record batch (rejecting bad input before
//!   anything is stored), appends the raw body and its [`record::IngestRecord`] metadata to the
//!   WAL, and returns once the group is fsync'd. The WAL thread has by then pushed the batch into
//!   the [`buffer::Buffer`], so the events are visible to SQL before the caller is acknowledged.
//! - [`Ingester::run_flusher`] moves the buffer into the Delta table on rows, bytes or age,
//!   committing the highest WAL sequence it covers in the same commit, then drops those batches
//!   from the buffer and deletes WAL segments that are wholly committed.
//! - [`Ingester::run_maintenance`] compacts, expires and vacuums the table on a schedule, and
//!   [`Ingester::forget`] erases a person; each catches the writer's snapshot up afterwards.
//! - On open, WAL records above the table's committed sequence are decoded again (decoding is a
//!   pure function of what the WAL stores) and put back into the buffer.
//!
//! Invariants: no event is acknowledged before its WAL group is fsync'd; a WAL segment is deleted
//! only after a commit covering all its records; a query sees each acknowledged event exactly
//! once (the buffer hides every batch whose sequence the visible snapshot already holds).

pub mod buffer;
pub mod dedup;
mod ingester;
pub mod maintenance;
pub mod record;

pub use buffer::{Buffer, BufferStats};
pub use dedup::DedupConfig;
pub use ingester::{FlushConfig, IngestConfig, IngestError, Ingester, OpenError};
pub use maintenance::MaintenanceConfig;
