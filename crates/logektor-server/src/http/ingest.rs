//! Segment's tracking API (`POST /v1/{batch,track,page,screen,identify,group,alias}` and the
//! short forms analytics.js uses, `/v1/{b,t,p,s,i,g,a}`), and what every ingest route shares:
//! body limits and decompression, write-key lookup, and the request metadata (client IP after
//! the source's policy, user agent, cookieless id, Do-Not-Track, allowed origins).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use logektor_event::{Endpoint, EventType, RequestMeta};
use logektor_ingest::Ingester;
use serde_json::{Value, json};

use super::{ApiError, AppState};

fn endpoint_for(call: &str) -> Option<Endpoint> {
    let kind = match call {
        "batch" | "import" | "b" => return Some(Endpoint::Batch),
        "t" => EventType::Track,
        "p" => EventType::Page,
        "s" => EventType::Screen,
        "i" => EventType::Identify,
        "g" => EventType::Group,
        "a" => EventType::Alias,
        other => EventType::parse(other)?,
    };
    Some(Endpoint::Single(kind))
}

pub(super) async fn segment(
    State(state): State<Arc<AppState>>,
    Path(call): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let endpoint = endpoint_for(&call).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint /v1/{call}"),
        )
    })?;
    let limit = endpoint.max_body_bytes();
    let raw = read_body(body, limit, state.body_timeout).await?;
    let body = decode_content(&headers, raw, limit)?;

    // Credentials from the request line or headers are checked before the body is parsed;
    // a `writeKey` in the body only after.
    let header_key = write_key_from_headers(&headers).or_else(|| query.get("writeKey").cloned());
    let header_source = match &header_key {
        Some(key) => Some(resolve_source(&state, key)?),
        None => None,
    };
    let parsed = Ingester::parse(endpoint, &body)?;
    let source = match header_source {
        Some(source) => source,
        None => {
            let key = parsed.write_key().ok_or_else(|| {
                ApiError::unauthorized(
                    "missing write key: send it as the HTTP Basic user name (empty password), \
                     in X-Write-Key, as ?writeKey=, or as \"writeKey\" in the body",
                )
            })?;
            resolve_source(&state, key)?
        }
    };
    if let Some(meta) = request_meta(&state, source, &headers, peer, false)? {
        state.ingester.ingest(meta, endpoint, parsed, &body).await?;
    }
    Ok(Json(json!({"success": true})))
}

pub(super) fn resolve_source(state: &AppState, key: &str) -> Result<String, ApiError> {
    state
        .keys
        .source_for(key)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::unauthorized("unknown write key"))
}

pub(super) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// What the server observed about a request for `source`, after the source's policies; `None`
/// when the source honours Do-Not-Track and the request asks for it (answer as usual, store
/// nothing). A browser origin the source does not allow is a 403.
///
/// The `User-Agent` header stands in for the client's only when a browser sent the request
/// (`from_browser`, e.g. a pixel, or an `Origin`/`Referer` header): a server-side SDK's header
/// names the SDK, not the visitor.
pub(super) fn request_meta(
    state: &AppState,
    source: String,
    headers: &HeaderMap,
    peer: SocketAddr,
    from_browser: bool,
) -> Result<Option<RequestMeta>, ApiError> {
    let policy = state.sources.policy(&source);
    if let Some(allowed) = &policy.allowed_origins
        && let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && !allowed.iter().any(|o| o == origin.trim_end_matches('/'))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("origin {origin:?} may not send events for this source"),
        ));
    }
    let flag = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "1")
    };
    if policy.respect_dnt && (flag("dnt") || flag("sec-gpc")) {
        return Ok(None);
    }
    let received_at = now_micros();
    let ip = state.sources.client_ip(peer, headers);
    let from_browser = from_browser
        || headers.contains_key(header::ORIGIN)
        || headers.contains_key(header::REFERER);
    let header_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(|v| logektor_event::enrich::cap_user_agent(v).to_owned());
    let user_agent = header_agent.clone().filter(|_| from_browser);
    let visitor_id = policy.cookieless.then(|| {
        state.salts.visitor_id(
            received_at,
            &source,
            ip,
            user_agent.as_deref().unwrap_or(""),
        )
    });
    Ok(Some(RequestMeta {
        client_ip: policy.ip_policy.apply(&ip.to_string()),
        user_agent,
        ip_policy: policy.ip_policy,
        visitor_id,
        ..RequestMeta::new(received_at, source, rand::random())
    }))
}

/// How much more than its limit of an oversized body is still read, and thrown away, before
/// the 413 goes out. Answering while the client is still sending makes the server close a
/// connection with unread data, which resets it: the client sees a broken connection instead
/// of the 413, and SDKs retry broken connections, so an event that can never fit would be
/// re-sent forever. Beyond this the connection is closed anyway.
const DRAIN_BYTES: usize = 8 << 20;

/// Reads the body up to `limit` bytes; more is a 413 (see [`DRAIN_BYTES`]), a body not
/// received within `timeout` a 408.
pub(super) async fn read_body(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    use axum::body::HttpBody;
    use futures::StreamExt;

    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = || {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "request body not received within {}",
                humantime::format_duration(timeout)
            ),
        )
    };
    let too_large = || {
        ApiError::too_large(format!(
            "request body is larger than the limit of {limit} bytes"
        ))
    };
    // A declared length beyond what would be drained: refuse before reading any of it.
    if body.size_hint().lower() > (limit + DRAIN_BYTES) as u64 {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(timed_out()),
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                return Err(ApiError::bad_request(
                    "bad_body",
                    format!("request body could not be read: {err}"),
                ));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        received += chunk.len();
        if received > limit {
            // Drain what the client is still sending (bounded in bytes and time), then answer.
            while received <= limit + DRAIN_BYTES {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(Ok(chunk))) => received += chunk.len(),
                    _ => break,
                }
            }
            return Err(too_large());
        }
        chunks.push(chunk);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => Bytes::from(chunks.concat()),
    })
}

/// Undoes `Content-Encoding: gzip`, refusing output beyond `limit` bytes without inflating
/// more than `limit + 1` bytes (a small bomb never becomes a large allocation).
pub(super) fn decode_content(
    headers: &HeaderMap,
    raw: Bytes,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => gunzip(&raw, limit),
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("unsupported Content-Encoding {other:?}; send gzip or no encoding"),
        )),
    }
}

/// Inflates a gzip body of at most `limit` bytes, reading no more than `limit + 1`.
pub(super) fn gunzip(raw: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    use logektor_event::compression::GunzipError;
    match logektor_event::compression::gunzip(raw, limit) {
        Ok(out) => Ok(Bytes::from(out)),
        Err(err @ GunzipError::Invalid(_)) => {
            Err(ApiError::bad_request("invalid_encoding", err.to_string()))
        }
        Err(err @ GunzipError::TooLarge { .. }) => Err(ApiError::too_large(err.to_string())),
    }
}

/// The write key from `Authorization: Basic base64(key:)` or `X-Write-Key`.
fn write_key_from_headers(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(encoded) = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
        && let Ok(text) = String::from_utf8(decoded)
    {
        let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
        if !user.is_empty() {
            return Some(user.to_owned());
        }
    }
    headers
        .get("x-write-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}
