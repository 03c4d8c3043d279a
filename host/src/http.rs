//! The HTTP ingress: commands, queries and health.
//!
//! - `POST /commands/{kind}` — body: the JSON payload. Headers: `Idempotency-Key`,
//!   `Partition-Key`, `Correlation-Id`, `Tenant-Id`, `Actor` (all optional). Answers the
//!   handler's JSON with 200, or an error (see [`crate::error::error_body`]): 400 bad request,
//!   404 unknown kind, 413 body too large, 422 rejected or idempotency mismatch, 500 trap or
//!   permanent, 503 retryable or host failure. A replayed idempotent answer carries
//!   `Idempotent-Replayed: true`.
//! - `POST /queries/{kind}` — the same, read-only.
//! - `GET /health` — the loaded plugins and the plugins that failed to load.

use crate::error::error_body;
use crate::executor::{ExecError, Executor, Reply, Request};
use crate::plugin::LoadError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;

/// Largest request body accepted. Payloads are copied into the guest; a bound keeps one
/// request from taking the host's memory.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Longest accepted `Idempotency-Key` (and other id-like headers).
pub const MAX_HEADER_ID_BYTES: usize = 255;

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    pub executor: Arc<Executor>,
    pub load_errors: Arc<Vec<LoadError>>,
}

/// The ingress router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/commands/{kind}", post(command))
        .route("/queries/{kind}", post(query))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn command(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match parse_request(kind, &headers, body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    match state.executor.command(&request).await {
        Ok(Reply::Success(body)) => json_response(StatusCode::OK, body),
        Ok(Reply::Replayed { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = json_response(status, body);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
        Err(error) => error_response(&request.kind, error),
    }
}

async fn query(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match parse_request(kind, &headers, body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    match state.executor.query(&request).await {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(error) => error_response(&request.kind, error),
    }
}

async fn health(State(state): State<AppState>) -> Response {
    let plugins: Vec<_> = state
        .executor
        .registry()
        .plugins()
        .map(|p| {
            serde_json::json!({
                "name": p.name(), "version": p.version(), "file": p.source().display().to_string(),
                "commands": p.info().commands, "events": p.info().events, "queries": p.info().queries,
            })
        })
        .collect();
    let load_errors: Vec<_> = state
        .load_errors
        .iter()
        .map(|e| serde_json::json!({ "file": e.file.display().to_string(), "cause": e.cause }))
        .collect();
    let body =
        serde_json::json!({ "status": "ok", "plugins": plugins, "load_errors": load_errors });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

/// The request, or why it is a bad request.
fn parse_request(kind: String, headers: &HeaderMap, body: Bytes) -> Result<Request, String> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return Err("the request body must be a JSON document".to_owned());
    }
    Ok(Request {
        idempotency_key: id_header(headers, "idempotency-key")?,
        partition_key: id_header(headers, "partition-key")?,
        correlation_id: id_header(headers, "correlation-id")?,
        tenant_id: id_header(headers, "tenant-id")?,
        actor: id_header(headers, "actor")?,
        kind,
        payload: body.to_vec(),
    })
}

/// An optional id-like header: 1 to [`MAX_HEADER_ID_BYTES`] printable ASCII characters.
fn id_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, String> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value.to_str().ok().filter(|v| {
        !v.is_empty() && v.len() <= MAX_HEADER_ID_BYTES && v.bytes().all(|b| b.is_ascii_graphic())
    });
    match text {
        Some(text) => Ok(Some(text.to_owned())),
        None => Err(format!(
            "header `{name}` must be 1 to {MAX_HEADER_ID_BYTES} printable ASCII characters without spaces"
        )),
    }
}

fn bad_request(message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        error_body("bad_request", None, message),
    )
}

fn error_response(kind: &str, error: ExecError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(kind, %status, "{error}");
    }
    json_response(status, error.body())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
