//! The promises of RELIABILITY.md: a crash loop under load (SIGKILL and crash points during
//! flush, commit, compaction and replay), object storage failing and stalling, a full WAL
//! volume, slow clients, overload, and hostile JSON.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestServer, WRITE_KEY, python_delta_counts};

/// A small deterministic generator (xorshift64*), so a failing crash loop can be rerun with
/// the seed it printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Where the load threads send: the running server's base URL, or `None` while it is down.
type Target = Arc<Mutex<Option<String>>>;

/// What the load threads learned: every message id acknowledged with a 200.
#[derive(Default)]
struct Acks {
    ids: Mutex<HashSet<String>>,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// A client like an SDK's: it sends a batch until it is acknowledged (the same message ids
/// on every retry), then builds the next; it stops after `stop` once its batch is through.
fn load_thread(
    thread: usize,
    per_batch: usize,
    target: Target,
    acks: Arc<Acks>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut counter = 0u64;
        let mut pending: Option<(Vec<String>, Value)> = None;
        loop {
            if pending.is_none() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let ids: Vec<String> = (0..per_batch)
                    .map(|_| {
                        counter += 1;
                        format!("crash-{thread}-{counter}")
                    })
                    .collect();
                let batch: Vec<Value> = ids
                    .iter()
                    .map(|id| {
                        json!({"type": "track", "event": "Crash Loop", "messageId": id,
                               "anonymousId": format!("anon-{thread}"),
                               "properties": {"thread": thread, "padding": "x".repeat(200)}})
                    })
                    .collect();
                pending = Some((ids, json!({"batch": batch})));
            }
            let Some(base) = target.lock().unwrap().clone() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let (ids, body) = pending.as_ref().unwrap();
            match client
                .post(format!("{base}/v1/batch"))
                .basic_auth(WRITE_KEY, Some(""))
                .json(body)
                .send()
            {
                Ok(response) if response.status() == 200 => {
                    acks.ids.lock().unwrap().extend(ids.iter().cloned());
                    pending = None;
                }
                Ok(response) => {
                    assert!(
                        matches!(response.status().as_u16(), 429 | 503),
                        "unexpected status {}",
                        response.status()
                    );
                    acks.refused.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(_) => {
                    acks.failed.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    })
}

/// Checks that the table holds every acknowledged id exactly once and nothing else, through the
/// server's SQL and through an independent Delta reader (no half-written file or commit is
/// visible to either).
fn verify_exactly_once(server: &TestServer, acked: &HashSet<String>, like: &str) {
    let rows = server.sql(&format!(
        "SELECT message_id FROM events WHERE message_id LIKE '{like}'"
    ));
    let mut seen = HashSet::new();
    for row in &rows {
        let id = row["message_id"].as_str().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "message id {id} is stored twice");
    }
    let missing: Vec<_> = acked.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events are missing, e.g. {missing:?}",
        acked.difference(&seen).count()
    );
    let unexpected: Vec<_> = seen.difference(acked).take(5).collect();
    assert!(
        unexpected.is_empty(),
        "events stored that were never acknowledged (every batch is retried until it is): {unexpected:?}"
    );
}

/// The crash loop. `LOGEKTOR_CRASH_KILLS` sets the number of crashes (default 7, one of each kind; the CI short
/// form; RELIABILITY.md records a long run), `LOGEKTOR_CRASH_SEED` replays a run.
#[test]
fn crash_loop_loses_and_duplicates_no_acknowledged_event() {
    let kills: usize = std::env::var("LOGEKTOR_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let seed: u64 = std::env::var("LOGEKTOR_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash loop: {kills} crashes, LOGEKTOR_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let target: Target = Arc::default();
    let acks = Arc::new(Acks::default());
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            load_thread(
                t,
                25,
                Arc::clone(&target),
                Arc::clone(&acks),
                Arc::clone(&stop),
            )
        })
        .collect();
    // Frequent flushes and compactions, so kills land in them as well as between them.
    let base_args = [
        "--flush-interval",
        "100ms",
        "--compaction-interval",
        "700ms",
        "--compaction-min-files",
        "3",
        // Small targets keep each compaction quick (only recent flush files are merged), so
        // the compaction crash point is reached within a round.
        "--compaction-target-size",
        "2MiB",
    ];
    let modes = [
        "kill",
        "flush-before-commit",
        "kill",
        "flush-after-commit",
        "replay",
        "kill",
        "compaction-before-commit",
    ];
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0..kills {
        let mode = modes[round % modes.len()];
        let mut args: Vec<String> = base_args.iter().map(|s| (*s).to_owned()).collect();
        if mode != "kill" {
            let hit = 1 + rng.below(3);
            args.extend(["--crash-at".to_owned(), format!("{mode}:{hit}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = match TestServer::try_start(dir.path(), &args) {
            Ok(server) => server,
            Err(status) => {
                // Only the replay crash point fires before the server listens.
                assert_eq!(mode, "replay", "server failed to start: {status}");
                *outcomes.entry("crash point replay".into()).or_default() += 1;
                continue;
            }
        };
        *target.lock().unwrap() = Some(server.base.clone());
        let crashed = match mode {
            // Nothing left to replay this time: the armed point cannot fire; kill instead.
            "kill" | "replay" => None,
            _ => server.wait_exit(Duration::from_secs(20)),
        };
        match crashed {
            Some(status) => {
                assert!(!status.success(), "a crash point exits abnormally");
                *outcomes.entry(format!("crash point {mode}")).or_default() += 1;
            }
            None => {
                std::thread::sleep(Duration::from_millis(150 + rng.below(1200)));
                server.kill();
                *outcomes.entry("SIGKILL under load".into()).or_default() += 1;
            }
        }
        *target.lock().unwrap() = None;
    }

    // A last clean start: every client's pending batch goes through, then the check.
    let server = TestServer::start(dir.path(), &base_args);
    *target.lock().unwrap() = Some(server.base.clone());
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }
    let acked = acks.ids.lock().unwrap().clone();
    assert!(
        acked.len() >= 4 * 25,
        "the load made progress: {}",
        acked.len()
    );
    verify_exactly_once(&server, &acked, "crash-%");
    server.stop();
    // An independent Delta reader sees exactly those rows: no uncommitted file, no torn commit.
    let counts = python_delta_counts(dir.path());
    let mut parts = counts.split_whitespace();
    let rows: usize = parts.next().unwrap().parse().unwrap();
    let distinct: usize = parts.next().unwrap().parse().unwrap();
    assert_eq!(
        (rows, distinct),
        (acked.len(), acked.len()),
        "delta-rs (Python) reads {counts}"
    );
    eprintln!(
        "crash loop: {kills} crashes ({outcomes:?}); {} events acknowledged and verified exactly once; {} requests refused (429/503), {} failed (server down)",
        acked.len(),
        acks.refused.load(Ordering::Relaxed),
        acks.failed.load(Ordering::Relaxed),
    );
}

/// Posts one batch of `n` track events with ids `{prefix}-{i}`; returns the status, the
/// Retry-After header and the ids.
fn post_batch(server: &TestServer, prefix: &str, n: usize) -> (u16, Option<String>, Vec<String>) {
    let ids: Vec<String> = (0..n)
        .map(|i| format!("{prefix}-{i}-{}", uuid_like()))
        .collect();
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"type": "track", "event": "Fault", "messageId": id, "anonymousId": "a",
                   "properties": {"padding": "y".repeat(300)}})
        })
        .collect();
    let response = server
        .client()
        .post(server.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({ "batch": batch }))
        .send()
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry_after, ids)
}

fn uuid_like() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn health_ok(server: &TestServer) {
    let response = server.client().get(server.url("/health")).send().unwrap();
    assert_eq!(response.status(), 200);
}

/// Posts until `ready` says the server is back (a 200), for up to a minute.
fn post_until_accepted(server: &TestServer, prefix: &str, acked: &mut HashSet<String>) {
    let started = Instant::now();
    loop {
        let (status, _, ids) = post_batch(server, prefix, 10);
        if status == 200 {
            acked.extend(ids);
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not accepting again: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until SQL sees `n` rows with ids like `like`.
fn wait_for_rows(server: &TestServer, like: &str, n: usize) {
    let started = Instant::now();
    loop {
        let (status, body) = server.sql_raw(
            &format!("SELECT count(*) AS n FROM events WHERE message_id LIKE '{like}'"),
            "json",
        );
        if status == 200 {
            let rows: Vec<Value> = serde_json::from_slice(&body).unwrap();
            if rows[0]["n"].as_u64() == Some(n as u64) {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rows never reached {n}: {}",
            String::from_utf8_lossy(&body)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn object_store_outage_fills_the_wal_up_to_the_cap_then_503_then_everything_lands() {
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("store-faults");
    let switch_arg = switch.to_str().unwrap().to_owned();
    let args = [
        "--inject-store-faults",
        &switch_arg,
        "--flush-interval",
        "100ms",
        "--max-buffer-bytes",
        "2MiB",
    ];
    let server = TestServer::start(dir.path(), &args);
    let mut acked = HashSet::new();
    let (status, _, ids) = post_batch(&server, "outage", 20);
    assert_eq!(status, 200);
    acked.extend(ids);
    wait_for_rows(&server, "outage-%", acked.len());

    std::fs::write(&switch, "fail").unwrap();
    let mut refused = None;
    for _ in 0..5_000 {
        let (status, retry_after, ids) = post_batch(&server, "outage", 50);
        match status {
            200 => acked.extend(ids),
            503 => {
                refused = Some(retry_after);
                break;
            }
            other => panic!("unexpected status {other} during the outage"),
        }
    }
    let retry_after = refused.expect("the buffer cap is reached and ingest answers 503");
    assert!(
        retry_after.is_some(),
        "a 503 carries Retry-After so clients back off"
    );
    assert!(
        acked.len() > 1_000,
        "ingest kept accepting into the WAL while the store was down ({} events)",
        acked.len()
    );
    health_ok(&server);
    let rss = server.rss_bytes();
    assert!(
        rss < 600 * 1024 * 1024,
        "memory stays bounded at the cap: RSS {rss}"
    );

    // The store comes back: the backlog flushes and ingest resumes.
    std::fs::remove_file(&switch).unwrap();
    post_until_accepted(&server, "outage", &mut acked);
    wait_for_rows(&server, "outage-%", acked.len());
    verify_exactly_once(&server, &acked, "outage-%");
    // Durable, not just buffered: a crash now loses nothing either.
    server.kill();
    let server = TestServer::start(dir.path(), &[]);
    verify_exactly_once(&server, &acked, "outage-%");
}

#[test]
fn object_store_stall_then_recovery_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("store-faults");
    let switch_arg = switch.to_str().unwrap().to_owned();
    let args = [
        "--inject-store-faults",
        &switch_arg,
        "--flush-interval",
        "100ms",
    ];
    let server = TestServer::start(dir.path(), &args);
    std::fs::write(&switch, "stall").unwrap();
    // A flush is stuck in the store; acknowledgements do not wait for it and queries of the
    // buffer still answer.
    let mut acked = HashSet::new();
    for _ in 0..20 {
        let (status, _, ids) = post_batch(&server, "stall", 20);
        assert_eq!(status, 200);
        acked.extend(ids);
    }
    health_ok(&server);
    std::fs::remove_file(&switch).unwrap();
    wait_for_rows(&server, "stall-%", acked.len());
    server.stop();
    let server = TestServer::start(dir.path(), &[]);
    verify_exactly_once(&server, &acked, "stall-%");
}

/// A tmpfs mounted over the WAL folder, unmounted on drop.
struct SmallVolume(std::path::PathBuf);

impl SmallVolume {
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Self(path.to_owned()))
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn full_wal_volume_answers_503_keeps_the_wal_intact_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_volume) = SmallVolume::mount(&dir.path().join("wal"), "1m") else {
        // Mounting needs root (CI runs as root); say so loudly rather than pass silently.
        eprintln!("SKIPPED full_wal_volume: cannot mount a tmpfs here (needs root)");
        return;
    };
    let switch = dir.path().join("store-faults");
    let switch_arg = switch.to_str().unwrap().to_owned();
    let args = [
        "--inject-store-faults",
        &switch_arg,
        "--flush-interval",
        "100ms",
    ];
    // The volume (1 MiB) is smaller than one WAL segment (64 MiB by default): the open
    // segment fills it, and only cutting that segment back frees space.
    let server = TestServer::start(dir.path(), &args);
    // Nothing drains the WAL while the store stalls, so the volume fills.
    std::fs::write(&switch, "stall").unwrap();
    let mut acked = HashSet::new();
    let mut refused = None;
    for _ in 0..1_000 {
        let (status, retry_after, ids) = post_batch(&server, "walfull", 20);
        match status {
            200 => acked.extend(ids),
            503 => {
                refused = Some(retry_after);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let retry_after = refused.expect("a full WAL volume answers 503");
    assert!(retry_after.is_some(), "with Retry-After");
    assert!(!acked.is_empty());
    health_ok(&server);
    // Still full: still refused, and nothing of the refused requests is stored.
    let (status, _, _) = post_batch(&server, "walfull-refused", 20);
    assert_eq!(status, 503);

    // The store comes back, the flush commits, the WAL segments go, space returns.
    std::fs::remove_file(&switch).unwrap();
    post_until_accepted(&server, "walfull", &mut acked);
    wait_for_rows(&server, "walfull-%", acked.len());
    // No torn or corrupt record: a restart replays the WAL without complaint.
    server.kill();
    let server = TestServer::start(dir.path(), &[]);
    verify_exactly_once(&server, &acked, "walfull-%");
    assert_eq!(
        server.count("SELECT count(*) AS n FROM events WHERE message_id LIKE 'walfull-refused%'"),
        0
    );
    server.stop();
}

/// Opens a raw connection to the server.
fn connect(server: &TestServer) -> TcpStream {
    let address = server.base.trim_start_matches("http://");
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection (or the read timeout); returns what it sent.
fn read_to_close(mut stream: TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn slow_and_stalled_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
            "--max-connections",
            "4",
        ],
    );
    // Slowloris: headers that never end. The connection is closed after the header timeout.
    let mut slow_headers = connect(&server);
    slow_headers
        .write_all(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let answer = read_to_close(slow_headers);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed by the header timeout, not the client's read timeout"
    );
    assert!(!answer.contains("200 OK"), "{answer}");

    // A body that stops halfway: 408 after the body timeout.
    let mut slow_body = connect(&server);
    slow_body
        .write_all(
            format!(
                "POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-Write-Key: {WRITE_KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"batch\": ["
            )
            .as_bytes(),
        )
        .unwrap();
    let answer = read_to_close(slow_body);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within"), "{answer}");

    // The sign-in form too (it is read like every other body).
    let mut slow_login = connect(&server);
    slow_login
        .write_all(
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=",
        )
        .unwrap();
    let answer = read_to_close(slow_login);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A client that sends requests but never reads the answers: once the responses fill the
    // socket buffers, the stalled write times out and the connection is closed.
    let mut no_reader = connect(&server);
    no_reader
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let requests = b"GET /t.js HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3_000);
    let _ = no_reader.write_all(&requests);
    std::thread::sleep(Duration::from_secs(4));
    let started = Instant::now();
    let answer = read_to_close(no_reader);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed by the server, not by the client's read timeout"
    );
    let answered = answer.matches("HTTP/1.1 200").count();
    assert!(
        answered < 3_000,
        "the server stopped writing to a client that does not read ({answered} answers)"
    );

    // Idle connections fill every slot; they are closed after the header timeout, so a new
    // client is served instead of waiting forever.
    let idle: Vec<TcpStream> = (0..4).map(|_| connect(&server)).collect();
    health_ok(&server);
    drop(idle);
}

#[test]
fn overload_sheds_ingest_with_429_and_health_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &["--max-concurrent-ingest", "2", "--body-timeout", "30s"],
    );
    // Two uploads in progress hold both ingest permits.
    let holders: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = connect(&server);
            stream
                .write_all(
                    format!(
                        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-Write-Key: {WRITE_KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
                    )
                    .as_bytes(),
                )
                .unwrap();
            stream
        })
        .collect();
    // Give both requests time to reach the router; neither has been answered.
    std::thread::sleep(Duration::from_millis(500));
    for holder in &holders {
        let mut probe = holder.try_clone().unwrap();
        probe.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 64];
        assert!(
            matches!(probe.read(&mut buffer), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock),
            "an upload in progress is not answered yet"
        );
        probe.set_nonblocking(false).unwrap();
    }
    // The third is shed at once, before its body is read, with Retry-After.
    let (status, shed, _) = post_batch(&server, "shed", 5);
    assert_eq!(status, 429);
    assert_eq!(shed.as_deref(), Some("1"));
    health_ok(&server);
    // Reads are not ingest: SQL still answers.
    assert!(server.count("SELECT count(*) AS n FROM events") >= 0);
    drop(holders);
    let mut acked = HashSet::new();
    post_until_accepted(&server, "shed-after", &mut acked);
    wait_for_rows(&server, "shed-after-%", acked.len());
}

/// Posts a raw body to `/v1/track` and returns the status and the JSON answer.
fn post_raw(server: &TestServer, body: Vec<u8>) -> (u16, Value) {
    let response = server
        .client()
        .post(server.url("/v1/track"))
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn hostile_json_has_a_defined_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let track = |id: &str, properties: &str| {
        format!(
            r#"{{"event": "Hostile", "anonymousId": "h", "messageId": "{id}", "properties": {properties}}}"#
        )
        .into_bytes()
    };

    // Nesting deeper than the parser's recursion limit (128): refused, not a stack overflow.
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, answer) = post_raw(&server, track("hostile-deep", &deep));
    assert_eq!(status, 400, "{answer}");
    // Nesting the parser accepts is stored as JSON text.
    let nested = format!("{}1{}", "{\"a\":".repeat(50), "}".repeat(50));
    let (status, answer) = post_raw(&server, track("hostile-nested", &nested));
    assert_eq!(status, 200, "{answer}");

    // A number beyond f64: refused with the parser's reason.
    let (status, answer) = post_raw(&server, track("hostile-huge", r#"{"n": 1e400}"#));
    assert_eq!(status, 400, "{answer}");
    // A long integer beyond u64 is kept as a float (its digits beyond f64's precision are lost).
    let (status, answer) = post_raw(
        &server,
        track("hostile-bigint", r#"{"n": 123456789012345678901234567890}"#),
    );
    assert_eq!(status, 200, "{answer}");

    // Invalid UTF-8 inside a string: refused.
    let mut invalid = track("hostile-utf8", r#"{"s": "AB"}"#);
    let at = invalid.windows(2).position(|w| w == b"AB").unwrap();
    invalid[at] = 0xff;
    invalid[at + 1] = 0xfe;
    let (status, answer) = post_raw(&server, invalid);
    assert_eq!(status, 400, "{answer}");

    // A raw NUL byte is not JSON; an escaped one is a character like any other and is kept.
    let mut raw_nul = track("hostile-rawnul", r#"{"s": "AB"}"#);
    let at = raw_nul.windows(2).position(|w| w == b"AB").unwrap();
    raw_nul[at] = 0;
    let (status, answer) = post_raw(&server, raw_nul);
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = post_raw(&server, track("hostile-nul", r#"{"s": "a\u0000b"}"#));
    assert_eq!(status, 200, "{answer}");

    // 10,000 properties exceed the 32 KB event limit: 413 naming the limit.
    let many: Vec<String> = (0..10_000).map(|i| format!("\"p{i}\": {i}")).collect();
    let (status, answer) = post_raw(
        &server,
        track("hostile-many", &format!("{{{}}}", many.join(","))),
    );
    assert_eq!(status, 413, "{answer}");
    // 1,000 small ones fit and are all kept.
    let some: Vec<String> = (0..1_000).map(|i| format!("\"p{i}\": {i}")).collect();
    let (status, answer) = post_raw(
        &server,
        track("hostile-some", &format!("{{{}}}", some.join(","))),
    );
    assert_eq!(status, 200, "{answer}");

    // A lone surrogate escape (JSON.stringify's output for a title cut inside an emoji) names
    // no character: kept as U+FFFD rather than refusing the event.
    let (status, answer) = post_raw(
        &server,
        track(
            "hostile-surrogate",
            r#"{"s": "ab\ud83d", "pair": "\ud83d\ude00"}"#,
        ),
    );
    assert_eq!(status, 200, "{answer}");

    // Duplicate keys: the last one wins, as in JavaScript's JSON.parse.
    let (status, answer) = post_raw(
        &server,
        track("hostile-dup", r#"{"k": "first", "k": "last"}"#),
    );
    assert_eq!(status, 200, "{answer}");

    let rows = server.sql(
        "SELECT message_id, properties FROM events WHERE message_id LIKE 'hostile-%' ORDER BY message_id",
    );
    let stored: BTreeMap<String, Value> = rows
        .iter()
        .map(|row| {
            (
                row["message_id"].as_str().unwrap().to_owned(),
                serde_json::from_str(row["properties"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    let ids: Vec<&str> = stored.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        [
            "hostile-bigint",
            "hostile-dup",
            "hostile-nested",
            "hostile-nul",
            "hostile-some",
            "hostile-surrogate"
        ]
    );
    assert_eq!(stored["hostile-surrogate"]["s"], "ab\u{fffd}");
    assert_eq!(stored["hostile-surrogate"]["pair"], "\u{1f600}");
    assert_eq!(stored["hostile-dup"]["k"], "last");
    assert_eq!(stored["hostile-nul"]["s"], "a\u{0}b");
    assert_eq!(stored["hostile-bigint"]["n"], json!(1.2345678901234568e29));
    assert_eq!(stored["hostile-some"].as_object().unwrap().len(), 1_000);
    let mut depth = 0;
    let mut value = &stored["hostile-nested"];
    while let Some(inner) = value.get("a") {
        depth += 1;
        value = inner;
    }
    assert_eq!(depth, 50);
}
