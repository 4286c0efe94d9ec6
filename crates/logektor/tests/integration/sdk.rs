//! Real client packages against a running server: segment-analytics-python, rudder-sdk-python
//! and posthog (Python); @segment/analytics-node and posthog-node (Node); and headless Chromium
//! running `/t.js`, a pixel and a sendBeacon. Each client is used through its normal API with
//! default settings except the host. `scripts/test.sh` installs the packages and Chromium.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{TestServer, WRITE_KEY};

fn clients_dir() -> PathBuf {
    crate::support::manifest_dir().join("tests/clients")
}

/// Runs a client script and returns the JSON it prints last.
fn run_client(program: &str, script: &str, args: &[&str]) -> Value {
    let output = Command::new(program)
        .arg(clients_dir().join(script))
        .args(args)
        .current_dir(clients_dir())
        .output()
        .unwrap_or_else(|err| panic!("{program} must be installed (scripts/test.sh): {err}"));
    assert!(
        output.status.success(),
        "{script} failed ({}): {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|err| panic!("{script} printed {stdout:?}: {err}"))
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn run_id() -> String {
    format!("{:x}", now_micros())
}

/// Rows of this run (any id or event name containing `run`), with timestamps as microseconds.
fn rows_of_run(server: &TestServer, run: &str) -> Vec<Value> {
    server.sql(&format!(
        "SELECT type, event, user_id, anonymous_id, previous_id, group_id, message_id, page_path, \
                page_title, utm_source, utm_medium, utm_campaign, properties, context, \
                browser, os, device_type, is_bot, \
                CAST(timestamp AS BIGINT) AS ts, CAST(received_at AS BIGINT) AS received \
         FROM events \
         WHERE strpos(coalesce(user_id, '') || coalesce(anonymous_id, '') || coalesce(event, '') \
                      || coalesce(previous_id, '') || coalesce(page_path, ''), '{run}') > 0"
    ))
}

/// Checks that each expected event (as the client scripts describe them) is stored exactly once
/// with the right type, name, ids, properties, columns and a plausible timestamp.
fn check_expected(rows: &[Value], expected: &Value, started: i64, finished: i64) {
    let expected = expected.as_array().expect("a list of expected events");
    assert!(!expected.is_empty());
    for want in expected {
        let matches: Vec<&Value> = rows
            .iter()
            .filter(|row| {
                row["type"] == want["type"]
                    && row["event"] == want["event"]
                    && row["user_id"] == want["user_id"]
                    && row["anonymous_id"] == want["anonymous_id"]
            })
            .collect();
        assert_eq!(
            matches.len(),
            1,
            "expected exactly one row for {want}; rows of the run: {rows:#?}"
        );
        let row = matches[0];
        let properties: Value = row["properties"]
            .as_str()
            .map(|text| serde_json::from_str(text).unwrap())
            .unwrap_or(Value::Null);
        for (key, value) in want["properties"].as_object().unwrap() {
            assert_eq!(&properties[key], value, "property {key} of {want}: {row}");
        }
        for (column, value) in want["columns"].as_object().unwrap() {
            assert_eq!(&row[column], value, "column {column} of {want}: {row}");
        }
        assert!(
            !row["message_id"].as_str().unwrap_or_default().is_empty(),
            "{row}"
        );
        // Client timestamps are the moment of the call, corrected for skew: within the run.
        let ts = row["ts"].as_i64().unwrap();
        assert!(
            ts >= started - 2_000_000 && ts <= finished + 2_000_000,
            "timestamp {ts} outside the run [{started}, {finished}]: {row}"
        );
        assert!(ts <= row["received"].as_i64().unwrap() + 1_000_000, "{row}");
    }
    assert_eq!(
        rows.len(),
        expected.len(),
        "more rows than events sent: {rows:#?}"
    );
}

#[test]
fn python_sdks_deliver_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let run = run_id();
    let started = now_micros();
    let expected = run_client(
        "python3",
        "python_sdks.py",
        &[&server.base, WRITE_KEY, &run],
    );
    let finished = now_micros();
    let rows = rows_of_run(&server, &run);
    check_expected(&rows, &expected, started, finished);
}

#[test]
fn node_sdks_deliver_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let run = run_id();
    let started = now_micros();
    let expected = run_client("node", "node_sdks.mjs", &[&server.base, WRITE_KEY, &run]);
    let finished = now_micros();
    let rows = rows_of_run(&server, &run);
    check_expected(&rows, &expected, started, finished);
}

#[test]
fn browser_tracker_pixel_and_beacon_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let run = run_id();
    let outcome = run_client("node", "browser.mjs", &[&server.base, WRITE_KEY, &run]);
    let anonymous_id = outcome["anonymousId"].as_str().expect("an anonymous id");

    // The beacon is sent as the page closes; give it a moment to land.
    let deadline = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows = server.sql(&format!(
            "SELECT type, event, page_path, page_title, properties, context, browser, os, \
                    device_type, is_bot, received_at \
             FROM events WHERE anonymous_id = '{anonymous_id}' ORDER BY received_at, type"
        ));
        if rows
            .iter()
            .any(|r| r["event"] == format!("Left Page {run}"))
            || Instant::now() > deadline
        {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let pages: Vec<&str> = rows
        .iter()
        .filter(|r| r["type"] == "page")
        .map(|r| r["page_path"].as_str().unwrap())
        .collect();
    // Load, pushState, back (popstate), and the page that is then closed.
    assert_eq!(pages, ["/", "/pricing", "/", "/leave"], "{rows:#?}");
    let tracks: Vec<&Value> = rows.iter().filter(|r| r["type"] == "track").collect();
    assert_eq!(tracks.len(), 2, "{rows:#?}");
    let buy = tracks
        .iter()
        .find(|r| r["event"] == format!("Buy Clicked {run}"))
        .expect("the click's event");
    assert_eq!(buy["page_path"], "/pricing");
    assert!(
        buy["properties"]
            .as_str()
            .unwrap()
            .contains("\"plan\":\"pro\"")
    );
    assert!(
        tracks
            .iter()
            .any(|r| r["event"] == format!("Left Page {run}")),
        "the event sent by sendBeacon on page hide: {rows:#?}"
    );
    for row in &rows {
        assert_eq!(row["browser"], "Chrome", "{row}");
        assert_eq!(row["os"], "Linux", "{row}");
        // Headless Chromium says so in its user agent.
        assert_eq!(row["is_bot"], true, "{row}");
        assert!(row["context"].as_str().unwrap().contains("logektor-t.js"));
    }

    let pixel = server.sql(&format!(
        "SELECT event, properties, context FROM events WHERE anonymous_id = 'px-{run}'"
    ));
    assert_eq!(pixel.len(), 1, "{pixel:?}");
    assert_eq!(pixel[0]["event"], format!("Pixel Viewed {run}"));
    assert_eq!(pixel[0]["properties"], r#"{"campaign":"mail"}"#);
}
