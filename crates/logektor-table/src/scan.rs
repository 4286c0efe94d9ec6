//! Reading a table version with DataFusion's own Parquet scan, from a file list parsed once.
//!
//! delta-rs 1.1 plans every scan by replaying the snapshot's file actions through the Delta
//! kernel: it parses each file's statistics JSON and evaluates the skipping predicate, per query.
//! With a flush per second that is ~0.1 ms per file and query, so the newest events (the
//! freshness probe, the live report) cost ~100 ms of planning after five minutes of load, most
//! of it for files the query never reads.
//!
//! [`FileIndex`] is that replay done once per table version: path, size, partition value, row
//! count and min/max/null counts of every file. A file's entry is parsed once in its life and
//! carried over from version to version through a [`FileCache`]. [`DeltaFiles`] prunes the index
//! with DataFusion's [`PruningPredicate`] and hands the survivors to DataFusion's Parquet scan,
//! which prunes row groups and pages further and evaluates filters pushed into it, as for any
//! Parquet listing.
//!
//! Only tables whose files are plain Parquet are read this way: a table with reader features
//! (deletion vectors, column mapping, ...) goes to delta-rs's provider, which implements them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{Column, ColumnStatistics, DFSchema, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DfResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use object_store::path::Path;
use tracing::debug;
use url::Url;

use crate::counts::ExactRowCount;

/// One data file of a table version, as the scan needs it.
#[derive(Debug)]
struct IndexedFile {
    /// From the root of the store DataFusion reads through (see [`store_url`]).
    path: Path,
    size: u64,
    partition_values: Vec<ScalarValue>,
    /// Row count (exact) and, per column of the table schema, min, max and null count
    /// (inexact; absent where unknown); partition columns carry their value as min and max.
    /// Used for our file pruning and handed to DataFusion (dynamic filters, `count(*)`).
    statistics: Arc<Statistics>,
}

/// Parsed entries by the add action's path, shared by the versions of one table so that each
/// file is parsed once.
#[derive(Debug, Default)]
pub(crate) struct FileCache {
    files: Mutex<HashMap<String, Arc<IndexedFile>>>,
}

/// The files of one table version and the schema to read them with.
#[derive(Debug)]
pub(crate) struct FileIndex {
    /// Data columns (strings as views), then the partition columns.
    table_schema: SchemaRef,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    store: ObjectStoreUrl,
    files: Vec<Arc<IndexedFile>>,
}

/// A version's index, built on its first scan. `None` inside: read with delta-rs.
#[derive(Debug, Default)]
pub(crate) struct IndexSlot {
    index: OnceLock<Option<Arc<FileIndex>>>,
    cache: Arc<FileCache>,
}

impl IndexSlot {
    /// A slot for a new version whose entries may come from `cache`.
    pub(crate) fn with_cache(cache: Arc<FileCache>) -> Self {
        Self {
            index: OnceLock::new(),
            cache,
        }
    }

    /// The index of `table`'s loaded version, building it on first use.
    pub(crate) fn get(&self, table: &DeltaTable) -> Option<Arc<FileIndex>> {
        self.index
            .get_or_init(|| match FileIndex::build(table, &self.cache) {
                Ok(index) => index.map(Arc::new),
                Err(reason) => {
                    debug!(%reason, "reading the table with delta-rs's scan");
                    None
                }
            })
            .clone()
    }
}

impl FileIndex {
    /// `Ok(None)` when the table needs a reader feature this scan does not implement.
    fn build(table: &DeltaTable, cache: &FileCache) -> Result<Option<Self>, String> {
        let state = table.snapshot().map_err(|err| err.to_string())?;
        if let Some(features) = state.protocol().reader_features()
            && !features.is_empty()
        {
            return Err(format!("reader features {features:?}"));
        }
        if state
            .metadata()
            .configuration()
            .get("delta.columnMapping.mode")
            .is_some_and(|mode| mode != "none")
        {
            return Err("column mapping".into());
        }
        let logical = state.snapshot().arrow_schema();
        let partition_columns = state.metadata().partition_columns().to_vec();
        let as_read = |field: &Field| -> FieldRef {
            let data_type = match field.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
                other => other.clone(),
            };
            Arc::new(field.clone().with_data_type(data_type))
        };
        let data_fields: Vec<FieldRef> = logical
            .fields()
            .iter()
            .filter(|f| !partition_columns.contains(f.name()))
            .map(|f| as_read(f))
            .collect();
        let partition_fields = partition_columns
            .iter()
            .map(|name| {
                logical
                    .field_with_name(name)
                    .map(as_read)
                    .map_err(|err| err.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let file_schema = Arc::new(Schema::new(data_fields.clone()));
        let table_schema = Arc::new(Schema::new(
            data_fields
                .iter()
                .chain(&partition_fields)
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let root = table.log_store().root_url().clone();
        let prefix = Path::from_url_path(root.path()).map_err(|err| err.to_string())?;

        let mut cache = cache.files.lock().expect("file cache lock");
        let mut kept = HashMap::with_capacity(cache.len());
        let mut files = Vec::new();
        for view in state.log_data().iter() {
            let key = view.path().into_owned();
            let file = match cache.remove(&key) {
                Some(file) => file,
                None => Arc::new(index_file(
                    &view,
                    &prefix,
                    &table_schema,
                    &partition_columns,
                )?),
            };
            kept.insert(key, Arc::clone(&file));
            files.push(file);
        }
        // Entries of files no longer in the table are dropped here.
        *cache = kept;
        Ok(Some(Self {
            table_schema,
            file_schema,
            partition_fields,
            store: store_url(&root)?,
            files,
        }))
    }
}

/// The URL under which delta-rs registers the table's root object store with a session
/// (`DeltaTable::update_datafusion_session`): scheme and authority.
fn store_url(root: &Url) -> Result<ObjectStoreUrl, String> {
    ObjectStoreUrl::parse(format!(
        "{}://{}",
        root.scheme(),
        &root[url::Position::BeforeHost..url::Position::AfterPort]
    ))
    .map_err(|err| err.to_string())
}

fn index_file(
    view: &deltalake::kernel::LogicalFileView,
    prefix: &Path,
    schema: &Schema,
    partition_columns: &[String],
) -> Result<IndexedFile, String> {
    let path: Path = prefix
        .parts()
        .chain(view.object_store_path().parts())
        .collect();
    let partitions = view.partition_values_map();
    let stats: Option<serde_json::Value> = view
        .stats()
        .and_then(|json| serde_json::from_str(&json).ok());
    let section = |name: &str| stats.as_ref().and_then(|s| s.get(name));
    let rows = section("numRecords").and_then(serde_json::Value::as_u64);
    let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let known = |v: Option<ScalarValue>| match v {
        Some(v) if !v.is_null() => Precision::Inexact(v),
        _ => Precision::Absent,
    };
    let mut statistics = Statistics::new_unknown(schema);
    statistics.num_rows = rows.map_or(Precision::Absent, |n| Precision::Exact(count(n)));
    let mut partition_values = Vec::new();
    for (field, column) in schema
        .fields()
        .iter()
        .zip(&mut statistics.column_statistics)
    {
        if partition_columns.contains(field.name()) {
            let value = match partitions.get(field.name()) {
                Some(Some(text)) => ScalarValue::try_from_string(text.clone(), field.data_type())
                    .map_err(|err| format!("partition value {text:?}: {err}"))?,
                _ => ScalarValue::try_from(field.data_type()).map_err(|err| err.to_string())?,
            };
            let nulls = rows.map(|rows| if value.is_null() { rows } else { 0 });
            column.min_value = known(Some(value.clone()));
            column.max_value = known(Some(value.clone()));
            column.null_count = nulls.map_or(Precision::Absent, |n| Precision::Inexact(count(n)));
            partition_values.push(value);
            continue;
        }
        let value_of = |name: &str, upper: bool| {
            section(name)
                .and_then(|values| values.get(field.name()))
                .and_then(|value| stat_value(value, field.data_type(), upper))
        };
        column.min_value = known(value_of("minValues", false));
        column.max_value = known(value_of("maxValues", true));
        column.null_count = section("nullCount")
            .and_then(|counts| counts.get(field.name()))
            .and_then(serde_json::Value::as_u64)
            .map_or(Precision::Absent, |n| Precision::Inexact(count(n)));
    }
    Ok(IndexedFile {
        statistics: Arc::new(statistics),
        path,
        size: u64::try_from(view.size()).unwrap_or_default(),
        partition_values,
    })
}

/// A Delta statistics value as a scalar of the column's type; `None` if the type is
/// not one we prune on or the value does not parse. Delta writes timestamps truncated to
/// milliseconds, so a maximum is rounded up to the last microsecond of its millisecond.
fn stat_value(value: &serde_json::Value, data_type: &DataType, upper: bool) -> Option<ScalarValue> {
    match (data_type.clone(), value) {
        (DataType::Utf8View, serde_json::Value::String(text)) => {
            Some(ScalarValue::Utf8View(Some(text.clone())))
        }
        (DataType::Utf8, serde_json::Value::String(text)) => {
            Some(ScalarValue::Utf8(Some(text.clone())))
        }
        (DataType::Boolean, serde_json::Value::Bool(b)) => Some(ScalarValue::Boolean(Some(*b))),
        (DataType::Int64, value) => value.as_i64().map(|v| ScalarValue::Int64(Some(v))),
        (DataType::Int32, value) => value
            .as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .map(|v| ScalarValue::Int32(Some(v))),
        (DataType::Float64, value) => value.as_f64().map(|v| ScalarValue::Float64(Some(v))),
        (DataType::Date32, serde_json::Value::String(text)) => {
            ScalarValue::try_from_string(text.clone(), &DataType::Date32).ok()
        }
        (DataType::Timestamp(TimeUnit::Microsecond, zone), serde_json::Value::String(text)) => {
            let micros = chrono::DateTime::parse_from_rfc3339(text)
                .ok()?
                .timestamp_micros();
            let micros = if upper {
                micros.div_euclid(1000) * 1000 + 999
            } else {
                micros
            };
            Some(ScalarValue::TimestampMicrosecond(Some(micros), zone))
        }
        _ => None,
    }
}

/// [`PruningStatistics`] over the files of an index: one container per file.
struct FileStatistics<'a> {
    index: &'a FileIndex,
}

impl FileStatistics<'_> {
    fn column(&self, column: &Column) -> Option<usize> {
        self.index.table_schema.index_of(&column.name).ok()
    }

    /// One value per file (a typed null where unknown) picked from the column's statistics.
    fn values(
        &self,
        column: &Column,
        pick: fn(&ColumnStatistics) -> &Precision<ScalarValue>,
    ) -> Option<ArrayRef> {
        let i = self.column(column)?;
        let unknown = ScalarValue::try_from(self.index.table_schema.field(i).data_type()).ok()?;
        let values = self.index.files.iter().map(|f| {
            pick(&f.statistics.column_statistics[i])
                .get_value()
                .cloned()
                .unwrap_or_else(|| unknown.clone())
        });
        ScalarValue::iter_to_array(values).ok()
    }
}

impl PruningStatistics for FileStatistics<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.values(column, |c| &c.min_value)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.values(column, |c| &c.max_value)
    }

    fn num_containers(&self) -> usize {
        self.index.files.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let i = self.column(column)?;
        let counts: UInt64Array = self
            .index
            .files
            .iter()
            .map(|f| {
                let nulls = f.statistics.column_statistics[i].null_count.get_value();
                nulls.map(|&n| n as u64)
            })
            .collect();
        Some(Arc::new(counts))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let counts: UInt64Array = self
            .index
            .files
            .iter()
            .map(|f| f.statistics.num_rows.get_value().map(|&n| n as u64))
            .collect();
        Some(Arc::new(counts))
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

/// A DataFusion table over one [`FileIndex`].
#[derive(Debug)]
pub(crate) struct DeltaFiles {
    index: Arc<FileIndex>,
}

impl DeltaFiles {
    pub(crate) fn new(index: Arc<FileIndex>) -> Self {
        Self { index }
    }

    /// Which files may hold rows matching all of `filters`.
    fn prune(&self, session: &dyn Session, filters: &[Expr]) -> DfResult<Vec<Arc<IndexedFile>>> {
        let index = &self.index;
        let Some(predicate) = conjunction(filters.iter().cloned()) else {
            return Ok(index.files.clone());
        };
        let df_schema = DFSchema::try_from(Arc::clone(&index.table_schema))?;
        let predicate = session.create_physical_expr(predicate, &df_schema)?;
        let Some(pruning) = PruningPredicateBuilder::new()
            .with_file_schema(Arc::clone(&index.table_schema))
            .build(predicate)
        else {
            return Ok(index.files.clone());
        };
        let keep = pruning.prune(&FileStatistics { index })?;
        Ok(index
            .files
            .iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|(file, _)| Arc::clone(file))
            .collect())
    }
}

#[async_trait]
impl TableProvider for DeltaFiles {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.index.table_schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Files are pruned by statistics and the Parquet reader filters rows it is given, but
        // DataFusion re-applies every filter above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let index = &self.index;
        let files = self.prune(session, filters)?;
        debug!(
            files = files.len(),
            of = index.files.len(),
            "files left after pruning"
        );
        if files.is_empty() {
            let schema = match projection {
                Some(columns) => Arc::new(index.table_schema.project(columns)?),
                None => Arc::clone(&index.table_schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let groups = file_groups(&files, session.config().target_partitions().max(1));
        let mut statistics = Statistics::new_unknown(&index.table_schema);
        statistics.num_rows = files.iter().fold(Precision::Exact(0), |rows, f| {
            rows.add(&f.statistics.num_rows)
        });
        statistics.total_byte_size =
            Precision::Inexact(files.iter().map(|f| f.size as usize).sum());
        let format = ParquetFormat::default().with_options(session.table_options().parquet.clone());
        let table_schema = TableSchema::builder(Arc::clone(&index.file_schema))
            .with_table_partition_cols(index.partition_fields.clone())
            .build();
        let config =
            FileScanConfigBuilder::new(index.store.clone(), format.file_source(table_schema))
                .with_file_groups(groups)
                .with_statistics(statistics)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
        format.create_physical_plan(session, config).await
    }
}

/// Spreads files over `partitions` groups of about equal bytes (largest first, each to the
/// lightest group).
fn file_groups(files: &[Arc<IndexedFile>], partitions: usize) -> Vec<FileGroup> {
    let mut order: Vec<&Arc<IndexedFile>> = files.iter().collect();
    order.sort_by_key(|f| std::cmp::Reverse(f.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..partitions.min(files.len()))
        .map(|_| (0, Vec::new()))
        .collect();
    for file in order {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group");
        lightest.0 += file.size;
        let mut part = PartitionedFile::new(file.path.clone(), file.size);
        part.partition_values = file.partition_values.clone();
        // Plain Parquet (the index refuses tables with reader features): a scan yields exactly
        // `numRecords` rows, so counts may come from the index (see crate::counts).
        if matches!(file.statistics.num_rows, Precision::Exact(_)) {
            part.extensions.insert(ExactRowCount);
        }
        lightest
            .1
            .push(part.with_statistics(Arc::clone(&file.statistics)));
    }
    groups
        .into_iter()
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sorted_lines;
    use crate::{EventTable, TableLocation};
    use arrow::record_batch::RecordBatch;
    use datafusion::prelude::SessionContext;
    use logektor_event::{Endpoint, RequestMeta, decode, to_record_batch};

    /// `n` events received at `received_micros` from `source`, on two days.
    fn batch(n: usize, received_micros: i64, source: &str) -> RecordBatch {
        batch_with_ids(n, received_micros, source, |i| {
            format!("{source}-{received_micros}-{i}")
        })
    }

    fn batch_with_ids(
        n: usize,
        received_micros: i64,
        source: &str,
        id: impl Fn(usize) -> String,
    ) -> RecordBatch {
        let events: Vec<_> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"type":"page","messageId":"{}","anonymousId":"a{}","properties":{{"path":"/p{}","n":{i}}},"timestamp":"2024-03-0{}T10:00:00Z"}}"#,
                    id(i),
                    i % 4,
                    i % 3,
                    1 + i % 2
                )
            })
            .collect();
        let body = format!(r#"{{"batch":[{}]}}"#, events.join(","));
        let meta = RequestMeta::new(received_micros, source, 1);
        to_record_batch(&decode(&meta, Endpoint::Batch, body.as_bytes()).unwrap())
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        sorted_lines(&batches)
    }

    #[tokio::test]
    async fn reads_what_delta_rs_reads_and_prunes_files_by_their_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::local(&dir.path().join("events")).unwrap();
        let mut table = EventTable::open_or_create(&location, "w").await.unwrap();
        // Three flushes, one second apart; the last received 999 µs into its millisecond,
        // which Delta's statistics (milliseconds) truncate away.
        let base = 1_709_290_000_000_000;
        let times = [base, base + 1_000_000, base + 2_000_999];
        for (seq, (&at, source)) in times.iter().zip(["web", "app", "web"]).enumerate() {
            table
                .append(&batch(9, at, source), seq as u64 + 1)
                .await
                .unwrap();
        }
        let snapshot = table.snapshot();
        let delta = snapshot.table.as_ref().unwrap();
        let index = snapshot.files.get(delta).expect("a plain Parquet table");
        // Two days per flush: six files.
        assert_eq!(index.files.len(), 6);
        assert!(
            index
                .files
                .iter()
                .all(|f| f.statistics.num_rows.get_value().is_some())
        );

        let ours = SessionContext::new();
        let provider = snapshot.provider(&ours.state()).await.unwrap().unwrap();
        ours.register_table("events", provider).unwrap();
        let theirs = SessionContext::new();
        delta.update_datafusion_session(&theirs.state()).unwrap();
        theirs
            .register_table("events", delta.table_provider().await.unwrap())
            .unwrap();
        for sql in [
            "SELECT * FROM events",
            "SELECT count(*) FROM events",
            "SELECT event_date, source, count(*), max(received_at) FROM events GROUP BY 1, 2",
            "SELECT message_id FROM events WHERE received_at >= to_timestamp_micros(1709290002000500)",
            "SELECT message_id FROM events WHERE received_at > to_timestamp_micros(1709290001000000) AND source = 'web'",
            "SELECT message_id, page_path FROM events WHERE event_date = DATE '2024-03-02' AND anonymous_id = 'a1'",
            "SELECT message_id FROM events WHERE message_id = 'app-1709290001000000-4'",
            "SELECT substr(properties, 1, 12) FROM events WHERE properties LIKE '%\"n\":3%'",
            "SELECT count(*) FROM events WHERE received_at < to_timestamp_micros(0)",
        ] {
            assert_eq!(
                answer(&ours, sql).await,
                answer(&theirs, sql).await,
                "{sql}"
            );
        }
        assert_eq!(
            answer(
                &ours,
                "SELECT count(*) AS n FROM events WHERE received_at >= to_timestamp_micros(1709290002000500)"
            )
            .await[3],
            "| 9 |"
        );

        let files = DeltaFiles::new(Arc::clone(&index));
        let kept = |filter: Expr| files.prune(&ours.state(), &[filter]).unwrap().len();
        use datafusion::prelude::{col, lit};
        let micros = |t: i64| {
            lit(ScalarValue::TimestampMicrosecond(
                Some(t),
                Some("UTC".into()),
            ))
        };
        assert_eq!(kept(col("received_at").gt_eq(micros(base + 2_000_500))), 2);
        assert_eq!(kept(col("received_at").gt(micros(base + 2_000_999))), 0);
        assert_eq!(kept(col("received_at").lt(micros(base + 1))), 2);
        assert_eq!(kept(col("source").eq(lit("app"))), 2);
        assert_eq!(
            kept(col("event_date").eq(lit(ScalarValue::Date32(Some(19_783))))),
            3
        );
        assert_eq!(kept(col("message_id").eq(lit("web-1709290000000000-3"))), 2);
        assert_eq!(kept(col("page_path").is_not_null()), 6);
    }

    #[tokio::test]
    async fn a_lookup_by_message_id_reads_no_row_group_of_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::local(&dir.path().join("events")).unwrap();
        let mut table = EventTable::open_or_create(&location, "w").await.unwrap();
        // Ids interleave across the flushes, so min/max statistics prune nothing.
        for seq in 1..=4_u64 {
            let ids = batch_with_ids(50, 1_709_290_000_000_000, "web", |i| {
                format!("{i:02}-{seq}")
            });
            table.append(&ids, seq).await.unwrap();
        }
        let ctx = SessionContext::new();
        let provider = table
            .snapshot()
            .provider(&ctx.state())
            .await
            .unwrap()
            .unwrap();
        ctx.register_table("events", provider).unwrap();
        let sql = "EXPLAIN ANALYZE SELECT count(*) FROM events \
                   WHERE message_id = '07-2'";
        let plan = answer(&ctx, sql).await.join("\n");
        // Every row group matches by min/max; the bloom filters leave the one holding the id
        // (and, at a 1% false-positive rate per filter, rarely one more).
        let matched = |name: &str| -> (u32, u32) {
            let start = plan
                .find(name)
                .unwrap_or_else(|| panic!("{name} in {plan}"));
            let text = plan[start + name.len()..].split([',', ']']).next().unwrap();
            let numbers: Vec<u32> = text
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            (numbers[0], numbers[1])
        };
        assert_eq!(matched("row_groups_pruned_statistics="), (8, 8));
        let (total, left) = matched("row_groups_pruned_bloom_filter=");
        assert_eq!(total, 8);
        assert!(
            (1..=2).contains(&left),
            "{left} of 8 row groups left: {plan}"
        );
        let rows = answer(
            &ctx,
            "SELECT count(*) AS n FROM events WHERE message_id = '07-2'",
        )
        .await;
        assert_eq!(rows[3], "| 1 |", "{rows:?}");
    }

    #[tokio::test]
    async fn a_table_with_deletion_vectors_is_read_by_delta_rs() {
        use deltalake::kernel::StructType;
        use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
        use logektor_event::schema::{EVENT_DATE, events_schema};

        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::local(&dir.path().join("events")).unwrap();
        // Created by another tool with a reader feature this scan does not implement.
        let schema: StructType = events_schema().as_ref().try_into_kernel().unwrap();
        crate::table::load_if_exists(&location)
            .await
            .unwrap()
            .create()
            .with_columns(schema.fields().cloned())
            .with_partition_columns([EVENT_DATE])
            .with_configuration_property(
                deltalake::TableProperty::EnableDeletionVectors,
                Some("true"),
            )
            .await
            .unwrap();
        let mut table = EventTable::open_or_create(&location, "w").await.unwrap();
        table
            .append(&batch(6, 1_709_290_000_000_000, "web"), 1)
            .await
            .unwrap();
        let snapshot = table.snapshot();
        assert!(
            snapshot
                .files
                .get(snapshot.table.as_ref().unwrap())
                .is_none(),
            "deletion vectors need delta-rs's reader"
        );
        let ctx = SessionContext::new();
        let provider = snapshot.provider(&ctx.state()).await.unwrap().unwrap();
        assert!(provider.downcast_ref::<DeltaFiles>().is_none());
        ctx.register_table("events", provider).unwrap();
        assert_eq!(
            answer(&ctx, "SELECT count(*) AS n FROM events").await[3],
            "| 6 |"
        );
    }

    #[tokio::test]
    async fn a_file_is_parsed_once_and_forgotten_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::local(&dir.path().join("events")).unwrap();
        let mut table = EventTable::open_or_create(&location, "w").await.unwrap();
        table
            .append(&batch(4, 1_709_290_000_000_000, "web"), 1)
            .await
            .unwrap();
        let first = table.snapshot();
        let first_index = first.files.get(first.table.as_ref().unwrap()).unwrap();
        table
            .append(&batch(4, 1_709_290_001_000_000, "web"), 2)
            .await
            .unwrap();
        let second = table.snapshot();
        let second_index = second.files.get(second.table.as_ref().unwrap()).unwrap();
        assert_eq!(second_index.files.len(), first_index.files.len() * 2);
        for file in &first_index.files {
            assert!(
                second_index.files.iter().any(|f| Arc::ptr_eq(f, file)),
                "entries of files still in the table are reused"
            );
        }
        assert_eq!(
            table.files.files.lock().unwrap().len(),
            second_index.files.len()
        );
    }
}
