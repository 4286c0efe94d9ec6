//! Crash and restart: every acknowledged event survives exactly once; the table is readable by
//! an independent Delta reader.

use std::process::Command;

use crate::support::{
    TestServer, delta_commits, python_delta_counts, send_batches, track_events,
    wait_for_commit_after,
};

#[test]
fn kill_9_loses_no_acknowledged_event_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    // Some events flushed, some only in the WAL when the process dies.
    let server = TestServer::start(dir.path(), &["--flush-interval", "200ms"]);
    send_batches(&server, &track_events("flushed", 400), 100);
    wait_for_commit_after(dir.path(), 1);
    let server = {
        // Stop the flusher from catching up with the next events: restart with a long interval.
        server.kill();
        TestServer::start(dir.path(), &["--flush-interval", "1h"])
    };
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 400);
    send_batches(&server, &track_events("walonly", 700), 100);
    server.kill();

    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    let counts = &server.sql(
        "SELECT count(*) AS n, count(DISTINCT message_id) AS d, \
         sum(CASE WHEN message_id LIKE 'walonly-%' THEN 1 ELSE 0 END) AS w FROM events",
    )[0];
    assert_eq!(counts["n"], 1100);
    assert_eq!(counts["d"], 1100);
    assert_eq!(counts["w"], 700);
    // Replayed rows are committed by the next flush, once.
    server.stop();
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    assert_eq!(
        server.count("SELECT count(DISTINCT message_id) AS n FROM events"),
        1100
    );
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 1100);
    server.stop();
}

#[test]
fn kill_9_right_after_acks_in_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = 0;
    for round in 0..4 {
        let server = TestServer::start(dir.path(), &["--flush-interval", "50ms"]);
        assert_eq!(
            server.count("SELECT count(*) AS n FROM events"),
            acknowledged,
            "round {round}"
        );
        send_batches(&server, &track_events(&format!("k{round}"), 250), 50);
        acknowledged += 250;
        server.kill();
    }
    let server = TestServer::start(dir.path(), &[]);
    assert_eq!(
        server.count("SELECT count(DISTINCT message_id) AS n FROM events"),
        acknowledged
    );
    assert_eq!(
        server.count("SELECT count(*) AS n FROM events"),
        acknowledged
    );
    server.stop();
}

#[test]
fn batches_merged_between_flushes_are_written_once() {
    let dir = tempfile::tempdir().unwrap();
    // The flusher merges the buffer's small batches on each tick that is not a flush (every
    // 100 ms here, flushing every 400 ms), so requests sent for a while interleave merges and
    // flushes.
    let server = TestServer::start(dir.path(), &["--flush-interval", "400ms"]);
    let events = track_events("merged", 3000);
    let started = std::time::Instant::now();
    for chunk in events.chunks(300) {
        send_batches(&server, chunk, 5);
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    assert!(started.elapsed() > std::time::Duration::from_secs(1));
    let metrics = server
        .client()
        .get(server.url("/metrics"))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let merged: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("logektor_buffer_batches_merged_total "))
        .unwrap_or_else(|| panic!("no merges counted:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(merged > 0.0);
    let counts =
        &server.sql("SELECT count(*) AS n, count(DISTINCT message_id) AS d FROM events")[0];
    assert_eq!((&counts["n"], &counts["d"]), (&3000.into(), &3000.into()));
    server.stop();
    assert_eq!(python_delta_counts(dir.path()), "3000 3000 ['event_date']");
}

#[test]
fn python_deltalake_reads_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-interval", "100ms"]);
    send_batches(&server, &track_events("py", 1234), 200);
    wait_for_commit_after(dir.path(), 1);
    server.stop();
    assert!(delta_commits(dir.path()) >= 2);

    assert_eq!(python_delta_counts(dir.path()), "1234 1234 ['event_date']");
}

#[test]
fn first_start_creates_prints_and_keeps_credentials() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut child = Command::new(crate::support::binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("LOGEKTOR_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        let base = loop {
            let line = lines.next().unwrap().unwrap();
            if let Some(address) = line.strip_prefix("Logektor listening on ") {
                break address.to_owned();
            }
            printed.push(line);
        };
        (child, base, printed)
    };
    let (mut child, base, printed) = start();
    let find = |prefix: &str| {
        printed
            .iter()
            .find_map(|line| line.trim().strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {prefix:?} in {printed:?}"))
    };
    let write_key = find("write key for source \"default\": ");
    let read_token = find("read token: ");
    let client = reqwest::blocking::Client::new();
    let response = client
        .post(format!("{base}/v1/track"))
        .basic_auth(&write_key, Some(""))
        .body(r#"{"userId": "u", "event": "e"}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();

    // The second start keeps the same credentials and prints no secrets.
    let (mut child, base, printed) = start();
    assert!(
        printed
            .iter()
            .all(|line| !line.contains(&write_key) && !line.contains(&read_token))
    );
    let response = client
        .post(format!("{base}/v1/sql"))
        .bearer_auth(&read_token)
        .body("SELECT count(*) AS n FROM events")
        .send()
        .unwrap();
    assert_eq!(response.text().unwrap(), r#"[{"n":1}]"#);
    child.kill().unwrap();
    child.wait().unwrap();
}
