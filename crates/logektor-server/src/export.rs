//! `logektor export`: events of a time range as Parquet, NDJSON or CSV, streamed to a file.
//!
//! Reads what the offline SQL reads (the table plus the WAL's unflushed records), so an export
//! holds every acknowledged event of the range.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use logektor_query::{BatchEncoder, Format, QueryConfig};

/// A bound of the range: `YYYY-MM-DD` (midnight UTC) or an RFC 3339 time.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("expected YYYY-MM-DD or an RFC 3339 time, got {text:?}"))
}

/// The query of an export: rows with `from <= timestamp < to`, in table order (no sort, so an
/// export of any size streams in bounded memory).
pub fn export_sql(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> String {
    // The bounds are formatted from parsed times, never pasted from user text.
    let literal = |t: DateTime<Utc>| format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
    let mut conditions = Vec::new();
    if let Some(from) = from {
        conditions.push(format!("timestamp >= {}", literal(from)));
    }
    if let Some(to) = to {
        conditions.push(format!("timestamp < {}", literal(to)));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!("SELECT * FROM events{filter}")
}

/// Writes the range to `out` (standard output when `None`); returns the number of rows.
pub async fn run(
    data_dir: &Path,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    format: Format,
    out: Option<&PathBuf>,
) -> anyhow::Result<u64> {
    let config = QueryConfig {
        // An export may be long and large; it streams, so neither limit protects anything here.
        timeout: std::time::Duration::from_secs(24 * 60 * 60),
        max_result_bytes: usize::MAX,
        ..QueryConfig::default()
    };
    let engine = crate::offline::engine(data_dir, config).await?;
    let mut stream = engine.execute(&export_sql(from, to)).await?;
    let mut encoder = BatchEncoder::new(format, &stream.schema())?;
    let mut sink: Box<dyn Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut rows = 0u64;
    while let Some(batch) = stream.next_batch().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        sink.write_all(&encoder.write(&batch)?)?;
    }
    sink.write_all(&encoder.finish()?)?;
    sink.flush()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_dates_or_times() {
        let from = parse_time("2024-05-01").unwrap();
        let to = parse_time("2024-05-02T06:30:00+02:00").unwrap();
        assert_eq!(
            export_sql(Some(from), Some(to)),
            "SELECT * FROM events WHERE timestamp >= TIMESTAMP '2024-05-01T00:00:00.000000Z' \
             AND timestamp < TIMESTAMP '2024-05-02T04:30:00.000000Z'"
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2024-05-01'; DROP TABLE events").is_err());
    }
}
