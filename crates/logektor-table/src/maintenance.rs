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
use std::num::NonZeroU64;
use std::time::Duration;

use datafusion::prelude::{Expr, col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use futures::TryStreamExt;
use logektor_event::schema::EVENT_DATE;
use serde::Serialize;
use tracing::info;

use crate::layout::writer_properties;
use crate::table::load_if_exists;
use crate::{Error, Result, TableLocation};

/// The columns compaction z-orders by when asked to: the filters reports use most.
pub const ZORDER_COLUMNS: &[&str] = &["source", "event", "timestamp"];

/// How background compaction chooses and sizes files.
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// Files are merged up to about this size.
    pub target_file_bytes: u64,
    /// A partition is compacted once it holds at least this many files smaller than the target.
    pub min_small_files: usize,
    /// Rewrite whole partitions in z-order over [`ZORDER_COLUMNS`] instead of bin-packing only
    /// the small files. Costs more; rewrites every file of the chosen partitions.
    pub zorder: bool,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            target_file_bytes: 256 * 1024 * 1024,
            min_small_files: 16,
            zorder: false,
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

/// Files per partition of the latest version: (files, bytes, rows, small files).
fn partitions(table: &DeltaTable, small_below: u64) -> Result<BTreeMap<String, [u64; 4]>> {
    let mut out: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for file in table.snapshot()?.log_data().iter() {
        let date = file
            .partition_values_map()
            .get(EVENT_DATE)
            .cloned()
            .flatten()
            .unwrap_or_default();
        let size = u64::try_from(file.size()).unwrap_or(0);
        let entry = out.entry(date).or_default();
        entry[0] += 1;
        entry[1] += size;
        entry[2] += file.num_records().map_or(0, |n| n as u64);
        if size < small_below {
            entry[3] += 1;
        }
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
    let partitions: Vec<PartitionInfo> = partitions(&table, 0)?
        .into_iter()
        .map(|(event_date, [files, bytes, rows, _])| PartitionInfo {
            event_date,
            files: files as usize,
            bytes,
            rows,
        })
        .collect();
    // The log is read newest first; the scan stops at the first of each kind.
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

/// Merges small files of every partition holding at least `min_small_files` of them (all
/// partitions with more than one file when `force`). One commit; a no-op when nothing is due.
pub async fn compact(
    location: &TableLocation,
    config: &CompactionConfig,
    force: bool,
) -> Result<CompactionReport> {
    let Some(table) = load_existing(location).await? else {
        return Ok(CompactionReport::default());
    };
    // Small files trigger both modes, so a partition whose files are all large is left alone
    // and compaction converges (z-order included).
    let threshold = if force {
        2
    } else {
        config.min_small_files.max(2)
    } as u64;
    let due: Vec<String> = partitions(&table, config.target_file_bytes)?
        .into_iter()
        .filter(|(_, [_, _, _, small])| *small >= threshold)
        .map(|(date, _)| date)
        .collect();
    if due.is_empty() {
        return Ok(CompactionReport::default());
    }
    let mut report = CompactionReport::default();
    // One optimize per partition keeps each commit small and lets a failure cost one partition.
    let mut table = table;
    for date in &due {
        let filter = [deltalake::filter_literal(
            EVENT_DATE,
            "=",
            deltalake::FilterValue::Scalar(date.as_str()),
        )?];
        let optimize_type = if config.zorder {
            OptimizeType::ZOrder(ZORDER_COLUMNS.iter().map(|c| (*c).to_owned()).collect())
        } else {
            OptimizeType::Compact
        };
        let target = NonZeroU64::new(config.target_file_bytes.max(1)).expect("at least 1");
        // Delta's conflict check lets two compactions that removed the same files both commit
        // (delta-rs ignores removals without data change, and its optimize drops application
        // transactions from its commit), which would leave their rows in the table twice. The
        // caller must run one compaction at a time per table: the server serialises its own,
        // and the offline command is documented as for a table no server is compacting.
        let (after, metrics) = table
            .optimize()
            .with_filters(&filter)
            .with_type(optimize_type)
            .with_target_size(target)
            .with_writer_properties(writer_properties())
            .await?;
        if metrics.num_files_removed > 0 {
            report.partitions.push(date.clone());
        }
        report.files_removed += metrics.num_files_removed;
        report.files_added += metrics.num_files_added;
        table = after;
    }
    report.version = table.version();
    info!(
        partitions = report.partitions.len(),
        files_removed = report.files_removed,
        files_added = report.files_added,
        version = ?report.version,
        "compacted"
    );
    Ok(report)
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
    let present: BTreeSet<String> = partitions(&table, 0)?.into_keys().collect();
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
