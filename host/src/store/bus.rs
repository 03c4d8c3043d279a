//! The delivery queue as the dispatcher and operators see it: the views, the filters, and
//! the SQL both backends share (`$N` placeholders work on both).

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// A delivery the dispatcher may run now, with the message it carries.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery_id: i64,
    pub subscriber: String,
    /// Attempts already made (the next one is `attempts + 1`).
    pub attempts: u32,
    pub message_id: String,
    pub message_seq: i64,
    pub kind: String,
    pub partition_key: Option<String>,
    pub tenant_id: Option<String>,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: Option<String>,
    pub schema_version: u32,
    pub occurred_at_ms: i64,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
    /// How deep in its causal chain the message lies (0: a command).
    pub depth: u32,
    /// The partition it was claimed from (PostgreSQL); `None` where there are none.
    pub partition: Option<i64>,
    /// The epoch of the partition lease it was claimed under, which its outcome's commit
    /// checks (set by the dispatcher).
    pub lease: Option<i64>,
}

/// The state of a delivery row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Done,
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }

    pub(super) fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "done" => Self::Done,
            _ => Self::Dead,
        }
    }
}

/// Which deliveries `host bus list` shows.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
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
pub struct DeliveryView {
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
pub struct DeliveryDetail {
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
pub struct SubscriberBacklog {
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
pub struct DeliveryMetrics {
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
                let at = |p| crate::telemetry::percentile(&latencies, p);
                Self {
                    subscriber,
                    kind,
                    done,
                    pending,
                    dead,
                    failure_rate: crate::telemetry::share(
                        failed_first as u64,
                        finished.unsigned_abs(),
                    ),
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

/// One kind of retention batch (see [`crate::maintenance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trim {
    /// Idempotency records that expired at or before the bound.
    ExpiredIdempotency,
    /// `done` deliveries completed before the bound.
    DoneDeliveries,
    /// Messages that occurred before the bound and have no delivery left.
    FinishedMessages,
}

impl Trim {
    /// The statement: binds $1 the bound (ms), $2 the batch size.
    pub(super) fn sql(self) -> &'static str {
        match self {
            Self::ExpiredIdempotency => {
                "DELETE FROM idempotency WHERE key IN (
                     SELECT key FROM idempotency WHERE expires_at_ms <= $1 LIMIT $2)"
            }
            Self::DoneDeliveries => {
                "DELETE FROM deliveries WHERE id IN (
                     SELECT id FROM deliveries
                     WHERE status = 'done' AND completed_at_ms < $1 LIMIT $2)"
            }
            Self::FinishedMessages => {
                "DELETE FROM messages WHERE seq IN (
                     SELECT m.seq FROM messages m
                     WHERE m.occurred_at_ms < $1
                       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_seq = m.seq)
                     ORDER BY m.seq LIMIT $2)"
            }
        }
    }

    /// Words for error messages.
    pub(super) fn what(self) -> &'static str {
        match self {
            Self::ExpiredIdempotency => "deleting expired idempotency keys",
            Self::DoneDeliveries => "deleting finished deliveries",
            Self::FinishedMessages => "deleting finished messages",
        }
    }
}

pub(super) const READ_STATE: &str =
    "SELECT value, version FROM state WHERE plugin = $1 AND key = $2";

pub(super) const IDEMPOTENCY_RECORD: &str =
    "SELECT key, command_kind, request_hash, status, body, created_at_ms, expires_at_ms
     FROM idempotency WHERE key = $1 AND expires_at_ms > $2";

pub(super) const NEXT_RETRY: &str = "SELECT MIN(next_attempt_at_ms) FROM deliveries
     WHERE status = 'pending' AND next_attempt_at_ms > $1";

/// Binds $1 now.
pub(super) const WRITE_PROBE: &str = "INSERT INTO write_probe (id, at_ms) VALUES (1, $1)
     ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms";

pub(super) const PENDING_COUNT: &str =
    "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND subscriber = $1";

/// Binds $1 now, $2 the id.
pub(super) const REPLAY_ONE: &str =
    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = $1
     WHERE id = $2 AND status = 'dead'";

/// [`REPLAY_ONE`] whatever the delivery's status: a done one runs again.
pub(super) const REPLAY_FORCED: &str =
    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = $1,
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
/// `$matches`: GLOB on SQLite, LIKE on PostgreSQL; see [`like_pattern`]), $4 error class.
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

/// The due-deliveries scan. `$in_subscribers` and `$in_skip` test `d.subscriber` against
/// $2 (loaded subscribers) and $3 (those with `skip` ordering), `$in_running` tests `d.id`
/// against $5 (deliveries running now, which the scan leaves out: they still hold back their
/// keys); binds $1 now, $4 the limit. `$partition` is each delivery's partition (NULL where
/// there are none) and `$owned` a further condition on it (the partitions this host holds).
///
/// Subscribers that are not loaded have their deliveries wait, so the scan never hands the
/// dispatcher work it cannot run. Ordering: a delivery with a partition key is due only when
/// no earlier unfinished delivery of the same (subscriber, key) holds it back. Under `strict`
/// every unfinished one does; under `skip` one that has failed at least once, or is dead, is
/// parked and no longer holds anything back.
macro_rules! due_query {
    ($in_subscribers:literal, $in_skip:literal, $in_running:literal,
     $partition:literal, $owned:literal) => {
        concat!(
            // The claim is chosen first, from the pending index in commit order, and only then
            // joined to its messages: a planner left to join first (PostgreSQL with stale
            // statistics halfway through a drain) walks every message already delivered.
            "SELECT d.id, d.subscriber, d.attempts, m.id AS message_id, m.seq, m.kind,
                    m.partition_key, m.tenant_id, m.correlation_id, m.causation_id, m.actor,
                    m.schema_version, m.occurred_at_ms, m.headers, m.payload, m.depth, d.partition
             FROM (SELECT d.id, d.subscriber, d.attempts, d.message_seq, ",
            $partition,
            " AS partition FROM deliveries d
                   WHERE d.status = 'pending' AND d.next_attempt_at_ms <= $1 ",
            $owned,
            " AND d.subscriber ",
            $in_subscribers,
            " AND NOT (d.id ",
            $in_running,
            ")
                     AND (d.partition_key IS NULL OR NOT EXISTS (
                           SELECT 1 FROM deliveries e
                           WHERE e.subscriber = d.subscriber AND e.partition_key = d.partition_key
                             AND e.status <> 'done' AND e.message_seq < d.message_seq
                             AND ((e.status = 'pending' AND e.attempts = 0)
                                  OR NOT (d.subscriber ",
            $in_skip,
            "))))
                   ORDER BY d.message_seq
                   LIMIT $4) d
             JOIN messages m ON m.seq = d.message_seq
             ORDER BY d.message_seq"
        )
    };
}
pub(super) use due_query;

/// The methods whose SQL and binding are the same on both backends, for a backend's `impl`:
/// `$read` and `$write` name its pools for reads and for writes.
macro_rules! shared_queries {
    ($read:ident, $write:ident) => {
        pub(super) async fn read_state(
            &self,
            plugin: &str,
            key: &str,
        ) -> anyhow::Result<(Option<Vec<u8>>, StateVersion)> {
            let row: Option<(Option<Vec<u8>>, i64)> = sqlx::query_as(bus::READ_STATE)
                .bind(plugin)
                .bind(key)
                .fetch_optional(&self.$read)
                .await
                .with_context(|| format!("reading state of plugin `{plugin}`"))?;
            Ok(row.unwrap_or((None, 0)))
        }
        pub(super) async fn idempotency_record(
            &self,
            key: &str,
        ) -> anyhow::Result<Option<IdempotencyRecord>> {
            let row: Option<IdempotencyRow> = sqlx::query_as(bus::IDEMPOTENCY_RECORD)
                .bind(key)
                .bind(now_ms())
                .fetch_optional(&self.$read)
                .await
                .context("reading idempotency record")?;
            Ok(row.map(Into::into))
        }
        pub(super) async fn next_retry_at_ms(&self) -> anyhow::Result<Option<i64>> {
            sqlx::query_scalar(bus::NEXT_RETRY)
                .bind(now_ms())
                .fetch_one(&self.$read)
                .await
                .context("reading next due delivery")
        }
        pub(super) async fn dead_letter(&self, id: i64) -> anyhow::Result<Option<DueDelivery>> {
            const ONE: &str = "SELECT d.id, d.subscriber, d.attempts, m.id AS message_id, m.seq,
                    m.kind, m.partition_key, m.tenant_id, m.correlation_id, m.causation_id,
                    m.actor, m.schema_version, m.occurred_at_ms, m.headers, m.payload, m.depth,
                    CAST(NULL AS BIGINT) AS partition
                 FROM deliveries d JOIN messages m ON m.seq = d.message_seq
                 WHERE d.id = $1 AND d.status = 'dead'";
            let row: Option<bus::DueRow> = sqlx::query_as(ONE)
                .bind(id)
                .fetch_optional(&self.$read)
                .await
                .with_context(|| format!("reading delivery {id}"))?;
            row.map(DueDelivery::try_from).transpose()
        }
        pub(super) async fn message_cause(
            &self,
            message_id: &str,
        ) -> anyhow::Result<Option<bus::MessageCause>> {
            sqlx::query_as("SELECT kind, emitted_by, causation_id FROM messages WHERE id = $1")
                .bind(message_id)
                .fetch_optional(&self.$read)
                .await
                .with_context(|| format!("reading message {message_id}"))
        }
        pub(super) async fn probe_commit(&self) -> anyhow::Result<()> {
            sqlx::query(bus::WRITE_PROBE)
                .bind(now_ms())
                .execute(&self.$write)
                .await
                .context("probing whether commits work")?;
            Ok(())
        }
        pub(super) async fn pending_count(&self, subscriber: &str) -> anyhow::Result<i64> {
            sqlx::query_scalar(bus::PENDING_COUNT)
                .bind(subscriber)
                .fetch_one(&self.$read)
                .await
                .context("counting pending deliveries")
        }
        pub(super) async fn delivery(&self, id: i64) -> anyhow::Result<Option<DeliveryDetail>> {
            const ONE: &str = concat!(
                "SELECT ",
                view_columns!(),
                " FROM deliveries d JOIN messages m ON m.seq = d.message_seq WHERE d.id = $1"
            );
            let row: Option<ViewRow> = sqlx::query_as(ONE)
                .bind(id)
                .fetch_optional(&self.$read)
                .await
                .with_context(|| format!("reading delivery {id}"))?;
            row.map(ViewRow::detail).transpose()
        }
        pub(super) async fn replay(&self, delivery_id: i64, sql: &str) -> anyhow::Result<bool> {
            let updated = sqlx::query(sql)
                .bind(now_ms())
                .bind(delivery_id)
                .execute(&self.$write)
                .await
                .with_context(|| format!("replaying delivery {delivery_id}"))?
                .rows_affected();
            Ok(updated == 1)
        }
        pub(super) async fn stats_rows(
            &self,
        ) -> anyhow::Result<(Vec<(String, i64)>, Vec<(Option<String>, String, i64)>)> {
            let by_status = sqlx::query_as(bus::STATS_BY_STATUS)
                .fetch_all(&self.$read)
                .await
                .context("counting deliveries")?;
            let by_class = sqlx::query_as(bus::STATS_BY_CLASS)
                .fetch_all(&self.$read)
                .await
                .context("counting failed deliveries")?;
            Ok((by_status, by_class))
        }
        pub(super) async fn trace_rows(
            &self,
            correlation_id: &str,
            limit: u32,
        ) -> anyhow::Result<Vec<crate::store::trace::TraceRow>> {
            sqlx::query_as(crate::store::trace::TRACE)
                .bind(correlation_id)
                .bind(i64::from(limit))
                .fetch_all(&self.$read)
                .await
                .context("reading the messages of a correlation id")
        }
        pub(super) async fn correlation_of(&self, message_id: &str) -> anyhow::Result<Option<String>> {
            sqlx::query_scalar(crate::store::trace::CORRELATION_OF)
                .bind(message_id)
                .fetch_optional(&self.$read)
                .await
                .context("reading a message's correlation id")
        }
        pub(super) async fn outcome_rows(&self, since_ms: i64) -> anyhow::Result<Vec<bus::OutcomeRow>> {
            sqlx::query_as(bus::DELIVERY_OUTCOMES)
                .bind(since_ms)
                .fetch_all(&self.$read)
                .await
                .context("reading delivery outcomes")
        }
        pub(super) async fn backlog_rows(&self, now_ms: i64) -> anyhow::Result<Vec<bus::BacklogRow>> {
            sqlx::query_as(bus::BACKLOG)
                .bind(now_ms)
                .fetch_all(&self.$read)
                .await
                .context("counting unfinished deliveries")
        }
        pub(super) async fn delete_batch(
            &self,
            trim: Trim,
            bound_ms: i64,
            batch: u32,
        ) -> anyhow::Result<u64> {
            let deleted = sqlx::query(trim.sql())
                .bind(bound_ms)
                .bind(i64::from(batch))
                .execute(&self.$write)
                .await
                .context(trim.what())?;
            Ok(deleted.rows_affected())
        }
    };
}
pub(super) use shared_queries;

/// A kind glob (`order.*`, `?` for one character) as a LIKE pattern with `\` escapes.
pub(super) fn like_pattern(glob: &str) -> String {
    let mut pattern = String::with_capacity(glob.len());
    for c in glob.chars() {
        match c {
            '*' => pattern.push('%'),
            '?' => pattern.push('_'),
            '%' | '_' | '\\' => {
                pattern.push('\\');
                pattern.push(c);
            }
            c => pattern.push(c),
        }
    }
    pattern
}

/// A stored message's kind, the plugin that emitted it, and the message that caused it: one
/// link of a causal chain.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MessageCause {
    pub kind: String,
    pub emitted_by: String,
    pub causation_id: Option<String>,
}

/// A row of [`due_query`].
#[derive(sqlx::FromRow)]
pub(super) struct DueRow {
    id: i64,
    subscriber: String,
    attempts: i64,
    message_id: String,
    seq: i64,
    kind: String,
    partition_key: Option<String>,
    tenant_id: Option<String>,
    correlation_id: String,
    causation_id: Option<String>,
    actor: Option<String>,
    schema_version: i64,
    occurred_at_ms: i64,
    headers: String,
    payload: Vec<u8>,
    depth: i64,
    partition: Option<i64>,
}

impl TryFrom<DueRow> for DueDelivery {
    type Error = anyhow::Error;

    fn try_from(row: DueRow) -> anyhow::Result<Self> {
        Ok(Self {
            delivery_id: row.id,
            subscriber: row.subscriber,
            attempts: row.attempts as u32,
            message_id: row.message_id,
            message_seq: row.seq,
            kind: row.kind,
            partition_key: row.partition_key,
            tenant_id: row.tenant_id,
            correlation_id: row.correlation_id,
            causation_id: row.causation_id,
            actor: row.actor,
            schema_version: row.schema_version as u32,
            occurred_at_ms: row.occurred_at_ms,
            headers: serde_json::from_str(&row.headers)
                .context("message headers are not valid JSON")?,
            payload: row.payload,
            depth: u32::try_from(row.depth).unwrap_or(u32::MAX),
            partition: row.partition,
            lease: None,
        })
    }
}

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
        DeliveryView {
            id: self.id,
            status: DeliveryStatus::parse(&self.status),
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

/// A row of [`IDEMPOTENCY_RECORD`].
#[derive(sqlx::FromRow)]
pub(super) struct IdempotencyRow {
    key: String,
    command_kind: String,
    request_hash: String,
    status: i64,
    body: Vec<u8>,
    created_at_ms: i64,
    expires_at_ms: i64,
}

impl From<IdempotencyRow> for super::IdempotencyRecord {
    fn from(row: IdempotencyRow) -> Self {
        Self {
            key: row.key,
            command_kind: row.command_kind,
            request_hash: row.request_hash,
            status: row.status as u16,
            body: row.body,
            created_at_ms: row.created_at_ms,
            expires_at_ms: row.expires_at_ms,
        }
    }
}
