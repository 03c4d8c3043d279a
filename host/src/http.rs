//! The HTTP ingress: commands, queries and health.
//!
//! - `POST /commands/{kind}` — body: the JSON payload. Headers: `Idempotency-Key`,
//!   `Partition-Key`, `Correlation-Id`, `Tenant-Id`, `Actor` (all optional). Answers the
//!   handler's JSON with 200, or an error (see [`crate::error::error_body`]): 400 bad request,
//!   404 unknown kind or route, 405 wrong method, 408 body not received in time, 413 body over
//!   the owning plugin's `payload_in_bytes`, 422 rejected or idempotency mismatch, 500 trap or
//!   permanent, 503 retryable or host failure, and 503 `overloaded` with `Retry-After` while
//!   the deliveries due and not yet delivered are past their bound (see
//!   [`crate::backpressure`]). A replayed idempotent answer carries
//!   `Idempotent-Replayed: true`. Every answer carries the request's `Correlation-Id`: the
//!   caller's, or one the host assigned (`host trace` takes it).
//! - `POST /queries/{kind}` — the same, read-only.
//! - `GET /health` — alive: the loaded plugins, the plugins that failed to load, the database,
//!   and (PostgreSQL) the partitions this host leases; file paths and load errors' causes
//!   only with the admin token.
//! - `GET /ready` — 200 while plugins are loaded, the database works, the dispatcher runs and
//!   commands are not refused for the backlog; 503 with the reasons otherwise.
//! - `GET /metrics` — Prometheus text exposition (see [`crate::telemetry`]).
//! - `/admin/…` — the `host bus` operations and `host trace` (the admin API), behind
//!   the admin token.
//!
//! Every answer, errors included, is a JSON document. The body is read completely, within
//! [`Ingress::body_read_timeout`] and the plugin's payload limit, before any handler runs, so
//! a slow or abandoned client holds a connection but never a plugin instance; once read, the
//! request runs to its end even if the client goes away, so no half-run command is left
//! behind. A server bound to a non-loopback address refuses to start without an admin token
//! ([`check_exposure`]); admin routes are wrapped in [`require_admin_token`].

mod answer;
mod request;

pub(crate) use answer::json_response;
use answer::{error_response, failure_status, host_error, overloaded, with_correlation_id};
use request::{What, read_request};

use crate::error::error_body;
use crate::executor::{Executor, Reply};
use crate::store::FirstOutcome;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

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
    /// The built-in defaults, used when the command line does not set them: no admin token, so
    /// admin routes are open and only a loopback address is allowed.
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
    /// Runs the commands and queries the routes receive; its registry and store also answer
    /// health, readiness and the admin API.
    pub executor: Arc<Executor>,
    /// Each plugin's policy, for the deliveries the admin API's flush runs.
    pub policies: Arc<crate::config::HostConfig>,
    /// This host's partition leases (PostgreSQL), shown by `GET /health`.
    pub leases: Option<Arc<crate::partitions::PartitionLeases>>,
    /// Whether the dispatcher runs, for `GET /ready`; `None` when background dispatch is off.
    pub dispatcher: Option<crate::dispatcher::Liveness>,
    /// The bound on the delivery backlog past which commands are refused; `None` when off.
    pub backpressure: Option<Arc<crate::backpressure::Backpressure>>,
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
    given.is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes())))
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
    // Refused before it runs: nothing of it is written.
    if let Some(refusal) = routed.app.backpressure.as_ref().and_then(|b| b.refusal()) {
        let registry = routed.app.executor.registry();
        let owner = registry.command_owner(&request.kind).map(|p| p.name());
        crate::telemetry::command_refused(owner.unwrap_or_default(), &request.kind);
        return with_correlation_id(overloaded(&refusal), request.correlation_id.as_deref());
    }
    let executor = routed.app.executor.clone();
    // Run to the end even if the client goes away: a command cancelled halfway would leave
    // its idempotency key's lock behind.
    let kind = request.kind.clone();
    let correlation_id = request.correlation_id.clone();
    let run = tokio::spawn(async move { executor.command(&request).await });
    let response = match run.await {
        Ok(Ok(Reply::Success(body))) => json_response(StatusCode::OK, body),
        Ok(Ok(Reply::Replayed(outcome))) => {
            let mut response = match outcome {
                FirstOutcome::Succeeded(body) => json_response(StatusCode::OK, body),
                FirstOutcome::Rejected(failure) => {
                    json_response(failure_status(failure.class), failure.to_error_body())
                }
            };
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
/// running (unless background dispatch is off), commands not refused for the backlog; else
/// 503 with every reason.
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
    let backpressure = routed.app.backpressure.as_ref().map(|b| b.status());
    reasons.extend(backpressure.and_then(|b| b.reason()));
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if reasons.is_empty() { "ready".to_owned() } else { reasons.join("; ") },
        "database": database, "plugins": plugins, "dispatcher": dispatcher,
        "backpressure": backpressure,
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
        routed.app.backpressure.as_deref(),
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
