//! Computing shared subqueries once.
//!
//! DataFusion 55 inlines a common table expression at every reference, so a CTE that two
//! others build on is planned and executed twice, and a chain of them (the funnel's five steps,
//! each joining the one before) many times over: the funnel report scanned the table fifteen
//! times. PostgreSQL (since 12) and DuckDB (since 1.4) instead compute a CTE that is referenced
//! more than once a single time; this module does the same for DataFusion's logical plans.
//!
//! A CTE reference is planned as a `SubqueryAlias` named after the CTE around the CTE's plan,
//! so equal `SubqueryAlias` subtrees met more than once (subqueries in expressions included)
//! are the shared CTEs. Each one worth it (it aggregates, joins, windows or de-duplicates: a
//! plain filtered scan is cheaper to repeat than to hold) is executed, innermost first, into
//! an in-memory table that every reference then reads. Its rows count against the query's
//! memory pool for as long as the query runs, and against a quarter of the pool's limit in
//! total: a result larger than that is left inlined, as DataFusion would have it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray};
use arrow::compute::concat;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::MemTable;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::datasource::provider_as_source;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{Analyze, LogicalPlan, LogicalPlanBuilder, SubqueryAlias};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::error::{QueryError, Result};

/// `plan` with each shared, costly subquery replaced by a scan of its computed rows. The
/// reservations hold those rows' memory; keep them until the query is done.
pub(crate) async fn compute_shared_once(
    ctx: &SessionContext,
    mut plan: LogicalPlan,
    budget: usize,
    memory_limit: usize,
) -> Result<(LogicalPlan, Vec<MemoryReservation>)> {
    // EXPLAIN shows the plan as DataFusion makes it (computing subqueries to explain it would
    // run them); EXPLAIN ANALYZE runs what a query runs.
    if matches!(plan, LogicalPlan::Explain(_)) {
        return Ok((plan, Vec::new()));
    }
    let analyze = match plan {
        LogicalPlan::Analyze(analyze) => {
            plan = analyze.input.as_ref().clone();
            Some(analyze)
        }
        _ => None,
    };
    let mut reservations = Vec::new();
    let mut left_inlined: HashSet<LogicalPlan> = HashSet::new();
    let mut spent = 0;
    let mut name = 0;
    while let Some(shared) = innermost_shared(&plan, &left_inlined)? {
        let LogicalPlan::SubqueryAlias(alias) = &shared else {
            unreachable!("only subquery aliases are collected")
        };
        let started = std::time::Instant::now();
        let pool = &ctx.runtime_env().memory_pool;
        let mut reservation =
            MemoryConsumer::new(format!("shared subquery {}", alias.alias)).register(pool);
        let computed = compute(
            ctx,
            alias,
            &mut reservation,
            budget.saturating_sub(spent),
            memory_limit,
        )
        .await;
        // Over budget, or unable to run on its own (a recursive CTE's working table, say): the
        // subquery stays where it is, and a real error shows when the query runs it there.
        let batches = match computed {
            Ok(Some(batches)) => batches,
            Ok(None) => {
                tracing::debug!(cte = %alias.alias, "shared subquery over budget: left inlined");
                left_inlined.insert(shared);
                continue;
            }
            Err(err) => {
                tracing::debug!(cte = %alias.alias, error = %err, "shared subquery failed alone: left inlined");
                left_inlined.insert(shared);
                continue;
            }
        };
        tracing::debug!(
            cte = %alias.alias,
            rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            bytes = reservation.size(),
            ms = started.elapsed().as_millis() as u64,
            "shared subquery computed once"
        );
        spent += reservation.size();
        reservations.push(reservation);
        name += 1;
        let scan = in_memory_scan(alias, batches, ctx, &format!("__shared_{name}"))?;
        plan = plan
            .transform_up_with_subqueries(|node| {
                Ok(if node == shared {
                    Transformed::yes(scan.clone())
                } else {
                    Transformed::no(node)
                })
            })
            .map_err(|err| QueryError::Internal(err.to_string()))?
            .data;
    }
    if let Some(analyze) = analyze {
        plan = LogicalPlan::Analyze(Analyze {
            input: Arc::new(plan),
            ..analyze
        });
    }
    Ok((plan, reservations))
}

/// A subquery referenced more than once and costly to repeat, not containing another such.
///
/// References are counted in the plan as a graph of distinct subqueries: a CTE used only inside
/// another CTE that is itself used twice appears twice in the tree but is referenced once,
/// and computing the outer one computes it once. Counting tree occurrences instead would hold
/// every intermediate step of a sessionizing report in memory.
fn innermost_shared(
    plan: &LogicalPlan,
    left_inlined: &HashSet<LogicalPlan>,
) -> Result<Option<LogicalPlan>> {
    let mut references: HashMap<LogicalPlan, usize> = HashMap::new();
    let mut pending = vec![plan.clone()];
    while let Some(parent) = pending.pop() {
        for child in aliased_children(&parent)? {
            let count = references.entry(child.clone()).or_default();
            *count += 1;
            if *count == 1 {
                pending.push(child);
            }
        }
    }
    let shared: Vec<&LogicalPlan> = references
        .iter()
        .filter(|(node, count)| {
            **count > 1
                && !left_inlined.contains(*node)
                // A subquery correlated with an outer query cannot run on its own.
                && !correlated(node)
                && costly(node)
        })
        .map(|(node, _)| node)
        .collect();
    let contains_other = |candidate: &LogicalPlan| {
        let mut found = false;
        let _ = candidate.apply_with_subqueries(|node| {
            if node != candidate && shared.contains(&node) {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        found
    };
    // Of several independent ones, the same one each time (the map's order is random).
    Ok(shared
        .iter()
        .filter(|candidate| !contains_other(candidate))
        .min_by_key(|candidate| candidate.display_indent().to_string())
        .map(|candidate| (*candidate).clone()))
}

/// The `SubqueryAlias` nodes nearest below `parent` (subqueries in expressions included).
fn aliased_children(parent: &LogicalPlan) -> Result<Vec<LogicalPlan>> {
    let mut children = Vec::new();
    let mut at_parent = true;
    parent
        .apply_with_subqueries(|node| {
            if std::mem::take(&mut at_parent) {
                return Ok(TreeNodeRecursion::Continue);
            }
            if matches!(node, LogicalPlan::SubqueryAlias(_)) {
                children.push(node.clone());
                return Ok(TreeNodeRecursion::Jump);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(|err| QueryError::Internal(err.to_string()))?;
    Ok(children)
}

/// Whether any node of `plan` refers to a column of an enclosing query.
fn correlated(plan: &LogicalPlan) -> bool {
    let mut correlated = false;
    let _ = plan.apply_with_subqueries(|node| {
        if node.contains_outer_reference() {
            correlated = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    correlated
}

/// Whether repeating `plan` costs more than holding its rows: it aggregates, joins, windows or
/// de-duplicates. A filter over a scan is as cheap to run again and often far larger.
fn costly(plan: &LogicalPlan) -> bool {
    let mut costly = false;
    let _ = plan.apply_with_subqueries(|node| {
        if matches!(
            node,
            LogicalPlan::Aggregate(_)
                | LogicalPlan::Join(_)
                | LogicalPlan::Window(_)
                | LogicalPlan::Distinct(_)
        ) {
            costly = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    costly
}

/// Runs `plan` to completion, reserving its rows' memory; `None` when they exceed `budget` (or
/// the pool), leaving the subquery to be inlined instead.
async fn compute(
    ctx: &SessionContext,
    shared: &SubqueryAlias,
    reservation: &mut MemoryReservation,
    budget: usize,
    memory_limit: usize,
) -> Result<Option<Vec<RecordBatch>>> {
    let mut stream = ctx
        .execute_logical_plan(shared.input.as_ref().clone())
        .await
        .map_err(|err| QueryError::from_datafusion(err, memory_limit))?
        .execute_stream()
        .await
        .map_err(|err| QueryError::from_datafusion(err, memory_limit))?;
    // The rows as the plan above expects them (the logical schema, qualifiers aside).
    let schema = Arc::new(shared.input.schema().as_arrow().clone());
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|err| QueryError::from_datafusion(err, memory_limit))?;
        let Ok(batch) = RecordBatch::try_new(Arc::clone(&schema), batch.columns().to_vec()) else {
            reservation.free();
            return Ok(None);
        };
        // Held for the whole query: only the bytes these rows use, not the buffers of the
        // larger batches they were sliced from (which would also over-count the memory).
        let batch = compact(batch);
        let size = batch.get_array_memory_size();
        if reservation.size() + size > budget || reservation.try_grow(size).is_err() {
            reservation.free();
            return Ok(None);
        }
        batches.push(batch);
    }
    Ok(Some(batches))
}

/// `batch` with every column in buffers of its own size: string views keep only the strings
/// they point at, and a slice of a larger array is copied out of it.
fn compact(batch: RecordBatch) -> RecordBatch {
    let columns = batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Utf8View => Arc::new(column.as_string_view().gc()) as ArrayRef,
            DataType::BinaryView => Arc::new(column.as_binary_view().gc()) as ArrayRef,
            _ if column.to_data().get_slice_memory_size().unwrap_or(0) * 2
                < column.get_array_memory_size() =>
            {
                concat(&[column.as_ref()]).unwrap_or_else(|_| Arc::clone(column))
            }
            _ => Arc::clone(column),
        })
        .collect();
    RecordBatch::try_new(batch.schema(), columns).unwrap_or(batch)
}

/// A scan of `batches` under the alias `shared` had, so the plan above reads the same columns.
fn in_memory_scan(
    shared: &SubqueryAlias,
    batches: Vec<RecordBatch>,
    ctx: &SessionContext,
    table_name: &str,
) -> Result<LogicalPlan> {
    let internal = |err: &dyn std::fmt::Display| QueryError::Internal(err.to_string());
    let schema = Arc::new(shared.input.schema().as_arrow().clone());
    // Spread over the session's partitions so the scan is as parallel as the subquery was.
    let partitions = ctx.copied_config().target_partitions().max(1);
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    for (index, batch) in batches.into_iter().enumerate() {
        parts[index % partitions].push(batch);
    }
    let table = MemTable::try_new(schema, parts).map_err(|err| internal(&err))?;
    let scan = LogicalPlanBuilder::scan(table_name, provider_as_source(Arc::new(table)), None)
        .and_then(LogicalPlanBuilder::build)
        .map_err(|err| internal(&err))?;
    SubqueryAlias::try_new(Arc::new(scan), shared.alias.clone())
        .map(LogicalPlan::SubqueryAlias)
        .map_err(|err| internal(&err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;

    fn context() -> SessionContext {
        let ctx = SessionContext::new();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "a", "c", "b", "a"])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6])),
            ],
        )
        .unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    fn count(plan: &LogicalPlan, what: fn(&LogicalPlan) -> bool) -> usize {
        let mut found = 0;
        plan.apply_with_subqueries(|node| {
            found += usize::from(what(node));
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found
    }

    async fn run(ctx: &SessionContext, plan: LogicalPlan) -> String {
        let batches = ctx
            .execute_logical_plan(plan)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    /// `(plan before, plan after, reservations)` for `sql` with the given budget.
    async fn rewrite(
        ctx: &SessionContext,
        sql: &str,
        budget: usize,
    ) -> (LogicalPlan, LogicalPlan, usize) {
        let plan = ctx.sql(sql).await.unwrap().into_unoptimized_plan();
        let (after, reservations) = compute_shared_once(ctx, plan.clone(), budget, usize::MAX)
            .await
            .unwrap();
        (plan, after, reservations.len())
    }

    const CHAIN: &str = "WITH totals AS (SELECT k, sum(v) AS s FROM t GROUP BY k), \
        top AS (SELECT max(s) AS m FROM totals), \
        ranked AS (SELECT totals.k, totals.s FROM totals JOIN top ON totals.s * 2 > top.m) \
        SELECT r.k, r.s, (SELECT count(*) FROM ranked) AS n, (SELECT m FROM top) AS m \
        FROM ranked r ORDER BY r.k";

    #[tokio::test]
    async fn a_cte_referenced_more_than_once_runs_once_with_the_same_answer() {
        let ctx = context();
        let (before, after, reservations) = rewrite(&ctx, CHAIN, usize::MAX).await;
        let is_aggregate = |node: &LogicalPlan| matches!(node, LogicalPlan::Aggregate(_));
        // Inlined, `totals` is aggregated once per reference of it, of `top` and of `ranked`.
        assert!(count(&before, is_aggregate) >= 5, "{before}");
        // Computed once each: totals, top, ranked; only the scalar subquery's count is left.
        assert_eq!(reservations, 3);
        assert_eq!(count(&after, is_aggregate), 1, "{after}");
        let expected = run(&ctx, before).await;
        assert_eq!(run(&ctx, after).await, expected);
        assert!(expected.contains("| a | 10 | 2 | 10 |"), "{expected}");
    }

    #[tokio::test]
    async fn a_correlated_subquery_used_twice_stays_inlined() {
        let ctx = context();
        let sql = "SELECT o.k, \
            (SELECT count(*) FROM (SELECT k, sum(v) AS s FROM t WHERE t.k = o.k GROUP BY k) a) AS x, \
            (SELECT count(*) FROM (SELECT k, sum(v) AS s FROM t WHERE t.k = o.k GROUP BY k) a) AS y \
            FROM t o ORDER BY o.v";
        let (before, after, reservations) = rewrite(&ctx, sql, usize::MAX).await;
        assert_eq!((reservations, &after), (0, &before));
        assert!(run(&ctx, after).await.contains("| a | 1 | 1 |"));
    }

    #[tokio::test]
    async fn over_budget_or_cheap_subqueries_stay_inlined() {
        let ctx = context();
        let (before, after, reservations) = rewrite(&ctx, CHAIN, 0).await;
        assert_eq!((reservations, &after), (0, &before));
        // A filter over a scan is cheaper to repeat than to hold.
        let cheap = "WITH f AS (SELECT * FROM t WHERE v > 1) \
                     SELECT (SELECT count(*) FROM f) AS a, (SELECT max(v) FROM f) AS b";
        let (before, after, reservations) = rewrite(&ctx, cheap, usize::MAX).await;
        assert_eq!((reservations, &after), (0, &before));
        assert!(run(&ctx, after).await.contains("| 5 | 6 |"));
    }
}
