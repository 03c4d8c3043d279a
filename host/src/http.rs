//! The HTTP ingress: commands, queries and health.
//!
//! - `POST /commands/{kind}` — body: the JSON payload. Headers: `Idempotency-Key`,
//!   `Partition-Key`, `Correlation-Id`, `Tenant-Id`, `Actor` (all optional). Answers the
//!   handler's JSON with 200, or an error (see [`crate::error::error_body`]): 400 bad request,
//!   404 unknown kind or route, 405 wrong method, 408 body not received in time, 413 body over
//!   the owning plugin's `payload_in_bytes`, 422 rejected or idempotency mismatch, 500 trap or
//!   permanent, 503 retryable or host failure. A replayed idempotent answer carries
//!   `Idempotent-Replayed: true`. Every answer carries the request's `Correlation-Id`: the
//!   caller's, or one the host assigned (`host trace` takes it).
//! - `POST /queries/{kind}` — the same, read-only.
//! - `GET /health` — alive: the loaded plugins, the plugins that failed to load, the database,
//!   and (PostgreSQL) the partitions this host leases; file paths and load errors' causes
//!   only with the admin token.
//! - `GET /ready` — 200 while plugins are loaded, the database works and the dispatcher runs;
//!   503 with the reasons otherwise.
//! - `GET /metrics` — Prometheus text exposition (see [`crate::telemetry`]).
//! - `/admin/…` — the `host bus` operations and `host trace` (see [`crate::admin`]), behind
//!   the admin token.
//!
//! Every answer, errors included, is a JSON document. The body is read completely, within
//! [`Ingress::body_read_timeout`] and the plugin's payload limit, before any handler runs, so
//! a slow or abandoned client holds a connection but never a plugin instance; once read, the
//! request runs to its end even if the client goes away, so no half-run command is left
//! behind. A server bound to a non-loopback address refuses to start without an admin token
//! ([`check_exposure`]); admin routes are wrapped in [`require_admin_token`].

use crate::error::error_body;
use crate::executor::{ExecError, Executor, Reply, Request};
use crate::unit_of_work::{MAX_MESSAGE_HEADER_VALUE_BYTES, MAX_MESSAGE_HEADERS};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Longest accepted `Idempotency-Key` (and other id-like headers).
pub const MAX_HEADER_ID_BYTES: usize = 255;
/// Longest kind echoed back in a 404: the caller's own input, but not an amplifier.
pub const MAX_ECHOED_KIND_BYTES: usize = 256;
/// The prefix of the HTTP headers that become the message's own headers, the prefix taken off
/// (`Message-Header-Region: eu` gives the header `region` = `eu`).
pub const MESSAGE_HEADER_PREFIX: &str = "message-header-";
/// The header giving the version of the payload's schema (a number from 1; 1 when absent).
pub const SCHEMA_VERSION: &str = "schema-version";
/// The header carrying a request's correlation id, in and out.
pub const CORRELATION_ID: &str = "correlation-id";
/// The header carrying the admin token.
pub const ADMIN_TOKEN_HEADER: &str = "x-admin-token";

/// How the ingress treats its callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingress {
    /// Time a client has to send the whole body once its headers arrived; past it the
    /// request answers 408 and the connection is freed.
    pub body_read_timeout: Duration,
    /// Token required by admin routes; `None` leaves them open, which [`check_exposure`]
    /// allows only on a loopback address.
    pub admin_token: Option<Arc<str>>,
}

impl Ingress {
    pub const DEFAULT: Self = Self {
        // A megabyte takes well under a second on any link a host serves; ten seconds is
        // generous to slow clients without letting one park a request indefinitely.
        body_read_timeout: Duration::from_secs(10),
        admin_token: None,
    };
}

impl Default for Ingress {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// This process's id as a host: registered in the database with its address at start
/// ([`crate::store::Store::register_running_host`]) and answered by `GET /admin/host`.
pub fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::now_v7().to_string())
}

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    pub executor: Arc<Executor>,
    /// Each plugin's policy, for the deliveries the admin API's flush runs.
    pub policies: Arc<crate::policy::HostConfig>,
    /// This host's partition leases (PostgreSQL), shown by `GET /health`.
    pub leases: Option<Arc<crate::partitions::PartitionLeases>>,
    /// Whether the dispatcher runs, for `GET /ready`; `None` when background dispatch is off.
    pub dispatcher: Option<crate::dispatcher::Liveness>,
}

#[derive(Clone)]
struct Routed {
    app: AppState,
    ingress: Arc<Ingress>,
}

/// The ingress router with [`Ingress::DEFAULT`].
pub fn router(state: AppState) -> Router {
    router_with(state, Ingress::DEFAULT)
}

/// The ingress router.
pub fn router_with(state: AppState, ingress: Ingress) -> Router {
    let admin = crate::admin::routes()
        .route_layer(axum::middleware::from_fn_with_state(
            ingress.admin_token.clone(),
            require_admin_token,
        ))
        .with_state(state.clone());
    Router::new()
        .route("/commands/{kind}", post(command))
        .route("/queries/{kind}", post(query))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Routed {
            app: state,
            ingress: Arc::new(ingress),
        })
        .merge(admin)
}

/// Refuses to serve on an address other machines can reach without an admin token: the
/// admin surface (replay, purge, …) must not be open to the network.
///
/// # Errors
/// When `listen` is not a loopback address and `admin_token` is `None` or empty.
pub fn check_exposure(listen: &SocketAddr, admin_token: Option<&str>) -> anyhow::Result<()> {
    let has_token = admin_token.is_some_and(|t| !t.is_empty());
    if !listen.ip().is_loopback() && !has_token {
        anyhow::bail!(
            "refusing to listen on {listen} without an admin token: another machine could reach \
             the admin endpoints. Set --admin-token (or HOST_ADMIN_TOKEN), or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// Middleware for admin routes: with a token configured, a request must carry it in
/// [`ADMIN_TOKEN_HEADER`] (or `Authorization: Bearer …`), else it answers 401.
pub async fn require_admin_token(
    State(token): State<Option<Arc<str>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if admin_authorized(token.as_deref(), request.headers()) {
        next.run(request).await
    } else {
        json_response(
            StatusCode::UNAUTHORIZED,
            error_body(
                "unauthorized",
                None,
                "this admin endpoint needs the admin token in the `X-Admin-Token` header",
            ),
        )
    }
}

/// Whether `headers` carry `token` (always true when no token is configured).
fn admin_authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = headers
        .get(ADMIN_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    // Compared in constant time: the comparison must not tell how much of a guess was right.
    given.is_some_and(|given| {
        given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

async fn command(
    State(routed): State<Routed>,
    kind: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = match read_request(&routed, What::Command, kind, &headers, body).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let executor = routed.app.executor.clone();
    // Run to the end even if the client goes away: a command cancelled halfway would leave
    // its idempotency key's lock behind.
    let kind = request.kind.clone();
    let correlation_id = request.correlation_id.clone();
    let run = tokio::spawn(async move { executor.command(&request).await });
    let response = match run.await {
        Ok(Ok(Reply::Success(body))) => json_response(StatusCode::OK, body),
        Ok(Ok(Reply::Replayed { status, body })) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = json_response(status, body);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
        Ok(Err(error)) => error_response(&routed, &kind, error),
        Err(panicked) => host_error(&kind, &panicked),
    };
    with_correlation_id(response, correlation_id.as_deref())
}

/// `response` with the request's correlation id in the [`CORRELATION_ID`] header.
fn with_correlation_id(mut response: Response, correlation_id: Option<&str>) -> Response {
    if let Some(value) = correlation_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        response.headers_mut().insert(CORRELATION_ID, value);
    }
    response
}

async fn query(
    State(routed): State<Routed>,
    kind: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = match read_request(&routed, What::Query, kind, &headers, body).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let executor = routed.app.executor.clone();
    let kind = request.kind.clone();
    let correlation_id = request.correlation_id.clone();
    let run = tokio::spawn(async move { executor.query(&request).await });
    let response = match run.await {
        Ok(Ok(body)) => json_response(StatusCode::OK, body),
        Ok(Err(error)) => error_response(&routed, &kind, error),
        Err(panicked) => host_error(&kind, &panicked),
    };
    with_correlation_id(response, correlation_id.as_deref())
}

#[derive(Clone, Copy)]
enum What {
    Command,
    Query,
}

/// Routes, checks and reads a request: the kind must be owned, the body must arrive in time,
/// fit the owner's `payload_in_bytes` and be JSON, and the id headers must be well formed.
async fn read_request(
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
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        error_body(
            "not_found",
            None,
            "no such endpoint: use POST /commands/{kind}, POST /queries/{kind}, GET /health, GET /ready, GET /metrics or /admin/… (see docs/operations.md)",
        ),
    )
}

async fn method_not_allowed() -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        error_body(
            "method_not_allowed",
            None,
            "wrong method: commands and queries are POST, health is GET",
        ),
    )
}

/// The loaded plugins, load errors, database and partitions. The plugins' files and the load
/// errors' details (paths, causes) are internals: shown only to a caller with the admin token
/// (anyone on a loopback host without one), counted for the others.
async fn health(State(routed): State<Routed>, headers: HeaderMap) -> Response {
    let internals = admin_authorized(routed.ingress.admin_token.as_deref(), &headers);
    let registry = routed.app.executor.registry();
    let plugins: Vec<_> = registry
        .plugins()
        .map(|p| {
            let mut plugin = serde_json::json!({
                "name": p.name(), "version": p.version(), "build": p.identity(),
                "commands": p.info().commands, "events": p.info().events, "queries": p.info().queries,
            });
            if internals {
                plugin["file"] = p.source().display().to_string().into();
            }
            plugin
        })
        .collect();
    let load_errors = if internals {
        registry
            .load_errors()
            .iter()
            .map(|e| serde_json::json!({ "file": e.file.display().to_string(), "cause": e.cause }))
            .collect::<Vec<_>>()
            .into()
    } else {
        serde_json::json!(registry.load_errors().len())
    };
    let database = routed.app.executor.store().health().status();
    let partitions = routed.app.leases.as_ref().map(|leases| leases.status());
    let body = serde_json::json!({
        "status": "ok", "database": database, "plugins": plugins, "load_errors": load_errors,
        "partitions": partitions,
    });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

/// 200 when the host can do its work: plugins loaded, the database working, the dispatcher
/// running (unless background dispatch is off); else 503 with every reason.
async fn ready(State(routed): State<Routed>) -> Response {
    let database = routed.app.executor.store().health().status();
    let plugins = routed.app.executor.registry().plugins().count();
    let dispatcher = match &routed.app.dispatcher {
        None => "off",
        Some(liveness) if liveness.is_running() => "running",
        Some(_) => "stopped",
    };
    let mut reasons = Vec::new();
    if !database.ok {
        reasons.push("the database is failing".to_owned());
    }
    if plugins == 0 {
        reasons.push("no plugin is loaded".to_owned());
    }
    if dispatcher == "stopped" {
        reasons.push("the dispatcher has stopped".to_owned());
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if reasons.is_empty() { "ready".to_owned() } else { reasons.join("; ") },
        "database": database, "plugins": plugins, "dispatcher": dispatcher,
    });
    json_response(status, body.to_string().into_bytes())
}

/// The metrics in Prometheus' text format, the backlog gauges read from the database now.
async fn metrics(State(routed): State<Routed>) -> Response {
    let executor = &routed.app.executor;
    let text = crate::telemetry::render(
        &executor.registry(),
        executor.store(),
        routed.app.leases.as_deref(),
    )
    .await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The request, or why it is a bad request.
fn parse_request(kind: String, headers: &HeaderMap, body: Bytes) -> Result<Request, String> {
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
fn message_headers(headers: &HeaderMap) -> Result<Vec<(String, String)>, String> {
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
fn schema_version(headers: &HeaderMap) -> Result<Option<u32>, String> {
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

fn host_error(kind: &str, panicked: &tokio::task::JoinError) -> Response {
    tracing::error!(kind, "the request task failed: {panicked}");
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        error_body("host", None, "the host failed while running this request"),
    )
}

fn error_response(routed: &Routed, kind: &str, error: ExecError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let database_failing = routed.app.executor.store().health().is_failing();
    if status.is_server_error() && !(database_failing && matches!(error, ExecError::Host(_))) {
        tracing::warn!(kind, %status, "{error}");
    } else if status.is_server_error() {
        // The database failure behind it is logged once by the store's health.
        tracing::debug!(kind, %status, "{error}");
    }
    json_response(status, error.body())
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
