//! The delivery queue as the dispatcher works it: the deliveries due now and their messages,
//! retention, and the SQL both backends share (`$N` placeholders work on both). How operators
//! inspect and repair the queue is in [`super::inspect`].

use super::FirstOutcome;
use crate::error::{ErrorClass, HandlerFailure};
use crate::message::Message;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A delivery the dispatcher may run now, with the message it carries.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The delivery's id, as `host bus` and the admin API name it.
    pub delivery_id: i64,
    /// The plugin the delivery is for.
    pub subscriber: String,
    /// Attempts already made (the next one is `attempts + 1`).
    pub attempts: u32,
    /// The message's place in commit order.
    pub message_seq: i64,
    /// The message to hand the subscriber.
    pub message: Message,
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
    /// Not handled yet: waiting for its first attempt or a retry.
    Pending,
    /// Handled: its effects are committed, and the row stays as the inbox mark until
    /// retention removes it.
    Done,
    /// Dead-lettered: no more attempts unless an operator replays it (`host bus replay`).
    Dead,
}

impl DeliveryStatus {
    /// The name stored in the database and shown by `host bus`.
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

/// Deliveries due now (pending, their time come), counted up to $2 so that a huge backlog
/// costs no more than the bound (the `deliveries_due` index): binds $1 now, $2 the limit.
pub(super) const DUE_COUNT: &str = "SELECT COUNT(*) FROM (
         SELECT 1 FROM deliveries
         WHERE status = 'pending' AND next_attempt_at_ms <= $1 LIMIT $2) AS due";

pub(super) const PENDING_COUNT: &str =
    "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND subscriber = $1";

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
/// parked and no longer holds anything back. Under both, a scheduled event not yet due (never
/// attempted, due later) holds nothing back: it takes its place in the lane when it comes due.
///
/// Due time is an index: the deliveries written due at once are walked in commit order along
/// `deliveries_ready_by_seq`; those written to wait (scheduled, retrying) are reached along
/// `deliveries_waiting` by due time, only as far as now, oldest due first. Neither walk reads
/// a delivery that is not due, and each stops at the limit.
macro_rules! due_query {
    ($in_subscribers:literal, $in_skip:literal, $in_running:literal,
     $partition:literal, $owned:literal) => {
        concat!(
            // The claim is chosen first, from the pending indexes, and only then joined to its
            // messages: a planner left to join first (PostgreSQL with stale statistics halfway
            // through a drain) walks every message already delivered.
            "SELECT d.id, d.subscriber, d.attempts, m.id AS message_id, m.seq, m.kind,
                    m.partition_key, m.tenant_id, m.correlation_id, m.causation_id, m.actor,
                    m.schema_version, m.occurred_at_ms, m.headers, m.payload, m.depth, d.partition
             FROM (SELECT * FROM (",
            due_query!(@walk "0", "d.message_seq", $in_subscribers, $in_skip, $in_running,
                       $partition, $owned),
            ") ready UNION ALL SELECT * FROM (",
            due_query!(@walk "1", "d.next_attempt_at_ms", $in_subscribers, $in_skip,
                       $in_running, $partition, $owned),
            ") came_due ORDER BY message_seq LIMIT $4) d
             JOIN messages m ON m.seq = d.message_seq
             ORDER BY d.message_seq"
        )
    };
    // One walk: the pending deliveries with `waiting` = $waiting, in `$order`.
    (@walk $waiting:literal, $order:literal, $in_subscribers:literal, $in_skip:literal,
     $in_running:literal, $partition:literal, $owned:literal) => {
        concat!(
            "SELECT d.id, d.subscriber, d.attempts, d.message_seq, ",
            $partition,
            " AS partition FROM deliveries d
                   WHERE d.status = 'pending' AND d.waiting = ",
            $waiting,
            " AND d.next_attempt_at_ms <= $1 ",
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
                             AND NOT (e.status = 'pending' AND e.attempts = 0
                                      AND e.next_attempt_at_ms > $1)
                             AND ((e.status = 'pending' AND e.attempts = 0)
                                  OR NOT (d.subscriber ",
            $in_skip,
            "))))
                   ORDER BY ",
            $order,
            " LIMIT $4"
        )
    };
}
pub(super) use due_query;

/// The methods whose SQL and binding are the same on both backends, for a backend's `impl`:
/// `$read` and `$write` name its pools for reads and for writes.
macro_rules! shared_queries {
    ($read:ident, $write:ident) => {
        pub(super) async fn idempotency_record(
            &self,
            key: &str,
        ) -> anyhow::Result<Option<IdempotencyRecord>> {
            let row: Option<IdempotencyRow> = sqlx::query_as(queue::IDEMPOTENCY_RECORD)
                .bind(key)
                .bind(now_ms())
                .fetch_optional(&self.$read)
                .await
                .context("reading idempotency record")?;
            Ok(row.map(Into::into))
        }
        pub(super) async fn next_retry_at_ms(&self) -> anyhow::Result<Option<i64>> {
            sqlx::query_scalar(queue::NEXT_RETRY)
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
            let row: Option<queue::DueRow> = sqlx::query_as(ONE)
                .bind(id)
                .fetch_optional(&self.$read)
                .await
                .with_context(|| format!("reading delivery {id}"))?;
            row.map(DueDelivery::try_from).transpose()
        }
        pub(super) async fn message_cause(
            &self,
            message_id: &str,
        ) -> anyhow::Result<Option<queue::MessageCause>> {
            sqlx::query_as("SELECT kind, emitted_by, causation_id FROM messages WHERE id = $1")
                .bind(message_id)
                .fetch_optional(&self.$read)
                .await
                .with_context(|| format!("reading message {message_id}"))
        }
        pub(super) async fn probe_commit(&self) -> anyhow::Result<()> {
            sqlx::query(queue::WRITE_PROBE)
                .bind(now_ms())
                .execute(&self.$write)
                .await
                .context("probing whether commits work")?;
            Ok(())
        }
        pub(super) async fn due_count(&self, now_ms: i64, limit: i64) -> anyhow::Result<i64> {
            sqlx::query_scalar(queue::DUE_COUNT)
                .bind(now_ms)
                .bind(limit)
                .fetch_one(&self.$read)
                .await
                .context("counting due deliveries")
        }
        pub(super) async fn pending_count(&self, subscriber: &str) -> anyhow::Result<i64> {
            sqlx::query_scalar(queue::PENDING_COUNT)
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
            let by_status = sqlx::query_as(inspect::STATS_BY_STATUS)
                .fetch_all(&self.$read)
                .await
                .context("counting deliveries")?;
            let by_class = sqlx::query_as(inspect::STATS_BY_CLASS)
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
        pub(super) async fn outcome_rows(&self, since_ms: i64) -> anyhow::Result<Vec<inspect::OutcomeRow>> {
            sqlx::query_as(inspect::DELIVERY_OUTCOMES)
                .bind(since_ms)
                .fetch_all(&self.$read)
                .await
                .context("reading delivery outcomes")
        }
        pub(super) async fn backlog_rows(&self, now_ms: i64) -> anyhow::Result<Vec<inspect::BacklogRow>> {
            sqlx::query_as(inspect::BACKLOG)
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
    /// The message's kind.
    pub kind: String,
    /// The plugin whose handler emitted it.
    pub emitted_by: String,
    /// The message whose handler emitted it: the next link back, towards the command that
    /// began the chain.
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

impl DueRow {
    /// The delivery's id.
    pub(super) fn id(&self) -> i64 {
        self.id
    }

    /// The plugin the delivery is for.
    pub(super) fn subscriber(&self) -> &str {
        &self.subscriber
    }

    /// The message's partition key.
    pub(super) fn partition_key(&self) -> Option<&str> {
        self.partition_key.as_deref()
    }
}

impl TryFrom<DueRow> for DueDelivery {
    type Error = anyhow::Error;

    fn try_from(row: DueRow) -> anyhow::Result<Self> {
        Ok(Self {
            delivery_id: row.id,
            subscriber: row.subscriber,
            attempts: row.attempts as u32,
            message_seq: row.seq,
            message: Message {
                id: row.message_id,
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
            },
            partition: row.partition,
            lease: None,
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
            outcome: FirstOutcome::from_row(row.status, row.body),
            created_at_ms: row.created_at_ms,
            expires_at_ms: row.expires_at_ms,
        }
    }
}

/// A first outcome is kept as the status and body its first caller was answered with over
/// HTTP: the reply with 200, or the rejection's JSON error body with 422.
const SUCCEEDED_STATUS: i64 = 200;
/// See [`SUCCEEDED_STATUS`].
const REJECTED_STATUS: i64 = 422;

impl FirstOutcome {
    /// The `status` and `body` columns of this outcome's row.
    pub(super) fn to_row(&self) -> (i64, Cow<'_, [u8]>) {
        match self {
            Self::Succeeded(reply) => (SUCCEEDED_STATUS, Cow::Borrowed(reply)),
            Self::Rejected(failure) => (REJECTED_STATUS, Cow::Owned(failure.to_error_body())),
        }
    }

    fn from_row(status: i64, body: Vec<u8>) -> Self {
        if status == SUCCEEDED_STATUS {
            return Self::Succeeded(body);
        }
        // Only rejections are stored besides successes; a body that does not read back is
        // still replayed as the rejection it was, with its text as the message.
        Self::Rejected(HandlerFailure::from_error_body(&body).unwrap_or_else(|| {
            HandlerFailure::new(
                ErrorClass::Rejected,
                "",
                String::from_utf8_lossy(&body).into_owned(),
            )
        }))
    }
}
