//! The admin API: the `host bus` operations and `host trace` as JSON endpoints of a running
//! host, behind the admin token ([`crate::http::require_admin_token`]).
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/deliveries?type=pending\|dlq\|done\|all&subscriber=&kind=&error_class=&limit=` | `bus list` |
//! | `GET /admin/deliveries/{id}` | `bus show` |
//! | `POST /admin/deliveries/{id}/replay[?force=true]` | `bus replay ID [--force]` |
//! | `POST /admin/dead-letters/replay?subscriber=&kind=&error_class=[&dry_run=true]` | `bus replay --all` |
//! | `POST /admin/dead-letters/purge?…&force=true` (or `dry_run=true`) | `bus purge` |
//! | `GET /admin/stats` | `bus stats` |
//! | `GET /admin/health` | `bus health --format json` |
//! | `POST /admin/flush[?limit=N][&dry_run=true]` | `bus flush`, with this host's plugins and policies |
//! | `GET /admin/trace/{id}` | `host trace ID --format json` |
//!
//! Errors are the host's JSON error body: 400 for a bad filter, 404 for an id that matches
//! nothing, 409 for a replay or purge that needs `force`, 503 when the database fails.

use crate::cli::{BusFilter, ListType};
use crate::dispatcher;
use crate::error::error_body;
use crate::http::{AppState, json_response};
use crate::store::DeliveryStatus;
use crate::trace::Trace;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

/// The admin routes, to be wrapped in the admin-token check by the caller.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/deliveries", get(list))
        .route("/admin/deliveries/{id}", get(show))
        .route("/admin/deliveries/{id}/replay", post(replay))
        .route("/admin/dead-letters/replay", post(replay_dead))
        .route("/admin/dead-letters/purge", post(purge_dead))
        .route("/admin/stats", get(stats))
        .route("/admin/health", get(health))
        .route("/admin/flush", post(flush))
        .route("/admin/trace/{id}", get(trace))
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

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default, rename = "type")]
    which: ListType,
    limit: Option<u32>,
    #[serde(flatten)]
    filter: BusFilter,
}

async fn list(State(app): State<AppState>, Query(query): Query<ListQuery>) -> Answer {
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

async fn show(State(app): State<AppState>, Path(id): Path<i64>) -> Answer {
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
    Path(id): Path<i64>,
    Query(query): Query<ReplayQuery>,
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

async fn replay_dead(State(app): State<AppState>, Query(query): Query<DeadQuery>) -> Answer {
    let filter = query.filter.to_filter(None, None).map_err(bad_filter)?;
    let ids = app
        .executor
        .store()
        .replay_matching(&filter, query.dry_run)
        .await
        .map_err(database)?;
    ok(&serde_json::json!({ "replayed": ids, "dry_run": query.dry_run }))
}

async fn purge_dead(State(app): State<AppState>, Query(query): Query<DeadQuery>) -> Answer {
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
    let store = app.executor.store();
    let backlog = store.backlog().await.map_err(database)?;
    let cluster = match store.cluster() {
        Some(cluster) => Some(cluster.view().await.map_err(database)?),
        None => None,
    };
    ok(&serde_json::json!({ "subscribers": backlog, "cluster": cluster }))
}

#[derive(Deserialize)]
struct FlushQuery {
    limit: Option<usize>,
    #[serde(default)]
    dry_run: bool,
}

async fn flush(State(app): State<AppState>, Query(query): Query<FlushQuery>) -> Answer {
    let limit = query.limit.unwrap_or(dispatcher::DEFAULT_FLUSH_LIMIT);
    let flushed = dispatcher::flush(&app.executor, &app.policies, limit, query.dry_run)
        .await
        .map_err(database)?;
    ok(&flushed)
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
