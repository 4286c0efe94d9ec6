//! `logektor serve`: runtimes, start-up, and the ordered shutdown.

use std::sync::Arc;

use anyhow::Context;
use logektor_ingest::{DedupConfig, FlushConfig, IngestConfig, Ingester, MaintenanceConfig};
use logektor_query::{QueryConfig, QueryEngine};
use logektor_table::TableLocation;
use logektor_table::maintenance::CompactionConfig;
use logektor_wal::WalConfig;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{ServeArgs, retention_rules};
use crate::http::{AppState, router};
use crate::keys::{self, Keys};
use crate::layout;
use crate::sources::{Salts, SourcePolicies};

/// How long shutdown waits for in-flight requests before flushing anyway. A request still
/// running after that is either acknowledged (then its events are in the WAL and replayed on the
/// next start) or not (then its client retries).
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long shutdown waits for the final flush (e.g. while object storage hangs).
const FINAL_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the server until SIGINT or SIGTERM, then shuts down in order: stop accepting, finish
/// in-flight requests, flush the buffer into the table, exit.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let compute_threads = match args.compute_threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    // Requests and CPU-heavy work (Parquet encoding, DataFusion) run on separate runtimes so a
    // big query or a flush never stalls acknowledging events.
    let compute = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(compute_threads)
        .thread_name("logektor-compute")
        // Flushes and file I/O run as blocking tasks. Tokio's default pool grows to 512
        // threads that exit after 10 s idle; at full load it swung between 2 and ~110, and
        // each exiting thread leaves its allocator heap's partly used pages behind. A small
        // pool that stays keeps reusing the same heaps.
        .max_blocking_threads(COMPUTE_BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
        .enable_all()
        .build()
        .context("starting the compute runtime")?;
    // Upkeep (compaction, retention, vacuum) is CPU-heavy work nobody waits for. It gets its own
    // thread at a lower scheduling priority: under load the flush, queries and acknowledgements
    // go first and compaction takes the CPU that is left.
    let upkeep = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("logektor-upkeep")
        .on_thread_start(lower_priority)
        // Compaction's file writes fan out as blocking tasks (23 -> 58 threads at full load);
        // the same reasoning as the compute pool's cap.
        .max_blocking_threads(UPKEEP_BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
        .enable_all()
        .build()
        .context("starting the upkeep runtime")?;
    let requests = tokio::runtime::Builder::new_multi_thread()
        .thread_name("logektor-http")
        .enable_all()
        .build()
        .context("starting the request runtime")?;
    let runtimes = Runtimes {
        compute: compute.handle().clone(),
        compute_threads,
        upkeep: upkeep.handle().clone(),
    };
    let result = requests.block_on(serve(args, runtimes));
    compute.shutdown_timeout(std::time::Duration::from_secs(5));
    upkeep.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

/// Threads of the compute runtime's blocking pool (flushes, local file I/O).
const COMPUTE_BLOCKING_THREADS: usize = 16;

/// Threads of the upkeep runtime's blocking pool (compaction's and vacuum's file I/O).
const UPKEEP_BLOCKING_THREADS: usize = 4;

/// How long an idle blocking thread stays (Tokio's default is 10 s): long enough that threads
/// are reused across flushes and compactions instead of exiting and starting again.
const BLOCKING_THREAD_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(300);

/// The nice value of upkeep threads (0 is normal, 19 the lowest priority).
pub const UPKEEP_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`UPKEEP_NICE`]. Linux keeps a nice value
/// per thread; elsewhere it would apply to the whole process, so it is left alone there.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(err) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), UPKEEP_NICE)
    {
        warn!(error = %err, "could not lower the upkeep thread's priority");
    }
}

/// Where work runs besides request tasks.
struct Runtimes {
    /// Flushes (Parquet encoding) and queries.
    compute: tokio::runtime::Handle,
    compute_threads: usize,
    /// Compaction, retention, vacuum, erasure: at a lower priority.
    upkeep: tokio::runtime::Handle,
}

async fn serve(args: ServeArgs, runtimes: Runtimes) -> anyhow::Result<()> {
    let Runtimes {
        compute,
        compute_threads,
        upkeep,
    } = runtimes;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data folder {}", args.data_dir.display()))?;
    let keys = Keys::load_or_create(
        &args.data_dir,
        args.write_keys.clone(),
        args.read_tokens.clone(),
        args.admin_tokens.clone(),
    )?
    .with_scoped_read_tokens(args.scoped_read_tokens.clone())?;
    let node_id = keys::node_id(&args.data_dir)?;
    let sources = SourcePolicies::from_args(
        &args.ip_policies,
        &args.cookieless,
        &args.respect_dnt,
        &args.allowed_origins,
        &args.trusted_proxies,
    )
    .map_err(|err| anyhow::anyhow!(err))?;
    info!(
        data_dir = %args.data_dir.display(),
        listen = %args.listen,
        sources = ?keys.sources().collect::<Vec<_>>(),
        flush_interval = ?args.flush_interval,
        flush_rows = args.flush_rows,
        flush_bytes = args.flush_bytes,
        max_buffer_bytes = args.max_buffer_bytes,
        wal_segment_bytes = args.wal_segment_bytes,
        query_timeout = ?args.query_timeout,
        query_memory_limit = args
            .query_memory_limit
            .unwrap_or_else(logektor_query::default_memory_limit),
        compaction_interval = ?args.compaction_interval,
        vacuum_interval = ?args.vacuum_interval,
        vacuum_grace = ?args.vacuum_grace,
        retention = ?args.retention,
        compute_threads,
        node_id,
        "starting logektor"
    );

    if let Some(point) = &args.crash_at {
        logektor_table::faults::arm_crash_point(point).map_err(|err| anyhow::anyhow!(err))?;
        warn!(point, "test hook: crash point armed");
    }
    let mut table = TableLocation::local(&layout::table_dir(&args.data_dir))?;
    if let Some(switch) = &args.inject_store_faults {
        warn!(switch = %switch.display(), "test hook: object-store faults injected through a switch file");
        table = table.with_fault_switch(switch.clone());
    }
    let mut wal = WalConfig::new(layout::wal_dir(&args.data_dir));
    wal.segment_bytes = args.wal_segment_bytes as u64;
    let config = IngestConfig {
        table,
        wal,
        flush: FlushConfig {
            interval: args.flush_interval,
            max_rows: args.flush_rows,
            max_bytes: args.flush_bytes,
            max_buffer_bytes: args.max_buffer_bytes,
        },
        app_id: keys::app_id(&node_id),
        maintenance: MaintenanceConfig {
            interval: args.compaction_interval,
            compaction: CompactionConfig {
                target_file_bytes: args.compaction_target_size as u64,
                min_small_files: args.compaction_min_files,
                ..CompactionConfig::default()
            },
            vacuum_interval: args.vacuum_interval,
            vacuum_grace: args.vacuum_grace,
            retention: retention_rules(&args.retention),
        },
        dedup: DedupConfig {
            window: args.dedup_window,
            capacity: args.dedup_capacity,
        },
    };
    let ingester = compute
        .spawn(Ingester::open(config))
        .await
        .context("opening the write path")??;
    let engine = Arc::new(QueryEngine::new(
        QueryConfig {
            timeout: args.query_timeout,
            memory_limit: args
                .query_memory_limit
                .unwrap_or_else(logektor_query::default_memory_limit),
            max_spill_bytes: args.query_max_spill as u64,
            max_result_bytes: args.query_max_result_bytes,
            target_partitions: compute_threads,
        },
        ingester.buffer(),
    )?);

    let (stop_flusher, flusher_stopped) = watch::channel(false);
    let flusher = compute.spawn(Arc::clone(&ingester).run_flusher(flusher_stopped.clone()));
    let maintenance = upkeep.spawn(Arc::clone(&ingester).run_maintenance(flusher_stopped));

    let state = Arc::new(AppState {
        ingester: Arc::clone(&ingester),
        engine,
        keys,
        compute: compute.clone(),
        upkeep,
        vacuum_grace: args.vacuum_grace,
        sources,
        salts: Salts::new(layout::salt_file(&args.data_dir)),
        reports: logektor_query::reports::Reports::built_in(),
        metrics: crate::metrics::install(),
        body_timeout: args.body_timeout,
        ingest_permits: Arc::new(tokio::sync::Semaphore::new(
            args.max_concurrent_ingest.max(1),
        )),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    info!(%address, "listening");
    println!("Logektor listening on http://{address}");
    let (stopping_tx, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(true);
    });
    let limits = ConnectionLimits {
        max_connections: args.max_connections.max(1),
        header_timeout: args.header_timeout,
        write_timeout: args.body_timeout,
    };
    let server = serve_connections(listener, router(state), limits, stopping.clone());
    // A client that never finishes its request must not keep the buffer from being flushed.
    let mut drain_limit = stopping.clone();
    let drain_deadline = async move {
        let _ = drain_limit.wait_for(|stop| *stop).await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        () = server => {}
        () = drain_deadline => warn!(?DRAIN_TIMEOUT, "connections still open; flushing without them"),
    }

    info!("stopped accepting; in-flight requests done; flushing");
    let _ = stop_flusher.send(true);
    // A store that hangs must not keep the process from exiting: what is not flushed is in the
    // WAL, and the next start replays it.
    let flushed = tokio::time::timeout(FINAL_FLUSH_TIMEOUT, async {
        flusher.await.context("flusher task")?;
        // The flusher's last round flushed everything; make sure, and surface a failure.
        compute
            .spawn(async move { ingester.flush_now().await })
            .await
            .context("final flush task")?
            .context("final flush")?;
        anyhow::Ok(())
    })
    .await;
    // A compaction in progress is abandoned: its files are not committed and a later vacuum
    // or compaction does not need them.
    maintenance.abort();
    match flushed {
        Ok(result) => result?,
        Err(_) => warn!(
            ?FINAL_FLUSH_TIMEOUT,
            "the final flush did not finish; exiting anyway (the WAL keeps the unflushed events)"
        ),
    }
    info!("shutdown complete");
    Ok(())
}

/// Bounds on client connections.
struct ConnectionLimits {
    /// Connections served at once; the next `accept` waits for one to close.
    max_connections: usize,
    /// Time to send request headers; also how long an idle keep-alive connection stays.
    header_timeout: std::time::Duration,
    /// Time a response write may make no progress (the client stopped reading).
    write_timeout: std::time::Duration,
}

/// Accepts connections until `stopping` turns true, then waits for the open ones to finish
/// their requests. Differs from `axum::serve` in the bounds: at most `max_connections` at once
/// (a permit per connection, so a flood of clients waits in the kernel's backlog rather than
/// taking memory and file descriptors), and a header timeout, which hyper only enforces with a
/// timer that `axum::serve` does not install. Slow bodies are bounded by `--body-timeout` in
/// the handlers, and a client that stops reading its response by the same time
/// ([`crate::conn::WriteTimeout`]).
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => break,
            accepted = async {
                let permit = Arc::clone(&permits).acquire_owned().await;
                (permit, listener.accept().await)
            } => accepted,
        };
        let (stream, peer) = match accepted {
            (Ok(permit), Ok((stream, peer))) => ((stream, permit), peer),
            (_, Err(err)) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            (Err(_), _) => break,
        };
        let (stream, permit) = stream;
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let stream = crate::conn::WriteTimeout::new(stream, limits.write_timeout);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received"),
        () = terminate => info!("SIGTERM received"),
    }
}
