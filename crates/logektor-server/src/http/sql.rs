//! `POST /v1/sql`: run one read-only statement, stream the result.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use logektor_query::request::{MAX_SQL_BODY, SqlRequest};
use logektor_query::{BatchEncoder, Format, QueryError, Scope};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tracing::warn;

use super::ingest::read_body;
use super::{ApiError, AppState, bearer};

pub(super) async fn sql(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let scope = authorize_read(&state, &headers)?;
    let raw = read_body(body, MAX_SQL_BODY, state.body_timeout).await?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let SqlRequest { sql, format } =
        SqlRequest::parse(&raw, is_json, query.get("format").map(String::as_str))
            .map_err(|err| ApiError::bad_request(err.code(), err.to_string()))?;
    stream_query(&state, sql, None, &scope, format).await
}

/// Checks the read token; returns what it may read.
pub(super) fn authorize_read(state: &AppState, headers: &HeaderMap) -> Result<Scope, ApiError> {
    let token = bearer(headers, "read token")?;
    state
        .keys
        .read_scope(token)
        .ok_or_else(|| ApiError::unauthorized("invalid read token"))
}

/// Runs the query on the compute runtime. The answer's status waits for the first batch, so
/// planning errors and most limit errors get a proper 4xx; after that the body streams, and a
/// late failure aborts the response.
pub(super) async fn stream_query(
    state: &AppState,
    sql: String,
    params: Option<datafusion::common::ParamValues>,
    scope: &Scope,
    format: Format,
) -> Result<Response, ApiError> {
    let engine = Arc::clone(&state.engine);
    let scope = scope.clone();
    // A client that stops reading gets this long per chunk before the query is dropped (and
    // its memory released).
    let send_timeout = engine.config().timeout;
    let (head_tx, head_rx) = oneshot::channel::<Result<(), QueryError>>();
    let (chunk_tx, chunk_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    state.compute.spawn(async move {
        let started = std::time::Instant::now();
        let failed = |err: &QueryError| {
            metrics::counter!("logektor_query_errors_total", "code" => err.code()).increment(1);
        };
        let mut stream = match engine.execute_in_scope(&sql, params, &scope).await {
            Ok(stream) => stream,
            Err(err) => {
                failed(&err);
                let _ = head_tx.send(Err(err));
                return;
            }
        };
        let first = stream.next_batch().await;
        let mut encoder = match BatchEncoder::new(format, &stream.schema()) {
            Ok(encoder) => encoder,
            Err(err) => {
                failed(&err);
                let _ = head_tx.send(Err(err));
                return;
            }
        };
        let mut pending = match first {
            Some(Err(err)) => {
                failed(&err);
                let _ = head_tx.send(Err(err));
                return;
            }
            Some(Ok(batch)) => Some(batch),
            None => None,
        };
        if head_tx.send(Ok(())).is_err() {
            return;
        }
        loop {
            let batch = match pending.take() {
                Some(batch) => batch,
                None => match stream.next_batch().await {
                    None => break,
                    Some(Ok(batch)) => batch,
                    Some(Err(err)) => {
                        failed(&err);
                        warn!(error = %err, "query failed while streaming its result");
                        let failure = Err(std::io::Error::other(err.to_string()));
                        let _ = tokio::time::timeout(send_timeout, chunk_tx.send(failure)).await;
                        return;
                    }
                },
            };
            let chunk = match encoder.write(&batch) {
                Ok(chunk) => chunk,
                Err(err) => {
                    let failure = Err(std::io::Error::other(err.to_string()));
                    let _ = tokio::time::timeout(send_timeout, chunk_tx.send(failure)).await;
                    return;
                }
            };
            if !chunk.is_empty()
                && !matches!(
                    tokio::time::timeout(send_timeout, chunk_tx.send(Ok(chunk))).await,
                    Ok(Ok(()))
                )
            {
                return; // the client went away or stopped reading
            }
        }
        metrics::histogram!("logektor_query_seconds").record(started.elapsed());
        let tail = encoder
            .finish()
            .map_err(|err| std::io::Error::other(err.to_string()));
        let _ = tokio::time::timeout(send_timeout, chunk_tx.send(tail)).await;
    });
    match head_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(err.into()),
        Err(_) => {
            return Err(QueryError::Internal("query task ended without an answer".into()).into());
        }
    }
    let mut response = Body::from_stream(ReceiverStream::new(chunk_rx)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}
