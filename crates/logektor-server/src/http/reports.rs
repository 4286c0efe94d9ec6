//! `GET /v1/reports` (the named reports of `queries/` and their parameters) and
//! `GET /v1/reports/{name}?from=..&to=..&format=..` (run one; same token and formats as
//! `/v1/sql`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use logektor_query::Format;
use logektor_query::reports::ReportError;
use serde_json::{Value, json};

use super::ingest::now_micros;
use super::sql::{authorize_read, stream_query};
use super::{ApiError, AppState};

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_read(&state, &headers)?;
    let reports: Vec<Value> = state
        .reports
        .iter()
        .map(|report| serde_json::to_value(report).expect("a report serializes"))
        .collect();
    Ok(Json(json!({ "reports": reports })))
}

pub(super) async fn run(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(mut query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = authorize_read(&state, &headers)?;
    let format = match query.remove("format") {
        None => Format::Json,
        Some(name) => Format::parse(&name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_format",
                format!("unknown format {name:?}; expected one of {}", Format::NAMES),
            )
        })?,
    };
    let report = state.reports.get(&name).map_err(report_error)?;
    let params = report.bind(&query, now_micros()).map_err(report_error)?;
    stream_query(&state, report.sql.clone(), Some(params), &scope, format).await
}

fn report_error(err: ReportError) -> ApiError {
    match err {
        ReportError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string())
        }
        ReportError::BadParam { .. } => ApiError::bad_request("invalid_parameter", err.to_string()),
    }
}
