//! Who may read and write what: write keys write only their own source; a read token scoped to
//! sources sees only their rows, and neither errors nor EXPLAIN nor statistics tell it what
//! other sources hold, whether the rows are flushed or still buffered.

use serde_json::{Value, json};

use crate::support::{READ_TOKEN, TestServer, WRITE_KEY, delta_commits, wait_for_commit_after};

const SCOPED: &str = "scoped-mobile-token";

/// Runs SQL with `token`; returns the status and the body.
fn sql_as(server: &TestServer, token: &str, sql: &str) -> (u16, Value) {
    let response = server
        .client()
        .post(server.url("/v1/sql"))
        .bearer_auth(token)
        .json(&json!({ "sql": sql }))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn rows_as(server: &TestServer, token: &str, sql: &str) -> Vec<Value> {
    let (status, body) = sql_as(server, token, sql);
    assert_eq!(status, 200, "{sql}: {body}");
    body.as_array().unwrap().clone()
}

/// Posts `events` with the write key of one source.
fn post_as(server: &TestServer, key: &str, events: Vec<Value>) {
    let response = server
        .client()
        .post(server.url("/v1/batch"))
        .basic_auth(key, Some(""))
        .json(&json!({ "batch": events }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// `default` holds a secret and values that make casts and divisions fail; `mobile` holds
/// harmless ones.
fn events(phase: &str) -> (Vec<Value>, Vec<Value>) {
    let default = (0..5)
        .map(|i| {
            json!({"type": "track", "event": "Secret", "anonymousId": "d",
                   "messageId": format!("acc-{phase}-default-{i}"),
                   "properties": {"secret": "secret-default-xyz", "n": "not-a-number", "d": 0}})
        })
        .collect();
    let mobile = (0..3)
        .map(|i| {
            json!({"type": "track", "event": "Open", "anonymousId": "m",
                   "messageId": format!("acc-{phase}-mobile-{i}"),
                   "properties": {"secret": "none", "n": "5", "d": 1}})
        })
        .collect();
    (default, mobile)
}

/// Queries whose predicates fail or reveal on `default`'s rows if they ever see them.
const PROBES: &[&str] = &[
    // A cast that fails on another source's value.
    "SELECT count(*) AS n FROM events WHERE CAST(json_get_str(properties, 'n') AS INT) > 0",
    // A division by zero exactly when another source's secret matches a guess.
    "SELECT count(*) AS n FROM events WHERE 1 / (CASE WHEN json_get_str(properties, 'secret') = 'secret-default-xyz' THEN 0 ELSE 1 END) = 1",
    // The same behind an OR with a selective column, as pushdown likes it.
    "SELECT count(*) AS n FROM events WHERE message_id = 'none' OR 10 / json_get_int(properties, 'd') > 1",
];

fn check_scope(server: &TestServer, mobile_rows: i64) {
    // The scoped token sees only mobile's rows, also through count(*) and statistics.
    let sources = rows_as(
        server,
        SCOPED,
        "SELECT DISTINCT source FROM events ORDER BY source",
    );
    assert_eq!(sources, vec![json!({"source": "mobile"})]);
    let count = rows_as(server, SCOPED, "SELECT count(*) AS n FROM events");
    assert_eq!(count[0]["n"], mobile_rows);
    // Grouped by partition columns, counts may come from the file index; never past a scope.
    let by_day = rows_as(
        server,
        SCOPED,
        "SELECT event_date, count(*) AS n FROM events GROUP BY event_date",
    );
    let seen: i64 = by_day.iter().map(|row| row["n"].as_i64().unwrap()).sum();
    assert_eq!(seen, mobile_rows, "{by_day:?}");
    let none = rows_as(
        server,
        SCOPED,
        "SELECT count(*) AS n FROM events WHERE source = 'default' OR properties LIKE '%secret-default%'",
    );
    assert_eq!(none[0]["n"], 0);
    for probe in PROBES {
        // Unscoped, the probe fails on default's rows: proof that it would leak if evaluated.
        let (status, body) = sql_as(server, READ_TOKEN, probe);
        assert_eq!(status, 400, "unscoped {probe}: {body}");
        // Scoped, it never sees them.
        let rows = rows_as(server, SCOPED, probe);
        assert!(rows[0]["n"].as_i64().unwrap() <= mobile_rows, "{probe}");
    }
    // EXPLAIN describes the whole table: refused to a scoped token, allowed to a full one.
    for explain in [
        "EXPLAIN SELECT count(*) FROM events",
        "EXPLAIN ANALYZE SELECT count(*) FROM events WHERE source = 'default'",
        "EXPLAIN VERBOSE SELECT * FROM events",
    ] {
        let (status, body) = sql_as(server, SCOPED, explain);
        assert_eq!(status, 400, "{explain}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("EXPLAIN"),
            "{body}"
        );
    }
    let (status, _) = sql_as(server, READ_TOKEN, "EXPLAIN SELECT count(*) FROM events");
    assert_eq!(status, 200);
    // Reports run in the same scope: asking for another source gives nothing.
    let today = chrono::Utc::now().date_naive();
    let from = today - chrono::Days::new(1);
    let to = today + chrono::Days::new(2);
    let report = |source: &str| -> Vec<Value> {
        let response = server
            .client()
            .get(server.url(&format!(
                "/v1/reports/events?from={from}&to={to}&source={source}"
            )))
            .bearer_auth(SCOPED)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    };
    let all: i64 = report("*")
        .iter()
        .map(|row| row["events"].as_i64().unwrap())
        .sum();
    assert_eq!(all, mobile_rows);
    assert!(report("default").is_empty());
}

#[test]
fn scoped_read_tokens_see_only_their_sources_in_the_table_and_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            "--scoped-read-token",
            &format!("mobile={SCOPED}"),
            "--flush-interval",
            "200ms",
        ],
    );
    // First flushed to the Delta table…
    let commits = delta_commits(dir.path());
    let (default, mobile) = events("flushed");
    post_as(&server, WRITE_KEY, default);
    post_as(&server, "mobile-key", mobile);
    wait_for_commit_after(dir.path(), commits);
    let flushed = rows_as(&server, READ_TOKEN, "SELECT count(*) AS n FROM events");
    assert_eq!(flushed[0]["n"], 8);
    check_scope(&server, 3);
    server.stop();

    // …then also buffered: a server that never flushes during the test.
    let server = TestServer::start(
        dir.path(),
        &[
            "--scoped-read-token",
            &format!("mobile={SCOPED}"),
            "--flush-interval",
            "1h",
        ],
    );
    let (default, mobile) = events("buffered");
    post_as(&server, WRITE_KEY, default);
    post_as(&server, "mobile-key", mobile);
    check_scope(&server, 6);
    // A scoped token is still a read token only.
    let (status, _) = server
        .client()
        .get(server.url("/v1/admin/table"))
        .bearer_auth(SCOPED)
        .send()
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401);
}

#[test]
fn a_write_key_writes_only_its_own_source() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    // The mobile key in the header; the body names default's key and a source of its own.
    let response = server
        .client()
        .post(server.url("/v1/batch"))
        .basic_auth("mobile-key", Some(""))
        .json(&json!({
            "writeKey": WRITE_KEY,
            "batch": [{"type": "track", "event": "Sneaky", "anonymousId": "s",
                       "messageId": "sneaky-1", "source": "default",
                       "context": {"source": "default"}, "properties": {"source": "default"}}]
        }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let rows = server.sql("SELECT source FROM events WHERE message_id = 'sneaky-1'");
    assert_eq!(rows, vec![json!({"source": "mobile"})]);
    // A key that belongs to no source writes nothing anywhere.
    let response = server
        .client()
        .post(server.url("/v1/batch"))
        .basic_auth("no-such-key", Some(""))
        .json(&json!({"batch": [{"type": "track", "event": "X", "anonymousId": "s", "messageId": "sneaky-2"}]}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        server.count("SELECT count(*) AS n FROM events WHERE message_id = 'sneaky-2'"),
        0
    );
}
