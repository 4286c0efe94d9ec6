//! `/v1/admin/*`: table upkeep and erasure, behind an admin token.
//!
//! - `GET  /v1/admin/table`: files, bytes, rows, partitions, version, last compaction and vacuum
//! - `POST /v1/admin/table/optimize[?force=true]`: compact now
//! - `POST /v1/admin/table/vacuum[?grace=1h]`: delete replaced files older than the grace period
//! - `POST /v1/admin/table/checkpoint`: write a checkpoint, drop expired log files
//! - `POST /v1/admin/table/retention`: apply the retention rules now
//! - `POST /v1/admin/forget` with `{"user_id": ".."}` and/or `{"anonymous_id": ".."}`

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use logektor_table::maintenance::{self, Person};
use serde::Serialize;
use serde_json::Value;
use tracing::info;

use super::ingest::read_body;
use super::{ApiError, AppState, require_bearer};

const MAX_ADMIN_BODY: usize = 64 * 1024;

fn authorize_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    require_bearer(headers, "admin token", |token| {
        state.keys.is_admin_token(token)
    })
}

/// Runs a table operation on the upkeep runtime and answers its report as JSON.
async fn run_on_upkeep<T, F>(state: &AppState, work: F) -> Result<Json<Value>, ApiError>
where
    T: Serialize + Send + 'static,
    F: Future<Output = Result<T, logektor_table::Error>> + Send + 'static,
{
    let report = state
        .upkeep
        .spawn(work)
        .await
        .map_err(ApiError::internal)?
        .map_err(|err| {
            if err.is_conflict() {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "a concurrent change to the same files committed first; nothing was changed, retry: {err}"
                    ),
                )
            } else {
                ApiError::internal(err)
            }
        })?;
    Ok(Json(
        serde_json::to_value(report).map_err(ApiError::internal)?,
    ))
}

pub(super) async fn table_info(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    let location = state.ingester.location().clone();
    run_on_upkeep(&state, async move { maintenance::info(&location).await }).await
}

pub(super) async fn optimize(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    let force = match query.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("force must be true or false, got {other:?}"),
            ));
        }
    };
    let ingester = Arc::clone(&state.ingester);
    run_on_upkeep(&state, async move { ingester.compact(force).await }).await
}

pub(super) async fn vacuum(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    let grace = match query.get("grace") {
        None => state.vacuum_grace,
        Some(text) => humantime::parse_duration(text).map_err(|err| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("grace must be a duration such as 1h: {err}"),
            )
        })?,
    };
    let ingester = Arc::clone(&state.ingester);
    run_on_upkeep(&state, async move { ingester.vacuum(grace).await }).await
}

pub(super) async fn checkpoint(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    let ingester = Arc::clone(&state.ingester);
    run_on_upkeep(&state, async move {
        let version = ingester.checkpoint().await?;
        Ok(serde_json::json!({ "version": version }))
    })
    .await
}

pub(super) async fn retention(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    let ingester = Arc::clone(&state.ingester);
    run_on_upkeep(&state, async move { ingester.expire().await }).await
}

pub(super) async fn forget(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    let raw = read_body(body, MAX_ADMIN_BODY, state.body_timeout).await?;
    let person: Person = serde_json::from_slice(&raw).map_err(|err| {
        ApiError::bad_request(
            "invalid_request",
            format!("expected {{\"user_id\": \"..\"}} or {{\"anonymous_id\": \"..\"}}: {err}"),
        )
    })?;
    if person.predicate().is_none() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "give a non-empty \"user_id\" or \"anonymous_id\"",
        ));
    }
    // The audit trail of erasures: who was forgotten and when (the ids are what the request
    // named; the rows themselves are gone after the next vacuum).
    info!(user_id = ?person.user_id, anonymous_id = ?person.anonymous_id, "erasure requested");
    let ingester = Arc::clone(&state.ingester);
    let response = run_on_upkeep(&state, async move { ingester.forget(&person).await }).await?;
    info!(report = %response.0, "erasure done");
    Ok(response)
}
