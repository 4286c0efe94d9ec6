//! How rows are laid out in Parquet: sort order and encoding settings.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use arrow::array::{Array, ArrayRef, AsArray, Date32Array, StringArray, TimestampMicrosecondArray};
use arrow::compute::{concat, interleave_record_batch};
use arrow::datatypes::{DataType, Date32Type, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use deltalake::DeltaTableError;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use indexmap::IndexMap;
use logektor_event::schema::{EVENT_DATE, events_schema};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{
    EnabledStatistics, WriterProperties, WriterPropertiesBuilder, WriterVersion,
};
use parquet::schema::types::ColumnPath;

use crate::Result;

/// Rows per Parquet row group: large enough for good compression and cheap metadata, small
/// enough that time-range filters skip most of a file (the figure Parseable, OpenObserve and
/// InfluxDB 3 settled on).
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Sort order inside each file: partition first (so the writer's split keeps runs together),
/// then the filters reports use most — source, event type, event name — then time. Equal
/// values then sit together, which makes dictionaries and run lengths compress well and lets
/// row-group and page statistics prune time ranges and event names.
pub(crate) const SORT_COLUMNS: &[&str] = &["event_date", "source", "type", "event", "timestamp"];

/// Sorts a batch for [`SORT_COLUMNS`] in one piece: the plain reference [`SortedRows`] is
/// tested against (writers use [`SortedRows`], which never copies all rows at once).
#[cfg(test)]
pub(crate) fn sort_for_layout(batch: &RecordBatch) -> Result<RecordBatch> {
    use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
    if batch.num_rows() <= 1 {
        return Ok(batch.clone());
    }
    let columns = SORT_COLUMNS
        .iter()
        .filter_map(|name| batch.column_by_name(name))
        .map(|values| SortColumn {
            values: std::sync::Arc::clone(values),
            options: None,
        })
        .collect::<Vec<_>>();
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// Rows per piece handed to the Parquet writer by [`SortedRows::chunks`].
pub const WRITE_CHUNK_ROWS: usize = 16 * 1024;

/// Many batches in [`SORT_COLUMNS`] order without concatenating them: only the sort keys are
/// gathered and sorted; the rows themselves are copied a chunk at a time, straight from the
/// input batches into the writer. A flush used to concatenate the buffer, then copy it again
/// sorted, then once more split by date: three full copies of ~100 MB each second, whose page
/// faults alone took an eighth of the server's CPU (benches/README.md).
pub struct SortedRows<'a> {
    batches: &'a [RecordBatch],
    /// `(batch, row)` in sorted order.
    order: Vec<(usize, usize)>,
}

impl<'a> SortedRows<'a> {
    /// Sorts the rows of `batches`, which share one schema.
    pub fn new(batches: &'a [RecordBatch]) -> Result<Self> {
        let batches_with_rows: Vec<usize> = (0..batches.len())
            .filter(|&i| batches[i].num_rows() > 0)
            .collect();
        let mut starts = Vec::with_capacity(batches.len());
        let mut total = 0;
        for batch in batches {
            starts.push(total);
            total += batch.num_rows();
        }
        let order = if total <= 1 || batches_with_rows.is_empty() {
            batches_with_rows
                .iter()
                .flat_map(|&b| (0..batches[b].num_rows()).map(move |r| (b, r)))
                .collect()
        } else {
            let sorted = match packed_order(batches, total) {
                Some(sorted) => sorted,
                None => row_format_order(batches, total)?,
            };
            sorted
                .into_iter()
                .map(|global| {
                    let global = global as usize;
                    let batch = starts.partition_point(|&start| start <= global) - 1;
                    (batch, global - starts[batch])
                })
                .collect()
        };
        Ok(Self { batches, order })
    }

    pub fn num_rows(&self) -> usize {
        self.order.len()
    }

    /// The sorted rows in batches of at most `rows`.
    pub fn chunks(&self, rows: usize) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        self.order
            .chunks(rows.max(1))
            .map(move |chunk| Ok(interleave_record_batch(&refs, chunk)?))
    }
}

/// The [`SORT_COLUMNS`] order of any rows, as indices into their concatenation: the keys in
/// Arrow's row format, so each comparison is one memcmp rather than a dynamic comparator per
/// column (what a lexicographic sort of the columns does). Ties keep their input order, so a
/// flush's output does not depend on the sort.
fn row_format_order(batches: &[RecordBatch], total: usize) -> Result<Vec<u32>> {
    let mut columns = Vec::with_capacity(SORT_COLUMNS.len());
    for name in SORT_COLUMNS {
        let parts: Vec<&ArrayRef> = batches
            .iter()
            .filter_map(|batch| batch.column_by_name(name))
            .collect();
        if parts.len() != batches.len() {
            continue;
        }
        let refs: Vec<&dyn arrow::array::Array> =
            parts.iter().map(|array| array.as_ref()).collect();
        columns.push(concat(&refs)?);
    }
    let rows = key_converter(&columns)?.convert_columns(&columns)?;
    let total = u32::try_from(total).map_err(|_| {
        arrow::error::ArrowError::InvalidArgumentError(format!("{total} rows to sort at once"))
    })?;
    let mut indices: Vec<u32> = (0..total).collect();
    indices.sort_unstable_by(|&a, &b| {
        rows.row(a as usize)
            .cmp(&rows.row(b as usize))
            .then(a.cmp(&b))
    });
    Ok(indices)
}

/// [`row_format_order`] for rows of the canonical schema, from keys packed into one integer
/// per row: the date, the rank of the row's `(source, type, event)` among the distinct
/// ones (a few dozen), and the timestamp, each mapped so that integer order is their order
/// (strings bytewise, a missing event first, as in Arrow's row format, which [`SortedMerge`]
/// compares by). Ties keep their input order. Sorting 16-byte integers instead of ~100-byte
/// row-format keys behind an index halved the sort's share of the server's CPU at full load
/// (flat profile: ~1.3% to ~0.6%), and it builds no row-format copy of the key columns.
///
/// `None` when a batch is not of the canonical schema or a key column has nulls where the
/// schema has none: the caller then sorts by the row format, which handles anything.
fn packed_order(batches: &[RecordBatch], total: usize) -> Option<Vec<u32>> {
    // The packing below names the five keys one by one: a changed key list must change it.
    const _: () = assert!(SORT_COLUMNS.len() == 5);
    type Keys<'a> = (
        &'a Date32Array,
        &'a StringArray,
        &'a StringArray,
        &'a StringArray,
        &'a TimestampMicrosecondArray,
    );
    let keys: Vec<Keys<'_>> = batches
        .iter()
        .map(|batch| {
            let column = |name: &str| batch.column_by_name(name);
            let keys = (
                column(SORT_COLUMNS[0])?.as_primitive_opt::<Date32Type>()?,
                column(SORT_COLUMNS[1])?.as_string_opt::<i32>()?,
                column(SORT_COLUMNS[2])?.as_string_opt::<i32>()?,
                column(SORT_COLUMNS[3])?.as_string_opt::<i32>()?,
                column(SORT_COLUMNS[4])?.as_primitive_opt::<TimestampMicrosecondType>()?,
            );
            let nulls = keys.0.null_count()
                + keys.1.null_count()
                + keys.2.null_count()
                + keys.4.null_count();
            (nulls == 0).then_some(keys)
        })
        .collect::<Option<_>>()?;
    if u32::try_from(total).is_err() {
        return None;
    }
    // Distinct (source, type, event) by first appearance, and each row's.
    type Group<'a> = (&'a str, &'a str, Option<&'a str>);
    let mut groups: HashMap<Group<'_>, u32> = HashMap::new();
    let mut group_of_row: Vec<u32> = Vec::with_capacity(total);
    for (_, sources, types, events, _) in &keys {
        let mut last: Option<(Group<'_>, u32)> = None;
        for row in 0..sources.len() {
            let event = events.is_valid(row).then(|| events.value(row));
            let group = (sources.value(row), types.value(row), event);
            let id = match last {
                Some((previous, id)) if previous == group => id,
                _ => {
                    let next = groups.len() as u32;
                    *groups.entry(group).or_insert(next)
                }
            };
            last = Some((group, id));
            group_of_row.push(id);
        }
    }
    let mut distinct: Vec<_> = groups.into_iter().collect();
    distinct.sort_unstable();
    let mut rank = vec![0u32; distinct.len()];
    for (position, (_, id)) in distinct.iter().enumerate() {
        rank[*id as usize] = position as u32;
    }
    // Sign bits flipped: two's complement order becomes unsigned order.
    let mut packed: Vec<(u128, u32)> = Vec::with_capacity(total);
    let mut global = 0usize;
    for (dates, _, _, _, timestamps) in &keys {
        for row in 0..dates.len() {
            let day = (dates.value(row) as u32 ^ (1 << 31)) as u128;
            let group = rank[group_of_row[global] as usize] as u128;
            let time = (timestamps.value(row) as u64 ^ (1 << 63)) as u128;
            packed.push(((day << 96) | (group << 64) | time, global as u32));
            global += 1;
        }
    }
    packed.sort_unstable();
    Some(packed.into_iter().map(|(_, global)| global).collect())
}

/// Hands `chunk` to `writer` one run of equal `event_date` at a time, as zero-copy slices
/// with their partition value. `RecordBatchWriter::write` would group every chunk by its
/// partition values itself, with a row-format sort and a `take` of every column: a full copy
/// of each chunk (3.3% of the server's CPU at full load), although the rows arrive sorted by
/// date and a flush chunk nearly always holds a single one. Rows need not be sorted: a date
/// that comes back in a later run goes to the same file. `partition_columns` are the table's:
/// a table not partitioned by `event_date` alone (one another tool created) is left to
/// delta-rs.
pub(crate) async fn write_partition_runs(
    writer: &mut RecordBatchWriter,
    partition_columns: &[String],
    chunk: RecordBatch,
) -> Result<()> {
    let Some(dates) = chunk
        .column_by_name(EVENT_DATE)
        .and_then(|column| column.as_primitive_opt::<Date32Type>())
        .filter(|dates| dates.null_count() == 0 && partition_columns == [EVENT_DATE])
        .cloned()
    else {
        // Not the canonical layout: let delta-rs group it (and refuse it if it must).
        return Ok(writer.write(chunk).await?);
    };
    let values = dates.values();
    let mut start = 0;
    while start < values.len() {
        let day = values[start];
        let end = start + values[start..].iter().take_while(|&&v| v == day).count();
        let partition = IndexMap::from([(
            EVENT_DATE.to_owned(),
            ScalarExt::from_array(&dates, start)
                .ok_or_else(|| DeltaTableError::generic("event_date has no partition value"))?,
        )]);
        writer
            .write_partition(
                chunk.slice(start, end - start),
                &partition,
                WriteMode::Default,
            )
            .await?;
        start = end;
    }
    Ok(())
}

/// A converter of the sort key `columns` into Arrow's row format, ascending.
pub(crate) fn key_converter(columns: &[ArrayRef]) -> Result<RowConverter> {
    Ok(RowConverter::new(
        columns
            .iter()
            .map(|column| SortField::new(column.data_type().clone()))
            .collect(),
    )?)
}

/// What [`SortedMerge::next_chunk`] yields.
pub enum Merged {
    /// The next rows in order.
    Chunk(RecordBatch),
    /// Every input is used up.
    Done,
    /// An input was not in [`SORT_COLUMNS`] order (a file written by another tool): the merge
    /// cannot continue; sort the inputs whole instead ([`SortedRows`]).
    Unsorted,
}

/// Inputs that are each already in [`SORT_COLUMNS`] order (every file a flush or compaction
/// writes is) merged into that order a chunk at a time. Memory holds the current batch of each
/// input and the rows of the chunk being gathered, not all the inputs' rows: compaction used to
/// decode a whole bin (up to 500k rows, ~1 KB of Arrow memory each) to sort it, which took the
/// server's RSS from ~600 MiB to 1.5 GiB while it ran. Ties go to the earlier input, so the
/// order is the one [`SortedRows`] gives the same rows.
pub struct SortedMerge<I> {
    inputs: Vec<MergeInput<I>>,
    /// Batches the inputs are reading and those the pending chunk still points into.
    arena: Vec<RecordBatch>,
    /// `(key of the input's current row, input)`, smallest first.
    heap: BinaryHeap<Reverse<(OwnedRow, usize)>>,
    converter: Option<RowConverter>,
    started: bool,
}

struct MergeInput<I> {
    batches: I,
    /// The batch being read: its index in the arena, its keys, and the next row.
    current: Option<(usize, Rows, usize)>,
}

impl<I: Iterator<Item = Result<RecordBatch>>> SortedMerge<I> {
    pub fn new(inputs: Vec<I>) -> Self {
        Self {
            inputs: inputs
                .into_iter()
                .map(|batches| MergeInput {
                    batches,
                    current: None,
                })
                .collect(),
            arena: Vec::new(),
            heap: BinaryHeap::new(),
            converter: None,
            started: false,
        }
    }

    /// The next at most `rows` rows in order.
    pub fn next_chunk(&mut self, rows: usize) -> Result<Merged> {
        if !self.started {
            self.started = true;
            for input in 0..self.inputs.len() {
                if !self.advance_batch(input)? {
                    return Ok(Merged::Unsorted);
                }
            }
        }
        let mut picks = Vec::with_capacity(rows.max(1));
        while picks.len() < rows.max(1) {
            let Some(Reverse((key, input))) = self.heap.pop() else {
                break;
            };
            let (slot, keys, row) = self.inputs[input]
                .current
                .as_mut()
                .expect("an input in the heap has a batch");
            picks.push((*slot, *row));
            *row += 1;
            if *row < keys.num_rows() {
                // In order: `advance_batch` checked the batch.
                self.heap.push(Reverse((keys.row(*row).owned(), input)));
            } else {
                let last = key;
                if !self.advance_batch(input)? {
                    return Ok(Merged::Unsorted);
                }
                if let Some((_, keys, _)) = &self.inputs[input].current
                    && keys.row(0) < last.row()
                {
                    return Ok(Merged::Unsorted);
                }
            }
        }
        if picks.is_empty() {
            return Ok(Merged::Done);
        }
        let refs: Vec<&RecordBatch> = self.arena.iter().collect();
        let chunk = interleave_record_batch(&refs, &picks)?;
        self.release_spent_batches();
        Ok(Merged::Chunk(chunk))
    }

    /// Moves `input` to its next non-empty batch and puts its first row in the heap; `false`
    /// when that batch is not sorted in itself.
    fn advance_batch(&mut self, input: usize) -> Result<bool> {
        self.inputs[input].current = None;
        for batch in self.inputs[input].batches.by_ref() {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let keys = self.keys(&batch)?;
            if (1..keys.num_rows()).any(|row| keys.row(row) < keys.row(row - 1)) {
                return Ok(false);
            }
            self.heap.push(Reverse((keys.row(0).owned(), input)));
            self.arena.push(batch);
            self.inputs[input].current = Some((self.arena.len() - 1, keys, 0));
            break;
        }
        Ok(true)
    }

    /// The sort keys of `batch` in Arrow's row format.
    fn keys(&mut self, batch: &RecordBatch) -> Result<Rows> {
        let columns: Vec<ArrayRef> = SORT_COLUMNS
            .iter()
            .filter_map(|name| batch.column_by_name(name).cloned())
            .collect();
        if self.converter.is_none() {
            self.converter = Some(key_converter(&columns)?);
        }
        let converter = self.converter.as_ref().expect("set above");
        Ok(converter.convert_columns(&columns)?)
    }

    /// Drops the batches no input is reading any more (the chunk that used them is built).
    fn release_spent_batches(&mut self) {
        let mut kept = Vec::with_capacity(self.inputs.len());
        for input in &mut self.inputs {
            if let Some((slot, _, _)) = input.current.as_mut() {
                kept.push(self.arena[*slot].clone());
                *slot = kept.len() - 1;
            }
        }
        self.arena = kept;
    }
}

/// Parquet settings for the files compaction, imports and deletes write: these stay.
///
/// Visitor ids and page URLs repeat within a row group but hold more distinct bytes than the
/// default 1 MiB dictionary page (a row group of 131,072 events has ~2 MB of distinct
/// `anonymous_id`s), so their dictionaries filled up and the rest of each row group fell back
/// to `DELTA_BYTE_ARRAY`. With room for the whole row group's values, equal values stay one
/// dictionary entry: fewer bytes, cheaper decoding, and readers that decode a dictionary page
/// into views give equal rows the same view (which `LIKE` and grouped counts exploit).
///
/// zstd level 6: the JSON columns (`context`, `properties`) are half the bytes, and level 6
/// stores them ~10% smaller than level 3; reading costs the same at any level.
pub fn writer_properties() -> WriterProperties {
    let mut builder = builder(COMPACTED_ZSTD_LEVEL, true);
    for column in REPEATING_TEXT {
        builder = builder.set_column_dictionary_page_size_limit(
            (*column).into(),
            REPEATING_TEXT_DICTIONARY_BYTES,
        );
    }
    builder.build()
}

/// The zstd level of the files that stay (see [`writer_properties`]).
const COMPACTED_ZSTD_LEVEL: i32 = 6;

/// Text columns whose values repeat but whose distinct values overflow a 1 MiB dictionary.
const REPEATING_TEXT: &[&str] = &["anonymous_id", "page_url"];

/// The dictionary page limit of [`REPEATING_TEXT`] columns.
const REPEATING_TEXT_DICTIONARY_BYTES: usize = 8 << 20;

/// Parquet settings for the files a flush writes. They live only until compaction merges them
/// (minutes), so they are written for speed: zstd level 1 (level 3 took a fifth of a flush's
/// CPU), no dictionary for the message id, which is unique per row, so its dictionary only
/// cost hashing every id before being abandoned, and `PLAIN` as the fallback encoding of text
/// columns. The format-2 default fallback, `DELTA_BYTE_ARRAY`, makes every text column writer
/// reserve two 1 MiB buffers up front: 33 columns × 2 MiB of fresh pages for each row group,
/// every second, which was 2.5% of the server's CPU at full load (page faults) and a large part
/// of a flush's heap. Compaction rewrites the files with [`writer_properties`].
pub fn flush_writer_properties() -> WriterProperties {
    let mut builder = builder(1, false);
    for field in events_schema().fields() {
        if matches!(field.data_type(), DataType::Utf8 | DataType::Utf8View) {
            builder = builder.set_column_encoding(field.name().as_str().into(), Encoding::PLAIN);
        }
    }
    builder.build()
}

/// False-positive rate of the `message_id` bloom filters. Sized for a whole row group and folded
/// down to the ids it holds: ~1.2 bytes per event.
const ID_BLOOM_FPP: f64 = 0.01;

/// Columns written without statistics: the JSON documents, which filters search inside
/// (`json_as_text(properties, 'plan') = 'pro'`), so no filter can use their value ranges.
/// Their page minimums and maximums cost a comparison of each long value (a `memcmp` under
/// Parquet's byte-array encoder, 1.8% of the server's CPU at full ingest load; without them
/// the server took ~3% less CPU per event) and bytes in every file's column index and every
/// Delta log entry. Message ids keep theirs: random ones need the bloom filter below, but ids
/// that grow with time (UUIDv7, `prefix-time-n`) let a lookup skip files by their range.
const WITHOUT_STATISTICS: &[&str] = &["properties", "traits", "context"];

/// Settings both kinds of files share.
///
/// Timestamps are mostly distinct (milliseconds), so a dictionary held nearly every value
/// once more: 6.0 bytes per event for `timestamp` on the benchmark table. Sorted by time
/// within each event name, they differ little from their neighbours, and
/// `DELTA_BINARY_PACKED` stores those differences: 3.6 bytes per event, and reading is twice as
/// fast (no dictionary to gather from).
fn builder(zstd_level: i32, id_dictionary: bool) -> WriterPropertiesBuilder {
    let mut builder = WriterProperties::builder();
    for field in events_schema().fields() {
        if matches!(field.data_type(), DataType::Timestamp(..)) {
            let column = ColumnPath::from(field.name().as_str());
            builder = builder
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_encoding(column, Encoding::DELTA_BINARY_PACKED);
        }
    }
    for column in WITHOUT_STATISTICS {
        builder = builder.set_column_statistics_enabled((*column).into(), EnabledStatistics::None);
    }
    builder
        .set_column_dictionary_enabled("message_id".into(), id_dictionary)
        // Ids are random, so min/max statistics cannot rule a row group out for a lookup by id
        // (`message_id = '…'`: did my event arrive?); a bloom filter can, and DataFusion reads it.
        .set_column_bloom_filter_enabled("message_id".into(), true)
        .set_column_bloom_filter_fpp("message_id".into(), ID_BLOOM_FPP)
        .set_column_bloom_filter_max_ndv("message_id".into(), ROW_GROUP_ROWS as u64)
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(zstd_level).expect("valid zstd level"),
        ))
        .set_dictionary_enabled(true)
        // Page-level statistics also write the column index, which DataFusion uses to skip pages.
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{new_empty_array, new_null_array};

    use super::*;

    /// Rows of the canonical schema with the given sort keys and nothing else.
    fn keyed(rows: &[(i32, &str, &str, Option<&str>, i64)]) -> RecordBatch {
        let schema = events_schema();
        let columns = schema
            .fields()
            .iter()
            .map(|field| -> ArrayRef {
                let strings =
                    |values: Vec<Option<&str>>| Arc::new(StringArray::from(values)) as ArrayRef;
                match field.name().as_str() {
                    "event_date" => {
                        Arc::new(Date32Array::from_iter_values(rows.iter().map(|row| row.0)))
                    }
                    "source" => strings(rows.iter().map(|row| Some(row.1)).collect()),
                    "type" => strings(rows.iter().map(|row| Some(row.2)).collect()),
                    "event" => strings(rows.iter().map(|row| row.3).collect()),
                    "message_id" => strings(vec![Some("id"); rows.len()]),
                    "timestamp" | "received_at" => Arc::new(
                        TimestampMicrosecondArray::from_iter_values(rows.iter().map(|row| row.4))
                            .with_timezone("UTC"),
                    ),
                    _ if rows.is_empty() => new_empty_array(field.data_type()),
                    _ => new_null_array(field.data_type(), rows.len()),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn packed_keys_sort_exactly_as_the_row_format_does() {
        // Prefixes, empty strings, a missing event, negative and extreme values, many ties.
        let dates = [i32::MIN, -3, 0, 19_800, i32::MAX];
        let sources = ["web", "w", "web2", ""];
        let types = ["page", "track", "identify"];
        let events = [None, Some(""), Some("a"), Some("ab"), Some("b")];
        let times = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let mut state = 7u64;
        let mut pick = |n: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize % n
        };
        let mut batches = Vec::new();
        for size in [300, 0, 1, 700] {
            let rows: Vec<_> = (0..size)
                .map(|_| {
                    (
                        dates[pick(dates.len())],
                        sources[pick(sources.len())],
                        types[pick(types.len())],
                        events[pick(events.len())],
                        times[pick(times.len())],
                    )
                })
                .collect();
            batches.push(keyed(&rows));
        }
        let packed = packed_order(&batches, 1001).expect("the canonical schema");
        assert_eq!(packed, row_format_order(&batches, 1001).unwrap());
        // Not the canonical types: the row format decides.
        let views = RecordBatch::try_new(
            Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("source", DataType::Utf8View, false),
            ])),
            vec![Arc::new(arrow::array::StringViewArray::from(vec![
                "b", "a",
            ]))],
        )
        .unwrap();
        assert_eq!(packed_order(std::slice::from_ref(&views), 2), None);
        assert_eq!(
            row_format_order(std::slice::from_ref(&views), 2).unwrap(),
            vec![1, 0]
        );
    }

    /// Visitor ids and URLs whose distinct values overflow a 1 MiB dictionary stay dictionary
    /// encoded in the files that stay; another text column of the same values falls back.
    #[test]
    fn repeating_text_keeps_its_dictionary_past_one_mebibyte() {
        use arrow::datatypes::{Field, Schema};
        use parquet::arrow::ArrowWriter;
        use parquet::file::reader::{FileReader, SerializedFileReader};

        // 40,000 distinct 36-byte values (1.4 MB), each twice.
        let values: Vec<String> = (0..80_000)
            .map(|i| {
                format!(
                    "{:08x}-0000-4000-8000-{:012x}",
                    i % 40_000,
                    (i % 40_000) * 7919
                )
            })
            .collect();
        let column = || Arc::new(StringArray::from(values.clone())) as ArrayRef;
        let names = ["anonymous_id", "page_url", "context"];
        let schema = Arc::new(Schema::new(
            names
                .iter()
                .map(|name| Field::new(*name, DataType::Utf8, false))
                .collect::<Vec<_>>(),
        ));
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![column(), column(), column()]).unwrap();
        let mut bytes = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut bytes, schema, Some(writer_properties())).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();

        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let row_group = reader.metadata().row_group(0);
        let fell_back = |name: &str| {
            let chunk = row_group
                .columns()
                .iter()
                .find(|chunk| chunk.column_path().string() == name)
                .unwrap();
            chunk.encodings().any(|e| e == Encoding::DELTA_BYTE_ARRAY)
        };
        assert!(!fell_back("anonymous_id"));
        assert!(!fell_back("page_url"));
        assert!(
            fell_back("context"),
            "the values do overflow the default dictionary"
        );
    }

    /// Timestamps, which rarely repeat, are stored as packed differences in both kinds of
    /// files, with no dictionary, and read back as written.
    #[test]
    fn timestamps_are_delta_packed_without_a_dictionary() {
        use arrow::datatypes::{Field, Schema};
        use logektor_event::schema::timestamp_type;
        use parquet::arrow::ArrowWriter;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        // Runs of rising milliseconds, as the sort order leaves them, with nulls in `sent_at`.
        let micros: Vec<i64> = (0..50_000i64)
            .map(|i| 1_714_600_000_000_000 + (i % 977) * 3_600_000_000 / 977 + i / 977 * 1_000)
            .collect();
        let stamps = TimestampMicrosecondArray::from(micros.clone()).with_timezone("UTC");
        let sent = TimestampMicrosecondArray::from(
            micros
                .iter()
                .map(|&m| (m % 3 != 0).then_some(m - 250_000))
                .collect::<Vec<_>>(),
        )
        .with_timezone("UTC");
        let schema = Arc::new(Schema::new(vec![
            Field::new("timestamp", timestamp_type(), false),
            Field::new("sent_at", timestamp_type(), true),
        ]));
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(stamps), Arc::new(sent)])
                .unwrap();
        for properties in [writer_properties(), flush_writer_properties()] {
            let mut bytes = Vec::new();
            let mut writer =
                ArrowWriter::try_new(&mut bytes, Arc::clone(&schema), Some(properties)).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();

            let reader =
                ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
            for chunk in reader.metadata().row_group(0).columns() {
                let encodings: Vec<Encoding> = chunk.encodings().collect();
                assert!(
                    encodings.contains(&Encoding::DELTA_BINARY_PACKED),
                    "{}: {encodings:?}",
                    chunk.column_path()
                );
                assert!(
                    chunk.dictionary_page_offset().is_none(),
                    "{}: {encodings:?}",
                    chunk.column_path()
                );
            }
            let read: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
            let read = arrow::compute::concat_batches(&schema, &read).unwrap();
            assert_eq!(read, batch);
        }
    }
}
