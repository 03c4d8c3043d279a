//! The admin API: the `host bus` operations and `host trace` as JSON endpoints of a running
//! host, behind the admin token ([`crate::http::require_admin_token`]).
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/deliveries?type=pending\|dlq\|done\|all&subscriber=&kind=&error_class=&limit=` | `bus list` |
//! | `GET /admin/deliveries/{id}` | `bus show` |
//! | `POST /admin/deliveries/{id}/replay[?force=true]` | `bus replay ID [--force]` |
//! | `POST /admin/deliveries/{id}/rehearse` | `bus replay ID --dry-run`, on this host's build |
//! | `POST /admin/dead-letters/replay?subscriber=&kind=&error_class=[&dry_run=true]` | `bus replay --all` |
//! | `POST /admin/dead-letters/purge?…&force=true` (or `dry_run=true`) | `bus purge` |
//! | `GET /admin/stats` | `bus stats` |
//! | `GET /admin/health` | `bus health --format json` |
//! | `GET /admin/metrics?minutes=N` | `bus metrics --format json` |
//! | `POST /admin/metrics/reset` | `bus metrics --reset` |
//! | `POST /admin/flush[?limit=N][&dry_run=true]` | `bus flush`, with this host's plugins and policies |
//! | `GET /admin/trace/{id}` | `host trace ID --format json` |
//! | `GET /admin/host` | this process's id (as registered in the database) and version |
//!
//! Errors are the host's JSON error body: 400 for a bad filter or parameter, 404 for an id
//! that matches nothing, 409 for a replay or purge that needs `force`, 503 when the database
//! fails.

use crate::cli::{BusFilter, ListType};
use crate::dispatcher;
use crate::error::{HandlerFailure, error_body};
use crate::executor::Rehearsal;
use crate::http::{AppState, json_response};
use crate::store::{DeliveryStatus, DueDelivery, MetricsReport};
use crate::telemetry::commands::{self, CommandMetrics};
use crate::trace::Trace;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The admin routes, to be wrapped in the admin-token check by the caller.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/deliveries", get(list))
        .route("/admin/deliveries/{id}", get(show))
        .route("/admin/deliveries/{id}/replay", post(replay))
        .route("/admin/deliveries/{id}/rehearse", post(rehearse))
        .route("/admin/dead-letters/replay", post(replay_dead))
        .route("/admin/dead-letters/purge", post(purge_dead))
        .route("/admin/stats", get(stats))
        .route("/admin/health", get(health))
        .route("/admin/metrics", get(metrics))
        .route("/admin/metrics/reset", post(reset_metrics))
        .route("/admin/flush", post(flush))
        .route("/admin/trace/{id}", get(trace))
        .route("/admin/host", get(host))
}

type Answer = Result<Response, Refusal>;

/// Why an admin request was not done: answered as the host's JSON error body.
struct Refusal {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let class = match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            _ => "host",
        };
        json_response(self.status, error_body(class, None, &self.message))
    }
}

fn ok(value: &impl Serialize) -> Answer {
    let body =
        serde_json::to_vec(value).map_err(|e| failed(StatusCode::INTERNAL_SERVER_ERROR, &e))?;
    Ok(json_response(StatusCode::OK, body))
}

fn failed(status: StatusCode, message: &dyn std::fmt::Display) -> Refusal {
    Refusal {
        status,
        message: message.to_string(),
    }
}

/// A database error: 503, the host's health having logged the cause.
fn database(error: anyhow::Error) -> Refusal {
    failed(StatusCode::SERVICE_UNAVAILABLE, &format!("{error:#}"))
}

fn bad_filter(error: anyhow::Error) -> Refusal {
    failed(StatusCode::BAD_REQUEST, &error)
}

/// The query string as `T`; a malformed one is refused with the host's JSON error body.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refusal> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(params)| Self(params))
            .map_err(|rejection| failed(StatusCode::BAD_REQUEST, &rejection.body_text()))
    }
}

/// The delivery id in the path; one that is not a number is refused with a JSON body.
struct DeliveryId(i64);

impl<S: Send + Sync> FromRequestParts<S> for DeliveryId {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refusal> {
        Path::<i64>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Self(id))
            .map_err(|_| failed(StatusCode::BAD_REQUEST, &"a delivery id is a number"))
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default, rename = "type")]
    which: ListType,
    limit: Option<u32>,
    #[serde(flatten)]
    filter: BusFilter,
}

async fn list(State(app): State<AppState>, Params(query): Params<ListQuery>) -> Answer {
    let filter = query
        .filter
        .to_filter(query.which.status(), query.limit)
        .map_err(bad_filter)?;
    let rows = app
        .executor
        .store()
        .list_deliveries(&filter)
        .await
        .map_err(database)?;
    ok(&rows)
}

async fn show(State(app): State<AppState>, DeliveryId(id): DeliveryId) -> Answer {
    match app.executor.store().delivery(id).await.map_err(database)? {
        Some(delivery) => ok(&delivery),
        None => Err(no_delivery(id)),
    }
}

fn no_delivery(id: i64) -> Refusal {
    failed(StatusCode::NOT_FOUND, &format!("no delivery with id {id}"))
}

#[derive(Deserialize)]
struct ReplayQuery {
    #[serde(default)]
    force: bool,
}

async fn replay(
    State(app): State<AppState>,
    DeliveryId(id): DeliveryId,
    Params(query): Params<ReplayQuery>,
) -> Answer {
    let store = app.executor.store();
    let delivery = store
        .delivery(id)
        .await
        .map_err(database)?
        .ok_or_else(|| no_delivery(id))?;
    let was = delivery.view.status;
    let replayed = if query.force {
        store.replay_forced(id).await
    } else if was == DeliveryStatus::Dead {
        store.replay(id).await
    } else {
        return Err(failed(
            StatusCode::CONFLICT,
            &format!(
                "delivery {id} is {}, not dead: `force=true` replays it anyway (a done one's handler runs again)",
                was.as_str()
            ),
        ));
    };
    if !replayed.map_err(database)? {
        return Err(no_delivery(id));
    }
    // Run at once, not at the dispatcher's next poll.
    app.executor.committer().notify_committed();
    ok(&serde_json::json!({ "id": id, "replayed": true, "was": was }))
}

#[derive(Deserialize)]
struct DeadQuery {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
    #[serde(flatten)]
    filter: BusFilter,
}

async fn replay_dead(State(app): State<AppState>, Params(query): Params<DeadQuery>) -> Answer {
    let filter = query.filter.to_filter(None, None).map_err(bad_filter)?;
    let ids = app
        .executor
        .store()
        .replay_matching(&filter, query.dry_run)
        .await
        .map_err(database)?;
    if !query.dry_run && !ids.is_empty() {
        app.executor.committer().notify_committed();
    }
    ok(&serde_json::json!({ "replayed": ids, "dry_run": query.dry_run }))
}

async fn purge_dead(State(app): State<AppState>, Params(query): Params<DeadQuery>) -> Answer {
    let filter = query.filter.to_filter(None, None).map_err(bad_filter)?;
    let store = app.executor.store();
    if !query.force && !query.dry_run {
        let ids = store
            .purge_matching(&filter, true)
            .await
            .map_err(database)?;
        return Err(failed(
            StatusCode::CONFLICT,
            &format!(
                "refusing to purge without `force=true`: {} dead-lettered deliveries would be deleted: {ids:?}",
                ids.len()
            ),
        ));
    }
    let ids = store
        .purge_matching(&filter, query.dry_run)
        .await
        .map_err(database)?;
    ok(&serde_json::json!({ "purged": ids, "dry_run": query.dry_run }))
}

async fn stats(State(app): State<AppState>) -> Answer {
    ok(&app.executor.store().stats().await.map_err(database)?)
}

async fn health(State(app): State<AppState>) -> Answer {
    ok(&app.executor.store().bus_health().await.map_err(database)?)
}

#[derive(Deserialize)]
struct FlushQuery {
    limit: Option<usize>,
    #[serde(default)]
    dry_run: bool,
}

async fn flush(State(app): State<AppState>, Params(query): Params<FlushQuery>) -> Answer {
    let limit = query.limit.unwrap_or(dispatcher::DEFAULT_FLUSH_LIMIT);
    let flushed = dispatcher::flush(&app.executor, &app.policies, limit, query.dry_run)
        .await
        .map_err(database)?;
    ok(&flushed)
}

/// `POST /admin/deliveries/{id}/rehearse`: the dead letter run on this host's current build
/// in a unit of work that is thrown away.
async fn rehearse(State(app): State<AppState>, DeliveryId(id): DeliveryId) -> Answer {
    let letter = app
        .executor
        .store()
        .dead_letter(id)
        .await
        .map_err(database)?
        .ok_or_else(|| {
            failed(
                StatusCode::NOT_FOUND,
                &format!("no dead-lettered delivery with id {id}"),
            )
        })?;
    let rehearsal = app.executor.rehearse(&letter).await;
    ok(&rehearsal_report(&letter, rehearsal))
}

#[derive(Deserialize)]
struct MetricsQuery {
    #[serde(default = "an_hour")]
    minutes: u64,
}

fn an_hour() -> u64 {
    60
}

/// What `host bus metrics` reports: the deliveries, from the database, and through a running
/// host that host's own commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusMetrics {
    #[serde(flatten)]
    pub report: MetricsReport,
    /// This host's commands since it started or the last reset; `None` when read from the
    /// database alone, which does not keep commands.
    pub commands: Option<Vec<CommandMetrics>>,
}

async fn metrics(State(app): State<AppState>, Params(query): Params<MetricsQuery>) -> Answer {
    let window = Duration::from_secs(query.minutes.saturating_mul(60));
    let report = app
        .executor
        .store()
        .recent_delivery_metrics(window)
        .await
        .map_err(database)?;
    ok(&BusMetrics {
        report,
        commands: Some(commands::report()),
    })
}

/// Resets the delivery figures of every host (a mark in the database) and this host's
/// command figures.
async fn reset_metrics(State(app): State<AppState>) -> Answer {
    let at = app
        .executor
        .store()
        .reset_metrics()
        .await
        .map_err(database)?;
    commands::reset();
    ok(&serde_json::json!({ "reset_at_ms": at }))
}

/// `GET /admin/host`: which process answers, so a client that found this address in the
/// database knows it reached the host registered there.
async fn host() -> Answer {
    ok(&serde_json::json!({
        "id": crate::http::instance_id(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn trace(State(app): State<AppState>, Path(id): Path<String>) -> Answer {
    match Trace::find(app.executor.store(), &id)
        .await
        .map_err(database)?
    {
        Some(trace) => ok(&trace),
        None => Err(failed(StatusCode::NOT_FOUND, &crate::trace::not_found(&id))),
    }
}

/// What `bus replay ID --dry-run` and `POST /admin/deliveries/{id}/rehearse` answer: the letter, and what running it now would do.
pub(crate) fn rehearsal_report(
    letter: &DueDelivery,
    rehearsal: Result<Rehearsal, HandlerFailure>,
) -> serde_json::Value {
    // A value as JSON when it is JSON, else as text.
    let shown = |bytes: &Option<Vec<u8>>| match bytes {
        None => serde_json::Value::Null,
        Some(bytes) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned().into()),
    };
    let mut report = serde_json::json!({
        "delivery": letter.delivery_id,
        "subscriber": letter.subscriber,
        "kind": letter.message.kind,
        "message_id": letter.message.id,
        "changed": "nothing: this was a dry run",
    });
    match rehearsal {
        Ok(rehearsal) => {
            report["would"] = "succeed".into();
            report["handled_by"] = rehearsal.handled_by.into();
            report["writes"] = rehearsal
                .writes
                .iter()
                .map(|w| {
                    serde_json::json!({
                        "key": w.key,
                        "before": shown(&w.before),
                        "after": shown(&w.after),
                    })
                })
                .collect();
            report["emits"] = rehearsal
                .emitted
                .into_iter()
                .map(|e| {
                    serde_json::json!({
                        "kind": e.kind,
                        "partition_key": e.partition_key,
                        "payload": shown(&Some(e.payload)),
                    })
                })
                .collect();
        }
        Err(failure) => {
            report["would"] = "fail".into();
            report["error_class"] = failure.class.as_str().into();
            report["error"] = failure.message.into();
        }
    }
    report
}
