//! `count(*) … GROUP BY` over sorted runs: one partial row per run of equal keys, not a hash
//! lookup per row.
//!
//! The table is sorted by day, then source, type and event name, then time (see
//! `logektor-table`'s layout), so columns that follow the event name arrive in long runs of
//! equal values: 350,000 page views of a day hold 28,500 runs of the same `page_path`. A
//! `SELECT page_path, count(*) … GROUP BY page_path` nevertheless hashes every row in its
//! partial aggregate (145 ms of CPU over ten million events, the query's largest cost).
//!
//! Low-cardinality keys that do not follow the sort order (browser, OS, referrer host) have no
//! long runs, but a batch holds few distinct tuples of them, and the Parquet reader gives rows
//! of one dictionary entry the same 16-byte string view. Hashing those views instead of the
//! strings' bytes finds a batch's distinct tuples for a fraction of what the hash aggregate
//! spends on the same rows (it hashes and compares bytes, and keeps groups across batches).
//!
//! [`RunCount`], a physical optimizer rule, replaces a `Partial` aggregate whose aggregates are
//! all `count(<non-null literal>)` (how `count(*)` is planned), grouped by expressions of types
//! whose equality is exact (strings, integers, dates, timestamps, booleans), with
//! [`RunCountExec`]. It decides per partition, on the first batch:
//! - **runs**: where no more than one run of equal keys starts per [`MIN_RUN_ROWS`] rows, one
//!   partial row per run (its values and length);
//! - **batch groups**: else, where the batch has no more than one distinct key tuple per
//!   [`MIN_RUN_ROWS`] rows and every key has tokens (string views, integers but `UInt64`,
//!   dates, timestamps, booleans), one partial row per distinct tuple of each batch;
//! - else the original hash aggregate, over that batch and the rest of the input.
//!
//! A later batch of at least [`MIN_SWITCH_ROWS`] rows that would yield more than half as many
//! partial rows hands itself and the rest of the partition to the hash aggregate too: keys
//! that stop repeating (another file, a differently ordered one) cost no more than before.
//!
//! A partial aggregate may emit a group more than once; the final aggregate adds its states up
//! either way.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, StringViewArray};
use arrow::array::{ArrayRef, Int64Array, UInt32Array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp::distinct;
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode,
    Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;
use logektor_table::is_partial_row_count;

/// A partition whose first batch averages shorter runs (or, counting batch groups, fewer rows
/// per distinct key tuple) than this goes to the hash aggregate.
pub const MIN_RUN_ROWS: usize = 4;

/// A later batch of at least this many rows that yields more than half as many partial rows
/// hands the rest of its partition to the hash aggregate.
pub const MIN_SWITCH_ROWS: usize = 1024;

/// The physical optimizer rule described in the [module docs](self).
#[derive(Debug, Default)]
pub struct RunCount;

impl PhysicalOptimizerRule for RunCount {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if !counts_by_runs(aggregate) {
                return Ok(Transformed::no(node));
            }
            let aggregate = Arc::new(aggregate.clone());
            Ok(Transformed::yes(Arc::new(RunCountExec::new(aggregate))))
        })
        .data()
    }

    fn name(&self) -> &str {
        "run_count"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `aggregate` is a partial `count(*)` whose keys [`RunCountExec`] can count.
fn counts_by_runs(aggregate: &AggregateExec) -> bool {
    let group_by = aggregate.group_expr();
    let input = aggregate.input().schema();
    let exact_keys = group_by.expr().iter().all(|(expr, _)| {
        expr.data_type(&input)
            .is_ok_and(|data_type| exact_equality(&data_type))
    });
    is_partial_row_count(aggregate)
        && matches!(aggregate.input_order_mode(), InputOrderMode::Linear)
        && !group_by.expr().is_empty()
        && exact_keys
        // The group columns, then one state (the count) per aggregate.
        && aggregate.schema().fields().len() == group_by.expr().len() + aggregate.aggr_expr().len()
}

/// Types whose values are equal exactly when the hash aggregate groups them together (not
/// floats: `-0.0` and `0.0`, NaNs).
fn exact_equality(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::Utf8View
            | DataType::LargeUtf8
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..)
    )
}

/// The partial aggregate of a [`RunCount`] plan: one row per run of equal keys or per distinct
/// key tuple of a batch, or the hash aggregate's rows (see the [module docs](self)).
#[derive(Debug)]
pub struct RunCountExec {
    /// The partial aggregate this answers for: its input, group expressions and schema, and
    /// what a partition of unsorted keys runs instead.
    aggregate: Arc<AggregateExec>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunCountExec {
    fn new(aggregate: Arc<AggregateExec>) -> Self {
        Self {
            aggregate,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for RunCountExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let groups: Vec<_> = self
            .aggregate
            .group_expr()
            .expr()
            .iter()
            .map(|(_, name)| name.as_str())
            .collect();
        write!(f, "RunCountExec: gby=[{}]", groups.join(", "))
    }
}

impl ExecutionPlan for RunCountExec {
    fn name(&self) -> &str {
        "RunCountExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let aggregate = Arc::clone(&self.aggregate).replace_children(children, recompute())?;
        match aggregate.downcast_ref::<AggregateExec>() {
            Some(aggregate) => Ok(Arc::new(RunCountExec::new(Arc::new(aggregate.clone())))),
            None => internal_err!("an aggregate's new children made it something else"),
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
        let input = self
            .aggregate
            .input()
            .execute(partition, Arc::clone(&context))?;
        let schema = self.aggregate.schema();
        let counter = Counter {
            aggregate: Arc::clone(&self.aggregate),
            context,
            metrics: BaselineMetrics::new(&self.metrics, partition),
        };
        let output = futures::stream::unfold(
            (counter, Phase::Deciding(input)),
            |(counter, phase)| async move {
                let (item, phase) = counter.next(phase).await?;
                Some((item, (counter, phase)))
            },
        );
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, output)))
    }
}

/// What a partition of [`RunCountExec`] needs to count its input.
struct Counter {
    aggregate: Arc<AggregateExec>,
    context: Arc<TaskContext>,
    metrics: BaselineMetrics,
}

/// Where a partition of [`RunCountExec`] is.
enum Phase {
    /// Before the first non-empty batch, which decides how to count.
    Deciding(SendableRecordBatchStream),
    /// Counting each batch the way chosen.
    Counting(SendableRecordBatchStream, Counting),
    /// Handed to the hash aggregate: keys that neither run nor repeat.
    Hashing(SendableRecordBatchStream),
}

impl Counter {
    /// The next output batch and the phase after it; None at the end.
    async fn next(&self, phase: Phase) -> Option<(Result<RecordBatch>, Phase)> {
        match phase {
            Phase::Deciding(mut input) => loop {
                let batch = match input.next().await? {
                    Ok(batch) if batch.num_rows() == 0 => continue,
                    Ok(batch) => batch,
                    Err(error) => return Some((Err(error), Phase::Deciding(input))),
                };
                return match self.decide(&batch) {
                    Ok(Some((counting, counted))) => {
                        Some((Ok(counted), Phase::Counting(input, counting)))
                    }
                    Ok(None) => self.hash(batch, input).await,
                    Err(error) => Some((Err(error), Phase::Deciding(input))),
                };
            },
            Phase::Counting(mut input, counting) => {
                let batch = match input.next().await? {
                    Ok(batch) => batch,
                    Err(error) => return Some((Err(error), Phase::Counting(input, counting))),
                };
                match self.count(&batch, counting) {
                    Ok(Some(counted)) => Some((Ok(counted), Phase::Counting(input, counting))),
                    // The keys stopped repeating: the hash aggregate from this batch on.
                    Ok(None) => self.hash(batch, input).await,
                    Err(error) => Some((Err(error), Phase::Counting(input, counting))),
                }
            }
            Phase::Hashing(mut hashed) => {
                let item = hashed.next().await?;
                Some((item, Phase::Hashing(hashed)))
            }
        }
    }

    /// How to count, from the first batch, and its partial rows; None for the hash aggregate.
    fn decide(&self, batch: &RecordBatch) -> Result<Option<(Counting, RecordBatch)>> {
        let _timer = self.metrics.elapsed_compute().timer();
        let keys = group_values(&self.aggregate, batch)?;
        let rows = batch.num_rows();
        // Runs where the sort order leaves them, else each batch's distinct keys where few.
        for counting in [Counting::Runs, Counting::BatchGroups] {
            if let Some(tallied) = tally(counting, &keys)?
                && tallied.len() * MIN_RUN_ROWS <= rows
            {
                let counted = counted(&self.aggregate, &keys, tallied)?;
                self.metrics.record_output(counted.num_rows());
                return Ok(Some((counting, counted)));
            }
        }
        Ok(None)
    }

    /// The partial rows of a later batch; None where they would be more than half its rows
    /// (and the batch has enough rows to tell).
    fn count(&self, batch: &RecordBatch, counting: Counting) -> Result<Option<RecordBatch>> {
        let _timer = self.metrics.elapsed_compute().timer();
        let keys = group_values(&self.aggregate, batch)?;
        // A batch without tokens for its keys (a view no token can stand for) is counted by
        // runs.
        let tallied = match tally(counting, &keys)? {
            Some(tallied) => tallied,
            None => tally(Counting::Runs, &keys)?.unwrap_or_default(),
        };
        if batch.num_rows() >= MIN_SWITCH_ROWS && tallied.len() * 2 > batch.num_rows() {
            return Ok(None);
        }
        let counted = counted(&self.aggregate, &keys, tallied)?;
        self.metrics.record_output(counted.num_rows());
        Ok(Some(counted))
    }

    /// The hash aggregate over `batch` and the rest of `input`, and its first output.
    async fn hash(
        &self,
        batch: RecordBatch,
        input: SendableRecordBatchStream,
    ) -> Option<(Result<RecordBatch>, Phase)> {
        let replay = Replay::new(
            input.schema(),
            futures::stream::once(async { Ok(batch) }).chain(input),
        );
        let hashed = Arc::clone(&self.aggregate)
            .replace_children(vec![Arc::new(replay)], recompute())
            .and_then(|hashed| hashed.execute(0, Arc::clone(&self.context)));
        let mut hashed = match hashed {
            Ok(hashed) => hashed,
            Err(error) => {
                let none = RecordBatchStreamAdapter::new(
                    self.aggregate.schema(),
                    futures::stream::empty(),
                );
                return Some((Err(error), Phase::Hashing(Box::pin(none))));
            }
        };
        let item = hashed.next().await?;
        Some((item, Phase::Hashing(hashed)))
    }
}

pub(crate) fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

/// The values of `aggregate`'s group expressions over `batch`.
fn group_values(aggregate: &AggregateExec, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    aggregate
        .group_expr()
        .expr()
        .iter()
        .map(|(expr, _)| expr.evaluate(batch)?.into_array(batch.num_rows()))
        .collect()
}

/// The runs of equal values across `keys` (NULLs equal to each other), in order.
fn runs_of(keys: &[ArrayRef]) -> Result<Vec<std::ops::Range<usize>>> {
    let rows = keys.first().map_or(0, |k| k.len());
    if rows == 0 {
        return Ok(vec![]);
    }
    let changes = key_changes(keys)?;
    let mut runs = Vec::new();
    let mut start = 0;
    for change in changes.set_indices() {
        runs.push(start..change + 1);
        start = change + 1;
    }
    runs.push(start..rows);
    Ok(runs)
}

/// Bit i: row i + 1 of `keys` (at least one row) differs from row i in some key (NULLs equal
/// to each other).
pub(crate) fn key_changes(keys: &[ArrayRef]) -> Result<BooleanBuffer> {
    let rows = keys.first().map_or(0, |k| k.len());
    let mut changes = BooleanBuffer::new_unset(rows - 1);
    for key in keys {
        let changed = match key.data_type() {
            DataType::Utf8View => view_changes(key.as_string_view()),
            _ => {
                let (before, after) = (key.slice(0, rows - 1), key.slice(1, rows - 1));
                distinct(&before, &after)?.values().clone()
            }
        };
        changes = &changes | &changed;
    }
    Ok(changes)
}

/// Where a string differs from the one before it. Equal views are equal strings without a
/// look at the bytes: a dictionary-decoded column repeats the view of its dictionary entry.
fn view_changes(strings: &StringViewArray) -> BooleanBuffer {
    let views = strings.views();
    let pairs = views.len() - 1;
    // Without a branch per row (runs a dozen rows long mispredicted one in each; the function
    // was a tenth of the top pages query's CPU): unequal views, and where both rows are valid.
    let mut changes = BooleanBuffer::collect_bool(pairs, |i| views[i] != views[i + 1]);
    let nulls = strings.nulls().filter(|nulls| nulls.null_count() > 0);
    if let Some(nulls) = nulls {
        let (before, after) = (nulls.inner().slice(0, pairs), nulls.inner().slice(1, pairs));
        changes = &changes & &(&before & &after);
    }
    // Then unequal views of equal strings (views of two copies, a dictionary and a plain
    // page): only with the same length and first four bytes, and only valid rows are left.
    let same: Vec<usize> = changes
        .set_indices()
        .filter(|&i| {
            views[i] as u64 == views[i + 1] as u64 && strings.value(i) == strings.value(i + 1)
        })
        .collect();
    if !same.is_empty() {
        let mut bits = arrow::array::BooleanBufferBuilder::new(pairs);
        bits.append_buffer(&changes);
        for i in same {
            bits.set_bit(i, false);
        }
        changes = bits.finish();
    }
    // A NULL beside a value is a change.
    if let Some(nulls) = nulls {
        let (before, after) = (nulls.inner().slice(0, pairs), nulls.inner().slice(1, pairs));
        changes = &changes | &(&before ^ &after);
    }
    changes
}

/// One partial row per distinct key tuple of `tallied`: its values and count, once per
/// aggregate.
fn counted(aggregate: &AggregateExec, keys: &[ArrayRef], tallied: Tally) -> Result<RecordBatch> {
    let schema = aggregate.schema();
    let firsts = UInt32Array::from(tallied.firsts);
    let counts: ArrayRef = Arc::new(Int64Array::from(tallied.counts));
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (values, field) in keys.iter().zip(schema.fields()) {
        let values = take(values.as_ref(), &firsts, None)?;
        columns.push(if values.data_type() == field.data_type() {
            values
        } else {
            cast(&values, field.data_type())?
        });
    }
    for field in schema.fields().iter().skip(keys.len()) {
        columns.push(cast(&counts, field.data_type())?);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// How a partition counts, decided on its first batch.
#[derive(Debug, Clone, Copy)]
enum Counting {
    /// One row per run of equal keys.
    Runs,
    /// One row per distinct key tuple of each batch, found by hashing its tokens.
    BatchGroups,
}

/// A batch's key tuples (runs or distinct tuples): the first row of each and its row count.
#[derive(Debug, Default)]
struct Tally {
    firsts: Vec<u32>,
    counts: Vec<i64>,
}

impl Tally {
    fn len(&self) -> usize {
        self.firsts.len()
    }
}

/// The tally of `keys` the way `counting` counts; None where `BatchGroups` has no tokens for
/// the keys.
fn tally(counting: Counting, keys: &[ArrayRef]) -> Result<Option<Tally>> {
    match counting {
        Counting::Runs => {
            let runs = runs_of(keys)?;
            Ok(Some(Tally {
                firsts: runs.iter().map(|run| run.start as u32).collect(),
                counts: runs.iter().map(|run| run.len() as i64).collect(),
            }))
        }
        Counting::BatchGroups => Ok(batch_groups(keys)),
    }
}

/// A key column's values as 128-bit tokens: equal tokens are equal values (NULLs equal to each
/// other), and equal values mostly have equal tokens, so a batch hashes 16 bytes per value.
/// - A string view names its string exactly within one array, and rows of one dictionary
///   entry share it; NULL is `u128::MAX`, which no valid view of a non-NULL row is (its
///   length says 4 GiB − 1, so it is not inline, and its buffer index says buffer 2^32 − 1).
/// - An integer's bits, zero-extended; NULL is `u128::MAX`, which no 64-bit value reaches.
///
/// The views themselves where a column has no NULLs; else written into `owned` (reused from
/// batch to batch: allocating 128 KiB per column and batch cost more than the hashing). None
/// for other types (and `UInt64`, whose upper half would not cast to `Int64`).
fn tokens<'a>(key: &'a ArrayRef, owned: &mut Vec<u128>) -> Option<Option<&'a [u128]>> {
    use arrow::datatypes::Int64Type;
    owned.clear();
    match key.data_type() {
        DataType::Utf8View => {
            let views = key.as_string_view().views();
            let Some(nulls) = key.nulls() else {
                return Some(Some(&views[..]));
            };
            // A copy with NULL rows overwritten: a copy and a pass over the NULLs' bits is a
            // fraction of a per-row choice (which was a fifth of a wide `GROUP BY`'s CPU).
            // Whatever a slot under a NULL holds is overwritten, and the array's validity keeps
            // every other view from being the NULL token (no need to search for one: that
            // pass was 4% of the wide `GROUP BY`'s CPU).
            owned.extend_from_slice(views);
            for row in (!nulls.inner()).set_indices() {
                owned[row] = u128::MAX;
            }
        }
        // Lossless as 64-bit integers: not UInt64, whose upper half would not cast.
        data_type
            if exact_equality(data_type)
                && !data_type.is_string()
                && !matches!(data_type, DataType::UInt64) =>
        {
            let values = cast(key, &DataType::Int64).ok()?;
            let values = values.as_primitive::<Int64Type>();
            owned.extend(
                values
                    .iter()
                    .map(|v| v.map_or(u128::MAX, |v| u128::from(v as u64))),
            );
        }
        _ => return None,
    }
    Some(None)
}

/// Buffers [`batch_groups`] reuses from batch to batch on a thread.
#[derive(Default)]
struct Scratch {
    owned: Vec<Vec<u128>>,
    hashes: Vec<u64>,
    group_hashes: Vec<u64>,
    table: hashbrown::HashTable<u32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Each distinct key tuple of a batch with its first row and count, by hashing the keys'
/// [`tokens`]; None where a key has none.
fn batch_groups(keys: &[ArrayRef]) -> Option<Tally> {
    SCRATCH.with(|scratch| {
        let scratch = &mut *scratch.borrow_mut();
        scratch.owned.resize_with(keys.len(), Vec::new);
        let mut borrowed = Vec::with_capacity(keys.len());
        for (key, owned) in keys.iter().zip(scratch.owned.iter_mut()) {
            borrowed.push(tokens(key, owned)?);
        }
        let columns: Vec<&[u128]> = borrowed
            .into_iter()
            .zip(scratch.owned.iter())
            .map(|(borrowed, owned)| borrowed.unwrap_or(&owned[..]))
            .collect();
        Some(group_tokens(
            &columns,
            &mut scratch.hashes,
            &mut scratch.group_hashes,
            &mut scratch.table,
        ))
    })
}

/// Rows [`group_tokens`] hashes before it looks them up: with six keys, 24 KiB of tokens.
const GROUP_CHUNK_ROWS: usize = 256;

/// The distinct tuples of `columns` (row-aligned token slices).
fn group_tokens(
    columns: &[&[u128]],
    hashes: &mut Vec<u64>,
    group_hashes: &mut Vec<u64>,
    table: &mut hashbrown::HashTable<u32>,
) -> Tally {
    let rows = columns.first().map_or(0, |c| c.len());
    // Each group's tuple, copied together: a few hundred groups fit in the first-level cache,
    // where comparing with the tokens of each group's first row read six places 128 KiB apart.
    let width = columns.len();
    let mut group_keys: Vec<u128> = Vec::new();
    let same = |group_keys: &[u128], group: usize, row: usize| {
        let key = &group_keys[group * width..(group + 1) * width];
        columns
            .iter()
            .zip(key)
            .all(|(column, &token)| column[row] == token)
    };
    let mut tally = Tally::default();
    group_hashes.clear();
    table.clear();
    let mut previous = usize::MAX;
    let mut previous_hash = 0;
    // A chunk of rows at a time, so that the tokens hashed are still in the first-level cache
    // when they are compared.
    for start in (0..rows).step_by(GROUP_CHUNK_ROWS) {
        let chunk = start..rows.min(start + GROUP_CHUNK_ROWS);
        // Column by column: tight loops over slices; then spread the low bits, which pick
        // hashbrown's bucket and which the multiply leaves weak (splitmix64's finalizer).
        hashes.clear();
        hashes.resize(chunk.len(), 0);
        for column in columns {
            for (hash, &token) in hashes.iter_mut().zip(&column[chunk.clone()]) {
                *hash = (hash.rotate_left(5) ^ (token as u64) ^ ((token >> 64) as u64))
                    .wrapping_mul(0x517c_c1b7_2722_0a95);
            }
        }
        for hash in hashes.iter_mut() {
            let mixed = (*hash ^ (*hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *hash = mixed ^ (mixed >> 31);
        }
        for (row, &hash) in chunk.zip(hashes.iter()) {
            // The row before's group, without a probe, when the tuple repeats.
            if previous != usize::MAX && hash == previous_hash && same(&group_keys, previous, row) {
                tally.counts[previous] += 1;
                continue;
            }
            let group = match table.find(hash, |&g| same(&group_keys, g as usize, row)) {
                Some(&group) => group as usize,
                None => {
                    let group = tally.firsts.len();
                    tally.firsts.push(row as u32);
                    tally.counts.push(0);
                    group_keys.extend(columns.iter().map(|column| column[row]));
                    group_hashes.push(hash);
                    table.insert_unique(hash, group as u32, |&g| group_hashes[g as usize]);
                    group
                }
            };
            tally.counts[group] += 1;
            previous = group;
            previous_hash = hash;
        }
    }
    tally
}

/// One partition that yields a stream already started (the batch looked at, then the rest).
struct Replay {
    stream: Mutex<Option<SendableRecordBatchStream>>,
    properties: Arc<PlanProperties>,
}

impl Replay {
    fn new(
        schema: SchemaRef,
        stream: impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            stream: Mutex::new(Some(Box::pin(RecordBatchStreamAdapter::new(
                schema, stream,
            )))),
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Replay")
    }
}

impl DisplayAs for Replay {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Replay")
    }
}

impl ExecutionPlan for Replay {
    fn name(&self) -> &str {
        "Replay"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            return Ok(self);
        }
        internal_err!("Replay has no children")
    }

    fn execute(&self, partition: usize, _: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let stream = self.stream.lock().ok().and_then(|mut s| s.take());
        match (partition, stream) {
            (0, Some(stream)) => Ok(stream),
            _ => internal_err!("Replay yields its one partition once"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Pages in runs (as the table's sort order leaves them) or shuffled, as views shared by
    /// equal rows (as a dictionary page decodes) with NULLs; a second key without tokens
    /// (`Utf8`), an integer in runs, a unique id and a float; in several batches and
    /// partitions.
    fn batches(sorted: bool) -> Vec<Vec<RecordBatch>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("page", DataType::Utf8View, true),
            Field::new("kind", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, false),
        ]));
        let pages: ArrayRef = Arc::new(StringViewArray::from(vec![
            Some("/"),
            Some("/pricing"),
            Some("/blog/a-long-path-name"),
            Some("/docs"),
            None,
        ]));
        let rows = |seed: usize| -> RecordBatch {
            let n = 300;
            let page = |i: usize| {
                let k = if sorted { i / 37 } else { i * 7 + seed };
                (k % 5) as u32
            };
            let page = take(
                pages.as_ref(),
                &UInt32Array::from_iter_values((0..n).map(page)),
                None,
            )
            .unwrap();
            let kind = |i: usize| {
                (!i.is_multiple_of(11)).then_some(if (i / 50).is_multiple_of(2) {
                    "page"
                } else {
                    "track"
                })
            };
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    page,
                    Arc::new(StringArray::from_iter((0..n).map(kind))),
                    Arc::new(Int64Array::from_iter_values(
                        (0..n).map(|i| (i / 90) as i64),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        (0..n).map(|i| (seed * 1000 + i) as i64),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        (0..n).map(|i| if i % 2 == 0 { 0.0 } else { -0.0 }),
                    )),
                ],
            )
            .unwrap()
        };
        vec![vec![rows(0), rows(1)], vec![rows(2)], vec![]]
    }

    async fn answer(rule: bool, sorted: bool, sql: &str) -> (Vec<String>, String) {
        let mut state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(3))
            .with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(RunCount));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let parts = batches(sorted);
        let schema = parts[0][0].schema();
        let table = MemTable::try_new(schema, parts).unwrap();
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
    async fn counts_over_runs_equal_the_hash_aggregate() {
        let cases = [
            // (query, answered by runs)
            ("SELECT page, count(*) FROM events GROUP BY page", true),
            (
                "SELECT page, count(*) AS views FROM events WHERE kind = 'page' \
                 GROUP BY page ORDER BY views DESC, page LIMIT 2",
                true,
            ),
            (
                "SELECT page, kind, count(*), count(1) FROM events GROUP BY page, kind",
                true,
            ),
            ("SELECT n, count(*) FROM events GROUP BY n", true),
            ("SELECT id, count(*) FROM events GROUP BY id", true),
            (
                "SELECT page, n, count(*) FROM events GROUP BY page, n",
                true,
            ),
            (
                "SELECT upper(page), count(*) FROM events GROUP BY upper(page)",
                true,
            ),
            // Floats, other aggregates, count of a column, a filter clause: the hash aggregate.
            ("SELECT x, count(*) FROM events GROUP BY x", false),
            (
                "SELECT page, count(*), max(n) FROM events GROUP BY page",
                false,
            ),
            ("SELECT page, count(kind) FROM events GROUP BY page", false),
            (
                "SELECT page, count(*) FILTER (WHERE n > 1) FROM events GROUP BY page",
                false,
            ),
            ("SELECT count(*) FROM events WHERE kind = 'page'", false),
        ];
        for sorted in [true, false] {
            for (sql, by_runs) in cases {
                let (ours, plan) = answer(true, sorted, sql).await;
                let (theirs, _) = answer(false, sorted, sql).await;
                assert_eq!(ours, theirs, "{sql}");
                assert!(ours.len() > 4, "{sql}: too few rows to tell");
                assert_eq!(plan.contains("RunCountExec"), by_runs, "{sql}\n{plan}");
            }
        }
    }

    #[test]
    fn runs_are_the_partition_kernels() {
        // Equal strings with the same view (taken from one buffer) and with views of their own
        // (built row by row), inline and not, equal prefixes, NULLs.
        let values = [
            Some("/blog/a-long-path-name"),
            Some("/blog/a-long-path-name"),
            Some("/blog/a-long-path-other"),
            None,
            None,
            Some(""),
            Some(""),
            Some("/short"),
            Some("/short"),
            Some("/shorter"),
            None,
            Some("/blog/a-long-path-name"),
        ];
        let own: ArrayRef = Arc::new(StringViewArray::from(values.to_vec()));
        let indices =
            UInt32Array::from_iter_values([0, 0, 1, 1, 2, 3, 3, 5, 5, 7, 8, 9, 10, 11, 11]);
        let shared = take(own.as_ref(), &indices, None).unwrap();
        let kinds: ArrayRef =
            Arc::new(StringArray::from_iter((0..15).map(|i| {
                (i % 6 != 5).then_some(if i < 8 { "page" } else { "track" })
            })));
        for keys in [
            vec![Arc::clone(&own)],
            vec![Arc::clone(&shared)],
            vec![Arc::clone(&shared), Arc::clone(&kinds)],
            vec![Arc::clone(&kinds)],
            // Sliced: the validity bits start mid-byte.
            vec![shared.slice(3, 11)],
        ] {
            let expected = arrow::compute::partition(&keys).unwrap().ranges();
            assert_eq!(runs_of(&keys).unwrap(), expected);
        }
    }

    /// Each way of counting has data that takes it: sorted pages their runs, shuffled pages
    /// each batch's groups, unique ids and keys without tokens the hash aggregate.
    #[test]
    fn the_test_data_covers_every_path() {
        let sorted = &batches(true)[0][0];
        let shuffled = &batches(false)[0][0];
        let rows = sorted.num_rows();
        let few = |tally: Option<Tally>| tally.map(|t| t.len() * MIN_RUN_ROWS <= rows);
        let column =
            |batch: &RecordBatch, name: &str| vec![Arc::clone(batch.column_by_name(name).unwrap())];
        let page = column(sorted, "page");
        assert_eq!(few(tally(Counting::Runs, &page).unwrap()), Some(true));
        let page = column(shuffled, "page");
        assert_eq!(few(tally(Counting::Runs, &page).unwrap()), Some(false));
        assert_eq!(
            few(tally(Counting::BatchGroups, &page).unwrap()),
            Some(true)
        );
        let id = column(sorted, "id");
        assert_eq!(few(tally(Counting::Runs, &id).unwrap()), Some(false));
        assert_eq!(few(tally(Counting::BatchGroups, &id).unwrap()), Some(false));
        let kind = column(shuffled, "kind");
        assert_eq!(few(tally(Counting::BatchGroups, &kind).unwrap()), None);
    }

    /// Batch groups are the distinct tuples: NULLs apart from empty strings and zeros, equal
    /// strings with views of their own counted apart but never merged with others.
    #[test]
    fn batch_groups_count_each_distinct_tuple() {
        let strings: ArrayRef = Arc::new(StringViewArray::from(vec![
            Some(""),
            None,
            Some("a-string-longer-than-12"),
            Some(""),
            None,
            None,
            Some("a-string-longer-than-12"),
            Some("a-string-longer-than-13"),
        ]));
        let numbers: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(0),
            Some(0),
            None,
            Some(0),
            Some(0),
            Some(0),
            None,
            None,
        ]));
        let tally = batch_groups(&[strings, numbers]).unwrap();
        // The two equal long strings were built apart: their views differ, two groups.
        assert_eq!(tally.firsts, vec![0, 1, 2, 6, 7]);
        assert_eq!(tally.counts, vec![2, 3, 1, 1, 1]);
    }

    #[test]
    fn batch_groups_match_a_map_of_tuples_across_chunks() {
        // Thousands of rows (many lookup chunks), tuples that repeat near and far, NULLs.
        let rows = 5_000;
        let names = StringViewArray::from(vec![
            Some("Chrome"),
            Some("a browser name past twelve bytes"),
            None,
            Some(""),
        ]);
        let pick = |row: usize| ((row / 3) * 7 + row % 5) as u32 % 4;
        let strings = take(
            &names,
            &UInt32Array::from_iter_values((0..rows).map(pick)),
            None,
        );
        let numbers: ArrayRef = Arc::new(Int64Array::from_iter(
            (0..rows).map(|row| (row % 11 != 0).then_some((row % 6) as i64)),
        ));
        let keys = [strings.unwrap(), numbers];
        let tally = batch_groups(&keys).unwrap();
        let mut expected: Vec<(u32, i64)> = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for row in 0..rows {
            let tuple = (
                keys[0]
                    .is_valid(row)
                    .then(|| keys[0].as_string_view().value(row)),
                keys[1].is_valid(row).then(|| {
                    keys[1]
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .value(row)
                }),
            );
            let group = *seen.entry(tuple).or_insert_with(|| {
                expected.push((row as u32, 0));
                expected.len() - 1
            });
            expected[group].1 += 1;
        }
        assert!(expected.len() > 20, "{} groups", expected.len());
        let ours: Vec<(u32, i64)> = tally.firsts.into_iter().zip(tally.counts).collect();
        assert_eq!(ours, expected);
    }

    /// A partition whose keys run in its first batch and stop repeating in a later one counts
    /// the first by runs and hands the rest to the hash aggregate, with the same answer.
    #[tokio::test]
    async fn keys_that_stop_repeating_go_to_the_hash_aggregate() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batch = |keys: Vec<i64>| {
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(keys))])
                .unwrap()
        };
        let runs = batch((0..2000).map(|i| i / 500).collect());
        let unique = batch((0..2000).map(|i| 10_000 + i).collect());
        let answer = |rule: bool| {
            let parts = vec![vec![runs.clone(), unique.clone()]];
            let schema = Arc::clone(&schema);
            async move {
                // Two partitions, so the aggregate is planned in two phases, but no round
                // robin: both batches stay in the one input partition, in order.
                let config = SessionConfig::new()
                    .with_target_partitions(2)
                    .with_round_robin_repartition(false);
                let mut state = SessionStateBuilder::new()
                    .with_config(config)
                    .with_default_features();
                if rule {
                    state = state.with_physical_optimizer_rule(Arc::new(RunCount));
                }
                let ctx = SessionContext::new_with_state(state.build());
                let table = MemTable::try_new(schema, parts).unwrap();
                ctx.register_table("t", Arc::new(table)).unwrap();
                let frame = ctx
                    .sql("SELECT k, count(*) AS n FROM t GROUP BY k ORDER BY k")
                    .await
                    .unwrap();
                let plan = frame.clone().create_physical_plan().await.unwrap();
                let task = ctx.task_ctx();
                let batches = datafusion::physical_plan::collect(Arc::clone(&plan), task)
                    .await
                    .unwrap();
                let mut counted_rows = None;
                datafusion::physical_plan::accept(
                    plan.as_ref(),
                    &mut RunCountRows(&mut counted_rows),
                )
                .unwrap();
                (batches, counted_rows)
            }
        };
        let (ours, counted_rows) = answer(true).await;
        let (theirs, _) = answer(false).await;
        assert_eq!(ours, theirs);
        assert_eq!(ours.iter().map(RecordBatch::num_rows).sum::<usize>(), 2004);
        // The four runs of the first batch; the second went to the hash aggregate.
        assert_eq!(counted_rows, Some(4));
    }

    /// The output rows [`RunCountExec`] counted itself.
    struct RunCountRows<'a>(&'a mut Option<usize>);

    impl datafusion::physical_plan::ExecutionPlanVisitor for RunCountRows<'_> {
        type Error = datafusion::error::DataFusionError;

        fn pre_visit(&mut self, plan: &dyn ExecutionPlan) -> Result<bool> {
            if plan.name() == "RunCountExec" {
                *self.0 = plan.metrics().and_then(|m| m.output_rows());
            }
            Ok(true)
        }
    }
}
