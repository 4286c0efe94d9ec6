//! Fault injection for the reliability tests (`RELIABILITY.md`): crash points and an object
//! store that fails or stalls on demand.
//!
//! Both are off unless the server is started with the hidden options `--crash-at` and
//! `--inject-store-faults`; when off, a crash point is one relaxed atomic load and the table's
//! object store is not wrapped at all. They exist so the tests can hit the moments random kills
//! rarely hit (between writing Parquet and committing it, between the commit and the WAL
//! truncation, in the middle of a replay) and can take object storage away from a running
//! server, the way FoundationDB's and TiKV's fail points do.

use std::fmt;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// The armed crash point: its name and the hit on which the process aborts.
struct CrashPoint {
    name: String,
    on_hit: u64,
    hits: AtomicU64,
}

static CRASH_POINT: OnceLock<CrashPoint> = OnceLock::new();

/// Arms one crash point, given as `NAME` (abort on the first hit) or `NAME:N` (on the N-th).
/// Only the first call in a process has an effect.
pub fn arm_crash_point(spec: &str) -> Result<(), String> {
    let (name, on_hit) = match spec.split_once(':') {
        Some((name, n)) => (
            name,
            n.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("invalid crash point {spec:?}: N must be a positive integer")
            })?,
        ),
        None => (spec, 1),
    };
    if !CRASH_POINTS.contains(&name) {
        return Err(format!(
            "unknown crash point {name:?}; known: {}",
            CRASH_POINTS.join(", ")
        ));
    }
    let _ = CRASH_POINT.set(CrashPoint {
        name: name.to_owned(),
        on_hit,
        hits: AtomicU64::new(0),
    });
    Ok(())
}

/// The places a crash can be injected.
pub const CRASH_POINTS: &[&str] = &[
    // A flush has written and fsync'd its Parquet files but not committed them.
    "flush-before-commit",
    // A flush has committed, but the buffer still holds the rows and the WAL still has them.
    "flush-after-commit",
    // Start-up is replaying the WAL: some records are in the buffer, some not yet.
    "replay",
    // A compaction has written its files but not committed the swap.
    "compaction-before-commit",
];

/// Aborts the process (no destructors, no flush: as close to SIGKILL as a process can do to
/// itself) when `name` is the armed crash point and this is the hit it waits for.
pub fn crash_point(name: &str) {
    let Some(point) = CRASH_POINT.get() else {
        return;
    };
    if point.name == name && point.hits.fetch_add(1, Ordering::Relaxed) + 1 == point.on_hit {
        eprintln!("logektor: crash point {name:?} reached; aborting");
        std::process::abort();
    }
}

/// An object store that consults a switch file before every call: absent, the call goes
/// through; containing `fail`, the call fails; containing `stall`, the call waits until the
/// file changes. Used as the table's store by `--inject-store-faults FILE`.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    switch: PathBuf,
}

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    Fail,
    Stall,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, switch: PathBuf) -> Self {
        Self { inner, switch }
    }

    fn mode(switch: &FsPath) -> Mode {
        match std::fs::read_to_string(switch) {
            Ok(text) if text.trim() == "stall" => Mode::Stall,
            Ok(_) => Mode::Fail,
            Err(_) => Mode::Pass,
        }
    }

    async fn check(switch: &FsPath) -> object_store::Result<()> {
        loop {
            match Self::mode(switch) {
                Mode::Pass => return Ok(()),
                Mode::Fail => {
                    return Err(object_store::Error::Generic {
                        store: "faults",
                        source: "injected object store failure".into(),
                    });
                }
                Mode::Stall => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn checked_stream<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        let switch = self.switch.clone();
        futures::stream::once(async move {
            match Self::check(&switch).await {
                Ok(()) => stream,
                Err(err) => futures::stream::once(async move { Err(err) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Self::check(&self.switch).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Self::check(&self.switch).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        Self::check(&self.switch).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        Self::check(&self.switch).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = self.inner.delete_stream(locations);
        self.checked_stream(inner)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.list(prefix);
        self.checked_stream(inner)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.list_with_offset(prefix, offset);
        self.checked_stream(inner)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        Self::check(&self.switch).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        Self::check(&self.switch).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        Self::check(&self.switch).await?;
        self.inner.rename_opts(from, to, options).await
    }
}
