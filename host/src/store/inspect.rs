//! The delivery queue as operators inspect and repair it (`host bus`, the admin API,
//! `GET /metrics`): the views, the filters, the counts, and their SQL (`$N` placeholders work
//! on both backends).

use super::queue::DeliveryStatus;
use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Which deliveries `host bus list` shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeliveryFilter {
    /// `None` = every status.
    pub status: Option<DeliveryStatus>,
    pub subscriber: Option<String>,
    /// Message kind; `*` matches any run of characters (`order.*`).
    pub kind: Option<String>,
    /// Last error class (`retryable`, `permanent`, `deadline`, …).
    pub error_class: Option<String>,
    pub limit: Option<u32>,
}

/// One delivery as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeliveryView {
    pub id: i64,
    pub status: DeliveryStatus,
    pub subscriber: String,
    pub message_id: String,
    pub kind: String,
    pub partition_key: Option<String>,
    pub correlation_id: String,
    pub emitted_by: String,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    /// Pending, never attempted, and not due before `next_attempt_at_ms`: a scheduled event
    /// (as of when the view was read).
    pub scheduled: bool,
    pub error_class: Option<String>,
    pub last_error: Option<String>,
    pub first_failed_at_ms: Option<i64>,
    pub last_failed_at_ms: Option<i64>,
    pub handled_by: Option<String>,
    pub occurred_at_ms: i64,
    /// The payload as JSON when it is JSON, else as a string of its bytes (lossy).
    pub payload: serde_json::Value,
}

/// One delivery with the whole envelope of its message, for `host bus show`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeliveryDetail {
    #[serde(flatten)]
    pub view: DeliveryView,
    pub message_seq: i64,
    pub completed_at_ms: Option<i64>,
    pub tenant_id: Option<String>,
    pub causation_id: Option<String>,
    pub actor: Option<String>,
    pub schema_version: u32,
    pub headers: Vec<(String, String)>,
    /// How deep in its causal chain the message lies (1: emitted by a command's handler).
    pub depth: u32,
}

/// Counts for `host bus stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BusStats {
    /// Deliveries by status (`pending`, `done`, `dead`).
    pub by_status: std::collections::BTreeMap<String, i64>,
    /// Unfinished deliveries that have failed, by their last error class and then status:
    /// `dead`, or `pending` (waiting for a retry).
    pub by_error_class: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
}

impl BusStats {
    /// Builds the stats from (status, count) and (error class, status, count) rows.
    pub(super) fn from_rows(
        by_status: Vec<(String, i64)>,
        by_class: Vec<(Option<String>, String, i64)>,
    ) -> Self {
        let mut stats = Self::default();
        for status in ["pending", "done", "dead"] {
            stats.by_status.insert(status.to_owned(), 0);
        }
        stats.by_status.extend(by_status);
        for (class, status, n) in by_class {
            stats
                .by_error_class
                .entry(class.unwrap_or_else(|| "unknown".into()))
                .or_default()
                .insert(status, n);
        }
        stats
    }
}

/// One subscriber's unfinished deliveries, for `GET /metrics` and `host bus health --detailed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubscriberBacklog {
    pub subscriber: String,
    /// Deliveries waiting to run, due now or later.
    pub pending: i64,
    /// Of those, the ones waiting for a retry time still to come.
    pub scheduled: i64,
    /// When the message of the oldest pending delivery occurred (ms since the epoch).
    pub oldest_pending_ms: Option<i64>,
    /// Dead letters by the class of their last error.
    pub dead_by_class: std::collections::BTreeMap<String, i64>,
}

impl SubscriberBacklog {
    /// How long the oldest pending delivery has waited at `now_ms`.
    pub fn oldest_pending_age_ms(&self, now_ms: i64) -> Option<i64> {
        self.oldest_pending_ms.map(|at| (now_ms - at).max(0))
    }

    /// Every dead letter, whatever its class.
    pub fn dead(&self) -> i64 {
        self.dead_by_class.values().sum()
    }

    /// Builds the backlogs, by subscriber name, from [`BACKLOG`]'s rows.
    pub(super) fn from_rows(rows: Vec<BacklogRow>) -> Vec<Self> {
        let mut by_subscriber = std::collections::BTreeMap::<String, Self>::new();
        for (subscriber, status, class, n, oldest_ms, scheduled) in rows {
            let backlog = by_subscriber
                .entry(subscriber.clone())
                .or_insert_with(|| Self {
                    subscriber,
                    ..Self::default()
                });
            if status == "pending" {
                backlog.pending += n;
                backlog.scheduled += scheduled;
                backlog.oldest_pending_ms = match (backlog.oldest_pending_ms, oldest_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            } else {
                *backlog
                    .dead_by_class
                    .entry(class.unwrap_or_else(|| "unknown".into()))
                    .or_default() += n;
            }
        }
        by_subscriber.into_values().collect()
    }
}

/// (subscriber, status, error class, count, oldest occurrence, scheduled) from [`BACKLOG`].
pub(super) type BacklogRow = (String, String, Option<String>, i64, Option<i64>, i64);

/// Unfinished deliveries grouped by subscriber, status and error class; binds $1 now.
pub(super) const BACKLOG: &str = "SELECT d.subscriber, d.status, d.error_class, COUNT(*) AS n,
            MIN(m.occurred_at_ms) AS oldest_ms,
            COALESCE(SUM(CASE WHEN d.next_attempt_at_ms > $1 THEN 1 ELSE 0 END), 0) AS scheduled
     FROM deliveries d JOIN messages m ON m.seq = d.message_seq
     WHERE d.status <> 'done'
     GROUP BY d.subscriber, d.status, d.error_class";

/// How the deliveries of one subscriber and message kind fared, for `host bus metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeliveryMetrics {
    pub subscriber: String,
    pub kind: String,
    pub done: i64,
    pub pending: i64,
    pub dead: i64,
    /// Finished deliveries (done or dead) whose first attempt failed, over all finished.
    pub failure_rate: f64,
    /// From the message's occurrence to the delivery done, over the done ones (ms).
    pub latency_p50_ms: i64,
    pub latency_p95_ms: i64,
    pub latency_p99_ms: i64,
}

impl DeliveryMetrics {
    /// Summarises [`DELIVERY_OUTCOMES`]' rows by subscriber and kind, in that order.
    pub(super) fn from_rows(rows: Vec<OutcomeRow>) -> Vec<Self> {
        let mut groups = std::collections::BTreeMap::<(String, String), Vec<OutcomeRow>>::new();
        for row in rows {
            groups
                .entry((row.0.clone(), row.1.clone()))
                .or_default()
                .push(row);
        }
        groups
            .into_iter()
            .map(|((subscriber, kind), rows)| {
                let count = |status: &str| rows.iter().filter(|r| r.2 == status).count() as i64;
                let (done, pending, dead) = (count("done"), count("pending"), count("dead"));
                let failed_first = rows
                    .iter()
                    .filter(|r| r.2 == "dead" || (r.2 == "done" && r.3 > 1))
                    .count();
                let finished = done + dead;
                let mut latencies: Vec<i64> = rows
                    .iter()
                    .filter(|r| r.2 == "done")
                    .filter_map(|r| r.4)
                    .collect();
                latencies.sort_unstable();
                let at = |p| crate::stats::percentile(&latencies, p);
                Self {
                    subscriber,
                    kind,
                    done,
                    pending,
                    dead,
                    failure_rate: crate::stats::share(failed_first as u64, finished.unsigned_abs()),
                    latency_p50_ms: at(50.0),
                    latency_p95_ms: at(95.0),
                    latency_p99_ms: at(99.0),
                }
            })
            .collect()
    }
}

/// (subscriber, kind, status, attempts, occurrence → completion in ms) from
/// [`DELIVERY_OUTCOMES`].
pub(super) type OutcomeRow = (String, String, String, i64, Option<i64>);

/// Every delivery of a message that occurred at or after $1 (ms since the epoch).
pub(super) const DELIVERY_OUTCOMES: &str =
    "SELECT d.subscriber, m.kind, d.status, d.attempts, d.completed_at_ms - m.occurred_at_ms
     FROM deliveries d JOIN messages m ON m.seq = d.message_seq
     WHERE m.occurred_at_ms >= $1";

/// What `host bus replay --all` and `host bus purge` do to the dead letters they select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeadChange {
    /// Back to pending, attempts reset, due now.
    Replay,
    /// Deleted.
    Purge,
}

impl DeadChange {
    /// Words for error messages.
    pub(super) fn doing(self) -> &'static str {
        match self {
            Self::Replay => "replaying",
            Self::Purge => "purging",
        }
    }
}

/// Binds $1 now, $2 the id.
pub(super) const REPLAY_ONE: &str =
    "UPDATE deliveries SET status = 'pending', attempts = 0, waiting = 0, next_attempt_at_ms = $1
     WHERE id = $2 AND status = 'dead'";

/// [`REPLAY_ONE`] whatever the delivery's status: a done one runs again.
pub(super) const REPLAY_FORCED: &str =
    "UPDATE deliveries SET status = 'pending', attempts = 0, waiting = 0, next_attempt_at_ms = $1,
         completed_at_ms = NULL
     WHERE id = $2";

pub(super) const STATS_BY_STATUS: &str =
    "SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status";

pub(super) const STATS_BY_CLASS: &str = "SELECT error_class, status, COUNT(*) AS n FROM deliveries
     WHERE status <> 'done' AND error_class IS NOT NULL AND attempts > 0
        OR status = 'dead'
     GROUP BY error_class, status";

/// The columns of [`ViewRow`], from `deliveries d JOIN messages m`.
macro_rules! view_columns {
    () => {
        "d.id, d.status, d.subscriber, m.id AS message_id, m.kind, m.partition_key,
         m.correlation_id, m.emitted_by, d.attempts, d.next_attempt_at_ms, d.error_class,
         d.last_error, d.first_failed_at_ms, d.last_failed_at_ms, d.handled_by,
         d.completed_at_ms, m.occurred_at_ms, m.payload, m.seq, m.tenant_id, m.causation_id,
         m.actor, m.schema_version, m.headers, m.depth"
    };
}
pub(super) use view_columns;

/// The operator filter: binds $1 status, $2 subscriber, $3 kind pattern (matched with
/// `$matches`: GLOB on SQLite, LIKE on PostgreSQL; see [`super::queue::like_pattern`]), $4 error class.
macro_rules! delivery_filter {
    ($matches:literal) => {
        concat!(
            "($1 IS NULL OR d.status = $1) AND ($2 IS NULL OR d.subscriber = $2)
             AND ($3 IS NULL OR m.kind ",
            $matches,
            " $3) AND ($4 IS NULL OR d.error_class = $4)"
        )
    };
}
pub(super) use delivery_filter;

/// A row of [`view_columns`].
#[derive(sqlx::FromRow)]
pub(super) struct ViewRow {
    id: i64,
    status: String,
    subscriber: String,
    message_id: String,
    kind: String,
    partition_key: Option<String>,
    correlation_id: String,
    emitted_by: String,
    attempts: i64,
    next_attempt_at_ms: i64,
    error_class: Option<String>,
    last_error: Option<String>,
    first_failed_at_ms: Option<i64>,
    last_failed_at_ms: Option<i64>,
    handled_by: Option<String>,
    completed_at_ms: Option<i64>,
    occurred_at_ms: i64,
    payload: Vec<u8>,
    seq: i64,
    tenant_id: Option<String>,
    causation_id: Option<String>,
    actor: Option<String>,
    schema_version: i64,
    headers: String,
    depth: i64,
}

impl ViewRow {
    pub(super) fn view(self) -> DeliveryView {
        let payload = &self.payload;
        let status = DeliveryStatus::parse(&self.status);
        DeliveryView {
            id: self.id,
            status,
            scheduled: status == DeliveryStatus::Pending
                && self.attempts == 0
                && self.next_attempt_at_ms > super::now_ms(),
            subscriber: self.subscriber,
            message_id: self.message_id,
            kind: self.kind,
            partition_key: self.partition_key,
            correlation_id: self.correlation_id,
            emitted_by: self.emitted_by,
            attempts: self.attempts as u32,
            next_attempt_at_ms: self.next_attempt_at_ms,
            error_class: self.error_class,
            last_error: self.last_error,
            first_failed_at_ms: self.first_failed_at_ms,
            last_failed_at_ms: self.last_failed_at_ms,
            handled_by: self.handled_by,
            occurred_at_ms: self.occurred_at_ms,
            payload: serde_json::from_slice(payload).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
            }),
        }
    }

    pub(super) fn detail(mut self) -> anyhow::Result<DeliveryDetail> {
        let headers = serde_json::from_str(&std::mem::take(&mut self.headers))
            .context("message headers are not valid JSON")?;
        let (message_seq, completed_at_ms, schema_version) =
            (self.seq, self.completed_at_ms, self.schema_version as u32);
        let depth = u32::try_from(self.depth).unwrap_or(u32::MAX);
        let (tenant_id, causation_id, actor) = (
            self.tenant_id.take(),
            self.causation_id.take(),
            self.actor.take(),
        );
        Ok(DeliveryDetail {
            view: self.view(),
            message_seq,
            completed_at_ms,
            tenant_id,
            causation_id,
            actor,
            schema_version,
            headers,
            depth,
        })
    }
}
