//! PostHog's capture API: `/e`, `/i/v0/e`, `/capture`, `/batch` (GET and POST, with or without
//! a trailing slash), and minimal `/decide` and `/flags` answers so posthog-js starts.
//!
//! A body may be gzip (`Content-Encoding: gzip` or `?compression=gzip-js`), a form `data=` field
//! or `?data=` in base64 or LZ-String (`?compression=base64|lz64`), or plain JSON. What is
//! stored in the WAL is the plain JSON, so replay needs none of this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use logektor_event::posthog::{Compression, unwrap_body};
use logektor_event::{Endpoint, MAX_BATCH_BYTES};
use logektor_ingest::Ingester;
use serde_json::{Value, json};

use super::ingest::{decode_content, gunzip, read_body, request_meta, resolve_source};
use super::{ApiError, AppState};

pub(super) async fn capture(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let limit = MAX_BATCH_BYTES;
    let raw = read_body(body, limit, state.body_timeout).await?;
    let raw = decode_content(&headers, raw, limit)?;
    // posthog-js puts `compression` in the query, or (lz64, base64) beside `data` in a form body.
    let form_compression = if raw.starts_with(b"data=") || raw.starts_with(b"compression=") {
        url::form_urlencoded::parse(&raw)
            .find(|(key, _)| key == "compression")
            .map(|(_, value)| value.into_owned())
    } else {
        None
    };
    let compression_param = query
        .get("compression")
        .map(String::as_str)
        .or(form_compression.as_deref());
    let compression = Compression::from_query(compression_param)
        .map_err(|err| ApiError::bad_request("invalid_compression", err.to_string()))?;
    // posthog-js sends gzip as text/plain without Content-Encoding, saying so in the query.
    let raw = match compression_param {
        Some("gzip" | "gzip-js") if raw.starts_with(&[0x1f, 0x8b]) => gunzip(&raw, limit)?,
        _ => raw,
    };
    let form_data = query.get("data").map(String::as_str);
    if raw.is_empty() && form_data.is_none() {
        return Err(ApiError::bad_request(
            "invalid_event",
            "no events: send them as the body, or as data= in the query",
        ));
    }
    let json_body = unwrap_body(&raw, form_data, compression, limit)?;
    let parsed = Ingester::parse(Endpoint::PostHog, &json_body)?;
    let key = query
        .get("api_key")
        .or_else(|| query.get("token"))
        .cloned()
        .or_else(|| parsed.write_key().map(str::to_owned))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing project api key: send \"api_key\" in the body, or \"token\" in the event properties",
            )
        })?;
    let source = resolve_source(&state, &key)?;
    if let Some(meta) = request_meta(&state, source, &headers, peer, false)? {
        state
            .ingester
            .ingest(meta, Endpoint::PostHog, parsed, &json_body)
            .await?;
    }
    Ok(Json(json!({"status": "Ok"})))
}

/// `/decide`: no feature flags, no session recording, no autocapture beyond what the page asks.
pub(super) async fn decide() -> Json<Value> {
    Json(json!({
        "config": {"enable_collect_everything": false},
        "featureFlags": {},
        "featureFlagPayloads": {},
        "errorsWhileComputingFlags": false,
        "isAuthenticated": false,
        "sessionRecording": false,
        "supportedCompression": ["gzip", "gzip-js", "base64", "lz64"],
        "autocapture_opt_out": true,
        "capturePerformance": false,
        "autocaptureExceptions": false,
        "heatmaps": false,
        "surveys": false,
        "siteApps": [],
        "toolbarParams": {},
        "flags": {},
    }))
}

/// `/flags` (the newer form of `/decide`).
pub(super) async fn flags() -> Json<Value> {
    decide().await
}
