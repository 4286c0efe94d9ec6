//! Broadcast hash joins whose build side has one row per join key.
//!
//! Most reports resolve visitors with `identified i RIGHT JOIN scoped s ON s.anonymous_id =
//! i.anonymous_id`, where `identified` is an aggregate grouped by `anonymous_id`: one row per
//! identified anonymous id (120,436 for the benchmark's 10 million events). DataFusion knows no
//! size for an aggregate's output, so it cannot choose a broadcast (`CollectLeft`) join by its
//! thresholds and plans a partitioned one: both sides hash-repartitioned by `anonymous_id`,
//! which copies every scoped event (millions of rows, a dozen columns) through a repartition
//! to build a hash table that is small anyway.
//!
//! [`BroadcastUniqueBuild`], a physical optimizer rule, turns a partitioned hash join into a
//! `CollectLeft` one when its build (left) side is an aggregate whose group-by columns are all
//! among the join's left keys — so each key value matches at most one build row, and the build
//! side has no more rows than distinct keys — and the join type keeps working with one shared
//! build side (`INNER`, `RIGHT`). The probe side then streams through in the partitions it
//! already has; the build side is collected once and shared, its memory counted in the pool as
//! before. `CollectLeft` answers these join types correctly whatever the build side holds;
//! uniqueness is only what makes it the cheaper plan. The price, where an aggregate has millions
//! of groups, is that one task builds the whole hash table instead of one per partition.
//!
//! The rule must run right after DataFusion's `join_selection` and before `EnsureRequirements`
//! ([`with_broadcast_unique_build`] puts it there): the partition mode decides which
//! repartitions and sorts that rule plans, and operators above the join rely on the
//! partitioning it leaves (a `FinalPartitioned` aggregate grouped by the join key needs no
//! repartition of its own after a partitioned join, and gets one after a broadcast join). An
//! experiment that changed the mode after distribution was planned answered `funnel` wrongly
//! for exactly that reason (benches/README.md).

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;

/// The physical optimizer rule described in the [module docs](self).
#[derive(Debug, Default)]
pub struct BroadcastUniqueBuild;

impl PhysicalOptimizerRule for BroadcastUniqueBuild {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if *join.partition_mode() != PartitionMode::Partitioned
                || !matches!(join.join_type(), JoinType::Inner | JoinType::Right)
                || join.null_aware
            {
                return Ok(Transformed::no(node));
            }
            let keys: Option<BTreeSet<usize>> = join
                .on()
                .iter()
                .map(|(left, _)| left.downcast_ref::<Column>().map(Column::index))
                .collect();
            match keys {
                Some(keys) if unique_on(join.left().as_ref(), &keys) => {
                    let broadcast = join
                        .builder()
                        .with_partition_mode(PartitionMode::CollectLeft)
                        .build()?;
                    Ok(Transformed::yes(
                        Arc::new(broadcast) as Arc<dyn ExecutionPlan>
                    ))
                }
                _ => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "broadcast_unique_build"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `plan`'s rows are unique on the output columns `keys`: an aggregate (its final
/// phase, or a single one, with no grouping sets) whose group-by columns are all in `keys`,
/// seen through projections that pass those columns on.
fn unique_on(plan: &dyn ExecutionPlan, keys: &BTreeSet<usize>) -> bool {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let below: BTreeSet<usize> = keys
            .iter()
            .filter_map(|&key| {
                let expr = &projection.expr().get(key)?.expr;
                expr.downcast_ref::<Column>().map(Column::index)
            })
            .collect();
        return unique_on(projection.input().as_ref(), &below);
    }
    let Some(aggregate) = plan.downcast_ref::<AggregateExec>() else {
        return false;
    };
    let group_by = aggregate.group_expr();
    let groups = group_by.expr().len();
    matches!(
        aggregate.mode(),
        AggregateMode::Final
            | AggregateMode::FinalPartitioned
            | AggregateMode::Single
            | AggregateMode::SinglePartitioned
    ) && !group_by.has_grouping_set()
        && groups > 0
        && (0..groups).all(|group| keys.contains(&group))
}

/// DataFusion's physical optimizer rules with [`BroadcastUniqueBuild`] right after
/// `join_selection`, where it must run (see the [module docs](self)).
pub fn with_broadcast_unique_build() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = PhysicalOptimizer::new().rules;
    let at = rules
        .iter()
        .position(|rule| rule.name() == "join_selection")
        .expect("DataFusion's physical optimizer has a join_selection rule");
    rules.insert(at + 1, Arc::new(BroadcastUniqueBuild));
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use crate::test_support::{run_physical, session_with_table};

    /// Sessions over `events(anonymous_id, user_id, ts)` in many partitions, with the rule and
    /// without it.
    fn contexts() -> (SessionContext, SessionContext) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("anonymous_id", DataType::Utf8, true),
            Field::new("user_id", DataType::Utf8, true),
            Field::new("ts", DataType::Int64, false),
        ]));
        let batches: Vec<RecordBatch> = (0..24)
            .map(|b| {
                let rows = 0..200i64;
                let anonymous: Vec<Option<String>> = rows
                    .clone()
                    .map(|r| (r % 17 != 0).then(|| format!("a{}", (b * 13 + r * 7) % 150)))
                    .collect();
                let users: Vec<Option<String>> = rows
                    .clone()
                    .map(|r| (r % 5 == 0).then(|| format!("u{}", (b + r) % 40)))
                    .collect();
                let ts: Vec<i64> = rows.map(|r| (b * 200 + r) * 7919 % 5000).collect();
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(StringArray::from(anonymous)),
                        Arc::new(StringArray::from(users)),
                        Arc::new(Int64Array::from(ts)),
                    ],
                )
                .unwrap()
            })
            .collect();
        let make = |with_rule: bool| {
            let mut config = SessionConfig::new()
                .with_target_partitions(4)
                .with_batch_size(64);
            // A memory table knows its size, the engine's events table often does not: keep
            // DataFusion from broadcasting by its thresholds, as it cannot in the engine.
            let optimizer = &mut config.options_mut().optimizer;
            optimizer.hash_join_single_partition_threshold = 0;
            optimizer.hash_join_single_partition_threshold_rows = 0;
            let mut builder = datafusion::execution::SessionStateBuilder::new()
                .with_config(config)
                .with_default_features();
            if with_rule {
                builder = builder.with_physical_optimizer_rules(with_broadcast_unique_build());
            }
            session_with_table(
                builder.build(),
                "events",
                Arc::clone(&schema),
                batches.chunks(4).map(<[_]>::to_vec).collect(),
            )
        };
        (make(true), make(false))
    }

    /// The physical plan as text and the answer as a table.
    async fn plan_and_rows(ctx: &SessionContext, sql: &str) -> (String, String) {
        let (plan, rows) = run_physical(ctx, sql).await;
        let rows = arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string();
        (plan, rows)
    }

    /// The reports' visitor resolution, then an aggregate grouped by the probe's join key:
    /// after a partitioned join it needs no repartition; after a broadcast join it does.
    const VISITORS: &str = "WITH identified AS ( \
            SELECT anonymous_id, min(user_id) AS known_user FROM events \
            WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL GROUP BY anonymous_id) \
        SELECT s.anonymous_id, count(*) AS events, \
               count(DISTINCT coalesce(s.user_id, i.known_user, s.anonymous_id)) AS visitors, \
               max(s.ts) AS last \
        FROM identified i RIGHT JOIN events s ON s.anonymous_id = i.anonymous_id \
        GROUP BY s.anonymous_id ORDER BY s.anonymous_id NULLS FIRST";

    #[tokio::test]
    async fn a_join_on_an_aggregates_keys_broadcasts_it_with_the_same_answers() {
        let (with_rule, without) = contexts();
        let (plan, rows) = plan_and_rows(&with_rule, VISITORS).await;
        let (plain_plan, expected) = plan_and_rows(&without, VISITORS).await;
        assert!(plan.contains("mode=CollectLeft"), "{plan}");
        assert!(!plan.contains("mode=Partitioned"), "{plan}");
        assert!(plain_plan.contains("mode=Partitioned"), "{plain_plan}");
        assert_eq!(rows, expected);
        // 150 anonymous ids and the NULL group.
        assert_eq!(rows.lines().count(), 151 + 4, "{rows}");
    }

    #[tokio::test]
    async fn other_joins_stay_partitioned() {
        let (with_rule, without) = contexts();
        // Build side grouped by more columns than the join key: not unique on it.
        let wider = "WITH pairs AS (SELECT anonymous_id, user_id, count(*) AS n FROM events \
                GROUP BY anonymous_id, user_id) \
            SELECT s.anonymous_id, sum(p.n) AS n FROM pairs p JOIN events s \
            ON s.anonymous_id = p.anonymous_id GROUP BY s.anonymous_id ORDER BY 1";
        // A LEFT join would need the build side's matches shared across probe partitions.
        let left = "WITH identified AS (SELECT anonymous_id, min(user_id) AS known_user \
                FROM events GROUP BY anonymous_id) \
            SELECT i.anonymous_id, count(s.ts) AS n FROM identified i LEFT JOIN events s \
            ON s.anonymous_id = i.anonymous_id GROUP BY i.anonymous_id ORDER BY 1 NULLS FIRST";
        for sql in [wider, left] {
            let (plan, rows) = plan_and_rows(&with_rule, sql).await;
            let (_, expected) = plan_and_rows(&without, sql).await;
            assert!(!plan.contains("mode=CollectLeft"), "{plan}");
            assert_eq!(rows, expected);
        }
    }
}
