//! Upkeep of the events table: compaction, checkpoints, vacuum, retention, erasure, and the
//! figures `logektor table info` shows.
//!
//! Every operation loads the latest version itself and commits through the Delta log like any
//! other writer, so it runs beside the ingest flusher without locks: the flusher's appends are
//! blind appends (they read nothing), so neither side's commit can invalidate the other's.
//! Rewrites (compaction, deletes) mark the files they replace as removed; the files stay on disk
//! until a vacuum whose grace period has passed, so readers holding an older snapshot keep
//! reading the files that snapshot names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use datafusion::prelude::{Expr, col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, Transaction};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::TryStreamExt;
use logektor_event::schema::EVENT_DATE;
use logektor_event::schema::events_schema;
use object_store::ObjectStoreExt;
use serde::Serialize;
use tracing::info;

use crate::layout::{
    Merged, SortedMerge, SortedRows, WRITE_CHUNK_ROWS, write_partition_runs, writer_properties,
};
use crate::table::{load_if_exists, sync_local_files};
use crate::{Error, Result, TableLocation};

/// The application transaction every compaction commits, so concurrent compactions conflict.
pub const COMPACTION_APP_ID: &str = "logektor-compaction";

/// How background compaction chooses and sizes files.
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// Files are merged up to about this size.
    pub target_file_bytes: u64,
    /// A partition is compacted once it holds at least this many files smaller than the target.
    pub min_small_files: usize,
    /// At most this many rows are merged into one file. Sorted files are merged a chunk at a
    /// time; a bin holding a file out of order is sorted in memory (about 1 KB of Arrow memory
    /// per event), which this bounds.
    pub max_bin_rows: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            target_file_bytes: 256 * 1024 * 1024,
            min_small_files: 16,
            max_bin_rows: 500_000,
        }
    }
}

/// One partition's share of the table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionInfo {
    /// `YYYY-MM-DD`
    pub event_date: String,
    pub files: usize,
    pub bytes: u64,
    pub rows: u64,
}

/// What `GET /v1/admin/table` and `logektor table info` show.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    pub location: String,
    /// `None` when there is no table yet.
    pub version: Option<u64>,
    pub files: usize,
    pub bytes: u64,
    pub rows: u64,
    pub partitions: Vec<PartitionInfo>,
    /// The newest OPTIMIZE commit within the log's retention: time (ms since the epoch) and
    /// version.
    pub last_compaction: Option<CommitRef>,
    pub last_vacuum: Option<CommitRef>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommitRef {
    pub version: Option<u64>,
    pub timestamp_ms: Option<i64>,
}

/// The outcome of one compaction run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactionReport {
    /// Partitions that met the trigger and were rewritten.
    pub partitions: Vec<String>,
    pub files_removed: u64,
    pub files_added: u64,
    /// The table version of the compaction commit, if there was one.
    pub version: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VacuumReport {
    pub files_deleted: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteReport {
    pub files_removed: usize,
    pub files_added: usize,
    /// Rows deleted, when the Delta writer knows it (whole-file deletes may not).
    pub rows_deleted: Option<usize>,
    pub version: Option<u64>,
}

/// Who to forget. Rows match if either id matches.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Person {
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
}

impl Person {
    /// The predicate selecting this person's rows; `None` if no id is given.
    pub fn predicate(&self) -> Option<Expr> {
        let by_user = self
            .user_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .map(|id| col("user_id").eq(lit(id)));
        let by_anonymous = self
            .anonymous_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .map(|id| col("anonymous_id").eq(lit(id)));
        match (by_user, by_anonymous) {
            (Some(a), Some(b)) => Some(a.or(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Per-source maximum age of events. A source without a rule of its own gets `default`; with
/// neither, its events are kept for ever.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionRules {
    pub default: Option<Duration>,
    pub per_source: BTreeMap<String, Duration>,
}

impl RetentionRules {
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.per_source.is_empty()
    }
}

/// What retention removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    /// Partitions removed whole (no rewrite), as `YYYY-MM-DD`.
    pub partitions_dropped: Vec<String>,
    /// Per-source deletes that had to rewrite files of partitions other sources still keep.
    pub source_deletes: Vec<DeleteReport>,
}

async fn load_existing(location: &TableLocation) -> Result<Option<DeltaTable>> {
    let table = load_if_exists(location).await?;
    Ok(table.version().is_some().then_some(table))
}

fn date_text(days: i32) -> String {
    chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
        .map(|t| t.date_naive().to_string())
        .unwrap_or_else(|| days.to_string())
}

/// The `event_date` partition value of a file, as `YYYY-MM-DD`.
fn file_date(file: &deltalake::kernel::LogicalFileView) -> String {
    file.partition_values_map()
        .get(EVENT_DATE)
        .cloned()
        .flatten()
        .unwrap_or_default()
}

/// Files per partition of the latest version: (files, bytes, rows).
fn partitions(table: &DeltaTable) -> Result<BTreeMap<String, [u64; 3]>> {
    let mut out: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for file in table.snapshot()?.log_data().iter() {
        let entry = out.entry(file_date(&file)).or_default();
        entry[0] += 1;
        entry[1] += u64::try_from(file.size()).unwrap_or(0);
        entry[2] += file.num_records().map_or(0, |n| n as u64);
    }
    Ok(out)
}

/// Files, bytes, rows and partitions of the latest version, and when it was last compacted.
pub async fn info(location: &TableLocation) -> Result<TableInfo> {
    let Some(table) = load_existing(location).await? else {
        return Ok(TableInfo {
            location: location.url().to_string(),
            version: None,
            files: 0,
            bytes: 0,
            rows: 0,
            partitions: Vec::new(),
            last_compaction: None,
            last_vacuum: None,
        });
    };
    let partitions: Vec<PartitionInfo> = partitions(&table)?
        .into_iter()
        .map(|(event_date, [files, bytes, rows])| PartitionInfo {
            event_date,
            files: files as usize,
            bytes,
            rows,
        })
        .collect();
    // The log is read newest first (the last 1,000 commits); the first of each kind wins.
    let mut last_compaction = None;
    let mut last_vacuum = None;
    let history: Vec<_> = table.history(Some(1000)).try_collect().await?;
    let latest = table.version();
    for (age, commit) in history.iter().enumerate() {
        let reference = || CommitRef {
            version: latest.and_then(|v| v.checked_sub(age as u64)),
            timestamp_ms: commit.timestamp,
        };
        match commit.operation.as_deref() {
            Some("OPTIMIZE") if last_compaction.is_none() => last_compaction = Some(reference()),
            Some("VACUUM END") if last_vacuum.is_none() => last_vacuum = Some(reference()),
            _ => {}
        }
    }
    Ok(TableInfo {
        location: location.url().to_string(),
        version: table.version(),
        files: partitions.iter().map(|p| p.files).sum(),
        bytes: partitions.iter().map(|p| p.bytes).sum(),
        rows: partitions.iter().map(|p| p.rows).sum(),
        partitions,
        last_compaction,
        last_vacuum,
    })
}

/// A file compaction may merge: what it needs to read it and to remove it.
struct SmallFile {
    path: deltalake::Path,
    remove: deltalake::kernel::Remove,
    size: u64,
    rows: u64,
    modified: i64,
}

/// Merges the small files of every date partition holding at least `min_small_files` of them
/// (at least two when `force`). Files are merged in flush order into bins of up to the target
/// size (and [`CompactionConfig::max_bin_rows`]); each bin is merged in the order of a flush
/// (source, type, event, timestamp), its files being sorted, and written as one file. One commit for the whole run; a no-op when
/// nothing is due.
///
/// The commit is built here rather than by delta-rs's optimize for one reason: two
/// compactions of the same files must not both commit (the rows would be in the table twice),
/// and delta-rs's conflict check ignores removals without data change while its optimize drops
/// application transactions. This commit carries the application transaction
/// [`COMPACTION_APP_ID`], so of two concurrent compactions, in any processes, the later fails.
pub async fn compact(
    location: &TableLocation,
    config: &CompactionConfig,
    force: bool,
) -> Result<CompactionReport> {
    compact_yielding(location, config, force, &|| false).await
}

/// Longest compaction waits before one chunk for a writer that stays behind (flushes failing,
/// say); then it writes the chunk anyway, so it always finishes.
const MAX_YIELD: Duration = Duration::from_secs(10);

/// How often a waiting compaction asks again.
const YIELD_POLL: Duration = Duration::from_millis(20);

/// [`compact`], pausing before each bin and each chunk it writes while `behind()` is true. The
/// server passes "the ingest buffer holds more than one flush", so at full load the flush goes
/// first: on two cores the minute-5 compaction made flushes 2–4× slower, and the buffer the
/// lagging flushes left grew by ~200 MiB (RSS) until ingest shed load with 503s, even at half
/// the maximum rate. Compaction instead works between flushes.
pub async fn compact_yielding(
    location: &TableLocation,
    config: &CompactionConfig,
    force: bool,
    behind: &(dyn Fn() -> bool + Sync),
) -> Result<CompactionReport> {
    let Some(table) = load_existing(location).await? else {
        return Ok(CompactionReport::default());
    };
    let read_version = table.version().unwrap_or(0);
    let threshold = if force {
        2
    } else {
        config.min_small_files.max(2)
    };
    let mut by_partition: BTreeMap<String, Vec<SmallFile>> = BTreeMap::new();
    for file in table.snapshot()?.log_data().iter() {
        let size = u64::try_from(file.size()).unwrap_or(0);
        // A file with a deletion vector has rows its Parquet still holds but the table does
        // not; merging it as plain Parquet would bring them back.
        if size >= config.target_file_bytes || file.deletion_vector_descriptor().is_some() {
            continue;
        }
        by_partition
            .entry(file_date(&file))
            .or_default()
            .push(SmallFile {
                path: file.object_store_path(),
                remove: file.remove_action(false),
                size,
                rows: file.num_records().map_or(0, |n| n as u64),
                modified: file.modification_time(),
            });
    }
    let partition_columns = table.snapshot()?.metadata().partition_columns().to_vec();
    let store = table.log_store().object_store(None);
    let mut report = CompactionReport::default();
    let mut actions = Vec::new();
    let mut written = Vec::new();
    for (date, mut files) in by_partition {
        if files.len() < threshold {
            continue;
        }
        let Some(days) = date_days(&date) else {
            continue;
        };
        // Flush order is time order: bins of neighbouring files keep time ranges tight.
        files.sort_by(|a, b| (a.modified, a.path.as_ref()).cmp(&(b.modified, b.path.as_ref())));
        let mut rewrote_partition = false;
        for bin in bins(&files, config) {
            if bin.len() < 2 {
                continue;
            }
            yield_while(behind).await;
            // The files compressed, as stored: a few MB each.
            let mut files = Vec::with_capacity(bin.len());
            for file in bin {
                files.push(store.get(&file.path).await?.bytes().await?);
            }
            // Every file Logektor writes is sorted, so the bin is merged a chunk at a time,
            // holding one small batch per file rather than all its rows.
            let readers = files
                .iter()
                .map(|bytes| file_batches(bytes.clone(), days, MERGE_BATCH_ROWS))
                .collect::<Result<Vec<_>>>()?;
            let mut merge = SortedMerge::new(readers);
            let mut writer =
                RecordBatchWriter::for_table(&table)?.with_writer_properties(writer_properties());
            loop {
                yield_while(behind).await;
                match merge.next_chunk(WRITE_CHUNK_ROWS)? {
                    Merged::Chunk(chunk) => {
                        write_partition_runs(&mut writer, &partition_columns, chunk).await?
                    }
                    Merged::Done => break,
                    Merged::Unsorted => {
                        // A file another tool wrote: sort the bin whole, as before.
                        writer = RecordBatchWriter::for_table(&table)?
                            .with_writer_properties(writer_properties());
                        let mut batches = Vec::new();
                        for bytes in &files {
                            for batch in file_batches(bytes.clone(), days, 8192)? {
                                batches.push(batch?);
                            }
                        }
                        let sorted = SortedRows::new(&batches)?;
                        for chunk in sorted.chunks(WRITE_CHUNK_ROWS) {
                            yield_while(behind).await;
                            write_partition_runs(&mut writer, &partition_columns, chunk?).await?;
                        }
                        break;
                    }
                }
            }
            drop(merge);
            drop(files);
            for mut add in writer.flush().await? {
                add.data_change = false;
                written.push(add.path.clone());
                actions.push(Action::Add(add));
                report.files_added += 1;
            }
            for file in bin {
                actions.push(Action::Remove(file.remove.clone()));
                report.files_removed += 1;
            }
            rewrote_partition = true;
        }
        if rewrote_partition {
            report.partitions.push(date);
        }
    }
    if actions.is_empty() {
        return Ok(report);
    }
    sync_local_files(location, &written)?;
    crate::faults::crash_point("compaction-before-commit");
    let lease = Transaction::new(
        COMPACTION_APP_ID,
        i64::try_from(read_version).unwrap_or(i64::MAX),
    );
    let operation = DeltaOperation::Optimize {
        predicate: None,
        target_size: i64::try_from(config.target_file_bytes).unwrap_or(i64::MAX),
    };
    let committed =
        CommitBuilder::from(CommitProperties::default().with_application_transaction(lease))
            .with_actions(actions)
            .build(Some(table.snapshot()?), table.log_store(), operation)
            .await;
    let finalized = match committed {
        Ok(finalized) => finalized,
        Err(err) => {
            // Most likely another compaction committed first. The files written here are named
            // by no commit and a vacuum only removes files the log names, so remove them now;
            // only after a definite conflict, since after other errors the commit may have
            // landed and need them.
            if is_conflict(&err) {
                let store = table.log_store().object_store(None);
                for path in &written {
                    let _ = store.delete(&deltalake::Path::from(path.as_str())).await;
                }
            }
            return Err(err.into());
        }
    };
    report.version = Some(finalized.version());
    sync_local_files(
        location,
        &[format!("_delta_log/{:020}.json", finalized.version())],
    )?;
    info!(
        partitions = report.partitions.len(),
        files_removed = report.files_removed,
        files_added = report.files_added,
        version = ?report.version,
        "compacted"
    );
    Ok(report)
}

/// Waits while `behind()` holds, for at most [`MAX_YIELD`].
async fn yield_while(behind: &(dyn Fn() -> bool + Sync)) {
    let started = tokio::time::Instant::now();
    while behind() && started.elapsed() < MAX_YIELD {
        tokio::time::sleep(YIELD_POLL).await;
    }
}

fn is_conflict(err: &deltalake::DeltaTableError) -> bool {
    matches!(
        err,
        deltalake::DeltaTableError::Transaction {
            source: deltalake::kernel::transaction::TransactionError::CommitConflict(_),
        }
    )
}

/// Consecutive runs of files up to the target size and the row cap.
fn bins<'a>(files: &'a [SmallFile], config: &CompactionConfig) -> Vec<&'a [SmallFile]> {
    let mut out = Vec::new();
    let (mut start, mut bytes, mut rows) = (0, 0u64, 0u64);
    for (index, file) in files.iter().enumerate() {
        if index > start
            && (bytes + file.size > config.target_file_bytes
                || rows + file.rows > config.max_bin_rows)
        {
            out.push(&files[start..index]);
            (start, bytes, rows) = (index, 0, 0);
        }
        bytes += file.size;
        rows += file.rows;
    }
    if start < files.len() {
        out.push(&files[start..]);
    }
    out
}

/// Days since the epoch of a `YYYY-MM-DD` partition value.
fn date_days(text: &str) -> Option<i32> {
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((date - epoch).num_days()).ok()
}

/// Rows per batch each file of a compaction bin is read in.
const MERGE_BATCH_ROWS: usize = 4096;

/// The rows of one Parquet file of the partition `days`, with its partition column.
fn file_batches(
    bytes: bytes::Bytes,
    days: i32,
    batch_rows: usize,
) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(batch_rows)
        .build()?;
    Ok(reader.map(move |batch| with_partition_column(&batch?, days)))
}

/// Data files hold every column but the partition column; put it back (last, as in the
/// canonical schema) so the batch can be written like a flush.
fn with_partition_column(batch: &RecordBatch, days: i32) -> Result<RecordBatch> {
    let schema = events_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            if field.name() == EVENT_DATE {
                return Ok(Arc::new(arrow::array::Date32Array::from(vec![
                    days;
                    batch.num_rows()
                ])) as arrow::array::ArrayRef);
            }
            let column = batch
                .column_by_name(field.name())
                .ok_or_else(|| Error::Location {
                    location: field.name().clone(),
                    reason: "a data file lacks this column".into(),
                })?;
            Ok(arrow::compute::cast(column, field.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Deletes files that left the table (compaction, retention, erasure) more than `grace` ago.
/// Only files the log marks as removed are touched: a file a flush has written but not yet
/// committed is never at risk, whatever the grace period.
pub async fn vacuum(location: &TableLocation, grace: Duration) -> Result<VacuumReport> {
    let Some(table) = load_existing(location).await? else {
        return Ok(VacuumReport::default());
    };
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let (_, metrics) = table
        .vacuum()
        .with_mode(VacuumMode::Lite)
        .with_retention_period(grace)
        .with_enforce_retention_duration(false)
        .await?;
    if !metrics.files_deleted.is_empty() {
        info!(files_deleted = metrics.files_deleted.len(), "vacuumed");
    }
    Ok(VacuumReport {
        files_deleted: metrics.files_deleted.len(),
    })
}

/// Writes a checkpoint of the latest version and removes log files past the log retention, so
/// loading the table reads one Parquet file instead of every commit since the last one.
pub async fn checkpoint(location: &TableLocation) -> Result<Option<u64>> {
    let Some(table) = load_existing(location).await? else {
        return Ok(None);
    };
    deltalake::checkpoints::create_checkpoint(&table, None).await?;
    let cleaned = deltalake::checkpoints::cleanup_metadata(&table, None).await?;
    info!(version = ?table.version(), log_files_removed = cleaned, "checkpoint written");
    Ok(table.version())
}

/// Deletes the rows matching `predicate`: whole files when the predicate is on the partition
/// column only, else by rewriting the files that hold matches. The replaced files stay on disk
/// until a vacuum.
async fn delete_where(location: &TableLocation, predicate: Expr) -> Result<DeleteReport> {
    let Some(table) = load_existing(location).await? else {
        return Ok(DeleteReport::default());
    };
    let (after, metrics) = table
        .delete()
        .with_predicate(predicate)
        .with_writer_properties(writer_properties())
        .with_commit_properties(CommitProperties::default())
        .await?;
    Ok(DeleteReport {
        files_removed: metrics.num_removed_files,
        files_added: metrics.num_added_files,
        rows_deleted: metrics.num_deleted_rows,
        version: after.version(),
    })
}

/// Deletes every row of `person` from the table (not from a writer's unflushed buffer: the
/// caller flushes first). After the next vacuum past the grace period, no file holds them.
pub async fn erase(location: &TableLocation, person: &Person) -> Result<DeleteReport> {
    let predicate = person.predicate().ok_or_else(|| Error::Location {
        location: location.url().to_string(),
        reason: "erasure needs a user_id or an anonymous_id".into(),
    })?;
    let report = delete_where(location, predicate).await?;
    info!(
        files_rewritten = report.files_removed,
        rows_deleted = ?report.rows_deleted,
        "erased a person's rows"
    );
    Ok(report)
}

/// Applies `rules` as of `now_days` (days since the epoch, UTC). Dates every source has expired
/// are dropped whole (a metadata-only delete); a source whose rule is shorter than others' has
/// its rows deleted from the partitions the others still keep.
pub async fn expire(
    location: &TableLocation,
    rules: &RetentionRules,
    now_days: i32,
) -> Result<RetentionReport> {
    let mut report = RetentionReport::default();
    if rules.is_empty() {
        return Ok(report);
    }
    let Some(table) = load_existing(location).await? else {
        return Ok(report);
    };
    // A row of date d is expired under an age a when d < today - a (whole days, rounded up, so
    // an event is kept at least as long as asked).
    let cutoff = |age: &Duration| {
        now_days - i32::try_from(age.as_secs().div_ceil(86_400)).unwrap_or(i32::MAX)
    };
    let present: BTreeSet<String> = partitions(&table)?.into_keys().collect();
    drop(table);

    // Dates before every source's cutoff go whole. That needs a default (otherwise a source
    // without a rule keeps everything).
    if let Some(default) = &rules.default {
        let all_cutoff = rules
            .per_source
            .values()
            .chain(std::iter::once(default))
            .map(cutoff)
            .min()
            .expect("at least the default");
        let dropped: Vec<String> = present
            .iter()
            .filter(|date| date.as_str() < date_text(all_cutoff).as_str())
            .cloned()
            .collect();
        if !dropped.is_empty() {
            delete_where(
                location,
                col(EVENT_DATE).lt(lit(ScalarValue::Date32(Some(all_cutoff)))),
            )
            .await?;
            info!(partitions = dropped.len(), before = %date_text(all_cutoff), "retention dropped whole partitions");
            report.partitions_dropped = dropped;
        }
        // Sources under the default rule, in the dates sources with longer rules still keep.
        let default_cutoff = cutoff(default);
        if default_cutoff > all_cutoff {
            let mut predicate = col(EVENT_DATE).lt(lit(ScalarValue::Date32(Some(default_cutoff))));
            let explicit: Vec<Expr> = rules.per_source.keys().map(|s| lit(s.as_str())).collect();
            if !explicit.is_empty() {
                predicate = predicate.and(col("source").in_list(explicit, true));
            }
            report
                .source_deletes
                .push(delete_where(location, predicate).await?);
        }
    }
    for (source, age) in &rules.per_source {
        let source_cutoff = cutoff(age);
        let predicate = col(EVENT_DATE)
            .lt(lit(ScalarValue::Date32(Some(source_cutoff))))
            .and(col("source").eq(lit(source.as_str())));
        let deleted = delete_where(location, predicate).await?;
        if deleted.files_removed > 0 {
            info!(source, before = %date_text(source_cutoff), rows = ?deleted.rows_deleted, "retention deleted a source's old rows");
            report.source_deletes.push(deleted);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventTable;
    use crate::layout::{SORT_COLUMNS, key_converter};
    use deltalake::protocol::SaveMode;
    use logektor_event::{Endpoint, RequestMeta, decode, to_record_batch};

    /// `n` events over two dates, in no particular order.
    fn unsorted(n: usize) -> RecordBatch {
        let events: Vec<_> = (0..n)
            .map(|i| format!(r#"{{"type":"track","event":"e{}","userId":"u{i}","timestamp":"2024-03-0{}T10:00:{:02}Z"}}"#, (n - i) % 3, 1 + i % 2, 59 - i))
            .collect();
        let body = format!(r#"{{"batch":[{}]}}"#, events.join(","));
        let meta = RequestMeta::new(1_709_290_000_000_000, "web", 1);
        to_record_batch(&decode(&meta, Endpoint::Batch, body.as_bytes()).unwrap())
    }

    #[tokio::test]
    async fn compaction_waits_while_the_writer_is_behind_then_finishes() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::local(&dir.path().join("events")).unwrap();
        let mut table = EventTable::open_or_create(&location, "w").await.unwrap();
        // Two flushes of events on two dates: two files per date.
        table.append(&unsorted(10), 1).await.unwrap();
        table.append(&unsorted(6), 2).await.unwrap();
        let asked = AtomicUsize::new(0);
        // The writer is behind for the first five questions, then catches up.
        let behind = || asked.fetch_add(1, Ordering::SeqCst) < 5;
        let report = compact_yielding(&location, &CompactionConfig::default(), true, &behind)
            .await
            .unwrap();
        assert_eq!((report.files_removed, report.files_added), (4, 2));
        assert!(
            asked.load(Ordering::SeqCst) > 5,
            "compaction went on before the writer caught up"
        );
        let info = info(&location).await.unwrap();
        assert_eq!((info.files, info.rows), (2, 16));
    }

    #[tokio::test]
    async fn compaction_sorts_a_bin_whose_files_another_tool_wrote_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::local(&dir.path().join("events")).unwrap();
        EventTable::open_or_create(&location, "w").await.unwrap();
        // Written by delta-rs itself, unsorted: the merge finds them out of order.
        for n in [7, 12] {
            let table = load_existing(&location).await.unwrap().unwrap();
            table
                .write(vec![unsorted(n)])
                .with_save_mode(SaveMode::Append)
                .await
                .unwrap();
        }
        let report = compact(&location, &CompactionConfig::default(), true)
            .await
            .unwrap();
        assert_eq!((report.files_removed, report.files_added), (4, 2));
        let table = load_existing(&location).await.unwrap().unwrap();
        let mut rows = 0;
        for uri in table.get_file_uris().unwrap() {
            let path = uri.strip_prefix("file://").unwrap_or(&uri).to_owned();
            let bytes = bytes::Bytes::from(std::fs::read(&path).unwrap());
            for batch in file_batches(bytes, 0, 1024).unwrap() {
                let batch = batch.unwrap();
                rows += batch.num_rows();
                let columns: Vec<_> = SORT_COLUMNS
                    .iter()
                    .filter_map(|name| batch.column_by_name(name).cloned())
                    .collect();
                let keys = key_converter(&columns)
                    .unwrap()
                    .convert_columns(&columns)
                    .unwrap();
                assert!((1..keys.num_rows()).all(|i| keys.row(i - 1) <= keys.row(i)));
            }
        }
        assert_eq!(rows, 19);
    }
}
