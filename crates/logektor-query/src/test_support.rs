//! Helpers the unit tests of the planner rules share.

use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;

/// Runs `sql` on `ctx`: its result batches and its optimized logical plan as text (which
/// tells whether a rule rewrote it).
pub(crate) async fn run_with_plan(ctx: &SessionContext, sql: &str) -> (Vec<RecordBatch>, String) {
    let frame = ctx.sql(sql).await.unwrap();
    let plan = frame
        .clone()
        .into_optimized_plan()
        .unwrap()
        .display_indent()
        .to_string();
    (frame.collect().await.unwrap(), plan)
}

/// Plans `sql` on `ctx` and runs the plan: its physical plan as text (which tells whether a
/// physical rule rewrote it) and its result batches.
pub(crate) async fn run_physical(ctx: &SessionContext, sql: &str) -> (String, Vec<RecordBatch>) {
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let text = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    let rows = datafusion::physical_plan::collect(plan, ctx.task_ctx())
        .await
        .unwrap();
    (text, rows)
}

/// A session of `state` with `partitions` (each a list of batches) as the memory table `name`.
pub(crate) fn session_with_table(
    state: datafusion::execution::SessionState,
    name: &str,
    schema: arrow::datatypes::SchemaRef,
    partitions: Vec<Vec<RecordBatch>>,
) -> SessionContext {
    let ctx = SessionContext::new_with_state(state);
    let table = datafusion::datasource::MemTable::try_new(schema, partitions).unwrap();
    ctx.register_table(name, std::sync::Arc::new(table))
        .unwrap();
    ctx
}
