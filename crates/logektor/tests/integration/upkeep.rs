//! Table upkeep: compaction (alone and under concurrent ingest and queries), retention,
//! erasure down to the Parquet files, resumable import, export.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::support::{
    TestServer, binary, cli, delta_commits, offline, parquet_files, python_delta_counts,
    send_batches, track_events, wait_for_commit_after,
};

/// No background upkeep: the tests trigger each step themselves.
const MANUAL_UPKEEP: &[&str] = &["--compaction-interval", "0s", "--vacuum-interval", "0s"];

fn with_manual_upkeep<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    MANUAL_UPKEEP
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

/// The whole table's content in a stable order, as JSON text.
fn table_dump(server: &TestServer) -> String {
    serde_json::to_string(&server.sql(
        "SELECT message_id, type, event, user_id, timestamp, event_date, properties \
         FROM events ORDER BY message_id",
    ))
    .unwrap()
}

fn files(server: &TestServer) -> u64 {
    server.admin_ok("GET", "/v1/admin/table", None)["files"]
        .as_u64()
        .unwrap()
}

#[test]
fn many_tiny_flushes_compact_into_few_files_with_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &with_manual_upkeep(&["--flush-interval", "20ms"]),
    );
    let mut events = track_events("tiny", 600);
    // Two dates, so compaction works per partition.
    for event in events.iter_mut().skip(300) {
        event["timestamp"] = json!("2024-05-02T08:00:00.000Z");
    }
    // 40 flushes: 20 small files per date, past the default trigger of 16.
    for chunk in events.chunks(15) {
        let commits = delta_commits(dir.path());
        send_batches(&server, chunk, 15);
        wait_for_commit_after(dir.path(), commits);
    }
    let before = table_dump(&server);
    let grouped = "SELECT event_date, event, count(*) AS n, count(DISTINCT user_id) AS users \
                   FROM events GROUP BY 1, 2 ORDER BY 1, 2";
    let grouped_before = server.sql(grouped);
    let files_before = files(&server);
    assert!(files_before >= 30, "{files_before} files before compaction");

    let report = server.admin_ok("POST", "/v1/admin/table/optimize", None);
    assert_eq!(report["partitions"], json!(["2024-05-01", "2024-05-02"]));
    assert_eq!(report["files_removed"].as_u64(), Some(files_before));
    let info = server.admin_ok("GET", "/v1/admin/table", None);
    assert_eq!(info["files"], json!(2), "{info}");
    assert_eq!(info["rows"], json!(600), "{info}");
    assert!(info["last_compaction"]["version"].is_u64(), "{info}");
    assert_eq!(table_dump(&server), before);
    assert_eq!(server.sql(grouped), grouped_before);

    // The replaced files go with a vacuum past the grace period, and the answers stay.
    let on_disk = parquet_files(&dir.path().join("events")).len() as u64;
    assert_eq!(on_disk, files_before + 2);
    let kept = server.admin_ok("POST", "/v1/admin/table/vacuum", None);
    assert_eq!(kept["files_deleted"], json!(0), "default grace keeps them");
    let vacuumed = server.admin_ok("POST", "/v1/admin/table/vacuum?grace=0s", None);
    assert_eq!(vacuumed["files_deleted"].as_u64(), Some(files_before));
    assert_eq!(parquet_files(&dir.path().join("events")).len(), 2);
    assert_eq!(table_dump(&server), before);
    server.admin_ok("POST", "/v1/admin/table/checkpoint", None);

    // An independent reader agrees after compaction, vacuum and checkpoint.
    server.stop();
    assert_eq!(python_delta_counts(dir.path()), "600 600 ['event_date']");
}

#[test]
fn compaction_during_ingest_and_queries_never_loses_or_doubles_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(TestServer::start(
        dir.path(),
        &with_manual_upkeep(&["--flush-interval", "30ms"]),
    ));
    let started = Arc::new(AtomicI64::new(0));
    let acknowledged = Arc::new(AtomicI64::new(0));
    let batches = 80;
    let per_batch = 25;
    let sender = {
        let (server, started, acknowledged) = (
            Arc::clone(&server),
            Arc::clone(&started),
            Arc::clone(&acknowledged),
        );
        std::thread::spawn(move || {
            for i in 0..batches {
                let chunk = track_events(&format!("live{i}"), per_batch);
                started.fetch_add(per_batch as i64, Ordering::SeqCst);
                send_batches(&server, &chunk, per_batch);
                acknowledged.fetch_add(per_batch as i64, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    let compactor = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            let mut rounds = 0;
            for _ in 0..8 {
                std::thread::sleep(Duration::from_millis(150));
                let report = server.admin_ok("POST", "/v1/admin/table/optimize?force=true", None);
                if report["files_removed"].as_u64().unwrap_or(0) > 0 {
                    rounds += 1;
                }
            }
            rounds
        })
    };
    let mut checks = 0;
    while !sender.is_finished() {
        let low = acknowledged.load(Ordering::SeqCst);
        let row =
            &server.sql("SELECT count(*) AS n, count(DISTINCT message_id) AS d FROM events")[0];
        let high = started.load(Ordering::SeqCst);
        let (n, d) = (row["n"].as_i64().unwrap(), row["d"].as_i64().unwrap());
        assert_eq!(n, d, "a row was counted twice");
        assert!(low <= n && n <= high, "{low} <= {n} <= {high}");
        checks += 1;
    }
    sender.join().unwrap();
    let compactions = compactor.join().unwrap();
    assert!(
        compactions >= 2,
        "only {compactions} compactions removed files"
    );
    assert!(checks >= 5, "only {checks} checks ran");
    let total = (batches * per_batch) as i64;
    assert_eq!(
        server.count("SELECT count(DISTINCT message_id) AS n FROM events"),
        total
    );
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), total);
    let server = Arc::into_inner(server).expect("threads are done");
    server.stop();
    let restarted = TestServer::start(dir.path(), MANUAL_UPKEEP);
    assert_eq!(restarted.count("SELECT count(*) AS n FROM events"), total);
}

fn days_ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days))
        .format("%Y-%m-%dT12:00:00.000Z")
        .to_string()
}

#[test]
fn retention_expires_what_it_should_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &with_manual_upkeep(&[
            "--flush-interval",
            "50ms",
            "--retention",
            "30d",
            "--retention",
            "mobile=5d",
        ]),
    );
    let event = |id: &str, days: i64| json!({"type": "track", "event": "e", "userId": "u", "messageId": id, "timestamp": days_ago(days)});
    let commits = delta_commits(dir.path());
    send_batches(
        &server,
        &[
            event("web-100", 100),
            event("web-10", 10),
            event("web-1", 1),
            event("web-0", 0),
        ],
        10,
    );
    let mobile =
        json!({"batch": [event("mobile-100", 100), event("mobile-10", 10), event("mobile-1", 1)]});
    let response = server
        .client()
        .post(server.url("/v1/batch"))
        .basic_auth("mobile-key", Some(""))
        .json(&mobile)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    wait_for_commit_after(dir.path(), commits);
    while server.admin_ok("GET", "/v1/admin/table", None)["rows"] != json!(7) {
        std::thread::sleep(Duration::from_millis(50));
    }

    let report = server.admin_ok("POST", "/v1/admin/table/retention", None);
    // The 100-day-old date is past every rule: dropped whole, without rewriting anything.
    assert_eq!(
        report["partitions_dropped"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    let kept: Vec<String> = server
        .sql("SELECT message_id FROM events ORDER BY message_id")
        .iter()
        .map(|row| row["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kept, ["mobile-1", "web-0", "web-1", "web-10"]);
    // Applying it again changes nothing.
    server.admin_ok("POST", "/v1/admin/table/retention", None);
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 4);
}

#[test]
fn erasure_removes_a_person_from_queries_and_after_vacuum_from_every_file() {
    let dir = tempfile::tempdir().unwrap();
    // A long flush interval: part of the person's data is still buffered when they are erased.
    let server = TestServer::start(dir.path(), &with_manual_upkeep(&["--flush-interval", "1h"]));
    let mut events = track_events("keep", 200);
    for (i, event) in events.iter_mut().enumerate() {
        match i % 10 {
            0 => event["userId"] = json!("alice"),
            1 => {
                event.as_object_mut().unwrap().remove("userId");
                event["anonymousId"] = json!("anon-bob");
            }
            _ => {}
        }
    }
    send_batches(&server, &events, 50);
    assert_eq!(
        server.count("SELECT count(*) AS n FROM events WHERE user_id = 'alice'"),
        20
    );

    let (status, error) = server.admin("POST", "/v1/admin/forget", Some(&json!({})));
    assert_eq!(status, 400, "{error}");
    let (status, _) = server.admin("POST", "/v1/admin/forget", Some(&json!({"user_id": 42})));
    assert_eq!(status, 400);
    let (status, _) = server.sql_raw("SELECT 1", "json");
    assert_eq!(status, 200);
    let denied = server
        .client()
        .post(server.url("/v1/admin/forget"))
        .bearer_auth(crate::support::READ_TOKEN)
        .json(&json!({"user_id": "alice"}))
        .send()
        .unwrap();
    assert_eq!(denied.status(), 401, "a read token is not an admin token");

    let report = server.admin_ok(
        "POST",
        "/v1/admin/forget",
        Some(&json!({"user_id": "alice"})),
    );
    assert!(report["files_removed"].as_u64().unwrap() >= 1, "{report}");
    server.admin_ok(
        "POST",
        "/v1/admin/forget",
        Some(&json!({"anonymous_id": "anon-bob"})),
    );
    assert_eq!(
        server.count(
            "SELECT count(*) AS n FROM events WHERE user_id = 'alice' OR anonymous_id = 'anon-bob'"
        ),
        0
    );
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 160);

    // Before the vacuum the old files still hold the rows (readers of older snapshots need
    // them); after it, no Parquet file under the table does.
    let holds_person = |path: &Path| -> bool {
        let file = std::fs::File::open(path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        reader.into_iter().any(|batch| {
            let batch = batch.unwrap();
            ["user_id", "anonymous_id"].iter().any(|column| {
                let values = arrow::compute::cast(
                    batch.column_by_name(column).unwrap(),
                    &arrow::datatypes::DataType::Utf8,
                )
                .unwrap();
                let values = values
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .unwrap();
                values
                    .iter()
                    .flatten()
                    .any(|id| id == "alice" || id == "anon-bob")
            })
        })
    };
    let table_dir = dir.path().join("events");
    assert!(parquet_files(&table_dir).iter().any(|f| holds_person(f)));
    // The flush inside the erasure committed every WAL record, and with nothing newer the WAL's
    // segments (the raw request bodies) went with it.
    for segment in std::fs::read_dir(dir.path().join("wal")).unwrap() {
        let bytes = std::fs::read(segment.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(5).any(|w| w == b"alice"),
            "a WAL segment still holds the person"
        );
    }
    server.admin_ok("POST", "/v1/admin/table/vacuum?grace=0s", None);
    let remaining = parquet_files(&table_dir);
    assert!(!remaining.is_empty());
    for file in &remaining {
        assert!(
            !holds_person(file),
            "{} still holds the person",
            file.display()
        );
    }
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 160);
}

/// Writes `n` Segment messages as NDJSON (about 200 bytes each).
fn write_ndjson(path: &Path, n: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        writeln!(
            out,
            r#"{{"type":"track","event":"Imported {}","userId":"user-{}","messageId":"imp-{i}","timestamp":"2023-0{}-1{}T10:00:00Z","properties":{{"n":{i}}}}}"#,
            i % 7,
            i % 1000,
            1 + i % 9,
            i % 10
        )
        .unwrap();
    }
    out.flush().unwrap();
}

fn offline_count(data_dir: &Path, sql: &str) -> String {
    offline(data_dir, "csv", sql).trim().to_owned()
}

fn import(data_dir: &Path, files: &[&Path]) -> std::process::Output {
    Command::new(binary())
        .args(["import", "--data-dir"])
        .arg(data_dir)
        .args(files)
        .env("LOGEKTOR_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn import_of_a_million_events_resumes_after_a_kill_and_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("history.ndjson");
    let total = 1_000_000;
    write_ndjson(&file, total);

    let mut child = Command::new(binary())
        .args(["import", "--data-dir"])
        .arg(&data)
        .arg(&file)
        .env("LOGEKTOR_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut progress = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = progress
        .by_ref()
        .map(Result::unwrap)
        .find(|line| line.contains("committed"))
        .expect("progress output");
    assert!(first.contains("committed 100000 records"), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();
    let partial: usize = offline_count(&data, "SELECT count(*) AS n FROM events")
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (100_000..total).contains(&partial),
        "killed midway, yet {partial} rows"
    );

    let resumed = import(&data, &[&file]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("(resumed after {partial} records)")),
        "{stderr}"
    );
    assert_eq!(
        offline_count(
            &data,
            "SELECT count(*) AS n, count(DISTINCT message_id) AS d, min(timestamp) AS first FROM events"
        ),
        "n,d,first\n1000000,1000000,2023-01-10T10:00:00Z"
    );

    // Importing the same file again, or its first lines under another name, adds nothing.
    let again = import(&data, &[&file]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 records read"));
    let overlap = dir.path().join("overlap.jsonl");
    write_ndjson(&overlap, 1000);
    let overlapping = import(&data, &[&overlap]);
    let stderr = String::from_utf8_lossy(&overlapping.stderr);
    assert!(
        stderr.contains("0 imported, 1000 duplicates skipped"),
        "{stderr}"
    );
    assert_eq!(
        offline_count(&data, "SELECT count(*) AS n FROM events"),
        "n\n1000000"
    );
}

#[test]
fn export_round_trips_through_import() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let server = TestServer::start(&source, &with_manual_upkeep(&["--flush-interval", "50ms"]));
    let mut events = track_events("exp", 300);
    for event in events.iter_mut().skip(100) {
        event["timestamp"] = json!("2024-05-03T00:00:00.000Z");
    }
    send_batches(&server, &events, 100);
    server.stop();

    for format in ["parquet", "csv", "ndjson"] {
        let out = dir.path().join(format!("may-1.{format}"));
        let output = Command::new(binary())
            .args([
                "export",
                "--from",
                "2024-05-01",
                "--to",
                "2024-05-02",
                "--format",
                format,
            ])
            .arg("--data-dir")
            .arg(&source)
            .arg("--out")
            .arg(&out)
            .env("LOGEKTOR_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stderr).contains("exported 100 events"));
        if format == "ndjson" {
            // Our NDJSON export is rows, not Segment messages; Parquet and CSV import back.
            continue;
        }
        let target = dir.path().join(format!("target-{format}"));
        let imported = import(&target, &[&out]);
        assert!(
            imported.status.success(),
            "{}",
            String::from_utf8_lossy(&imported.stderr)
        );
        assert_eq!(
            offline_count(
                &target,
                "SELECT count(*) AS n, count(DISTINCT message_id) AS d, min(event_date) AS day, max(source) AS source FROM events"
            ),
            "n,d,day,source\n100,100,2024-05-01,default"
        );
        assert_eq!(
            offline_count(
                &target,
                "SELECT properties FROM events WHERE message_id = 'exp-7'"
            ),
            offline_count(
                &source,
                "SELECT properties FROM events WHERE message_id = 'exp-7'"
            )
        );
    }
}

fn cli_json(args: &[&str], data_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&cli(args, data_dir)).unwrap()
}

#[test]
fn table_and_forget_commands_work_offline() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &with_manual_upkeep(&["--flush-interval", "20ms"]),
    );
    for chunk in track_events("cli", 100).chunks(10) {
        let commits = delta_commits(dir.path());
        send_batches(&server, chunk, 10);
        wait_for_commit_after(dir.path(), commits);
    }
    server.stop();

    let info = cli_json(&["table", "info"], dir.path());
    assert_eq!(info["rows"], json!(100), "{info}");
    assert!(info["files"].as_u64().unwrap() >= 10, "{info}");
    let report = cli_json(&["table", "optimize", "--force"], dir.path());
    assert_eq!(report["partitions"], json!(["2024-05-01"]), "{report}");
    let vacuumed = cli_json(&["table", "vacuum", "--grace", "0s"], dir.path());
    assert!(
        vacuumed["files_deleted"].as_u64().unwrap() >= 10,
        "{vacuumed}"
    );
    let checkpoint = cli_json(&["table", "checkpoint"], dir.path());
    assert!(checkpoint["version"].is_u64(), "{checkpoint}");
    let info = cli_json(&["table", "info"], dir.path());
    assert_eq!(
        (info["files"].clone(), info["rows"].clone()),
        (json!(1), json!(100))
    );

    // user-3 is every 17th event of track_events.
    let before = offline_count(
        dir.path(),
        "SELECT count(*) AS n FROM events WHERE user_id = 'user-3'",
    );
    assert_eq!(before, "n\n6");
    cli_json(&["forget", "--user-id", "user-3"], dir.path());
    assert_eq!(
        offline_count(
            dir.path(),
            "SELECT count(*) AS n FROM events WHERE user_id = 'user-3'"
        ),
        "n\n0"
    );
    let missing = Command::new(binary())
        .args(["forget", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("give --user-id or --anonymous-id"));

    // The server starts on the tidied table and sees the same rows.
    let server = TestServer::start(dir.path(), MANUAL_UPKEEP);
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 94);
}

/// Regression: delta-rs lets two compactions of the same files both commit (it ignores
/// removals without data change), which doubled rows. The server runs them one at a time.
#[test]
fn concurrent_compaction_requests_never_double_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(TestServer::start(
        dir.path(),
        &with_manual_upkeep(&["--flush-interval", "20ms"]),
    ));
    for chunk in track_events("race", 300).chunks(10) {
        let commits = delta_commits(dir.path());
        send_batches(&server, chunk, 10);
        wait_for_commit_after(dir.path(), commits);
    }
    let racers: Vec<_> = (0..3)
        .map(|_| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                server.admin_ok("POST", "/v1/admin/table/optimize?force=true", None)
            })
        })
        .collect();
    let removed: u64 = racers
        .into_iter()
        .map(|racer| racer.join().unwrap()["files_removed"].as_u64().unwrap())
        .sum();
    assert_eq!(removed, 30, "each small file is compacted exactly once");
    let row = &server.sql("SELECT count(*) AS n, count(DISTINCT message_id) AS d FROM events")[0];
    assert_eq!(
        (row["n"].clone(), row["d"].clone()),
        (json!(300), json!(300))
    );
    let server = Arc::into_inner(server).expect("threads are done");
    server.stop();
    assert_eq!(python_delta_counts(dir.path()), "300 300 ['event_date']");
}

/// The same race across processes: offline `table optimize` runs beside the server's own
/// compaction. The compaction commit's application transaction makes all but one fail.
#[test]
fn compactions_racing_across_processes_never_double_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &with_manual_upkeep(&["--flush-interval", "20ms"]),
    );
    for chunk in track_events("xrace", 300).chunks(10) {
        let commits = delta_commits(dir.path());
        send_batches(&server, chunk, 10);
        wait_for_commit_after(dir.path(), commits);
    }
    let racers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(binary())
                .args(["table", "optimize", "--force", "--data-dir"])
                .arg(dir.path())
                .env("LOGEKTOR_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (status, answer) = server.admin("POST", "/v1/admin/table/optimize?force=true", None);
    assert!(status == 200 || status == 409, "{status} {answer}");
    for racer in racers {
        let output = racer.wait_with_output().unwrap();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("Concurrent transaction"), "{stderr}");
        }
    }
    // The losers removed what they had written: the 30 replaced files and one merged file.
    assert_eq!(parquet_files(&dir.path().join("events")).len(), 31);
    // Whoever won, the table holds each row once: through the server (after it catches up)
    // and through an independent reader.
    server.admin_ok("POST", "/v1/admin/table/checkpoint", None);
    let row = &server.sql("SELECT count(*) AS n, count(DISTINCT message_id) AS d FROM events")[0];
    assert_eq!(
        (row["n"].clone(), row["d"].clone()),
        (json!(300), json!(300))
    );
    let info = server.admin_ok("GET", "/v1/admin/table", None);
    assert_eq!(
        (info["rows"].clone(), info["files"].clone()),
        (json!(300), json!(1)),
        "{info}"
    );
    server.stop();
    assert_eq!(python_delta_counts(dir.path()), "300 300 ['event_date']");
}

#[test]
fn the_server_compacts_vacuums_and_expires_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            "--flush-interval",
            "20ms",
            "--compaction-interval",
            "1s",
            "--compaction-min-files",
            "4",
            "--vacuum-interval",
            "1s",
            "--vacuum-grace",
            "0s",
            "--retention",
            "3650d",
        ],
    );
    let mut events = track_events("sched", 80);
    // One event far past the retention: the schedule drops its date.
    events[0]["timestamp"] = json!("2001-01-01T00:00:00.000Z");
    for chunk in events.chunks(10) {
        let commits = delta_commits(dir.path());
        send_batches(&server, chunk, 10);
        wait_for_commit_after(dir.path(), commits);
    }
    let table_dir = dir.path().join("events");
    let started = std::time::Instant::now();
    loop {
        let info = server.admin_ok("GET", "/v1/admin/table", None);
        if info["files"] == json!(1) && parquet_files(&table_dir).len() == 1 {
            assert_eq!(info["rows"], json!(79), "{info}");
            assert!(info["last_compaction"]["version"].is_u64(), "{info}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no scheduled compaction, vacuum and retention within 60 s: {info}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        server.count("SELECT count(DISTINCT message_id) AS n FROM events"),
        79
    );
    // A checkpoint followed the compaction.
    let checkpoints = std::fs::read_dir(table_dir.join("_delta_log"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().contains(".checkpoint."))
        .count();
    assert!(checkpoints >= 1);
}

/// `(thread name, nice value)` of each thread of process `pid`, from `/proc`.
#[cfg(target_os = "linux")]
fn thread_nice_values(pid: u32) -> Vec<(String, i64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // Fields after "pid (comm)": state is field 3, nice field 19.
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        let nice = after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap();
        threads.push((name.trim().to_owned(), nice));
    }
    threads
}

#[cfg(target_os = "linux")]
#[test]
fn upkeep_runs_below_the_priority_of_ingest_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &with_manual_upkeep(&[]));
    send_batches(&server, &track_events("nice", 40), 10);
    // Compaction on request runs on the upkeep runtime too (and must still work there).
    let report = server.admin_ok("POST", "/v1/admin/table/optimize?force=true", None);
    assert!(report["files_removed"].as_u64().is_some(), "{report}");
    let threads = thread_nice_values(server.pid());
    let nice_of = |prefix: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect()
    };
    let upkeep = nice_of("logektor-upkeep");
    assert!(!upkeep.is_empty(), "no upkeep thread in {threads:?}");
    assert!(upkeep.iter().all(|&nice| nice == 10), "{threads:?}");
    for busy in ["logektor-comput", "logektor-http"] {
        let nice = nice_of(busy);
        assert!(!nice.is_empty(), "no {busy} thread in {threads:?}");
        assert!(nice.iter().all(|&n| n == 0), "{threads:?}");
    }
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 40);
}
