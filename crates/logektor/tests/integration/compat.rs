//! Wire compatibility at the HTTP level: retries deduplicated across restarts, clock skew,
//! enrichment (user agents, IP policies, proxies, cookieless ids, Do-Not-Track, origins),
//! PostHog's body forms, Segment's short paths and settings, CORS, and every bad-input case of
//! these APIs.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Value, json};

use crate::support::{TestServer, WRITE_KEY};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn iso(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
    chrono::DateTime::from_timestamp(secs, nanos)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Sends a request; returns status, headers and body text.
fn send(request: reqwest::blocking::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().unwrap_or_default())
}

fn ids_count(server: &TestServer, prefix: &str) -> Vec<Value> {
    server.sql(&format!(
        "SELECT message_id, count(*) AS n FROM events WHERE message_id LIKE '{prefix}%' \
         GROUP BY message_id ORDER BY message_id"
    ))
}

#[test]
fn a_retried_batch_is_one_row_per_message_id_even_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let batch = json!({"batch": crate::support::track_events("retry", 20)});
    let one_each = |server: &TestServer, expected: usize| {
        let counts = ids_count(server, "retry-");
        assert_eq!(counts.len(), expected, "{counts:?}");
        assert!(counts.iter().all(|row| row["n"] == 1), "{counts:?}");
    };

    let server = TestServer::start(dir.path(), &[]);
    for _ in 0..2 {
        let (status, body) = server.post("/v1/batch", &batch);
        assert_eq!(status, 200, "{body}");
    }
    one_each(&server, 20);
    // Killed before any flush: the ids come back from the WAL.
    server.kill();
    let server = TestServer::start(dir.path(), &[]);
    assert_eq!(server.post("/v1/batch", &batch).0, 200);
    one_each(&server, 20);
    // Stopped gracefully (flushed, WAL emptied): the ids come back from the table.
    server.stop();
    let server = TestServer::start(dir.path(), &[]);
    assert_eq!(server.post("/v1/batch", &batch).0, 200);
    // A batch mixing old and new ids stores only the new ones; a repeat inside a batch too.
    let mut mixed = crate::support::track_events("retry", 22);
    mixed.push(mixed[21].clone());
    assert_eq!(server.post("/v1/batch", &json!({"batch": mixed})).0, 200);
    one_each(&server, 22);
    // PostHog retries dedup by uuid the same way.
    let capture = json!({"api_key": WRITE_KEY, "batch": [
        {"event": "e", "distinct_id": "d", "uuid": "retry-ph-1"}]});
    for _ in 0..3 {
        let (status, _, _) = send(server.client().post(server.url("/batch/")).json(&capture));
        assert_eq!(status, 200);
    }
    one_each(&server, 23);
}

#[test]
fn client_clock_skew_is_corrected() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let hour = 3_600_000_000i64;
    let before = now_micros();
    // The client's clock is one hour ahead; the event happened 5 s before sending.
    let ahead = now_micros() + hour;
    let body = json!({"batch": [{"type": "track", "event": "skewed", "userId": "u",
        "timestamp": iso(ahead - 5_000_000)}], "sentAt": iso(ahead)});
    assert_eq!(server.post("/v1/batch", &body).0, 200);
    let ph = json!({"api_key": WRITE_KEY, "sent_at": iso(ahead), "batch": [
        {"event": "skewed-ph", "distinct_id": "u", "timestamp": iso(ahead - 5_000_000)}]});
    assert_eq!(
        send(server.client().post(server.url("/batch/")).json(&ph)).0,
        200
    );
    let after = now_micros();
    let rows = server.sql(
        "SELECT event, CAST(timestamp AS BIGINT) AS ts FROM events \
         WHERE event LIKE 'skewed%' ORDER BY event",
    );
    assert_eq!(rows.len(), 2);
    for row in rows {
        let ts = row["ts"].as_i64().unwrap();
        assert!(
            ts >= before - 5_000_000 - 1_000_000 && ts <= after - 5_000_000 + 1_000_000,
            "corrected timestamp {ts} should be about 5 s before receipt [{before}, {after}]: {row}"
        );
    }
}

#[test]
fn user_agents_and_ip_policies_enrich_as_promised() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            "--write-key",
            "trunc=trunc-key",
            "--write-key",
            "nada=nada-key",
            "--write-key",
            "anon=anon-key",
            "--ip-policy",
            "trunc=truncate",
            "--ip-policy",
            "nada=drop",
            "--cookieless",
            "anon",
            "--respect-dnt",
            "anon",
            "--allowed-origin",
            "anon=https://shop.example",
            "--trusted-proxy",
            "127.0.0.0/8",
        ],
    );
    let agents = [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Chrome",
            "Windows 10",
            "desktop",
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            "Safari",
            "iPhone",
            "mobile",
            false,
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
            "Safari",
            "iPad",
            "tablet",
            false,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:121.0) Gecko/20100101 Firefox/121.0",
            "Firefox",
            "Mac OSX",
            "desktop",
            false,
        ),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Googlebot",
            "",
            "bot",
            true,
        ),
    ];
    let events: Vec<Value> = agents
        .iter()
        .enumerate()
        .map(|(i, (ua, ..))| {
            json!({"type": "page", "anonymousId": format!("ua-{i}"), "context": {"userAgent": ua}})
        })
        .collect();
    assert_eq!(server.post("/v1/batch", &json!({"batch": events})).0, 200);
    // Without context.userAgent, a browser's User-Agent header counts (beacons, pixels); a
    // server-side SDK's header names the SDK, not the visitor, and is not used.
    let (status, _, _) = send(
        server
            .client()
            .post(server.url("/v1/page"))
            .basic_auth(WRITE_KEY, Some(""))
            .header("user-agent", agents[1].0)
            .header("origin", "https://shop.example")
            .json(&json!({"anonymousId": "ua-header"})),
    );
    assert_eq!(status, 200);
    let (status, _, _) = send(
        server
            .client()
            .post(server.url("/v1/page"))
            .basic_auth(WRITE_KEY, Some(""))
            .header("user-agent", "python-requests/2.32")
            .json(&json!({"anonymousId": "server-side"})),
    );
    assert_eq!(status, 200);
    let server_side =
        server.sql("SELECT user_agent, is_bot FROM events WHERE anonymous_id = 'server-side'");
    assert_eq!(
        server_side,
        vec![json!({"user_agent": null, "is_bot": null})]
    );
    let rows = server.sql(
        "SELECT anonymous_id, browser, coalesce(os, '') AS os, device_type, is_bot \
         FROM events WHERE anonymous_id LIKE 'ua-%' ORDER BY anonymous_id",
    );
    assert_eq!(rows.len(), agents.len() + 1, "{rows:?}");
    for (i, (_, browser, os, device, bot)) in agents.iter().enumerate() {
        let row = &rows[i];
        assert_eq!(
            (
                &row["browser"],
                &row["os"],
                &row["device_type"],
                &row["is_bot"]
            ),
            (&json!(browser), &json!(os), &json!(device), &json!(bot)),
            "{row}"
        );
    }
    assert_eq!(rows[agents.len()]["device_type"], "mobile");

    // IP policies: the socket address (through a trusted proxy's X-Forwarded-For) and an
    // address the event reports itself.
    for (key, source) in [
        (WRITE_KEY, "default"),
        ("trunc-key", "trunc"),
        ("nada-key", "nada"),
    ] {
        let reported = if source == "default" {
            "198.51.100.77"
        } else {
            "198.51.100.88"
        };
        for (id, context) in [("socket", json!({})), ("context", json!({"ip": reported}))] {
            let (status, _, body) = send(
                server
                    .client()
                    .post(server.url("/v1/track"))
                    .basic_auth(key, Some(""))
                    .header("x-forwarded-for", "203.0.113.200, 127.0.0.9")
                    .json(&json!({"event": "ip", "userId": format!("{source}-{id}"), "context": context})),
            );
            assert_eq!(status, 200, "{body}");
        }
    }
    let rows =
        server.sql("SELECT user_id, ip, context FROM events WHERE event = 'ip' ORDER BY user_id");
    let stored: Vec<(String, Value)> = rows
        .iter()
        .map(|r| (r["user_id"].as_str().unwrap().to_owned(), r["ip"].clone()))
        .collect();
    assert_eq!(
        stored,
        vec![
            ("default-context".to_owned(), json!("198.51.100.77")),
            ("default-socket".to_owned(), json!("203.0.113.200")),
            ("nada-context".to_owned(), Value::Null),
            ("nada-socket".to_owned(), Value::Null),
            ("trunc-context".to_owned(), json!("198.51.100.0")),
            ("trunc-socket".to_owned(), json!("203.0.113.0")),
        ]
    );
    // No copy of a dropped or truncated address survives in the stored context.
    for row in &rows {
        let context = row["context"].as_str().unwrap_or_default();
        if !row["user_id"].as_str().unwrap().starts_with("default") {
            assert!(
                !context.contains("198.51.100.88") && !context.contains("203.0.113.200"),
                "{row}"
            );
        }
    }
    // Nor in the WAL: the body is rewritten by the policy before it is logged.
    for entry in std::fs::read_dir(dir.path().join("wal")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(13).any(|w| w == b"198.51.100.88"),
            "a dropped or truncated address is in the WAL"
        );
    }

    // Cookieless ids: stable for the same IP and user agent, different for another agent.
    let cookieless = |ua: &str, extra: &[(&str, &str)]| {
        let mut request = server
            .client()
            .post(server.url("/v1/page"))
            .header("x-write-key", "anon-key")
            .header("user-agent", ua)
            .header("content-type", "text/plain")
            .body(r#"{"name": "cookieless"}"#);
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        send(request)
    };
    assert_eq!(cookieless("agent-a", &[]).0, 200);
    assert_eq!(cookieless("agent-a", &[]).0, 200);
    assert_eq!(cookieless("agent-b", &[]).0, 200);
    // Do-Not-Track: answered 200, stored nothing.
    assert_eq!(cookieless("agent-c", &[("dnt", "1")]).0, 200);
    assert_eq!(cookieless("agent-c", &[("sec-gpc", "1")]).0, 200);
    // Origins: only the allowed one.
    assert_eq!(
        cookieless("agent-a", &[("origin", "https://shop.example")]).0,
        200
    );
    let (status, _, body) = cookieless("agent-a", &[("origin", "https://evil.example")]);
    assert_eq!(status, 403, "{body}");
    let visitors = server.sql(
        "SELECT anonymous_id, count(*) AS n FROM events WHERE event = 'cookieless' \
         GROUP BY anonymous_id ORDER BY n DESC",
    );
    assert_eq!(visitors.len(), 2, "{visitors:?}");
    assert_eq!(visitors[0]["n"], 3);
    assert_eq!(visitors[1]["n"], 1);
    for visitor in &visitors {
        assert!(visitor["anonymous_id"].as_str().unwrap().starts_with("ck_"));
    }
}

#[test]
fn posthog_body_forms_short_paths_settings_and_cors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let client = server.client();
    let event = |name: &str| json!({"event": name, "distinct_id": "ph", "properties": {"token": WRITE_KEY}});
    let json_text = |name: &str| serde_json::to_string(&json!([event(name)])).unwrap();
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let form = |payload: &str| {
        format!(
            "data={}",
            url::form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>()
        )
    };

    let requests = vec![
        // posthog-js: gzip-js as text/plain, no Content-Encoding.
        client
            .post(server.url("/e/?compression=gzip-js&ver=1.200.0"))
            .header("content-type", "text/plain")
            .body(gzip(json_text("gzip-js").as_bytes())),
        client
            .post(server.url("/i/v0/e/?compression=base64"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&b64(&json_text("base64-form")))),
        client
            .post(server.url("/e?compression=lz64"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&lz_str::compress_to_base64(
                json_text("lz64-form").as_str(),
            ))),
        // posthog-js (older versions) puts the compression into the form body.
        client
            .post(server.url("/e/"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "{}&compression=lz64",
                form(&lz_str::compress_to_base64(
                    json_text("lz64-in-form").as_str()
                ))
            )),
        client.get(server.url(&format!(
            "/e/?data={}",
            url::form_urlencoded::byte_serialize(b64(&json_text("get-data")).as_bytes())
                .collect::<String>()
        ))),
        client
            .post(server.url("/capture/"))
            .json(&json!({"api_key": WRITE_KEY, "event": "single", "distinct_id": "ph"})),
        client
            .post(server.url("/batch"))
            .header("content-encoding", "gzip")
            .body(gzip(
                serde_json::to_vec(&json!({"api_key": WRITE_KEY, "batch": [event("batch-gzip")]}))
                    .unwrap()
                    .as_slice(),
            )),
        client.post(server.url("/i/v0/e")).json(&event("i-v0-e")),
        // posthog-js identify: person properties at the top of the event.
        client
            .post(server.url("/e/"))
            .json(&json!([{"event": "$identify", "distinct_id": "ph",
            "$set": {"email": "ph@example.com"}, "$set_once": {"first": "2024"},
            "properties": {"token": WRITE_KEY, "$anon_distinct_id": "anon-ph"}}])),
    ];
    for request in requests {
        let (status, _, body) = send(request);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"status": "Ok"})
        );
    }
    let identify = server
        .sql("SELECT anonymous_id, traits FROM events WHERE user_id = 'ph' AND type = 'identify'");
    assert_eq!(
        identify,
        vec![
            json!({"anonymous_id": "anon-ph", "traits": r#"{"email":"ph@example.com","first":"2024"}"#})
        ]
    );
    let names: Vec<String> = server
        .sql("SELECT event FROM events WHERE user_id = 'ph' AND type = 'track' ORDER BY event")
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "base64-form",
            "batch-gzip",
            "get-data",
            "gzip-js",
            "i-v0-e",
            "lz64-form",
            "lz64-in-form",
            "single"
        ]
    );
    for path in ["/decide/?v=3", "/flags/?v=2", "/decide", "/flags"] {
        let (status, _, body) = send(client.post(server.url(path)).body("{}"));
        assert_eq!(status, 200, "{path}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["featureFlags"], json!({}), "{path}");
    }

    // Segment's short paths, text/plain bodies, and every credential form.
    let short = [
        ("/v1/t", json!({"event": "short-t", "userId": "s"})),
        ("/v1/p", json!({"name": "short-p", "userId": "s"})),
        ("/v1/s", json!({"name": "short-s", "userId": "s"})),
        ("/v1/i", json!({"userId": "s", "traits": {"a": 1}})),
        ("/v1/g", json!({"userId": "s", "groupId": "g1"})),
        ("/v1/a", json!({"userId": "s", "previousId": "s0"})),
        (
            "/v1/b",
            json!({"batch": [{"type": "track", "event": "short-b", "userId": "s"}]}),
        ),
    ];
    for (i, (path, body)) in short.iter().enumerate() {
        let text = serde_json::to_string(body).unwrap();
        let request = client
            .post(server.url(path))
            .header("content-type", "text/plain");
        let request = match i % 3 {
            0 => request.header("x-write-key", WRITE_KEY).body(text),
            1 => client
                .post(server.url(&format!("{path}?writeKey={WRITE_KEY}")))
                .header("content-type", "text/plain")
                .body(text),
            _ => {
                let mut with_key = body.clone();
                with_key["writeKey"] = json!(WRITE_KEY);
                request.body(serde_json::to_string(&with_key).unwrap())
            }
        };
        let (status, _, answer) = send(request);
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let types = server.sql(
        "SELECT type, count(*) AS n FROM events WHERE user_id = 's' GROUP BY type ORDER BY type",
    );
    assert_eq!(
        types,
        vec![
            json!({"type": "alias", "n": 1}),
            json!({"type": "group", "n": 1}),
            json!({"type": "identify", "n": 1}),
            json!({"type": "page", "n": 1}),
            json!({"type": "screen", "n": 1}),
            json!({"type": "track", "n": 2}),
        ]
    );

    // The settings analytics.js loads on start point back here.
    let (status, _, body) =
        send(client.get(server.url(&format!("/v1/projects/{WRITE_KEY}/settings"))));
    assert_eq!(status, 200);
    let settings: Value = serde_json::from_str(&body).unwrap();
    let host = server.base.trim_start_matches("http://");
    assert_eq!(
        settings["integrations"]["Segment.io"]["apiHost"],
        format!("{host}/v1")
    );
    assert_eq!(
        send(client.get(server.url("/v1/projects/nope/settings"))).0,
        401
    );

    // CORS: preflight answered for the collection routes, origin echoed, credentials allowed;
    // the SQL route grants nothing to other sites.
    let (status, headers, _) = send(
        client
            .request(reqwest::Method::OPTIONS, server.url("/v1/batch"))
            .header("origin", "https://shop.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, x-write-key",
            ),
    );
    assert_eq!(status, 200);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-write-key")
    );
    let (_, headers, _) = send(
        client
            .post(server.url("/v1/t"))
            .header("origin", "https://shop.example")
            .header("x-write-key", WRITE_KEY)
            .body(r#"{"event": "cors", "userId": "c"}"#),
    );
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    let (_, headers, _) = send(
        client
            .request(reqwest::Method::OPTIONS, server.url("/v1/sql"))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST"),
    );
    assert!(headers.get("access-control-allow-origin").is_none());

    // The tracker script.
    let (status, headers, body) = send(client.get(server.url("/t.js")));
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/javascript")
    );
    assert!(body.contains("sendBeacon") && body.contains("pushState"));
}

#[test]
fn bad_input_on_each_api_family_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let client = server.client();
    let total = || server.count("SELECT count(*) AS n FROM events");
    let before = total();
    // A gzip bomb: 64 KiB compressed, 64 MiB inflated.
    let bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 100_000);
    let big_property = "x".repeat(40_000);
    let json_err = |status: u16, needle: &'static str| (status, needle);

    let cases: Vec<(&str, reqwest::blocking::RequestBuilder, (u16, &str))> = vec![
        (
            "segment: malformed gzip",
            client
                .post(server.url("/v1/batch"))
                .basic_auth(WRITE_KEY, Some(""))
                .header("content-encoding", "gzip")
                .body(b"\x1f\x8b\x08\x00garbage".to_vec()),
            json_err(400, "not valid gzip"),
        ),
        (
            "segment: gzip bomb",
            client
                .post(server.url("/v1/batch"))
                .basic_auth(WRITE_KEY, Some(""))
                .header("content-encoding", "gzip")
                .body(bomb.clone()),
            json_err(413, "decompressed body is larger"),
        ),
        (
            "segment: oversize event inside a batch",
            client
                .post(server.url("/v1/batch"))
                .basic_auth(WRITE_KEY, Some(""))
                .json(&json!({"batch": [
                    {"type": "track", "event": "fine", "userId": "u"},
                    {"type": "track", "event": "big", "userId": "u", "properties": {"p": big_property}}]})),
            json_err(413, "batch[1]"),
        ),
        (
            "segment: wrong write key",
            client
                .post(server.url("/v1/track"))
                .basic_auth("wrong", Some(""))
                .json(&json!({"event": "e", "userId": "u"})),
            json_err(401, "unknown write key"),
        ),
        (
            "segment: no write key",
            client
                .post(server.url("/v1/t"))
                .body(r#"{"event": "e", "userId": "u"}"#),
            json_err(401, "missing write key"),
        ),
        (
            "posthog: wrong api key",
            client
                .post(server.url("/batch/"))
                .json(&json!({"api_key": "wrong", "batch": [{"event": "e", "distinct_id": "d"}]})),
            json_err(401, "unknown write key"),
        ),
        (
            "posthog: no api key",
            client
                .post(server.url("/e/"))
                .json(&json!([{"event": "e", "distinct_id": "d"}])),
            json_err(401, "missing project api key"),
        ),
        (
            "posthog: malformed gzip-js",
            client
                .post(server.url("/e/?compression=gzip-js"))
                .body(b"\x1f\x8b\x08\x00garbage".to_vec()),
            json_err(400, "not valid gzip"),
        ),
        (
            "posthog: gzip bomb",
            client
                .post(server.url("/e/?compression=gzip-js"))
                .body(bomb),
            json_err(413, "decompressed body is larger"),
        ),
        (
            "posthog: invalid base64",
            client
                .post(server.url("/e/?compression=base64"))
                .body("data=%%%not-base64%%%"),
            json_err(400, "valid base64"),
        ),
        (
            "posthog: invalid lz64",
            client
                .post(server.url("/e/?compression=lz64"))
                .body("data=!!!!"),
            json_err(400, "lz64"),
        ),
        (
            "posthog: lz64 bomb",
            client
                .post(server.url("/e/?compression=lz64"))
                .body(format!(
                    "data={}",
                    url::form_urlencoded::byte_serialize(
                        lz_str::compress_to_base64("a".repeat(4 << 20).as_str()).as_bytes()
                    )
                    .collect::<String>()
                )),
            json_err(413, "larger than the limit"),
        ),
        (
            "posthog: unknown compression",
            client
                .post(server.url("/e/?compression=brotli"))
                .body("{}"),
            json_err(400, "unknown compression"),
        ),
        (
            "posthog: oversize event",
            client.post(server.url("/batch/")).json(&json!({"api_key": WRITE_KEY, "batch": [
                {"event": "big", "distinct_id": "d", "properties": {"p": "y".repeat(40_000)}}]})),
            json_err(413, "larger than the limit"),
        ),
    ];
    for (name, request, (status, needle)) in cases {
        let (code, _, body) = send(request);
        assert_eq!(code, status, "{name}: {body}");
        let answer: Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("{name}: answer is not JSON: {body}"));
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{name}: expected {needle:?} in {body}"
        );
    }

    // Pixels answer a GIF whatever happens, with the status and reason in a header.
    for (query, status, needle) in [
        (
            "/pixel/v1/track?writeKey=test-write-key&anonymousId=a",
            400,
            "needs ?event=",
        ),
        (
            "/pixel/v1/track?writeKey=wrong&event=e&anonymousId=a",
            401,
            "unknown write key",
        ),
        (
            "/pixel/v1/track?event=e&anonymousId=a",
            401,
            "missing write key",
        ),
        (
            "/pixel/v1/track?writeKey=test-write-key&event=e",
            400,
            "anonymousId",
        ),
        (
            "/pixel/v1/nope?writeKey=test-write-key&event=e",
            404,
            "no such pixel",
        ),
    ] {
        let response = client.get(server.url(query)).send().unwrap();
        assert_eq!(response.status().as_u16(), status, "{query}");
        assert_eq!(response.headers()["content-type"], "image/gif", "{query}");
        let reason = response.headers()["x-logektor-error"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(reason.contains(needle), "{query}: {reason}");
        assert!(response.bytes().unwrap().starts_with(b"GIF89a"));
    }
    assert_eq!(total(), before, "a rejected request stored something");
}
