//! Prometheus metrics: the recorder, the HTTP middleware that counts requests, and the text the
//! `/metrics` route serves.
//!
//! Names (all prefixed `logektor_`): `http_requests_total{route,status}`,
//! `http_request_seconds{route}`, `events_accepted_total`, `events_duplicate_total`,
//! `errors_total{code}` (every 4xx/5xx answer by its error code: rejected events by reason),
//! `wal_group_commit_seconds`, `wal_group_records`, `wal_failures_total`, `buffer_rows`,
//! `buffer_bytes`, `buffer_batches`, `buffer_batches_merged_total`, `flush_seconds`,
//! `flushed_rows_total`, `flush_failures_total`, `query_seconds`, `query_errors_total{code}`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0,
                    ],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("logektor_wal_group_records".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                )
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// Counts and times every request by its route pattern (never the raw path: that would put
/// write keys and unbounded values into label sets).
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("logektor_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("logektor_http_request_seconds", "route" => route)
        .record(started.elapsed());
    response
}
