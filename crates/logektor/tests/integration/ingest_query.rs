//! Events in through the Segment API, out through SQL in every format, before and after flush.

use std::io::Cursor;

use serde_json::{Value, json};

use crate::support::{
    READ_TOKEN, TestServer, delta_commits, send_batches, track_events, wait_for_commit_after,
};

fn send_single_calls(server: &TestServer) {
    let calls = [
        (
            "/v1/track",
            json!({"userId": "solo", "event": "Solo Track", "messageId": "single-track"}),
        ),
        (
            "/v1/page",
            json!({"anonymousId": "anon-1", "name": "Pricing", "messageId": "single-page",
            "properties": {"url": "https://shop.example/pricing?utm_source=newsletter&utm_campaign=spring",
                           "title": "Pricing", "referrer": "https://www.google.com/search?q=x"},
            "context": {"userAgent": "Mozilla/5.0", "locale": "de-DE", "ip": "203.0.113.5"}}),
        ),
        (
            "/v1/screen",
            json!({"userId": "solo", "name": "Home", "messageId": "single-screen"}),
        ),
        (
            "/v1/identify",
            json!({"userId": "solo", "anonymousId": "anon-1", "traits": {"email": "solo@example.com"}, "messageId": "single-identify"}),
        ),
        (
            "/v1/group",
            json!({"userId": "solo", "groupId": "acme", "traits": {"plan": "team"}, "messageId": "single-group"}),
        ),
        (
            "/v1/alias",
            json!({"userId": "solo", "previousId": "anon-1", "messageId": "single-alias"}),
        ),
    ];
    for (path, body) in calls {
        let (status, answer) = server.post(path, &body);
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer, json!({"success": true}));
    }
}

fn assert_contents(server: &TestServer, batch_events: i64) {
    let total = batch_events + 6;
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), total);
    assert_eq!(
        server.count("SELECT count(DISTINCT message_id) AS n FROM events"),
        total
    );
    let by_type = server.sql("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type");
    assert_eq!(
        by_type,
        vec![
            json!({"type": "alias", "n": 1}),
            json!({"type": "group", "n": 1}),
            json!({"type": "identify", "n": 1}),
            json!({"type": "page", "n": 1}),
            json!({"type": "screen", "n": 1}),
            json!({"type": "track", "n": batch_events + 1}),
        ]
    );
    let page = &server.sql(
        "SELECT event, anonymous_id, page_url, page_path, page_title, page_referrer, referrer_host, \
         utm_source, utm_campaign, user_agent, locale, ip, source FROM events WHERE message_id = 'single-page'",
    )[0];
    assert_eq!(
        page,
        &json!({
            "event": "Pricing", "anonymous_id": "anon-1",
            "page_url": "https://shop.example/pricing?utm_source=newsletter&utm_campaign=spring",
            "page_path": "/pricing", "page_title": "Pricing",
            "page_referrer": "https://www.google.com/search?q=x", "referrer_host": "google.com",
            "utm_source": "newsletter", "utm_campaign": "spring", "user_agent": "Mozilla/5.0",
            "locale": "de-DE", "ip": "203.0.113.5", "source": "default",
        })
    );
    let identify = &server.sql("SELECT user_id, traits FROM events WHERE type = 'identify'")[0];
    assert_eq!(identify["user_id"], "solo");
    let traits: Value = serde_json::from_str(identify["traits"].as_str().unwrap()).unwrap();
    assert_eq!(traits, json!({"email": "solo@example.com"}));
    let group = &server.sql("SELECT group_id FROM events WHERE type = 'group'")[0];
    assert_eq!(group["group_id"], "acme");
    let alias = &server.sql("SELECT previous_id FROM events WHERE type = 'alias'")[0];
    assert_eq!(alias["previous_id"], "anon-1");

    let tracked = &server.sql(
        "SELECT event, user_id, timestamp, event_date, properties FROM events WHERE message_id = 'b-7'",
    )[0];
    assert_eq!(tracked["event"], "Event 2");
    assert_eq!(tracked["user_id"], "user-7");
    assert!(
        tracked["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2024-05-01T12:00:00"),
        "{tracked}"
    );
    assert_eq!(tracked["event_date"], "2024-05-01");
    let properties: Value = serde_json::from_str(tracked["properties"].as_str().unwrap()).unwrap();
    assert_eq!(properties, json!({"index": 7, "prefix": "b"}));

    // CSV: a header and one line per row.
    let (status, csv) = server.sql_raw(
        "SELECT message_id, event FROM events WHERE type = 'track' ORDER BY message_id",
        "csv",
    );
    assert_eq!(status, 200);
    let csv = String::from_utf8(csv).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("message_id,event"));
    assert_eq!(lines.count() as i64, batch_events + 1);

    // Arrow IPC stream, read back with arrow's reader.
    let (status, ipc) = server.sql_raw("SELECT message_id FROM events", "arrow");
    assert_eq!(status, 200);
    let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(ipc), None).unwrap();
    let rows: usize = reader.map(|batch| batch.unwrap().num_rows()).sum();
    assert_eq!(rows as i64, total);

    // NDJSON and Parquet.
    let (status, ndjson) = server.sql_raw("SELECT message_id FROM events", "ndjson");
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(ndjson).unwrap().lines().count() as i64,
        total
    );
    let (status, parquet) = server.sql_raw("SELECT message_id FROM events", "parquet");
    assert_eq!(status, 200);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(parquet),
    )
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(
        reader.map(|b| b.unwrap().num_rows()).sum::<usize>() as i64,
        total
    );
}

#[test]
fn acknowledged_events_are_queryable_at_once_and_after_flush_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A flush interval of an hour: right after the 200s everything is in the buffer only.
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    let events = track_events("b", 3000);
    // Four concurrent senders, so requests share WAL group commits.
    std::thread::scope(|scope| {
        for part in events.chunks(750) {
            let server = &server;
            scope.spawn(move || send_batches(server, part, 100));
        }
    });
    send_single_calls(&server);
    assert_eq!(
        delta_commits(dir.path()),
        1,
        "nothing should have been flushed yet"
    );
    assert_contents(&server, 3000);

    // Graceful stop flushes; a restart serves the same rows from the table.
    server.stop();
    assert_eq!(delta_commits(dir.path()), 2, "shutdown flushes once");
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    assert_contents(&server, 3000);
    server.stop();

    // A short interval: rows move to the table while the server runs.
    let server = TestServer::start(dir.path(), &["--flush-interval", "100ms"]);
    let commits = delta_commits(dir.path());
    send_batches(&server, &track_events("c", 500), 100);
    assert_eq!(
        server.count("SELECT count(*) AS n FROM events WHERE message_id LIKE 'c-%'"),
        500
    );
    wait_for_commit_after(dir.path(), commits);
    assert_eq!(
        server.count("SELECT count(*) AS n FROM events WHERE message_id LIKE 'c-%'"),
        500
    );
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 3006 + 500);
    server.stop();
}

#[test]
fn no_event_is_missing_or_doubled_while_flushes_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-interval", "20ms"]);
    let mut sent = 0;
    for round in 0..40 {
        send_batches(&server, &track_events(&format!("r{round}"), 50), 50);
        sent += 50;
        // Every acknowledged event exactly once, whatever the flusher is doing at this moment.
        let counts =
            &server.sql("SELECT count(*) AS n, count(DISTINCT message_id) AS d FROM events")[0];
        assert_eq!(counts["n"], sent, "round {round}");
        assert_eq!(counts["d"], sent, "round {round}");
    }
    assert!(
        delta_commits(dir.path()) > 2,
        "the flusher should have committed several times"
    );
    server.stop();
}

#[test]
fn sql_accepts_raw_text_and_format_query_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    send_batches(&server, &track_events("t", 3), 3);
    let response = server
        .client()
        .post(server.url("/v1/sql?format=csv"))
        .bearer_auth(READ_TOKEN)
        .header("content-type", "text/plain")
        .body("SELECT count(*) AS n FROM events")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(response.text().unwrap(), "n\n3\n");
    // An empty result is an empty JSON array.
    assert!(server.sql("SELECT * FROM events WHERE 1 = 0").is_empty());
}

#[test]
fn named_reports_list_run_and_refuse_bad_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    send_batches(&server, &track_events("rep", 34), 34);
    let get = |path: &str, token: Option<&str>| {
        let mut request = server.client().get(server.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        (
            response.status().as_u16(),
            response.json::<serde_json::Value>().unwrap_or_default(),
        )
    };
    // The list names every report of queries/ with its parameters.
    let (status, list) = get("/v1/reports", Some(READ_TOKEN));
    assert_eq!(status, 200);
    let reports = list["reports"].as_array().unwrap();
    let sql_files = std::fs::read_dir(crate::support::manifest_dir().join("../../queries"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "sql")
        })
        .count();
    assert_eq!(reports.len(), sql_files);
    let top_pages = reports.iter().find(|r| r["name"] == "top_pages").unwrap();
    assert_eq!(top_pages["params"][0]["name"], "from");
    assert_eq!(top_pages["params"][0]["type"], "timestamp");

    let (status, rows) = get(
        "/v1/reports/events_per_day?from=2024-05-01&to=2024-05-02",
        Some(READ_TOKEN),
    );
    assert_eq!(status, 200, "{rows}");
    assert_eq!(
        rows,
        json!([{"event_date": "2024-05-01", "type": "track", "events": 34, "visitors": 17}])
    );
    let (status, rows) = get(
        "/v1/reports/events?from=2024-05-01&to=2024-05-02&interval=day&names=Event%201,Event%202",
        Some(READ_TOKEN),
    );
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    // Live counts by receive time: everything above arrived just now.
    let (status, live) = get("/v1/reports/live?minutes=5", Some(READ_TOKEN));
    assert_eq!(status, 200, "{live}");
    assert_eq!(
        live,
        json!([{"visitors": 17, "pageviews": 0, "events": 34}])
    );
    // Another source sees nothing.
    let (_, rows) = get(
        "/v1/reports/events_per_day?from=2024-05-01&to=2024-05-02&source=mobile",
        Some(READ_TOKEN),
    );
    assert_eq!(rows, json!([]));

    for (path, status, needle) in [
        ("/v1/reports/nope", 404, "no report named"),
        ("/v1/reports/top_pages?limit=0", 400, "\"limit\""),
        ("/v1/reports/top_pages?from=yesterday", 400, "\"from\""),
        ("/v1/reports/top_pages?colour=red", 400, "\"colour\""),
        ("/v1/reports/timeseries?interval=year", 400, "\"interval\""),
        (
            "/v1/reports/top_pages?from=2024-05-02&to=2024-05-01",
            400,
            "\"to\"",
        ),
        ("/v1/reports/top_pages?format=xml", 400, "unknown format"),
    ] {
        let (code, answer) = get(path, Some(READ_TOKEN));
        assert_eq!(code, status, "{path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{path}: {answer}"
        );
    }
    assert_eq!(get("/v1/reports", None).0, 401);
    assert_eq!(get("/v1/reports/top_pages", Some("wrong")).0, 401);

    // The same report offline, from the CLI.
    let offline = crate::support::cli(
        &[
            "report",
            "events_per_day",
            "--from",
            "2024-05-01",
            "--to",
            "2024-05-02",
            "--format",
            "json",
        ],
        dir.path(),
    );
    assert_eq!(
        serde_json::from_str::<Value>(&offline).unwrap(),
        json!([{"event_date": "2024-05-01", "type": "track", "events": 34, "visitors": 17}])
    );
    let refused = std::process::Command::new(crate::support::binary())
        .args(["report", "top_pages", "--param", "limit=0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("parameter \"limit\""));
}

#[test]
fn metrics_describe_ingest_wal_flushes_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let commits = delta_commits(dir.path());
    send_batches(&server, &track_events("met", 30), 10);
    // A retried batch: ten duplicates.
    send_batches(&server, &track_events("met", 10), 10);
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 30);
    let (status, _) = server.sql_raw("SELECT nope FROM events", "json");
    assert_eq!(status, 400);
    wait_for_commit_after(dir.path(), commits);

    let get = |token: Option<&str>| {
        let mut request = server.client().get(server.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    assert_eq!(get(None).0, 401);
    assert_eq!(get(Some(READ_TOKEN)).0, 401);
    // The flush records its metrics just after its commit file appears: poll briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (status, text) = loop {
        let (status, text) = get(Some(crate::support::ADMIN_TOKEN));
        if text.contains("logektor_flushed_rows_total ") || std::time::Instant::now() > deadline {
            break (status, text);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(name) && !line.starts_with('#'))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
    };
    assert_eq!(value("logektor_events_accepted_total "), 30.0);
    assert_eq!(value("logektor_events_duplicate_total "), 10.0);
    assert!(value("logektor_wal_group_commit_seconds_count ") >= 1.0);
    assert!(value("logektor_flushed_rows_total ") >= 1.0);
    assert!(value("logektor_flush_seconds_count ") >= 1.0);
    assert!(value("logektor_query_seconds_count ") >= 1.0);
    assert_eq!(
        value("logektor_query_errors_total{code=\"invalid_sql\"} "),
        1.0
    );
    assert!(value("logektor_buffer_rows ") >= 0.0);
    assert_eq!(
        value("logektor_http_requests_total{route=\"/v1/{call}\",status=\"200\"} "),
        4.0
    );
    // Route patterns, never raw paths: no write key or path parameter becomes a label.
    assert!(!text.contains("/v1/batch"), "{text}");
}

#[test]
fn datafusion_settings_come_from_its_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::try_start_with_env(
        dir.path(),
        &[],
        &[("DATAFUSION_EXECUTION_BATCH_SIZE", "1234")],
    )
    .expect("a valid setting starts");
    let setting = |name: &str| {
        server.sql(&format!(
            "SELECT value FROM information_schema.df_settings WHERE name = '{name}'"
        ))[0]["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(setting("datafusion.execution.batch_size"), "1234");
    // Our defaults hold where the environment says nothing.
    assert_eq!(
        setting("datafusion.execution.parquet.pushdown_filters"),
        "true"
    );
    // Queries still run under it, and SQL cannot change it.
    send_batches(&server, &track_events("env", 10), 5);
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 10);
    let (status, _) = server.sql_raw("SET datafusion.execution.batch_size = 8", "json");
    assert_eq!(status, 400);
    server.stop();

    let other = tempfile::tempdir().unwrap();
    let refused = TestServer::try_start_with_env(
        other.path(),
        &[],
        &[("DATAFUSION_EXECUTION_BATCH_SIZE", "many")],
    );
    let status = refused.err().expect("an invalid setting stops the start");
    assert!(!status.success());
}

/// `n` track events with message ids `{prefix}-{i}`, spread round-robin over `days`.
fn dated_events(prefix: &str, n: usize, days: &[&str]) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "type": "track",
                "event": "Dated",
                "anonymousId": format!("a-{}", i % 7),
                "messageId": format!("{prefix}-{i}"),
                "timestamp": format!("{}T12:00:00.000Z", days[i % days.len()]),
            })
        })
        .collect()
}

#[test]
fn counts_by_day_come_from_the_file_index_and_match_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    // Three days flushed at the graceful stop, then two more buffered (one of them shared).
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    let flushed_days = ["2024-05-01", "2024-05-02", "2024-05-03"];
    send_batches(&server, &dated_events("f", 900, &flushed_days), 100);
    server.stop();
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    send_batches(
        &server,
        &dated_events("g", 200, &["2024-05-03", "2024-05-04"]),
        50,
    );

    let by_index = server.sql(
        "SELECT event_date, count(*) AS n, count(1) AS m FROM events \
         GROUP BY event_date ORDER BY event_date",
    );
    // count(message_id) reads the column, so it is answered from the rows.
    let by_rows = server.sql(
        "SELECT event_date, count(message_id) AS n, count(message_id) AS m FROM events \
         GROUP BY event_date ORDER BY event_date",
    );
    assert_eq!(by_index, by_rows);
    let expected: Vec<Value> = [
        ("2024-05-01", 300),
        ("2024-05-02", 300),
        ("2024-05-03", 400),
        ("2024-05-04", 100),
    ]
    .iter()
    .map(|(day, n)| json!({"event_date": day, "n": n, "m": n}))
    .collect();
    assert_eq!(by_index, expected);

    // The flushed files were not read for the grouped count; they are for a filtered one.
    let plan = |sql: &str| -> String {
        server
            .sql(&format!("EXPLAIN {sql}"))
            .iter()
            .map(|row| row["plan"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let counted = plan("SELECT event_date, count(*) FROM events GROUP BY event_date");
    assert!(!counted.contains("parquet"), "{counted}");
    // A filter on the partition column is decided per file, and applied to the buffer.
    let since = "SELECT event_date, count(*) AS n FROM events \
                 WHERE event_date >= DATE '2024-05-02' GROUP BY event_date ORDER BY event_date";
    let counted = plan(since);
    assert!(!counted.contains("parquet"), "{counted}");
    let counts = |sql: &str| -> Vec<i64> {
        server
            .sql(sql)
            .iter()
            .map(|row| row["n"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(counts(since), vec![300, 400, 100]);
    let filtered = "SELECT event_date, count(*) AS n FROM events \
                    WHERE message_id LIKE 'f-%' GROUP BY event_date ORDER BY event_date";
    assert!(plan(filtered).contains("parquet"));
    assert_eq!(counts(filtered), vec![300, 300, 300]);
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 1100);
    server.stop();
}

#[test]
fn json_property_equality_filters_find_escaped_values_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    // The second spells `sku-7` with an escape, as a client's JSON encoder may.
    let body = r#"{"batch":[
        {"type":"track","event":"Bought","anonymousId":"a","messageId":"j-1","properties":{"product_id":"sku-7"}},
        {"type":"track","event":"Bought","anonymousId":"a","messageId":"j-2","properties":{"product_id":"sku\u002d7"}},
        {"type":"track","event":"Bought","anonymousId":"a","messageId":"j-3","properties":{"product_id":"sku-70"}},
        {"type":"track","event":"Bought","anonymousId":"a","messageId":"j-4","properties":{"other":"sku-7"}}
    ]}"#;
    let (status, answer) = server.post("/v1/batch", &serde_json::from_str(body).unwrap());
    assert_eq!(status, 200, "{answer}");
    let sql = "SELECT message_id FROM events \
               WHERE json_as_text(properties, 'product_id') = 'sku-7' ORDER BY message_id";
    let plan = server.sql(&format!("EXPLAIN {sql}"));
    assert!(
        plan.iter().any(|row| row["plan"]
            .as_str()
            .unwrap_or_default()
            .contains("json_as_text_equals")),
        "{plan:?}"
    );
    let ids = |server: &TestServer| -> Vec<Value> {
        server
            .sql(sql)
            .iter()
            .map(|row| row["message_id"].clone())
            .collect()
    };
    assert_eq!(ids(&server), vec![json!("j-1"), json!("j-2")]);
    // Flushed, the same answer from Parquet.
    server.stop();
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    assert_eq!(ids(&server), vec![json!("j-1"), json!("j-2")]);
    server.stop();
}

/// `LIKE` filters and `count(*)` grouped by keys in runs, by keys with few distinct values
/// per batch and by unique keys give the counts of the events sent, buffered and from the
/// Parquet files (where equal strings of a dictionary page share their views).
#[test]
fn grouped_counts_and_like_filters_match_the_events_sent() {
    use std::collections::BTreeMap;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    let pages = [
        "/",
        "/pricing",
        "/blog/a-post-with-a-long-path",
        "/docs/getting-started",
    ];
    let sources = ["news", "mail", "ads"];
    let campaigns = ["spring_sale", "spring-sale", "autumn_sale"];
    let mut by_page: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_source: BTreeMap<String, i64> = BTreeMap::new();
    let mut spring_sale = 0;
    let mut batch = Vec::new();
    for i in 0..2_000usize {
        let page = pages[(i * 7) % pages.len()];
        // Runs of two: too short to count by runs, few per batch.
        let source = sources[(i / 2) % sources.len()];
        let campaign = campaigns[(i / 5) % campaigns.len()];
        *by_page.entry(page.to_owned()).or_default() += 1;
        *by_source.entry(source.to_owned()).or_default() += 1;
        // `_` in a LIKE pattern matches any character: `spring-sale` too.
        spring_sale += i64::from(campaign.starts_with("spring"));
        batch.push(json!({
            "type": "page",
            // The name follows the path, so the table's sort order puts paths in runs.
            "name": page,
            "anonymousId": format!("visitor-{}", i % 97),
            "messageId": format!("m-{i}"),
            "timestamp": "2024-05-01T10:00:00Z",
            "properties": {
                "path": page,
                "url": format!("https://example.com{page}?utm_source={source}&utm_campaign={campaign}")
            }
        }));
    }
    let (status, answer) = server.post("/v1/batch", &json!({ "batch": batch }));
    assert_eq!(status, 200, "{answer}");

    let counts = |server: &TestServer, sql: &str| -> BTreeMap<String, i64> {
        server
            .sql(sql)
            .iter()
            .map(|row| {
                let key = row["k"].as_str().unwrap_or("NULL").to_owned();
                (key, row["n"].as_i64().unwrap())
            })
            .collect()
    };
    let by_page_sql = "SELECT page_path AS k, count(*) AS n FROM events GROUP BY page_path";
    let by_source_sql = "SELECT utm_source || '/' || type AS k, n FROM (SELECT utm_source, type, count(*) AS n \
         FROM events GROUP BY utm_source, type)";
    let by_id_sql = "SELECT message_id AS k, count(*) AS n FROM events GROUP BY message_id";
    let like_sql = "SELECT 'all' AS k, count(*) AS n FROM events \
                    WHERE page_url LIKE '%utm_campaign=spring_sale%'";
    let by_source_expected: BTreeMap<String, i64> = by_source
        .iter()
        .map(|(source, n)| (format!("{source}/page"), *n))
        .collect();
    let check = |server: &TestServer| {
        assert_eq!(counts(server, by_page_sql), by_page);
        assert_eq!(counts(server, by_source_sql), by_source_expected);
        let by_id = counts(server, by_id_sql);
        assert_eq!(by_id.len(), 2_000);
        assert!(by_id.values().all(|&n| n == 1));
        assert_eq!(counts(server, like_sql)["all"], spring_sale);
    };
    check(&server);
    let plan = server.sql(&format!("EXPLAIN {by_page_sql}"));
    let plan = format!("{plan:?}");
    assert!(plan.contains("RunCountExec"), "{plan}");
    let plan = server.sql(&format!("EXPLAIN {like_sql}"));
    let plan = format!("{plan:?}");
    assert!(plan.contains("like_memo"), "{plan}");
    // Flushed, the same answers from Parquet.
    server.stop();
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    check(&server);
    server.stop();
}
