//! The in-memory buffer: acknowledged batches not yet in the table, visible to SQL.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use logektor_query::{EventsSource, EventsView};
use logektor_table::TableSnapshot;

/// [`Buffer::coalesce`] merges batches of fewer rows than this (one request's, typically).
const SMALL_BATCH_ROWS: usize = 4096;

/// [`Buffer::coalesce`] merges up to this many rows into one batch.
const MERGED_BATCH_ROWS: usize = 64 * 1024;

/// Sizes of what the buffer holds, for flush triggers, back-pressure and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferStats {
    pub rows: usize,
    pub bytes: usize,
    pub batches: usize,
    /// When the oldest buffered batch arrived.
    pub oldest: Option<Instant>,
}

struct Chunk {
    seq: u64,
    batch: RecordBatch,
    bytes: usize,
    arrived: Instant,
}

struct Inner {
    chunks: VecDeque<Chunk>,
    table: TableSnapshot,
    stats: BufferStats,
}

/// Buffered batches keyed by WAL sequence number, plus the table snapshot readers pair them
/// with. Both sit behind one lock so a reader always gets a consistent pair.
pub struct Buffer {
    inner: Mutex<Inner>,
}

impl Buffer {
    pub fn new(table: TableSnapshot) -> Self {
        Self {
            inner: Mutex::new(Inner {
                chunks: VecDeque::new(),
                table,
                stats: BufferStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("buffer lock poisoned")
    }

    /// Adds batches in WAL order (called by the WAL thread after each fsync).
    pub fn push(&self, items: impl IntoIterator<Item = (u64, RecordBatch)>) {
        let now = Instant::now();
        let mut inner = self.lock();
        for (seq, batch) in items {
            debug_assert!(
                inner.chunks.back().is_none_or(|last| last.seq < seq),
                "WAL order"
            );
            let bytes = batch.get_array_memory_size();
            inner.stats.rows += batch.num_rows();
            inner.stats.bytes += bytes;
            inner.stats.batches += 1;
            inner.stats.oldest.get_or_insert(now);
            inner.chunks.push_back(Chunk {
                seq,
                batch,
                bytes,
                arrived: now,
            });
        }
    }

    pub fn stats(&self) -> BufferStats {
        self.lock().stats
    }

    /// Everything not yet committed, and the highest WAL sequence it covers.
    pub fn pending(&self) -> Option<(Vec<RecordBatch>, u64)> {
        let inner = self.lock();
        let committed = inner.table.committed_seq();
        let batches: Vec<RecordBatch> = inner
            .chunks
            .iter()
            .filter(|chunk| chunk.seq > committed)
            .map(|chunk| chunk.batch.clone())
            .collect();
        let through = inner.chunks.back()?.seq;
        (!batches.is_empty()).then_some((batches, through))
    }

    /// Installs a newer table snapshot and forgets the batches it now holds. Readers switch to
    /// the new snapshot and lose those batches in the same step.
    pub fn install_snapshot(&self, table: TableSnapshot) {
        let mut inner = self.lock();
        let committed = table.committed_seq();
        inner.table = table;
        while inner
            .chunks
            .front()
            .is_some_and(|chunk| chunk.seq <= committed)
        {
            let chunk = inner.chunks.pop_front().expect("front exists");
            inner.stats.rows -= chunk.batch.num_rows();
            inner.stats.bytes -= chunk.bytes;
            inner.stats.batches -= 1;
        }
        inner.stats.oldest = inner.chunks.front().map(|chunk| chunk.arrived);
    }

    /// Merges runs of small buffered batches (one per request, ~100 rows) into large ones.
    /// Returns how many batches were merged away.
    ///
    /// Why: a request's batch lives until its flush, ~1 s, in dozens of small allocations that
    /// share allocator pages with the request's short-lived ones, so freeing it leaves pages
    /// partly used and the process's memory climbs; a large batch is a few large allocations
    /// returned whole. The flush and every query also read a few large batches instead of
    /// thousands of small ones.
    ///
    /// **Call it only while no flush is in flight** (the ingester holds its writer lock). A
    /// flush writes the batches through some sequence number and then forgets exactly those;
    /// a merged batch spanning that number would be forgotten whole or kept whole, losing rows
    /// or writing them twice. A merged batch takes the last sequence number it covers.
    pub fn coalesce(&self) -> usize {
        // Choose the runs under the lock and concatenate without it: the WAL thread keeps
        // appending meanwhile, behind the chosen chunks, and nothing else removes chunks.
        let runs: Vec<(u64, Vec<RecordBatch>)> = {
            let inner = self.lock();
            let mut runs = Vec::new();
            let mut run: Vec<&Chunk> = Vec::new();
            let mut rows = 0;
            let mut close = |run: &mut Vec<&Chunk>| {
                if run.len() > 1 {
                    let batches = run.iter().map(|chunk| chunk.batch.clone()).collect();
                    runs.push((run[0].seq, batches));
                }
                run.clear();
            };
            for chunk in &inner.chunks {
                let n = chunk.batch.num_rows();
                if n >= SMALL_BATCH_ROWS || rows + n > MERGED_BATCH_ROWS {
                    close(&mut run);
                    rows = 0;
                }
                if n < SMALL_BATCH_ROWS {
                    run.push(chunk);
                    rows += n;
                }
            }
            close(&mut run);
            runs
        };
        if runs.is_empty() {
            return 0;
        }
        let merged: Vec<(u64, usize, RecordBatch)> = runs
            .into_iter()
            .filter_map(|(first, batches)| {
                let batch = concat_batches(&batches[0].schema(), &batches)
                    // Every buffered batch has the buffer's one schema.
                    .inspect_err(|err| tracing::warn!(error = %err, "could not merge batches"))
                    .ok()?;
                Some((first, batches.len(), batch))
            })
            .collect();
        let mut inner = self.lock();
        let mut old = std::mem::take(&mut inner.chunks).into_iter();
        let mut chunks = VecDeque::with_capacity(old.len());
        let mut merged = merged.into_iter().peekable();
        let mut merged_away = 0;
        while let Some(chunk) = old.next() {
            let Some((_, count, batch)) = merged.next_if(|(first, _, _)| *first == chunk.seq)
            else {
                chunks.push_back(chunk);
                continue;
            };
            // The run's other chunks follow it in order: only a flush removes chunks.
            let mut parts = vec![chunk];
            parts.extend(old.by_ref().take(count - 1));
            let last = parts.last().expect("one at least");
            let bytes = batch.get_array_memory_size();
            inner.stats.bytes =
                inner.stats.bytes + bytes - parts.iter().map(|c| c.bytes).sum::<usize>();
            inner.stats.batches -= parts.len() - 1;
            merged_away += parts.len() - 1;
            chunks.push_back(Chunk {
                seq: last.seq,
                batch,
                bytes,
                arrived: parts[0].arrived,
            });
        }
        debug_assert!(merged.next().is_none(), "every run was found");
        inner.chunks = chunks;
        merged_away
    }

    /// The current table snapshot.
    pub fn table(&self) -> TableSnapshot {
        self.lock().table.clone()
    }
}

impl EventsSource for Buffer {
    fn view(&self) -> EventsView {
        let inner = self.lock();
        let committed = inner.table.committed_seq();
        EventsView {
            table: inner.table.clone(),
            buffered: inner
                .chunks
                .iter()
                .filter(|chunk| chunk.seq > committed)
                .map(|chunk| chunk.batch.clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use logektor_table::{EventTable, TableLocation};

    use super::*;

    fn batch(first: i64, rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let values = Int64Array::from_iter_values(first..first + rows as i64);
        RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap()
    }

    fn values(buffer: &Buffer) -> (Vec<usize>, Vec<i64>) {
        let batches = buffer.view().buffered;
        let sizes = batches.iter().map(RecordBatch::num_rows).collect();
        let values = batches
            .iter()
            .flat_map(|b| {
                let column = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                column.values().to_vec()
            })
            .collect();
        (sizes, values)
    }

    async fn empty_buffer(dir: &std::path::Path) -> Buffer {
        let location = TableLocation::local(dir).unwrap();
        let table = EventTable::open_or_create(&location, "test").await.unwrap();
        Buffer::new(table.snapshot())
    }

    #[tokio::test]
    async fn coalesce_merges_runs_of_small_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = empty_buffer(dir.path()).await;
        // Ten requests, one large batch (a replayed record, say), three more requests.
        let mut seq = 0;
        let mut next = 0;
        let mut push = |rows: usize| {
            seq += 1;
            buffer.push([(seq, batch(next, rows))]);
            next += rows as i64;
        };
        for _ in 0..10 {
            push(100);
        }
        push(5000);
        for _ in 0..3 {
            push(7);
        }
        let (_, before) = values(&buffer);
        let stats = buffer.stats();
        assert_eq!(buffer.coalesce(), 9 + 2);
        let (sizes, after) = values(&buffer);
        assert_eq!(sizes, [1000, 5000, 21]);
        assert_eq!(after, before, "same rows, same order");
        let merged = buffer.stats();
        assert_eq!((merged.rows, merged.batches), (stats.rows, 3));
        assert_eq!(merged.oldest, stats.oldest);
        assert_eq!(
            merged.bytes,
            buffer
                .view()
                .buffered
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum::<usize>()
        );
        // The merged batches keep the last sequence number they cover.
        let seqs: Vec<u64> = buffer.lock().chunks.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [10, 11, 14]);
        assert_eq!(buffer.coalesce(), 0, "nothing left to merge");
    }

    #[tokio::test]
    async fn coalesce_caps_the_rows_of_a_merged_batch() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = empty_buffer(dir.path()).await;
        for seq in 1..=700 {
            buffer.push([(seq, batch(seq as i64 * 100, 100))]);
        }
        buffer.coalesce();
        let (sizes, values) = values(&buffer);
        assert_eq!(sizes, [65_500, 4_500]);
        assert!(values.windows(2).all(|w| w[0] + 1 == w[1]));
        assert!(sizes.iter().all(|&n| n <= MERGED_BATCH_ROWS));
    }
}
