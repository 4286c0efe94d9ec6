//! [`Ingester`]: decode → WAL → buffer on the request path, and the flush loop into the table.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use logektor_event::segment::ParsedBody;
use logektor_event::{DecodeError, Endpoint, RequestMeta, decode, to_record_batch};
use logektor_table::{EventTable, TableLocation};
use logektor_wal::{Wal, WalConfig};
use tokio::sync::{Mutex, Notify, watch};
use tracing::{error, info, warn};

use crate::buffer::Buffer;
use crate::dedup::{Dedup, DedupConfig};
use crate::maintenance::MaintenanceConfig;
use crate::record::{IngestRecord, encode_record};

/// `skip` (event indices) as one flag per event.
fn skip_mask(skip: &[u32], events: usize) -> Vec<bool> {
    let mut mask = vec![false; events];
    for &index in skip {
        if let Some(flag) = mask.get_mut(index as usize) {
            *flag = true;
        }
    }
    mask
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// When the buffer is written to the table.
#[derive(Debug, Clone)]
pub struct FlushConfig {
    /// Flush when the oldest buffered event is this old (and at most this often when idle).
    pub interval: Duration,
    /// Flush when this many rows are buffered.
    pub max_rows: usize,
    /// Flush when the buffered batches take this many bytes.
    pub max_bytes: usize,
    /// Refuse new requests (503, Retry-After) while the buffer holds more than this, which
    /// happens only when flushes fail or cannot keep up.
    pub max_buffer_bytes: usize,
}

impl Default for FlushConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            max_rows: 250_000,
            max_bytes: 128 * 1024 * 1024,
            max_buffer_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Everything the write path needs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub table: TableLocation,
    pub wal: WalConfig,
    pub flush: FlushConfig,
    /// This writer's name in the table's application transactions; stable across restarts.
    pub app_id: String,
    pub maintenance: MaintenanceConfig,
    pub dedup: DedupConfig,
}

/// Why an ingest request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    #[error(
        "the server is over capacity ({buffered_bytes} bytes waiting to be written); retry later"
    )]
    Overloaded { buffered_bytes: usize },
    #[error("the write-ahead log is unavailable: {0}")]
    Wal(#[from] logektor_wal::Error),
}

/// What the WAL carries beside each record: the rows to buffer once it is durable, and the
/// dedup keys it inserted, to forget if it fails.
struct Appended {
    batch: RecordBatch,
    keys: Vec<u64>,
    ticket: u64,
}

/// The write path. Cheap to share: hold it in an `Arc`.
pub struct Ingester {
    wal: Wal<Appended>,
    buffer: Arc<Buffer>,
    table: Mutex<WriterTable>,
    flush: FlushConfig,
    wake_flusher: Notify,
    dedup: Arc<Dedup>,
    /// Tickets for WAL appends (from 1), so a repeat can learn whether its original was stored.
    next_ticket: AtomicU64,
    /// A deletion of committed WAL segments failed and is to be retried.
    wal_cleanup_due: AtomicBool,
    pub(crate) location: TableLocation,
    pub(crate) maintenance: MaintenanceConfig,
    /// Held while this process compacts.
    pub(crate) compaction_lock: Mutex<()>,
}

impl Ingester {
    /// Opens the table and the WAL and replays what the table does not hold yet.
    pub async fn open(config: IngestConfig) -> Result<Arc<Self>, OpenError> {
        let table = EventTable::open_or_create(&config.table, &config.app_id).await?;
        let committed = table.committed_seq();
        let buffer = Arc::new(Buffer::new(table.snapshot()));
        let sink = Arc::clone(&buffer);
        let dedup = Arc::new(Dedup::new(config.dedup));
        let failed = Arc::clone(&dedup);
        // A failed append's ids are forgotten on the WAL thread, before any later append is
        // written, whether or not the request that sent them is still waiting.
        let (wal, replay) = Wal::open_with_hooks(
            config.wal.clone(),
            committed,
            move |items: Vec<(u64, Appended)>| {
                sink.push(items.into_iter().map(|(seq, item)| (seq, item.batch)));
            },
            move |items: Vec<Appended>| {
                for item in items {
                    failed.forget(&item.keys, item.ticket);
                }
            },
        )?;
        // The dedup window, rebuilt: first what the table holds, then the WAL records on top.
        let dedup_config = dedup.config();
        let mut remembered = 0;
        if dedup_config.capacity > 0 {
            let since = now_micros()
                .saturating_sub(i64::try_from(dedup_config.window.as_micros()).unwrap_or(i64::MAX));
            let recent = table
                .snapshot()
                .recent_message_ids(since, dedup_config.capacity)
                .await?;
            remembered = recent.len();
            let mut state = dedup.lock();
            for (source, id, received_at) in recent {
                dedup.insert_known(&mut state, dedup.key(&source, &id), received_at);
            }
        }
        let replayed = replay.len();
        let mut replay_rows = 0;
        for record in replay {
            let ingest =
                IngestRecord::decode(&record.payload).map_err(|reason| OpenError::Replay {
                    seq: record.seq,
                    reason,
                })?;
            let mut events =
                decode(&ingest.meta, ingest.endpoint, &ingest.body).map_err(|err| {
                    OpenError::Replay {
                        seq: record.seq,
                        reason: err.to_string(),
                    }
                })?;
            if !ingest.skip.is_empty() {
                let dropped = skip_mask(&ingest.skip, events.len());
                events = events
                    .into_iter()
                    .zip(dropped)
                    .filter(|(_, dropped)| !dropped)
                    .map(|(event, _)| event)
                    .collect();
            }
            {
                let mut state = dedup.lock();
                for event in &events {
                    let key = dedup.key(&event.source, &event.message_id);
                    dedup.insert_known(&mut state, key, event.received_at);
                }
            }
            replay_rows += events.len();
            buffer.push([(record.seq, to_record_batch(&events))]);
            logektor_table::faults::crash_point("replay");
        }
        info!(
            committed_seq = committed,
            table_version = ?table.version(),
            replayed_records = replayed,
            replayed_events = replay_rows,
            dedup_ids_from_table = remembered,
            "ingest opened"
        );
        Ok(Arc::new(Self {
            wal,
            buffer,
            table: Mutex::new(WriterTable {
                table,
                stale: false,
            }),
            flush: config.flush,
            wake_flusher: Notify::new(),
            dedup,
            next_ticket: AtomicU64::new(1),
            wal_cleanup_due: AtomicBool::new(false),
            location: config.table,
            maintenance: config.maintenance,
            compaction_lock: Mutex::new(()),
        }))
    }

    /// Whether the buffer holds more than one flush: a flush is due or running and has not
    /// committed yet. Compaction waits while this holds, so the flush gets the CPU first.
    pub(crate) fn flush_behind(&self) -> bool {
        self.buffer.stats().bytes > self.flush.max_bytes
    }

    /// The queryable buffer (an [`logektor_query::EventsSource`]).
    pub fn buffer(&self) -> Arc<Buffer> {
        Arc::clone(&self.buffer)
    }

    pub fn wal_stats(&self) -> &logektor_wal::WalStats {
        self.wal.stats()
    }

    /// Parses a body far enough to read its `writeKey` and count its events.
    pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<ParsedBody, IngestError> {
        Ok(ParsedBody::parse(endpoint, body)?)
    }

    /// Validates and stores one request. Returns the number of events stored once they are
    /// durable and visible to queries; events whose message id was already accepted (see
    /// [`crate::dedup`]) are acknowledged without being stored again. Nothing is stored if any
    /// event is invalid.
    pub async fn ingest(
        &self,
        meta: RequestMeta,
        endpoint: Endpoint,
        parsed: ParsedBody,
        body: &[u8],
    ) -> Result<usize, IngestError> {
        let stats = self.buffer.stats();
        if stats.bytes > self.flush.max_buffer_bytes {
            self.wake_flusher.notify_one();
            return Err(IngestError::Overloaded {
                buffered_bytes: stats.bytes,
            });
        }
        // The rows borrow from the parsed body; they live only until the batch is built.
        let mut parsed = parsed;
        let (mut batch, mut keys) = {
            let rows = parsed.rows(&meta)?;
            let keys: Vec<u64> = rows
                .iter()
                .map(|row| self.dedup.key(&row.source, &row.message_id))
                .collect();
            // The common case (no duplicate) does all encoding before taking the dedup lock.
            (to_record_batch(&rows), keys)
        };
        drop(parsed);
        let events = batch.num_rows();
        // What the source's IP policy removes must not reach the WAL either.
        let scrubbed = logektor_event::scrub_body_ips(endpoint, body, meta.ip_policy);
        let body = scrubbed.as_deref().unwrap_or(body);
        let mut payload = encode_record(&meta, endpoint, &[], body);
        let (pending, skip, originals, inserted, ticket) = {
            let mut state = self.dedup.lock();
            let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
            let (skip, originals) =
                self.dedup
                    .check_and_insert(&mut state, &keys, meta.received_at_micros, ticket);
            let inserted: Vec<u64> = if skip.is_empty() {
                std::mem::take(&mut keys)
            } else {
                let dropped = skip_mask(&skip, keys.len());
                keys.iter()
                    .zip(&dropped)
                    .filter(|(_, dropped)| !**dropped)
                    .map(|(key, _)| *key)
                    .collect()
            };
            if !skip.is_empty() {
                let kept: BooleanArray = skip_mask(&skip, events)
                    .into_iter()
                    .map(|dropped| Some(!dropped))
                    .collect();
                batch = filter_record_batch(&batch, &kept)
                    .expect("a mask as long as the batch filters it");
                payload = encode_record(&meta, endpoint, &skip, body);
            }
            // Enqueued under the lock: the WAL order matches the order of dedup decisions.
            let item = Appended {
                batch,
                keys: inserted.clone(),
                ticket,
            };
            (
                self.wal.enqueue_ticketed(payload, item, ticket),
                skip,
                originals,
                inserted,
                ticket,
            )
        };
        let count = events - skip.len();
        if !skip.is_empty() {
            metrics::counter!("logektor_events_duplicate_total").increment(skip.len() as u64);
        }
        let appended = match pending {
            // If the write fails, the WAL's failure hook forgets our ids.
            Ok(pending) => pending.wait().await,
            // Refused before it reached the writer: nothing else will forget them.
            Err(err) => {
                self.dedup.forget(&inserted, ticket);
                Err(err)
            }
        };
        if let Err(err) = appended {
            return Err(err.into());
        }
        // Events skipped as repeats are stored only if the append that first sent them was.
        // That append was enqueued before ours, so its outcome is known by now; if it failed
        // (a full disk), its client was told so and retries, and so must this one: answering
        // 200 would acknowledge events that are nowhere.
        if originals.iter().any(|&ticket| self.wal.has_failed(ticket)) {
            return Err(IngestError::Wal(logektor_wal::Error::WriteFailed(
                "an earlier request with the same message ids could not be stored".into(),
            )));
        }
        metrics::counter!("logektor_events_accepted_total").increment(count as u64);
        let stats = self.buffer.stats();
        if stats.rows >= self.flush.max_rows || stats.bytes >= self.flush.max_bytes {
            self.wake_flusher.notify_one();
        }
        Ok(count)
    }

    /// Flushes on the configured triggers until `shutdown` turns true, then flushes what is
    /// left. Run it on a runtime that does not serve requests: it encodes Parquet.
    pub async fn run_flusher(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let tick = (self.flush.interval / 4).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.wake_flusher.notified() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            let stats = self.buffer.stats();
            let due = stats
                .oldest
                .is_some_and(|t| t.elapsed() >= self.flush.interval)
                || stats.rows >= self.flush.max_rows
                || stats.bytes >= self.flush.max_bytes;
            if due && let Err(err) = self.flush_now().await {
                // The batches stay buffered (and in the WAL); the next tick tries again.
                error!(error = %err, "flush failed; will retry");
                tokio::time::sleep(self.flush.interval).await;
            } else if !due {
                if self.wal_cleanup_due.load(Ordering::Relaxed) {
                    let committed = self.buffer.table().committed_seq();
                    self.remove_committed_wal(committed).await;
                }
                self.coalesce_buffer().await;
            }
        }
        if let Err(err) = self.flush_now().await {
            error!(error = %err, "final flush failed; the WAL still holds every acknowledged event");
        }
    }

    /// Merges the buffer's small batches into large ones ([`Buffer::coalesce`]), holding the
    /// writer lock so that no flush is in flight meanwhile.
    async fn coalesce_buffer(&self) {
        let _no_flush = self.table.lock().await;
        let merged = self.buffer.coalesce();
        if merged > 0 {
            metrics::counter!("logektor_buffer_batches_merged_total").increment(merged as u64);
        }
    }

    /// Writes everything buffered to the table now. Returns the number of rows written.
    pub async fn flush_now(&self) -> Result<usize, logektor_table::Error> {
        let mut writer = self.table.lock().await;
        if writer.stale {
            // An earlier commit's outcome is unknown: learn the table's real position first,
            // and show readers that same state, before writing anything.
            writer.table = writer.table.reopen().await?;
            writer.stale = false;
            self.buffer.install_snapshot(writer.table.snapshot());
        }
        // The buffer's snapshot is the writer's, so "pending" is exactly what the table lacks.
        debug_assert_eq!(
            self.buffer.table().committed_seq(),
            writer.table.committed_seq()
        );
        let Some((batches, through)) = self.buffer.pending() else {
            return Ok(0);
        };
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let started = std::time::Instant::now();
        if let Err(err) = writer.table.append_batches(&batches, through).await {
            // The commit may have landed although we saw an error (e.g. a timeout after the log
            // write). Re-read the table's record of our position; until that succeeds the
            // writer is stale and nothing is written.
            warn!(error = %err, "commit failed; checking whether it landed");
            metrics::counter!("logektor_flush_failures_total").increment(1);
            writer.stale = true;
            writer.table = writer.table.reopen().await?;
            writer.stale = false;
            self.buffer.install_snapshot(writer.table.snapshot());
            if writer.table.committed_seq() < through {
                return Err(err);
            }
        } else {
            logektor_table::faults::crash_point("flush-after-commit");
            metrics::histogram!("logektor_flush_seconds").record(started.elapsed());
            metrics::counter!("logektor_flushed_rows_total").increment(rows as u64);
            info!(
                rows,
                through_seq = through,
                version = ?writer.table.version(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "flushed"
            );
            self.buffer.install_snapshot(writer.table.snapshot());
        }
        self.remove_committed_wal(writer.table.committed_seq())
            .await;
        Ok(rows)
    }

    /// Deletes WAL segments the table holds; on failure (e.g. a full disk) the flusher retries
    /// on its next tick even if nothing new arrives, since a full WAL volume may be exactly
    /// why nothing does.
    async fn remove_committed_wal(&self, committed: u64) {
        match self.wal.remove_through(committed).await {
            Ok(_) => self.wal_cleanup_due.store(false, Ordering::Relaxed),
            Err(err) => {
                warn!(error = %err, "could not delete committed WAL segments; will retry");
                self.wal_cleanup_due.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Catches the writer's table handle up with commits made by others (compaction,
    /// retention, erasure) and shows readers that version, so no reader keeps a snapshot whose
    /// files a vacuum may delete.
    pub async fn refresh_table(&self) -> Result<(), logektor_table::Error> {
        let mut writer = self.table.lock().await;
        if writer.stale {
            writer.table = writer.table.reopen().await?;
            writer.stale = false;
        } else {
            writer.table.refresh().await?;
        }
        self.buffer.install_snapshot(writer.table.snapshot());
        Ok(())
    }

    /// The table's location.
    pub fn location(&self) -> &TableLocation {
        &self.location
    }

    /// Flushes what is buffered and stops the WAL. Call after the HTTP server has drained.
    pub async fn shutdown(self: Arc<Self>) -> Result<(), logektor_table::Error> {
        self.flush_now().await?;
        Ok(())
    }
}

/// The table handle the flusher writes through. `stale` means a commit's outcome is unknown
/// and the handle must be reloaded before the next write.
struct WriterTable {
    table: EventTable,
    stale: bool,
}

/// Why the write path could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Table(#[from] logektor_table::Error),
    #[error(transparent)]
    Wal(#[from] logektor_wal::Error),
    #[error("WAL record {seq} cannot be replayed: {reason}")]
    Replay { seq: u64, reason: String },
}
