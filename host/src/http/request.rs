//! Reading a command or query off the wire: routed to its owner, the body read within its
//! time and size limits, and every header checked before a handler sees it.

use super::answer::{bad_request, json_response};
use super::{
    CORRELATION_ID, MAX_ECHOED_KIND_BYTES, MAX_HEADER_ID_BYTES, MESSAGE_HEADER_PREFIX, Routed,
    SCHEMA_VERSION,
};
use crate::error::error_body;
use crate::executor::Request;
use crate::unit_of_work::{MAX_MESSAGE_HEADER_VALUE_BYTES, MAX_MESSAGE_HEADERS};
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

#[derive(Clone, Copy)]
pub(super) enum What {
    Command,
    Query,
}

/// Routes, checks and reads a request: the kind must be owned, the body must arrive in time,
/// fit the owner's `payload_in_bytes` and be JSON, and the id headers must be well formed.
pub(super) async fn read_request(
    routed: &Routed,
    what: What,
    kind: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Request, Response> {
    let Ok(Path(kind)) = kind else {
        return Err(bad_request("the kind in the path is not valid UTF-8"));
    };
    let registry = routed.app.executor.registry();
    let (owner, noun) = match what {
        What::Command => (registry.command_owner(&kind), "command"),
        What::Query => (registry.query_owner(&kind), "query"),
    };
    let Some(owner) = owner else {
        // Only the caller's own input is echoed; never the kinds or plugins that exist. That
        // the kind is one of the other sort says no more than asking at its path would.
        let other = match what {
            What::Command => registry.query_owner(&kind).map(|_| ("query", "queries")),
            What::Query => registry
                .command_owner(&kind)
                .map(|_| ("command", "commands")),
        };
        let message = if kind.len() > MAX_ECHOED_KIND_BYTES {
            format!("no plugin handles this {noun} (its kind is longer than any kind)")
        } else if let Some((other, path)) = other {
            format!(
                "no plugin handles {noun} `{kind}`; `{kind}` is a {other}: POST it to /{path}/{kind}"
            )
        } else {
            format!("no plugin handles {noun} `{kind}`")
        };
        return Err(json_response(
            StatusCode::NOT_FOUND,
            error_body("unknown_kind", None, &message),
        ));
    };
    let limit = owner.limits().payload_in_bytes;
    let too_large = |size: &dyn std::fmt::Display| {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            error_body(
                "payload_too_large",
                Some(owner.name()),
                &format!(
                    "the body of {size} bytes is over the limit `payload_in_bytes` of {limit} bytes of plugin `{}`",
                    owner.name()
                ),
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|&n| n > limit as u64) {
        return Err(too_large(&declared));
    }
    let read = tokio::time::timeout(
        routed.ingress.body_read_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await;
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(error)) if is_length_limit(&error) => return Err(too_large(&"more than")),
        Ok(Err(_)) => return Err(bad_request("the request body could not be read")),
        Err(_) => {
            return Err(json_response(
                StatusCode::REQUEST_TIMEOUT,
                error_body(
                    "request_timeout",
                    None,
                    &format!(
                        "the request body did not arrive within {} ms",
                        routed.ingress.body_read_timeout.as_millis()
                    ),
                ),
            ));
        }
    };
    parse_request(kind, headers, body).map_err(|message| bad_request(&message))
}

/// Whether reading the body failed on its length limit (rather than on the connection).
pub(super) fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The request, or why it is a bad request.
pub(super) fn parse_request(
    kind: String,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Request, String> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return Err("the request body must be a JSON document".to_owned());
    }
    Ok(Request {
        idempotency_key: id_header(headers, "idempotency-key")?,
        partition_key: id_header(headers, "partition-key")?,
        // Every request gets a correlation id, answered in the same header, for `host trace`.
        correlation_id: Some(
            id_header(headers, CORRELATION_ID)?.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        ),
        tenant_id: id_header(headers, "tenant-id")?,
        actor: id_header(headers, "actor")?,
        headers: message_headers(headers)?,
        schema_version: schema_version(headers)?,
        // An unreadable trace context is ignored, as W3C Trace Context asks.
        traceparent: headers
            .get(crate::telemetry::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        kind,
        payload: body.to_vec(),
    })
}

/// The `Message-Header-*` headers, prefix taken off (names are lower case, as HTTP gives
/// them), in the order sent.
pub(super) fn message_headers(headers: &HeaderMap) -> Result<Vec<(String, String)>, String> {
    let mut found = Vec::new();
    for (name, value) in headers {
        let Some(name) = name.as_str().strip_prefix(MESSAGE_HEADER_PREFIX) else {
            continue;
        };
        let value = value
            .to_str()
            .ok()
            .filter(|v| v.len() <= MAX_MESSAGE_HEADER_VALUE_BYTES)
            .ok_or_else(|| {
                format!(
                    "header `{MESSAGE_HEADER_PREFIX}{name}` must be printable ASCII of at most \
                     {MAX_MESSAGE_HEADER_VALUE_BYTES} bytes"
                )
            })?;
        if name.is_empty() {
            return Err(format!(
                "a message header needs a name after `{MESSAGE_HEADER_PREFIX}`"
            ));
        }
        found.push((name.to_owned(), value.to_owned()));
    }
    if found.len() > MAX_MESSAGE_HEADERS {
        return Err(format!(
            "{} message headers (`{MESSAGE_HEADER_PREFIX}*`): at most {MAX_MESSAGE_HEADERS}",
            found.len()
        ));
    }
    Ok(found)
}

/// The `Schema-Version` header: a number from 1; `None` when absent.
pub(super) fn schema_version(headers: &HeaderMap) -> Result<Option<u32>, String> {
    let Some(value) = headers.get(SCHEMA_VERSION) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&v| v >= 1)
        .map(Some)
        .ok_or_else(|| "header `schema-version` must be a whole number from 1".to_owned())
}

/// An optional id-like header: 1 to [`MAX_HEADER_ID_BYTES`] printable ASCII characters.
pub(super) fn id_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, String> {
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
