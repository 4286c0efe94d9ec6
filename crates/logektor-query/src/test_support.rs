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
