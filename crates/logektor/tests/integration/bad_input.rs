//! Every bad-input case gets a clear 4xx with a JSON reason and stores nothing.

use std::io::Write;

use serde_json::{Value, json};

use crate::support::{READ_TOKEN, TestServer, WRITE_KEY, send_batches, track_events};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// POSTs raw bytes with the write key; returns status and JSON body.
fn post_raw(server: &TestServer, path: &str, body: Vec<u8>, gzipped: bool) -> (u16, Value) {
    let mut request = server
        .client()
        .post(server.url(path))
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-type", "application/json")
        .body(body);
    if gzipped {
        request = request.header("content-encoding", "gzip");
    }
    let response = request.send().unwrap();
    (
        response.status().as_u16(),
        response.json().unwrap_or(Value::Null),
    )
}

/// The write key as HTTP Basic credentials (user name, empty password).
fn base64_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
}

fn assert_error(actual: (u16, Value), status: u16, needle: &str) {
    let (code, body) = actual;
    assert_eq!(code, status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "expected {needle:?} in {message:?}"
    );
}

/// A body over the limit that the client is still sending when the server has read enough
/// to refuse it: the client must read the 413 and its reason, not a reset connection (which
/// SDKs retry forever). Repeated because the reset, when it happens, depends on timing.
#[test]
fn oversized_bodies_get_their_413_not_a_reset_connection() {
    let dir = tempfile::tempdir().unwrap();
    // A long body timeout: a server waiting for a body it will refuse would show as a hang.
    let server = TestServer::start(dir.path(), &["--body-timeout", "60s"]);
    let event = |size: usize| {
        serde_json::to_vec(
            &json!({"userId": "u", "event": "e", "properties": {"p": "x".repeat(size)}}),
        )
        .unwrap()
    };
    let batch = serde_json::to_vec(&json!({"batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"p": "y".repeat(6 << 20)}}]})).unwrap();
    for _ in 0..10 {
        assert_error(
            post_raw(&server, "/v1/track", event(1 << 20), false),
            413,
            "larger than the limit of 32768 bytes",
        );
        assert_error(
            post_raw(&server, "/v1/batch", batch.clone(), false),
            413,
            "larger than the limit",
        );
    }
    // A declared length far beyond the limit is refused at once, before any of the body.
    let address = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            format!(
                "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                base64_key(),
                100 << 20
            )
            .as_bytes(),
        )
        .unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than the limit"), "{answer}");
    // The connection pool is still good for accepted requests.
    let (status, body) = post_raw(&server, "/v1/track", event(10), false);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn bad_ingest_requests_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    send_batches(&server, &track_events("good", 10), 10);

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/batch", b"{not json".to_vec(), 400, "invalid JSON"),
        ("/v1/track", br#"{"userId": "u", "event": "e", "timestamp": 42}"#.to_vec(), 400, "\"timestamp\" must be an ISO-8601 timestamp string"),
        ("/v1/track", br#"{"userId": "u", "event": "e", "timestamp": "soon"}"#.to_vec(), 400, "not an ISO-8601 timestamp"),
        ("/v1/track", br#"{"event": "e"}"#.to_vec(), 400, "either \"userId\" or \"anonymousId\" is required"),
        ("/v1/track", br#"{"userId": "u"}"#.to_vec(), 400, "track call requires \"event\""),
        ("/v1/track", br#"{"userId": {"a": 1}, "event": "e"}"#.to_vec(), 400, "\"userId\" must be a string"),
        ("/v1/identify", br#"{"userId": "u", "traits": "x"}"#.to_vec(), 400, "\"traits\" must be an object"),
        ("/v1/batch", br#"{"batch": []}"#.to_vec(), 400, "batch is empty"),
        ("/v1/batch", br#"{"batch": {"type": "track"}}"#.to_vec(), 400, "invalid JSON"),
        // One bad event rejects the whole batch (documented in the README).
        ("/v1/batch", br#"{"batch": [{"type": "track", "event": "ok", "userId": "u", "messageId": "partial-1"}, {"type": "track", "userId": "u"}]}"#.to_vec(), 400, "batch[1]: track call requires \"event\""),
        ("/v1/batch", br#"{"batch": [{"type": "click", "userId": "u"}]}"#.to_vec(), 400, "unknown \"type\""),
    ];
    for (path, body, status, needle) in cases {
        assert_error(post_raw(&server, path, body, false), status, needle);
    }

    // Size limits: 32 KB per event, 500 KB per batch, also after decompression.
    let big = "x".repeat(40 * 1024);
    let oversize_event = json!({"userId": "u", "event": "e", "properties": {"p": big}});
    assert_error(
        post_raw(
            &server,
            "/v1/track",
            serde_json::to_vec(&oversize_event).unwrap(),
            false,
        ),
        413,
        "larger than the limit",
    );
    let batch_with_big_event = json!({"batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"p": big}}]});
    assert_error(
        post_raw(
            &server,
            "/v1/batch",
            serde_json::to_vec(&batch_with_big_event).unwrap(),
            false,
        ),
        413,
        "batch[0]",
    );
    let many: Vec<Value> = (0..40).map(|i| json!({"type": "track", "userId": "u", "event": "e", "properties": {"p": "y".repeat(20_000), "i": i}})).collect();
    let oversize_batch = serde_json::to_vec(&json!({"batch": many})).unwrap();
    assert!(oversize_batch.len() > 500 * 1024);
    assert_error(
        post_raw(&server, "/v1/batch", oversize_batch.clone(), false),
        413,
        "larger than the limit",
    );
    // A gzip bomb: small on the wire, far over the limit inflated.
    let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
    assert!(bomb.len() < 100 * 1024);
    assert_error(
        post_raw(&server, "/v1/batch", bomb, true),
        413,
        "decompressed body is larger",
    );
    assert_error(
        post_raw(&server, "/v1/batch", b"not gzip at all".to_vec(), true),
        400,
        "not valid gzip",
    );
    // A valid gzip body is accepted.
    let gzipped = gzip(&serde_json::to_vec(&json!({"batch": track_events("gz", 5)})).unwrap());
    let (status, body) = post_raw(&server, "/v1/batch", gzipped, true);
    assert_eq!(status, 200, "{body}");

    // Credentials.
    let post_as = |user: Option<&str>, path: &str, body: Value| -> (u16, Value) {
        let mut request = server.client().post(server.url(path)).json(&body);
        if let Some(user) = user {
            request = request.basic_auth(user, Some(""));
        }
        let response = request.send().unwrap();
        (
            response.status().as_u16(),
            response.json().unwrap_or(Value::Null),
        )
    };
    let event = json!({"userId": "u", "event": "e"});
    assert_error(
        post_as(None, "/v1/track", event.clone()),
        401,
        "missing write key",
    );
    assert_error(
        post_as(Some("wrong"), "/v1/track", event.clone()),
        401,
        "unknown write key",
    );
    let wrong_body_key = json!({"userId": "u", "event": "e", "writeKey": "wrong"});
    assert_error(
        post_as(None, "/v1/track", wrong_body_key),
        401,
        "unknown write key",
    );
    // The right key in the body works; so does the key of another source, tagging its source.
    let body_key = json!({"userId": "u", "event": "body-key", "writeKey": WRITE_KEY});
    assert_eq!(post_as(None, "/v1/track", body_key).0, 200);
    let from_mobile = json!({"userId": "u", "event": "from-mobile"});
    assert_eq!(post_as(Some("mobile-key"), "/v1/track", from_mobile).0, 200);

    // Nothing from any rejected request was stored.
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 10 + 5 + 2);
    assert_eq!(
        server.count("SELECT count(*) AS n FROM events WHERE message_id = 'partial-1'"),
        0
    );
    assert_eq!(
        server.sql("SELECT source FROM events WHERE event = 'from-mobile'")[0]["source"],
        "mobile"
    );
    server.stop();
}

#[test]
fn bad_sql_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            "--query-timeout",
            "2s",
            "--query-memory-limit",
            "8MiB",
            "--query-max-spill",
            "0",
        ],
    );
    send_batches(&server, &track_events("q", 10), 10);

    let post = |token: Option<&str>, sql: &str| -> (u16, Value) {
        let mut request = server
            .client()
            .post(server.url("/v1/sql"))
            .body(sql.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        (
            response.status().as_u16(),
            response.json().unwrap_or(Value::Null),
        )
    };
    assert_error(post(None, "SELECT 1"), 401, "missing read token");
    assert_error(post(Some("wrong"), "SELECT 1"), 401, "invalid read token");
    assert_error(post(Some(WRITE_KEY), "SELECT 1"), 401, "invalid read token");
    let token = Some(READ_TOKEN);
    assert_error(
        post(token, "SELEC count(*) FROM events"),
        400,
        "Expected: an SQL statement",
    );
    assert_error(
        post(token, "SELECT no_such_column FROM events"),
        400,
        "No field named no_such_column",
    );
    assert_error(post(token, "SELECT * FROM no_such_table"), 400, "not found");
    for statement in [
        "DROP TABLE events",
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE passwd STORED AS CSV LOCATION '/etc/passwd'",
        "INSERT INTO events (message_id) VALUES ('x')",
        "DELETE FROM events",
        "COPY (SELECT * FROM events) TO '/tmp/logektor-copy.parquet'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        assert_error(post(token, statement), 400, "read-only");
    }
    assert_error(post(token, "SELECT * FROM '/etc/passwd'"), 400, "not found");
    assert_error(post(token, ""), 400, "no SQL given");
    let response = server
        .client()
        .post(server.url("/v1/sql"))
        .bearer_auth(READ_TOKEN)
        .json(&json!({"sql": "SELECT 1", "format": "xml"}))
        .send()
        .unwrap();
    assert_error(
        (response.status().as_u16(), response.json().unwrap()),
        400,
        "unknown format",
    );

    // Limits: a full sort far over 8 MiB (it must buffer everything before its first row, and
    // may not spill), and a scan far over 2 s.
    assert_error(
        post(
            token,
            "SELECT v FROM generate_series(1, 5000000) AS t(v) ORDER BY v DESC",
        ),
        400,
        "memory limit",
    );
    assert_error(
        post(
            token,
            "SELECT count(*) FROM generate_series(1, 100000000000) AS t(v) WHERE v % 7 = 3",
        ),
        400,
        "time limit",
    );
    // The server is still fine.
    assert_eq!(server.count("SELECT count(*) AS n FROM events"), 10);
    server.stop();

    // With spilling allowed (the default), a sort twice the memory limit spills and succeeds.
    // (The limit leaves room for the 10 MB DataFusion reserves to merge spilled runs.)
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--query-memory-limit", "16MiB"]);
    assert_eq!(
        server.count(
            "SELECT max(r) AS n FROM (SELECT row_number() OVER (ORDER BY v DESC) AS r \
             FROM generate_series(1, 4000000) AS t(v))"
        ),
        4_000_000
    );
    server.stop();
}
