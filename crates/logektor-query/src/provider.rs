//! The `events` table as DataFusion sees it: the Delta snapshot ∪ the in-memory buffer.

use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::{cast, concat, filter_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType, col, lit};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// Which sources a query may read: everything, or only the rows of some sources (a read
/// token scoped to them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    All,
    Sources(Arc<[String]>),
}

impl Scope {
    pub fn allows(&self, source: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Sources(sources) => sources.iter().any(|s| s == source),
        }
    }
}

/// A union of the table scan and the buffered batches. Each part gets the same projection,
/// filters and limit; filters are `Inexact` so DataFusion re-applies them above the union.
///
/// Under a [`Scope::Sources`] the rows of other sources never reach a user's expression: the
/// buffered batches are filtered here, before DataFusion sees them; the table scan gets the
/// scope as its only filter and sits under a [`ScopeExec`], which lets no filter of the query
/// (and no dynamic filter) pass down into the scan, and reports no statistics; and the query's
/// own filters are refused for pushdown, so DataFusion evaluates them above the scope. Without
/// that, a predicate pushed into the Parquet reader runs on every row, and its errors (a cast
/// or a division failing on a value of another source) or EXPLAIN ANALYZE's row counts would
/// tell what other sources hold.
#[derive(Debug)]
pub struct EventsProvider {
    schema: SchemaRef,
    table: Option<Arc<dyn TableProvider>>,
    /// The buffered rows in scope, as the ingest path built them: one small batch per request.
    /// Each scan concatenates and casts only the columns it reads (see [`Self::buffer_scan`]).
    buffered: Vec<RecordBatch>,
    scope: Scope,
}

/// Rows per batch handed to DataFusion from the buffer.
const BUFFER_BATCH_ROWS: usize = 8192;

impl EventsProvider {
    /// `buffered` must hold only rows that are not in `table`'s snapshot. Buffered columns are
    /// cast to the table provider's types when scanned (Delta scans may choose other string or
    /// partition encodings than the ingest path builds).
    pub fn try_new(
        table: Option<Arc<dyn TableProvider>>,
        buffered: Vec<RecordBatch>,
        canonical: SchemaRef,
        scope: Scope,
    ) -> Result<Self> {
        let schema = match &table {
            Some(provider) => provider.schema(),
            None => canonical,
        };
        let buffered = buffered
            .into_iter()
            .map(|batch| in_scope(&batch, &scope))
            .filter(|batch| batch.as_ref().map_or(true, |b| b.num_rows() > 0))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            schema,
            table,
            buffered,
            scope,
        })
    }

    /// The column indices a scan's `projection` reads (`None`: all of them).
    fn columns(&self, projection: Option<&Vec<usize>>) -> Vec<usize> {
        match projection {
            Some(columns) => columns.clone(),
            None => (0..self.schema.fields().len()).collect(),
        }
    }

    /// The buffered rows as a memory scan of the projected columns. The buffer holds one batch
    /// per request (~100 rows): concatenated into [`BUFFER_BATCH_ROWS`]-row batches and cast
    /// once per column read, a scan of 75k buffered rows costs a few casts instead of
    /// thousands (casting every column of every request batch took ~30 ms per query).
    async fn buffer_scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = Arc::new(self.schema.project(&self.columns(projection))?);
        let mut batches = Vec::new();
        let mut group: Vec<&RecordBatch> = Vec::new();
        let mut rows = 0;
        for (i, batch) in self.buffered.iter().enumerate() {
            group.push(batch);
            rows += batch.num_rows();
            if rows >= BUFFER_BATCH_ROWS || i + 1 == self.buffered.len() {
                batches.push(conform(&group, rows, &schema)?);
                group.clear();
                rows = 0;
            }
        }
        let memory = MemTable::try_new(schema, vec![batches])?;
        memory.scan(state, None, filters, limit).await
    }
}

/// The rows of `batch` whose source the scope allows.
fn in_scope(batch: &RecordBatch, scope: &Scope) -> Result<RecordBatch> {
    if *scope == Scope::All {
        return Ok(batch.clone());
    }
    let column = batch.column_by_name("source").ok_or_else(|| {
        datafusion::error::DataFusionError::Internal("buffered batch lacks column source".into())
    })?;
    let sources = cast(column, &DataType::Utf8)?;
    let sources = sources.as_string::<i32>();
    let keep: BooleanArray = (0..sources.len())
        .map(|i| Some(sources.is_valid(i) && scope.allows(sources.value(i))))
        .collect();
    Ok(filter_record_batch(batch, &keep)?)
}

/// One batch of `schema`'s columns from `batches` (`rows` rows in all): each column
/// concatenated, then cast to the schema's type.
fn conform(batches: &[&RecordBatch], rows: usize, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let parts = batches
                .iter()
                .map(|batch| {
                    batch.column_by_name(field.name()).ok_or_else(|| {
                        datafusion::error::DataFusionError::Internal(format!(
                            "buffered batch lacks column {}",
                            field.name()
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let whole = match parts.as_slice() {
                [one] => Arc::clone(one),
                _ => concat(&parts.iter().map(|a| a.as_ref()).collect::<Vec<_>>())?,
            };
            if whole.data_type() == field.data_type() {
                Ok(whole)
            } else {
                Ok(cast(&whole, field.data_type())?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

#[async_trait]
impl TableProvider for EventsProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let support = match self.scope {
            Scope::All => TableProviderFilterPushDown::Inexact,
            Scope::Sources(_) => TableProviderFilterPushDown::Unsupported,
        };
        Ok(vec![support; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut inputs = Vec::with_capacity(2);
        match &self.scope {
            Scope::All => {
                if let Some(table) = &self.table {
                    inputs.push(table.scan(state, projection, filters, limit).await?);
                }
                inputs.push(self.buffer_scan(state, projection, filters, limit).await?);
            }
            Scope::Sources(sources) => {
                if let Some(table) = &self.table {
                    inputs.push(
                        self.scoped_table_scan(table, sources, state, projection)
                            .await?,
                    );
                }
                // The buffered rows are already only the scope's.
                inputs.push(self.buffer_scan(state, projection, &[], None).await?);
            }
        }
        UnionExec::try_new(inputs)
    }
}

impl EventsProvider {
    /// The table's rows of `sources` only, projected, under a [`ScopeExec`].
    async fn scoped_table_scan(
        &self,
        table: &Arc<dyn TableProvider>,
        sources: &[String],
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wanted = self.columns(projection);
        let source_index = self.schema.index_of("source")?;
        let mut columns = wanted.clone();
        if !columns.contains(&source_index) {
            columns.push(source_index);
        }
        let scope = col("source").in_list(sources.iter().map(|s| lit(s.as_str())).collect(), false);
        let scan = table
            .scan(state, Some(&columns), std::slice::from_ref(&scope), None)
            .await?;
        let scan_schema = DFSchema::try_from(scan.schema().as_ref().clone())?;
        let predicate = state.create_physical_expr(scope, &scan_schema)?;
        let filtered: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(predicate, scan)?);
        let output: Vec<(Arc<dyn PhysicalExpr>, String)> = wanted
            .iter()
            .map(|&index| {
                let name = self.schema.field(index).name();
                let column = Column::new_with_schema(name, &filtered.schema())?;
                Ok((Arc::new(column) as Arc<dyn PhysicalExpr>, name.clone()))
            })
            .collect::<Result<_>>()?;
        let projected = Arc::new(ProjectionExec::try_new(output, filtered)?);
        Ok(Arc::new(ScopeExec::new(projected)))
    }
}

/// A barrier above a scoped table scan: passes its child's rows through unchanged, but takes
/// part in no filter pushdown (the trait's default marks every parent filter unsupported, so
/// none reaches the scan) and reports unknown statistics (so neither the optimizer's exact
/// `count(*)` nor EXPLAIN sees the unscoped table's numbers).
#[derive(Debug)]
pub struct ScopeExec {
    input: Arc<dyn ExecutionPlan>,
}

impl ScopeExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self { input }
    }
}

impl DisplayAs for ScopeExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "ScopeExec")
    }
}

impl ExecutionPlan for ScopeExec {
    fn name(&self) -> &str {
        "ScopeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ScopeExec::new(children.swap_remove(0))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_expr::utils::collect_columns;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use logektor_event::{Endpoint, RequestMeta, decode, to_record_batch};

    fn batch(source: &str, n: &str) -> RecordBatch {
        let body = serde_json::json!({"batch": [
            {"type": "track", "event": "E", "anonymousId": "a", "properties": {"n": n}},
            {"type": "track", "event": "E", "anonymousId": "b", "properties": {"n": n}}
        ]});
        let events = decode(
            &RequestMeta::new(1_715_000_000_000_000, source, 1),
            Endpoint::Batch,
            body.to_string().as_bytes(),
        )
        .unwrap();
        to_record_batch(&events)
    }

    /// Every filter under a `ScopeExec` reads the `source` column only.
    fn assert_only_scope_below_barrier(plan: &Arc<dyn ExecutionPlan>, below: bool) -> usize {
        let mut barriers = 0;
        let below = below || plan.name() == "ScopeExec";
        if plan.name() == "ScopeExec" {
            barriers += 1;
        }
        if below && let Some(filter) = plan.downcast_ref::<FilterExec>() {
            for column in collect_columns(filter.predicate()) {
                assert_eq!(column.name(), "source", "a query filter reached the scan");
            }
        }
        for child in plan.children() {
            barriers += assert_only_scope_below_barrier(child, below);
        }
        barriers
    }

    #[tokio::test]
    async fn many_small_buffered_batches_scan_as_their_rows_in_the_table_types() {
        // 5,000 request batches of 2 rows: more than one coalesced batch, and a partial last one.
        let buffered: Vec<RecordBatch> = (0..5_000)
            .map(|i| batch(if i % 3 == 0 { "app" } else { "web" }, &i.to_string()))
            .collect();
        // The table reads strings as views; the buffer holds plain strings.
        let viewed: Vec<_> = buffered[0]
            .schema()
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View)),
                _ => Arc::clone(f),
            })
            .collect();
        let table_schema = Arc::new(arrow::datatypes::Schema::new(viewed));
        let table: Arc<dyn TableProvider> =
            Arc::new(MemTable::try_new(Arc::clone(&table_schema), vec![vec![]]).unwrap());
        for scope in [Scope::All, Scope::Sources(vec!["app".to_owned()].into())] {
            let provider = EventsProvider::try_new(
                Some(Arc::clone(&table)),
                buffered.clone(),
                buffered[0].schema(),
                scope.clone(),
            )
            .unwrap();
            let ctx = SessionContext::new();
            ctx.register_table("events", Arc::new(provider)).unwrap();
            let one = |sql: &'static str| {
                let ctx = ctx.clone();
                async move {
                    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                    arrow::util::pretty::pretty_format_batches(&batches)
                        .unwrap()
                        .to_string()
                }
            };
            let (rows, app_rows) = if scope == Scope::All {
                (10_000, 3_334)
            } else {
                (3_334, 3_334)
            };
            assert!(
                one("SELECT count(*) AS n FROM events")
                    .await
                    .contains(&format!("| {rows} "))
            );
            let by_source = one(
                "SELECT count(*) AS n, arrow_typeof(source) AS t FROM events \
                 WHERE source = 'app' GROUP BY t",
            )
            .await;
            assert!(by_source.contains(&format!("| {app_rows} ")), "{by_source}");
            assert!(by_source.contains("Utf8View"), "{by_source}");
            // Columns out of schema order, a filter on one not selected, and a limit.
            let picked = one("SELECT properties, anonymous_id FROM events \
                 WHERE properties LIKE '%\"4999\"%' LIMIT 5")
            .await;
            assert_eq!(
                picked.matches("4999").count(),
                if scope == Scope::All { 2 } else { 0 }
            );
        }
    }

    #[tokio::test]
    async fn a_scoped_scan_evaluates_no_query_expression_on_other_sources() {
        let schema = batch("web", "1").schema();
        // "app" holds values the query's cast fails on; "web" holds good ones.
        let table = MemTable::try_new(
            Arc::clone(&schema),
            vec![vec![batch("app", "not-a-number"), batch("web", "1")]],
        )
        .unwrap();
        let provider = EventsProvider::try_new(
            Some(Arc::new(table)),
            vec![batch("app", "not-a-number"), batch("web", "2")],
            Arc::clone(&schema),
            Scope::Sources(vec!["web".to_owned()].into()),
        )
        .unwrap();
        let mut config = SessionConfig::new();
        config.options_mut().execution.parquet.pushdown_filters = true;
        let mut ctx = SessionContext::new_with_config(config);
        datafusion_functions_json::register_all(&mut ctx).unwrap();
        ctx.register_table("events", Arc::new(provider)).unwrap();
        let frame = ctx
            .sql(
                "SELECT count(*) AS n FROM events \
                 WHERE CAST(json_get_str(properties, 'n') AS INT) > 0 OR source = 'x'",
            )
            .await
            .unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        assert_eq!(assert_only_scope_below_barrier(&plan, false), 1);
        let batches = frame.collect().await.unwrap();
        let count = batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0);
        assert_eq!(count, 4, "two web rows in the table, two in the buffer");

        // Without the scope the same query fails on app's values: the probe has teeth.
        let unscoped = EventsProvider::try_new(
            Some(Arc::new(
                MemTable::try_new(
                    Arc::clone(&schema),
                    vec![vec![batch("app", "not-a-number")]],
                )
                .unwrap(),
            )),
            vec![],
            Arc::clone(&schema),
            Scope::All,
        )
        .unwrap();
        ctx.deregister_table("events").unwrap();
        ctx.register_table("events", Arc::new(unscoped)).unwrap();
        let failed = ctx
            .sql("SELECT count(*) FROM events WHERE CAST(json_get_str(properties, 'n') AS INT) > 0")
            .await
            .unwrap()
            .collect()
            .await;
        assert!(failed.is_err());
    }
}
