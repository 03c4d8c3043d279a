//! What the ingress answers: the one place an error becomes a status code and a JSON body,
//! and the headers every answer carries.

use super::{CORRELATION_ID, Routed};
use crate::backpressure::{RETRY_AFTER, Refusal};
use crate::error::{ErrorClass, error_body};
use crate::executor::ExecError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `response` with the request's correlation id in the [`CORRELATION_ID`] header.
pub(super) fn with_correlation_id(
    mut response: Response,
    correlation_id: Option<&str>,
) -> Response {
    if let Some(value) = correlation_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        response.headers_mut().insert(CORRELATION_ID, value);
    }
    response
}

pub(super) fn bad_request(message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        error_body("bad_request", None, message),
    )
}

pub(super) fn host_error(kind: &str, panicked: &tokio::task::JoinError) -> Response {
    tracing::error!(kind, "the request task failed: {panicked}");
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        error_body("host", None, "the host failed while running this request"),
    )
}

/// A command refused before it ran because the delivery backlog is past its bound: 503, a
/// `Retry-After` in seconds, and the backlog and bound in the message.
pub(super) fn overloaded(refusal: &Refusal) -> Response {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        error_body("overloaded", None, &refusal.to_string()),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(RETRY_AFTER.as_secs()),
    );
    response
}

/// The status code of an error a command or query ended with: the one place it is decided.
pub(super) fn error_status(error: &ExecError) -> StatusCode {
    match error {
        ExecError::UnknownKind { .. } => StatusCode::NOT_FOUND,
        ExecError::IdempotencyMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ExecError::Host(_) => StatusCode::SERVICE_UNAVAILABLE,
        ExecError::Failure(failure) => failure_status(failure.class),
    }
}

/// A handler failure's status: the caller's fault (422), worth another try (503), or the
/// plugin's (500).
pub(super) fn failure_status(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorClass::Retryable | ErrorClass::Host => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Permanent
        | ErrorClass::Deadline
        | ErrorClass::MemoryLimit
        | ErrorClass::StackOverflow
        | ErrorClass::Panic
        | ErrorClass::Trap
        | ErrorClass::Loop => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON error body of an error a command or query ended with (see [`error_body`]).
pub(super) fn error_json(error: &ExecError) -> Vec<u8> {
    match error {
        ExecError::UnknownKind { .. } => error_body("unknown_kind", None, &error.to_string()),
        ExecError::IdempotencyMismatch { .. } => {
            error_body("idempotency_mismatch", None, &error.to_string())
        }
        ExecError::Host(host) => error_body("host", None, &host.to_string()),
        ExecError::Failure(failure) => failure.to_error_body(),
    }
}

pub(super) fn error_response(routed: &Routed, kind: &str, error: ExecError) -> Response {
    let status = error_status(&error);
    let database_failing = routed.app.executor.store().health().is_failing();
    if status.is_server_error() && !(database_failing && matches!(error, ExecError::Host(_))) {
        tracing::warn!(kind, %status, "{error}");
    } else if status.is_server_error() {
        // The database failure behind it is logged once by the store's health.
        tracing::debug!(kind, %status, "{error}");
    }
    json_response(status, error_json(&error))
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
