//! Running one read-only SQL statement against a consistent view of the events.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::config::ConfigOptions;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use logektor_table::{CountFromFileIndex, TableSnapshot};
use tokio::time::Instant;

use crate::broadcast_join::with_broadcast_unique_build;
use crate::distinct_views::DistinctViews;
use crate::error::{QueryError, Result};
use crate::json_filter::JsonEqualsFilter;
use crate::like_memo::MemoizedLike;
use crate::provider::{EventsProvider, Scope};
use crate::run_count::RunCount;
use crate::running_window::RunningWindow;
use crate::sort_runs::LongerSortRuns;
use datafusion::logical_expr::LogicalPlan;

/// A consistent view: a table snapshot and the buffered batches that snapshot does not hold.
#[derive(Clone, Default)]
pub struct EventsView {
    pub table: TableSnapshot,
    pub buffered: Vec<RecordBatch>,
}

/// Whoever holds the events hands out consistent views of them.
pub trait EventsSource: Send + Sync {
    fn view(&self) -> EventsView;
}

/// A fixed view, for offline queries.
pub struct StaticSource(pub EventsView);

impl EventsSource for StaticSource {
    fn view(&self) -> EventsView {
        self.0.clone()
    }
}

/// Limits and tuning of the query engine.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Wall-clock limit for planning and running one query.
    pub timeout: Duration,
    /// Memory pool shared by all running queries; beyond it, queries spill (up to
    /// `max_spill_bytes`) or fail.
    pub memory_limit: usize,
    /// Cap on the temporary files all running queries may spill to.
    pub max_spill_bytes: u64,
    /// Cap on the in-memory size of one query's result.
    pub max_result_bytes: usize,
    /// DataFusion's target partitions (parallelism per query).
    pub target_partitions: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_limit: default_memory_limit(),
            max_spill_bytes: 16 * 1024 * 1024 * 1024,
            max_result_bytes: 1024 * 1024 * 1024,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Half the machine's memory (`MemTotal` in `/proc/meminfo`), at least 1 GiB; 1 GiB where that
/// cannot be read. Reports over ten million events need several GiB (DuckDB's own default is
/// 80% of memory); ingest stays well under 1 GiB.
pub fn default_memory_limit() -> usize {
    const FLOOR: usize = 1024 * 1024 * 1024;
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
        });
    total_kib.map_or(FLOOR, |kib| (kib * 1024 / 2).max(FLOOR))
}

/// DataFusion's settings for every query: Parquet filter pushdown on (late materialization pays
/// for the selective filters dashboards use) and batches of 16Ki rows instead of 8Ki (the
/// session reports' joins, windows and aggregates pay a cost per batch over ten million rows;
/// 64Ki made filters over the JSON columns dearer, their batches outgrowing the cache:
/// benches/README.md); then whatever `DATAFUSION_*` environment variables set, named as in
/// DataFusion's configuration reference (`DATAFUSION_EXECUTION_BATCH_SIZE` sets
/// `datafusion.execution.batch_size`). The SQL API cannot change them (`SET` is refused); an
/// invalid variable fails start-up.
fn datafusion_options() -> Result<ConfigOptions> {
    let invalid = |err: DataFusionError| {
        QueryError::Internal(format!("DATAFUSION_* environment variables: {err}"))
    };
    let mut options = ConfigOptions::from_env().map_err(invalid)?;
    for (key, value) in [
        ("datafusion.execution.parquet.pushdown_filters", "true"),
        ("datafusion.execution.parquet.reorder_filters", "true"),
        ("datafusion.execution.batch_size", "16384"),
    ] {
        if std::env::var_os(key.to_uppercase().replace('.', "_")).is_none() {
            options.set(key, value).map_err(invalid)?;
        }
    }
    Ok(options)
}

/// Runs SQL over an [`EventsSource`].
pub struct QueryEngine {
    config: QueryConfig,
    runtime: Arc<RuntimeEnv>,
    source: Arc<dyn EventsSource>,
    /// DataFusion's settings: ours, then any `DATAFUSION_*` environment variables.
    options: ConfigOptions,
}

impl QueryEngine {
    pub fn new(config: QueryConfig, source: Arc<dyn EventsSource>) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit, 1.0)
            // Sorts, windows and repartitions that outgrow the memory limit spill to the OS's
            // temporary directory, up to a bound, instead of failing: sessionizing reports
            // over a few hundred thousand events already exceeded 1 GiB as DataFusion counts
            // memory (a sliced batch counts its whole buffers).
            .with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::OsTmpDirectory)
                    .with_max_temp_directory_size(config.max_spill_bytes),
            )
            .build_arc()
            .map_err(|err| QueryError::Internal(err.to_string()))?;
        Ok(Self {
            config,
            runtime,
            source,
            options: datafusion_options()?,
        })
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    fn session(&self) -> SessionContext {
        let config = SessionConfig::from(self.options.clone())
            .with_target_partitions(self.config.target_partitions)
            .with_information_schema(true);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_default_features()
            // joins on an aggregate's group keys broadcast it: no repartition of the probe side.
            .with_physical_optimizer_rules(with_broadcast_unique_build())
            // count(*) grouped by partition columns from the file index's row counts.
            .with_physical_optimizer_rule(Arc::new(CountFromFileIndex))
            // count(*) grouped by columns that arrive in runs (the sort order): a row per run.
            .with_physical_optimizer_rule(Arc::new(RunCount))
            // lag and running sum/max/min over sorted partitions: one pass, not per partition.
            .with_physical_optimizer_rule(Arc::new(RunningWindow))
            // full sorts fed 64Ki-row batches: fewer runs for their merge to compare.
            .with_physical_optimizer_rule(Arc::new(LongerSortRuns))
            // json_as_text(doc, key) = 'value' parses only documents that contain the value.
            .with_analyzer_rule(Arc::new(JsonEqualsFilter))
            // url LIKE '%…%' matches each distinct value of a batch once.
            .with_analyzer_rule(Arc::new(MemoizedLike))
            // count(DISTINCT text) skips rows repeating a dictionary entry it already counted.
            .with_analyzer_rule(Arc::new(DistinctViews))
            .build();
        let mut ctx = SessionContext::new_with_state(state);
        // json_get_str(properties, 'plan'), properties->>'plan', … over the JSON text columns.
        datafusion_functions_json::register_all(&mut ctx)
            .expect("registering the JSON functions cannot fail on a fresh context");
        // date_trunc with a fast path for UTC hours, days and weeks.
        crate::functions::register(&ctx);
        ctx
    }

    /// Plans `sql` against a fresh view and starts executing it.
    pub async fn execute(&self, sql: &str) -> Result<QueryStream> {
        self.execute_with_params(sql, None).await
    }

    /// Like [`Self::execute`], binding `$name` placeholders to `params` (values are bound in
    /// the plan, never pasted into the SQL text).
    pub async fn execute_with_params(
        &self,
        sql: &str,
        params: Option<datafusion::common::ParamValues>,
    ) -> Result<QueryStream> {
        self.execute_in_scope(sql, params, &Scope::All).await
    }

    /// Like [`Self::execute_with_params`], seeing only the rows `scope` allows (see
    /// [`crate::provider::EventsProvider`] for how the plan enforces it). EXPLAIN is refused
    /// under a source scope: its plans and metrics describe the whole table.
    pub async fn execute_in_scope(
        &self,
        sql: &str,
        params: Option<datafusion::common::ParamValues>,
        scope: &Scope,
    ) -> Result<QueryStream> {
        let deadline = Instant::now() + self.config.timeout;
        let timeout = self.config.timeout;
        match tokio::time::timeout_at(deadline, self.plan_and_start(sql, params, scope)).await {
            Ok(Ok((stream, shared_rows))) => Ok(QueryStream {
                schema: stream.schema(),
                stream,
                _shared_rows: shared_rows,
                deadline,
                timeout,
                memory_limit: self.config.memory_limit,
                max_result_bytes: self.config.max_result_bytes,
                result_bytes: 0,
            }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(QueryError::Timeout {
                seconds: timeout.as_secs_f64(),
            }),
        }
    }

    async fn plan_and_start(
        &self,
        sql: &str,
        params: Option<datafusion::common::ParamValues>,
        scope: &Scope,
    ) -> Result<(SendableRecordBatchStream, Vec<MemoryReservation>)> {
        let ctx = self.session();
        let view = self.source.view();
        let internal = |err: &dyn std::fmt::Display| QueryError::Internal(err.to_string());
        let table = view
            .table
            .provider(&ctx.state())
            .await
            .map_err(|err| internal(&err))?;
        let provider = EventsProvider::try_new(
            table,
            view.buffered,
            TableSnapshot::canonical_schema(),
            scope.clone(),
        )
        .map_err(|err| internal(&err))?;
        ctx.register_table("events", Arc::new(provider))
            .map_err(|err| internal(&err))?;

        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let memory_limit = self.config.memory_limit;
        let mut frame = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|err| classify_planning_error(err, memory_limit))?;
        if *scope != Scope::All
            && matches!(
                frame.logical_plan(),
                LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)
            )
        {
            return Err(QueryError::NotAllowed(
                "EXPLAIN is not available to a read token scoped to sources".into(),
            ));
        }
        if let Some(params) = params {
            frame = frame
                .with_param_values(params)
                .map_err(|err| classify_planning_error(err, memory_limit))?;
        }
        // CTEs referenced more than once run once (see `shared`), within a quarter of the
        // memory limit.
        let (plan, reservations) = crate::shared::compute_shared_once(
            &ctx,
            frame.into_unoptimized_plan(),
            memory_limit / 4,
            memory_limit,
        )
        .await?;
        let stream = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|err| classify_planning_error(err, memory_limit))?
            .execute_stream()
            .await
            .map_err(|err| QueryError::from_datafusion(err, memory_limit))?;
        Ok((stream, reservations))
    }
}

/// DataFusion reports refused statement kinds as plan errors; name them as refusals.
fn classify_planning_error(
    err: datafusion::error::DataFusionError,
    memory_limit: usize,
) -> QueryError {
    let message = err.find_root().to_string();
    for kind in [
        "DDL not supported",
        "DML not supported",
        "Statement not supported",
    ] {
        if message.contains(kind) {
            return QueryError::NotAllowed(format!(
                "only queries are allowed (no DDL, DML, COPY or SET): {}",
                message.trim_start_matches("Error during planning: ")
            ));
        }
    }
    QueryError::from_datafusion(err, memory_limit)
}

/// A running query: batches with the time and size limits applied.
pub struct QueryStream {
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    /// The memory of shared subqueries' rows, which the stream reads until it is dropped.
    _shared_rows: Vec<MemoryReservation>,
    deadline: Instant,
    timeout: Duration,
    memory_limit: usize,
    max_result_bytes: usize,
    result_bytes: usize,
}

impl QueryStream {
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The next batch, `None` at the end.
    pub async fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        let next = match tokio::time::timeout_at(self.deadline, self.stream.next()).await {
            Ok(next) => next?,
            Err(_) => {
                return Some(Err(QueryError::Timeout {
                    seconds: self.timeout.as_secs_f64(),
                }));
            }
        };
        Some(match next {
            Ok(batch) => {
                self.result_bytes += batch.get_array_memory_size();
                if self.result_bytes > self.max_result_bytes {
                    Err(QueryError::ResultTooLarge {
                        limit_bytes: self.max_result_bytes,
                    })
                } else {
                    Ok(batch)
                }
            }
            Err(err) => Err(QueryError::from_datafusion(err, self.memory_limit)),
        })
    }

    /// Collects the whole result (for small results and the CLI).
    pub async fn collect(mut self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next_batch().await {
            batches.push(batch?);
        }
        Ok(batches)
    }
}
