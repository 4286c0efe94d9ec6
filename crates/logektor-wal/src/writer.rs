//! The group-commit writer thread and the [`Wal`] handle.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::segment::{self, Record};
use crate::{Error, Result};

/// Settings of the write-ahead log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Folder of the segment files.
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it grows past this size.
    pub segment_bytes: u64,
    /// At most this many payload bytes go into one group (one fsync); more wait for the next.
    pub max_group_bytes: usize,
}

impl WalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            max_group_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Counters a caller can read at any time (for metrics and tests).
#[derive(Debug, Default)]
pub struct WalStats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub sync_micros: AtomicU64,
}

type Reply = oneshot::Sender<Result<u64>>;

/// An enqueued append; [`Pending::wait`] resolves to its sequence number once it is fsync'd
/// and its item has been applied.
#[must_use = "an append is acknowledged only after wait() resolves"]
pub struct Pending {
    receiver: oneshot::Receiver<Result<u64>>,
}

impl Pending {
    pub async fn wait(self) -> Result<u64> {
        self.receiver.await.map_err(|_| Error::Closed)?
    }
}

enum Command<T> {
    Append {
        payload: Vec<u8>,
        item: T,
        reply: Reply,
        ticket: u64,
    },
    RemoveThrough {
        seq: u64,
        reply: oneshot::Sender<Result<usize>>,
    },
}

/// Handle to the write-ahead log. Dropping it (or [`Wal::close`]) lets the writer thread finish
/// the appends already queued and exit.
pub struct Wal<T: Send + 'static> {
    sender: Option<mpsc::Sender<Command<T>>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WalStats>,
    failure: Arc<Mutex<Option<String>>>,
    failed_tickets: Arc<Mutex<FailedTickets>>,
}

/// Tickets of appends that failed, the most recent [`FailedTickets::KEEP`] of them.
#[derive(Default)]
struct FailedTickets(std::collections::BTreeSet<u64>);

impl FailedTickets {
    const KEEP: usize = 1 << 20;

    fn insert(&mut self, ticket: u64) {
        if ticket == 0 {
            return;
        }
        self.0.insert(ticket);
        while self.0.len() > Self::KEEP {
            self.0.pop_first();
        }
    }
}

impl<T: Send + 'static> Wal<T> {
    /// Opens (or creates) the log, cuts a torn tail, and returns the intact records whose
    /// sequence number is above `committed_seq` for the caller to replay. New appends get
    /// sequence numbers above both the last record and `committed_seq`.
    ///
    /// `apply` runs on the writer thread after each group is durable, with that group's items in
    /// sequence order, before any of its appends completes. It must be quick and must not call
    /// back into the WAL.
    pub fn open<F>(config: WalConfig, committed_seq: u64, apply: F) -> Result<(Self, Vec<Record>)>
    where
        F: FnMut(Vec<(u64, T)>) + Send + 'static,
    {
        Self::open_with_hooks(config, committed_seq, apply, |_| {})
    }

    /// [`Self::open`], plus `on_failure`: it runs on the writer thread with the items of a
    /// group whose write or sync failed, before any of its appends completes and before the
    /// next group is written, so the caller can undo what it did for them (e.g. forget their
    /// message ids) even if the requests that enqueued them are gone.
    pub fn open_with_hooks<F, G>(
        config: WalConfig,
        committed_seq: u64,
        apply: F,
        on_failure: G,
    ) -> Result<(Self, Vec<Record>)>
    where
        F: FnMut(Vec<(u64, T)>) + Send + 'static,
        G: FnMut(Vec<T>) + Send + 'static,
    {
        fs::create_dir_all(&config.dir).map_err(|err| Error::io(&config.dir, err))?;
        let existing = segment::list_segments(&config.dir)?;
        let mut replay = Vec::new();
        let mut last_seq = committed_seq;
        let mut segments: Vec<(u64, PathBuf)> = Vec::with_capacity(existing.len() + 1);
        for (index, (first_seq, path)) in existing.iter().enumerate() {
            let scan = segment::scan_segment(path)?;
            let is_last = index + 1 == existing.len();
            // A segment holding nothing but (part of) its header is left over from a creation
            // that failed or was cut short: nothing to keep, wherever it sits.
            let header_only = scan.records.is_empty()
                && fs::metadata(path)
                    .map_err(|err| Error::io(path, err))?
                    .len()
                    <= segment::MAGIC.len() as u64;
            if header_only {
                fs::remove_file(path).map_err(|err| Error::io(path, err))?;
                segment::sync_dir(&config.dir)?;
                continue;
            }
            if let Some(reason) = &scan.damage {
                if !is_last || scan.intact_after {
                    return Err(Error::Corrupt {
                        path: path.clone(),
                        offset: scan.valid_len,
                        reason: reason.clone(),
                    });
                }
                warn!(path = %path.display(), offset = scan.valid_len, %reason, "cutting torn WAL tail");
                if !scan.records.is_empty() {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|err| Error::io(path, err))?;
                    file.set_len(scan.valid_len)
                        .and_then(|()| file.sync_all())
                        .map_err(|err| Error::io(path, err))?;
                }
            }
            let Some(last_record) = scan.records.last() else {
                // The newest segment, torn inside its first record: nothing to keep, and a new
                // segment may be about to take its name.
                fs::remove_file(path).map_err(|err| Error::io(path, err))?;
                segment::sync_dir(&config.dir)?;
                continue;
            };
            last_seq = last_seq.max(last_record.seq);
            if last_record.seq <= committed_seq {
                // Wholly committed: delete it now, before a new segment needs the space (a
                // volume filled by committed records must not keep the log from opening).
                fs::remove_file(path).map_err(|err| Error::io(path, err))?;
                segment::sync_dir(&config.dir)?;
                continue;
            }
            segments.push((*first_seq, path.clone()));
            replay.extend(scan.records.into_iter().filter(|r| r.seq > committed_seq));
        }
        let next_seq = last_seq + 1;
        let (file, path) = segment::create_segment(&config.dir, next_seq)?;
        segments.push((next_seq, path.clone()));
        info!(dir = %config.dir.display(), replay = replay.len(), next_seq, "WAL opened");

        let stats = Arc::new(WalStats::default());
        let failure = Arc::new(Mutex::new(None));
        let failed_tickets = Arc::new(Mutex::new(FailedTickets::default()));
        let (sender, receiver) = mpsc::channel();
        let mut writer = Writer {
            config,
            file,
            path,
            file_len: segment::MAGIC.len() as u64,
            next_seq,
            segments,
            apply,
            on_failure: Box::new(on_failure),
            stats: Arc::clone(&stats),
            failure: Arc::clone(&failure),
            failed_tickets: Arc::clone(&failed_tickets),
            _items: std::marker::PhantomData,
        };
        let thread = std::thread::Builder::new()
            .name("logektor-wal".into())
            .spawn(move || writer.run(receiver))
            .map_err(|err| Error::io(std::path::Path::new("<wal thread>"), err))?;
        Ok((
            Self {
                sender: Some(sender),
                thread: Some(thread),
                stats,
                failure,
                failed_tickets,
            },
            replay,
        ))
    }

    /// Appends one record; resolves to its sequence number once it is fsync'd and its item has
    /// been applied.
    pub async fn append(&self, payload: Vec<u8>, item: T) -> Result<u64> {
        self.enqueue(payload, item)?.wait().await
    }

    /// Hands one record to the writer without waiting: records enqueued one after another get
    /// increasing sequence numbers, so a caller that enqueues under its own lock knows the WAL
    /// order matches its order. Await [`Pending::wait`] for durability.
    pub fn enqueue(&self, payload: Vec<u8>, item: T) -> Result<Pending> {
        self.enqueue_ticketed(payload, item, 0)
    }

    /// [`Self::enqueue`] with a caller's `ticket` (non-zero): if the append fails, the ticket
    /// is remembered, and [`Self::has_failed`] tells later appends that depend on this one.
    pub fn enqueue_ticketed(&self, payload: Vec<u8>, item: T, ticket: u64) -> Result<Pending> {
        if let Some(reason) = self.failure.lock().expect("wal failure lock").clone() {
            self.failed_tickets
                .lock()
                .expect("wal tickets lock")
                .insert(ticket);
            return Err(Error::Failed(reason));
        }
        let (reply, receiver) = oneshot::channel();
        self.sender
            .as_ref()
            .ok_or(Error::Closed)?
            .send(Command::Append {
                payload,
                item,
                reply,
                ticket,
            })
            .map_err(|_| Error::Closed)?;
        Ok(Pending { receiver })
    }

    /// Whether the append enqueued with `ticket` failed. Appends complete in the order they
    /// were enqueued, so once an append has completed, the outcome of every append enqueued
    /// before it is known here.
    pub fn has_failed(&self, ticket: u64) -> bool {
        self.failed_tickets
            .lock()
            .expect("wal tickets lock")
            .0
            .contains(&ticket)
    }

    /// Deletes every closed segment whose records all have sequence numbers `<= seq`.
    /// Returns how many segments were removed.
    pub async fn remove_through(&self, seq: u64) -> Result<usize> {
        let (reply, receiver) = oneshot::channel();
        self.sender
            .as_ref()
            .ok_or(Error::Closed)?
            .send(Command::RemoveThrough { seq, reply })
            .map_err(|_| Error::Closed)?;
        receiver.await.map_err(|_| Error::Closed)?
    }

    pub fn stats(&self) -> &WalStats {
        &self.stats
    }

    /// Waits for the queued appends to finish, then stops the writer thread.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            error!("WAL writer thread panicked");
        }
    }
}

impl<T: Send + 'static> Drop for Wal<T> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Writer<T, F> {
    config: WalConfig,
    file: File,
    path: PathBuf,
    file_len: u64,
    next_seq: u64,
    /// Every segment on disk as (first_seq, path), oldest first; the last is the open one.
    segments: Vec<(u64, PathBuf)>,
    apply: F,
    on_failure: Box<dyn FnMut(Vec<T>) + Send>,
    stats: Arc<WalStats>,
    failure: Arc<Mutex<Option<String>>>,
    failed_tickets: Arc<Mutex<FailedTickets>>,
    _items: std::marker::PhantomData<fn(T)>,
}

impl<T, F> Writer<T, F>
where
    F: FnMut(Vec<(u64, T)>),
{
    fn run(&mut self, receiver: mpsc::Receiver<Command<T>>) {
        let mut buffer = Vec::with_capacity(1024 * 1024);
        let mut carried: Option<Command<T>> = None;
        loop {
            let first = match carried.take() {
                Some(command) => command,
                None => match receiver.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
            };
            // Gather the group: everything that queued up while the last sync ran.
            let mut group: Vec<(Vec<u8>, T, Reply)> = Vec::new();
            let mut tickets: Vec<u64> = Vec::new();
            let mut group_bytes = 0usize;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append {
                        payload,
                        item,
                        reply,
                        ticket,
                    } => {
                        if !group.is_empty()
                            && group_bytes + payload.len() > self.config.max_group_bytes
                        {
                            carried = Some(Command::Append {
                                payload,
                                item,
                                reply,
                                ticket,
                            });
                            break;
                        }
                        group_bytes += payload.len();
                        group.push((payload, item, reply));
                        tickets.push(ticket);
                    }
                    Command::RemoveThrough { seq, reply } => {
                        let _ = reply.send(self.remove_through(seq));
                    }
                }
                next = receiver.try_recv().ok();
            }
            if !group.is_empty() && !self.commit_group(group, &mut buffer) {
                // Recorded before any later append completes: see `Wal::has_failed`.
                let mut failed = self.failed_tickets.lock().expect("wal tickets lock");
                for ticket in tickets {
                    failed.insert(ticket);
                }
            }
        }
        debug!("WAL writer thread stopped");
    }

    /// Writes, syncs and applies one group, then answers its appends; false if it failed.
    fn commit_group(&mut self, group: Vec<(Vec<u8>, T, Reply)>, buffer: &mut Vec<u8>) -> bool {
        let poisoned = self.failure.lock().expect("wal failure lock").clone();
        if let Some(reason) = poisoned {
            self.fail_group(group, &Error::Failed(reason));
            return false;
        }
        buffer.clear();
        let first_seq = self.next_seq;
        for (offset, (payload, _, _)) in group.iter().enumerate() {
            segment::encode_record(buffer, first_seq + offset as u64, payload);
        }
        let started = std::time::Instant::now();
        if let Err(err) = self.file.write_all(buffer) {
            // Nothing of this group is synced. Cut what it may have left in the file and go on:
            // a full disk (ENOSPC) is temporary, and no acknowledged byte is involved. Only if
            // the cut fails is the file's state unknown, and the log poisoned.
            let reason = format!("write to {} failed: {err}", self.path.display());
            metrics::counter!("logektor_wal_failures_total").increment(1);
            // Synced, so a crash cannot bring back records whose senders were told they failed.
            let cut = self
                .file
                .set_len(self.file_len)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.file_len)).map(|_| ()))
                .and_then(|()| self.file.sync_data());
            let error = match cut {
                Ok(()) => {
                    warn!(%reason, "WAL write failed; the group is refused, the log stays usable");
                    Error::WriteFailed(reason)
                }
                Err(cut_err) => {
                    let reason = format!("{reason}; cutting the partial write failed: {cut_err}");
                    error!(%reason, "WAL failed; refusing further writes");
                    *self.failure.lock().expect("wal failure lock") = Some(reason.clone());
                    Error::Failed(reason)
                }
            };
            self.fail_group(group, &error);
            return false;
        }
        if let Err(err) = self.file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages while the file
            // still reads back fine, so nothing written since the last good sync can be
            // trusted: cut this group (best effort) and refuse all further writes.
            let _ = self.file.set_len(self.file_len);
            let reason = format!("fsync of {} failed: {err}", self.path.display());
            error!(%reason, "WAL failed; refusing further writes");
            metrics::counter!("logektor_wal_failures_total").increment(1);
            *self.failure.lock().expect("wal failure lock") = Some(reason.clone());
            self.fail_group(group, &Error::Failed(reason));
            return false;
        }
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("logektor_wal_group_commit_seconds").record(started.elapsed());
        metrics::histogram!("logektor_wal_group_records").record(group.len() as f64);
        self.stats
            .sync_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.stats
            .records
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(buffer.len() as u64, Ordering::Relaxed);
        self.file_len += buffer.len() as u64;
        self.next_seq += group.len() as u64;

        let mut items = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        for (offset, (_, item, reply)) in group.into_iter().enumerate() {
            let seq = first_seq + offset as u64;
            items.push((seq, item));
            replies.push((seq, reply));
        }
        (self.apply)(items);
        for (seq, reply) in replies {
            let _ = reply.send(Ok(seq));
        }

        if self.file_len >= self.config.segment_bytes
            && let Err(err) = self.rotate()
        {
            // The current segment is intact and synced; keep appending to it.
            warn!(error = %err, "WAL segment rotation failed");
        }
        true
    }

    /// Hands a failed group's items to the failure hook, then tells its appends.
    fn fail_group(&mut self, group: Vec<(Vec<u8>, T, Reply)>, error: &Error) {
        let mut replies = Vec::with_capacity(group.len());
        let items = group
            .into_iter()
            .map(|(_, item, reply)| {
                replies.push(reply);
                item
            })
            .collect();
        (self.on_failure)(items);
        for reply in replies {
            let _ = reply.send(Err(error.duplicate()));
        }
    }

    fn rotate(&mut self) -> Result<()> {
        let (file, path) = segment::create_segment(&self.config.dir, self.next_seq)?;
        self.file = file;
        self.path = path.clone();
        self.file_len = segment::MAGIC.len() as u64;
        self.segments.push((self.next_seq, path));
        Ok(())
    }

    fn remove_through(&mut self, seq: u64) -> Result<usize> {
        let mut removed = 0;
        // A closed segment's last record is just before the next segment's first.
        while self.segments.len() > 1 && self.segments[1].0 - 1 <= seq {
            let (_, path) = self.segments.remove(0);
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(&path, err)),
            }
        }
        // The open segment can go too once everything in it is committed. It is cut back to
        // its header in place rather than replaced by a new file: on a full volume there may
        // be no room for a new segment until this one's space is freed. (Its name keeps an
        // older first sequence number; names only order segments.)
        if self.segments.len() == 1
            && self.next_seq - 1 <= seq
            && self.file_len > segment::MAGIC.len() as u64
        {
            let header = segment::MAGIC.len() as u64;
            self.file
                .set_len(header)
                .and_then(|()| self.file.seek(SeekFrom::Start(header)).map(|_| ()))
                .and_then(|()| self.file.sync_all())
                .map_err(|err| Error::io(&self.path, err))?;
            self.file_len = header;
            removed += 1;
        }
        if removed > 0 {
            segment::sync_dir(&self.config.dir)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    type Applied = Arc<StdMutex<Vec<(u64, u32)>>>;

    fn open(dir: &std::path::Path, committed: u64) -> (Wal<u32>, Vec<Record>, Applied) {
        let applied: Applied = Arc::default();
        let sink = Arc::clone(&applied);
        let (wal, replay) = Wal::open(WalConfig::new(dir), committed, move |items| {
            sink.lock().unwrap().extend(items)
        })
        .unwrap();
        (wal, replay, applied)
    }

    #[tokio::test]
    async fn appends_are_replayed_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, replay, applied) = open(dir.path(), 0);
        assert!(replay.is_empty());
        for i in 0..10u32 {
            let seq = wal
                .append(format!("record {i}").into_bytes(), i)
                .await
                .unwrap();
            assert_eq!(seq, u64::from(i) + 1);
        }
        assert_eq!(applied.lock().unwrap().len(), 10);
        wal.close();

        let (wal, replay, _) = open(dir.path(), 4);
        let seqs: Vec<u64> = replay.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (5..=10).collect::<Vec<_>>());
        assert_eq!(replay[0].payload, b"record 4");
        assert_eq!(wal.append(b"next".to_vec(), 0).await.unwrap(), 11);
    }

    #[tokio::test]
    async fn concurrent_appends_share_fsyncs_and_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, applied) = open(dir.path(), 0);
        let wal = Arc::new(wal);
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let wal = Arc::clone(&wal);
            tasks.push(tokio::spawn(async move {
                wal.append(vec![0; 100], i).await.unwrap()
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let syncs = wal.stats().syncs.load(Ordering::Relaxed);
        assert!(
            syncs < 200,
            "group commit should share syncs, got {syncs} for 200 appends"
        );
        let applied = applied.lock().unwrap();
        let seqs: Vec<u64> = applied.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_never_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(dir.path(), 0);
        for i in 0..3u32 {
            wal.append(vec![i as u8; 50], i).await.unwrap();
        }
        wal.close();
        let (_, path) = segment::list_segments(dir.path()).unwrap().pop().unwrap();
        // Simulate a crash in mid-write: a partial record, then garbage in the last good one.
        let mut bytes = fs::read(&path).unwrap();
        let intact = bytes.len();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
        fs::write(&path, &bytes).unwrap();
        let (wal, replay, _) = open(dir.path(), 0);
        assert_eq!(replay.len(), 3);
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, intact);
        assert_eq!(wal.append(vec![9], 9).await.unwrap(), 4);
        wal.close();

        // Flip a byte inside the last record of the oldest segment.
        let segments = segment::list_segments(dir.path()).unwrap();
        assert!(segments.len() >= 2, "{segments:?}");
        let oldest = &segments[0].1;
        let mut bytes = fs::read(oldest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(oldest, &bytes).unwrap();
        // The damaged record sits in a segment that is no longer the last one: an error,
        // because it is not a torn tail.
        let err = Wal::<u32>::open(WalConfig::new(dir.path()), 0, |_| {})
            .err()
            .unwrap();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[tokio::test]
    async fn damage_followed_by_intact_records_is_corruption_not_a_tear() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(dir.path(), 0);
        for i in 0..3u32 {
            wal.append(vec![i as u8; 50], i).await.unwrap();
        }
        wal.close();
        let (_, path) = segment::list_segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        // Corrupt the payload of the first record; records 2 and 3 stay intact.
        bytes[segment::MAGIC.len() + segment::RECORD_HEADER + 3] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let err = Wal::<u32>::open(WalConfig::new(dir.path()), 0, |_| {})
            .err()
            .unwrap();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(crate::read_dir_records(dir.path(), 0).is_err());
        // Nothing was cut.
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[tokio::test]
    async fn leftover_header_only_segments_are_dropped_wherever_they_sit() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(dir.path(), 0);
        wal.append(vec![1; 10], 1).await.unwrap();
        wal.close();
        // A segment whose creation failed half-way, older than the newest one.
        fs::write(segment::segment_path(dir.path(), 0), b"LGK").unwrap();
        let (wal, replay, _) = open(dir.path(), 0);
        assert_eq!(replay.len(), 1);
        assert_eq!(wal.append(vec![2], 2).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn committed_segments_are_removed_and_sequence_continues() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = WalConfig::new(dir.path());
        config.segment_bytes = 200;
        let (wal, _) = Wal::<u32>::open(config.clone(), 0, |_| {}).unwrap();
        for i in 0..20u32 {
            wal.append(vec![0; 100], i).await.unwrap();
        }
        let before = segment::list_segments(dir.path()).unwrap().len();
        assert!(before > 5, "{before}");
        wal.remove_through(10).await.unwrap();
        let remaining = segment::list_segments(dir.path()).unwrap();
        assert!(remaining.len() < before);
        let records = crate::read_dir_records(dir.path(), 0).unwrap();
        assert!(
            records.iter().all(|r| r.seq > 10 - 1),
            "kept a segment ending at or before 10"
        );
        assert!(records.iter().any(|r| r.seq == 11));
        wal.remove_through(20).await.unwrap();
        assert!(crate::read_dir_records(dir.path(), 0).unwrap().is_empty());
        wal.close();
        // Everything was removed: a reopen must still continue after the committed sequence.
        let (wal, replay) = Wal::<u32>::open(config, 20, |_| {}).unwrap();
        assert!(replay.is_empty());
        assert_eq!(wal.append(vec![1], 1).await.unwrap(), 21);
    }
}
