//! The read side: SQL with DataFusion over the `events` Delta table *and* the in-memory buffer.
//!
//! Flow position: `ingest → WAL → buffer → Parquet → Delta → **query**`.
//!
//! - [`EventsSource`] is the seam to whoever holds the data: it hands out an [`EventsView`], a
//!   consistent pair of (table snapshot, buffered batches not yet in that snapshot). The server's
//!   ingest buffer implements it; the offline CLI builds one from the table and the WAL.
//! - [`provider::EventsProvider`] is the `events` table DataFusion sees: a union of the Delta scan
//!   and the buffer, with filters and projections pushed into both.
//! - [`QueryEngine`] runs one read-only statement with a memory pool, a timeout and a
//!   result-size cap, returning a [`QueryStream`].
//! - `shared` computes a CTE referenced more than once a single time (DataFusion 55 inlines
//!   every reference).
//! - [`functions`] replaces DataFusion functions where ours give the same answers faster
//!   (`date_trunc` in UTC).
//! - [`distinct_views`] counts distinct text past rows that repeat a dictionary entry already
//!   counted (equal dictionary-decoded strings share one address).
//! - [`json_filter`] answers `json_as_text(doc, key) = 'value'` in filters with a substring
//!   search first and the JSON parser only on the documents that can match.
//! - [`like_memo`] matches `LIKE '%…%'` in filters once per distinct value of a batch (equal
//!   dictionary-decoded strings share one view).
//! - [`run_count`] answers a partial `count(*) … GROUP BY` with one row per run of equal keys
//!   where the table's sort order leaves them in runs.
//! - [`running_window`] computes `lag` and running `sum`/`max`/`min` windows over sorted
//!   partitions in one pass per batch (the session reports' windows).
//! - [`sort_runs`] feeds full sorts 64Ki-row batches: fewer sorted runs for their merge.
//! - [`broadcast_join`] broadcasts a join's build side when it is an aggregate grouped by the
//!   join keys (the reports' visitor resolution): no repartition of the events it probes with.
//! - [`format`] encodes result batches as JSON, NDJSON, CSV, Arrow IPC or Parquet, one chunk per
//!   batch so large results stream.
//!
//! Invariant: the query path never writes: no DDL, DML, COPY or SET, no file-reading table
//! functions or URL tables; spilling only to the engine's own bounded temporary files.

pub mod broadcast_join;
pub mod distinct_views;
mod engine;
mod error;
pub mod format;
pub mod functions;
#[doc(hidden)]
pub mod fuzzing;
pub mod grouped_distinct;
pub mod json_filter;
pub mod like_memo;
pub mod provider;
pub mod reports;
pub mod request;
pub mod run_count;
pub mod running_window;
mod shared;
pub mod sort_runs;
#[cfg(test)]
mod test_support;

pub use engine::{
    EventsSource, EventsView, QueryConfig, QueryEngine, QueryStream, StaticSource,
    default_memory_limit,
};
pub use error::{QueryError, Result};
pub use format::{BatchEncoder, Format};
pub use provider::Scope;
