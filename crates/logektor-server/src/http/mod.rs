//! The HTTP API: routes, shared state, and the single mapping from errors to statuses.

mod admin;
mod browser;
mod dashboard;
mod ingest;
mod posthog;
mod reports;
mod sql;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use logektor_ingest::{IngestError, Ingester};
use logektor_query::{QueryEngine, QueryError};
use serde_json::json;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use tracing::error;

use crate::keys::Keys;
use crate::sources::{Salts, SourcePolicies};

/// What every handler shares.
pub struct AppState {
    pub ingester: Arc<Ingester>,
    pub engine: Arc<QueryEngine>,
    pub keys: Keys,
    /// Runtime for CPU-heavy work (DataFusion, result encoding), away from request tasks.
    pub compute: tokio::runtime::Handle,
    /// Runtime for table upkeep (compaction, retention, vacuum, erasure), at a lower priority.
    pub upkeep: tokio::runtime::Handle,
    /// The default grace period of `POST /v1/admin/table/vacuum`.
    pub vacuum_grace: std::time::Duration,
    /// Per-source IP policy, cookieless ids, Do-Not-Track, allowed origins; trusted proxies.
    pub sources: SourcePolicies,
    pub salts: Salts,
    /// The named reports of `queries/`.
    pub reports: logektor_query::reports::Reports,
    /// Renders the Prometheus metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Time a client has to send a request body.
    pub body_timeout: std::time::Duration,
    /// One permit per ingest request in flight (`--max-concurrent-ingest`).
    pub ingest_permits: Arc<tokio::sync::Semaphore>,
}

/// The whole API.
pub fn router(state: Arc<AppState>) -> Router {
    // Routes browsers call from other sites' pages. CORS is granted here only: the read and
    // admin routes must never answer a cross-site script.
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(std::time::Duration::from_secs(86_400));
    let mut collect = Router::new()
        .route("/v1/{call}", post(ingest::segment))
        .route(
            "/v1/projects/{write_key}/settings",
            get(browser::segment_settings),
        )
        .route("/pixel/v1/{call}", get(browser::pixel))
        .route("/t.js", get(browser::tracker));
    for path in ["/e", "/i/v0/e", "/capture", "/batch"] {
        collect = collect
            .route(path, get(posthog::capture).post(posthog::capture))
            .route(
                &format!("{path}/"),
                get(posthog::capture).post(posthog::capture),
            );
    }
    for path in ["/decide", "/decide/"] {
        collect = collect.route(path, get(posthog::decide).post(posthog::decide));
    }
    for path in ["/flags", "/flags/"] {
        collect = collect.route(path, get(posthog::flags).post(posthog::flags));
    }
    let collect = collect
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            limit_ingest,
        ))
        .layer(cors);

    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard::page))
        .route("/login", post(dashboard::login))
        .route("/logout", post(dashboard::logout))
        .route("/dashboard/live", get(dashboard::live))
        .route("/v1/sql", post(sql::sql))
        .route("/v1/reports", get(reports::list))
        .route("/v1/reports/{name}", get(reports::run))
        .route("/v1/admin/table", get(admin::table_info))
        .route("/v1/admin/table/optimize", post(admin::optimize))
        .route("/v1/admin/table/vacuum", post(admin::vacuum))
        .route("/v1/admin/table/checkpoint", post(admin::checkpoint))
        .route("/v1/admin/table/retention", post(admin::retention))
        .route("/v1/admin/forget", post(admin::forget))
        .merge(collect)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(crate::metrics::track_http))
        // Spans name the path only: query strings may carry a write key.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                // The settings path carries a write key; name the route instead.
                let path = request.uri().path();
                let path = if path.starts_with("/v1/projects/") {
                    "/v1/projects/{writeKey}/settings"
                } else {
                    path
                };
                tracing::info_span!("http", method = %request.method(), path = %path)
            }),
        )
        .with_state(state)
}

/// Sheds ingest load: a POST that finds all `--max-concurrent-ingest` permits taken is answered
/// 429 with Retry-After before its body is read, so bodies in flight (and the WAL queue behind
/// them) never take more than the permits allow. GETs (pixels, PostHog's query-string form)
/// carry at most a header's worth of data and are not counted.
async fn limit_ingest(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    match Arc::clone(&state.ingest_permits).try_acquire_owned() {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => {
            ::metrics::counter!("logektor_ingest_shed_total").increment(1);
            ApiError {
                retry_after_secs: Some(1),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "overloaded",
                    "too many ingest requests in flight; retry later",
                )
            }
            .into_response()
        }
    }
}

/// The token of the `Authorization: Bearer <token>` header; `kind` names it in the 401.
fn bearer<'h>(headers: &'h axum::http::HeaderMap, kind: &str) -> Result<&'h str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthorized(format!(
                "missing {kind}: send Authorization: Bearer <{kind}>"
            ))
        })
}

/// Checks the `Authorization: Bearer <token>` header against `valid`; `kind` names the token
/// in the 401 answers ("read token", "admin token").
fn require_bearer(
    headers: &axum::http::HeaderMap,
    kind: &str,
    valid: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    if !valid(bearer(headers, kind)?) {
        return Err(ApiError::unauthorized(format!("invalid {kind}")));
    }
    Ok(())
}

/// `GET /metrics`: Prometheus text, behind the admin token (labels name sources and routes).
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    require_bearer(&headers, "admin token", |token| {
        state.keys.is_admin_token(token)
    })?;
    let buffer = state.ingester.buffer().stats();
    ::metrics::gauge!("logektor_buffer_rows").set(buffer.rows as f64);
    ::metrics::gauge!("logektor_buffer_bytes").set(buffer.bytes as f64);
    ::metrics::gauge!("logektor_buffer_batches").set(buffer.batches as f64);
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// An error answer: `{"success": false, "error": "...", "code": "..."}` with the right status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// A failure of ours: logged in full, answered with generic text.
    fn internal(detail: impl std::fmt::Display) -> Self {
        error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        match err {
            IngestError::Invalid(decode) if decode.is_too_large() => {
                ApiError::too_large(decode.to_string())
            }
            IngestError::Invalid(decode) => {
                ApiError::bad_request("invalid_event", decode.to_string())
            }
            IngestError::Overloaded { .. } => ApiError::unavailable(err.to_string(), 1),
            IngestError::Wal(wal) => {
                error!(error = %wal, "WAL append failed");
                ApiError::unavailable("events could not be made durable; retry later", 5)
            }
        }
    }
}

impl From<logektor_event::DecodeError> for ApiError {
    fn from(err: logektor_event::DecodeError) -> Self {
        IngestError::Invalid(err).into()
    }
}

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> Self {
        match &err {
            QueryError::Internal(_) => ApiError::internal(err),
            _ => ApiError::bad_request(err.code(), err.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ::metrics::counter!("logektor_errors_total", "code" => self.code).increment(1);
        let body = Json(json!({"success": false, "error": self.message, "code": self.code}));
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
