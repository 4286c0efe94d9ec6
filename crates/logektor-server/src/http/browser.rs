//! What browsers load or hit directly: the tracker script `/t.js`, the pixel
//! (`GET /pixel/v1/track`, `GET /pixel/v1/page`), and the settings analytics.js fetches on start
//! (`GET /v1/projects/{writeKey}/settings`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use logektor_event::{Endpoint, EventType};
use logektor_ingest::Ingester;
use serde_json::json;

use super::ingest::{request_meta, resolve_source};
use super::{ApiError, AppState};

/// The first-party tracker (see `assets/t.js` for what it does).
const TRACKER: &str = include_str!("../../assets/t.js");

pub(super) async fn tracker() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        TRACKER,
    )
        .into_response()
}

/// A transparent 1×1 GIF.
const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn gif(status: StatusCode, error: Option<&ApiError>) -> Response {
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/gif")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, max-age=0"),
            ),
        ],
        GIF,
    )
        .into_response();
    if let Some(error) = error
        && let Ok(value) = HeaderValue::from_str(error.message())
    {
        response.headers_mut().insert("x-logektor-error", value);
    }
    response
}

/// `GET /pixel/v1/{track,page}?writeKey=..&event=..`: always a GIF; a rejected pixel carries
/// its 4xx status and the reason in `X-Logektor-Error`.
///
/// Parameters: `writeKey`; `event` (track, required) or `name` (page); `userId`,
/// `anonymousId`, `messageId`, `timestamp`; `url`, `title`, `referrer` (the page; `url`
/// defaults to the `Referer` header); `properties.NAME=value` for properties (strings).
pub(super) async fn pixel(
    State(state): State<Arc<AppState>>,
    Path(call): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    match store_pixel(&state, &call, peer, &params, &headers).await {
        Ok(()) => gif(StatusCode::OK, None),
        Err(error) => gif(error.status(), Some(&error)),
    }
}

async fn store_pixel(
    state: &AppState,
    call: &str,
    peer: SocketAddr,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let kind = match call {
        "track" => EventType::Track,
        "page" => EventType::Page,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such pixel /pixel/v1/{other}; use track or page"),
            ));
        }
    };
    let key = params
        .iter()
        .find(|(key, value)| key == "writeKey" && !value.is_empty())
        .map(|(_, value)| value.clone())
        .ok_or_else(|| {
            ApiError::unauthorized("missing write key: add ?writeKey= to the pixel URL")
        })?;
    let source = resolve_source(state, &key)?;
    let referer = headers.get(header::REFERER).and_then(|v| v.to_str().ok());
    let body = logektor_event::pixel::message(kind, params, referer)?;
    let endpoint = Endpoint::Single(kind);
    let parsed = Ingester::parse(endpoint, &body)?;
    if let Some(meta) = request_meta(state, source, headers, peer, true)? {
        state.ingester.ingest(meta, endpoint, parsed, &body).await?;
    }
    Ok(())
}

/// `GET /v1/projects/{writeKey}/settings`: the CDN settings analytics.js (Segment's
/// `@segment/analytics-next`) loads on start, pointing it back at this server.
pub(super) async fn segment_settings(
    State(state): State<Arc<AppState>>,
    Path(write_key): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    resolve_source(&state, &write_key)?;
    // Forwarded host and scheme count only from a trusted proxy: anyone else could point the
    // settings (and every visitor's events) at their own host.
    let forwarded = |name: &str| {
        state
            .sources
            .is_trusted_proxy(peer.ip())
            .then(|| headers.get(name).and_then(|v| v.to_str().ok()))
            .flatten()
    };
    let host = forwarded("x-forwarded-host")
        .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or("localhost")
        .to_owned();
    let protocol = match forwarded("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    let settings = Json(json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": format!("{host}/v1"),
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": true, "integrations": {}}},
            "identify": {"__default": {"enabled": true}},
            "group": {"__default": {"enabled": true}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": [],
    }));
    let mut response = settings.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
