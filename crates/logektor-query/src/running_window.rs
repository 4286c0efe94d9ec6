//! Running window functions over sorted partitions in one pass over each batch.
//!
//! The session reports (`overview`, `entry_pages`, `referrers`) mark sessions with windows over
//! each visitor's events in time order: `lag(ts)`, and running `sum`s and `max`es
//! (`ROWS UNBOUNDED PRECEDING`). DataFusion's `BoundedWindowAggExec` evaluates these partition by
//! partition: per partition a hash-map entry keyed by `ScalarValue`s, batch slices, and for an
//! aggregate an accumulator asked for its value at every row as a `ScalarValue`. With a million
//! visitors over ten million events, three such operators took 8.1 s of the `referrers`
//! report's 19 s of CPU, more than its sort.
//!
//! Over input sorted by the partition keys, a partition's rows are contiguous, so each of these
//! functions is a scan with a carried value: a row starts a partition where a key differs from
//! the row before (the last row of the previous batch for the first), and
//! - `lag(x)` is the row before's `x`, NULL at a partition's first row;
//! - `sum(x)`, `max(x)`, `min(x)` over `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW` fold
//!   the partition's non-NULL `x` so far (NULL while there is none; `sum` wraps on overflow, as
//!   DataFusion's does).
//!
//! [`RunningWindow`], a physical optimizer rule, replaces a `BoundedWindowAggExec` in `Sorted`
//! mode whose window functions are all of these, over `Int64` for the aggregates (any type for
//! `lag`), with [`RunningWindowExec`]. Anything else (other functions or frames, `RANGE`
//! frames, whose peers make ties matter, `DISTINCT`, `FILTER`, `IGNORE NULLS`, a `lag` offset
//! or default) keeps DataFusion's operator. For `lag`, whose options the physical expression
//! does not expose, the rule asks DataFusion's own evaluator for a probe's answer and rewrites
//! only when it is the plain one.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanBufferBuilder, Int64Array, UInt32Array};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::compute::kernels::cmp::distinct;
use arrow::compute::{cast, concat, take};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::window::{PlainAggregateWindowExpr, StandardWindowExpr, WindowExpr};
use datafusion::physical_expr::{OrderingRequirements, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    distribution_requirements::InputDistributionRequirements,
};
use futures::StreamExt;

use crate::run_count::{key_changes, recompute};

/// The physical optimizer rule described in the [module docs](self).
#[derive(Debug, Default)]
pub struct RunningWindow;

impl PhysicalOptimizerRule for RunningWindow {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(window) = node.downcast_ref::<BoundedWindowAggExec>() else {
                return Ok(Transformed::no(node));
            };
            match RunningWindowExec::try_new(Arc::new(window.clone())) {
                Some(running) => Ok(Transformed::yes(Arc::new(running))),
                None => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "running_window"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// One window function [`RunningWindowExec`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Lag,
    Sum,
    Max,
    Min,
}

/// A window function and its argument.
#[derive(Debug, Clone)]
struct Running {
    function: Function,
    argument: Arc<dyn PhysicalExpr>,
}

/// What [`running`] accepts of `expr`, over an input of `input` schema.
fn running(expr: &Arc<dyn WindowExpr>, input: &SchemaRef) -> Option<Running> {
    let any = expr.as_any();
    let int64 = |e: &Arc<dyn PhysicalExpr>| e.data_type(input).ok() == Some(DataType::Int64);
    if let Some(aggregate) = any.downcast_ref::<PlainAggregateWindowExpr>() {
        let frame = aggregate.get_window_frame();
        let running_frame = frame.units == WindowFrameUnits::Rows
            && matches!(&frame.start_bound, WindowFrameBound::Preceding(v) if v.is_null())
            && frame.end_bound == WindowFrameBound::CurrentRow;
        let function = aggregate.get_aggregate_expr();
        // `filter` is the struct's last field and has no getter outside DataFusion.
        let unfiltered = format!("{aggregate:?}").ends_with("filter: None }");
        let function_kind = match function.fun().name() {
            "sum" => Function::Sum,
            "max" => Function::Max,
            "min" => Function::Min,
            _ => return None,
        };
        let [argument] = &function.expressions()[..] else {
            return None;
        };
        let plain = !function.is_distinct() && !function.ignore_nulls() && !function.is_reversed();
        let typed = int64(argument) && expr.field().ok()?.data_type() == &DataType::Int64;
        return (running_frame && unfiltered && plain && typed).then(|| Running {
            function: function_kind,
            argument: Arc::clone(argument),
        });
    }
    let standard = any.downcast_ref::<StandardWindowExpr>()?;
    let udwf = standard
        .get_standard_func_expr()
        .as_any()
        .downcast_ref::<WindowUDFExpr>()?;
    if udwf.fun().name() != "lag" {
        return None;
    }
    let [argument] = &standard.expressions()[..] else {
        return None;
    };
    let data_type = argument.data_type(input).ok()?;
    (expr.field().ok()?.data_type() == &data_type && plain_lag(standard, &data_type)).then(|| {
        Running {
            function: Function::Lag,
            argument: Arc::clone(argument),
        }
    })
}

/// Whether DataFusion's evaluator of `lag` answers a probe as a `lag` with offset 1, a NULL
/// default and NULLs respected does: `[1, NULL, 3, 4]` → `[NULL, 1, NULL, 3]`.
fn plain_lag(lag: &StandardWindowExpr, data_type: &DataType) -> bool {
    let probe = || -> Result<bool> {
        let values: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)]));
        let expected: ArrayRef = Arc::new(Int64Array::from(vec![None, Some(1), None, Some(3)]));
        let values = cast(&values, data_type)?;
        let expected = cast(&expected, data_type)?;
        let mut evaluator = lag.get_standard_func_expr().create_evaluator()?;
        let answer = evaluator.evaluate_all(&[values], 4)?;
        Ok(answer.to_data() == expected.to_data())
    };
    probe().unwrap_or(false)
}

/// A `BoundedWindowAggExec` of running functions, computed in one pass per batch (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct RunningWindowExec {
    /// The operator this answers for: its input, partition keys, schema and requirements.
    window: Arc<BoundedWindowAggExec>,
    functions: Vec<Running>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunningWindowExec {
    /// Replaces `window` where all its functions are running ones over sorted partitions.
    fn try_new(window: Arc<BoundedWindowAggExec>) -> Option<Self> {
        let exprs = window.window_expr();
        let first = exprs.first()?;
        let input = window.input().schema();
        let same_window = exprs.iter().all(|expr| {
            expr.partition_by().len() == first.partition_by().len()
                && expr
                    .partition_by()
                    .iter()
                    .zip(first.partition_by())
                    .all(|(a, b)| a.eq(b))
                && expr.order_by() == first.order_by()
        });
        let sorted = matches!(window.input_order_mode, InputOrderMode::Sorted);
        if !(sorted && same_window && !first.order_by().is_empty()) {
            return None;
        }
        let functions = exprs
            .iter()
            .map(|expr| running(expr, &input))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            window,
            functions,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for RunningWindowExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<_> = self.window.window_expr().iter().map(|e| e.name()).collect();
        write!(f, "RunningWindowExec: wdw=[{}]", names.join(", "))
    }
}

impl ExecutionPlan for RunningWindowExec {
    fn name(&self) -> &str {
        "RunningWindowExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.window.properties()
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.window.input_distribution_requirements()
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        self.window.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.window.maintains_input_order()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.window.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.window.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let window = Arc::clone(&self.window).replace_children(children, recompute())?;
        let Some(window) = window.downcast_ref::<BoundedWindowAggExec>() else {
            return internal_err!("a window's new children made it something else");
        };
        match RunningWindowExec::try_new(Arc::new(window.clone())) {
            Some(running) => Ok(Arc::new(running)),
            None => Ok(Arc::new(window.clone())),
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.window.input().execute(partition, context)?;
        let schema = self.window.schema();
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let mut scan = Scan {
            partition_by: self.window.window_expr()[0].partition_by().to_vec(),
            functions: self.functions.clone(),
            schema: Arc::clone(&schema),
            last_keys: None,
            carried: vec![Carried::None; self.functions.len()],
        };
        let output = input.map(move |batch| {
            let batch = batch?;
            let _timer = metrics.elapsed_compute().timer();
            let output = scan.next(&batch)?;
            metrics.record_output(output.num_rows());
            Ok(output)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, output)))
    }
}

/// What a function carries from one batch to the next.
#[derive(Debug, Clone)]
enum Carried {
    /// Before the first row.
    None,
    /// `lag`: the last row's value, as a one-row array.
    Value(ArrayRef),
    /// An aggregate: the fold of the current partition so far (None while all NULL).
    Fold(Option<i64>),
}

/// One partition's pass: the functions, and what the last batch left.
struct Scan {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    functions: Vec<Running>,
    schema: SchemaRef,
    /// The last row's partition keys, one-row arrays.
    last_keys: Option<Vec<ArrayRef>>,
    carried: Vec<Carried>,
}

impl Scan {
    /// `batch` with the functions' columns.
    fn next(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        let keys = self
            .partition_by
            .iter()
            .map(|expr| expr.evaluate(batch)?.into_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let starts = self.starts(&keys)?;
        self.last_keys = Some(keys.iter().map(|k| k.slice(rows - 1, 1)).collect());
        let mut columns = batch.columns().to_vec();
        for (running, carried) in self.functions.iter().zip(&mut self.carried) {
            let values = running.argument.evaluate(batch)?.into_array(rows)?;
            columns.push(match running.function {
                Function::Lag => lag(&values, &starts, carried)?,
                Function::Sum => fold(&values, &starts, carried, i64::wrapping_add),
                Function::Max => fold(&values, &starts, carried, i64::max),
                Function::Min => fold(&values, &starts, carried, i64::min),
            });
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// Which rows of the batch start a partition.
    fn starts(&self, keys: &[ArrayRef]) -> Result<BooleanBuffer> {
        let first = match &self.last_keys {
            None => true,
            Some(last) => {
                let mut differs = false;
                for (last, key) in last.iter().zip(keys) {
                    differs |= distinct(last, &key.slice(0, 1))?.value(0);
                }
                differs
            }
        };
        let rows = keys.first().map_or(0, |k| k.len());
        let mut starts = BooleanBufferBuilder::new(rows);
        starts.append(first);
        if keys.is_empty() {
            starts.append_n(rows - 1, false);
        } else {
            starts.append_buffer(&key_changes(keys)?);
        }
        Ok(starts.finish())
    }
}

/// `lag(values)`: the row before's value within the partition, NULL where one starts.
fn lag(values: &ArrayRef, starts: &BooleanBuffer, carried: &mut Carried) -> Result<ArrayRef> {
    let before = match carried {
        Carried::Value(value) => Arc::clone(value),
        _ => arrow::array::new_null_array(values.data_type(), 1),
    };
    // Row i's value is row i - 1 of the batch, which is row i of `before` + `values`.
    let source = concat(&[before.as_ref(), values.as_ref()])?;
    let indices: UInt32Array = (0..values.len())
        .map(|i| (!starts.value(i)).then_some(i as u32))
        .collect();
    *carried = Carried::Value(values.slice(values.len() - 1, 1));
    Ok(take(source.as_ref(), &indices, None)?)
}

/// A running aggregate: `combine` over the partition's non-NULL values so far.
fn fold(
    values: &ArrayRef,
    starts: &BooleanBuffer,
    carried: &mut Carried,
    combine: fn(i64, i64) -> i64,
) -> ArrayRef {
    let values = values.as_primitive::<Int64Type>();
    let mut acc = match carried {
        Carried::Fold(acc) => *acc,
        _ => None,
    };
    let mut out = Vec::with_capacity(values.len());
    let mut valid = BooleanBufferBuilder::new(values.len());
    for (i, start) in starts.iter().enumerate() {
        if start {
            acc = None;
        }
        if values.is_valid(i) {
            let value = values.value(i);
            acc = Some(acc.map_or(value, |acc| combine(acc, value)));
        }
        out.push(acc.unwrap_or_default());
        valid.append(acc.is_some());
    }
    *carried = Carried::Fold(acc);
    Arc::new(Int64Array::new(
        out.into(),
        Some(NullBuffer::new(valid.finish())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringViewArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Visitors (views shared by equal rows, as a dictionary page decodes, with NULLs) with
    /// events at times that tie within a visitor, ids, and values with NULLs; partitions split
    /// across batches, in two input partitions.
    fn batches() -> Vec<Vec<RecordBatch>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("visitor", DataType::Utf8View, true),
            Field::new("ts", DataType::Int64, false),
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Int64, true),
            Field::new("label", DataType::Utf8, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let visitors = ["anonymous-visitor-0001", "u2", "a-rather-long-visitor-id-3"];
        let rows = |seed: usize, n: usize| -> RecordBatch {
            let visitor = (0..n).map(|i| {
                let k = (i * 7 + seed * 3) % 4;
                visitors.get(k).copied()
            });
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringViewArray::from_iter(visitor)),
                    Arc::new(Int64Array::from_iter_values(
                        (0..n).map(|i| ((i * 13 + seed) % 17) as i64),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        (0..n).map(|i| (seed * 1000 + i) as i64),
                    )),
                    Arc::new(Int64Array::from_iter((0..n).map(|i| {
                        (!i.is_multiple_of(5)).then_some(((i * 31 + seed) % 23) as i64 - 11)
                    }))),
                    Arc::new(arrow::array::StringArray::from_iter(
                        (0..n).map(|i| (!i.is_multiple_of(3)).then(|| format!("l{}", i % 4))),
                    )),
                    Arc::new(
                        TimestampMicrosecondArray::from_iter_values(
                            (0..n).map(|i| ((i * 13 + seed) % 17) as i64),
                        )
                        .with_timezone("UTC"),
                    ),
                ],
            )
            .unwrap()
        };
        vec![
            vec![rows(0, 200), rows(1, 1), rows(2, 90)],
            vec![rows(3, 150)],
        ]
    }

    /// The sorted answer to `sql` with or without the rule, and the physical plan.
    async fn answer(rule: bool, sql: &str) -> (Vec<String>, String) {
        let mut state = SessionStateBuilder::new()
            .with_config(
                SessionConfig::new()
                    .with_target_partitions(2)
                    .with_batch_size(64),
            )
            .with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(RunningWindow));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let parts = batches();
        let table = MemTable::try_new(parts[0][0].schema(), parts).unwrap();
        ctx.register_table("events", Arc::new(table)).unwrap();
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let plan = displayable(plan.as_ref()).indent(false).to_string();
        let batches = frame.collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        (lines, plan)
    }

    #[tokio::test]
    async fn running_windows_equal_datafusion() {
        let over = "PARTITION BY visitor ORDER BY ts, id";
        let rows = format!("{over} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW");
        let cases = [
            // (query, answered by the rule)
            (
                format!("SELECT id, lag(ts) OVER ({over}) FROM events"),
                true,
            ),
            (format!("SELECT id, lag(x) OVER ({over}) FROM events"), true),
            (
                format!("SELECT id, lag(label) OVER ({over}) FROM events"),
                true,
            ),
            (
                "SELECT id, lag(t) OVER (PARTITION BY visitor ORDER BY t, id) FROM events"
                    .to_owned(),
                true,
            ),
            (
                format!(
                    "SELECT id, sum(x) OVER ({rows}), max(x) OVER ({rows}), \
                     min(x) OVER ({rows}), lag(visitor) OVER ({over}) FROM events"
                ),
                true,
            ),
            // The reports' shape: a window over another's output, with expressions.
            (
                format!(
                    "WITH marked AS (SELECT *, CASE WHEN ts - lag(ts) OVER ({over}) < 3 \
                     THEN 0 ELSE 1 END AS starts FROM events) \
                     SELECT id, sum(starts) OVER ({rows}), \
                     max(CASE WHEN starts = 1 THEN ts END) OVER ({rows}) FROM marked"
                ),
                true,
            ),
            // Several keys, one of them NULL in places.
            (
                "SELECT id, sum(ts) OVER (PARTITION BY visitor, label ORDER BY id \
                 ROWS UNBOUNDED PRECEDING) FROM events"
                    .to_owned(),
                true,
            ),
            // Not these: an offset, a default, IGNORE NULLS, a RANGE frame (ties are peers),
            // a sliding frame, another function, a FILTER.
            (
                format!("SELECT id, lag(x, 2) OVER ({over}) FROM events"),
                false,
            ),
            (
                format!("SELECT id, lag(x, 1, 0) OVER ({over}) FROM events"),
                false,
            ),
            (
                format!("SELECT id, lag(x) IGNORE NULLS OVER ({over}) FROM events"),
                false,
            ),
            (
                "SELECT id, sum(x) OVER (PARTITION BY visitor ORDER BY ts) FROM events".to_owned(),
                false,
            ),
            (
                format!(
                    "SELECT id, sum(x) OVER ({over} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) \
                     FROM events"
                ),
                false,
            ),
            (
                format!("SELECT id, row_number() OVER ({over}) FROM events"),
                false,
            ),
            (
                format!("SELECT id, count(x) OVER ({rows}) FROM events"),
                false,
            ),
            (
                format!("SELECT id, lead(x) OVER ({over}) FROM events"),
                false,
            ),
            (
                format!("SELECT id, sum(x) FILTER (WHERE x > 0) OVER ({rows}) FROM events"),
                false,
            ),
        ];
        for (sql, rewritten) in cases {
            let (expected, before) = answer(false, &sql).await;
            let (actual, after) = answer(true, &sql).await;
            assert!(!before.contains("RunningWindowExec"), "{before}");
            assert_eq!(
                after.contains("RunningWindowExec"),
                rewritten,
                "{sql}\n{after}"
            );
            assert_eq!(actual, expected, "{sql}\n{after}");
            assert!(expected.len() > 400, "{sql}: {} lines", expected.len());
        }
    }

    #[test]
    fn lag_probe_tells_plain_lag_apart() {
        // The probe's answer for the plain function, checked against our own `lag`.
        let values: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)]));
        let starts = BooleanBuffer::from(vec![true, false, false, false]);
        let answer = lag(&values, &starts, &mut Carried::None).unwrap();
        let expected: ArrayRef = Arc::new(Int64Array::from(vec![None, Some(1), None, Some(3)]));
        assert_eq!(answer.to_data(), expected.to_data());
    }

    #[test]
    fn folds_carry_across_batches_and_restart_at_partitions() {
        let mut carried = Carried::None;
        let first: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), None, Some(2)]));
        let out = fold(
            &first,
            &BooleanBuffer::from(vec![true, false, false]),
            &mut carried,
            i64::max,
        );
        assert_eq!(out.as_primitive::<Int64Type>().values(), &[5, 5, 5]);
        let second: ArrayRef = Arc::new(Int64Array::from(vec![Some(9), None, Some(1)]));
        let out = fold(
            &second,
            &BooleanBuffer::from(vec![false, true, false]),
            &mut carried,
            i64::max,
        );
        let out = out.as_primitive::<Int64Type>();
        assert_eq!(out.value(0), 9);
        assert!(out.is_null(1), "a partition of NULLs so far is NULL");
        assert_eq!(out.value(2), 1);
    }
}
