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

/// `AGE` (every source) or `SOURCE=AGE`, e.g. `400d`, `mobile=90d`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionArg {
    pub source: Option<String>,
    pub max_age: Duration,
}

fn parse_retention(text: &str) -> Result<RetentionArg, String> {
    let (source, age) = match text.split_once('=') {
        Some((source, age)) if !source.is_empty() => (Some(source.to_owned()), age),
        Some(_) => return Err(format!("expected AGE or SOURCE=AGE, got {text:?}")),
        None => (None, text),
    };
    let max_age = parse_duration(age)?;
    if max_age.is_zero() {
        return Err(format!(
            "a retention of zero would delete everything: {text:?}"
        ));
    }
    Ok(RetentionArg { source, max_age })
}

/// The retention rules the flags describe; the last rule for a source wins.
pub fn retention_rules(args: &[RetentionArg]) -> logektor_table::maintenance::RetentionRules {
    let mut rules = logektor_table::maintenance::RetentionRules::default();
    for arg in args {
        match &arg.source {
            Some(source) => {
                rules.per_source.insert(source.clone(), arg.max_age);
            }
            None => rules.default = Some(arg.max_age),
        }
    }
    rules
}

/// `--scoped-read-token SOURCE[+SOURCE...]=TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedReadTokenArg {
    pub sources: Vec<String>,
    pub token: String,
}

fn parse_scoped_read_token(text: &str) -> Result<ScopedReadTokenArg, String> {
    let (sources, token) = text
        .split_once('=')
        .ok_or_else(|| format!("expected SOURCE[+SOURCE...]=TOKEN, got {text:?}"))?;
    let sources: Vec<String> = sources
        .split('+')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if sources.is_empty() || token.trim().is_empty() {
        return Err(format!("expected SOURCE[+SOURCE...]=TOKEN, got {text:?}"));
    }
    Ok(ScopedReadTokenArg {
        sources,
        token: token.trim().to_owned(),
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

    /// A read token that sees only some sources' rows, as SOURCE[+SOURCE...]=TOKEN
    /// (repeatable; comma-separated in the env var). Enforced in the query plan; EXPLAIN is
    /// refused to it.
    #[arg(long = "scoped-read-token", env = "LOGEKTOR_SCOPED_READ_TOKENS", value_delimiter = ',', value_parser = parse_scoped_read_token)]
    pub scoped_read_tokens: Vec<ScopedReadTokenArg>,

    /// An admin token for /v1/admin (repeatable; comma-separated in the env var). Without any,
    /// one is created on first start and kept in the data folder.
    #[arg(
        long = "admin-token",
        env = "LOGEKTOR_ADMIN_TOKENS",
        value_delimiter = ','
    )]
    pub admin_tokens: Vec<String>,

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
    /// falling behind, e.g. while compaction shares the CPU at full load). Twice the flush
    /// threshold: at full load the buffer peaks near 200 MiB while a flush runs, so this sheds
    /// only when flushes lag, and bounds what the lag can add to the RSS.
    #[arg(long, env = "LOGEKTOR_MAX_BUFFER_BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub max_buffer_bytes: usize,

    /// Ingest requests (POST bodies) handled at once; more are answered 429 with Retry-After
    /// at once instead of queueing, which bounds the memory bodies in flight can take.
    #[arg(long, env = "LOGEKTOR_MAX_CONCURRENT_INGEST", default_value_t = 256)]
    pub max_concurrent_ingest: usize,

    /// Open client connections; further connections wait in the kernel's accept queue.
    #[arg(long, env = "LOGEKTOR_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Time a client has to send a request's headers, and how long an idle keep-alive
    /// connection stays open.
    #[arg(long, env = "LOGEKTOR_HEADER_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Time a client has to send a request body.
    #[arg(long, env = "LOGEKTOR_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Test hook (RELIABILITY.md): abort the process at a named point, `NAME` or `NAME:N`
    /// for the N-th time the point is reached.
    #[arg(long, hide = true)]
    pub crash_at: Option<String>,

    /// Test hook (RELIABILITY.md): route the table's object-store calls through a switch file;
    /// while it holds `fail` they fail, while it holds `stall` they wait.
    #[arg(long, hide = true)]
    pub inject_store_faults: Option<PathBuf>,

    /// Start a new WAL segment file after this size.
    #[arg(long, env = "LOGEKTOR_WAL_SEGMENT_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub wal_segment_bytes: usize,

    /// Wall-clock limit of one SQL query.
    #[arg(long, env = "LOGEKTOR_QUERY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub query_timeout: Duration,

    /// Memory shared by all running SQL queries (default: half the machine's memory, at least
    /// 1 GiB); past it they spill, and a query that cannot fails with a clear error.
    #[arg(long, env = "LOGEKTOR_QUERY_MEMORY_LIMIT", value_parser = parse_bytes)]
    pub query_memory_limit: Option<usize>,

    /// Temporary files (in the OS's temporary directory) that sorts, joins and windows of all
    /// running queries may spill to once they exceed the memory limit; 0 disables spilling.
    #[arg(long, env = "LOGEKTOR_QUERY_MAX_SPILL", default_value = "16GiB", value_parser = parse_bytes)]
    pub query_max_spill: usize,

    /// Largest result one SQL query may return.
    #[arg(long, env = "LOGEKTOR_QUERY_MAX_RESULT_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub query_max_result_bytes: usize,

    /// How often the server looks for partitions to compact and applies retention (0 = only
    /// when asked through /v1/admin).
    #[arg(long, env = "LOGEKTOR_COMPACTION_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub compaction_interval: Duration,

    /// Compaction merges files up to about this size.
    #[arg(long, env = "LOGEKTOR_COMPACTION_TARGET_SIZE", default_value = "256MiB", value_parser = parse_bytes)]
    pub compaction_target_size: usize,

    /// A partition is compacted once it has this many files smaller than the target size.
    #[arg(long, env = "LOGEKTOR_COMPACTION_MIN_FILES", default_value_t = 16)]
    pub compaction_min_files: usize,

    /// How often files replaced by compaction, retention or erasure are deleted (0 = only when
    /// asked).
    #[arg(long, env = "LOGEKTOR_VACUUM_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub vacuum_interval: Duration,

    /// How long a replaced file stays for readers of older snapshots (external batch jobs
    /// included) before a vacuum may delete it.
    #[arg(long, env = "LOGEKTOR_VACUUM_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub vacuum_grace: Duration,

    /// Maximum age of events: AGE for every source, or SOURCE=AGE (repeatable; comma-separated
    /// in the env var), e.g. `--retention 400d --retention mobile=90d`. Without any, events are
    /// kept for ever.
    #[arg(long = "retention", env = "LOGEKTOR_RETENTION", value_delimiter = ',', value_parser = parse_retention)]
    pub retention: Vec<RetentionArg>,

    /// Duplicates of a message id (per source) are dropped when the first copy arrived within
    /// this window...
    #[arg(long, env = "LOGEKTOR_DEDUP_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub dedup_window: Duration,

    /// ...and is among this many most recent events (0 turns deduplication off). Each id
    /// remembered costs about 40 bytes.
    #[arg(long, env = "LOGEKTOR_DEDUP_CAPACITY", default_value_t = 1_000_000)]
    pub dedup_capacity: usize,

    /// What is stored of client IPs: keep, truncate (IPv4 last octet zeroed, IPv6 cut to /48)
    /// or drop; POLICY for every source or SOURCE=POLICY (repeatable).
    #[arg(long = "ip-policy", env = "LOGEKTOR_IP_POLICY", value_delimiter = ',')]
    pub ip_policies: Vec<String>,

    /// Give events without user or anonymous id of this source a cookieless visitor id (a
    /// keyed hash of a daily salt, IP, user agent and source); `*` for every source
    /// (repeatable).
    #[arg(
        long = "cookieless",
        env = "LOGEKTOR_COOKIELESS",
        value_delimiter = ','
    )]
    pub cookieless: Vec<String>,

    /// Store nothing from requests of this source that carry `DNT: 1` or `Sec-GPC: 1` (they
    /// are still answered 200); `*` for every source (repeatable).
    #[arg(
        long = "respect-dnt",
        env = "LOGEKTOR_RESPECT_DNT",
        value_delimiter = ','
    )]
    pub respect_dnt: Vec<String>,

    /// Only browsers on this origin may send events for the source: SOURCE=ORIGIN, e.g.
    /// `web=https://shop.example` (repeatable). Sources without any accept every origin.
    #[arg(
        long = "allowed-origin",
        env = "LOGEKTOR_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// A proxy (address or CIDR range) whose `X-Forwarded-For` header names the client
    /// (repeatable). Without any, the client is the connection's peer.
    #[arg(
        long = "trusted-proxy",
        env = "LOGEKTOR_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

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

    #[test]
    fn retention_rules_per_source_and_default() {
        let args: Vec<RetentionArg> = ["400d", "mobile=90d", "mobile=30d"]
            .into_iter()
            .map(|text| parse_retention(text).unwrap())
            .collect();
        let rules = retention_rules(&args);
        assert_eq!(rules.default, Some(Duration::from_secs(400 * 86_400)));
        assert_eq!(
            rules.per_source.get("mobile"),
            Some(&Duration::from_secs(30 * 86_400))
        );
        assert!(parse_retention("0s").is_err());
        assert!(parse_retention("=30d").is_err());
        assert!(parse_retention("web=soon").is_err());
    }
}
