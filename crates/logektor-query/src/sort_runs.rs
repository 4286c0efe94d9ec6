//! Longer sorted runs for full sorts: their input arrives in batches of [`SORT_RUN_ROWS`].
//!
//! DataFusion's `SortExec` sorts each batch it buffers on its own and then merges all of them
//! at once: a loser tree over the batches, comparing rows in Arrow's row format. The session
//! reports (`entry_pages`, `referrers`, `overview`) sort ~5 million rows per partition by
//! (visitor, time, id), which arrive from a hash repartition in batches of the session's size:
//! at DataFusion's default of 8,192 rows a merge of ~600 runs, whose comparisons (`memcmp`, the
//! loser tree, `Rows::row`) were a third of those reports' CPU. Longer runs cost a little more
//! each (one more level of each batch's sort per doubling) and take a level off every row's way
//! through the merge per halving of their number.
//!
//! [`LongerSortRuns`], a physical optimizer rule, puts a `CoalesceBatchesExec` of
//! [`SORT_RUN_ROWS`] rows under every `SortExec` that sorts its whole input (no `fetch`: a
//! top-k keeps a heap and gains nothing), or raises the target of the one already there. The
//! operator only concatenates batches, so partitioning, ordering and results stay what they
//! were, and a sort that spills still spills what it buffered; what it holds while a batch
//! fills (up to [`SORT_RUN_ROWS`] rows per partition) is outside the memory pool, as in
//! DataFusion's own use of it. DataFusion 55 marks `CoalesceBatchesExec` deprecated because its
//! operators now coalesce to the session's batch size; but a session batch of 64Ki rows made
//! filters over the JSON columns 16% dearer (benches/README.md), so the engine's batches are
//! 16Ki rows and only the sorts get 64Ki.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
#[expect(deprecated)]
use datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec;
use datafusion::physical_plan::sorts::sort::SortExec;

/// Rows per batch reaching a full sort (DataFusion's default batch is 8,192).
pub const SORT_RUN_ROWS: usize = 64 * 1024;

/// The physical optimizer rule described in the [module docs](self).
#[derive(Debug, Default)]
pub struct LongerSortRuns;

impl PhysicalOptimizerRule for LongerSortRuns {
    #[expect(deprecated)]
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let rows = SORT_RUN_ROWS.max(config.execution.batch_size.get());
        plan.transform_up(|node| {
            let Some(sort) = node.downcast_ref::<SortExec>() else {
                return Ok(Transformed::no(node));
            };
            if sort.fetch().is_some() {
                return Ok(Transformed::no(node));
            }
            let input = Arc::clone(sort.input());
            let below = match input.downcast_ref::<CoalesceBatchesExec>() {
                Some(coalesce) if coalesce.target_batch_size() >= rows => {
                    return Ok(Transformed::no(node));
                }
                Some(coalesce) if coalesce.fetch().is_none() => Arc::clone(coalesce.input()),
                _ => input,
            };
            let coalesced = Arc::new(CoalesceBatchesExec::new(below, rows));
            Ok(Transformed::yes(node.with_new_children(vec![coalesced])?))
        })
        .data()
    }

    fn name(&self) -> &str {
        "longer_sort_runs"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use crate::test_support::{run_physical, session_with_table};

    /// A session with the rule, over `t(visitor, ts)` in many small batches, and one without.
    async fn contexts() -> (SessionContext, SessionContext) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("visitor", DataType::Utf8, true),
            Field::new("ts", DataType::Int64, false),
        ]));
        let batches: Vec<RecordBatch> = (0..40)
            .map(|b| {
                let visitors: Vec<Option<String>> = (0..100)
                    .map(|r| (r % 13 != 0).then(|| format!("v{}", (b * 7 + r * 31) % 97)))
                    .collect();
                let ts: Vec<i64> = (0..100)
                    .map(|r| ((b * 100 + r) * 7919 % 1000) as i64)
                    .collect();
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(StringArray::from(visitors)),
                        Arc::new(Int64Array::from(ts)),
                    ],
                )
                .unwrap()
            })
            .collect();
        let make = |with_rule: bool| {
            let config = SessionConfig::new()
                .with_target_partitions(2)
                .with_batch_size(64);
            let mut builder = datafusion::execution::SessionStateBuilder::new()
                .with_config(config)
                .with_default_features();
            if with_rule {
                builder = builder.with_physical_optimizer_rule(Arc::new(LongerSortRuns));
            }
            session_with_table(
                builder.build(),
                "t",
                Arc::clone(&schema),
                batches.chunks(10).map(<[_]>::to_vec).collect(),
            )
        };
        (make(true), make(false))
    }

    fn pretty(rows: &[RecordBatch]) -> String {
        arrow::util::pretty::pretty_format_batches(rows)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn full_sorts_get_longer_runs_and_the_same_answers() {
        let (with_rule, without) = contexts().await;
        // A window partitioned by visitor: a hash repartition, then a sort per partition.
        let windowed = "SELECT visitor, ts, lag(ts) OVER (PARTITION BY visitor ORDER BY ts) AS prev \
                        FROM t ORDER BY visitor NULLS FIRST, ts, prev";
        let (plan, rows) = run_physical(&with_rule, windowed).await;
        let (plain_plan, expected) = run_physical(&without, windowed).await;
        let long = format!("CoalesceBatchesExec: target_batch_size={SORT_RUN_ROWS}");
        assert!(plan.contains(&long), "{plan}");
        assert!(!plain_plan.contains(&long), "{plain_plan}");
        assert_eq!(
            plan.matches("SortExec").count(),
            plain_plan.matches("SortExec").count()
        );
        assert_eq!(pretty(&rows), pretty(&expected));
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 4000);
    }

    #[tokio::test]
    async fn top_k_sorts_keep_their_input() {
        let (with_rule, without) = contexts().await;
        let top = "SELECT visitor, ts FROM t ORDER BY ts DESC, visitor LIMIT 5";
        let (plan, rows) = run_physical(&with_rule, top).await;
        let (_, expected) = run_physical(&without, top).await;
        assert!(plan.contains("TopK(fetch=5)"), "{plan}");
        assert!(!plan.contains("CoalesceBatchesExec"), "{plan}");
        assert_eq!(pretty(&rows), pretty(&expected));
    }
}
