//! Logektor's server: the HTTP face of the write and read paths, and the process around them.
//!
//! - [`config::ServeArgs`]: every setting, as a flag and a `LOGEKTOR_*` environment variable.
//! - [`keys`]: write keys (one per source) and read tokens, created on first start.
//! - [`http`]: the axum router — Segment's tracking API on `/v1/{call}`, SQL on `/v1/sql`,
//!   `/health` — and [`http::ApiError`], the one place errors become HTTP statuses.
//! - [`run`]: two runtimes (requests; and compute for Parquet encoding and DataFusion), the
//!   flusher, and the ordered shutdown: stop accepting → drain requests → flush → exit.
//! - [`offline`]: the same SQL without a server, over the table plus the WAL's unflushed records.
//! - [`import`] and [`export`]: backfill from NDJSON, CSV or Parquet (resumable, deduplicated by
//!   message id) and export of a time range.

pub mod config;
mod conn;
pub mod export;
pub mod http;
pub mod import;
pub mod keys;
pub mod metrics;
pub mod offline;
mod run;
pub mod sources;
pub mod units;

pub use run::run;

/// Paths under the data folder.
pub mod layout {
    use std::path::{Path, PathBuf};

    pub fn table_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("events")
    }

    pub fn wal_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("wal")
    }

    pub fn keys_file(data_dir: &Path) -> PathBuf {
        data_dir.join("keys.json")
    }

    pub fn node_id_file(data_dir: &Path) -> PathBuf {
        data_dir.join("node_id")
    }

    /// Today's salt of cookieless visitor ids.
    pub fn salt_file(data_dir: &Path) -> PathBuf {
        data_dir.join("visitor_salt.json")
    }
}
