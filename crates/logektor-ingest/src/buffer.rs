//! The in-memory buffer: acknowledged batches not yet in the table, visible to SQL.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use logektor_query::{EventsSource, EventsView};
use logektor_table::TableSnapshot;

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
