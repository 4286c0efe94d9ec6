//! Answering `count(*) … GROUP BY <partition columns>` from the file index, without reading the
//! files.
//!
//! Every file of a table version carries its exact row count (`numRecords` in the Delta log) and
//! its partition values, so counting the events of each day needs no Parquet at all. DataFusion
//! answers an ungrouped `count(*)` from exact statistics already (`AggregateStatistics`), but a
//! grouped one reads every file and hashes every row: 25 ms per ten million events, against
//! DuckDB's 7 ms for the same question over the same files.
//!
//! [`CountFromFileIndex`] is a physical optimizer rule. It finds a `Partial` aggregate whose only
//! aggregates are `count(<non-null literal>)` (how `count(*)` is planned), grouped by plain
//! columns, over a union of scans (or one scan), possibly under a filter. Each scan our file
//! index planned whose grouping columns are all partition columns, with no limit, and whose
//! filters (the one above and the one pushed into it) read only partition columns through
//! deterministic expressions, is replaced by one row per group holding the partial count: the
//! sum of the row counts of the files whose partition values pass the filters. The other
//! inputs (the buffer, a scoped scan) keep the original filter and partial aggregate, and the
//! final aggregate above adds the two up as it would any partial states.
//!
//! Only scans whose every file carries the [`ExactRowCount`] mark qualify: [`crate::scan`] sets
//! it on files of plain Parquet tables, where `numRecords` is exactly what a scan yields. A table
//! with deletion vectors is read by delta-rs, whose files carry no mark, so their counts are
//! never taken from the log.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Fields, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::internal_datafusion_err;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr,
    Literal, NegativeExpr, NotExpr, TryCastExpr,
};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, ExecutionPlan, Partitioning, ReplaceChildrenOptions,
};
use datafusion::scalar::ScalarValue;
use object_store::path::Path;

/// Marks a scanned file whose statistics' `num_rows` is exactly the number of rows a scan of
/// it yields (no deletion vectors, nothing filtered).
#[derive(Debug)]
pub(crate) struct ExactRowCount;

/// The physical optimizer rule described in the [module docs](self).
#[derive(Debug, Default)]
pub struct CountFromFileIndex;

impl PhysicalOptimizerRule for CountFromFileIndex {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let counted = match node.downcast_ref::<AggregateExec>() {
                Some(aggregate) => counted(aggregate)?,
                None => None,
            };
            Ok(match counted {
                Some(plan) => Transformed::yes(plan),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "count_from_file_index"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `aggregate` is a partial aggregate (no grouping sets, limit or `FILTER` clauses)
/// whose aggregates are one or more `count(<non-null literal>)`, how `count(*)` is planned: its
/// states are row counts, which a rewrite may compute any way it likes.
pub fn is_partial_row_count(aggregate: &AggregateExec) -> bool {
    let counts_rows = |expr: &Arc<AggregateFunctionExpr>| {
        expr.fun().name() == "count"
            && !expr.is_distinct()
            && expr.order_bys().is_empty()
            && matches!(expr.expressions().as_slice(), [arg]
                if arg.downcast_ref::<Literal>().is_some_and(|l| !l.value().is_null()))
    };
    matches!(aggregate.mode(), AggregateMode::Partial)
        && !aggregate.group_expr().has_grouping_set()
        && aggregate.limit_options().is_none()
        && aggregate.filter_expr().iter().all(Option::is_none)
        && !aggregate.aggr_expr().is_empty()
        && aggregate.aggr_expr().iter().all(counts_rows)
}

/// `aggregate` with the inputs whose counts the file index knows replaced by those counts, or
/// `None` where the rule does not apply.
fn counted(aggregate: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if !is_partial_row_count(aggregate) {
        return Ok(None);
    }
    let Some(group_columns) = aggregate
        .group_expr()
        .expr()
        .iter()
        .map(|(expr, _)| expr.downcast_ref::<Column>().map(Column::index))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let schema = aggregate.schema();
    // One state column (the count) per aggregate after the group columns.
    if schema.fields().len() != group_columns.len() + aggregate.aggr_expr().len() {
        return Ok(None);
    }

    // A filter between the aggregate and the scans is decided per file when it reads only
    // partition columns; its projection maps the group columns to the scans' columns.
    let mut input = transparent(aggregate.input());
    let mut filter = None;
    let mut group_columns = group_columns;
    if let Some(exec) = input.downcast_ref::<FilterExec>() {
        if exec.fetch().is_some() {
            return Ok(None);
        }
        if let Some(projection) = exec.projection() {
            let Some(columns) = group_columns
                .iter()
                .map(|&i| projection.get(i).copied())
                .collect::<Option<Vec<_>>>()
            else {
                return Ok(None);
            };
            group_columns = columns;
        }
        filter = Some((Arc::clone(input), Arc::clone(exec.predicate())));
        input = transparent(exec.input());
    }
    let parts = match input.downcast_ref::<UnionExec>() {
        Some(union) => union.inputs().clone(),
        None => vec![Arc::clone(input)],
    };
    let mut groups: HashMap<Vec<ScalarValue>, i64> = HashMap::new();
    let mut rest = Vec::new();
    let mut any_counted = false;
    let predicate = filter.as_ref().map(|(_, predicate)| predicate);
    for part in parts {
        match file_counts(&part, &group_columns, predicate) {
            Some(files) => {
                any_counted = true;
                for (key, rows) in files {
                    *groups.entry(key).or_default() += rows;
                }
            }
            None => rest.push(part),
        }
    }
    if !any_counted {
        return Ok(None);
    }

    // Values that do not fit the aggregate's schema (a NULL partition value where the column
    // is not nullable, a type that does not cast) leave the plan to read the rows.
    let Ok(batch) = partial_states(&schema, groups, group_columns.len()) else {
        return Ok(None);
    };
    let mut inputs: Vec<Arc<dyn ExecutionPlan>> = vec![MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        Arc::clone(&schema),
        None,
    )?];
    if !rest.is_empty() {
        let mut input = UnionExec::try_new(rest)?;
        if let Some((exec, _)) = filter {
            let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
            input = exec.replace_children(vec![input], recompute)?;
        }
        inputs.push(Arc::new(AggregateExec::try_new(
            AggregateMode::Partial,
            aggregate.group_expr().clone(),
            aggregate.aggr_expr().to_vec(),
            aggregate.filter_expr().to_vec(),
            input,
            aggregate.input_schema(),
        )?));
    }
    Ok(Some(UnionExec::try_new(inputs)?))
}

/// The partial aggregate's output for `groups`: the group values, then the same count in
/// every aggregate's state column.
fn partial_states(
    schema: &SchemaRef,
    groups: HashMap<Vec<ScalarValue>, i64>,
    group_columns: usize,
) -> Result<RecordBatch> {
    let (keys, rows): (Vec<_>, Vec<_>) = groups.into_iter().unzip();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().take(group_columns).enumerate() {
        let array = if keys.is_empty() {
            arrow::array::new_empty_array(field.data_type())
        } else {
            ScalarValue::iter_to_array(keys.iter().map(|key: &Vec<ScalarValue>| key[i].clone()))?
        };
        columns.push(conformed(array, field.data_type())?);
    }
    let counts: ArrayRef = Arc::new(Int64Array::from(rows));
    for field in schema.fields().iter().skip(group_columns) {
        columns.push(conformed(Arc::clone(&counts), field.data_type())?);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Below nodes that pass every row through unchanged (a round-robin repartition).
fn transparent(plan: &Arc<dyn ExecutionPlan>) -> &Arc<dyn ExecutionPlan> {
    match plan.downcast_ref::<RepartitionExec>() {
        Some(repartition)
            if matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_)) =>
        {
            transparent(repartition.input())
        }
        _ => plan,
    }
}

/// The values of the group columns and their row count.
type GroupCount = (Vec<ScalarValue>, i64);

/// Row counts by the values of `group_columns` (indices into `plan`'s output), when `plan` is a
/// scan of marked files with no limit, each group column is a partition column, and both
/// `predicate` (a filter above the scan, on `plan`'s output) and the scan's own predicate can
/// be decided per file (see [`on_partition_values`]): the files where they hold yield all their
/// rows, the others none.
fn file_counts(
    plan: &Arc<dyn ExecutionPlan>,
    group_columns: &[usize],
    predicate: Option<&Arc<dyn PhysicalExpr>>,
) -> Option<Vec<GroupCount>> {
    let config = plan
        .downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()?;
    if config.limit.is_some() {
        return None;
    }
    let output = plan.schema();
    let partition_cols = config.table_partition_cols();
    let positions = group_columns
        .iter()
        .map(|&i| {
            let name = output.fields().get(i)?.name();
            partition_cols.iter().position(|f| f.name() == name)
        })
        .collect::<Option<Vec<_>>>()?;
    let mut predicates = Vec::new();
    for predicate in predicate
        .cloned()
        .into_iter()
        .chain(config.file_source().filter())
    {
        match on_partition_values(&predicate, partition_cols) {
            Some(predicate) => predicates.push(predicate),
            None => return None,
        }
    }
    // A file split into byte ranges for parallelism appears once per range: count it once.
    let mut files: HashMap<&Path, &PartitionedFile> = HashMap::new();
    for file in config.file_groups.iter().flat_map(|group| group.iter()) {
        let exact = file
            .statistics
            .as_ref()
            .is_some_and(|s| matches!(s.num_rows, Precision::Exact(_)));
        if !exact
            || !file.extensions.contains::<ExactRowCount>()
            || file.partition_values.len() != partition_cols.len()
        {
            return None;
        }
        files.insert(&file.object_meta.location, file);
    }
    let files: Vec<&PartitionedFile> = files.into_values().collect();
    // A predicate that fails on a partition value leaves the plan to read the rows (and fail
    // there, if it must).
    let Ok(Some(selected)) = passing(&files, partition_cols, &predicates) else {
        return None;
    };
    let mut counts = Vec::with_capacity(files.len());
    for (file, keep) in files.iter().zip(selected) {
        if !keep {
            continue;
        }
        let key = positions
            .iter()
            .map(|&p| file.partition_values[p].clone())
            .collect();
        let rows = file
            .statistics
            .as_ref()
            .and_then(|s| s.num_rows.get_value().copied());
        let rows = rows.and_then(|rows| i64::try_from(rows).ok())?;
        counts.push((key, rows));
    }
    Some(counts)
}

/// Per file, whether every predicate is true for its partition values (`None`: a predicate
/// gave no booleans).
fn passing(
    files: &[&PartitionedFile],
    partition_cols: &Fields,
    predicates: &[Arc<dyn PhysicalExpr>],
) -> Result<Option<Vec<bool>>> {
    let mut selected = vec![true; files.len()];
    if predicates.is_empty() || files.is_empty() {
        return Ok(Some(selected));
    }
    let columns = (0..partition_cols.len())
        .map(|i| ScalarValue::iter_to_array(files.iter().map(|f| f.partition_values[i].clone())))
        .collect::<Result<Vec<_>>>()?;
    let values = RecordBatch::try_new(Arc::new(Schema::new(partition_cols.clone())), columns)?;
    for predicate in predicates {
        let verdicts = predicate.evaluate(&values)?.into_array(files.len())?;
        let Some(verdicts) = verdicts.as_boolean_opt() else {
            return Ok(None);
        };
        for (keep, verdict) in selected.iter_mut().zip(verdicts.iter()) {
            *keep &= verdict == Some(true);
        }
    }
    Ok(Some(selected))
}

/// `predicate` reading a batch of only the partition columns (`partition_cols`' order), when
/// its value for a row depends on nothing else: every column it reads is a partition column,
/// and it is built only of deterministic expressions known here (a dynamic filter, a volatile
/// function or anything unknown gives `None`).
fn on_partition_values(
    predicate: &Arc<dyn PhysicalExpr>,
    partition_cols: &Fields,
) -> Option<Arc<dyn PhysicalExpr>> {
    let mut decidable = true;
    predicate
        .apply(|expr| {
            let known = expr.downcast_ref::<Column>().is_some()
                || expr.downcast_ref::<Literal>().is_some()
                || expr.downcast_ref::<BinaryExpr>().is_some()
                || expr.downcast_ref::<NotExpr>().is_some()
                || expr.downcast_ref::<IsNullExpr>().is_some()
                || expr.downcast_ref::<IsNotNullExpr>().is_some()
                || expr.downcast_ref::<InListExpr>().is_some()
                || expr.downcast_ref::<CastExpr>().is_some()
                || expr.downcast_ref::<TryCastExpr>().is_some()
                || expr.downcast_ref::<NegativeExpr>().is_some()
                || expr.downcast_ref::<LikeExpr>().is_some()
                || expr.downcast_ref::<CaseExpr>().is_some()
                || expr
                    .downcast_ref::<ScalarFunctionExpr>()
                    .is_some_and(|f| !f.is_volatile_node());
            let partition_column = expr
                .downcast_ref::<Column>()
                .is_none_or(|c| partition_cols.iter().any(|f| f.name() == c.name()));
            if known && partition_column {
                Ok(TreeNodeRecursion::Continue)
            } else {
                decidable = false;
                Ok(TreeNodeRecursion::Stop)
            }
        })
        .ok()?;
    if !decidable {
        return None;
    }
    Arc::clone(predicate)
        .transform_up(|expr| {
            let Some(column) = expr.downcast_ref::<Column>() else {
                return Ok(Transformed::no(expr));
            };
            let index = partition_cols
                .iter()
                .position(|f| f.name() == column.name())
                .ok_or_else(|| internal_datafusion_err!("not a partition column"))?;
            Ok(Transformed::yes(
                Arc::new(Column::new(column.name(), index)) as Arc<dyn PhysicalExpr>,
            ))
        })
        .ok()
        .map(|rewritten| rewritten.data)
}

/// `array` as `data_type` (partition values may be typed as plain values or dictionaries).
fn conformed(array: ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    if array.data_type() == data_type {
        Ok(array)
    } else {
        Ok(cast(&array, data_type)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sorted_lines;
    use crate::{EventTable, TableLocation};
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use logektor_event::{Endpoint, RequestMeta, decode, to_record_batch};

    /// `n` page events from `source`, their days cycling through `days`.
    fn batch(n: usize, source: &str, days: &[&str]) -> RecordBatch {
        let events: Vec<_> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"type":"page","messageId":"{source}-{n}-{i}","anonymousId":"a{}","timestamp":"{}T10:00:00Z"}}"#,
                    i % 5,
                    days[i % days.len()]
                )
            })
            .collect();
        let body = format!(r#"{{"batch":[{}]}}"#, events.join(","));
        let meta = RequestMeta::new(1_714_000_000_000_000, source, 1);
        to_record_batch(&decode(&meta, Endpoint::Batch, body.as_bytes()).unwrap())
    }

    /// A session over `provider` as `events`: with the rule or without, with files split into
    /// byte ranges and filters pushed into the scan, or neither.
    fn session(
        provider: Arc<dyn datafusion::catalog::TableProvider>,
        rule: bool,
        split_files: bool,
    ) -> SessionContext {
        // Eight partitions for six files: with a minimum size of 1 byte, and batches smaller
        // than a file, DataFusion splits files into byte ranges to fill them.
        let mut config = SessionConfig::new()
            .with_target_partitions(8)
            .with_batch_size(4);
        if split_files {
            config.options_mut().optimizer.repartition_file_min_size = 1;
        }
        // With pushdown, filters reach the Parquet scan (as they do in the server).
        config.options_mut().execution.parquet.pushdown_filters = split_files;
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(CountFromFileIndex));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_table("events", provider).unwrap();
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> (String, String) {
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let plan = displayable(plan.as_ref()).indent(true).to_string();
        let batches = frame.collect().await.unwrap();
        (sorted_lines(&batches).join("\n"), plan)
    }

    #[tokio::test]
    async fn grouped_counts_come_from_the_index_and_equal_a_scan_of_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::local(&dir.path().join("events")).unwrap();
        let mut table = EventTable::open_or_create(&location, "w").await.unwrap();
        let days = ["2024-04-01", "2024-04-02", "2024-04-03"];
        for (seq, (n, source)) in [(30, "web"), (7, "app"), (11, "web")]
            .into_iter()
            .enumerate()
        {
            table
                .append(&batch(n, source, &days[seq..]), seq as u64 + 1)
                .await
                .unwrap();
        }
        let snapshot = table.snapshot();
        let probe = SessionContext::new();
        let provider = snapshot.provider(&probe.state()).await.unwrap().unwrap();

        let counted_by_index = [
            "SELECT event_date, count(*) FROM events GROUP BY event_date",
            "SELECT count(1) AS a, event_date, count(*) AS b FROM events GROUP BY event_date",
            "SELECT event_date, count(*) AS n FROM events GROUP BY event_date ORDER BY n DESC LIMIT 2",
            // Filters decided per file by its partition values.
            "SELECT event_date, count(*) FROM events WHERE event_date >= DATE '2024-04-02' GROUP BY event_date",
            "SELECT count(*) FROM events WHERE event_date = DATE '2024-04-03'",
            "SELECT count(*) FROM events WHERE event_date IN (DATE '2024-04-01', DATE '2024-04-03')",
            "SELECT event_date, count(*) FROM events WHERE date_part('day', event_date) <> 2 GROUP BY event_date",
            // NULL drops a file's rows as false does.
            "SELECT event_date, count(*) FROM events \
             WHERE CASE WHEN event_date = DATE '2024-04-01' THEN NULL ELSE true END GROUP BY event_date",
            "SELECT event_date, count(*) FROM events WHERE event_date BETWEEN DATE '2024-03-01' AND DATE '2024-04-02' AND event_date IS NOT NULL GROUP BY event_date",
        ];
        let read_from_rows = [
            "SELECT count(*) FROM events WHERE source = 'web'",
            "SELECT event_date, count(*) FROM events WHERE source = 'web' GROUP BY event_date",
            "SELECT source, count(*) FROM events GROUP BY source",
            "SELECT event_date, count(anonymous_id) FROM events GROUP BY event_date",
            "SELECT event_date, count(DISTINCT anonymous_id) FROM events GROUP BY event_date",
            "SELECT event_date, count(*), max(received_at) FROM events GROUP BY event_date",
            "SELECT event_date, count(*) FILTER (WHERE type = 'page') FROM events GROUP BY event_date",
            "SELECT event_date, count(*) FROM (SELECT * FROM events LIMIT 20) GROUP BY event_date",
            "SELECT event_date, count(*) FROM events WHERE event_date > DATE '2024-04-01' AND source = 'web' GROUP BY event_date",
            "SELECT event_date, count(*) FROM events WHERE event_date > DATE '2024-04-01' OR random() < 0.0 GROUP BY event_date",
        ];
        for split_files in [false, true] {
            let with = session(Arc::clone(&provider), true, split_files);
            let without = session(Arc::clone(&provider), false, split_files);
            for sql in counted_by_index.iter().chain(&read_from_rows) {
                let (ours, plan) = answer(&with, sql).await;
                let (theirs, scan) = answer(&without, sql).await;
                assert!(scan.contains("parquet"), "{sql}: {scan}");
                // A range shows as `path:start..end`.
                assert_eq!(
                    scan.contains(".parquet:"),
                    split_files,
                    "{sql} (split: {split_files}): {scan}"
                );
                if !sql.contains("LIMIT 20") {
                    assert_eq!(ours, theirs, "{sql} (split: {split_files})");
                }
                assert_eq!(
                    plan.contains("parquet"),
                    read_from_rows.contains(sql),
                    "{sql} (split: {split_files}): {plan}"
                );
            }
            let (counts, _) = answer(&with, counted_by_index[0]).await;
            for row in [
                "| 2024-04-01 | 10 ",
                "| 2024-04-02 | 14 ",
                "| 2024-04-03 | 24 ",
            ] {
                assert!(counts.contains(row), "{row} in {counts}");
            }
        }
    }
}
