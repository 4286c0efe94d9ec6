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
//! columns, over a union of scans (or one scan). Each scan our file index planned whose grouping
//! columns are all partition columns, with no predicate and no limit, is replaced by one row per
//! group holding the partial count: the sum of its files' row counts. The other inputs (the
//! buffer, a scoped scan) keep the original partial aggregate, and the final aggregate above
//! adds the two up as it would any partial states.
//!
//! Only scans whose every file carries the [`ExactRowCount`] mark qualify: [`crate::scan`] sets
//! it on files of plain Parquet tables, where `numRecords` is exactly what a scan yields. A table
//! with deletion vectors is read by delta-rs, whose files carry no mark, so their counts are
//! never taken from the log.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
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

/// `aggregate` with the inputs whose counts the file index knows replaced by those counts, or
/// `None` where the rule does not apply.
fn counted(aggregate: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if !matches!(aggregate.mode(), AggregateMode::Partial)
        || aggregate.group_expr().has_grouping_set()
        || aggregate.limit_options().is_some()
        || aggregate.filter_expr().iter().any(Option::is_some)
    {
        return Ok(None);
    }
    let counts_only = aggregate.aggr_expr().iter().all(|expr| {
        expr.fun().name() == "count"
            && !expr.is_distinct()
            && expr.order_bys().is_empty()
            && matches!(expr.expressions().as_slice(), [arg]
                if arg.downcast_ref::<Literal>().is_some_and(|l| !l.value().is_null()))
    });
    if !counts_only || aggregate.aggr_expr().is_empty() {
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

    let input = transparent(aggregate.input());
    let parts = match input.downcast_ref::<UnionExec>() {
        Some(union) => union.inputs().clone(),
        None => vec![Arc::clone(input)],
    };
    let mut groups: HashMap<Vec<ScalarValue>, i64> = HashMap::new();
    let mut rest = Vec::new();
    let mut any_counted = false;
    for part in parts {
        match file_counts(&part, &group_columns) {
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

    // The partial states: group values, then the same count in every aggregate's column.
    let (keys, rows): (Vec<_>, Vec<_>) = groups.into_iter().unzip();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().take(group_columns.len()).enumerate() {
        let values = keys.iter().map(|key: &Vec<ScalarValue>| key[i].clone());
        let array = if keys.is_empty() {
            arrow::array::new_empty_array(field.data_type())
        } else {
            ScalarValue::iter_to_array(values)?
        };
        columns.push(conformed(array, field.data_type())?);
    }
    let counts: ArrayRef = Arc::new(Int64Array::from(rows));
    for field in schema.fields().iter().skip(group_columns.len()) {
        columns.push(conformed(Arc::clone(&counts), field.data_type())?);
    }
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    let mut inputs: Vec<Arc<dyn ExecutionPlan>> = vec![MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        Arc::clone(&schema),
        None,
    )?];
    if !rest.is_empty() {
        let input = UnionExec::try_new(rest)?;
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

/// Row counts by the values of `group_columns` (indices into `plan`'s output), when `plan` is a
/// scan of marked files that would yield every row of them and each group column is a
/// partition column.
fn file_counts(
    plan: &Arc<dyn ExecutionPlan>,
    group_columns: &[usize],
) -> Option<Vec<(Vec<ScalarValue>, i64)>> {
    let config = plan
        .downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()?;
    if config.limit.is_some() || config.file_source().filter().is_some() {
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
    // A file split into byte ranges for parallelism appears once per range: count it once.
    let mut files: HashMap<&Path, (Vec<ScalarValue>, i64)> = HashMap::new();
    for file in config.file_groups.iter().flat_map(|group| group.iter()) {
        if !file.extensions.contains::<ExactRowCount>() {
            return None;
        }
        let Precision::Exact(rows) = file.statistics.as_ref()?.num_rows else {
            return None;
        };
        let key = positions
            .iter()
            .map(|&p| file.partition_values.get(p).cloned())
            .collect::<Option<Vec<_>>>()?;
        files.insert(&file.object_meta.location, (key, i64::try_from(rows).ok()?));
    }
    Some(files.into_values().collect())
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
    /// byte ranges or whole.
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
        let mut lines: Vec<String> = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        (lines.join("\n"), plan)
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
