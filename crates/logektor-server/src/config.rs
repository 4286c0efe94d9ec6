//! Settings of `logektor serve`: flags, `LOGEKTOR_*` environment variables and defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::units::parse_bytes;

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("invalid duration {text:?}: {err}"))
}

/// `SOURCE=KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteKeyArg {
    pub source: String,
    pub key: String,
}

fn parse_write_key(text: &str) -> Result<WriteKeyArg, String> {
    let (source, key) = text
        .split_once('=')
        .ok_or_else(|| format!("expected SOURCE=KEY, got {text:?}"))?;
    if source.is_empty() || key.is_empty() {
        return Err(format!(
            "expected SOURCE=KEY with both parts non-empty, got {text:?}"
        ));
    }
    Ok(WriteKeyArg {
        source: source.to_owned(),
        key: key.to_owned(),
    })
}

/// Options of `logektor serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Folder for the table, the WAL and the keys.
    #[arg(long, env = "LOGEKTOR_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Address to listen on. The default accepts only local connections.
    #[arg(long, env = "LOGEKTOR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A write key for a source, as SOURCE=KEY (repeatable; comma-separated in the env var).
    /// Without any, a key for source "default" is created on first start and kept in the data
    /// folder.
    #[arg(long = "write-key", env = "LOGEKTOR_WRITE_KEYS", value_delimiter = ',', value_parser = parse_write_key)]
    pub write_keys: Vec<WriteKeyArg>,

    /// A read token for /v1/sql (repeatable; comma-separated in the env var). Without any, one
    /// is created on first start and kept in the data folder.
    #[arg(
        long = "read-token",
        env = "LOGEKTOR_READ_TOKENS",
        value_delimiter = ','
    )]
    pub read_tokens: Vec<String>,

    /// Flush the buffer into the table when its oldest event is this old.
    #[arg(long, env = "LOGEKTOR_FLUSH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub flush_interval: Duration,

    /// Flush when this many events are buffered.
    #[arg(long, env = "LOGEKTOR_FLUSH_ROWS", default_value_t = 250_000)]
    pub flush_rows: usize,

    /// Flush when the buffer holds this much memory.
    #[arg(long, env = "LOGEKTOR_FLUSH_BYTES", default_value = "128MiB", value_parser = parse_bytes)]
    pub flush_bytes: usize,

    /// Answer 503 with Retry-After while the buffer holds more than this (flushes failing or
    /// falling behind).
    #[arg(long, env = "LOGEKTOR_MAX_BUFFER_BYTES", default_value = "512MiB", value_parser = parse_bytes)]
    pub max_buffer_bytes: usize,

    /// Start a new WAL segment file after this size.
    #[arg(long, env = "LOGEKTOR_WAL_SEGMENT_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub wal_segment_bytes: usize,

    /// Wall-clock limit of one SQL query.
    #[arg(long, env = "LOGEKTOR_QUERY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub query_timeout: Duration,

    /// Memory shared by all running SQL queries; a query needing more fails with a clear error.
    #[arg(long, env = "LOGEKTOR_QUERY_MEMORY_LIMIT", default_value = "1GiB", value_parser = parse_bytes)]
    pub query_memory_limit: usize,

    /// Largest result one SQL query may return.
    #[arg(long, env = "LOGEKTOR_QUERY_MAX_RESULT_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub query_max_result_bytes: usize,

    /// Threads for Parquet encoding and SQL (0 = one per core).
    #[arg(long, env = "LOGEKTOR_COMPUTE_THREADS", default_value_t = 0)]
    pub compute_threads: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_key_needs_both_parts() {
        assert_eq!(
            parse_write_key("web=abc"),
            Ok(WriteKeyArg {
                source: "web".into(),
                key: "abc".into()
            })
        );
        assert!(parse_write_key("web").is_err());
        assert!(parse_write_key("=abc").is_err());
    }
}
