//! `logektor sql`: the same SQL without a server, including events only the WAL holds.

use std::process::Command;

use crate::support::{TestServer, binary, offline, send_batches, track_events};

#[test]
fn offline_sql_reads_the_table_and_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    send_batches(&server, &track_events("off", 120), 40);
    server.stop();
    assert_eq!(
        offline(
            dir.path(),
            "csv",
            "SELECT count(*) AS n, count(DISTINCT user_id) AS users FROM events"
        ),
        "n,users\n120,17\n"
    );
    let table = offline(
        dir.path(),
        "table",
        "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event",
    );
    assert!(table.contains("| Event 0 | 24 |"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&offline(
        dir.path(),
        "json",
        "SELECT count(*) AS n FROM events",
    ))
    .unwrap();
    assert_eq!(json, serde_json::json!([{"n": 120}]));

    // After a crash, unflushed events are still answered from the WAL.
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    send_batches(&server, &track_events("crash", 30), 30);
    server.kill();
    assert_eq!(
        offline(dir.path(), "ndjson", "SELECT count(*) AS n FROM events"),
        "{\"n\":150}\n"
    );

    // Errors are reported with a non-zero exit.
    let output = Command::new(binary())
        .args(["sql", "--data-dir"])
        .arg(dir.path())
        .arg("DROP TABLE events")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("read-only"));
}
