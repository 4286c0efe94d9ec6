//! How rows are laid out in Parquet: sort order and encoding settings.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use arrow::array::ArrayRef;
use arrow::compute::{concat, interleave_record_batch};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use logektor_event::schema::events_schema;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{
    EnabledStatistics, WriterProperties, WriterPropertiesBuilder, WriterVersion,
};

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
            // The keys in Arrow's row format, so each comparison is one memcmp rather than a
            // dynamic comparator per column (what a lexicographic sort of the columns does).
            // Ties keep their input order, so a flush's output does not depend on the sort.
            let rows = key_converter(&columns)?.convert_columns(&columns)?;
            let mut indices: Vec<usize> = (0..total).collect();
            indices.sort_unstable_by(|&a, &b| rows.row(a).cmp(&rows.row(b)).then(a.cmp(&b)));
            indices
                .into_iter()
                .map(|global| {
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
pub fn writer_properties() -> WriterProperties {
    builder(3, true).build()
}

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

fn builder(zstd_level: i32, id_dictionary: bool) -> WriterPropertiesBuilder {
    WriterProperties::builder()
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
