//! Opening, creating and appending to the events table, and snapshots for readers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
use deltalake::kernel::{Action, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use logektor_event::schema::{EVENT_DATE, events_schema};
use tracing::{info, warn};
use url::Url;

use crate::layout::{SortedRows, WRITE_CHUNK_ROWS, flush_writer_properties, write_partition_runs};
use crate::scan::{DeltaFiles, FileCache, IndexSlot};
use crate::{Error, Result};

/// How often one append re-commits its files after losing a race to a delete.
const MAX_APPEND_CONFLICTS: usize = 10;

/// Where the table lives: a local folder (the default) or an object-store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLocation {
    url: Url,
    /// `--inject-store-faults`: the switch file of a [`crate::faults::FaultyStore`].
    fault_switch: Option<PathBuf>,
}

impl TableLocation {
    /// A local folder; created if missing.
    pub fn local(path: &Path) -> Result<Self> {
        let location_error = |reason: String| Error::Location {
            location: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(path).map_err(|err| location_error(err.to_string()))?;
        let absolute = path
            .canonicalize()
            .map_err(|err| location_error(err.to_string()))?;
        let url = Url::from_directory_path(&absolute)
            .map_err(|()| location_error("not an absolute path".into()))?;
        Ok(Self {
            url,
            fault_switch: None,
        })
    }

    /// Routes every object-store call through a [`crate::faults::FaultyStore`] controlled by
    /// `switch` (tests only).
    pub fn with_fault_switch(mut self, switch: PathBuf) -> Self {
        self.fault_switch = Some(switch);
        self
    }

    /// A URL (`file:///...`, `s3://bucket/prefix`) or a local path.
    pub fn parse(text: &str) -> Result<Self> {
        match Url::parse(text) {
            Ok(url) if url.scheme() == "file" => {
                let path = url.to_file_path().map_err(|()| Error::Location {
                    location: text.into(),
                    reason: "not a local path".into(),
                })?;
                Self::local(&path)
            }
            Ok(url) if url.scheme().len() > 1 => Ok(Self {
                url,
                fault_switch: None,
            }),
            _ => Self::local(Path::new(text)),
        }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The folder, when the table is on the local file system.
    pub fn local_path(&self) -> Option<PathBuf> {
        self.url.to_file_path().ok()
    }

    /// The local path of a table-relative (URI-encoded) path, as Delta `add` actions hold them.
    fn file_path(&self, relative: &str) -> Result<PathBuf> {
        let error = |reason: &str| Error::Location {
            location: relative.to_owned(),
            reason: reason.to_owned(),
        };
        self.url
            .join(relative)
            .map_err(|err| error(&err.to_string()))?
            .to_file_path()
            .map_err(|()| error("not a local file"))
    }
}

/// fsyncs files and then their folders (new partition folders included), so a file that a
/// commit names survives a power loss.
fn sync_files(files: &[PathBuf]) -> Result<()> {
    let io_error = |path: &Path, source: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut folders = std::collections::BTreeSet::new();
    for file in files {
        std::fs::File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(|err| io_error(file, err))?;
        if let Some(folder) = file.parent() {
            folders.insert(folder.to_owned());
            if let Some(grandparent) = folder.parent() {
                folders.insert(grandparent.to_owned());
            }
        }
    }
    for folder in folders {
        std::fs::File::open(&folder)
            .and_then(|f| f.sync_all())
            .map_err(|err| io_error(&folder, err))?;
    }
    Ok(())
}

/// fsyncs table-relative files (as Delta actions name them) when the table is on a local disk;
/// object stores make writes durable themselves.
pub(crate) fn sync_local_files(location: &TableLocation, relative: &[String]) -> Result<()> {
    if location.local_path().is_none() {
        return Ok(());
    }
    let files = relative
        .iter()
        .map(|path| location.file_path(path))
        .collect::<Result<Vec<_>>>()?;
    sync_files(&files)
}

/// The writer's handle on the events table.
pub struct EventTable {
    location: TableLocation,
    table: DeltaTable,
    app_id: String,
    committed_seq: u64,
    /// Parsed file entries shared by the snapshots this writer hands out.
    pub(crate) files: Arc<FileCache>,
}

impl EventTable {
    /// Opens the table at `location`, creating it (empty, partitioned by `event_date`) if it
    /// does not exist. `app_id` names this writer in the table's application transactions.
    pub async fn open_or_create(location: &TableLocation, app_id: &str) -> Result<Self> {
        let mut table = load_if_exists(location).await?;
        if table.version().is_none() {
            let schema: StructType = events_schema().as_ref().try_into_kernel()?;
            table = table
                .create()
                .with_table_name("events")
                .with_comment("Logektor tracking events; one row per event")
                .with_columns(schema.fields().cloned())
                .with_partition_columns([EVENT_DATE])
                .with_save_mode(SaveMode::Ignore)
                .await?;
            info!(location = %location.url(), "created events table");
        }
        let committed_seq = committed_seq(&table, app_id).await?;
        Ok(Self {
            location: location.clone(),
            table,
            app_id: app_id.to_owned(),
            committed_seq,
            files: Arc::default(),
        })
    }

    /// Loads the latest version again, e.g. after a commit whose outcome is unknown.
    pub async fn reopen(&self) -> Result<Self> {
        let mut reopened = Self::open_or_create(&self.location, &self.app_id).await?;
        // Files never change once written, so what was parsed about them still holds.
        reopened.files = Arc::clone(&self.files);
        Ok(reopened)
    }

    /// Catches up with commits made by others (compaction, retention, erasure, other writers).
    pub async fn refresh(&mut self) -> Result<()> {
        self.table.update_incremental(None).await?;
        self.committed_seq = committed_seq(&self.table, &self.app_id).await?;
        Ok(())
    }

    /// The highest WAL sequence number this writer has committed (0 if none).
    pub fn committed_seq(&self) -> u64 {
        self.committed_seq
    }

    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    /// Writes `batch` as Parquet and commits it together with the WAL position `through_seq`
    /// it covers, in one Delta commit. Returns the new table version.
    ///
    /// CPU-heavy (sorting, Parquet encoding): call it from a task on a runtime that does not
    /// serve requests.
    pub async fn append(&mut self, batch: &RecordBatch, through_seq: u64) -> Result<u64> {
        self.append_batches(std::slice::from_ref(batch), through_seq)
            .await
    }

    /// [`EventTable::append`] for rows spread over several batches of the canonical schema,
    /// sorted and written a chunk at a time without concatenating them first.
    pub async fn append_batches(
        &mut self,
        batches: &[RecordBatch],
        through_seq: u64,
    ) -> Result<u64> {
        debug_assert!(
            through_seq > self.committed_seq,
            "WAL positions only move forward"
        );
        let transaction =
            Transaction::new(&self.app_id, i64::try_from(through_seq).unwrap_or(i64::MAX));
        // An empty batch still commits its position (an import chunk that was all duplicates).
        let sorted = SortedRows::new(batches)?;
        let adds = if sorted.num_rows() == 0 {
            Vec::new()
        } else {
            let mut writer = RecordBatchWriter::for_table(&self.table)?
                .with_writer_properties(flush_writer_properties());
            let partition_columns = self.table.snapshot()?.metadata().partition_columns();
            for chunk in sorted.chunks(WRITE_CHUNK_ROWS) {
                write_partition_runs(&mut writer, partition_columns, chunk?).await?;
            }
            writer.flush().await?
        };
        // The object store and the Delta log store do not fsync on a local disk. The caller
        // deletes WAL segments after this returns, so the files must be durable first.
        let paths: Vec<String> = adds.iter().map(|add| add.path.clone()).collect();
        sync_local_files(&self.location, &paths)?;
        crate::faults::crash_point("flush-before-commit");
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(vec![EVENT_DATE.to_owned()]),
            predicate: None,
        };
        // A blind append: its validity does not depend on what the table held. Marked as such,
        // compactions and deletes committed after it do not conflict with it. The other way
        // round, Delta counts a predicate-less write as having read every file, so a delete
        // (retention, erasure) that lands first fails this commit as a conflict; the same files
        // are then committed again on the newer version, which is correct for a blind append.
        let properties = CommitProperties::default()
            .with_application_transaction(transaction)
            .with_metadata([("isBlindAppend".to_owned(), serde_json::Value::Bool(true))]);
        let actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        let mut conflicts = 0;
        let finalized = loop {
            let attempt = CommitBuilder::from(properties.clone())
                .with_actions(actions.clone())
                .build(
                    Some(self.table.snapshot()?),
                    self.table.log_store(),
                    operation.clone(),
                )
                .await;
            match attempt {
                Ok(finalized) => break finalized,
                Err(DeltaTableError::Transaction {
                    source:
                        TransactionError::CommitConflict(
                            CommitConflictError::ConcurrentDeleteRead
                            | CommitConflictError::ConcurrentAppend,
                        ),
                }) if conflicts < MAX_APPEND_CONFLICTS => {
                    conflicts += 1;
                    warn!(
                        conflicts,
                        "append conflicted with a concurrent delete; committing the same files on the newer version"
                    );
                    self.table.update_incremental(None).await?;
                }
                Err(err) => return Err(err.into()),
            }
        };
        let version = finalized.version();
        self.table.state = Some(finalized.snapshot());
        sync_local_files(&self.location, &[format!("_delta_log/{version:020}.json")])?;
        self.committed_seq = through_seq;
        Ok(version)
    }

    /// An immutable view of the table as of the last commit.
    pub fn snapshot(&self) -> TableSnapshot {
        TableSnapshot {
            table: Some(Arc::new(self.table.clone())),
            committed_seq: self.committed_seq,
            files: Arc::new(IndexSlot::with_cache(Arc::clone(&self.files))),
        }
    }
}

/// Loads the table, or returns an unloaded handle when there is no table yet. A local folder
/// without `_delta_log` is known to be empty without asking the Delta kernel (which logs an
/// error for an empty log).
pub(crate) async fn load_if_exists(location: &TableLocation) -> Result<DeltaTable> {
    let mut builder = deltalake::DeltaTableBuilder::from_url(location.url().clone())?;
    if let Some(switch) = &location.fault_switch {
        let store = builder.build_storage()?.root_object_store(None);
        let faulty = crate::faults::FaultyStore::new(store, switch.clone());
        builder = builder.with_storage_backend(Arc::new(faulty), location.url().clone());
    }
    if let Some(path) = location.local_path()
        && !path.join("_delta_log").is_dir()
    {
        return Ok(builder.build()?);
    }
    Ok(builder.load().await?)
}

async fn committed_seq(table: &DeltaTable, app_id: &str) -> Result<u64> {
    let version = table
        .snapshot()?
        .transaction_version(table.log_store().as_ref(), app_id)
        .await?;
    Ok(version.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
}

/// One version of the table, as readers see it, and the WAL position it covers for one writer.
#[derive(Clone, Default)]
pub struct TableSnapshot {
    /// `None` when there is no table yet (offline reads before the first start).
    pub(crate) table: Option<Arc<DeltaTable>>,
    committed_seq: u64,
    /// The version's file list for [`DeltaFiles`], parsed on the first scan.
    pub(crate) files: Arc<IndexSlot>,
}

impl TableSnapshot {
    /// Opens the latest version of an existing table for reading; `Ok(default)` if there is no
    /// table at `location` yet.
    pub async fn open_latest(location: &TableLocation, app_id: &str) -> Result<Self> {
        let table = load_if_exists(location).await?;
        if table.version().is_none() {
            return Ok(Self::default());
        }
        let committed_seq = committed_seq(&table, app_id).await?;
        Ok(Self {
            table: Some(Arc::new(table)),
            committed_seq,
            files: Arc::default(),
        })
    }

    /// WAL records up to this sequence number are in this snapshot.
    pub fn committed_seq(&self) -> u64 {
        self.committed_seq
    }

    pub fn version(&self) -> Option<u64> {
        self.table.as_ref().and_then(|t| t.version())
    }

    /// A DataFusion provider scanning this version, registering the table's object store with
    /// `session` if needed. `None` when there is no table yet.
    pub async fn provider(&self, session: &dyn Session) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = &self.table else {
            return Ok(None);
        };
        table.update_datafusion_session(session)?;
        if let Some(index) = self.files.get(table) {
            return Ok(Some(Arc::new(DeltaFiles::new(index))));
        }
        Ok(Some(table.table_provider().await?))
    }

    /// `(source, message_id, received_at)` of the rows received at or after `since_micros`,
    /// newest last, at most `limit` of them (the newest). Files whose `received_at` statistics
    /// lie wholly before `since_micros` are not read. Feeds the ingest dedup window on start.
    pub async fn recent_message_ids(
        &self,
        since_micros: i64,
        limit: usize,
    ) -> Result<Vec<(String, String, i64)>> {
        use datafusion::prelude::{SessionContext, col, lit};
        use datafusion::scalar::ScalarValue;

        let ctx = SessionContext::new();
        let Some(provider) = self.provider(&ctx.state()).await? else {
            return Ok(Vec::new());
        };
        let since = lit(ScalarValue::TimestampMicrosecond(
            Some(since_micros),
            Some("UTC".into()),
        ));
        let batches = ctx
            .read_table(provider)?
            .filter(col("received_at").gt_eq(since))?
            .select_columns(&["source", "message_id", "received_at"])?
            .sort(vec![col("received_at").sort(false, false)])?
            .limit(0, Some(limit))?
            .collect()
            .await?;
        let mut out = Vec::new();
        for batch in &batches {
            use arrow::array::AsArray;
            use arrow::compute::cast;
            use arrow::datatypes::{DataType, Int64Type};
            // Scans may hand back string views or dictionaries; normalise.
            let source = cast(batch.column(0), &DataType::Utf8)?;
            let id = cast(batch.column(1), &DataType::Utf8)?;
            let received = cast(batch.column(2), &DataType::Int64)?;
            let (source, id) = (source.as_string::<i32>(), id.as_string::<i32>());
            let received = received.as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                out.push((
                    source.value(row).to_owned(),
                    id.value(row).to_owned(),
                    received.value(row),
                ));
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The Arrow schema of the table's data as DataFusion sees it.
    pub fn canonical_schema() -> Arc<Schema> {
        events_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sorted_lines;
    use datafusion::prelude::SessionContext;
    use logektor_event::{Endpoint, RequestMeta, decode, to_record_batch};

    fn batch(n: usize) -> RecordBatch {
        let events: Vec<_> = (0..n)
            .map(|i| format!(r#"{{"type":"track","event":"e{}","userId":"u{i}","timestamp":"2024-03-0{}T10:00:00Z"}}"#, i % 3, 1 + i % 2))
            .collect();
        let body = format!(r#"{{"batch":[{}]}}"#, events.join(","));
        let meta = RequestMeta::new(1_709_290_000_000_000, "web", 1);
        to_record_batch(&decode(&meta, Endpoint::Batch, body.as_bytes()).unwrap())
    }

    #[test]
    fn merging_sorted_files_gives_the_order_sorting_them_whole_gives() {
        use crate::layout::{Merged, SortedMerge, sort_for_layout};
        let files: Vec<RecordBatch> = [7, 12, 5]
            .into_iter()
            .map(|n| sort_for_layout(&batch(n)).unwrap())
            .collect();
        let whole = SortedRows::new(&files).unwrap();
        let expected: Vec<RecordBatch> = whole.chunks(1000).collect::<Result<_>>().unwrap();
        let expected = arrow::compute::concat_batches(&events_schema(), &expected).unwrap();
        // Each file read in batches of 3 rows (and an empty one), as the Parquet reader would.
        let read = |file: &RecordBatch| -> std::vec::IntoIter<Result<RecordBatch>> {
            let mut parts: Vec<Result<RecordBatch>> = (0..file.num_rows())
                .step_by(3)
                .map(|start| Ok(file.slice(start, 3.min(file.num_rows() - start))))
                .collect();
            parts.insert(1, Ok(RecordBatch::new_empty(events_schema())));
            parts.into_iter()
        };
        for chunk_rows in [1, 4, 1000] {
            let mut merge = SortedMerge::new(files.iter().map(read).collect());
            let mut chunks = Vec::new();
            loop {
                match merge.next_chunk(chunk_rows).unwrap() {
                    Merged::Chunk(chunk) => {
                        assert!(chunk.num_rows() <= chunk_rows);
                        chunks.push(chunk);
                    }
                    Merged::Done => break,
                    Merged::Unsorted => panic!("the files are sorted"),
                }
            }
            let merged = arrow::compute::concat_batches(&events_schema(), &chunks).unwrap();
            assert_eq!(merged, expected, "chunks of {chunk_rows}");
        }
        // A file out of order, within a batch or across its batches, stops the merge.
        let unsorted = batch(7);
        let mut merge = SortedMerge::new(vec![vec![Ok(unsorted)].into_iter()]);
        assert!(matches!(merge.next_chunk(100).unwrap(), Merged::Unsorted));
        let sorted = &files[0];
        let swapped = vec![Ok(sorted.slice(4, 3)), Ok(sorted.slice(0, 4))];
        let mut merge = SortedMerge::new(vec![swapped.into_iter()]);
        assert!(matches!(merge.next_chunk(100).unwrap(), Merged::Unsorted));
    }

    #[test]
    fn sorted_rows_across_batches_equal_sorting_their_concatenation() {
        let empty = || RecordBatch::new_empty(events_schema());
        let batches = vec![batch(7), empty(), batch(1), batch(12), batch(5)];
        let all = arrow::compute::concat_batches(&events_schema(), &batches).unwrap();
        let expected = crate::layout::sort_for_layout(&all).unwrap();
        let sorted = SortedRows::new(&batches).unwrap();
        assert_eq!(sorted.num_rows(), 25);
        for chunk_rows in [1, 4, 25, 1000] {
            let chunks: Vec<RecordBatch> =
                sorted.chunks(chunk_rows).collect::<Result<_>>().unwrap();
            assert!(chunks.iter().all(|c| c.num_rows() <= chunk_rows));
            let joined = arrow::compute::concat_batches(&events_schema(), &chunks).unwrap();
            // The sort is not stable across equal keys, so compare the key columns in order
            // and the rows as a set.
            for name in ["event_date", "source", "type", "event", "timestamp"] {
                assert_eq!(
                    joined.column_by_name(name).unwrap().to_data(),
                    expected.column_by_name(name).unwrap().to_data(),
                    "{name} with chunks of {chunk_rows}"
                );
            }
            let rows = |batch: &RecordBatch| sorted_lines(std::slice::from_ref(batch));
            assert_eq!(rows(&joined), rows(&all));
        }
        let nothing = [empty()];
        let empty = SortedRows::new(&nothing).unwrap();
        assert_eq!(empty.num_rows(), 0);
        assert_eq!(empty.chunks(10).count(), 0);
    }

    #[tokio::test]
    async fn append_records_the_wal_position_and_is_readable() {
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::local(&dir.path().join("events")).unwrap();
        let mut table = EventTable::open_or_create(&location, "writer-a")
            .await
            .unwrap();
        assert_eq!(table.committed_seq(), 0);
        table.append(&batch(10), 7).await.unwrap();
        table.append(&batch(5), 9).await.unwrap();
        assert_eq!(table.committed_seq(), 9);

        let reopened = EventTable::open_or_create(&location, "writer-a")
            .await
            .unwrap();
        assert_eq!(reopened.committed_seq(), 9);
        let other_writer = EventTable::open_or_create(&location, "writer-b")
            .await
            .unwrap();
        assert_eq!(other_writer.committed_seq(), 0);

        let snapshot = TableSnapshot::open_latest(&location, "writer-a")
            .await
            .unwrap();
        assert_eq!(snapshot.committed_seq(), 9);
        let ctx = SessionContext::new();
        let provider = snapshot.provider(&ctx.state()).await.unwrap().unwrap();
        ctx.register_table("events", provider).unwrap();
        let rows = ctx
            .sql("SELECT count(*) AS n, count(DISTINCT event_date) AS days FROM events")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string();
        assert!(text.contains("| 15 | 2    |"), "{text}");
    }

    /// A table another tool created with the canonical columns but no partitioning: flushes
    /// must not invent `event_date` partition values it does not have.
    #[tokio::test]
    async fn a_table_not_partitioned_by_date_gets_files_without_partition_values() {
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::local(&dir.path().join("events")).unwrap();
        let schema: StructType = events_schema().as_ref().try_into_kernel().unwrap();
        load_if_exists(&location)
            .await
            .unwrap()
            .create()
            .with_columns(schema.fields().cloned())
            .await
            .unwrap();
        let mut table = EventTable::open_or_create(&location, "writer-a")
            .await
            .unwrap();
        table.append(&batch(10), 1).await.unwrap();
        let snapshot = table.table.snapshot().unwrap();
        assert!(snapshot.metadata().partition_columns().is_empty());
        let files: Vec<_> = snapshot.log_data().iter().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].partition_values(), None);
        assert_eq!(files[0].num_records(), Some(10));
    }

    /// Runs of dates in any order: each date's rows go to that date's one file, whole.
    #[tokio::test]
    async fn partition_runs_write_each_date_to_its_own_file() {
        use arrow::array::AsArray;
        use arrow::datatypes::Date32Type;

        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::local(&dir.path().join("events")).unwrap();
        let table = EventTable::open_or_create(&location, "writer-a")
            .await
            .unwrap();
        // batch(n) alternates 2024-03-01 and 2024-03-02 row by row: runs of one row each.
        let rows = batch(9);
        let dates = rows
            .column_by_name(EVENT_DATE)
            .unwrap()
            .as_primitive::<Date32Type>();
        let first_day = dates.value(0);
        let on_first_day = dates.values().iter().filter(|&&d| d == first_day).count() as i64;
        let mut writer = RecordBatchWriter::for_table(&table.table).unwrap();
        let by_date = [EVENT_DATE.to_owned()];
        write_partition_runs(&mut writer, &by_date, rows.clone())
            .await
            .unwrap();
        write_partition_runs(
            &mut writer,
            &by_date,
            RecordBatch::new_empty(events_schema()),
        )
        .await
        .unwrap();
        let adds = writer.flush().await.unwrap();
        assert_eq!(adds.len(), 2, "{adds:?}");
        let mut counts = Vec::new();
        for add in &adds {
            let value = add.partition_values[EVENT_DATE].clone().unwrap();
            let stats: serde_json::Value =
                serde_json::from_str(add.stats.as_deref().unwrap()).unwrap();
            counts.push((value, stats["numRecords"].as_i64().unwrap()));
            // The file holds the data columns, not the partition column.
            let path = dir.path().join("events").join(&add.path);
            let file = std::fs::File::open(path).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024)
                    .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                assert!(batch.column_by_name(EVENT_DATE).is_none());
                assert_eq!(batch.num_columns(), events_schema().fields().len() - 1);
            }
        }
        counts.sort();
        assert_eq!(
            counts,
            vec![
                ("2024-03-01".to_owned(), on_first_day),
                ("2024-03-02".to_owned(), 9 - on_first_day),
            ]
        );
    }

    /// Flush files fall back to `PLAIN` for text: the format-2 default, `DELTA_BYTE_ARRAY`,
    /// reserves two 1 MiB buffers per text column writer before writing a value. Every text
    /// column has statistics except the JSON documents (`layout::WITHOUT_STATISTICS`).
    #[tokio::test]
    async fn flush_files_write_text_without_delta_encodings_or_json_statistics() {
        use parquet::basic::{Encoding, Type};
        use parquet::file::reader::{FileReader, SerializedFileReader};

        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::local(&dir.path().join("events")).unwrap();
        let mut table = EventTable::open_or_create(&location, "writer-a")
            .await
            .unwrap();
        table.append(&batch(50), 1).await.unwrap();
        let mut files = Vec::new();
        let mut dirs = vec![dir.path().join("events")];
        while let Some(next) = dirs.pop() {
            for entry in std::fs::read_dir(next).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|ext| ext == "parquet") {
                    files.push(path);
                }
            }
        }
        assert_eq!(files.len(), 2, "one file per day: {files:?}");
        for file in files {
            let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
            for row_group in reader.metadata().row_groups() {
                for column in row_group.columns() {
                    if column.column_type() != Type::BYTE_ARRAY {
                        continue;
                    }
                    let encodings: Vec<Encoding> = column.encodings().collect();
                    let name = column.column_path().string();
                    assert!(
                        !encodings.contains(&Encoding::DELTA_BYTE_ARRAY),
                        "{name}: {encodings:?}"
                    );
                    if name == "message_id" {
                        assert!(encodings.contains(&Encoding::PLAIN), "{encodings:?}");
                    }
                    let json = ["properties", "traits", "context"].contains(&name.as_str());
                    assert_eq!(column.statistics().is_none(), json, "{name}");
                }
            }
        }
    }
}
